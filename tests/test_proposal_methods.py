"""Proposal methods (EdgeBoxes, Selective Search, random) and the mapper's proposal sources."""

import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from siamese_detr.data.proposals import (
    AnnotationProposals,
    OnlineProposals,
    RandomProposals,
    compute_proposals,
    gradient_edge_map,
    random_boxes,
    selective_search,
    stable_seed,
)
from siamese_detr.data.proposals import methods as proposal_methods

RECT = (40, 30, 121, 101)  # x1, y1, x2, y2 (exclusive) of the drawn rectangle


def _iou_one_to_many(box, boxes):
    """Plain-numpy IoU of one xyxy box with many (independent of torchvision)."""
    ix = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = ix * iy
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + (box[2] - box[0]) * (box[3] - box[1]) - inter)


@pytest.fixture(scope="module")
def rect_image():
    rng = np.random.default_rng(0)
    img = rng.integers(90, 130, (140, 170, 3)).astype(np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 2)
    cv2.rectangle(img, RECT[:2], (RECT[2] - 1, RECT[3] - 1), (250, 250, 250), -1)
    return img


def _check_boxes(boxes, scores, h, w):
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) == len(scores) > 0
    assert np.isfinite(boxes).all() and np.isfinite(scores).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert (np.diff(scores) <= 0).all(), "scores must be in non-increasing (score) order"


@pytest.mark.parametrize("method", ["edgeboxes", "selective_search", "random"])
def test_methods_boxes_inside_image_in_score_order(rect_image, method):
    h, w = rect_image.shape[:2]
    boxes, scores = compute_proposals(rect_image, method, max_boxes=50, image_id="a.jpg")
    _check_boxes(boxes, scores, h, w)
    assert len(boxes) <= 50


def test_edgeboxes_finds_high_contrast_rectangle(rect_image):
    boxes, _ = compute_proposals(rect_image, "edgeboxes", max_boxes=100)
    assert _iou_one_to_many(np.array(RECT, float), boxes.astype(float)).max() >= 0.7


PORTRAIT_RECT = (25, 80, 86, 151)  # x1, y1, x2, y2 (exclusive) in the 170 x 110 portrait image: y2 > its width


@pytest.fixture(scope="module")
def portrait_image():
    """Taller than wide, the rectangle reaching below y = width (a clip of y to the width would cut it)."""
    rng = np.random.default_rng(0)
    img = rng.integers(90, 130, (170, 110, 3)).astype(np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 2)
    r = PORTRAIT_RECT
    cv2.rectangle(img, r[:2], (r[2] - 1, r[3] - 1), (250, 250, 250), -1)
    return img


@pytest.mark.parametrize("method", ["edgeboxes", "selective_search"])
def test_methods_find_the_rectangle_on_a_portrait_image(portrait_image, method):
    h, w = portrait_image.shape[:2]
    assert (h, w) == (170, 110)
    boxes, scores = compute_proposals(portrait_image, method, max_boxes=100)
    _check_boxes(boxes, scores, h, w)
    assert _iou_one_to_many(np.array(PORTRAIT_RECT, float), boxes.astype(float)).max() >= 0.7
    assert boxes[:, 3].max() > w  # boxes go below y = width (y is clipped to the height, not the width)


def test_xywh_to_xyxy_clipped_by_hand_on_a_portrait_size():
    """xywh -> xyxy is x2 = x + w, y2 = y + h (not pixel-inclusive); x is clipped to [0, width] and y to
    [0, height], here on an image taller (100) than wide (60)."""
    convert = proposal_methods._xywh_to_xyxy_clipped
    got = convert([[0, 50, 10, 40]], height=100, width=60)
    assert got.dtype == np.float32 and got.tolist() == [[0, 50, 10, 90]]
    got = convert(np.array([[-5, -3, 100, 200], [50, 90, 30, 5], [10, 20, 30, 40]]), height=100, width=60)
    assert got.tolist() == [[0, 0, 60, 100], [50, 90, 60, 95], [10, 20, 40, 60]]
    # and landscape: y stops at the height (40), x at the width (70)
    assert convert([[60, 30, 20, 20]], height=40, width=70).tolist() == [[60, 30, 70, 40]]


def _record_searched_images(monkeypatch):
    """Spy on the images Selective Search is given (``setBaseImage``); returns the list they are added to."""
    searched = []
    real = proposal_methods.cv2.ximgproc.segmentation.createSelectiveSearchSegmentation

    class Recording:
        def __init__(self):
            self.inner = real()

        def setBaseImage(self, image):
            searched.append(image.copy())
            self.inner.setBaseImage(image)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(proposal_methods.cv2.ximgproc.segmentation, "createSelectiveSearchSegmentation", Recording)
    return searched


