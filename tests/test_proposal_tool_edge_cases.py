"""tools/generate_proposals.py edge cases found by the adversarial test of the tools (its items 3, 4, 5, 7, 8,
9 and 14): --overwrite of one shard, shards of other images or another --num-shards, --import-detectron2 onto
a store and for the wrong dataset, a folder whose image list changed, the "nothing readable" way out,
an explicit --merge that cannot merge, and COCO json sizes that differ from the files."""
import json
import os
import pickle
import shutil

import cv2
import numpy as np
import pytest

from siamese_detr.data.proposals import ProposalStore

from hang_guard import HANG_GUARD_S
from script_modules import forget_datasets, load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "generate_proposals.py")


def _tool():
    return load_script(TOOL, "generate_proposals_edge_cases")


gen = _tool()


def _images(folder, n, size=(48, 64), seed=0, prefix="im"):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(os.path.join(folder, f"{prefix}{i:02d}.png"), rng.integers(0, 255, size + (3,), dtype=np.uint8))


def _args(images, out, *extra):
    return ["--image-dir", images, "--method", "random", "--max-boxes", "8", "--output", out, "--no-progress",
            *extra]


def _shard(k, i, *extra):
    return ["--num-shards", str(k), "--shard-id", str(i), *extra]


def _same_boxes(a, b):
    sa, sb = ProposalStore.open(a), ProposalStore.open(b)
    assert sa.image_ids == sb.image_ids
    assert all(np.array_equal(sa.get(i)[0], sb.get(i)[0]) for i in sa.image_ids)


