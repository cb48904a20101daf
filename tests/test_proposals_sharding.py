"""Resumable, sharded generation (``generate_shard`` / ``merge_if_complete``) with the cheap ``random`` method:
which boxes a store holds for which image id, what a re-run redoes (and how its progress and chunks are
counted), when a merge happens, what it refuses, whose merge lock it respects, what Ctrl-C stops, and that chunk
files are never unpickled.

Boxes of the ``random`` method are computed here by calling ``random_boxes(h, w, K,
seed=stable_seed(image_id, seed))`` directly (the documented rule), not through the generator: these tests
check the generator's wiring (seed, per-image size, order, sharding); the drawing itself is checked against its
rules in ``test_proposals_sources.py`` and ``test_proposal_methods.py``. Sizes are (height, width); boxes xyxy
absolute pixels.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest

from siamese_detr.data.proposals import ProposalStore, ProposalStoreError
from siamese_detr.data.proposals import generate as generate_module
from siamese_detr.data.proposals.generate import generate_shard, list_image_dir
from siamese_detr.data.proposals.methods import random_boxes, stable_seed
from siamese_detr.data.proposals.shards import existing_shards, image_list_digest, merge_if_complete, missing_shards

from pickle_payload import Payload

SIZES = [(20, 30), (25, 18), (16, 16), (31, 22), (17, 40)]  # (height, width) of im0..im4


def _images(folder):
    os.makedirs(folder, exist_ok=True)
    for i, (h, w) in enumerate(SIZES):
        img = np.full((h, w, 3), 10 * i, np.uint8)
        cv2.imwrite(os.path.join(folder, f"im{i}.png"), img)
    return list_image_dir(folder)


def _run(records, out, **kw):
    kw.setdefault("progress", False)
    return generate_shard(records, out, "random", kw.pop("params", {"max_boxes": 3, "seed": 7}), **kw)


def test_random_store_holds_the_documented_boxes_per_image_with_the_seed(tmp_path):
    """Each image id gets random_boxes(h, w, 3, seed=stable_seed(id, 7)) of ITS size, in that order; another
    --seed gives other boxes (the seed of params reaches the method)."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    _run(records, out, chunk_size=2)
    store = ProposalStore.open(os.path.join(out, "shards", "shard-00000-of-00001"))
    assert store.image_ids == [f"im{i}.png" for i in range(5)]
    for i, (h, w) in enumerate(SIZES):
        b, s = store.get(f"im{i}.png")
        eb, es = random_boxes(h, w, 3, seed=stable_seed(f"im{i}.png", 7))
        assert np.array_equal(b, eb) and np.array_equal(s, es)
        assert store.image_size(f"im{i}.png") == (h, w)
    other = str(tmp_path / "other")
    _run(records, other, params={"max_boxes": 3, "seed": 8})
    b8, _ = ProposalStore.open(os.path.join(other, "shards", "shard-00000-of-00001")).get("im0.png")
    assert np.array_equal(b8, random_boxes(20, 30, 3, seed=stable_seed("im0.png", 8))[0])
    assert not np.array_equal(b8, store.get("im0.png")[0])


def test_a_finished_shard_is_not_computed_again(tmp_path):
    """Re-running a shard whose store is complete computes nothing and returns its skipped images."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    first = _run(records, out, chunk_size=2)
    assert first["computed_chunks"] == 3 and first["resumed_chunks"] == 0
    again = _run(records, out, chunk_size=2)
    assert again["computed_chunks"] == 0 and again["skipped"] == []


def test_shard_store_records_the_whole_image_list(tmp_path):
    """meta.json of a shard (and of the merged store) records {"num_images", "sha1"} of ALL listed ids in
    order (sha1 of the ids joined by newlines): the tool compares it with the images listed on a re-run. A
    shard's meta.json also records {"id", "of"}."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    for i in range(2):
        _run(records, out, num_shards=2, shard_id=i)
        with open(os.path.join(out, "shards", f"shard-{i:05d}-of-00002", "meta.json")) as f:
            assert json.load(f)["shard"] == {"id": i, "of": 2}  # a shard's store says which shard it is
    merge_if_complete(out, 2)
    want = {"num_images": 5, "sha1": hashlib.sha1("\n".join(f"im{i}.png" for i in range(5)).encode()).hexdigest()}
    assert json.load(open(os.path.join(out, "meta.json")))["image_list"] == want
    assert ProposalStore.open(out).image_ids == [f"im{i}.png" for i in range(5)]


