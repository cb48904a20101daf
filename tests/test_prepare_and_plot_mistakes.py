"""User mistakes of the dataset-preparation and plotting tools end with one line, ``error: ...`` (or argparse's
usage error, exit 2, for a flag checked before any work), naming the path and the way out, not a traceback:
an output that cannot be written (a file in the way, a read-only folder), a parent json or split file that
cannot be read, an inverted VOC box, a missing VOC root, an empty or foreign ``metrics.json``, a preview of no
image, a finetuning config given as a pretraining method. Nothing real is trained or compared here."""
import json
from pathlib import Path

import pytest

import siamese_detr.data.datasets.low_data_splits as LD
from siamese_detr.data.datasets.builtin_shapes import ensure_synthetic_shapes
from siamese_detr.data.datasets.voc_coco import VOC_CLASSES, VocAnnotationError, register_voc_coco, voc_to_coco
from siamese_detr.demo.runner import lock_output
from siamese_detr.utils.user_errors import UserOSError
from siamese_detr.utils.writable import file_problem, folder_problem
from script_modules import load_script
from test_voc_coco import _make_voc, _xml

ROOT = Path(__file__).resolve().parents[1]
VOC_SPLIT = "voc_2007_2012_trainval_10pct_seed42"


def _script(path: str):
    return load_script(ROOT / path, "mistakes_" + Path(path).stem)


@pytest.fixture
def read_only(make_read_only):
    """``read_only(folder)``: the shared :func:`make_read_only` (conftest)."""
    return make_read_only


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("in the way")
    return path


def _usage_error(capsys, call) -> str:
    """Run ``call``, which must end as an argparse usage error (exit 2, no traceback); its stderr."""
    with pytest.raises(SystemExit) as exc:
        call()
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].split(": ", 1)[1].startswith("error: ")
    return " ".join(err.split())  # argparse wraps nothing, but the usage line is above


def _error_line(call) -> str:
    """Run ``call``, which must end with ``SystemExit("error: ...")`` (one line, exit status 1); the line."""
    with pytest.raises(SystemExit) as exc:
        call()
    line = str(exc.value.code)
    assert line.startswith("error: ") and "\n" not in line, line
    return line


# ------------------------------------------------------------------------------------- the shared checks
def test_folder_and_file_problems_name_what_is_in_the_way(tmp_path, a_file, read_only):
    ro = read_only(tmp_path / "ro")
    assert folder_problem(tmp_path / "new" / "deeper") is None and not (tmp_path / "new").exists()
    assert folder_problem(a_file) == "is a file, not a folder"
    assert folder_problem(a_file / "x") == f"cannot be made: {a_file} is a file, not a folder"
    assert folder_problem(ro).startswith("is not writable (")
    assert folder_problem(ro / "x").startswith(f"cannot be made: {ro} is not writable (")
    assert file_problem(tmp_path / "new" / "p.png") is None
    assert file_problem(tmp_path) == "is a folder, not a file"
    assert file_problem(a_file / "p.png") == f"cannot be written: {a_file} is a file, not a folder"
    assert file_problem(ro / "p.png").startswith(f"cannot be written: {ro} is not writable (")


# ------------------------------------------------------------------------------------------ plot_metrics
@pytest.fixture
def metrics_run(tmp_path):
    run = tmp_path / "run1"
    run.mkdir()
    (run / "metrics.json").write_text('{"iteration": 19, "loss_ce": 2.0}\n{"iteration": 39, "loss_ce": 1.0}\n')
    return run


def test_plot_metrics_refuses_an_output_it_cannot_write_before_reading(metrics_run, a_file, read_only, capsys):
    tool = _script("tools/plot_metrics.py")
    ro = read_only(metrics_run.parent / "ro")
    for output, problem in ((a_file / "p.png", f"cannot be written: {a_file} is a file, not a folder"),
                            (ro / "p.png", f"cannot be written: {ro} is not writable ("),
                            (a_file / "noext", f"cannot be written: {a_file} is a file, not a folder")):
        err = _usage_error(capsys, lambda: tool.main([str(metrics_run), "--output", str(output)]))
        assert f"error: --output {output.with_suffix('.png')} {problem}" in err, err  # the file written: .png
        assert "give a file in a folder you can write to" in err


@pytest.mark.parametrize("text, message", [
    ("", "is empty (0 bytes): the run did not get to its first logged iteration (train.log_period)"),
    ("\n\n", "holds no JSON object"),
    ('{"a": 1}\n', "is not a detectron2 metrics.json: none of its 1 JSON object(s) has an 'iteration'"),
    ('{"iteration": 3, "lr": 0.1}\n', "no loss values logged (did training run past its first log period?)"),
])
def test_plot_metrics_says_why_a_file_has_no_curve(tmp_path, text, message):
    tool = _script("tools/plot_metrics.py")
    path = tmp_path / "m.json"
    path.write_text(text)
    line = _error_line(lambda: tool.main([str(path), "--output", str(tmp_path / "x.png")]))
    assert line.startswith(f"error: {path}") and message in line
    assert not (tmp_path / "x.png").exists()


