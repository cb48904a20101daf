"""tools/visualize_predictions.py: the class count of softmax and focal heads, the checkpoint rules of
--eval-only (no partly random model drawn unless train.eval_allow_random=True, no pickle run unasked), the
ground truth labelled with the dataset's class names, and the refused --num-images / --score-threshold."""
import importlib.util
import logging
import os
import pickle
import shutil
import re
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from pickle_payload import Payload

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("visualize_predictions_tool", ROOT / "tools" / "visualize_predictions.py")
tool = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tool)

SMALL = ["model.transformer.num_encoder_layers=1", "model.transformer.num_decoder_layers=2"]


@pytest.fixture
def tool_log():
    """The messages of the tool's logger (detectron2's ``setup_logger`` stops it propagating to pytest's
    ``caplog``)."""
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect()
    logging.getLogger("visualize_predictions").addHandler(handler)
    yield messages
    logging.getLogger("visualize_predictions").removeHandler(handler)


def _config(name: str):
    from siamese_detr.engine import apply_checked_overrides

    return apply_checked_overrides(LazyConfig.load(str(ROOT / "configs" / "demo" / name)), SMALL)


def _save_model(cfg, path: Path) -> dict:
    torch.manual_seed(0)
    state = instantiate(cfg.model).state_dict()
    torch.save({"model": state}, path)
    return state


@pytest.mark.parametrize("config, extra_rows", [("detr_demo.py", 1), ("deformable_detr_demo.py", 0),
                                                ("conditional_detr_demo.py", 0)])
def test_class_count_follows_the_class_loss(tmp_path, config, extra_rows):
    cfg = _config(config)
    assert tool.no_object_logits(cfg) == extra_rows
    _save_model(cfg, tmp_path / "model.pth")
    assert tool.checkpoint_num_classes(str(tmp_path / "model.pth"), extra_rows) == 8  # the 8 shape classes


def test_a_focal_detector_is_drawn_with_its_own_class_head(tmp_path, tiny_synthetic_shapes, tool_log, monkeypatch):
    cfg = _config("deformable_detr_demo.py")
    state = _save_model(cfg, tmp_path / "model.pth")
    loaded = {}
    original = tool.SafeDetectionCheckpointer.load

    def spy(self, path, *args, **kwargs):
        result = original(self, path, *args, **kwargs)
        loaded.update({k: v.clone() for k, v in self.model.state_dict().items()})
        return result

    monkeypatch.setattr(tool.SafeDetectionCheckpointer, "load", spy)
    argv = ["--config-file", str(ROOT / "configs/demo/deformable_detr_demo.py"), "--checkpoint",
            str(tmp_path / "model.pth"), "--dataset", "synthetic_shapes_val", "--num-images", "1",
            "--output", str(tmp_path / "png"), *SMALL]
    assert tool.main(argv) == 0
    heads = [k for k in state if re.fullmatch(r"class_embed(\.\d+)*\.weight", k)]
    assert heads and all(torch.equal(loaded[k], state[k]) for k in heads)
    assert not any("from the checkpoint's class head" in m for m in tool_log)
    assert not any("class names unknown" in m for m in tool_log)  # the 8 shape names of the dataset
    assert len(list((tmp_path / "png").glob("*.png"))) == 1
    assert f"1 image(s) drawn in {tmp_path / 'png'} (the first 1 of 3; --num-images 3 draws all)" in tool_log