@pytest.mark.parametrize(
    "image_name, resize, searched_hw",
    [
        ("portrait_image", 64, (99, 64)),  # 170 x 110: short side 110 -> 64, long 170 * 64 / 110 = 98.9 -> 99
        ("rect_image", 70, (70, 85)),  # 140 x 170: short side 140 -> 70, long 170 / 2 = 85
        ("portrait_image", 220, (340, 220)),  # upscale x2
    ],
)
def test_selective_search_resize_keeps_the_aspect_ratio(request, monkeypatch, image_name, resize, searched_hw):
    """``resize`` sets the short side and keeps the aspect ratio: the image handed to OpenCV is H' x W' with
    the input's orientation (not transposed), and the boxes come back in input pixels."""
    image = request.getfixturevalue(image_name)
    h, w = image.shape[:2]
    searched = _record_searched_images(monkeypatch)
    boxes, scores = selective_search(image, resize=resize)
    assert len(searched) == 1 and searched[0].shape == searched_hw + (3,)
    sh, sw = searched_hw
    assert abs(sh / sw - h / w) < 0.01
    _check_boxes(boxes, scores, h, w)
    rect = PORTRAIT_RECT if image_name == "portrait_image" else RECT
    assert _iou_one_to_many(np.array(rect, float), boxes.astype(float)).max() >= 0.7


def test_selective_search_max_boxes_keeps_the_first_boxes(portrait_image):
    """``max_boxes`` keeps the first K boxes of OpenCV's order (the best ranked), with scores (K - i) / K."""
    full, _ = selective_search(portrait_image)
    assert len(full) > 10
    top, scores = selective_search(portrait_image, max_boxes=5)
    assert np.array_equal(top, full[:5])
    assert np.allclose(scores, [1.0, 0.8, 0.6, 0.4, 0.2])
    top, _ = selective_search(portrait_image, max_boxes=5, resize=64)
    assert np.array_equal(top, selective_search(portrait_image, resize=64)[0][:5])


def test_selective_search_resize_scales_boxes_back(rect_image):
    h, w = rect_image.shape[:2]
    full, _ = selective_search(rect_image)
    small, scores = selective_search(rect_image, resize=70)  # runs on a 70 x 85 copy
    _check_boxes(small, scores, h, w)
    # boxes are in original pixels: the rectangle is still found, and boxes span the full image range
    assert _iou_one_to_many(np.array(RECT, float), small.astype(float)).max() >= 0.7
    assert small[:, 2].max() > 0.9 * w and small[:, 3].max() > 0.9 * h
    # scores are the descending rank (K - i) / K
    k = len(scores)
    assert np.allclose(scores, (k - np.arange(k)) / k)
    assert _iou_one_to_many(np.array(RECT, float), full.astype(float)).max() >= 0.7


def test_selective_search_square_resize_is_the_official_squash(rect_image, monkeypatch):
    """``square=True``: the search runs on a ``resize x resize`` copy made as the official DETReg
    ``cv2.resize(img, (128, 128))`` (bilinear), and box x / y are scaled back by w / resize and h / resize."""
    h, w = rect_image.shape[:2]
    real = proposal_methods.cv2.ximgproc.segmentation.createSelectiveSearchSegmentation
    searched = _record_searched_images(monkeypatch)
    boxes, scores = selective_search(rect_image, resize=64, square=True)
    assert len(searched) == 1 and np.array_equal(searched[0], cv2.resize(rect_image, (64, 64)))
    _check_boxes(boxes, scores, h, w)
    # the boxes on the 64 x 64 copy, xywh -> xyxy, then x * w / 64, y * h / 64, equal ours
    search = real()
    search.setBaseImage(searched[0])
    search.switchToSelectiveSearchFast()
    proposal_methods.seed_c_rand(proposal_methods.image_seed(searched[0], 0))
    raw = np.asarray(search.process(), dtype=np.float64)
    expected = np.stack([raw[:, 0] * w / 64, raw[:, 1] * h / 64, (raw[:, 0] + raw[:, 2]) * w / 64,
                         (raw[:, 1] + raw[:, 3]) * h / 64], axis=1)
    expected[:, 0::2] = expected[:, 0::2].clip(0, w)
    expected[:, 1::2] = expected[:, 1::2].clip(0, h)
    assert len(boxes) == len(expected)
    assert np.allclose(boxes, expected, atol=1e-3)


