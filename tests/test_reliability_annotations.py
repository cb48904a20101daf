"""Issue 11 item 5: annotations are validated at start-up (summary of dropped boxes, strict mode, recorded
image sizes compared with the files, a sample of images that cannot be read)."""
import json
import logging
import math

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import BoxMode

from siamese_detr.data.dataset_checks import AnnotationError, get_checked_dataset_dicts, validate_annotations
from siamese_detr.data.image_io import UnreadableImageError

XYWH, XYXY = BoxMode.XYWH_ABS, BoxMode.XYXY_ABS


def _anno(bbox, mode=XYWH):
    return {"bbox": list(bbox), "bbox_mode": mode, "category_id": 0, "iscrowd": 0}


def _dicts():
    """Image 0 (100x200, h x w): 1 good, 1 zero-width, 1 negative-height (xyxy), 1 NaN, 1 outside, 1 sticking
    out; image 1: only a zero-size box; image 2: no size recorded, one good box."""
    return [
        {"file_name": "a.jpg", "image_id": 0, "height": 100, "width": 200, "annotations": [
            _anno([10, 10, 20, 20]), _anno([5, 5, 0, 10]), _anno([10, 50, 30, 40], XYXY),
            _anno([1, 2, math.nan, 4]), _anno([250, 10, 20, 20]), _anno([190, 90, 30, 30])]},
        {"file_name": "b.jpg", "image_id": 1, "height": 100, "width": 100, "annotations": [_anno([3, 3, 0, 0])]},
        {"file_name": "c.jpg", "image_id": 2, "annotations": [_anno([1, 1, 5, 5])]},
    ]


def test_bad_boxes_are_dropped_with_a_summary(caplog):
    with caplog.at_level(logging.WARNING):
        dicts = validate_annotations(_dicts(), size_checks=0, name="toy")
    first = dicts[0]["annotations"]
    assert [a["bbox"] for a in first] == [[10, 10, 20, 20], [190, 90, 30, 30]]  # good + sticking out (kept)
    assert dicts[1]["annotations"] == [] and len(dicts) == 3  # not filtering empty images
    text = caplog.text
    assert "toy: dropped 5 boxes of 2 images" in text
    assert "1 non-finite coordinates" in text and "3 zero or negative size" in text  # 2 in image 0, 1 in 1
    assert "1 entirely outside the image" in text and "1 sticks out" in text


def test_filter_empty_drops_images_left_without_boxes():
    dicts = validate_annotations(_dicts(), filter_empty=True, size_checks=0)
    assert [d["image_id"] for d in dicts] == [0, 2]


def test_strict_mode_refuses():
    with pytest.raises(AnnotationError, match="refusing \\(strict mode\\).*zero or negative size"):
        validate_annotations(_dicts(), strict=True, size_checks=0)
    good = [{"file_name": "x", "image_id": 0, "height": 10, "width": 10, "annotations": [_anno([1, 1, 2, 2])]}]
    assert validate_annotations(good, strict=True, size_checks=0) == good


def test_recorded_sizes_that_differ_from_the_files_are_an_error(tmp_path):
    dicts = []
    for i in range(4):
        path = str(tmp_path / f"{i}.png")
        cv2.imwrite(path, np.full((40, 60, 3), 100, np.uint8))
        dicts.append({"file_name": path, "image_id": i, "height": 40, "width": 60, "annotations": []})
    validate_annotations(list(dicts), size_checks=4)  # all right
    dicts[2] = dict(dicts[2], height=80, width=120)  # e.g. images re-exported at half size
    with pytest.raises(AnnotationError, match="2.png: annotation 80x120, file 40x60"):
        validate_annotations(list(dicts), size_checks=4)
    dicts[2] = dict(dicts[2], height=60, width=40)  # transposed: e.g. recorded before the EXIF rotation
    with pytest.raises(AnnotationError, match="2.png: annotation 60x40, file 40x60"):
        validate_annotations(list(dicts), size_checks=4)


def _png(path, height=40, width=60):
    cv2.imwrite(str(path), np.full((height, width, 3), 100, np.uint8))
    return str(path)


def test_a_sample_without_any_readable_image_is_an_error_naming_the_paths(tmp_path):
    """Paths that are all wrong made training skip every image and fail deep in detectron2's MapDataset
    ("Sample larger than population"): now refused at start-up, naming the files."""
    dicts = [{"file_name": str(tmp_path / f"missing{i}.png"), "image_id": i, "annotations": []} for i in range(3)]
    with pytest.raises(UnreadableImageError, match=r"toy: none of 3 sampled images can be read: .*missing0\.png"):
        validate_annotations(list(dicts), size_checks=8, name="toy")
    validate_annotations(list(dicts), size_checks=0, name="toy")  # the check can be turned off


def test_some_unreadable_sampled_images_are_a_warning(tmp_path, caplog):
    dicts = [{"file_name": _png(tmp_path / f"{i}.png"), "image_id": i, "annotations": []} for i in range(3)]
    dicts.append({"file_name": str(tmp_path / "gone.png"), "image_id": 3, "annotations": []})
    with caplog.at_level(logging.WARNING):
        assert len(validate_annotations(list(dicts), size_checks=4, name="toy")) == 4
    assert "toy: 1 of 4 sampled images cannot be read (first: " in caplog.text and "gone.png" in caplog.text