def test_an_image_folder_without_class_names_says_how_to_name_them(tmp_path, tiny_synthetic_shapes, tool_log):
    """A 2-class detector (its own data) drawn on a folder: the labels are indices, and the log says so and
    how to get the names; every image of the folder is drawn when --num-images allows."""
    from detectron2.data import DatasetCatalog

    from siamese_detr.engine import apply_checked_overrides

    cfg = apply_checked_overrides(LazyConfig.load(str(ROOT / "configs/demo/detr_demo.py")),
                                  SMALL + ["model.num_classes=2"])
    _save_model(cfg, tmp_path / "model.pth")
    folder = tmp_path / "images"
    folder.mkdir()
    for record in DatasetCatalog.get("synthetic_shapes_val")[:2]:
        shutil.copy(record["file_name"], folder)
    argv = ["--config-file", str(ROOT / "configs/demo/detr_demo.py"), "--checkpoint", str(tmp_path / "model.pth"),
            "--image-dir", str(folder), "--num-images", "5", "--output", str(tmp_path / "png"), *SMALL]
    assert tool.main(argv) == 0
    assert "model.num_classes = 2 (from the checkpoint's class head)" in tool_log
    assert any(m.startswith("class names unknown: detections are labelled 'class i'") and
               "dataloader.train.dataset.names=coco:TRAIN.json:IMAGES" in m for m in tool_log)
    assert f"2 image(s) drawn in {tmp_path / 'png'}" in tool_log


def test_a_pretraining_checkpoint_is_refused(tmp_path, capsys):
    # a pretext head (object vs no object: one row besides "no object") has no foreground class for softmax
    torch.save({"model": {"class_embed.weight": torch.zeros(1, 8)}}, tmp_path / "pretext_head.pth")
    argv = ["--config-file", str(ROOT / "configs/demo/detr_demo.py"), "--checkpoint",
            str(tmp_path / "pretext_head.pth"), "--output", str(tmp_path / "png"), *SMALL]
    assert tool.main(argv) == 2
    assert "no foreground class" in capsys.readouterr().err


def test_a_checkpoint_that_matches_nothing_is_refused(tmp_path, tiny_synthetic_shapes, capsys):
    torch.save({"model": {"a.weight": torch.zeros(3)}}, tmp_path / "junk.pth")
    argv = ["--config-file", str(ROOT / "configs/demo/detr_demo.py"), "--checkpoint", str(tmp_path / "junk.pth"),
            "--dataset", "synthetic_shapes_val", "--output", str(tmp_path / "png"), *SMALL]
    assert tool.main(argv) == 2
    assert "matches no parameter" in capsys.readouterr().err
    assert not (tmp_path / "png").exists()


def test_a_pickle_is_not_run_without_trust_pickle(tmp_path, tiny_synthetic_shapes, capsys):
    marker, pkl = tmp_path / "pwned", tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"x": Payload(str(marker))}}, protocol=2))
    argv = ["--config-file", str(ROOT / "configs/demo/detr_demo.py"), "--checkpoint", str(pkl),
            "--dataset", "synthetic_shapes_val", "--output", str(tmp_path / "png"), *SMALL]
    assert tool.main(argv) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert not marker.exists()


def _run(tmp_path, config, checkpoint, *extra):
    argv = ["--config-file", str(ROOT / "configs/demo" / config), "--checkpoint", str(checkpoint),
            "--output", str(tmp_path / "png"), *extra, *SMALL]
    return tool.main(argv)


def _error_lines(err: str) -> list:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path, tiny_synthetic_shapes, tool_log, capsys):
    """A Vanilla DETR checkpoint drawn with the Deformable DETR config: refused as --eval-only refuses it,
    not drawn as a (mostly random) 9-class focal detector."""
    _save_model(_config("detr_demo.py"), tmp_path / "detr.pth")
    code = _run(tmp_path, "deformable_detr_demo.py", tmp_path / "detr.pth", "--dataset", "synthetic_shapes_val")
    err = capsys.readouterr().err
    assert code == 2
    (line,) = _error_lines(err)
    assert f"{tmp_path / 'detr.pth'} holds a Vanilla DETR transformer, and this config's model is Deformable " \
           "DETR: none of the model's" in line  # named as --eval-only names it
    assert "draw it with a config of Vanilla DETR (configs/detr/detr_*.py or configs/demo/detr_demo.py)" in line
    assert "train.eval_allow_random=True" in line
    assert not any("model.num_classes = 9" in m for m in tool_log)
    assert not list(tmp_path.glob("png/*.png"))


