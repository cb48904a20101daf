"""Mistakes on the command lines of tools/generate_proposals.py and tools/evaluate_proposals.py that used to pass
silently or end in a traceback, and EdgeBoxes' max_boxes promise when OpenCV skips its NMS (beta > 0.99).

Each mistake ends as one ``error:`` line naming the flag (or file) and the fix, exit status 2 (1 for a write that
fails after the work), with nothing written."""
import errno
import json
import os
import pickle

import cv2
import numpy as np
import pytest

from siamese_detr.data.proposals import ProposalStore, ProposalStoreError, StoreProposals, edgeboxes
from siamese_detr.data.proposals import detectron2_format
from siamese_detr.data.proposals.generate_arguments import usage_problem
from siamese_detr.data.proposals.methods import gradient_edge_map
from siamese_detr.utils.user_errors import UserValueError

from script_modules import forget_datasets, load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
gen = load_script(os.path.join(ROOT, "tools", "generate_proposals.py"), "generate_proposals_cli_mistakes")
evaluate = load_script(os.path.join(ROOT, "tools", "evaluate_proposals.py"), "evaluate_proposals_cli_mistakes")


def _shapes_image(seed=0, size=(96, 128)):
    """A BGR image with a filled rectangle and a disc on light noise: EdgeBoxes finds a few hundred boxes."""
    rng = np.random.default_rng(seed)
    image = np.zeros(size + (3,), np.uint8)
    cv2.rectangle(image, (10 + 5 * seed, 10), (60, 70), (200, 100, 50), -1)
    cv2.circle(image, (95, 40), 20, (30, 220, 90), -1)
    return (image + rng.integers(0, 30, image.shape)).astype(np.uint8)


def _images(folder, n=2):
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        cv2.imwrite(os.path.join(folder, f"im{i}.png"), _shapes_image(i))
    return str(folder)


def _random_args(images, out, *extra):
    return ["--image-dir", images, "--method", "random", "--max-boxes", "4", "--output", out, "--no-progress",
            *extra]


def _error_lines(err: str) -> list:
    return [line for line in err.splitlines() if "error:" in line]


def _opencv_edgeboxes(image, beta, max_boxes):
    """OpenCV's own EdgeBoxes on the gradient edge map that :func:`edgeboxes` uses (its default edge_sigma 2,
    alpha 0.65, min_score 0.01), boxes converted to xyxy: the expectation, computed without the project's code."""
    edges, orientation = gradient_edge_map(image, sigma=2.0)
    detector = cv2.ximgproc.createEdgeBoxes(alpha=0.65, beta=beta, minScore=0.01, maxBoxes=max_boxes)
    boxes, scores = detector.getBoundingBoxes(edges, orientation)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, image.shape[1])
    xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, image.shape[0])
    return xyxy, np.asarray(scores, np.float32).reshape(-1)


# ------------------------------------------------------------------------------- EdgeBoxes' max_boxes
def test_edgeboxes_with_beta_1_keeps_the_max_boxes_best_scored():
    """beta > 0.99: OpenCV skips the NMS, and with it its maxBoxes cap; edgeboxes still returns at most max_boxes,
    the best-scored of OpenCV's boxes (ties in OpenCV's order)."""
    image = _shapes_image()
    all_boxes, all_scores = _opencv_edgeboxes(image, beta=1.0, max_boxes=10)
    assert len(all_boxes) > 10  # OpenCV ignored maxBoxes=10
    best = np.argsort(-all_scores, kind="stable")[:10]
    boxes, scores = edgeboxes(image, max_boxes=10, beta=1.0)
    assert len(boxes) == 10
    np.testing.assert_array_equal(scores, all_scores[best])
    np.testing.assert_array_equal(boxes, all_boxes[best])
    assert np.array_equal(scores, np.sort(all_scores)[::-1][:10])


