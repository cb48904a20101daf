"""tools/generate_proposals.py: bad images, shards + merge, resume after a killed run, Detectron2 export."""

import json
import os
import pickle
import re
import subprocess
import sys
import time

import cv2
import numpy as np

from siamese_detr.data.proposals import ProposalStore
from script_modules import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "generate_proposals.py")


def _load_tool():
    return load_script(TOOL, "generate_proposals_tool")


gen = _load_tool()


def _make_images(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "sub"), exist_ok=True)
    for i in range(n):
        h, w = int(rng.integers(40, 70)), int(rng.integers(40, 70))
        img = rng.integers(80, 120, (h, w, 3)).astype(np.uint8)
        x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        cv2.rectangle(img, (x, y), (x + w // 3, y + h // 3), (240, 240, 240), -1)
        name = os.path.join(folder, "sub" if i % 3 == 0 else "", f"im{i:02d}.png")
        cv2.imwrite(name, img)
    open(os.path.join(folder, "notes.txt"), "w").write("not an image")


def _assert_same_store(a, b):
    sa, sb = ProposalStore.open(a), ProposalStore.open(b)
    assert sa.image_ids == sb.image_ids and sa.method == sb.method and sa.params == sb.params
    for i in sa.image_ids:
        (ba, ca), (bb, cb) = sa.get(i), sb.get(i)
        assert np.array_equal(ba, bb) and np.array_equal(ca, cb)
        assert sa.image_size(i) == sb.image_size(i)


def test_corrupt_and_zero_byte_images_are_skipped(tmp_path, capsys):
    images = tmp_path / "imgs"
    _make_images(str(images), 4)
    (images / "zero.jpg").write_bytes(b"")
    (images / "sub" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = str(tmp_path / "out.proposals")
    pkl = str(tmp_path / "d2.pkl")
    rc = gen.main(
        [
            "--image-dir",
            str(images),
            "--method",
            "edgeboxes",
            "--max-boxes",
            "20",
            "--output",
            out,
            "--no-progress",
            "--export-detectron2",
            pkl,
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "2 unreadable images skipped" in printed and "zero.jpg" in printed and "sub/corrupt.png" in printed
    log = open(os.path.join(out, "generate.log")).read()
    assert "SKIPPED zero.jpg" in log and "SKIPPED sub/corrupt.png" in log
    store = ProposalStore.open(out)
    assert sorted(store.image_ids) == sorted(["im01.png", "im02.png", "sub/im00.png", "sub/im03.png"])
    assert sorted(s["image_id"] for s in store.skipped) == ["sub/corrupt.png", "zero.jpg"]
    for i in store.image_ids:
        h, w = cv2.imread(os.path.join(images, i)).shape[:2]
        assert store.image_size(i) == (h, w)
        assert 0 < len(store.get(i)[0]) <= 20
    payload = pickle.load(open(pkl, "rb"))  # the test wrote it: trusted
    assert payload["ids"] == store.image_ids and len(payload["boxes"]) == 4

    # and back through the CLI: refused without --trust-pickle, identical boxes with it
    imported = str(tmp_path / "imported")
    assert gen.main(["--import-detectron2", pkl, "--output", imported]) == 2
    err = capsys.readouterr().err
    assert "add --trust-pickle only if you trust" in err and "allow_pickle" not in err  # worded for the CLI
    assert not os.path.exists(imported)
    assert gen.main(["--import-detectron2", pkl, "--output", imported, "--trust-pickle"]) == 0
    back = ProposalStore.open(imported, validate=False)
    for i in store.image_ids:
        order = np.argsort(-store.get(i)[1], kind="stable")
        assert np.array_equal(back.get(i)[0], store.get(i)[0][order])  # float32 -> float64 -> float32: exact


def test_shards_merge_equals_single_run(tmp_path):
    images = str(tmp_path / "imgs")
    _make_images(images, 7)
    common = ["--image-dir", images, "--method", "edgeboxes", "--max-boxes", "30", "--no-progress"]
    single = str(tmp_path / "single")
    assert gen.main(common + ["--output", single, "--chunk-size", "3"]) == 0
    sharded = str(tmp_path / "sharded")
    assert (
        gen.main(common + ["--output", sharded, "--num-shards", "3", "--shard-id", "2", "--chunk-size", "2"])
        == 0
    )
    assert not os.path.exists(os.path.join(sharded, "meta.json"))  # shards 0 and 1 are missing
    assert (
        gen.main(common + ["--output", sharded, "--num-shards", "3", "--shard-id", "0", "--chunk-size", "2"])
        == 0
    )
    assert (
        gen.main(common + ["--output", sharded, "--num-shards", "3", "--shard-id", "1", "--chunk-size", "2"])
        == 0
    )
    assert os.path.exists(os.path.join(sharded, "meta.json"))  # the last shard merged
    assert not os.path.exists(os.path.join(sharded, "shards"))
    _assert_same_store(single, sharded)
    # random proposals: the same per image whatever the sharding, because seeds come from image ids
    r1, r2 = str(tmp_path / "r1"), str(tmp_path / "r2")
    rnd = ["--image-dir", images, "--method", "random", "--max-boxes", "16", "--no-progress"]
    assert gen.main(rnd + ["--output", r1]) == 0
    for shard in (0, 1):
        assert gen.main(rnd + ["--output", r2, "--num-shards", "2", "--shard-id", str(shard)]) == 0
    _assert_same_store(r1, r2)


def test_resume_after_killed_run(tmp_path, capsys):
    images = str(tmp_path / "imgs")
    _make_images(images, 12)
    args = [
        "--image-dir",
        images,
        "--method",
        "edgeboxes",
        "--max-boxes",
        "25",
        "--chunk-size",
        "2",
        "--no-progress",
        "--keep-shards",
        "--keep-chunks",
    ]
    reference = str(tmp_path / "reference")
    assert gen.main(args + ["--output", reference]) == 0

    out = str(tmp_path / "resumed")
    chunks = os.path.join(out, "shards", "shard-00000-of-00001", "chunks")
    proc = subprocess.Popen(
        [sys.executable, TOOL] + args + ["--output", out, "--debug-sleep", "0.25"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(6000):  # up to ~2 minutes for the first chunk
            if os.path.exists(os.path.join(chunks, "chunk-000000.json")):
                break
            assert proc.poll() is None, "generate_proposals ended before chunk 0"
            time.sleep(0.02)
        else:
            raise AssertionError("no chunk written in time")
    finally:
        proc.kill()
        proc.wait()
    finished = {
        f: os.stat(os.path.join(chunks, f)).st_mtime_ns
        for f in os.listdir(chunks)
        if f.endswith((".json", ".npz"))
    }
    assert "chunk-000000.npz" in finished
    assert len(finished) < 12, "the run was killed mid-way: some chunks must be left"
    assert not os.path.exists(os.path.join(out, "meta.json"))

    assert gen.main(args + ["--output", out]) == 0
    for f, mtime in finished.items():  # finished chunks were kept, not recomputed
        assert os.stat(os.path.join(chunks, f)).st_mtime_ns == mtime
    assert len([f for f in os.listdir(chunks) if f.endswith(".json")]) == 6
    log = open(os.path.join(out, "generate.log")).read()
    assert f"{len(finished) // 2} already finished (resumed)" in log
    _assert_same_store(reference, out)

    # re-running a finished output does nothing; changing the settings of a partial run is refused
    assert gen.main(args + ["--output", out]) == 0
    other = str(tmp_path / "other")
    assert gen.main(args + ["--output", other, "--num-shards", "2", "--shard-id", "0"]) == 0
    capsys.readouterr()
    assert gen.main(args[:-1] + ["--output", other, "--num-shards", "2", "--shard-id", "0", "--max-boxes", "5"]) == 1
    assert re.search("different settings.*params.*--overwrite", capsys.readouterr().err)


def test_dataset_with_meta_json(tmp_path):
    """--dataset works on any registered Detectron2 dataset (registered here, removed afterwards)."""
    from detectron2.data import DatasetCatalog

    images = str(tmp_path / "imgs")
    _make_images(images, 3)
    files = sorted(os.path.join(images, f) for f in os.listdir(images) if f.endswith(".png"))
    name = "test_generate_proposals_tiny"
    DatasetCatalog.register(
        name, lambda: [{"file_name": f, "image_id": 100 + i} for i, f in enumerate(files)]
    )
    try:
        out = str(tmp_path / "ds")
        assert (
            gen.main(
                [
                    "--dataset",
                    name,
                    "--method",
                    "selective_search",
                    "--ss-resize",
                    "32",
                    "--output",
                    out,
                    "--no-progress",
                    "--num-workers",
                    "2",
                ]
            )
            == 0
        )
        store = ProposalStore.open(out)
        assert store.image_ids == ["100", "101"] and 100 in store
        meta = json.load(open(os.path.join(out, "meta.json")))
        assert meta["dataset"] == name and meta["params"]["resize"] == 32 and meta["params"]["mode"] == "fast"
        # two workers wrote it; here, in another order in one process, each image gives its stored boxes
        from siamese_detr.data.proposals import compute_proposals

        for i, f in reversed(list(enumerate(files))):
            boxes, _ = compute_proposals(cv2.imread(f), "selective_search", resize=32)
            assert np.array_equal(store.get(100 + i)[0], boxes)
    finally:
        DatasetCatalog.remove(name)


def test_folder_spec_gives_the_same_store_as_image_dir(tmp_path):
    """--dataset folder:DIR (the spec a pretraining config takes) and --image-dir DIR write the same store:
    images keyed by their path relative to the folder, the same boxes."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    images = str(tmp_path / "imgs")
    _make_images(images, 4)
    spec = f"folder:{images}"
    common = ["--method", "random", "--no-progress", "--num-workers", "1"]
    try:
        assert gen.main(["--dataset", spec, "--output", str(tmp_path / "by_spec"), *common]) == 0
        assert gen.main(["--image-dir", images, "--output", str(tmp_path / "by_dir"), *common]) == 0
        by_spec, by_dir = ProposalStore.open(str(tmp_path / "by_spec")), ProposalStore.open(str(tmp_path / "by_dir"))
        assert by_spec.image_ids == by_dir.image_ids == sorted(by_dir.image_ids)
        assert os.path.join("sub", "im00.png") in by_spec.image_ids
        for i in by_spec.image_ids:
            assert np.array_equal(by_spec.get(i)[0], by_dir.get(i)[0])
    finally:
        if spec in DatasetCatalog.list():
            DatasetCatalog.remove(spec)
            MetadataCatalog.remove(spec)


def test_missing_spec_file_is_one_line_error(tmp_path, capsys):
    assert gen.main(["--dataset", f"coco:{tmp_path / 'nope.json'}", "--method", "random",
                     "--output", str(tmp_path / "out"), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "nope.json" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