def test_a_backbone_only_checkpoint_is_refused_naming_what_it_lacks(tmp_path, tiny_synthetic_shapes, capsys):
    cfg = _config("detr_demo.py")
    state = _save_model(cfg, tmp_path / "full.pth")
    torch.save({"model": {k: v for k, v in state.items() if k.startswith("backbone.")}}, tmp_path / "backbone.pth")
    params = [name for name, _ in instantiate(cfg.model).named_parameters()]
    lacking = [name for name in params if not name.startswith("backbone.")]
    assert lacking and len(lacking) < len(params)
    code = _run(tmp_path, "detr_demo.py", tmp_path / "backbone.pth", "--dataset", "synthetic_shapes_val")
    (line,) = _error_lines(capsys.readouterr().err)
    assert code == 2
    assert f"{len(lacking)} of the model's {len(params)} parameters are not in {tmp_path / 'backbone.pth'}" in line
    modules = line.split("modules: ")[1].split(";")[0]  # the modules it lacks: all but the backbone
    assert "transformer.encoder" in modules and "query_embed" in modules and "backbone" not in modules
    assert not list(tmp_path.glob("png/*.png"))


def test_eval_allow_random_draws_a_partly_random_model_with_a_warning(
        tmp_path, tiny_synthetic_shapes, tool_log, capsys):
    """The escape hatch of --eval-only, the same key."""
    state = _save_model(_config("detr_demo.py"), tmp_path / "full.pth")
    torch.save({"model": {k: v for k, v in state.items() if k.startswith("backbone.")}}, tmp_path / "backbone.pth")
    code = _run(tmp_path, "detr_demo.py", tmp_path / "backbone.pth", "--dataset", "synthetic_shapes_val",
                "--num-images", "1", "train.eval_allow_random=True")
    assert code == 0
    assert not _error_lines(capsys.readouterr().err)
    assert any(m.startswith("train.eval_allow_random=True: ") and "randomly initialised" in m for m in tool_log)
    assert len(list(tmp_path.glob("png/*.png"))) == 1