def test_a_coco_spec_whose_images_lie_in_another_folder_names_the_image_root_fix(tmp_path):
    """The README's coco:ANN.json without :IMAGES reads the images next to the json; when they lie in a
    subfolder the error says to give it."""
    (tmp_path / "images").mkdir()
    _png(tmp_path / "images" / "0.png")
    coco = {"images": [{"id": 1, "file_name": "0.png", "height": 40, "width": 60}],
            "annotations": [{"id": 1, "image_id": 1, "bbox": [5, 5, 10, 10], "category_id": 1, "iscrowd": 0,
                             "area": 100}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "train.json").write_text(json.dumps(coco))
    spec = f"coco:{tmp_path / 'train.json'}"
    try:
        with pytest.raises(UnreadableImageError, match=r"none of 1 sampled images can be read") as err:
            get_checked_dataset_dicts(spec, filter_empty=False)
        assert str(tmp_path / "0.png") in str(err.value) and "coco:ANN.json:IMAGES" in str(err.value)
        dicts = get_checked_dataset_dicts(f"{spec}:{tmp_path / 'images'}", filter_empty=False)
        assert [d["file_name"] for d in dicts] == [str(tmp_path / "images" / "0.png")]
    finally:
        for name in (spec, f"{spec}:{tmp_path / 'images'}"):
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)


