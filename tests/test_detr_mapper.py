"""DetrDatasetMapper: boxes stay on the object's pixels under flip / resize / crop; unreadable images."""
import logging

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.data.common import MapDataset
from detectron2.data.datasets import load_coco_json
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.structures import BoxMode

from siamese_detr.data.datasets import generate_synthetic_shapes
from siamese_detr.data.detr_mapper import (
    DetrDatasetMapper,
    detr_crop_augmentation,
    detr_test_augmentation,
    detr_train_augmentation,
    num_unreadable_images,
)

H, W = 60, 80
RED_BOX_XYWH = [10, 20, 20, 16]  # columns 10..29, rows 20..35


@pytest.fixture
def sample(tmp_path):
    """A 60x80 noisy grey PNG with one pure-red rectangle (BGR 0,0,255) annotated in XYWH_ABS."""
    rng = np.random.default_rng(0)
    image = rng.integers(60, 190, size=(H, W, 3), dtype=np.uint8)
    x, y, w, h = RED_BOX_XYWH
    image[y:y + h, x:x + w] = (0, 0, 255)
    path = str(tmp_path / "red.png")
    cv2.imwrite(path, image)
    return {
        "file_name": path, "height": H, "width": W, "image_id": 3,
        "annotations": [
            {"bbox": list(RED_BOX_XYWH), "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2, "iscrowd": 0},
            {"bbox": [0, 0, 5, 5], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 1},
        ],
    }


def red_extent(image_chw, channel=2):
    """xyxy (exclusive max) of the pixels that are clearly red in a uint8 [3,H,W] image."""
    image = image_chw.numpy().astype(int)
    others = [c for c in range(3) if c != channel]
    red = (image[channel] > 200) & (image[others[0]] < 50) & (image[others[1]] < 50)
    rows, cols = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    if len(rows) == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=float)


def test_flip_moves_the_box_with_the_pixels(sample):
    out = DetrDatasetMapper(True, [T.RandomFlip(prob=1.0, horizontal=True)])(sample)
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, H, W)
    boxes = out["instances"].gt_boxes.tensor.numpy()
    np.testing.assert_allclose(boxes, [[W - 30, 20, W - 10, 36]])  # hand-computed mirror of 10..30
    assert np.array_equal(red_extent(out["image"]), boxes[0])
    assert out["instances"].gt_classes.tolist() == [2]  # the crowd box is dropped
    assert "annotations" not in out


def test_resize_scales_box_and_image(sample):
    out = DetrDatasetMapper(True, [T.ResizeShortestEdge(120, max_size=1000)])(sample)
    assert tuple(out["image"].shape) == (3, 120, 160)
    boxes = out["instances"].gt_boxes.tensor.numpy()
    np.testing.assert_allclose(boxes, [[20, 40, 60, 72]])  # x2
    extent = red_extent(out["image"])
    assert np.abs(extent - boxes[0]).max() <= 1.0  # bilinear edges


def test_rgb_format_and_inference_mode(sample):
    out = DetrDatasetMapper(False, [T.ResizeShortestEdge(30, max_size=1000)], image_format="RGB")(sample)
    assert tuple(out["image"].shape) == (3, 30, 40)
    assert "instances" not in out and "annotations" not in out
    train = DetrDatasetMapper(True, [], image_format="RGB")(sample)
    assert np.array_equal(red_extent(train["image"], channel=0), [10, 20, 30, 36])


