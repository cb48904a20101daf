"""Command-line mistakes of the smaller tools (visualize_predictions, visualize_views, fold_region_queries,
train_demo_backbone, convert_checkpoint) end as one ``error:`` line naming the flag or file and the fix, with
exit status 2, and no traceback; an output that cannot be written is said before any work, a PNG that was
not written is not reported as written, and an existing output file is not replaced without ``--overwrite``."""
from pathlib import Path

import pytest
import torch
import torchvision
from detectron2.config import LazyConfig, instantiate

from script_modules import load_script
from siamese_detr.utils.output_paths import check_output_file, check_output_folder, write_image
from siamese_detr.utils.user_errors import UserOSError

ROOT = Path(__file__).resolve().parents[1]
DETR = str(ROOT / "configs" / "demo" / "detr_demo.py")
SIAMESE = str(ROOT / "configs" / "demo" / "demo_siamese_pretrain.py")
BACKBONE = str(ROOT / "configs" / "demo" / "demo_backbone.py")
COMMON_TRAIN = str(ROOT / "configs" / "common" / "train.py")
SMALL = ["model.transformer.num_encoder_layers=1", "model.transformer.num_decoder_layers=2"]


def _tool(name: str):
    return load_script(ROOT / "tools" / f"{name}.py", f"{name}_cli_mistakes")


@pytest.fixture(scope="module")
def predictions():
    return _tool("visualize_predictions")


@pytest.fixture(scope="module")
def views():
    return _tool("visualize_views")


@pytest.fixture(scope="module")
def fold():
    return _tool("fold_region_queries")


@pytest.fixture(scope="module")
def backbone():
    return _tool("train_demo_backbone")


@pytest.fixture(scope="module")
def convert():
    return _tool("convert_checkpoint")


@pytest.fixture
def read_only(tmp_path, make_read_only):
    """A folder in which no file can be made, even by root (conftest's :func:`make_read_only`)."""
    return make_read_only(tmp_path / "read_only")


def _one_error_line(err: str) -> str:
    """The single line of ``err`` holding ``error:``; no traceback."""
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "error:" in x]
    return line


def _usage_error(err: str) -> str:
    """The message of an ``argparse`` error line (``PROG: error: MESSAGE``; PROG is pytest's under pytest)."""
    return _one_error_line(err).split(": error: ", 1)[1]