def test_image_list_digest_depends_on_the_order():
    """The digest is of the ids IN ORDER: a list listed in another order is another list (shards slice it)."""
    assert image_list_digest(["a", "b"]) == hashlib.sha1(b"a\nb").hexdigest()
    assert image_list_digest(["b", "a"]) != image_list_digest(["a", "b"])


def test_a_resumed_shard_refuses_a_changed_image_list(tmp_path):
    """Shard 0 of 2 ran on 5 images (its slice: ids 0, 1). Re-run on a list with the same slice but another
    whole list (the last three in reverse order): refused, since shard 1 would slice the new list while the
    merge takes shard 0 as it was (run.json records the whole list's sha1)."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    _run(records, out, num_shards=2, shard_id=0)
    changed = records[:2] + list(reversed(records[2:]))  # same shard-0 slice, other whole list
    with pytest.raises(ProposalStoreError, match=r"image_list_sha1"):
        _run(changed, out, num_shards=2, shard_id=0)


def test_merge_waits_for_a_started_but_unfinished_shard(tmp_path):
    """A shard folder without meta.json (still running, or killed) is missing: no merge, no error. Both a
    folder just made and one killed before its store was assembled (run.json and every chunk written, as a
    real run leaves it) count as missing: only meta.json, written last, marks a shard complete."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    _run(records, out, num_shards=2, shard_id=0)
    os.makedirs(os.path.join(out, "shards", "shard-00001-of-00002", "chunks"))  # shard 1 started only
    assert missing_shards(out, 2) == [1]
    assert merge_if_complete(out, 2) is None
    assert not os.path.exists(os.path.join(out, "meta.json"))
    _run(records, out, num_shards=2, shard_id=1, chunk_size=1, keep_chunks=True)
    killed = os.path.join(out, "shards", "shard-00001-of-00002")
    os.remove(os.path.join(killed, "meta.json"))  # as if killed while assembling its store
    assert os.path.isfile(os.path.join(killed, "run.json"))
    assert len(os.listdir(os.path.join(killed, "chunks"))) == 6  # 3 images: .npz and .json each
    assert missing_shards(out, 2) == [1]
    assert merge_if_complete(out, 2) is None
    assert not os.path.exists(os.path.join(out, "meta.json"))


def test_a_file_named_like_a_shard_is_not_a_shard(tmp_path):
    """Only folders named shard-IIIII-of-KKKKK are shards: a file of that name (e.g. a note left there) is
    neither listed nor a reason to refuse a run with another --num-shards."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    os.makedirs(os.path.join(out, "shards"))
    with open(os.path.join(out, "shards", "shard-00000-of-00003"), "w") as f:
        f.write("not a shard")
    assert existing_shards(out) == {}
    _run(records, out, num_shards=2, shard_id=0)
    assert existing_shards(out) == {2: [0]}


def test_a_shard_of_an_older_version_joins_on_the_settings_it_records(tmp_path):
    """A shard whose run.json predates the whole-list keys (no num_images_all / image_list_sha1) is compared on
    the keys it has: shard 1 starts next to it and the two merge into the store of all 5 images."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    _run(records, out, num_shards=2, shard_id=0)
    run_file = os.path.join(out, "shards", "shard-00000-of-00002", "run.json")
    with open(run_file) as f:
        run = json.load(f)
    del run["num_images_all"], run["image_list_sha1"]
    with open(run_file, "w") as f:
        json.dump(run, f)
    _run(records, out, num_shards=2, shard_id=1)
    assert merge_if_complete(out, 2) == out
    assert ProposalStore.open(out).image_ids == [f"im{i}.png" for i in range(5)]