def test_plot_metrics_a_bad_line_is_an_error_line(tmp_path):
    tool = _script("tools/plot_metrics.py")
    path = tmp_path / "metrics.json"
    path.write_text('{"iteration": 1, "loss_ce": 1}\nnot json\n')
    assert _error_line(lambda: tool.read_metrics(path)).startswith(f"error: {path}:2: not a JSON line")


# -------------------------------------------------------------------------------------- plot_eval_curves
def test_plot_eval_curves_refuses_an_output_it_cannot_write_before_reading(metrics_run, a_file, read_only, capsys):
    tool = _script("tools/plot_eval_curves.py")
    ro = read_only(metrics_run.parent / "ro")
    for output, problem in ((a_file / "x.png", f"cannot be written: {a_file} is a file, not a folder"),
                            (ro / "x.png", f"cannot be written: {ro} is not writable (")):
        err = _usage_error(capsys, lambda: tool.main(["--run", f"a={metrics_run}", "--output", str(output)]))
        assert f"error: --output {output} {problem}" in err


def test_plot_eval_curves_unusable_runs_end_with_an_error_line(metrics_run, tmp_path):
    tool = _script("tools/plot_eval_curves.py")
    out = str(tmp_path / "x.png")
    line = _error_line(lambda: tool.main(["--run", f"a={metrics_run}", "--output", out]))
    assert line.startswith(f"error: {metrics_run / 'metrics.json'}: no 'bbox/AP' in it")
    (metrics_run / "metrics.json").write_text('{"iteration": 9, "bbox/AP": "high"}\n')
    assert "expected numbers" in _error_line(lambda: tool.main(["--run", f"a={metrics_run}", "--output", out]))
    other = tmp_path / "run2"
    other.mkdir()
    (metrics_run / "metrics.json").write_text('{"iteration": 9, "bbox/AP": 1.0}\n')
    (other / "metrics.json").write_text('{"iteration": 19, "bbox/AP": 2.0}\n')
    line = _error_line(lambda: tool.main(["--run", f"a={metrics_run},{other}", "--output", out]))
    assert line == "error: --run 'a': its 2 runs share no evaluated iteration"


# ---------------------------------------------------------------------------- run_demo, compare_pretraining
def test_the_demo_tools_refuse_an_output_they_cannot_write(demo_env, nothing_runs, a_file, read_only, capsys):
    ro = read_only(demo_env / "ro")
    for name, extra in (("run_demo", []), ("compare_pretraining", ["--method", "scratch="])):
        tool = _script(f"tools/{name}.py")
        for output, problem in ((ro / "out", f"cannot be made: {ro} is not writable ("),
                                (ro, "is not writable ("),
                                (a_file / "out", f"cannot be made: {a_file} is a file, not a folder")):
            err = _usage_error(capsys, lambda: tool.main(["--output", str(output)] + extra))
            assert f"error: --output {output} {problem}" in err and "give a folder you can write to" in err
    line = _error_line(lambda: lock_output(a_file / "out"))
    assert line.startswith(f"error: --output {a_file / 'out'} cannot be made: {a_file} is a file, not a folder")


def test_compare_refuses_a_method_config_that_is_not_a_pretraining_one(demo_env, nothing_runs, tmp_path, capsys):
    tool = _script("tools/compare_pretraining.py")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a config")
    broken = tmp_path / "broken.py"
    broken.write_text("model = \n")
    for config, problem in (
            ("configs/demo/detr_demo.py", "configs/demo/detr_demo.py builds DETR as its model, not a pretraining "
                                          "model (SiameseDETRPretrain, UPDETRPretrain or DETRegPretrain)"),
            ("configs/demo/demo_backbone.py", "configs/demo/demo_backbone.py has no model, not a pretraining"),
            (str(notes), f"{notes} is not a LazyConfig .py file"),
            (str(broken), f"cannot load {broken} (SyntaxError: ")):
        err = _usage_error(capsys, lambda: tool.main(["--output", str(tmp_path / "out"), "--method", "scratch=",
                                                      "--method", f"X={config}"]))
        assert f"error: --method 'X': {problem}" in err, err
        assert "give a pretraining config, e.g. configs/demo/demo_siamese_pretrain.py, or X= for no pretraining" in err
    assert not (tmp_path / "out").exists()
    methods = [("scratch", None), ("Siamese DETR", "configs/demo/demo_siamese_pretrain.py"),
               ("UP-DETR", "configs/demo/demo_up_detr_pretrain.py"), ("DETReg", "configs/demo/demo_detreg_pretrain.py")]
    assert tool.check_pretraining_configs(methods) is None