def test_edgeboxes_defaults_give_opencvs_boxes_unchanged():
    """With the defaults (NMS on, OpenCV caps at 512 itself) the boxes are OpenCV's, bit for bit and in its order:
    what the demo computes online does not change."""
    image = _shapes_image()
    expected_boxes, expected_scores = _opencv_edgeboxes(image, beta=0.75, max_boxes=512)
    assert 0 < len(expected_boxes) <= 512
    boxes, scores = edgeboxes(image)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    np.testing.assert_array_equal(boxes, expected_boxes)
    np.testing.assert_array_equal(scores, expected_scores)


def test_generate_with_beta_1_stores_at_most_max_boxes_per_image(tmp_path, capsys):
    out = str(tmp_path / "st")
    images = _images(tmp_path / "imgs")
    argv = ["--image-dir", images, "--method", "edgeboxes", "--beta", "1.0", "--max-boxes", "10", "--output", out,
            "--no-progress"]
    assert gen.main(argv) == 0
    assert ProposalStore.open(out).meta["counts"] == {"min": 10, "max": 10, "mean": 10.0}


# ----------------------------------------------------------------------------------- value ranges
@pytest.mark.parametrize("flag, value, rule", [
    ("--alpha", "0", "in (0, 1)"), ("--alpha", "-1", "in (0, 1)"), ("--alpha", "1", "in (0, 1)"),
    ("--alpha", "nan", "in (0, 1)"), ("--beta", "0", "in (0, 1]"), ("--beta", "1.5", "in (0, 1]"),
    ("--beta", "-0.5", "in (0, 1]")])
def test_an_edgeboxes_value_out_of_range_is_refused_before_any_work(tmp_path, capsys, flag, value, rule):
    out = str(tmp_path / "out")
    images = _images(tmp_path / "imgs", 1)
    argv = ["--image-dir", images, "--method", "edgeboxes", flag, value, "--output", out, "--no-progress"]
    assert gen.main(argv) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    name = flag[2:]
    assert line.startswith(f"error: {flag} (EdgeBoxes {name}) must be a number {rule}: ")
    assert line.endswith(f"got {float(value)!r}")
    assert not os.path.exists(out)


@pytest.mark.parametrize("flag, value", [("--alpha", "0.99"), ("--beta", "1"), ("--beta", "0.01")])
def test_edgeboxes_values_at_the_ends_of_their_ranges_are_accepted(tmp_path, flag, value):
    args = gen.build_parser().parse_args(["--image-dir", str(tmp_path), "--output", str(tmp_path / "o"), flag, value])
    assert usage_problem(args) is None


@pytest.mark.parametrize("name, value, rule", [("alpha", 0.0, "in (0, 1)"), ("beta", 2.0, "in (0, 1]"),
                                               ("min_score", -1.0, "0 or more")])
def test_the_library_refuses_edgeboxes_values_out_of_range(name, value, rule):
    with pytest.raises(UserValueError) as e:
        edgeboxes(_shapes_image(), **{name: value})
    assert str(e.value).startswith(f"edgeboxes {name} must be a number {rule}") and str(e.value).endswith(f"{value!r}")


@pytest.mark.parametrize("value", ["-5", "0"])
def test_ss_resize_below_one_is_a_usage_error(tmp_path, capsys, value):
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as e:
        gen.main(["--image-dir", str(tmp_path), "--method", "selective_search", "--ss-resize", value, "--output",
                  out])
    assert e.value.code == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.endswith("error: argument --ss-resize: must be at least 1 (the short side, in pixels, of the copy "
                         "Selective Search runs on; leave --ss-resize out for full resolution), got " + value)
    assert not os.path.exists(out)