def _exit_code(main, argv) -> int:
    """``main(argv)``'s exit status, whether returned or raised by ``argparse``."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def _never_load(tool, monkeypatch):
    """Make loading the model a test failure: the mistakes below are found before."""
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(tool, "load_model", fail)


# ------------------------------------------------------------------ 1. outputs that cannot be written
def test_visualize_predictions_refuses_a_read_only_output_before_loading_the_model(
        tmp_path, tiny_synthetic_shapes, predictions, read_only, capsys, monkeypatch):
    (tmp_path / "model.pth").write_bytes(b"x")
    _never_load(predictions, monkeypatch)
    for output in (read_only, read_only / "png"):
        argv = ["--config-file", DETR, "--checkpoint", str(tmp_path / "model.pth"), "--output", str(output)]
        assert predictions.main(argv + SMALL) == 2
        assert _one_error_line(capsys.readouterr().err) == (
            f"error: --output {output}: cannot write in {read_only} (Operation not permitted): give a folder you "
            "can write in")
    assert list(read_only.iterdir()) == []


def test_visualize_views_refuses_a_read_only_output(tmp_path, tiny_synthetic_shapes, views, read_only, capsys):
    argv = ["--dataset", "synthetic_shapes_val", "--num-samples", "1", "--output", str(read_only)]
    assert views.main(argv) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: --output {read_only}: cannot write in {read_only} (Operation not permitted): give a folder you "
        "can write in")
    assert list(read_only.iterdir()) == []


def test_a_png_that_was_not_written_is_an_error_not_a_drawn_image(
        tmp_path, tiny_synthetic_shapes, predictions, read_only, capsys, monkeypatch):
    """The folder turns read-only after the start-up check (here: the check skipped): ``cv2.imwrite`` returns
    False, which the tool used to ignore, printing "wrote ..." and "1 image(s) drawn" with exit 0."""
    cfg = predictions.apply_checked_overrides(LazyConfig.load(DETR), SMALL)
    torch.manual_seed(0)
    torch.save({"model": instantiate(cfg.model).state_dict()}, tmp_path / "model.pth")
    monkeypatch.setattr(predictions, "check_output_folder", lambda *args: None, raising=False)
    drawn = []
    monkeypatch.setattr(predictions.logger, "info", lambda message, *args: drawn.append(message % args))
    argv = ["--config-file", DETR, "--checkpoint", str(tmp_path / "model.pth"), "--num-images", "1",
            "--output", str(read_only)]
    assert predictions.main(argv + SMALL) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot write {read_only / '000_'}") and line.endswith("give another --output")
    assert not any(m.startswith("wrote") or "drawn" in m for m in drawn), drawn
    assert list(read_only.iterdir()) == []


def test_visualize_views_reports_a_png_that_was_not_written(tmp_path, tiny_synthetic_shapes, views, capsys,
                                                            monkeypatch):
    import cv2

    monkeypatch.setattr(cv2, "imwrite", lambda path, image: False)  # what OpenCV does where it cannot write
    out = tmp_path / "views"
    assert views.main(["--dataset", "synthetic_shapes_val", "--num-samples", "1", "--output", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot write {out / 'views_000_'}") and "give another --output" in line


def test_output_path_helpers_name_the_flag_and_create_nothing(tmp_path):
    (tmp_path / "old.pth").write_text("x")
    with pytest.raises(UserOSError, match=r"^--out .*old\.pth exists already: give a new file, or add --overwrite"):
        check_output_file(str(tmp_path / "old.pth"), "--out")
    check_output_file(str(tmp_path / "old.pth"), "--out", overwrite=True)
    with pytest.raises(UserOSError, match=r"^--out .* is a folder: give the file to write$"):
        check_output_file(str(tmp_path), "--out", overwrite=True)
    check_output_folder(str(tmp_path / "a" / "b"), "--out")  # can be made: made by the tool, not by the check
    check_output_file(str(tmp_path / "c" / "x.pth"), "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.pth"]
    with pytest.raises(UserOSError, match=r"^cannot write .*nowhere.*x\.png \(OpenCV wrote nothing"):
        write_image(str(tmp_path / "nowhere" / "x.png"), torch.zeros(4, 4, 3, dtype=torch.uint8).numpy())


# ------------------------------------------------------------------ 2. a config file of the wrong kind
def test_visualize_predictions_names_a_config_of_the_wrong_kind(tmp_path, predictions, capsys, monkeypatch):
    (tmp_path / "model.pth").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("a note")
    _never_load(predictions, monkeypatch)
    base = ["--checkpoint", str(tmp_path / "model.pth"), "--output", str(tmp_path / "png")]
    assert predictions.main(base + ["--config-file", str(tmp_path / "notes.txt")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == (f"error: Config file {tmp_path / 'notes.txt'} has to be a python or yaml file. Give the config "
                    "the model was trained with (e.g. configs/demo/detr_demo.py)")
    assert predictions.main(base + ["--config-file", COMMON_TRAIN] + SMALL) == 2  # checked before the overrides
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {COMMON_TRAIN} is not a training config of this project: it defines no model, "
                           "dataloader (it defines train)")
    assert "configs/demo/detr_demo.py" in line
    assert not (tmp_path / "png").exists()


def test_visualize_views_names_a_config_of_the_wrong_kind(tmp_path, views, capsys):
    (tmp_path / "notes.txt").write_text("a note")
    out = ["--output", str(tmp_path / "views")]
    for config, message in [
            (str(tmp_path / "notes.txt"),
             f"Config file {tmp_path / 'notes.txt'} has to be a python or yaml file. Give a pretraining config (e.g. "
             "configs/demo/siamese_detr_pretrain_demo.py)"),
            (COMMON_TRAIN, f"{COMMON_TRAIN} is not a Siamese DETR pretraining config: it defines no "
                           "dataloader.train.mapper (e.g. configs/demo/siamese_detr_pretrain_demo.py)")]:
        assert _exit_code(views.main, ["--config-file", config] + out) == 2
        assert _usage_error(capsys.readouterr().err) == message
    assert not (tmp_path / "views").exists()


def test_fold_region_queries_names_a_config_without_a_model(tmp_path, fold, capsys):
    torch.save({"model": {}}, tmp_path / "pretrain.pth")
    argv = ["--config-file", COMMON_TRAIN, "--checkpoint", str(tmp_path / "pretrain.pth"),
            "--output", str(tmp_path / "out.pth")]
    assert fold.main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {COMMON_TRAIN} is not a training config of this project: it defines no model, "
                           "dataloader (it defines train)")
    assert line.endswith("Here: the Siamese DETR pretraining config of the checkpoint, e.g. "
                         "configs/demo/demo_siamese_pretrain.py.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pretrain.pth"]


@pytest.mark.parametrize("config, lacks, defines", [
    ("configs/common/optim.py", "backbone, data, train", "AdamW"),
    ("configs/demo/detr_demo.py", "backbone, data", "dataloader, lr_multiplier, model, optimizer, train"),
])
def test_train_demo_backbone_names_a_config_that_is_not_a_backbone_config(tmp_path, backbone, capsys, config,
                                                                          lacks, defines):
    out = tmp_path / "bb"
    argv = ["--config-file", str(ROOT / config), f"train.output_dir={out}"]
    assert _exit_code(backbone.main, argv) == 2
    assert _usage_error(capsys.readouterr().err) == (
        f"{ROOT / config} is not a demo backbone config: it defines no {lacks} (it "
        f"defines {defines}). Give configs/demo/demo_backbone.py (or a copy of it); detector and pretraining configs "
        "are run by tools/lazyconfig_train_net.py")
    assert not out.exists()


# ------------------------------------------------------------------ 3. a dataset that cannot be loaded
def test_visualize_predictions_refuses_an_image_dir_without_images(tmp_path, predictions, capsys, monkeypatch):
    (tmp_path / "model.pth").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    _never_load(predictions, monkeypatch)
    argv = ["--config-file", DETR, "--checkpoint", str(tmp_path / "model.pth"),
            "--image-dir", str(tmp_path / "empty"), "--output", str(tmp_path / "png")]
    try:
        assert predictions.main(argv + SMALL) == 2
    finally:
        from script_modules import forget_datasets

        forget_datasets([f"folder:{tmp_path / 'empty'}"])
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: Dataset 'folder:{tmp_path / 'empty'}': no image files (")
    assert f"under {tmp_path / 'empty'}; point it at the folder that holds the images" in line
    assert not (tmp_path / "png").exists()


# ------------------------------------------------------------------ 4. an output path that is a file
def test_visualize_predictions_refuses_an_output_that_is_a_file(tmp_path, tiny_synthetic_shapes, predictions,
                                                                capsys, monkeypatch):
    (tmp_path / "model.pth").write_bytes(b"x")
    (tmp_path / "afile").write_text("x")
    _never_load(predictions, monkeypatch)
    for output, message in [
            (tmp_path / "afile", f"--output {tmp_path / 'afile'} is a file, not a folder: give the folder to write "
                                 "in (a new one is made)"),
            (tmp_path / "afile" / "png", f"--output {tmp_path / 'afile' / 'png'}: its parent {tmp_path / 'afile'} "
                                         "is a file, not a folder: give a path in a folder")]:
        argv = ["--config-file", DETR, "--checkpoint", str(tmp_path / "model.pth"), "--output", str(output)]
        assert predictions.main(argv + SMALL) == 2
        assert _one_error_line(capsys.readouterr().err) == f"error: {message}"
    assert (tmp_path / "afile").read_text() == "x"


def test_visualize_views_refuses_an_output_that_is_a_file(tmp_path, tiny_synthetic_shapes, views, capsys):
    (tmp_path / "afile").write_text("x")
    argv = ["--dataset", "synthetic_shapes_val", "--num-samples", "1", "--output", str(tmp_path / "afile")]
    assert views.main(argv) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: --output {tmp_path / 'afile'} is a file, not a folder: give the folder to write in (a new one is "
        "made)")


def test_train_demo_backbone_refuses_an_output_dir_it_cannot_write(tmp_path, backbone, read_only, capsys):
    (tmp_path / "afile").write_text("x")
    for output_dir, message in [
            (tmp_path / "afile", f"train.output_dir={tmp_path / 'afile'} is a file, not a folder: choose another "
                                 "train.output_dir."),
            (read_only / "bb", f"train.output_dir={read_only / 'bb'}: cannot write there (Operation not "
                               "permitted); choose another train.output_dir")]:
        assert _exit_code(backbone.main, ["--config-file", BACKBONE, f"train.output_dir={output_dir}"]) == 2
        assert _usage_error(capsys.readouterr().err) == message
    assert (tmp_path / "afile").read_text() == "x" and list(read_only.iterdir()) == []


# ------------------------------------------------------------------ 5. existing output files
def _resnet18(path: Path) -> Path:
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_convert_checkpoint_does_not_replace_an_existing_output_without_overwrite(tmp_path, convert, capsys):
    source = _resnet18(tmp_path / "r18.pth")
    keep = tmp_path / "keep.txt"
    keep.write_text("keep me")
    assert _exit_code(convert.main, ["--input", str(source), "--output", str(keep)]) == 2
    assert _usage_error(capsys.readouterr().err) == (
        f"--output {keep} exists already: give a new file, or add --overwrite to "
        "replace it")
    assert keep.read_text() == "keep me"
    assert convert.main(["--input", str(source), "--output", str(keep), "--overwrite"]) == 0
    assert "backbone.stem.conv1.weight" in torch.load(keep, weights_only=True)["model"]


def test_fold_region_queries_does_not_replace_an_existing_output(tmp_path, fold, capsys):
    torch.save({"model": {}}, tmp_path / "pretrain.pth")
    (tmp_path / "existing.pth").write_text("old")
    argv = ["--config-file", SIAMESE, "--checkpoint", str(tmp_path / "pretrain.pth"),
            "--output", str(tmp_path / "existing.pth")]
    assert fold.main(argv) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: --output {tmp_path / 'existing.pth'} exists already: give a new file, or add --overwrite to "
        "replace it")
    assert (tmp_path / "existing.pth").read_text() == "old"
    assert fold.build_parser().parse_args(argv + ["--overwrite"]).overwrite


# ------------------------------------------------------------------ 6. wording: a folder, a parent that is a file
def test_a_folder_given_as_a_file_is_called_a_folder(tmp_path, predictions, views, fold, capsys, monkeypatch):
    torch.save({"model": {}}, tmp_path / "model.pth")
    _never_load(predictions, monkeypatch)
    argv = ["--config-file", DETR, "--checkpoint", str(tmp_path), "--output", str(tmp_path / "png")]
    assert predictions.main(argv) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: --checkpoint {str(tmp_path)!r} is a folder, not a file: give the file itself (e.g. "
        "OUTPUT/model_final.pth)")
    argv = ["--config-file", str(tmp_path), "--checkpoint", str(tmp_path / "model.pth"),
            "--output", str(tmp_path / "out.pth")]
    assert fold.main(argv) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"error: --config-file {str(tmp_path)!r} is a folder, not a file: give the file itself")
    assert _exit_code(views.main, ["--config-file", str(tmp_path), "--output", str(tmp_path / "views")]) == 2
    assert _usage_error(capsys.readouterr().err) == (
        f"--config-file {str(tmp_path)!r} is a folder, not a config file (e.g. "
        "configs/demo/siamese_detr_pretrain_demo.py)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


def test_convert_checkpoint_says_the_output_is_under_a_file(tmp_path, convert, capsys):
    source = _resnet18(tmp_path / "r18.pth")
    (tmp_path / "afile").write_text("x")
    output = tmp_path / "afile" / "sub" / "x.pth"
    assert _exit_code(convert.main, ["--input", str(source), "--output", str(output)]) == 2
    assert _usage_error(capsys.readouterr().err) == (
        f"--output {output}: on its path, {tmp_path / 'afile'} is a file, not a folder: "
        "give a path in a folder")


# ------------------------------------------------------------------ 7. negative seeds
def test_negative_seeds_are_refused_where_they_are_parsed(tmp_path, views, fold, capsys):
    with pytest.raises(SystemExit) as exit_:
        views.build_parser().parse_args(["--seed", "-1"])
    assert exit_.value.code == 2
    assert _usage_error(capsys.readouterr().err) == (
        "argument --seed: must be at least 0 (a seed), got -1")
    with pytest.raises(SystemExit) as exit_:
        fold.build_parser().parse_args(["--config-file", "c", "--checkpoint", "m", "--output", "o", "--seed", "-5"])
    assert exit_.value.code == 2
    assert _usage_error(capsys.readouterr().err) == (
        "argument --seed: must be at least 0 (a seed), got -5")
    assert views.build_parser().parse_args(["--seed", "0"]).seed == 0
    assert fold.build_parser().parse_args(["--config-file", "c", "--checkpoint", "m", "--output", "o"]).seed is None


# ------------------------------------------------------------------ 8. --prefix where it has no effect
def test_convert_checkpoint_refuses_prefix_with_a_whole_model_format(tmp_path, convert, capsys):
    source = _resnet18(tmp_path / "r18.pth")
    argv = ["--input", str(source), "--output", str(tmp_path / "out.pth"), "--format", "detr", "--prefix", "foo"]
    assert _exit_code(convert.main, argv) == 2
    assert _usage_error(capsys.readouterr().err) == (
        "--prefix places a bare ResNet in the target model (--format torchvision); "
        "--format detr converts a whole model under its own names: drop --prefix")
    assert not (tmp_path / "out.pth").exists()
    assert convert.main(["--input", str(source), "--output", str(tmp_path / "bare.pth"), "--prefix", ""]) == 0
    assert "stem.conv1.weight" in torch.load(tmp_path / "bare.pth", weights_only=True)["model"]
