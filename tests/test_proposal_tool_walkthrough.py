"""tools/generate_proposals.py and the proposal store sources, from a user walkthrough: the command hinted for a
missing DETReg store, --sed-model errors, shards started with other settings, and the merge error's wording."""

import logging
import os
import shutil

import cv2
import numpy as np

from siamese_detr.data.proposals.sources import StoreProposals
from siamese_detr.data.proposals.store import StoreWriter

from script_modules import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
gen = load_script(os.path.join(ROOT, "tools", "generate_proposals.py"), "generate_proposals_walkthrough")


def _images(folder, n, size=(40, 48)):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(os.path.join(folder, f"im{i:02d}.png"), rng.integers(0, 255, size + (3,), dtype=np.uint8))


def _args(images, out, method="random", *extra):
    return ["--image-dir", images, "--method", method, "--max-boxes", "8", "--output", out, "--no-progress", *extra]


def _shard(i, *extra, k=2):
    return ["--num-shards", str(k), "--shard-id", str(i), *extra]


# ------------------------------------------------------------------------------------------------ item 1
def test_the_command_for_a_missing_selective_search_store_has_ss_resize_128(tmp_path):
    """The DETReg configs read ``NAME.selective_search.proposals`` stores, made with --ss-resize 128."""
    path = str(tmp_path / "imagenet_train.selective_search.proposals")
    command = StoreProposals(path).generate_command("--image-dir IMAGENET/train")
    assert command == (f"python tools/generate_proposals.py --image-dir IMAGENET/train --method selective_search "
                       f"--ss-resize 128 --output {path}")
    edgeboxes = StoreProposals(str(tmp_path / "x.edgeboxes.proposals")).generate_command("--dataset d")
    assert "--ss-resize" not in edgeboxes and "--method edgeboxes --output" in edgeboxes


def _selective_search_store(path, resize):
    writer = StoreWriter(path, 1, 1)
    writer.append(np.array([[0, 0, 4, 4]], np.float32), np.ones(1, np.float32), np.array([1]),
                  np.array([[8, 8]], np.int32))
    writer.close(["a"], "selective_search", {"max_boxes": 0, "seed": 0, "resize": resize, "mode": "fast"})


def test_a_full_size_selective_search_store_is_warned_about(tmp_path, caplog):
    full, small = str(tmp_path / "full"), str(tmp_path / "small")
    _selective_search_store(full, None)
    _selective_search_store(small, 128)
    with caplog.at_level(logging.WARNING, logger="siamese_detr.data.proposals.sources"):
        StoreProposals(small).store  # noqa: B018
        assert not caplog.records
        StoreProposals(full).store  # noqa: B018
    assert len(caplog.records) == 1
    assert "params.resize = None" in caplog.text and "--ss-resize 128" in caplog.text


# ------------------------------------------------------------------------------------------------ item 2
def test_sed_model_errors_are_one_line_and_leave_no_folder(tmp_path, capsys):
    images, out = str(tmp_path / "imgs"), tmp_path / "out"
    _images(images, 2)
    corrupt = tmp_path / "model.yml.gz"
    corrupt.write_text("not a model")
    cases = [(str(tmp_path / "missing.yml.gz"), "does not exist. Download opencv_extra's 'model.yml.gz'"),
             (str(corrupt), "could not be read by OpenCV")]
    for model, message in cases:
        assert gen.main(_args(images, str(out), "edgeboxes", "--sed-model", model)) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --sed-model: Structured Edge Detection model {model!r}") and message in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()


# ------------------------------------------------------------------------------------------------ item 3
def test_a_shard_with_other_settings_is_refused_when_it_starts(tmp_path, capsys):
    images, out = str(tmp_path / "imgs"), str(tmp_path / "out")
    _images(images, 4)
    assert gen.main(_args(images, out) + _shard(0)) == 0
    capsys.readouterr()
    shard1 = os.path.join(out, "shards", "shard-00001-of-00002")
    for argv, said in [(_args(images, out, "edgeboxes") + _shard(1),
                        "this run has method='edgeboxes', shard-00000-of-00002 has 'random'"),
                       (_args(images, out, "random", "--seed", "3") + _shard(1),
                        "this run has params.seed=3, shard-00000-of-00002 has 0")]:
        assert gen.main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {os.path.join(out, 'shards', 'shard-00000-of-00002', 'run.json')} was "
                              "started with other settings than this run (shard 1 of 2): ")
        assert said in err and "same --method and method flags" in err
        assert not os.path.exists(shard1)  # nothing computed
    assert gen.main(_args(images, out) + _shard(1)) == 0
    assert os.path.isfile(os.path.join(out, "meta.json"))


def test_the_merge_error_puts_each_value_next_to_its_shard(tmp_path, capsys):
    images, out, elsewhere = str(tmp_path / "imgs"), str(tmp_path / "out"), str(tmp_path / "elsewhere")
    _images(images, 4)
    assert gen.main(_args(images, out) + _shard(0)) == 0
    # shard 1 computed with --max-boxes 3 elsewhere and copied next to shard 0 (as a shared file system would)
    assert gen.main(_args(images, elsewhere)[:4] + ["--max-boxes", "3"] + _args(images, elsewhere)[6:]
                    + _shard(1, "--keep-shards")) == 0
    shutil.copytree(os.path.join(elsewhere, "shards", "shard-00001-of-00002"),
                    os.path.join(out, "shards", "shard-00001-of-00002"))
    capsys.readouterr()
    assert gen.main(["--output", out, "--merge", "--num-shards", "2"]) == 1
    err = capsys.readouterr().err
    assert "cannot merge" in err
    assert "(shard-00001-of-00002 has params.max_boxes=3, shard-00000-of-00002 has 8)" in err
