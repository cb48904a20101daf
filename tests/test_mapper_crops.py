"""SiameseViewMapper pieces against hand-cut pixels: ``crop_regions`` (outward rounding, clamping, layout,
interpolation), the base resize's source, evaluation mode without photometric work, and that the mapper
never reads (nor hands on) annotations."""
import types

import cv2
import numpy as np
import pytest
import torch

from siamese_detr.data.siamese_mapper import SiameseViewMapper, crop_regions


def _pattern(h, w):
    """Every pixel distinct: channel c of (y, x) is (7 y + 3 x + 50 c) mod 256."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(7 * yy + 3 * xx + 50 * c) % 256 for c in range(3)], axis=2).astype(np.uint8)


def test_crop_regions_rounds_outwards_and_keeps_the_layout():
    """Box (2.3, 1.2, 5.4, 4.6) rounds outwards to columns 2..5, rows 1..4: a 4 x 4 patch, at size 4 the crop
    is that patch; channels first by default ([n, 3, S, S], row index before column), channels last on request.
    A box below a wide image is clamped to its last row (height, not width), a 1-pixel patch."""
    image = _pattern(10, 40)
    boxes = np.array([[2.3, 1.2, 5.4, 4.6], [3.0, 50.0, 4.0, 60.0]])
    first = crop_regions(image, boxes, 4)
    last = crop_regions(image, boxes, 4, channels_last=True)
    assert first.shape == (2, 3, 4, 4) and last.shape == (2, 4, 4, 3)
    assert np.array_equal(last[0], image[1:5, 2:6])
    assert np.array_equal(first[0], image[1:5, 2:6].transpose(2, 0, 1))
    assert np.array_equal(last[1], np.broadcast_to(image[9, 3], (4, 4, 3)))


def test_crop_regions_area_interpolation_only_when_shrinking_both_sides_by_more_than_2():
    """A 32 x 40 patch to 8 x 8 (both sides > 2 x 8) is area-averaged: 4 x 5 pixels per output pixel, so on a
    patch whose rows alternate 0 / 250 every output pixel is the mean 125, and on one with every fourth row 240
    it is 60. A 12 x 40 patch (12 < 16) is
    resized bilinearly: it samples near single rows, far from the mean."""
    image = np.zeros((40, 40, 3), np.uint8)
    image[1::2] = 250
    strong = crop_regions(image, np.array([[0.0, 0.0, 40.0, 32.0]]), 8, channels_last=True)[0]
    assert np.all(strong == 125)
    # with one bright row in 4 the block mean is 60, while a bilinear resize samples between rows 1 and 2 of
    # each block (source y = 4 i + 1.5), both dark: the alternating rows above cannot tell the two apart
    sparse = np.zeros((40, 40, 3), np.uint8)
    sparse[3::4] = 240
    assert np.all(crop_regions(sparse, np.array([[0.0, 0.0, 40.0, 32.0]]), 8, channels_last=True)[0] == 60)
    weak = crop_regions(image, np.array([[0.0, 0.0, 40.0, 12.0]]), 8, channels_last=True)[0]
    ref = cv2.resize(image[:12], (8, 8), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(weak, ref) and np.abs(weak.astype(int) - 125).max() > 60


def test_resize_source_area_when_shrinking_and_the_image_itself_when_enlarging():
    """Shrinking by 3: each output pixel is the mean of a 3 x 3 block (80 on columns 0, 0, 240; a bilinear
    resize would sample the middle column, 0). Enlarging: the views are warped from the image itself."""
    image = np.zeros((60, 90, 3), np.uint8)
    image[:, 2::3] = 240
    shrunk = SiameseViewMapper._resize(image, types.SimpleNamespace(resized_hw=(20, 30)))
    assert shrunk.shape == (20, 30, 3) and np.all(shrunk == 80)
    assert SiameseViewMapper._resize(image, types.SimpleNamespace(resized_hw=(120, 180))) is image


class _NoAnnotations(dict):
    def __getitem__(self, key):
        if key == "annotations":
            raise AssertionError("the mapper read 'annotations'")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key == "annotations":
            raise AssertionError("the mapper read 'annotations'")
        return super().get(key, default)


@pytest.fixture()
def image_file(tmp_path):
    path = str(tmp_path / "im.png")
    cv2.imwrite(path, cv2.resize(_pattern(12, 16), (160, 120), interpolation=cv2.INTER_CUBIC))
    return path


def test_mapper_never_reads_annotations_and_eval_mode_has_no_photometric_work(image_file):
    """A dataset dict whose ``annotations`` raise on access maps fine and none is handed on. With
    ``is_train=False`` the default colour jitter / grayscale / blur (views and crops) are all off: the output
    equals that of a mapper built with them disabled explicitly."""
    d = _NoAnnotations(file_name=image_file, image_id=1, annotations=[{"bbox": [0, 0, 5, 5]}])
    default = SiameseViewMapper(seed=0, is_train=False, crop_size=16)(d)
    assert "annotations" not in default and "instances" not in default
    plain = SiameseViewMapper(seed=0, is_train=False, crop_size=16, color_jitter=None, grayscale_prob=0.0,
                              blur_prob=0.0, crop_augment=False)(d)
    for a, b in zip(default["views"], plain["views"]):
        assert set(a) == set(b)
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(default["views"][0]["image"], default["views"][1]["image"])


def test_query_boxes_are_jittered_region_boxes(image_file):
    """``query_boxes`` are the region boxes moved by the query jitter: equal with ``query_jitter=0``, different
    otherwise, and still of the same regions (centres within the boxes' own size)."""
    d = {"file_name": image_file, "image_id": 1}
    still = SiameseViewMapper(seed=0, is_train=False, crop_size=16, query_jitter=0.0)(d)
    moved = SiameseViewMapper(seed=0, is_train=False, crop_size=16, query_jitter=0.1)(d)
    for view in still["views"]:
        assert torch.allclose(view["query_boxes"], view["region_boxes"])
    for view in moved["views"]:
        q, r = view["query_boxes"], view["region_boxes"]
        assert not torch.allclose(q, r)
        size = (r[:, 2:] - r[:, :2]).repeat(1, 2)
        assert torch.all((q - r).abs() <= size + 1e-3)