def test_checked_dataset_dicts_validate_a_registered_coco_json_at_start_up(tmp_path, caplog):
    root = tmp_path / "images"
    root.mkdir()
    cv2.imwrite(str(root / "0.png"), np.full((40, 60, 3), 100, np.uint8))
    coco = {
        "images": [{"id": 1, "file_name": "0.png", "height": 40, "width": 60}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [5, 5, 10, 10], "category_id": 1, "iscrowd": 0, "area": 100},
            {"id": 2, "image_id": 1, "bbox": [70, 5, 10, 10], "category_id": 1, "iscrowd": 0, "area": 100},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    name = "reliability_toy_coco"
    register_coco_instances(name, {}, str(tmp_path / "ann.json"), str(root))
    try:
        with caplog.at_level(logging.WARNING):
            dicts = get_checked_dataset_dicts(name, filter_empty=False)
        assert [a["bbox"] for a in dicts[0]["annotations"]] == [[5, 5, 10, 10]]
        assert "dropped 1 boxes" in caplog.text and "entirely outside the image" in caplog.text
        with pytest.raises(AnnotationError):
            get_checked_dataset_dicts(name, filter_empty=False, strict=True)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_a_detection_set_without_any_box_is_refused_when_boxes_are_required(tmp_path):
    """An image-list json (no 'annotations', as COCO's image_info files) or one whose boxes are all dropped
    trains a detector on "no object" only: refused with require_boxes, accepted for pretraining."""
    root = tmp_path / "images"
    root.mkdir()
    for i in range(2):
        cv2.imwrite(str(root / f"{i}.png"), np.full((40, 60, 3), 100, np.uint8))
    images = [{"id": i + 1, "file_name": f"{i}.png", "height": 40, "width": 60} for i in range(2)]
    cats = [{"id": 1, "name": "thing"}]
    image_list = {"images": images, "categories": cats}
    outside = {"images": images, "categories": cats, "annotations": [  # every box outside its image: dropped
        {"id": 1, "image_id": 1, "bbox": [70, 5, 10, 10], "category_id": 1, "iscrowd": 0, "area": 100}]}
    labelled = {"images": images, "categories": cats, "annotations": [
        {"id": 1, "image_id": 2, "bbox": [5, 5, 10, 10], "category_id": 1, "iscrowd": 0, "area": 100}]}
    names = []
    try:
        for key, coco in (("list", image_list), ("outside", outside), ("labelled", labelled)):
            (tmp_path / f"{key}.json").write_text(json.dumps(coco))
            names.append(f"reliability_no_boxes_{key}")
            register_coco_instances(names[-1], {}, str(tmp_path / f"{key}.json"), str(root))
        for name in names[:2]:
            with pytest.raises(AnnotationError, match="none of its 2 images has a box") as err:
                get_checked_dataset_dicts(name, filter_empty=False, require_boxes=True)
            assert name in str(err.value) and "pretraining" in str(err.value)
            # pretraining reads no labels: the same image list is accepted without require_boxes
            assert len(get_checked_dataset_dicts(name, filter_empty=False)) == 2
        # one box in one image is enough
        assert len(get_checked_dataset_dicts(names[2], filter_empty=False, require_boxes=True)) == 2
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


@pytest.mark.parametrize("config, required", [
    ("configs/demo/detr_demo.py", True),  # detection: train and test sets need boxes
    ("configs/detr/deformable_detr_r50_voc_50ep.py", True),
    ("configs/siamese_detr/siamese_detr_r50_coco_60ep.py", False),  # pretraining reads no labels
])
def test_detection_configs_require_boxes_and_pretraining_configs_do_not(config, required):
    import os

    from detectron2.config import LazyConfig

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = LazyConfig.load(os.path.join(root, config))
    assert bool(cfg.dataloader.train.dataset.get("require_boxes", False)) is required
    assert cfg.dataloader.test.dataset.require_boxes is True  # every test set is scored against boxes


# image 50 x 100 (h x w), boxes XYWH_ABS; the tolerance before a box "sticks out" is 1 px on every side
@pytest.mark.parametrize("bbox, problem", [
    ([0, 0, 100, 50], None),  # exactly the image (x2 = width 100, y2 = height 50)
    ([-1, -1, 102, 52], None),  # 1 px out on every side: within the tolerance
    ([95, 45, 6, 5.5], None),  # x2 = 101, y2 = 50.5
    ([-1.5, 10, 20, 20], "sticks out"),  # x1 = -1.5
    ([90, 10, 11.5, 20], "sticks out"),  # x2 = 101.5
    ([10, 40, 20, 11.5], "sticks out"),  # y2 = 51.5 (a y compared with the width would pass)
    ([100, 10, 5, 5], "entirely outside the image"),  # x1 = width: touches the right edge, no pixel inside
    ([10, 50, 5, 5], "entirely outside the image"),  # y1 = height
    ([-5, 10, 5, 5], "entirely outside the image"),  # x2 = 0
    ([10, -5, 5, 5], "entirely outside the image"),  # y2 = 0
    ([60, 10, 30, 20], None),  # as XYXY this would be inverted; as XYWH (x 60..90) it is fine
])
def test_box_limits_against_a_non_square_image_by_hand(bbox, problem, caplog):
    """Which boxes are kept, kept and counted as sticking out, or dropped, checked at the exact limits on a
    50 x 100 image (so that x and y limits differ)."""
    dicts = [{"file_name": "a.jpg", "image_id": 0, "height": 50, "width": 100,
              "annotations": [_anno(bbox)]}]
    with caplog.at_level(logging.WARNING):
        kept = validate_annotations(dicts, size_checks=0, name="limits")[0]["annotations"]
    if problem is None:
        assert kept == [_anno(bbox)] and "limits:" not in caplog.text
        validate_annotations(dicts, strict=True, size_checks=0)  # strict mode accepts it too
    else:
        assert f"1 {problem} (first: a.jpg bbox {bbox})" in caplog.text
        assert kept == ([_anno(bbox)] if problem == "sticks out" else [])


def test_a_box_without_bbox_mode_is_read_as_xywh(caplog):
    """detectron2's dataset dicts default to XYWH_ABS (COCO's [x, y, w, h]): [60, 10, 30, 20] without a
    ``bbox_mode`` is x 60..90, y 10..30, kept; read as XYXY it would be inverted and dropped."""
    anno = {"bbox": [60, 10, 30, 20], "category_id": 0}
    dicts = [{"file_name": "a.jpg", "image_id": 0, "height": 50, "width": 100, "annotations": [anno]}]
    with caplog.at_level(logging.WARNING):
        assert validate_annotations(dicts, strict=True, size_checks=0)[0]["annotations"] == [anno]
    assert caplog.text == ""


def test_filter_empty_removes_images_emptied_by_the_check_not_images_without_boxes():
    """``filter_empty`` drops the images whose every box was dropped here; an image that had no box to begin
    with (a negative image the loader kept) stays."""
    dicts = [{"file_name": "neg.jpg", "image_id": 0, "height": 50, "width": 100, "annotations": []},
             {"file_name": "bad.jpg", "image_id": 1, "height": 50, "width": 100, "annotations": [_anno([3, 3, 0, 5])]},
             {"file_name": "ok.jpg", "image_id": 2, "height": 50, "width": 100, "annotations": [_anno([3, 3, 5, 5])]}]
    assert [d["image_id"] for d in validate_annotations(dicts, filter_empty=True, size_checks=0)] == [0, 2]


def test_checked_dataset_dicts_remove_images_left_without_boxes_by_default(tmp_path):
    """get_checked_dataset_dicts filters empty images as detectron2's loader does (filter_empty=True by
    default), also those whose only box the check dropped: image 2's box lies right of its 60 px width."""
    coco = {
        "images": [{"id": 1, "file_name": "0.png", "height": 40, "width": 60},
                   {"id": 2, "file_name": "1.png", "height": 40, "width": 60}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [5, 5, 10, 10], "category_id": 1, "iscrowd": 0, "area": 100},
            {"id": 2, "image_id": 2, "bbox": [70, 5, 10, 10], "category_id": 1, "iscrowd": 0, "area": 100},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    name = "reliability_toy_coco_filter_empty"
    register_coco_instances(name, {}, str(tmp_path / "ann.json"), str(tmp_path))
    try:
        assert [d["image_id"] for d in get_checked_dataset_dicts(name, size_checks=0)] == [1]
        assert [d["image_id"] for d in get_checked_dataset_dicts(name, size_checks=0, filter_empty=False)] == [1, 2]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