def test_a_merge_refused_for_another_method_names_the_method_not_its_parameters(tmp_path):
    """Shards made by different methods have different parameters by nature: the refusal names the method
    only (each value next to its shard), not every parameter of the two methods."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    for i in range(2):
        _run(records, out, num_shards=2, shard_id=i)
    run_file = os.path.join(out, "shards", "shard-00001-of-00002", "run.json")
    with open(run_file) as f:
        run = json.load(f)
    run.update(method="edgeboxes", params={"max_boxes": 3, "seed": 7, "alpha": 0.65})
    with open(run_file, "w") as f:
        json.dump(run, f)
    with pytest.raises(ProposalStoreError) as refused:
        merge_if_complete(out, 2)
    message = str(refused.value)
    assert "shard-00001-of-00002 has method='edgeboxes', shard-00000-of-00002 has 'random'" in message
    assert "params" not in message
    assert not os.path.exists(os.path.join(out, "meta.json"))


def test_merge_of_shards_with_no_readable_image_writes_no_store(tmp_path):
    """Every image unreadable in both shards: the merge refuses (no empty store that looks complete)."""
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(4):
        (folder / f"x{i}.png").write_bytes(b"")
    records = list_image_dir(str(folder))
    out = str(tmp_path / "out")
    for i in range(2):
        _run(records, out, num_shards=2, shard_id=i)
    with pytest.raises(ProposalStoreError, match="none of the images of the 2 shards could be read"):
        merge_if_complete(out, 2)
    assert not os.path.exists(os.path.join(out, "meta.json"))


def test_chunk_files_are_never_unpickled(tmp_path):
    """A finished chunk whose .npz holds an object array (a pickle) is refused when the shard is assembled,
    and the pickle's code never runs: chunks are read with allow_pickle=False."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    _run(records, out, chunk_size=2, keep_chunks=True)
    sdir = os.path.join(out, "shards", "shard-00000-of-00001")
    os.remove(os.path.join(sdir, "meta.json"))  # as if killed before assembling
    marker = tmp_path / "pwned"
    chunk = os.path.join(sdir, "chunks", "chunk-000000.npz")
    with np.load(chunk) as z:
        arrays = dict(z)
    arrays["boxes"] = np.array([Payload(str(marker))], dtype=object)
    with open(chunk, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match="allow_pickle"):
        _run(records, out, chunk_size=2, keep_chunks=True)
    assert not marker.exists()


def test_a_merge_lock_of_another_host_is_respected_even_when_its_pid_is_free_here(tmp_path, caplog):
    """The owner of a lock is a (host, pid). A pid that is not alive on THIS host says nothing about a process of
    another host sharing the file system: that lock is left alone (no merge), and the warning names its
    owner. The same pid on this host makes the lock stale: it is taken over and the merge happens."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    for i in range(2):
        _run(records, out, num_shards=2, shard_id=i)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that is no longer alive here
    lock = os.path.join(out, ".merge.lock")
    with open(lock, "w") as f:
        json.dump({"host": socket.gethostname() + "-elsewhere", "pid": gone.pid}, f)
    assert merge_if_complete(out, 2) is None
    assert os.path.exists(lock) and not os.path.exists(os.path.join(out, "meta.json"))
    assert f"held by pid {gone.pid} on {socket.gethostname()}-elsewhere" in caplog.text
    with open(lock, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": gone.pid}, f)
    assert merge_if_complete(out, 2) == out
    assert not os.path.exists(lock) and len(ProposalStore.open(out)) == 5


def test_a_shard_id_outside_zero_to_k_is_refused(tmp_path):
    """--shard-id I of K: I in [0, K). I = K (one past the last) and I = -1 are refused before anything is
    written."""
    from siamese_detr.utils.user_errors import UserValueError

    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    for bad in (2, -1):
        with pytest.raises(UserValueError, match=rf"--shard-id must be in \[0, 2\), got {bad}"):
            _run(records, out, num_shards=2, shard_id=bad)
    assert not os.path.exists(out)


def test_an_older_shard_resumed_on_another_slice_is_refused(tmp_path):
    """A run.json of an older version has no whole-list keys: the digest of the shard's own slice
    (image_ids_sha1) is then what tells that the shard's images changed. Shard 0 of 2 re-run on a list whose
    first two images are swapped: refused naming image_ids_sha1."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    _run(records, out, num_shards=2, shard_id=0, chunk_size=1, keep_chunks=True)
    sdir = os.path.join(out, "shards", "shard-00000-of-00002")
    os.remove(os.path.join(sdir, "meta.json"))  # killed before assembling: it would resume
    with open(os.path.join(sdir, "run.json")) as f:
        run = json.load(f)
    del run["num_images_all"], run["image_list_sha1"]
    with open(os.path.join(sdir, "run.json"), "w") as f:
        json.dump(run, f)
    swapped = [records[1], records[0]] + records[2:]
    with pytest.raises(ProposalStoreError, match=r"image_ids_sha1 differ"):
        _run(swapped, out, num_shards=2, shard_id=0, chunk_size=1)


def test_chunk_files_are_removed_once_the_shard_store_is_written_unless_kept(tmp_path):
    """The chunks are the resumable form of a running shard: once its store is assembled they are deleted
    (they would double the disk used), and kept with keep_chunks (--keep-chunks)."""
    records = _images(str(tmp_path / "imgs"))
    for keep, out in ((False, str(tmp_path / "a")), (True, str(tmp_path / "b"))):
        _run(records, out, chunk_size=2, keep_chunks=keep)
        sdir = os.path.join(out, "shards", "shard-00000-of-00001")
        assert os.path.isfile(os.path.join(sdir, "meta.json"))
        chunks = os.path.join(sdir, "chunks")
        if keep:
            assert sorted(os.listdir(chunks)) == [f"chunk-{c:06d}.{e}" for c in range(3) for e in ("json", "npz")]
        else:
            assert not os.path.exists(chunks)