def _scene(seed):
    from siamese_detr.data.datasets.shapes_render import render_scene

    image, _ = render_scene(np.random.default_rng(seed), 96, 128)
    return np.ascontiguousarray(image)


def test_selective_search_ranking_is_a_function_of_the_image():
    """OpenCV ranks Selective Search boxes with the C library's rand(); unseeded, an image's top-K changed
    with the images the process had searched before it (60 of 64 dev images at resize 128)."""
    a, b = _scene(1), _scene(2)
    first, _ = selective_search(a, resize=64)
    selective_search(b, resize=64)
    selective_search(b, resize=64)
    again, _ = selective_search(a, resize=64)
    assert np.array_equal(first, again)
    # another seed: the same boxes in another order
    reseeded, _ = selective_search(a, resize=64, seed=1)
    assert not np.array_equal(first, reseeded)
    assert sorted(map(tuple, first.tolist())) == sorted(map(tuple, reseeded.tolist()))
    assert np.array_equal(compute_proposals(a, "selective_search", resize=64, seed=1)[0], reseeded)


def test_selective_search_quality_mode_adds_strategies_to_the_fast_ones():
    """``--ss-mode quality`` runs OpenCV's quality set-up, whose colour spaces, segmentation scales and merge
    strategies include every one of the fast set-up: its boxes are a superset of the fast mode's (in another
    order), with more of them; any other mode is refused, naming the two."""
    for seed in (1, 2):
        image = _scene(seed)
        fast, _ = selective_search(image, resize=64, mode="fast")
        quality, scores = selective_search(image, resize=64, mode="quality")
        assert set(map(tuple, fast.tolist())) < set(map(tuple, quality.tolist()))
        assert np.all(np.diff(scores) < 0)  # still ranked
    with pytest.raises(ValueError, match="'fast' or 'quality', got 'slow'"):
        selective_search(_scene(1), resize=64, mode="slow")


def test_random_boxes_seeded_per_image_and_sizes():
    b1, _ = compute_proposals(np.zeros((60, 80, 3), np.uint8), "random", 64, seed=3, image_id="x/1.jpg")
    b2, _ = compute_proposals(np.zeros((60, 80, 3), np.uint8), "random", 64, seed=3, image_id="x/1.jpg")
    b3, _ = compute_proposals(np.zeros((60, 80, 3), np.uint8), "random", 64, seed=3, image_id="x/2.jpg")
    b4, _ = compute_proposals(np.zeros((60, 80, 3), np.uint8), "random", 64, seed=4, image_id="x/1.jpg")
    assert np.array_equal(b1, b2)
    assert not np.array_equal(b1, b3) and not np.array_equal(b1, b4)
    boxes, _ = random_boxes(60, 80, 2000, seed=1, min_size=8)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert bw.min() >= 8 and bh.min() >= 8 and bw.max() == 80 and bh.max() == 60
    # UP-DETR-like: width uniform over [8, W] -> mean close to (8 + 80) / 2
    assert abs(bw.mean() - 44) < 3
    assert np.array_equal(boxes, np.round(boxes))  # integer pixel boxes


def test_stable_seed_is_the_same_in_another_process():
    code = "from siamese_detr.data.proposals import stable_seed; print(stable_seed('n01440764/img.JPEG', 7))"
    env = dict(os.environ, PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) == stable_seed("n01440764/img.JPEG", 7)
    assert stable_seed(5, 0) == stable_seed("5", 0) != stable_seed("5", 1)


def test_gradient_edge_map_range_and_orientation():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, 20:] = 255  # vertical step edge: gradient along x -> orientation 0 (mod pi)
    edges, orientation = gradient_edge_map(img, sigma=1.0, nms=True)
    assert edges.dtype == np.float32 and edges.min() >= 0 and edges.max() == pytest.approx(1.0)
    assert (orientation >= 0).all() and (orientation < np.pi).all()
    rows = edges[5:35]
    assert set(np.argmax(rows, axis=1).tolist()) <= {19, 20}  # thinned to the step
    o = orientation[5:35, 19:21]
    assert np.minimum(o, np.pi - o).max() < 1e-3
    assert (edges[:, :15] == 0).all()  # flat regions have no edges