# ------------------------------------------------------------------------------ prepare_synthetic_shapes
@pytest.fixture
def shapes_tool(monkeypatch, tmp_path):
    """The script with its generators recording their calls (nothing generated)."""
    tool = _script("datasets/prepare_synthetic_shapes.py")
    calls = []
    for name in ("ensure_synthetic_shapes", "generate_synthetic_shapes"):
        monkeypatch.setattr(tool, name, lambda split, root, num_images: calls.append(split)
                            or (f"{root}/{split}", f"{root}/{split}.json"))
    monkeypatch.chdir(tmp_path)
    return tool, calls


@pytest.mark.parametrize("count", ["0", "-2"])
def test_a_preview_of_no_image_is_refused(shapes_tool, capsys, count):
    tool, calls = shapes_tool
    err = _usage_error(capsys, lambda: tool.main(["--preview", "p.png", "--preview-count", count]))
    assert f"argument --preview-count: must be at least 1 (images in the preview grid), got {count}" in err
    assert calls == [] and not Path("p.png").exists()


def test_a_preview_that_cannot_be_written_is_refused_before_generating(shapes_tool, a_file, read_only, capsys):
    tool, calls = shapes_tool
    ro = read_only(a_file.parent / "ro")
    for preview, problem in ((a_file / "p.png", f"cannot be written: {a_file} is a file, not a folder"),
                             (ro / "p.png", f"cannot be written: {ro} is not writable (")):
        err = _usage_error(capsys, lambda: tool.main(["--preview", str(preview)]))
        assert f"error: --preview {preview} {problem}" in err and "; give a file in a folder you can write to" in err
    assert calls == []


def test_a_preview_that_fails_to_write_is_an_error_line(shapes_tool, monkeypatch):
    tool, _ = shapes_tool
    monkeypatch.setattr(tool, "preview_grid", lambda *args, **kwargs: __import__("numpy").zeros((8, 8, 3), "uint8"))
    monkeypatch.setattr(tool.cv2, "imwrite", lambda path, image: False)
    assert _error_line(lambda: tool.main(["--preview", "p.png"])) == "error: could not write p.png (--preview)"


def test_a_dataset_root_that_cannot_be_written_is_named(tmp_path, a_file, read_only, monkeypatch):
    tool = _script("datasets/prepare_synthetic_shapes.py")
    ro = read_only(tmp_path / "ro")
    fix = "set $DETECTRON2_DATASETS (or --root of datasets/prepare_synthetic_shapes.py) to a folder you can write to"
    for root, problem in ((a_file / "ds", f"cannot be made: {a_file} is a file, not a folder"),
                          (ro, f"cannot be made: {ro} is not writable (")):
        folder = root / "synthetic_shapes"
        with pytest.raises(UserOSError) as exc:
            ensure_synthetic_shapes("val", root=str(root), num_images=2)
        assert str(exc.value).startswith(f"the synthetic shapes folder {folder} {problem}")
        line = _error_line(lambda: tool.main(["--root", str(root), "--splits", "val", "--num-val", "2"]))
        assert line.startswith(f"error: the synthetic shapes folder {folder} {problem}") and line.endswith(fix)


# -------------------------------------------------------------------------------- prepare_low_data_splits
@pytest.fixture
def voc_parent(tmp_path, monkeypatch):
    """``voc_2007_2012_trainval_coco`` registered under a temporary datasets root; returns its json path (not
    written)."""
    root = tmp_path / "datasets"
    (root / "voc_coco").mkdir(parents=True)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    register_voc_coco(str(root))
    yield root / "voc_coco" / "voc_2007_2012_trainval.json"
    register_voc_coco()


def _coco_json(num_images: int, classes=VOC_CLASSES) -> str:
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "height": 10, "width": 10} for i in range(num_images)]
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    return json.dumps({"images": images, "annotations": [], "categories": categories})


@pytest.mark.parametrize("text, problem", [
    ("", "is empty (0 bytes: an interrupted write or download?)"),
    ('{"a": 1}', "is not a COCO detection json (needs 'images' and 'categories'"),
    ("[1, 2]", "is not a COCO detection json"),
    (_coco_json(3, ["aeroplane"]), "(AssertionError: Attribute 'thing_classes' in the metadata of "
                                   "'voc_2007_2012_trainval_coco' cannot be set to a different value! ['aeroplane', "),
])
def test_a_parent_json_that_cannot_be_loaded_is_named(voc_parent, text, problem):
    voc_parent.write_text(text)
    line = _error_line(lambda: _script("datasets/prepare_low_data_splits.py").main(["--names", VOC_SPLIT]))
    assert line.startswith("error: the parent dataset voc_2007_2012_trainval_coco cannot be loaded: ")
    assert f"'{voc_parent}' {problem}" in line
    assert "It is written from the VOC XML by 'python datasets/prepare_voc_coco.py'" in line


