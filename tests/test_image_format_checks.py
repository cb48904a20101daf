"""A wrong ``image_format`` is refused at start-up, naming its key, the value and the accepted values.

Before, ``dataloader.train.mapper.image_format=42`` (or ``=XYZ``) passed the override check (the config holds a
string there), every image was skipped as "unreadable image ... (TypeError: argument 1 must be str, not int)"
and the run ended in a data-loader worker with ``ValueError: Sample larger than population`` and 4 tracebacks
(on a large dataset, after ~1000 good images skipped). Now the training tool refuses it when it loads the
config, the mappers and ``OnlineProposals`` when they are built (for the tools that build them without the
training tool), and the reader raises it as the caller's mistake, never as an unreadable image.
"""
import logging
import re

import cv2
import numpy as np
import pytest
from detectron2.config import LazyConfig
from omegaconf import OmegaConf
from PIL import Image

from siamese_detr.data import DETRegMapper, DetrDatasetMapper, SiameseViewMapper, UPDETRMapper, image_io
from siamese_detr.data.image_io import read_image, read_image_checked, read_image_or_none
from siamese_detr.data.proposals.sources import OnlineProposals, RandomProposals
from siamese_detr.engine import logging_utils
from siamese_detr.engine import config_checks
from siamese_detr.utils.user_errors import TRACEBACK_ENV, UserValueError

from test_train_cli_mistakes import _tool_error  # the tool's one error line, exit 2, no traceback
from train_net_tool import ROOT, TINY, train_net

ACCEPTED = "must be 'BGR' or 'RGB' (the channel order images are decoded to)"
BAD = [42, "XYZ", "L", "rgb", "YUV-BT.601", "RGBA", None]
GOOD = ("BGR", "RGB")  # image_io.IMAGE_FORMATS (asserted below; spelled out so that the tests run without it)