@pytest.mark.parametrize("degrees", [0, 45, 90, 135])
def test_gradient_edge_map_thins_steps_in_all_four_directions(degrees):
    """A straight step whose normal points at 0, 45, 90 or 135 degrees (x right, y down; bright where the
    coordinate along the normal is >= 20): the orientation at the edge is that angle, and the NMS along it
    keeps only the two pixel lines straddling the step (coordinate 19 and 20), at least one pixel of them on
    every line across the edge, where the un-thinned ramp is ~10 lines wide. Each case uses one of the four
    neighbour offsets of ``_edge_nms``: a wrong one compares pixels along the edge (equal) and keeps the ramp."""
    yy, xx = np.mgrid[:40, :40]
    across = {0: xx, 45: xx + yy - 20, 90: yy, 135: yy - xx + 20}[degrees]  # coordinate along the normal
    along = {0: yy, 45: xx - yy, 90: xx, 135: xx + yy}[degrees]  # labels the lines across the edge
    img = np.zeros((40, 40, 3), np.uint8)
    img[across >= 20] = 255
    edges, orientation = gradient_edge_map(img, sigma=1.0, nms=True)
    ramp, _ = gradient_edge_map(img, sigma=1.0, nms=False)
    window = (slice(8, 32), slice(8, 32))  # away from the image borders
    kept = edges[window] > 0
    band = np.isin(across[window], (19, 20))
    assert kept.any() and not (kept & ~band).any()  # thin: nothing kept off the two central lines
    for line in np.unique(along[window][band]):  # every line across the edge keeps a pixel
        assert kept[band & (along[window] == line)].any()
    assert np.ptp(across[window][ramp[window] > 0]) >= 8  # without NMS the ramp is wide
    o = orientation[window][kept]
    assert np.abs(np.angle(np.exp(2j * (o - np.deg2rad(degrees))))).max() < 2e-3  # equal mod pi


def _brute_force_edge_nms(magnitude, orientation):
    """The documented rule as a plain double loop: quantise the gradient direction to the nearest multiple
    of 45 deg (180 deg is 0 deg), take the neighbour one step along it (``(round(cos), round(sin))`` with y
    down) and the one behind; keep the pixel's magnitude when it is >= both (ties kept), else 0. A neighbour
    outside the image does not suppress (magnitudes are >= 0, so it counts as 0)."""
    h, w = magnitude.shape
    out = np.zeros((h, w), np.float32)
    for y in range(h):
        for x in range(w):
            q = math.floor(float(orientation[y, x]) / (math.pi / 4) + 0.5) * (math.pi / 4)
            dx, dy = round(math.cos(q)), round(math.sin(q))
            keep = True
            for ny, nx in ((y + dy, x + dx), (y - dy, x - dx)):
                if 0 <= ny < h and 0 <= nx < w and magnitude[ny, nx] > magnitude[y, x]:
                    keep = False
            if keep:
                out[y, x] = magnitude[y, x]
    return out


def test_edge_nms_equals_brute_force():
    """``_edge_nms`` equals the brute-force rule exactly on small random maps: magnitudes on 4 levels
    (many ties) or continuous, orientations anywhere in [0, pi) plus the exact directions and values just
    either side of the 22.5 deg quantisation boundaries and of pi (which is direction 0)."""
    specials = np.array([0, np.pi / 4, np.pi / 2, 3 * np.pi / 4, np.pi - 1e-3, np.pi / 8 - 1e-3,
                         np.pi / 8 + 1e-3, 5 * np.pi / 8 - 1e-3, 7 * np.pi / 8 + 1e-3], dtype=np.float32)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        h, w = (7, 9) if seed % 2 else (9, 6)
        if seed < 4:
            magnitude = (rng.integers(0, 4, size=(h, w)) / 3).astype(np.float32)
        else:
            magnitude = rng.random((h, w), dtype=np.float32)
        orientation = rng.uniform(0, np.pi, size=(h, w)).astype(np.float32)
        orientation.flat[rng.choice(h * w, size=len(specials), replace=False)] = specials
        got = proposal_methods._edge_nms(magnitude, orientation)
        expected = _brute_force_edge_nms(magnitude, orientation)
        assert got.dtype == np.float32 and got.shape == (h, w)
        assert np.array_equal(got, expected)
        assert 0 < (got > 0).sum() < (magnitude > 0).sum()  # some suppressed, some kept