def test_a_broken_pool_takes_back_the_progress_of_its_chunk():
    """When a worker dies mid-chunk, the images of that chunk counted so far are taken off the progress bar
    again (the chunk is computed once more), so the bar never counts an image twice."""
    from concurrent.futures.process import BrokenProcessPool

    class DyingPool:
        def map(self, fn, tasks, chunksize):
            yield "first"
            yield "second"
            raise BrokenProcessPool("a worker died")

    class Bar:
        def __init__(self):
            self.updates = []

        def update(self, n):
            self.updates.append(n)

    bar = Bar()
    with pytest.raises(BrokenProcessPool):
        generate_module._run_chunk(DyingPool(), [None] * 4, bar, 2)
    assert bar.updates == [1, 1, -2] and sum(bar.updates) == 0


def test_a_resumed_shard_counts_its_finished_images_and_names_its_chunks_by_dataset_index(tmp_path, monkeypatch):
    """Shard 1 of 2 owns images 2..4 of the dataset (chunks of 2: [im2, im3], [im4]). Killed with chunk 1 (the
    short last one) finished and chunk 0 not: the resumed run's progress starts at the 1 finished image (not a
    whole chunk size), and the chunk it computes is named by its images' indices in the whole dataset."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    _run(records, out, num_shards=2, shard_id=1, chunk_size=2, keep_chunks=True)
    sdir = os.path.join(out, "shards", "shard-00001-of-00002")
    os.remove(os.path.join(sdir, "meta.json"))
    os.remove(os.path.join(sdir, "chunks", "chunk-000000.json"))  # chunk 0 unfinished
    bars, chunks_named = [], []
    real_bar = generate_module.progress_bar

    def recording_bar(total, initial=0, **kw):
        bars.append((total, initial))
        return real_bar(total, initial=initial, **kw)

    class RecordingPool(generate_module._RetryingPool):
        def compute(self, tasks, bar, where):
            chunks_named.append(where)
            return super().compute(tasks, bar, where)

    monkeypatch.setattr(generate_module, "progress_bar", recording_bar)
    monkeypatch.setattr(generate_module, "_RetryingPool", RecordingPool)
    summary = _run(records, out, num_shards=2, shard_id=1, chunk_size=2)
    assert summary["resumed_chunks"] == 1 and summary["computed_chunks"] == 1
    assert bars == [(3, 1)]
    assert chunks_named == ["chunk 0 (images 2 to 3 of the dataset, first 'im2.png')"]


def test_a_run_json_lacking_a_setting_of_every_version_is_refused_on_resume(tmp_path):
    """Only the whole-list keys (added by a later version) may be missing from a shard's run.json; one that
    lacks a setting every version writes (here params) cannot be checked, so resuming it is refused, naming it."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    _run(records, out, chunk_size=2, keep_chunks=True)
    sdir = os.path.join(out, "shards", "shard-00000-of-00001")
    os.remove(os.path.join(sdir, "meta.json"))
    with open(os.path.join(sdir, "run.json")) as f:
        run = json.load(f)
    del run["params"]
    with open(os.path.join(sdir, "run.json"), "w") as f:
        json.dump(run, f)
    with pytest.raises(ProposalStoreError, match=r"run.json: this output was started with different settings "
                                                 r"\(params differ\)"):
        _run(records, out, chunk_size=2)


def test_ctrl_c_mid_chunk_cancels_the_queued_images_instead_of_waiting_for_them(tmp_path, monkeypatch):
    """Ctrl-C while a chunk is computed in worker processes: the pool is shut down without waiting, its queued
    images cancelled (not ``shutdown(wait=True)``, which would compute the rest of the chunk first), and the
    KeyboardInterrupt reaches the caller; no chunk is written."""
    shutdowns = []

    class InterruptedPool:
        def map(self, fn, tasks, chunksize):
            raise KeyboardInterrupt

        def shutdown(self, wait=True, cancel_futures=False):
            shutdowns.append({"wait": wait, "cancel_futures": cancel_futures})

    monkeypatch.setattr(generate_module, "_new_pool", lambda num_workers: InterruptedPool())
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        _run(records, out, chunk_size=2, num_workers=2)
    assert shutdowns == [{"wait": False, "cancel_futures": True}]
    assert os.listdir(os.path.join(out, "shards", "shard-00000-of-00001", "chunks")) == []