def test_random_select_uses_both_branches_and_crops_consistently(sample):
    mapper = DetrDatasetMapper(True, [], augmentation_with_crop=[T.RandomCrop("absolute_range", (20, 40))])
    np.random.seed(0)
    plain = cropped = 0
    for _ in range(40):
        out = mapper(sample)
        h, w = out["image"].shape[1:]
        if (h, w) == (H, W):
            plain += 1
            continue
        cropped += 1
        assert 20 <= h <= 40 and 20 <= w <= 40
        boxes = out["instances"].gt_boxes.tensor.numpy()
        extent = red_extent(out["image"])
        if extent is None:
            assert len(boxes) == 0
        else:  # the clipped box is exactly the visible part of the red rectangle
            assert boxes.shape == (1, 4) and np.array_equal(extent, boxes[0])
        assert (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all() and (boxes >= 0).all()
    assert plain >= 8 and cropped >= 8


def test_unreadable_image_is_skipped_and_counted(sample, tmp_path, caplog):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    mapper = DetrDatasetMapper(True, [])
    before = num_unreadable_images()
    with caplog.at_level(logging.WARNING):
        assert mapper(dict(sample, file_name=str(broken))) is None
        assert mapper(dict(sample, file_name=str(tmp_path / "missing.jpg"))) is None
    assert mapper.num_unreadable == 2 and num_unreadable_images() == before + 2
    assert "broken.png" in caplog.text


def _map_dataset_fallback_works():
    # detectron2 v0.6 samples from a set, which Python >= 3.11 rejects (TypeError);
    # tools/install_detectron2.py patches its build, an official build may still have it
    try:
        MapDataset([0, 1], lambda x: None if x == 0 else x)[0]
    except TypeError:
        return False
    return True


@pytest.mark.skipif(not _map_dataset_fallback_works(),
                    reason="this detectron2's MapDataset fallback uses random.sample on a set (Python >= 3.11)")
def test_map_dataset_draws_another_sample(sample, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    dataset = MapDataset([dict(sample, file_name=str(broken)), sample], DetrDatasetMapper(True, []))
    assert dataset[0]["file_name"] == sample["file_name"]


def test_detr_augmentation_values():
    plain = detr_train_augmentation()
    assert isinstance(plain[0], T.RandomFlip)
    assert list(plain[1].short_edge_length) == [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]
    assert plain[1].max_size == 1333 and plain[1].is_range is False
    crop = detr_crop_augmentation()
    assert list(crop[1].short_edge_length) == [400, 500, 600]
    assert crop[2].crop_type == "absolute_range" and tuple(crop[2].crop_size) == (384, 600)
    assert list(crop[3].short_edge_length) == list(plain[1].short_edge_length) and crop[3].max_size == 1333
    test = detr_test_augmentation()
    assert list(test[0].short_edge_length) == [800, 800] and test[0].max_size == 1333


def test_detr_augmentation_on_synthetic_shapes(tmp_path):
    image_root, json_file = generate_synthetic_shapes(str(tmp_path), "val", num_images=2)
    dicts = load_coco_json(json_file, image_root)
    mapper = DetrDatasetMapper(True, detr_train_augmentation(), detr_crop_augmentation())
    np.random.seed(1)
    for d in dicts * 3:
        out = mapper(d)
        h, w = out["image"].shape[1:]
        assert 480 <= min(h, w) <= 800 and max(h, w) <= 1333
        boxes = out["instances"].gt_boxes.tensor
        assert len(boxes) == len(out["instances"].gt_classes)
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all()


def test_both_training_branches_flip_horizontally_with_probability_half():
    """DETR's RandomHorizontalFlip(0.5) opens both branches (a vertical flip would put skies under ground);
    ``flip=False`` leaves it out of both."""
    for augs in (detr_train_augmentation(), detr_crop_augmentation()):
        flip = augs[0]
        assert isinstance(flip, T.RandomFlip)
        assert (flip.prob, flip.horizontal, flip.vertical) == (0.5, True, False)
    assert not any(isinstance(a, T.RandomFlip) for a in detr_train_augmentation(flip=False))
    assert not any(isinstance(a, T.RandomFlip) for a in detr_crop_augmentation(flip=False))


def test_inference_never_uses_the_crop_branch(sample):
    """RandomSelect is a training augmentation: at inference every image gets ``augmentation`` (here none:
    the 60x80 image as is), whatever np.random draws, even when a crop list is given."""
    mapper = DetrDatasetMapper(False, [], augmentation_with_crop=[T.RandomCrop("absolute", (20, 20))])
    np.random.seed(0)
    shapes = {tuple(mapper(sample)["image"].shape) for _ in range(20)}
    assert shapes == {(3, H, W)}


def test_the_original_size_is_recorded_and_checked(sample):
    """``height`` / ``width`` of the output are the image file's (60 x 80), not the resized one's: detectron2
    rescales predictions to them. A dict without them gets them from the decoded image; a dict whose recorded
    size differs from the file's is refused (its boxes would be in another pixel grid)."""
    without_size = {k: v for k, v in sample.items() if k not in ("height", "width")}
    out = DetrDatasetMapper(False, [T.ResizeShortestEdge(30, max_size=1000)])(without_size)
    assert (out["height"], out["width"]) == (H, W) and tuple(out["image"].shape) == (3, 30, 40)
    with pytest.raises(SizeMismatchError):
        DetrDatasetMapper(True, [])(dict(sample, height=W, width=H))  # transposed


def test_masks_and_keypoints_are_removed_not_transformed(sample):
    """DETR reads boxes and classes only: segmentation and keypoints are dropped before the transforms, so
    a degenerate polygon (2 points, which detectron2's polygon masks refuse) cannot stop training."""
    annotated = dict(sample, annotations=[dict(sample["annotations"][0], segmentation=[[10, 20, 29, 35]],
                                               keypoints=[12, 22, 2])])
    out = DetrDatasetMapper(True, [T.RandomFlip(prob=1.0, horizontal=True)])(annotated)
    assert set(out["instances"].get_fields()) == {"gt_boxes", "gt_classes"}
    np.testing.assert_allclose(out["instances"].gt_boxes.tensor.numpy(), [[W - 30, 20, W - 10, 36]])