def test_num_shards_zero_is_a_usage_error_naming_num_shards(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        gen.main(_random_args(str(tmp_path), str(tmp_path / "out"), "--num-shards", "0"))
    assert e.value.code == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.endswith("error: argument --num-shards: must be at least 1 (machines that split the images), got 0")


# ------------------------------------------------------------------------------- --export-detectron2
def test_export_onto_an_existing_file_needs_overwrite(tmp_path, capsys):
    images, out = _images(tmp_path / "imgs"), str(tmp_path / "out")
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    assert gen.main(_random_args(images, out, "--export-detectron2", str(keep))) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (f"error: --export-detectron2 {str(keep)!r} exists already and is kept: delete it, choose "
                    "another path, or pass --overwrite to replace it (which also regenerates what this command "
                    "writes at --output)")
    assert keep.read_text() == "mine" and not os.path.exists(out)
    assert "and replace an existing --export-detectron2 file" in " ".join(gen.build_parser().format_help().split())
    assert gen.main(_random_args(images, out, "--export-detectron2", str(keep), "--overwrite")) == 0
    with open(keep, "rb") as f:
        assert pickle.load(f)["ids"] == ["im0.png", "im1.png"]  # the test's own file


@pytest.fixture
def read_only_folder(tmp_path, make_read_only):
    """A folder in which no file can be made, even by root (conftest's :func:`make_read_only`)."""
    return make_read_only(tmp_path / "ro")


def test_export_into_a_folder_that_refuses_writes_is_refused_before_any_work(tmp_path, capsys, read_only_folder):
    images, out = _images(tmp_path / "imgs"), str(tmp_path / "out")
    target = str(read_only_folder / "x.pkl")
    assert gen.main(_random_args(images, out, "--export-detectron2", target)) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: --export-detectron2 {target!r}: cannot write in {read_only_folder} (")
    assert line.endswith("); choose another path")
    assert not os.path.exists(out)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_export_into_proc_is_refused_before_any_work(tmp_path, capsys):
    images, out = _images(tmp_path / "imgs"), str(tmp_path / "out")
    assert gen.main(_random_args(images, out, "--export-detectron2", "/proc/x.pkl")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: --export-detectron2 '/proc/x.pkl': cannot write in /proc (")
    assert not os.path.exists(out)


def test_export_below_a_file_says_the_file_is_not_a_folder(tmp_path, capsys):
    images, out = _images(tmp_path / "imgs"), str(tmp_path / "out")
    (tmp_path / "f.txt").write_text("x")
    target = str(tmp_path / "f.txt" / "x.pkl")
    assert gen.main(_random_args(images, out, "--export-detectron2", target)) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == f"error: --export-detectron2 {target!r}: {tmp_path / 'f.txt'} is a file, not a folder; choose " \
                   "another path"


def test_an_export_write_that_fails_at_the_end_is_one_line_and_keeps_the_store(tmp_path, capsys, monkeypatch):
    """The write can still fail after the check (a full disk): one line, exit 1, the store complete, no partial
    file left where the export goes and an older file there as it was."""
    images, out = _images(tmp_path / "imgs"), str(tmp_path / "out")
    target = tmp_path / "d2.pkl"
    target.write_bytes(b"older")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(detectron2_format.pickle, "dump", full_disk)
    assert gen.main(_random_args(images, out, "--export-detectron2", str(target), "--overwrite")) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (f"error: cannot write --export-detectron2 {str(target)!r} (No space left on device); the store "
                    f"{out} is complete: export it again with tools/generate_proposals.py --output {out} "
                    "--export-detectron2 FILE.pkl")
    assert len(ProposalStore.open(out)) == 2
    assert target.read_bytes() == b"older" and sorted(os.listdir(tmp_path)) == ["d2.pkl", "imgs", "out"]


# ------------------------------------------------------------------------------- --import-detectron2
@pytest.fixture
def d2_file(tmp_path):
    images, store = _images(tmp_path / "imgs"), str(tmp_path / "store")
    pkl = str(tmp_path / "d2.pkl")
    assert gen.main(_random_args(images, store, "--export-detectron2", pkl)) == 0
    return pkl


@pytest.mark.parametrize("extra, named", [
    (["--method", "random", "--image-dir", "IMAGES"], "--image-dir, --method have"),
    (["--method", "edgeboxes"], "--method has"),  # the default value, given: still ignored
    (["--max-boxes", "5", "--num-workers", "2", "--export-detectron2", "OUT.pkl"],
     "--max-boxes, --num-workers, --export-detectron2 have")])
def test_flags_that_import_would_ignore_are_refused_by_name(tmp_path, capsys, d2_file, extra, named):
    out = str(tmp_path / "imported")
    extra = [str(tmp_path / "imgs") if x == "IMAGES" else str(tmp_path / x) if x == "OUT.pkl" else x for x in extra]
    capsys.readouterr()
    assert gen.main(["--import-detectron2", d2_file, "--trust-pickle", "--output", out, *extra]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (f"error: --import-detectron2 converts the proposals of its file as they are: {named} no effect "
                    f"with it; leave {'it' if ' has' in named else 'them'} out (it uses --output, --dataset for the "
                    "image sizes, --overwrite, --trust-pickle and --no-progress)")
    assert not os.path.exists(out)
    assert gen.main(["--import-detectron2", d2_file, "--trust-pickle", "--output", out, "--no-progress"]) == 0


# ------------------------------------------------------------------------------- evaluate_proposals.py
@pytest.mark.parametrize("content, message", [
    ('{"a": 1}', "is not a COCO detection json (needs 'images' and 'categories'"),
    ("", "cannot read the COCO json"),
    (None, "the annotation file must end in .json")])
def test_evaluate_names_an_unusable_coco_spec_in_one_line(tmp_path, capsys, content, message):
    if content is None:
        spec = f"coco:{_images(tmp_path / 'imgs', 1)}"  # a folder
    else:
        (tmp_path / "j.json").write_text(content)
        spec = f"coco:{tmp_path / 'j.json'}"
    assert evaluate.main(["--dataset", spec, "--store", str(tmp_path / "st")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = _error_lines(err)
    assert line.startswith("error: ") and message in line


def test_evaluate_json_in_a_folder_that_refuses_writes_fails_before_the_evaluation(
        tmp_path, capsys, read_only_folder, monkeypatch):
    monkeypatch.setattr(evaluate, "load_dataset", lambda *a, **k: pytest.fail("the evaluation started"))
    target = str(read_only_folder / "a.json")
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--dataset", "any", "--store", str(tmp_path / "st"), "--json", target])
    assert e.value.code == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"error: --json {target}: cannot write in {read_only_folder} (" in line
    assert line.endswith("); give a file in a folder you can write to")


@pytest.mark.parametrize("below", [["a.json"], ["sub", "a.json"]])
def test_evaluate_json_below_a_file_says_the_file_is_not_a_folder(tmp_path, capsys, below):
    (tmp_path / "f.txt").write_text("x")
    target = str(tmp_path.joinpath("f.txt", *below))
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--dataset", "any", "--store", str(tmp_path / "st"), "--json", target])
    assert e.value.code == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.endswith(f"error: --json {target}: {tmp_path / 'f.txt'} is a file, not a folder; give a file in a "
                         "folder you can write to")


def test_a_file_given_as_a_store_is_named_as_a_file(tmp_path, capsys):
    images = _images(tmp_path / "imgs")
    data = {"images": [{"id": i + 1, "file_name": f"im{i}.png", "height": 96, "width": 128} for i in range(2)],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 1, "image_id": 1, "bbox": [10, 10, 50, 60], "category_id": 1, "area": 3000,
                             "iscrowd": 0}]}
    (tmp_path / "ok.json").write_text(json.dumps(data))
    spec = f"coco:{tmp_path / 'ok.json'}:{images}"
    keep = tmp_path / "keep.txt"
    keep.write_text("x")
    try:
        assert evaluate.main(["--dataset", spec, "--store", str(keep)]) == 1
    finally:
        forget_datasets([spec])
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: proposal store {str(keep)!r} is a file, not a store folder: a store is the "
                           "folder that tools/generate_proposals.py --output writes")
    assert "meta.json, image_ids.json and boxes.npy" in line and "--import-detectron2 FILE --trust-pickle" in line
    with pytest.raises(ProposalStoreError, match="is a file, not a store folder"):
        ProposalStore.open(str(keep))


def test_a_file_as_the_configs_store_path_is_named_as_a_file(tmp_path):
    """The pretraining's StoreProposals too: a file where the store folder should be is not "missing"."""
    keep = tmp_path / "keep.txt"
    keep.write_text("x")
    with pytest.raises(ProposalStoreError, match="is a file, not a store folder"):
        StoreProposals(str(keep)).store


def test_a_finished_command_run_again_keeps_its_identical_export_and_refuses_a_changed_one(tmp_path, capsys):
    """Re-running a finished command (the store complete) must not fail on its own export: the file is compared
    with the export at the end, kept when the bytes are the same, refused (and kept) when they differ."""
    images, out = _images(tmp_path / "imgs"), str(tmp_path / "out")
    target = tmp_path / "d2.pkl"
    assert gen.main(_random_args(images, out, "--export-detectron2", str(target))) == 0
    first = target.read_bytes()
    mtime = target.stat().st_mtime_ns
    assert gen.main(_random_args(images, out, "--export-detectron2", str(target))) == 0
    assert target.read_bytes() == first and target.stat().st_mtime_ns == mtime
    target.write_bytes(b"edited")
    capsys.readouterr()
    assert gen.main(_random_args(images, out, "--export-detectron2", str(target))) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (f"error: --export-detectron2 {str(target)!r} exists already with other content and is kept: "
                    f"delete it or choose another path; the store {out} is complete (pass --overwrite to "
                    "regenerate it and replace the file)")
    assert target.read_bytes() == b"edited" and sorted(os.listdir(tmp_path)) == ["d2.pkl", "imgs", "out"]


@pytest.mark.parametrize("method, extra, noted", [
    ("random", ["--alpha", "0.65", "--ss-mode", "quality"], ["--alpha", "--ss-mode"]),  # a default value too
    ("edgeboxes", ["--seed", "3", "--ss-resize", "64"], ["--seed", "--ss-resize"]),
    ("selective_search", ["--sed-model", "model.yml.gz"], ["--sed-model"]),
])
def test_a_flag_the_method_does_not_read_is_noted_and_not_recorded(tmp_path, capsys, method, extra, noted):
    """A method flag the chosen --method ignores: one "note:" line that names it and says which method reads it;
    the run goes on (scripts pass one set of flags to every method) and the store records only its own
    method's parameters."""
    out = str(tmp_path / "out")
    images = _images(tmp_path / "imgs", 1)
    argv = ["--image-dir", images, "--method", method, "--max-boxes", "4", "--output", out, "--no-progress", *extra]
    assert gen.main(argv) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1
    assert notes[0].startswith(f"note: --method {method} does not use {', '.join(noted)}, which ")
    for flag in noted:
        assert f"{flag}: " in notes[0]  # ... and which method reads it
    with open(os.path.join(out, "meta.json")) as f:
        params = json.load(f)["params"]
    recorded = {"random": {"max_boxes", "seed"}, "edgeboxes": {"max_boxes", "alpha", "beta", "sed_model"},
                "selective_search": {"max_boxes", "seed", "resize", "mode"}}[method]
    assert set(params) == recorded
    assert params["max_boxes"] == 4


def test_the_method_s_own_flags_are_not_noted(tmp_path, capsys):
    out = str(tmp_path / "out")
    images = _images(tmp_path / "imgs", 1)
    argv = ["--image-dir", images, "--method", "selective_search", "--ss-mode", "fast", "--ss-resize", "48",
            "--seed", "2", "--max-boxes", "4", "--output", out, "--no-progress"]
    assert gen.main(argv) == 0
    assert "note:" not in capsys.readouterr().err