def test_an_unreadable_split_file_names_the_file_and_the_flag(voc_parent):
    tool = _script("datasets/prepare_low_data_splits.py")
    voc_parent.write_text(_coco_json(30))
    split = Path(LD.split_file(VOC_SPLIT))
    split.parent.mkdir()
    split.write_text("")
    line = _error_line(lambda: tool.main(["--names", VOC_SPLIT]))
    assert line == (f"error: {split} is empty (0 bytes), not a low-data split file (an interrupted write?); pass "
                    "--force to write it again")
    split.write_text("[]")
    assert "holds a JSON list, not a low-data split file" in _error_line(lambda: tool.main(["--names", VOC_SPLIT]))
    tool.main(["--names", VOC_SPLIT, "--force"])
    assert len(json.loads(split.read_text())["image_ids"]) == 3
    voc_parent.write_text(_coco_json(20))  # the parent changed: the tool names its flag only
    line = _error_line(lambda: tool.main(["--names", VOC_SPLIT]))
    assert "pass --force to" in line and "overwrite=True" not in line
    with pytest.raises(ValueError, match="pass overwrite=True to"):  # the library names its argument
        LD.write_low_data_split(VOC_SPLIT, list(range(1, 21)))


def test_a_split_folder_that_cannot_be_written_is_named(voc_parent, read_only):
    voc_parent.write_text(_coco_json(30))
    folder = read_only(voc_parent.parent.parent / "low_data_splits")
    line = _error_line(lambda: _script("datasets/prepare_low_data_splits.py").main(["--names", VOC_SPLIT]))
    assert line.startswith(f"error: cannot write the split file {folder / (VOC_SPLIT + '.json')}: {folder} is not "
                           "writable (")
    assert line.endswith("set $DETECTRON2_DATASETS to a datasets root you can write to")


# ------------------------------------------------------------------------------------------ prepare_voc_coco
@pytest.fixture
def voc_tree(tmp_path):
    _make_voc(tmp_path / "voc")
    yield tmp_path / "voc"
    register_voc_coco()


def _write_boxes(root: Path, boxes):
    (root / "VOC2007" / "Annotations" / "000001.xml").write_text(
        _xml("000001", 60, 80, [("dog", (1, 2, 30, 40), 0)] + [("cat", box, 0) for box in boxes]))


@pytest.mark.parametrize("box, message", [
    ((10, 10, 5, 40), "has xmax 5 < xmin 10, an inverted box"),
    ((10, 40, 20, 10), "has ymax 10 < ymin 40, an inverted box"),
])
def test_an_inverted_voc_box_stops_the_conversion_naming_file_and_object(voc_tree, box, message):
    _write_boxes(voc_tree, [box])
    xml = voc_tree / "VOC2007" / "Annotations" / "000001.xml"
    expected = f"{xml}: <object> 2 (cat) <bndbox> {message}; swap the two if they are swapped, or re-extract"
    with pytest.raises(VocAnnotationError) as exc:
        voc_to_coco(str(voc_tree), [("VOC2007", "test")])
    assert str(exc.value).startswith(expected)
    line = _error_line(lambda: _script("datasets/prepare_voc_coco.py").main(["--root", str(voc_tree)]))
    assert line.startswith(f"error: {expected}")
    assert not (voc_tree / "voc_coco" / "voc_2007_test.json").exists()


def test_a_one_pixel_voc_box_is_kept_as_the_official_conversion_writes_it(voc_tree):
    """VOC's pixel coordinates are inclusive: xmin == xmax is a box one pixel wide (Detectron2's VOC loader
    makes it [xmin - 1, xmax]), which the official json writes with a width of 0."""
    _write_boxes(voc_tree, [(10, 10, 10, 40)])
    data = voc_to_coco(str(voc_tree), [("VOC2007", "test")])
    assert [a["bbox"] for a in data["annotations"] if a["image_id"] == 1] == [[1, 2, 29, 38], [10, 10, 0, 30]]


def test_a_missing_or_unwritable_voc_root_is_named(tmp_path, a_file, voc_tree, read_only, capsys):
    tool = _script("datasets/prepare_voc_coco.py")
    hint = "give the folder holding VOC2007/ and VOC2012/ as --root"
    for root, problem in ((tmp_path / "nonexist", "does not exist"), (a_file, "is a file, not a folder")):
        err = _usage_error(capsys, lambda: tool.main(["--root", str(root)]))
        assert f"error: --root '{root}' {problem}: {hint}" in err
    read_only(voc_tree)
    line = _error_line(lambda: tool.main(["--root", str(voc_tree)]))
    assert line.startswith(f"error: the json folder {voc_tree / 'voc_coco'} cannot be made: {voc_tree} is not "
                           "writable (")