def test_a_pretraining_is_drawn_class_agnostic_and_the_ground_truth_keeps_the_dataset_names(
        tmp_path, tiny_synthetic_shapes, tool_log, monkeypatch):
    """A Siamese DETR pretraining (class head: object vs no object) with the DETR config: its detections are
    "object", but the ground truth panel is labelled with the dataset's own class names."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    _save_model(_config("siamese_detr_pretrain_demo.py"), tmp_path / "pretrain.pth")
    thing_classes = MetadataCatalog.get("synthetic_shapes_val").thing_classes
    expected = [[thing_classes[a["category_id"]] for a in record["annotations"] if not a.get("iscrowd", 0)]
                for record in DatasetCatalog.get("synthetic_shapes_val")]
    assert len(set(thing_classes)) == 8 and any(len(set(labels)) > 1 for labels in expected)
    drawn = []  # (labels, colours) of each draw_boxes call
    original = tool.draw_boxes

    def spy(image, boxes, labels, colours, scale):
        drawn.append((list(labels), list(colours)))
        return original(image, boxes, labels, colours, scale)

    monkeypatch.setattr(tool, "draw_boxes", spy)
    code = _run(tmp_path, "detr_demo.py", tmp_path / "pretrain.pth", "--dataset", "synthetic_shapes_val",
                "--score-threshold", "0")
    assert code == 0
    gt = [labels for labels, colours in drawn if colours and all(c == tool.GT_COLOUR for c in colours)]
    detections = [labels for labels, colours in drawn if colours and not all(c == tool.GT_COLOUR for c in colours)]
    assert gt == expected
    assert len(detections) == 3 and all(label.startswith("object ") for labels in detections for label in labels)
    assert "model.num_classes = 1 (from the checkpoint's class head)" in tool_log
    assert sum("the detections are class-agnostic" in m for m in tool_log) == 1


@pytest.mark.parametrize("value", ["0", "-3"])
def test_num_images_below_one_is_refused(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        _run(tmp_path, "detr_demo.py", tmp_path / "model.pth", "--num-images", value)
    assert exit_.value.code == 2
    assert f"argument --num-images: must be at least 1 (the number of images to draw), got {int(value)}" in \
        capsys.readouterr().err


@pytest.mark.parametrize("value", ["5", "-0.1", "1.01", "nan"])
def test_a_score_threshold_outside_0_1_is_refused(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        _run(tmp_path, "detr_demo.py", tmp_path / "model.pth", "--score-threshold", value)
    assert exit_.value.code == 2
    assert "argument --score-threshold: must be in [0, 1]" in capsys.readouterr().err
    for bound in ("0", "1"):  # both ends are valid thresholds
        assert tool.build_parser().parse_args(["--config-file", "c", "--checkpoint", "m",
                                               "--score-threshold", bound]).score_threshold == float(bound)


def test_a_folder_of_unreadable_images_is_an_error(tmp_path, tiny_synthetic_shapes, capsys, caplog):
    _save_model(_config("detr_demo.py"), tmp_path / "model.pth")
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not an image at all")
    (folder / "b.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        code = _run(tmp_path, "detr_demo.py", tmp_path / "model.pth", "--image-dir", str(folder))
    assert code == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: no image could be read: the 2 image(s) tried")
    warned = [r.getMessage() for r in caplog.records if "skipping unreadable image" in r.getMessage()]
    assert any("a.png" in m for m in warned) and any("b.jpg" in m for m in warned)  # the per-file warnings stay


def test_only_detections_at_or_above_the_score_threshold_are_drawn(
        tmp_path, tiny_synthetic_shapes, tool_log, monkeypatch):
    """The model's output replaced by three known detections (scores 0.9, 0.4, 0.6): the threshold is
    inclusive, and the drawn boxes are the kept ones."""
    from detectron2.structures import Boxes, Instances

    from siamese_detr.modeling.meta_arch.detr import DETR

    def three_detections(self, batched_inputs):
        inst = Instances((batched_inputs[0]["height"], batched_inputs[0]["width"]))
        inst.pred_boxes = Boxes(torch.tensor([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 9.0, 9.0], [10.0, 12.0, 50.0, 60.0]]))
        inst.scores = torch.tensor([0.9, 0.4, 0.6])
        inst.pred_classes = torch.tensor([0, 1, 2])
        return [{"instances": inst}]

    drawn = []
    original = tool.draw_boxes

    def spy(image, boxes, labels, colours, scale):
        if colours and not all(c == tool.GT_COLOUR for c in colours):
            drawn.append([list(map(float, b)) for b in boxes])
        return original(image, boxes, labels, colours, scale)

    monkeypatch.setattr(DETR, "forward", three_detections)
    monkeypatch.setattr(tool, "draw_boxes", spy)
    _save_model(_config("detr_demo.py"), tmp_path / "detr.pth")
    for threshold, kept in (("0.5", [0, 2]), ("0.6", [0, 2]), ("0.61", [0]), ("0.95", [])):
        drawn.clear()
        tool_log.clear()
        assert _run(tmp_path, "detr_demo.py", tmp_path / "detr.pth", "--dataset", "synthetic_shapes_val",
                    "--num-images", "1", "--score-threshold", threshold) == 0
        assert any(f": {len(kept)} detections with score >= {float(threshold):g}" in m for m in tool_log), tool_log
        boxes = [[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 9.0, 9.0], [10.0, 12.0, 50.0, 60.0]]
        assert drawn == [[boxes[i] for i in kept]] if kept else drawn in ([], [[]])


def test_ground_truth_is_the_non_crowd_boxes_in_xyxy():
    """``ground_truth``: an XYWH box [10, 20, 30, 40] is drawn as xyxy [10, 20, 40, 60], an XYXY box as given;
    a crowd annotation is left out; a record without annotations (an image folder) has none (None)."""
    from detectron2.structures import BoxMode

    record = {"annotations": [
        {"bbox": [10, 20, 30, 40], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2},
        {"bbox": [0, 0, 50, 50], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 1},
        {"bbox": [5, 6, 7, 8], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0},
    ]}
    boxes, classes = tool.ground_truth(record)
    assert boxes.tolist() == [[10, 20, 40, 60], [5, 6, 7, 8]] and classes == [2, 0]
    empty = tool.ground_truth({"annotations": []})
    assert empty[0].shape == (0, 4) and empty[1] == []
    assert tool.ground_truth({"file_name": "x.png"}) is None


def test_render_enlarges_short_images_by_their_height():
    """A 20 x 100 image (H x W) is enlarged 320 / 20 = 16 times (the height decides, not the width): each
    panel 320 x 1600 under the caption and panel labels; two panels (ground truth, detections) side by side."""
    import numpy as np

    image = np.full((20, 100, 3), 90, dtype=np.uint8)
    no_detections = (np.zeros((0, 4), dtype=np.float32), [], [])
    canvas = tool.render(image, "t", (np.array([[1.0, 1.0, 10.0, 10.0]]), [0]), no_detections, ["a"])
    assert canvas.shape == (tool.CAPTION + 18 + 320 + tool.GAP, tool.GAP + 2 * (1600 + tool.GAP), 3)
    top = tool.CAPTION + 18
    assert (canvas[top + 200, tool.GAP + 1600 + tool.GAP + 800] == 90).all()  # inside the detections panel


def test_class_names_come_from_the_training_dataset_when_the_test_one_has_none(tiny_synthetic_shapes):
    """Drawing an image folder (no class names) with a config trained on ``synthetic_shapes_train``: the 8
    detections' class names are that dataset's; a class count no dataset has gives ``class i``."""
    from detectron2.data import MetadataCatalog

    cfg = _config("detr_demo.py")
    cfg.dataloader.train.dataset.names = "synthetic_shapes_train"
    expected = list(MetadataCatalog.get("synthetic_shapes_train").thing_classes)
    assert len(expected) == 8
    assert tool.class_names_for(cfg, ["no_such_dataset"], 8) == expected
    assert tool.class_names_for(cfg, [], 3) == ["class 0", "class 1", "class 2"]
    assert tool.class_names_for(cfg, [], 1) == ["object"]


def test_each_detected_class_has_its_own_colour(monkeypatch):
    """Detections of classes 0, 1, 0 with 3 class names: colours ``palette(3)[0], [1], [0]``, labels
    "name score"; the ground truth in magenta."""
    import numpy as np

    drawn = []
    monkeypatch.setattr(tool, "draw_boxes", lambda image, boxes, labels, colours, scale: (
        drawn.append((list(labels), list(colours))), image)[1])
    boxes = np.array([[1, 1, 5, 5], [2, 2, 6, 6], [3, 3, 7, 7]], dtype=np.float32)
    tool.render(np.zeros((40, 40, 3), np.uint8), "t", (boxes[:1], [2]), (boxes, [0.9, 0.8, 0.7], [0, 1, 0]),
                ["a", "b", "c"], gt_class_names=["x", "y", "z"])
    palette = tool.palette(3)
    assert drawn == [(["a 0.90", "b 0.80", "a 0.70"], [palette[0], palette[1], palette[0]]),
                     (["z"], [tool.GT_COLOUR])]


@pytest.mark.parametrize("missing", ["--config-file", "--checkpoint"])
def test_a_missing_config_or_checkpoint_is_named(tmp_path, capsys, missing):
    _save_model(_config("detr_demo.py"), tmp_path / "model.pth")
    paths = {"--config-file": str(ROOT / "configs/demo/detr_demo.py"), "--checkpoint": str(tmp_path / "model.pth")}
    paths[missing] = str(tmp_path / "nowhere.file")
    argv = [*sum(paths.items(), ()), "--output", str(tmp_path / "png"), *SMALL]
    assert tool.main(argv) == 2
    assert _error_lines(capsys.readouterr().err) == [f"error: {missing} {paths[missing]!r} does not exist"]
    assert not (tmp_path / "png").exists()


def test_an_image_dir_that_is_not_a_folder_is_refused(tmp_path, capsys):
    _save_model(_config("detr_demo.py"), tmp_path / "model.pth")
    (tmp_path / "a.png").write_bytes(b"")
    assert _run(tmp_path, "detr_demo.py", tmp_path / "model.pth", "--image-dir", str(tmp_path / "a.png")) == 2
    assert _error_lines(capsys.readouterr().err) == [f"error: --image-dir {str(tmp_path / 'a.png')!r} is not a folder"]


def test_an_unregistered_dataset_name_is_refused_with_the_accepted_forms(tmp_path, capsys):
    _save_model(_config("detr_demo.py"), tmp_path / "model.pth")
    assert _run(tmp_path, "detr_demo.py", tmp_path / "model.pth", "--dataset", "synthetic_shapes_vall") == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: Dataset 'synthetic_shapes_vall' is not registered. Did you mean "
                           "'synthetic_shapes_val'")
    assert "coco:ANNOTATIONS.json:IMAGE_ROOT" in line and "folder:IMAGE_DIR" in line


def test_an_override_of_an_unknown_key_is_one_error_line(tmp_path, capsys):
    _save_model(_config("detr_demo.py"), tmp_path / "model.pth")
    assert _run(tmp_path, "detr_demo.py", tmp_path / "model.pth", "model.num_querys=5") == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "model.num_querys" in line


def test_a_checkpoint_drawn_on_a_coco_dataset_of_other_categories_is_refused(tmp_path, capsys):
    """The shapes detector (8 classes) on a COCO json of 2 categories: the class ids would name the wrong
    categories, so it is refused, naming the checkpoint, both counts and the dataset."""
    from test_own_data_specs import write_tiny_coco

    from detectron2.data import DatasetCatalog, MetadataCatalog

    _save_model(_config("detr_demo.py"), tmp_path / "model.pth")
    write_tiny_coco(tmp_path / "data")
    spec = f"coco:{tmp_path}/data/val.json:{tmp_path}/data/images"
    before = set(DatasetCatalog.list())
    try:
        assert _run(tmp_path, "detr_demo.py", tmp_path / "model.pth", "--dataset", spec) == 2
    finally:
        for name in set(DatasetCatalog.list()) - before:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: the checkpoint {tmp_path / 'model.pth'} has 8 classes, the dataset {spec} has 2")
    assert not (tmp_path / "png").exists()


def test_the_title_says_which_is_the_image_id_and_which_the_file(tmp_path, tiny_synthetic_shapes, tool_log):
    """A title read "2 (000001): ..." without saying which number is which."""
    cfg = _config("detr_demo.py")
    _save_model(cfg, tmp_path / "model.pth")
    assert _run(tmp_path, "detr_demo.py", tmp_path / "model.pth", "--dataset", "synthetic_shapes_val") == 0
    titles = [m for m in tool_log if m.startswith("wrote ")]
    assert titles and all(" (image " in m for m in titles), titles
    from detectron2.data import DatasetCatalog

    for record in DatasetCatalog.get("synthetic_shapes_val"):
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        expected = f"image {record['image_id']}" if str(record["image_id"]) == stem else \
            f"image id {record['image_id']} (file {os.path.basename(record['file_name'])})"
        assert any(f"({expected}: " in m for m in titles), (expected, titles)