_EDGE_DIGEST = """
import hashlib, sys
import numpy as np
import torch  # noqa: F401  (a training worker has torch loaded; it changes where numpy buffers land)
from siamese_detr.data.datasets.shapes_render import render_scene
from siamese_detr.data.proposals import gradient_edge_map
digest = hashlib.md5()
for seed in range(12):
    image, _ = render_scene(np.random.default_rng(seed), 120, 150 + seed)
    edges, orientation = gradient_edge_map(np.ascontiguousarray(image), sigma=2.0)
    digest.update(edges.tobytes() + orientation.tobytes())
print(digest.hexdigest())
"""


def test_gradient_edge_map_is_bit_identical_in_every_process():
    """cv2.magnitude gave a different edge map for the same image in most fresh processes (so the demo's
    online proposals, and its pretraining, differed between two identical runs); the map must not depend
    on the process."""
    digests = {
        subprocess.run([sys.executable, "-c", _EDGE_DIGEST], capture_output=True, text=True, check=True,
                       env=dict(os.environ, PYTHONWARNINGS="ignore")).stdout.strip()
        for _ in range(4)
    }
    assert len(digests) == 1


def test_gradient_edge_map_magnitude_against_float64():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    edges, _ = gradient_edge_map(img, sigma=0.0, nms=False)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    gx = cv2.Scharr(gray, cv2.CV_32F, 1, 0).astype(np.float64)
    gy = cv2.Scharr(gray, cv2.CV_32F, 0, 1).astype(np.float64)
    reference = np.sqrt(gx ** 2 + gy ** 2)
    np.testing.assert_allclose(edges, reference / reference.max(), rtol=1e-6, atol=1e-7)


def test_sed_model_missing_or_corrupt(tmp_path, rect_image):
    with pytest.raises(FileNotFoundError, match="does-not-exist.yml.gz"):
        compute_proposals(rect_image, "edgeboxes", sed_model=str(tmp_path / "does-not-exist.yml.gz"))
    bad = tmp_path / "model.yml.gz"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="could not be read"):
        compute_proposals(rect_image, "edgeboxes", sed_model=str(bad))


def test_unknown_method_and_bad_image():
    with pytest.raises(ValueError, match="Unknown proposal method"):
        compute_proposals(np.zeros((8, 8, 3), np.uint8), "sliding_window")
    with pytest.raises(ValueError, match="HxWx3"):
        compute_proposals(np.zeros((8, 8), np.uint8), "edgeboxes")


def test_sources(rect_image):
    d = {"image_id": 17, "height": rect_image.shape[0], "width": rect_image.shape[1]}
    rnd = RandomProposals(num_boxes=20, seed=1)
    a, _ = rnd(d, rect_image)
    b, _ = rnd(d)  # size from the dict when no image is given
    assert np.array_equal(a, b) and a.shape == (20, 4)
    online_bgr = OnlineProposals("edgeboxes", max_boxes=30)
    online_rgb = OnlineProposals("edgeboxes", max_boxes=30, image_format="RGB")
    bb, sb = online_bgr(d, rect_image)
    br, sr = online_rgb(d, np.ascontiguousarray(rect_image[:, :, ::-1]))
    assert np.array_equal(bb, br) and np.array_equal(sb, sr)
    with pytest.raises(ValueError):
        OnlineProposals("random")


