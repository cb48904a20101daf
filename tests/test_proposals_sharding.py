"""Resumable, sharded generation (``generate_shard`` / ``merge_if_complete``) with the cheap ``random`` method:
which boxes a store holds for which image id, what a re-run redoes, when a merge happens, what it refuses,
and that chunk files are never unpickled.

Boxes of the ``random`` method are computed here by calling ``random_boxes(h, w, K,
seed=stable_seed(image_id, seed))`` directly (the documented rule), not through the generator: these tests
check the generator's wiring (seed, per-image size, order, sharding); the drawing itself is checked against its
rules in ``test_proposals_sources.py`` and ``test_proposal_methods.py``. Sizes are (height, width); boxes xyxy
absolute pixels.
"""

import hashlib
import json
import os

import cv2
import numpy as np
import pytest

from siamese_detr.data.proposals import ProposalStore, ProposalStoreError
from siamese_detr.data.proposals.generate import generate_shard, list_image_dir
from siamese_detr.data.proposals.methods import random_boxes, stable_seed
from siamese_detr.data.proposals.shards import image_list_digest, merge_if_complete, missing_shards

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
    order (sha1 of the ids joined by newlines): the tool compares it with the images listed on a re-run."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    for i in range(2):
        _run(records, out, num_shards=2, shard_id=i)
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
    """A shard folder without meta.json (still running, or killed) is missing: no merge, no error."""
    records = _images(str(tmp_path / "imgs"))
    out = str(tmp_path / "out")
    _run(records, out, num_shards=2, shard_id=0)
    os.makedirs(os.path.join(out, "shards", "shard-00001-of-00002", "chunks"))  # shard 1 started only
    assert missing_shards(out, 2) == [1]
    assert merge_if_complete(out, 2) is None
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