@pytest.fixture
def no_image_opened(monkeypatch):
    """Every ``PIL.Image.open`` of the test, recorded (all the project's readers open images with it)."""
    opened = []
    real_open = Image.open

    def recording_open(fp, *args, **kwargs):
        opened.append(getattr(fp, "name", fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", recording_open)
    return opened


@pytest.fixture
def no_run_log(monkeypatch):
    """As before any run of this process set up its log.txt."""
    monkeypatch.setattr(logging_utils, "_active_log_file", None)
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)


def _demo_args(tmp_path, *extra):
    return ["--config-file", str(ROOT / "configs/demo/detr_demo.py"), *TINY, "train.max_iter=2",
            f"train.output_dir={tmp_path / 'out'}", *extra]


def _image(tmp_path, name="img.png"):
    path = str(tmp_path / name)
    image = np.zeros((32, 48, 3), np.uint8)
    image[..., 0], image[..., 2] = 200, 30  # BGR: blue 200, red 30
    cv2.imwrite(path, image)
    return path


# ------------------------------------------------------------------------------------------ the training tool
@pytest.mark.parametrize("value, shown", [("42", "42"), ("XYZ", "'XYZ'")])
def test_the_training_tool_refuses_a_bad_image_format_before_reading_any_image(
        value, shown, tmp_path, capsys, tiny_synthetic_shapes, no_image_opened, no_run_log):
    message = _tool_error(capsys, _demo_args(tmp_path, f"dataloader.train.mapper.image_format={value}"))
    assert message == (f"Config key 'dataloader.train.mapper.image_format' {ACCEPTED}, got {shown}; the configs use "
                       "'BGR', the order of their model.input_format and pixel statistics.")
    assert no_image_opened == [] and not (tmp_path / "out").exists()


def test_the_test_mapper_key_is_named_with_where_its_value_comes_from(tmp_path, capsys, tiny_synthetic_shapes,
                                                                      no_image_opened, no_run_log):
    message = _tool_error(capsys, _demo_args(tmp_path, "dataloader.test.mapper.image_format=XYZ"))
    assert message.startswith(f"Config key 'dataloader.test.mapper.image_format' {ACCEPTED}, got 'XYZ'")
    # --eval-only checks only the test mapper, whose value the demo config takes from the training mapper's
    message = _tool_error(capsys, ["--eval-only"] + _demo_args(tmp_path, "dataloader.train.mapper.image_format=bgr"))
    assert message.startswith("Config key 'dataloader.test.mapper.image_format' (set from "
                              f"'dataloader.train.mapper.image_format') {ACCEPTED}, got 'bgr' (upper case: 'BGR')")
    assert no_image_opened == []


def test_a_valid_image_format_passes_the_start_up_checks(tmp_path):
    for value in GOOD:
        args = train_net.parse_args(_demo_args(tmp_path, f"dataloader.train.mapper.image_format={value}",
                                               f"model.input_format={value}"))
        cfg, _ = train_net.checked_config(args, 1)
        assert cfg.dataloader.test.mapper.image_format == value


@pytest.mark.parametrize("eval_only", [False, True])
def test_a_mapper_format_other_than_the_model_s_is_refused(tmp_path, capsys, no_image_opened, eval_only):
    """RGB images into a model whose pixel statistics and backbone weights are BGR: swapped channels, silently."""
    key = "dataloader.test.mapper.image_format" if eval_only else "dataloader.train.mapper.image_format"
    argv = _demo_args(tmp_path, "dataloader.train.mapper.image_format=RGB")
    message = _tool_error(capsys, argv[:2] + (["--eval-only"] if eval_only else []) + argv[2:])
    assert message.startswith(f"Config key '{key}' is 'RGB' but model.input_format is 'BGR': the model would read "
                              "the images with their channels swapped")


# ----------------------------------------------------------------------------------------- the config check
def _configs():
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*/*.py"))


def test_every_config_s_image_formats_are_found_valid_and_each_refused_when_wrong():
    checked = 0
    for name in _configs():
        cfg = LazyConfig.load(str(ROOT / name))
        if "dataloader" not in cfg:
            continue
        found = dict(config_checks.image_format_keys(cfg))
        assert "dataloader.train.mapper.image_format" in found, name
        config_checks.check_image_formats(cfg)
        for key, written in found.items():
            if config_checks.interpolated_key(key, written):
                continue
            wrong = cfg.copy()
            OmegaConf.update(wrong, key, "XYZ", merge=False)
            with pytest.raises(UserValueError, match=rf"^Config key '{re.escape(key)}' {re.escape(ACCEPTED)}, "
                                                     r"got 'XYZ'"):
                config_checks.check_image_formats(wrong)
            checked += 1
    assert checked >= 40


def test_the_proposal_source_format_of_the_online_configs_is_checked():
    cfg = LazyConfig.load(str(ROOT / "configs/demo/demo_siamese_pretrain.py"))
    key = "dataloader.train.mapper.proposal_source.image_format"
    assert dict(config_checks.image_format_keys(cfg))[key] == "${..image_format}"
    assert config_checks.interpolated_key(key, "${..image_format}") == "dataloader.train.mapper.image_format"
    OmegaConf.update(cfg, key, 7, merge=False)
    with pytest.raises(UserValueError, match=rf"^Config key '{re.escape(key)}' {re.escape(ACCEPTED)}, got 7"):
        config_checks.check_image_formats(cfg)


# --------------------------------------------------------------------------------- the mapper constructors
def _mappers(image_format, is_train=True):
    return {
        "DetrDatasetMapper": lambda: DetrDatasetMapper(is_train, [], image_format=image_format),
        "SiameseViewMapper": lambda: SiameseViewMapper(is_train, image_format=image_format),
        "UPDETRMapper": lambda: UPDETRMapper(is_train, image_format=image_format),
        "DETRegMapper": lambda: DETRegMapper(RandomProposals(5), is_train, image_format=image_format),
    }


@pytest.mark.parametrize("value", BAD)
def test_every_mapper_refuses_a_bad_image_format_naming_its_argument(value):
    for name, build in _mappers(value).items():
        with pytest.raises(UserValueError, match=rf"^{name}: image_format \(dataloader\.train\.mapper\.image_format\) "
                                                 rf"{re.escape(ACCEPTED)}, got {re.escape(repr(value))}"):
            build()
    with pytest.raises(UserValueError, match=r"^DetrDatasetMapper: image_format \(dataloader\.test\.mapper\."):
        _mappers(value, is_train=False)["DetrDatasetMapper"]()
    with pytest.raises(UserValueError, match=r"^OnlineProposals: image_format \(dataloader\.train\.mapper\."
                                             r"proposal_source\.image_format, which the configs set to the mapper's "
                                             rf"dataloader\.train\.mapper\.image_format\) {re.escape(ACCEPTED)}"):
        OnlineProposals("edgeboxes", image_format=value)


def test_the_hints_for_lower_case_and_grey_level_formats():
    with pytest.raises(UserValueError, match=r"got 'rgb' \(upper case: 'RGB'\);"):
        DetrDatasetMapper(True, [], image_format="rgb")
    with pytest.raises(UserValueError, match=r"got 'L' \(a grey-level image is read as three equal channels"):
        SiameseViewMapper(image_format="L")


@pytest.mark.parametrize("value", GOOD)
def test_the_accepted_formats_build_every_mapper_and_decode_in_their_order(value, tmp_path):
    assert image_io.IMAGE_FORMATS == GOOD
    for name, build in _mappers(value).items():
        assert build().image_format == value, name
    assert OnlineProposals("edgeboxes", image_format=value).image_format == value
    out = DetrDatasetMapper(False, [], image_format=value)({"file_name": _image(tmp_path), "image_id": 0})
    blue_first = value == "BGR"
    assert out["image"][:, 0, 0].tolist() == ([200, 0, 30] if blue_first else [30, 0, 200])


# ------------------------------------------------------------------------------------------------ the reader
@pytest.mark.parametrize("value", [42, "XYZ"])
def test_the_reader_raises_a_bad_format_as_the_caller_s_mistake_not_an_unreadable_image(
        value, tmp_path, caplog, monkeypatch, no_image_opened):
    path = _image(tmp_path)
    before = image_io.num_unreadable_images()
    monkeypatch.setitem(image_io._in_a_row, "reader", 0)
    with caplog.at_level(logging.WARNING):
        for read in (lambda: read_image(path, value), lambda: read_image_checked(path, value),
                     lambda: read_image_or_none(path, value, "reader")):
            with pytest.raises(UserValueError, match=rf"^image_format {re.escape(ACCEPTED)}, got {value!r}"):
                read()
    assert no_image_opened == [] and image_io.num_unreadable_images() == before
    assert not [r for r in caplog.records if "unreadable" in r.getMessage()]


def test_a_truly_unreadable_image_is_still_skipped_with_a_valid_format(tmp_path, caplog):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with caplog.at_level(logging.WARNING):
        for value in GOOD:
            assert read_image_checked(str(bad), value)[0] is None
            assert DetrDatasetMapper(True, [], image_format=value)({"file_name": str(bad), "image_id": 0}) is None
    assert [r for r in caplog.records if "skipping unreadable image" in r.getMessage()]