def test_annotation_proposals_are_the_non_crowd_boxes_as_xyxy():
    from detectron2.structures import BoxMode

    d = {"image_id": 3, "annotations": [
        {"bbox": [10, 20, 30, 40], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2},
        {"bbox": [1, 2, 3, 4], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 1},
        {"bbox": [5.5, 6.0, 7.5, 9.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1, "iscrowd": 0},
    ]}
    boxes, scores = AnnotationProposals()(d, np.zeros((80, 80, 3), np.uint8))
    assert boxes.dtype == np.float32 and boxes.tolist() == [[10, 20, 40, 60], [5.5, 6.0, 7.5, 9.0]]
    assert scores.tolist() == [1.0, 1.0]
    boxes, scores = AnnotationProposals()({"image_id": 4, "annotations": []})
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    with pytest.raises(KeyError, match="image_id 5.*'annotations'.*unlabelled_dicts"):
        AnnotationProposals()({"image_id": 5, "file_name": "x.png"})


def test_oracle_regions_config_pretrains_on_annotated_boxes(tiny_synthetic_shapes):
    """The diagnostic config feeds the mapper the annotated boxes of labelled dicts: every image's proposals
    are its objects' boxes, and the mapper turns them into two views with regions."""
    from pathlib import Path

    from detectron2.config import LazyConfig, instantiate
    from detectron2.data import DatasetCatalog
    from detectron2.structures import BoxMode

    config = Path(__file__).resolve().parents[1] / "configs" / "demo" / "demo_siamese_pretrain_oracle_regions.py"
    cfg = LazyConfig.load(str(config))
    cfg.dataloader.train.dataset.names = "synthetic_shapes_train"
    dicts = instantiate(cfg.dataloader.train.dataset)
    mapper = instantiate(cfg.dataloader.train.mapper)
    assert len(dicts) == len(DatasetCatalog.get("synthetic_shapes_train")) == 6
    for d in dicts:
        expected = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
        boxes, _ = mapper.proposal_source(d, None)
        np.testing.assert_allclose(boxes, np.asarray(expected, np.float32).reshape(-1, 4))
    assert any(mapper(d) is not None for d in dicts)


def test_fallback_box_is_the_official_stored_box():
    """``BoxGenerator.edgebox`` writes [w//4, h//4, w//4*3, h//4*3] and then converts xywh -> xyxy."""
    from siamese_detr.data.proposals.methods import fallback_box

    assert fallback_box(100, 203).tolist() == [[50, 25, 200, 100]]
    assert fallback_box(7, 9).tolist() == [[2, 1, 8, 4]]


def test_edgeboxes_on_a_flat_image_falls_back_to_one_box():
    from siamese_detr.data.proposals.methods import edgeboxes

    flat = np.full((60, 90, 3), 128, np.uint8)
    boxes, scores = edgeboxes(flat)
    assert boxes.tolist() == [[22, 15, 88, 60]] and scores.tolist() == [0.0]
    boxes, scores = edgeboxes(flat, fallback=False)
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_edgeboxes_retries_on_the_sharpened_image(monkeypatch, rect_image):
    """First pass empty -> second pass on the sharpened x factor image, boxes divided by the factor."""
    import siamese_detr.data.proposals.methods as PM

    calls = []

    def fake_run(image, *args):
        calls.append(image.shape)
        if len(calls) == 1:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        return np.array([[80, 60, 320, 240]], np.float32), np.array([0.5], np.float32)

    monkeypatch.setattr(PM, "_run_edgeboxes", fake_run)
    boxes, scores = PM.edgeboxes(rect_image)
    factor = int(np.ceil(1000 / 140))  # 8
    assert calls == [(140, 170, 3), (140 * factor, 170 * factor, 3)]
    assert np.allclose(boxes, [[10, 7.5, 50, 37.5]]) and scores.tolist() == [0.5]


def test_sharpen_matches_a_hand_convolution():
    from siamese_detr.data.proposals.methods import sharpen_for_edgeboxes

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1000, 1003, 3)).astype(np.uint8)  # min side 1000 -> factor 1, no resize
    out, factor = sharpen_for_edgeboxes(img)
    assert factor == 1 and out.shape == img.shape
    p = np.pad(img.astype(np.int64), ((1, 1), (1, 1), (0, 0)), mode="reflect")  # OpenCV's BORDER_REFLECT_101
    sharp = 5 * p[1:-1, 1:-1] - p[:-2, 1:-1] - p[2:, 1:-1] - p[1:-1, :-2] - p[1:-1, 2:]
    sharp = np.clip(sharp, 0, 255)  # filter2D saturates to uint8
    expected = np.clip(np.rint(np.abs(sharp * 1.5)), 0, 255)  # convertScaleAbs(alpha=1.5)
    assert np.abs(out.astype(np.int64) - expected).max() <= 1
    small, factor = sharpen_for_edgeboxes(img[:100, :130])
    assert factor == 10 and small.shape == (1000, 1300, 3)


def test_gradient_fallback_warns_loudly_at_scale(monkeypatch, caplog):
    import siamese_detr.data.proposals.methods as PM

    monkeypatch.setattr(PM, "_gradient_fallback_count", 0)
    monkeypatch.setattr(PM, "GRADIENT_FALLBACK_WARN_AT", 3)
    caplog.set_level("INFO", logger=PM.__name__)
    assert PM.note_gradient_fallback() == 1
    assert "gradient edge map" in caplog.text and "WARNING" not in caplog.text
    PM.note_gradient_fallback()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert len([r for r in caplog.records if "gradient edge map" in r.getMessage()]) == 1  # the INFO line once
    PM.note_gradient_fallback()  # 3rd image: loud warning naming the fix
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "--sed-model" in warnings[0].getMessage()
    PM.note_gradient_fallback(40)  # passes 30: one more
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 2