@pytest.fixture
def coco_specs():
    """Register ``coco:`` specs written by a test; removed afterwards."""
    made = []

    def make(json_file, images, sizes):
        """A COCO json listing ``sizes`` = [(file_name, height, width)] (ids 1..n, no annotations)."""
        data = {"images": [{"id": i + 1, "file_name": f, "height": h, "width": w}
                           for i, (f, h, w) in enumerate(sizes)],
                "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
        with open(json_file, "w") as f:
            json.dump(data, f)
        spec = f"coco:{json_file}:{images}"
        made.append(spec)
        return spec

    yield make
    forget_datasets(made)


# ------------------------------------------------------------------------------------------------ item 3
def test_overwrite_of_one_shard_keeps_the_other_shards(tmp_path, capsys):
    images, out, single = str(tmp_path / "imgs"), str(tmp_path / "out"), str(tmp_path / "single")
    _images(images, 6)
    assert gen.main(_args(images, single)) == 0
    assert gen.main(_args(images, out) + _shard(2, 0)) == 0  # "machine 0" finishes
    shard0 = os.path.join(out, "shards", "shard-00000-of-00002", "meta.json")
    stamp = os.stat(shard0).st_mtime_ns
    # machine 1 with a wrong flag: refused when it starts (nothing computed), naming the setting
    assert gen.main(_args(images, out, "--max-boxes", "3") + _shard(2, 1)) == 1
    assert "this run has params.max_boxes=3, shard-00000-of-00002 has 8" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "shards", "shard-00001-of-00002"))
    assert os.stat(shard0).st_mtime_ns == stamp
    assert gen.main(_args(images, out) + _shard(2, 1, "--overwrite", "--keep-shards")) == 0
    assert os.stat(shard0).st_mtime_ns == stamp  # shard 0 was neither deleted nor recomputed
    _same_boxes(single, out)

    # shards kept: --overwrite of shard 1 clears shard 1 and the merged store only, then merges again
    assert gen.main(_args(images, out) + _shard(2, 1, "--overwrite")) == 0
    _same_boxes(single, out)
    assert open(os.path.join(out, "generate.log")).read().count("shard 0/2:") == 1  # computed once, ever
    assert not os.path.exists(os.path.join(out, "shards"))  # removed after this merge (no --keep-shards)

    # shards removed after the merge: the merged store holds shard 0's results, so --overwrite of shard 1 is
    # refused rather than losing them
    capsys.readouterr()
    assert gen.main(_args(images, out) + _shard(2, 1, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "shard 0 of 2" in err and "(merged) store" in err and "only copy" in err
    _same_boxes(single, out)
    # --merge --overwrite would clear the merged store to merge again: both shards are gone, both are named
    assert gen.main(["--output", out, "--merge", "--num-shards", "2", "--overwrite"]) == 2
    assert "shard 0, 1 of 2 are not on disk" in capsys.readouterr().err
    _same_boxes(single, out)


# ------------------------------------------------------------------------------------------------ item 4
def test_shards_of_other_images_or_another_num_shards_are_refused(tmp_path, capsys):
    images, other = str(tmp_path / "imgs"), str(tmp_path / "other")
    _images(images, 6)
    _images(other, 4, seed=1, prefix="o")
    out = str(tmp_path / "mix")
    assert gen.main(_args(images, out) + _shard(2, 0)) == 0
    capsys.readouterr()
    # another folder for shard 1 of the same output: refused when it starts
    assert gen.main(_args(other, out) + _shard(2, 1)) == 1
    err = capsys.readouterr().err
    assert "shard-00000-of-00002" in err and "dataset" in err and other in err
    assert not os.path.exists(os.path.join(out, "meta.json"))
    # another --num-shards in the same output: refused when it starts
    assert gen.main(_args(images, out) + _shard(3, 1)) == 1
    err = capsys.readouterr().err
    assert "--num-shards 2" in err and "shard-00000-of-00002" in err
    assert not os.path.exists(os.path.join(out, "shards", "shard-00001-of-00003"))

    # the same folder with an image added for shard 1: another image list, refused
    _images(str(tmp_path / "grown"), 7)
    grown_out = str(tmp_path / "grown_out")
    assert gen.main(_args(images, grown_out) + _shard(2, 0)) == 0
    shutil.copy(os.path.join(tmp_path, "grown", "im06.png"), os.path.join(images, "im06.png"))
    capsys.readouterr()
    assert gen.main(_args(images, grown_out) + _shard(2, 1)) == 1
    assert "image list" in capsys.readouterr().err
    os.remove(os.path.join(images, "im06.png"))

    # at merge: a shard of the other folder put next to shard 0 (as a shared file system would) is refused
    elsewhere = str(tmp_path / "elsewhere")
    assert gen.main(_args(other, elsewhere) + _shard(2, 1, "--keep-shards")) == 0
    shutil.copytree(os.path.join(elsewhere, "shards", "shard-00001-of-00002"),
                    os.path.join(out, "shards", "shard-00001-of-00002"))
    capsys.readouterr()
    assert gen.main(["--output", out, "--merge", "--num-shards", "2"]) == 1
    err = capsys.readouterr().err
    assert "cannot merge" in err and "dataset" in err and "shard-00001-of-00002" in err
    assert f"shard-00001-of-00002 has dataset={other!r}, shard-00000-of-00002 has {images!r}" in err
    assert not os.path.exists(os.path.join(out, "meta.json"))


def test_a_shard_started_by_the_previous_version_resumes_and_merges(tmp_path):
    """run.json of an older version (no whole-list digest): the shard resumes, its run.json is completed."""
    images, out, single = str(tmp_path / "imgs"), str(tmp_path / "out"), str(tmp_path / "single")
    _images(images, 6)
    assert gen.main(_args(images, single)) == 0
    assert gen.main(_args(images, out, "--keep-chunks", "--chunk-size", "1") + _shard(2, 0)) == 0
    sdir = os.path.join(out, "shards", "shard-00000-of-00002")
    os.remove(os.path.join(sdir, "meta.json"))  # killed before it was assembled
    os.remove(os.path.join(sdir, "chunks", "chunk-000002.json"))
    run = json.load(open(os.path.join(sdir, "run.json")))
    for key in ("num_images_all", "image_list_sha1"):
        run.pop(key)
    json.dump(run, open(os.path.join(sdir, "run.json"), "w"))
    assert gen.main(_args(images, out, "--chunk-size", "1") + _shard(2, 0)) == 0
    assert "image_list_sha1" in json.load(open(os.path.join(sdir, "run.json")))
    assert gen.main(_args(images, out, "--chunk-size", "1") + _shard(2, 1)) == 0
    _same_boxes(single, out)


# ------------------------------------------------------------------------------------------------ item 5
def test_import_onto_a_complete_store_and_for_the_wrong_dataset(tmp_path, capsys, coco_specs):
    small, big = str(tmp_path / "small"), str(tmp_path / "big")
    _images(small, 5, size=(48, 64))
    _images(big, 5, size=(200, 300), seed=1)
    names = [f"im{i:02d}.png" for i in range(5)]
    spec_small = coco_specs(str(tmp_path / "small.json"), small, [(n, 48, 64) for n in names])
    spec_big = coco_specs(str(tmp_path / "big.json"), big, [(n, 200, 300) for n in names])
    spec_three = coco_specs(str(tmp_path / "three.json"), small, [(n, 48, 64) for n in names[:3]])
    common = ["--method", "random", "--max-boxes", "8", "--no-progress"]
    store, pkl = str(tmp_path / "small.rand"), str(tmp_path / "big.pkl")
    assert gen.main(["--dataset", spec_small, "--output", store, *common]) == 0
    assert gen.main(["--dataset", spec_big, "--output", str(tmp_path / "big.rand"), *common,
                     "--export-detectron2", pkl]) == 0
    capsys.readouterr()

    # onto a complete store made with other settings: refused without --overwrite, the store is kept
    imp = ["--import-detectron2", pkl, "--trust-pickle"]
    assert gen.main(imp + ["--dataset", spec_big, "--output", store]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--overwrite" in err
    assert ProposalStore.open(store).method == "random"

    # for the wrong dataset: refused before anything is written (even with --overwrite the old store stays)
    assert gen.main(imp + ["--dataset", spec_small, "--output", store, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "sizes" in err and "do not match" in err and spec_small in err
    assert ProposalStore.open(store).method == "random"
    fresh = str(tmp_path / "fresh")
    assert gen.main(imp + ["--dataset", spec_small, "--output", fresh]) == 2
    assert "do not match" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(fresh, "meta.json"))
    assert gen.main(imp + ["--dataset", spec_three, "--output", fresh]) == 2
    err = capsys.readouterr().err
    assert "ids" in err and "do not match" in err and "'4'" in err
    assert not os.path.exists(os.path.join(fresh, "meta.json"))

    # the right dataset: imported; the same import again is "already complete"; without --dataset (sizes
    # unknown) it is another setting, refused
    assert gen.main(imp + ["--dataset", spec_big, "--output", fresh]) == 0
    assert ProposalStore.open(fresh, dataset=spec_big).method == "detectron2_import"
    capsys.readouterr()
    assert gen.main(imp + ["--dataset", spec_big, "--output", fresh]) == 0
    assert "already complete" in capsys.readouterr().out
    assert gen.main(imp + ["--output", fresh]) == 2
    assert "dataset" in capsys.readouterr().err
    assert ProposalStore.open(fresh).image_size("1") == (200, 300)
    # and with --overwrite the import replaces the store
    assert gen.main(imp + ["--dataset", spec_big, "--output", store, "--overwrite"]) == 0
    assert ProposalStore.open(store).method == "detectron2_import"


def test_a_failed_import_write_leaves_no_complete_store(tmp_path, monkeypatch):
    from siamese_detr.data.proposals import detectron2_format, import_detectron2

    payload = {"ids": [1, 2], "boxes": [np.zeros((1, 4), np.float32)] * 2,
               "objectness_logits": [np.ones(1, np.float32)] * 2}
    pkl = str(tmp_path / "p.pkl")
    with open(pkl, "wb") as f:
        pickle.dump(payload, f)

    def broken_open(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(detectron2_format.ProposalStore, "open", broken_open)
    out = str(tmp_path / "s")
    with pytest.raises(OSError):
        import_detectron2(pkl, out, allow_pickle=True)
    assert not os.path.exists(os.path.join(out, "meta.json"))


# ------------------------------------------------------------------------------------------------ item 7
def test_a_complete_store_is_refused_when_its_folder_lists_other_images(tmp_path, capsys):
    images, out = str(tmp_path / "imgs"), str(tmp_path / "store")
    _images(images, 4)
    assert gen.main(_args(images, out)) == 0
    link = str(tmp_path / "imgs_link")
    os.symlink(images, link)
    capsys.readouterr()
    assert gen.main(_args(link, out)) == 0  # the same folder through a symlink
    assert "already complete" in capsys.readouterr().out

    shutil.copy(os.path.join(images, "im00.png"), os.path.join(images, "new.png"))
    assert gen.main(_args(images, out)) == 2
    err = capsys.readouterr().err
    assert "new.png" in err and "--overwrite" in err
    # a store made before the image list was recorded in meta.json is compared by its ids
    meta_file = os.path.join(out, "meta.json")
    meta = json.load(open(meta_file))
    meta.pop("image_list", None)
    json.dump(meta, open(meta_file, "w"))
    assert gen.main(_args(images, out)) == 2
    assert "new.png" in capsys.readouterr().err
    os.remove(os.path.join(images, "new.png"))
    assert gen.main(_args(images, out)) == 0  # back to the listed images: accepted

    shutil.copy(os.path.join(images, "im00.png"), os.path.join(images, "new.png"))
    assert gen.main(_args(images, out, "--overwrite")) == 0
    assert "new.png" in ProposalStore.open(out).image_ids


# ------------------------------------------------------------------------------------------------ item 8
def test_nothing_readable_says_how_to_run_again(tmp_path, capsys):
    bad, out = str(tmp_path / "bad"), str(tmp_path / "out")
    os.makedirs(bad)
    open(os.path.join(bad, "zero.jpg"), "wb").close()
    open(os.path.join(bad, "text.png"), "w").write("not a png")
    assert gen.main(_args(bad, out)) == 1
    err = capsys.readouterr().err
    assert "none of the 2 images could be read" in err and "--overwrite" in err
    _images(str(tmp_path / "good"), 1)
    shutil.copy(os.path.join(tmp_path, "good", "im00.png"), os.path.join(bad, "text.png"))  # fixed
    assert gen.main(_args(bad, out, "--overwrite")) == 0  # the advised way out
    assert ProposalStore.open(out).image_ids == ["text.png"]


# ------------------------------------------------------------------------------------------------ item 9
def test_an_explicit_merge_that_cannot_merge_fails_naming_the_missing_shards(tmp_path, capsys):
    images, out = str(tmp_path / "imgs"), str(tmp_path / "out")
    _images(images, 6)
    assert gen.main(_args(images, out) + _shard(3, 0)) == 0
    assert gen.main(_args(images, out) + _shard(3, 2)) == 0
    assert "missing: 1" in capsys.readouterr().out  # a shard that finished early: waits, rc 0
    for argv in (["--output", out, "--merge", "--num-shards", "3"], ["--output", out, "--merge"]):
        assert gen.main(argv) == 1
        err = capsys.readouterr().err
        assert "shard 1 of 3" in err and "--shard-id 1" in err
    assert not os.path.exists(os.path.join(out, "meta.json"))
    # K is taken from the shards on disk
    assert gen.main(_args(images, out) + _shard(3, 1, "--keep-shards")) == 0
    os.remove(os.path.join(out, "meta.json"))  # as if the last shard had not merged
    capsys.readouterr()
    assert gen.main(["--output", out, "--merge"]) == 0
    assert len(ProposalStore.open(out)) == 6
    # nothing there to merge: a one-line error and no folder left behind
    missing = str(tmp_path / "does_not_exist")
    assert gen.main(["--output", missing, "--merge"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not os.path.exists(missing)
    # shards of two --num-shards values: K must be given
    amb = str(tmp_path / "amb")
    for k in (2, 3):
        os.makedirs(os.path.join(amb, "shards", f"shard-00000-of-0000{k}"))
    assert gen.main(["--output", amb, "--merge"]) == 2
    assert "--num-shards" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- item 14
def test_coco_sizes_that_differ_from_the_files_are_an_error(tmp_path, capsys, coco_specs):
    images = str(tmp_path / "imgs")
    _images(images, 3, size=(48, 64))
    json_file = str(tmp_path / "my.json")
    spec = coco_specs(json_file, images, [("im00.png", 48, 64), ("im01.png", 999, 999), ("im02.png", 48, 64)])
    out = str(tmp_path / "out")
    assert gen.main(["--dataset", spec, "--method", "random", "--output", out, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert json_file in err and os.path.join(images, "im01.png") in err and "999x999" in err and "48x64" in err
    assert f"{json_file}: 1 image(s) differ in size" in err  # the file to correct comes first, not the spec
    assert not os.path.exists(os.path.join(out, "meta.json"))
    # the json fixed (the same spec string): the run goes through
    good = str(tmp_path / "good.json")
    spec_good = coco_specs(good, images, [(f"im{i:02d}.png", 48, 64) for i in range(3)])
    assert gen.main(["--dataset", spec_good, "--method", "random", "--output", str(tmp_path / "ok"),
                     "--no-progress"]) == 0
    ProposalStore.open(str(tmp_path / "ok"), dataset=spec_good)


def _children(pid: int):
    """Pids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def test_workers_end_when_the_generator_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from test_launch import kill_and_wait_for

    if not os.path.isdir("/proc"):
        pytest.skip("Linux /proc")
    _images(tmp_path / "imgs", 6)
    images = str(tmp_path / "imgs")
    # started as `cmd &` in a script would: SIGINT ignored
    proc = subprocess.Popen([sys.executable, TOOL, *_args(images, str(tmp_path / "out")), "--num-workers", "2",
                             "--debug-sleep", "5"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    workers = []
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while len(workers) < 3 and time.monotonic() < deadline:  # two workers and the resource tracker
            assert proc.poll() is None, "the generator ended before its workers started"
            time.sleep(0.5)
            workers = _children(proc.pid)
        assert len(workers) >= 2
        time.sleep(3)  # the workers are busy with their images
        assert kill_and_wait_for(proc, workers)
    finally:
        proc.kill()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_negative_max_boxes_is_refused(tmp_path, capsys):
    _images(tmp_path / "imgs", 2)
    assert _tool().main(_args(str(tmp_path / "imgs"), str(tmp_path / "out"), "--max-boxes", "-1")) == 2
    assert "--max-boxes must be 0 (all boxes) or more" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ export path
def test_export_to_a_missing_folder_is_refused_before_any_work(tmp_path, capsys):
    images, out = str(tmp_path / "images"), str(tmp_path / "store")
    _images(images, 3)
    missing = str(tmp_path / "no" / "such" / "proposals.pkl")
    assert gen.main(_args(images, out, "--export-detectron2", missing)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--export-detectron2" in err and "mkdir -p" in err
    assert not os.path.exists(out)  # refused before the store was started
    # a folder given as the file
    assert gen.main(_args(images, out, "--export-detectron2", str(tmp_path))) == 2
    assert "is a folder" in capsys.readouterr().err
    # and a writable path works
    pkl = str(tmp_path / "proposals.pkl")
    assert gen.main(_args(images, out, "--export-detectron2", pkl)) == 0
    with open(pkl, "rb") as f:
        assert len(pickle.load(f)["ids"]) == 3  # the test's own file


# ------------------------------------------------------------------------------------------------ output path
def test_an_output_that_is_a_file_is_refused_and_left_intact(tmp_path, capsys):
    """--output naming an existing file: one error line saying it is a file, not a store folder (exit 2, no
    FileExistsError traceback from os.makedirs), with or without --merge; the file keeps its bytes. A file on
    the way to --output (FILE/store) is an error line too."""
    images = str(tmp_path / "images")
    _images(images, 2)
    existing = tmp_path / "existing_file.txt"
    existing.write_bytes(b"not a store\n")
    for extra in ((), ("--merge",)):
        assert gen.main(_args(images, str(existing), *extra)) == 2
        err = capsys.readouterr().err
        assert err == (f"error: --output {str(existing)!r} is a file, not a proposal store folder (it is left as it "
                       "is); give a folder to write the store into, e.g. NAME.METHOD.proposals (created if "
                       "missing)\n")
    assert existing.read_bytes() == b"not a store\n"
    assert gen.main(_args(images, str(existing / "store"))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot create the store folder --output {str(existing / 'store')!r} (")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert existing.read_bytes() == b"not a store\n"
