"""Two-view geometry (siamese_detr.data.views): pure functions on boxes, checked over many seeded samples
against independent computations (torchvision IoU, hand-written resize/flip, brute-force region selection).
The region selection, its padding and the box jitter are in test_view_regions.py."""

import math

import numpy as np
import pytest
import torch
from box_sampling_utils import EPS, inside, random_boxes_xyxy, tv_iou
from detectron2.data.transforms import ResizeShortestEdge
from torchvision.ops import box_area
from torchvision.ops import box_iou as tv_box_iou

from siamese_detr.data import views as V


def test_inner_scale_closed_form_matches_brute_force():
    # hand-checked values of s(tau) = (tau + sqrt(2 tau (1 + tau))) / (2 + tau)
    assert V.inner_scale_for_iou(0.0) == 0.0
    assert V.inner_scale_for_iou(1.0) == pytest.approx(1.0)
    assert V.inner_scale_for_iou(0.5) == pytest.approx((0.5 + math.sqrt(1.5)) / 2.5)
    grid = np.linspace(1e-4, 1.0, 100001)
    for tau in (0.1, 0.3, 0.5, 0.7, 0.9):
        s = V.inner_scale_for_iou(tau)
        # brute force: IoU of the two sub-rectangles of a 200 x 120 outer box, float (no rounding)
        outer = np.array([10.0, 20.0, 210.0, 140.0])
        cx, cy = 110.0, 80.0
        inner = np.array([cx - s * 100, cy - s * 60, cx + s * 100, cy + s * 60])
        a = [outer[0], outer[1], inner[2], inner[3]]
        b = [inner[0], inner[1], outer[2], outer[3]]
        assert tv_iou(a, b) == pytest.approx(tau, abs=1e-9)
        # and s is the unique root on (0, 1]: scan IoU(s') = 2s'^2 / (1 + 2s' - s'^2)
        iou = 2 * grid**2 / (1 + 2 * grid - grid**2)
        assert abs(grid[np.argmin(np.abs(iou - tau))] - s) < 1e-3
    with pytest.raises(ValueError):
        V.inner_scale_for_iou(1.5)


def test_resized_shape_matches_detectron2():
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(x) for x in rng.integers(8, 2000, size=2))
        short, max_size = int(rng.integers(100, 800)), int(rng.integers(200, 1400))
        assert V.resized_shape(h, w, short, max_size) == ResizeShortestEdge.get_output_shape(
            h, w, short, max_size
        )


def test_outer_box_area_and_aspect():
    rng = np.random.default_rng(1)
    for _ in range(500):
        h, w = (int(x) for x in rng.integers(200, 700, size=2))
        box = V.sample_outer_box(rng, (h, w), (0.5, 1.0), (3 / 4, 4 / 3))
        bw, bh = box[2] - box[0], box[3] - box[1]
        assert inside(box, [0, 0, w, h], tol=0) and np.all(box == np.round(box))
        if bw < w and bh < h:  # a draw that fitted: its ranges hold up to integer rounding
            assert 0.5 * h * w * 0.98 <= bw * bh <= h * w
            assert 3 / 4 * 0.98 <= bw / bh <= 4 / 3 * 1.02

    # nothing fits (a very wide image): the official central-crop fallback with the aspect clamped to 4/3
    box = V.sample_outer_box(np.random.default_rng(0), (30, 1000), (0.9, 1.0), (3 / 4, 4 / 3))
    assert box.tolist() == [480.0, 0.0, 520.0, 30.0]
    box = V.sample_outer_box(np.random.default_rng(0), (1000, 30), (0.9, 1.0), (3 / 4, 4 / 3))
    assert box.tolist() == [0.0, 480.0, 30.0, 520.0]
    box = V.sample_outer_box(np.random.default_rng(0), (100, 100), (1.5, 2.0), (3 / 4, 4 / 3))  # never fits
    assert box.tolist() == [0.0, 0.0, 100.0, 100.0]


def test_shrink_only_raises_iou_and_keeps_intersection():
    rng = np.random.default_rng(2)
    for _ in range(1000):
        tau = rng.uniform(0.05, 0.95)
        outer = V.sample_outer_box(rng, (int(rng.integers(50, 600)), int(rng.integers(50, 600))))
        inner = V.centred_intersection_box(outer, tau)
        a, b = V.views_from_intersection(outer, inner)
        a2, b2 = V.shrink_outer_corners(rng, a, b, inner)
        assert inside(a2, a, 0) and inside(b2, b, 0) and inside(inner, a2, 0) and inside(inner, b2, 0)
        assert tv_iou(a, b) >= tau - EPS
        assert tv_iou(a2, b2) >= tv_iou(a, b) - 1e-12
        inter = np.r_[np.maximum(a2[:2], b2[:2]), np.minimum(a2[2:], b2[2:])]
        assert np.array_equal(inter, inner)


def _manual_to_original(boxes, view_box, scale, original_hw, resized_hw, flip):
    """Independent inverse chain: un-zoom, translate, un-flip, un-scale (written out by hand)."""
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = b[:, [0, 2]] / scale[0] + view_box[0]
    b[:, [1, 3]] = b[:, [1, 3]] / scale[1] + view_box[1]
    if flip:
        b[:, [0, 2]] = resized_hw[1] - b[:, [2, 0]]
    b[:, [0, 2]] *= original_hw[1] / resized_hw[1]
    b[:, [1, 3]] *= original_hw[0] / resized_hw[0]
    return b


def _expected_regions(proposals, inter_orig, n, frac):
    """Brute force region selection in ORIGINAL coordinates (clamping and the area ratio commute with
    the resize and the flip)."""
    kept = []
    area_i = (inter_orig[2] - inter_orig[0]) * (inter_orig[3] - inter_orig[1])
    for p in proposals:
        c = [
            max(p[0], inter_orig[0]),
            max(p[1], inter_orig[1]),
            min(p[2], inter_orig[2]),
            min(p[3], inter_orig[3]),
        ]
        area = max(c[2] - c[0], 0) * max(c[3] - c[1], 0)
        if area >= frac * area_i and area > 0:
            kept.append(c)
    return np.array(kept[: n - 1]).reshape(-1, 4)


def test_view_policy_invariants_over_thousands_of_samples():
    rng = np.random.default_rng(3)
    seen_flip, seen_swap, seen_pad, seen_full, seen_skip = set(), set(), False, False, False
    for i in range(2500):
        oh, ow = (int(x) for x in rng.integers(24, 900, size=2))
        tau = float(rng.uniform(0.2, 0.9))
        n = int(rng.integers(2, 12))
        policy = V.ViewPolicy(short_side_range=(64, 480), max_size=600, tau=tau, num_regions=n)
        num_props = int(rng.integers(0, 40))
        proposals = random_boxes_xyxy(rng, (oh, ow), num_props)
        s = policy.sample(np.random.default_rng(i), (oh, ow), proposals)
        if s is None:  # no proposal in the overlap: re-draw the same geometry without proposals to check
            seen_skip = True
            probe = V.ViewPolicy(short_side_range=(64, 480), max_size=600, tau=tau, num_regions=n)
            g = probe.sample(np.random.default_rng(i), (oh, ow), np.array([[0.0, 0.0, ow, oh]]))
            back = _manual_to_original(g.region_boxes[0][:1], g.view_boxes[0], g.view_scales[0], (oh, ow),
                                       g.resized_hw, g.flip)
            assert len(_expected_regions(proposals, back[0], n, 0.05)) == 0
            continue
        rh, rw = s.resized_hw
        vb = s.view_boxes
        seen_flip.add(s.flip)
        seen_swap.add(s.swapped)

        # IoU constraint and views inside the resized image, integer pixel cuts
        assert tv_iou(vb[0], vb[1]) >= tau - EPS
        assert inside(vb, [0, 0, rw, rh], tol=0) and np.all(vb == np.round(vb))
        assert np.all(vb[:, 2] > vb[:, 0]) and np.all(vb[:, 3] > vb[:, 1])
        inter = np.r_[np.maximum(vb[0, :2], vb[1, :2]), np.minimum(vb[0, 2:], vb[1, 2:])]
        assert np.array_equal(inter, s.intersection)

        # both views are resized to one size (the outer box's), at least the size of their cut
        ho, wo = s.view_hw[0]
        assert np.array_equal(s.view_hw[0], s.view_hw[1])
        for v in range(2):
            w_v, h_v = vb[v, 2] - vb[v, 0], vb[v, 3] - vb[v, 1]
            assert np.allclose(s.view_scales[v], [wo / w_v, ho / h_v])
            assert wo >= w_v and ho >= h_v and wo <= rw and ho <= rh

        # shapes; region 0 = intersection (in each view's coordinates)
        assert s.region_boxes.shape == (2, n, 4) and s.query_boxes.shape == (2, n, 4)
        for v in range(2):
            sx, sy = s.view_scales[v]
            expected0 = (inter - np.r_[vb[v, :2], vb[v, :2]]) * np.array([sx, sy, sx, sy])
            assert np.allclose(s.region_boxes[v, 0], expected0)
            # every region lies inside both views (view coordinates) and inside the intersection
            assert inside(s.region_boxes[v], [0, 0, wo, ho])
            assert inside(s.query_boxes[v], [0, 0, wo, ho])
            # query jitter bounded by query_jitter x size per side
            size = np.concatenate([s.region_boxes[v, :, 2:] - s.region_boxes[v, :, :2]] * 2, axis=1)
            assert np.all(np.abs(s.query_boxes[v] - s.region_boxes[v]) <= 0.1 * size + 1e-9)
        assert inside(s.regions, inter)

        # same image region in both views: map each view's boxes back to the original image by hand
        back = [
            _manual_to_original(s.region_boxes[v], vb[v], s.view_scales[v], (oh, ow), (rh, rw), s.flip)
            for v in range(2)
        ]
        assert np.allclose(back[0], back[1], atol=1e-6)
        args = ((oh, ow), (rh, rw), s.flip, s.view_scales[0])
        assert np.allclose(back[0], V.view_to_original(s.region_boxes[0], vb[0], *args))
        args = ((oh, ow), (rh, rw), s.flip, s.view_scales[1])
        assert np.allclose(V.original_to_view(back[1], vb[1], *args), s.region_boxes[1])

        # region selection against brute force in original coordinates; padding exactly when short
        inter_orig = back[0][0]
        expected = _expected_regions(proposals, inter_orig, n, 0.05)
        assert s.num_proposals == len(expected) > 0
        assert np.allclose(back[0][1 : 1 + len(expected)], expected, atol=1e-6)
        k = s.num_proposals
        pads = s.regions[1 + k :]
        assert len(pads) == n - 1 - k
        seen_pad |= len(pads) > 0
        seen_full |= len(pads) == 0
        sources = s.regions[1 : 1 + k]
        src_size = np.concatenate([sources[:, 2:] - sources[:, :2]] * 2, axis=1)
        for j, p in enumerate(pads):  # pad j: proposal region j mod k jittered by < 10 % per side
            assert np.all(np.abs(p - sources[j % k]) <= 0.1 * src_size[j % k] + 1e-9)
            assert p[2] > p[0] and p[3] > p[1]
    assert seen_flip == {True, False} and seen_swap == {True, False} and seen_pad and seen_full and seen_skip


def test_zoom_of_the_views_within_the_official_range():
    """At tau = 0.5 each view is zoomed by 2 / (1 + s) (no shrink) .. 1 / s (full shrink), s = 0.6899:
    x1.18 .. x1.45, isotropically (up to whole-pixel rounding); both ends are reached."""
    s_in = V.inner_scale_for_iou(0.5)
    lo, hi = 2 / (1 + s_in), 1 / s_in
    assert abs(lo - 1.184) < 1e-3 and abs(hi - 1.449) < 1e-3
    policy = V.ViewPolicy(short_side_range=(800, 800), max_size=2000)
    zooms = []
    for i in range(400):
        s = policy.sample(np.random.default_rng(i), (800, 1000), np.array([[0.0, 0.0, 1000.0, 800.0]]))
        for v in range(2):
            sx, sy = s.view_scales[v]
            assert abs(sx - sy) < 0.02 * sx  # aspect kept
            zooms.append(sx)
    zooms = np.array(zooms)
    assert zooms.min() >= lo - 0.01 and zooms.max() <= hi + 0.01
    assert zooms.min() < lo + 0.02 and zooms.max() > hi - 0.02
    # relative scale change between the two views of one sample: up to hi / lo ~ 1.22
    ratio = zooms[0::2] / zooms[1::2]
    assert np.all(np.maximum(ratio, 1 / ratio) <= hi / lo + 0.02) and np.max(ratio) > 1.1


def test_same_seed_same_sample_different_seed_different():
    policy = V.ViewPolicy()
    props = random_boxes_xyxy(np.random.default_rng(0), (375, 500), 50)
    a = policy.sample(np.random.default_rng(7), (375, 500), props)
    b = policy.sample(np.random.default_rng(7), (375, 500), props)
    c = policy.sample(np.random.default_rng(8), (375, 500), props)
    assert np.array_equal(a.view_boxes, b.view_boxes) and np.array_equal(a.query_boxes, b.query_boxes)
    assert not (np.array_equal(a.view_boxes, c.view_boxes) and np.array_equal(a.query_boxes, c.query_boxes))


def test_flip_and_translation_are_inverses():
    rng = np.random.default_rng(4)
    boxes = random_boxes_xyxy(rng, (300, 400), 20)
    assert np.allclose(V.flip_boxes(V.flip_boxes(boxes, 400), 400), boxes)
    flipped = V.flip_boxes(boxes, 400)
    assert np.allclose(flipped[:, 2] - flipped[:, 0], boxes[:, 2] - boxes[:, 0])
    assert np.allclose(flipped[:, 0], 400 - boxes[:, 2])
    vb = np.array([13.0, 7.0, 300.0, 250.0])
    assert np.allclose(V.view_to_image(V.image_to_view(boxes, vb), vb), boxes)


def test_box_area_and_iou_match_torchvision_on_random_boxes():
    """``box_area`` and the element-wise, broadcasting ``box_iou`` against torchvision's ``box_area`` and
    pairwise ``box_iou`` (float64) on random xyxy boxes, many of them overlapping."""
    rng = np.random.default_rng(12)
    a = random_boxes_xyxy(rng, (60, 80), 9)
    b = random_boxes_xyxy(rng, (60, 80), 7)
    ta, tb = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    np.testing.assert_allclose(V.box_area(a), box_area(ta).numpy(), rtol=1e-13, atol=0)
    expected = tv_box_iou(ta, tb).numpy()
    assert (expected > 0).sum() >= 20 and (expected == 0).sum() >= 1  # overlapping and disjoint pairs
    got = V.box_iou(a[:, None, :], b[None, :, :])  # broadcast [9, 1, 4] x [1, 7, 4] -> [9, 7]
    assert got.shape == (9, 7)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)
    # element-wise, not pairwise: rows i of a and b -> the diagonal of torchvision's matrix
    np.testing.assert_allclose(V.box_iou(a[:7], b), np.diag(expected[:7]), rtol=1e-13, atol=1e-15)
    # the order of the arguments does not matter; plain lists are accepted
    np.testing.assert_allclose(V.box_iou(b, a[:7]), V.box_iou(a[:7], b), rtol=1e-15, atol=0)
    assert float(V.box_iou(a[0].tolist(), b[0].tolist())) == pytest.approx(expected[0, 0], rel=1e-13)


def test_box_area_and_iou_hand_cases():
    """Hand-computed IoUs; ``box_area`` is documented as zero for empty boxes (torchvision's would be
    negative for an inverted box), and a zero-area box has IoU 0 with anything, never NaN (torchvision's
    0 / 0 for two identical zero-area boxes)."""
    square = [0.0, 0.0, 2.0, 2.0]
    cases = [
        ([1.0, 1.0, 3.0, 3.0], 1.0 / 7.0),  # overlap 1, union 4 + 4 - 1
        ([5.0, 5.0, 7.0, 9.0], 0.0),  # disjoint in both axes (a missing clip would give 3 * 3 > 0)
        ([2.0, 0.0, 4.0, 2.0], 0.0),  # touching along a side
        ([3.0, 0.5, 4.0, 1.5], 0.0),  # disjoint in x only
        ([0.5, 0.5, 1.5, 1.0], 0.5 / 4.0),  # contained: area ratio
        ([-1.0, -1.0, 3.0, 3.0], 4.0 / 16.0),  # containing
        (square, 1.0),  # identical
        ([0.0, 1.0, 2.0, 3.0], 2.0 / 6.0),  # shifted by half a side
    ]
    for other, iou in cases:
        assert float(V.box_iou(square, other)) == pytest.approx(iou, rel=1e-15, abs=0)
        assert float(V.box_iou(other, square)) == pytest.approx(iou, rel=1e-15, abs=0)
    assert V.box_area(np.array([[0, 0, 2, 3], [1, 1, 1, 5], [3, 0, 1, 2], [0, 4, 2, 1]])).tolist() == [6, 0, 0, 0]
    degenerate = np.array([[1.0, 1.0, 1.0, 5.0], [1.0, 1.0, 1.0, 1.0], [1.5, 0.5, 0.5, 1.5]])
    for box in degenerate:  # a line, a point, an inverted box lying across the square
        assert V.box_iou(box, square) == 0.0 and V.box_iou(box, box) == 0.0


def test_outer_box_positions_are_uniform_over_every_fitting_offset():
    """A draw that fits is placed at ``x0 ~ U{0 .. W - w}``, ``y0 ~ U{0 .. H - h}`` (RandomResizedCrop's
    ``randint(0, W - w + 1)``): with a fixed 6 x 6 box (area 36 of a 10 x 12 image, aspect 1) all 7 x 5
    offsets occur, each about equally often, the right and bottom edges included."""
    rng = np.random.default_rng(0)
    boxes = np.array([V.sample_outer_box(rng, (10, 12), (0.3, 0.3), (1.0, 1.0)) for _ in range(3500)])
    assert np.all(boxes[:, 2] - boxes[:, 0] == 6) and np.all(boxes[:, 3] - boxes[:, 1] == 6)
    x_freq = np.bincount(boxes[:, 0].astype(int), minlength=7) / len(boxes)
    y_freq = np.bincount(boxes[:, 1].astype(int), minlength=5) / len(boxes)
    assert len(x_freq) == 7 and len(y_freq) == 5  # offsets never beyond W - w, H - h
    assert np.all(np.abs(x_freq - 1 / 7) < 0.03) and np.all(np.abs(y_freq - 1 / 5) < 0.03)


def test_outer_box_as_wide_as_the_image_is_a_valid_draw():
    """``0 < w <= W``: a drawn box exactly as wide as the image fits and is placed at a random height. Here
    (80 x 80 box in an 80-wide, 100-high image) the central-crop fallback would always give ``y0 = 10``."""
    rng = np.random.default_rng(1)
    boxes = np.array([V.sample_outer_box(rng, (100, 80), (0.8, 0.8), (1.0, 1.0)) for _ in range(300)])
    assert np.all(boxes[:, [0, 2]] == [0.0, 80.0]) and np.all(boxes[:, 3] - boxes[:, 1] == 80)
    assert len(set(boxes[:, 1].tolist())) >= 15 and set(boxes[:, 1].tolist()) <= set(range(21))


def test_outer_box_aspect_is_log_uniform_width_over_height_and_area_uniform():
    """Aspect ``w / h`` log-uniform on an ASYMMETRIC range (1/2, 1) (a swap of w and h would give tall
    instead of wide boxes), area fraction uniform: quartile frequencies of ``log(w / h)`` on
    ``[log 1/2, 0]`` and of the area on ``[0.1, 0.2]`` all ~ 1/4 (a uniform aspect would give 0.19 .. 0.32)."""
    rng = np.random.default_rng(2)
    boxes = np.array([V.sample_outer_box(rng, (1000, 1000), (0.1, 0.2), (0.5, 1.0)) for _ in range(4000)])
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert np.all(w / h >= 0.5 * 0.99) and np.all(w / h <= 1.0 / 0.99)
    log_aspect = np.log(w / h)
    quarters = np.histogram(log_aspect, bins=np.linspace(np.log(0.5), 0.0, 5) + [-0.01, 0, 0, 0, 0.01])[0]
    assert np.all(np.abs(quarters / len(boxes) - 0.25) < 0.03), quarters
    area = w * h / 1e6
    quarters = np.histogram(area, bins=[0.09, 0.125, 0.15, 0.175, 0.21])[0]
    assert np.all(np.abs(quarters / len(boxes) - 0.25) < 0.03), quarters


def test_centred_intersection_box_hand_values():
    """Hand-computed: outer 100 x 60 at the origin, tau = 0.5 (s = 0.68990): half sizes 34.495 x 20.697
    around (50, 30), rounded outwards -> [15, 9, 85, 51]. tau = 0 (s = 0) would be the empty box [5, 5, 5, 5]
    of a 10 x 10 outer box: it is grown to the documented 1 px."""
    got = V.centred_intersection_box(np.array([0.0, 0.0, 100.0, 60.0]), 0.5)
    assert got.tolist() == [15.0, 9.0, 85.0, 51.0]
    got = V.centred_intersection_box(np.array([0.0, 0.0, 10.0, 10.0]), 0.0)
    assert got.tolist() == [5.0, 5.0, 6.0, 6.0]


class _FixedShrink:
    """Generator stand-in: ``uniform(0, 1, size=2)`` returns the given ``(u_a, u_b)``."""

    def __init__(self, u_a, u_b):
        self.u = np.array([u_a, u_b])

    def uniform(self, low, high, size):
        assert (low, high, size) == (0.0, 1.0, 2)
        return self.u


def test_shrink_moves_each_outer_corner_by_its_own_fraction_rounded_outwards():
    """Hand-computed: view A's top-left moves ``u_a`` of the way to I's top-left (same fraction on x and
    y), floored (towards A's outer corner); view B's bottom-right moves ``u_b`` of the way to I's bottom-right,
    ceiled; the inner corners stay."""
    inner = np.array([3.0, 4.0, 7.0, 7.0])
    view_a = np.array([0.0, 2.0, 7.0, 7.0])
    view_b = np.array([3.0, 4.0, 10.0, 12.0])
    a, b = V.shrink_outer_corners(_FixedShrink(0.5, 0.5), view_a, view_b, inner)
    assert a.tolist() == [1.0, 3.0, 7.0, 7.0]  # (1.5, 3.0) floored
    assert b.tolist() == [3.0, 4.0, 9.0, 10.0]  # (8.5, 9.5) ceiled
    a, b = V.shrink_outer_corners(_FixedShrink(0.25, 1.0), view_a, view_b, inner)
    assert a.tolist() == [0.0, 2.0, 7.0, 7.0]  # (0.75, 2.5) floored
    assert b.tolist() == [3.0, 4.0, 7.0, 7.0]  # all the way to I


def test_no_shrink_keeps_the_two_sub_rectangles_of_the_outer_box():
    """``shrink_outer=False``: the views are exactly Fig. 3b's A and B, so their union is the outer box
    (each one's outer corner is the outer box's); the policy's views then span the whole size both are
    resized to. With the shrink (default) the union is smaller in most samples."""
    for i in range(30):
        pair = V.sample_view_pair(np.random.default_rng(i), (300, 400), 0.5, shrink_outer=False)
        a, b = V.views_from_intersection(pair.outer, pair.intersection)
        expected = [b, a] if pair.swapped else [a, b]
        assert np.array_equal(pair.view_boxes, np.stack(expected))
    props = np.array([[0.0, 0.0, 400.0, 300.0]])
    smaller = 0
    for shrink in (False, True):
        policy = V.ViewPolicy(shrink_outer=shrink)
        for i in range(30):
            s = policy.sample(np.random.default_rng(i), (300, 400), props)
            vb = s.view_boxes
            union_wh = [vb[:, 2].max() - vb[:, 0].min(), vb[:, 3].max() - vb[:, 1].min()]
            if shrink:
                smaller += union_wh != [s.view_hw[0, 1], s.view_hw[0, 0]]
            else:
                assert union_wh == [s.view_hw[0, 1], s.view_hw[0, 0]]
    assert smaller >= 25


def test_view_policy_jitter_knobs_reach_queries_and_pads():
    """``query_jitter`` moves only the query boxes and ``pad_jitter`` only the pads: with ``query_jitter=0``
    the query boxes are the region boxes (up to float round-off of the clip to the view); with
    ``pad_jitter=0`` the pads are exact cyclic copies while the query boxes move by up to ``query_jitter`` of
    the size (more than the default 0.1 on some side)."""
    props = np.array([[50.0, 40.0, 350.0, 260.0]])  # one proposal: 8 pads
    for i in range(20):
        s = V.ViewPolicy(query_jitter=0.0, pad_jitter=0.1).sample(np.random.default_rng(i), (300, 400), props)
        np.testing.assert_allclose(s.query_boxes, s.region_boxes, rtol=0, atol=1e-9)  # up to the view clip
        assert s.num_proposals == 1 and not np.all(s.regions[2:] == s.regions[1])
    largest = 0.0
    for i in range(20):
        s = V.ViewPolicy(query_jitter=0.3, pad_jitter=0.0).sample(np.random.default_rng(i), (300, 400), props)
        assert np.array_equal(s.regions[2:], np.repeat(s.regions[1:2], 8, axis=0))
        size = np.concatenate([s.region_boxes[..., 2:] - s.region_boxes[..., :2]] * 2, axis=-1)
        rel = np.abs(s.query_boxes - s.region_boxes) / size
        assert np.all(rel <= 0.3 + 1e-9)
        largest = max(largest, rel.max())
    assert largest > 0.15


def test_view_policy_jitter_noise_reaches_the_padding():
    """``jitter_noise`` is the distribution of the pads too. The only proposal covers the image, so every pad
    is I jittered and clamped to I: only inward moves survive. Uniform noise moves ~5 % of the sides by more
    than 0.09 of the size; the official sigmoid-normal noise (|2 sigmoid(z) - 1| > 0.9 needs |z| > 2.94) ~0.2 %."""
    props = np.array([[0.0, 0.0, 400.0, 300.0]])
    share = {}
    for noise in ("uniform", "sigmoid_normal"):
        policy = V.ViewPolicy(jitter_noise=noise, pad_jitter=0.1)
        rel = []
        for i in range(100):
            s = policy.sample(np.random.default_rng(i), (300, 400), props)
            inter = s.regions[0]
            size = np.r_[inter[2:] - inter[:2], inter[2:] - inter[:2]]
            assert s.num_proposals == 1 and np.array_equal(s.regions[1], inter)
            rel.append(np.abs(s.regions[2:] - inter) / size)
        share[noise] = float(np.mean(np.concatenate(rel) > 0.09))
    assert share["uniform"] > 0.025 and share["sigmoid_normal"] < 0.01, share


def test_plain_cuts_without_view_resize():
    """``resize_views=False``: each view keeps its cut's own size ``(h, w)``, no zoom (scales 1), the region
    boxes are the regions translated by the view's top-left and every query box lies inside its view."""
    rng = np.random.default_rng(8)
    for i in range(100):
        oh, ow = (int(x) for x in rng.integers(60, 500, size=2))
        policy = V.ViewPolicy(resize_views=False, short_side_range=(64, 300))
        s = policy.sample(np.random.default_rng(i), (oh, ow), random_boxes_xyxy(rng, (oh, ow), 30))
        if s is None:
            continue
        vb = s.view_boxes
        assert s.view_hw.tolist() == [[vb[v, 3] - vb[v, 1], vb[v, 2] - vb[v, 0]] for v in range(2)]
        assert np.array_equal(s.view_scales, np.ones((2, 2)))
        for v in range(2):
            assert np.allclose(s.region_boxes[v], s.regions - np.r_[vb[v, :2], vb[v, :2]])
            assert inside(s.query_boxes[v], [0, 0, vb[v, 2] - vb[v, 0], vb[v, 3] - vb[v, 1]])


@pytest.mark.parametrize("frac", [0.05, 0.2])
def test_random_regions_of_the_policy_follow_the_rule_in_both_views(frac):
    """Without proposals the regions follow the official random rule in view 1's pixels: integer top-left
    corner (or the overlap's own side, where a corner drawn from ``floor(rx0)`` was clamped to it), right
    side strictly inside the overlap, area ``>= min_region_area_frac * area(I)`` (view 1's threshold) in
    view 1's pixels AND in view 2's pixels (the official comparison), aspect within 1/8 .. 8 in both views.
    The two views are zoomed differently, so view 2's check binds in some samples."""
    policy = V.ViewPolicy(min_region_area_frac=frac)
    binding = 0
    for i in range(150):
        s = policy.sample(np.random.default_rng(i), (375, 500), None)
        k = s.num_proposals
        inter_1 = s.region_boxes[0, 0]
        threshold = frac * (inter_1[2] - inter_1[0]) * (inter_1[3] - inter_1[1])
        b1, b2 = s.region_boxes[0, 1 : 1 + k], s.region_boxes[1, 1 : 1 + k]
        whole = np.isclose(b1[:, :2], np.round(b1[:, :2]), rtol=0, atol=1e-6)
        assert np.all(whole | np.isclose(b1[:, :2], inter_1[:2], rtol=0, atol=1e-9))
        assert np.all(b1[:, 2] < inter_1[2]) and inside(b1, inter_1)
        for b in (b1, b2):
            w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
            assert np.all(w * h >= threshold * (1 - 1e-9)), (i, w * h, threshold)
            assert np.all(w / h <= 8 + 1e-6) and np.all(w / h >= 1 / 8 - 1e-6)
        scale_2_over_1 = np.prod(s.view_scales[1] / s.view_scales[0])
        binding += scale_2_over_1 < 0.85
    assert binding >= 10


def test_view_policy_refuses_fewer_than_two_regions():
    """``num_regions=1`` leaves no proposal region (region 0 is the overlap): every sample would be skipped."""
    with pytest.raises(ValueError, match="dataloader.train.mapper.num_regions must be >= 2"):
        V.ViewPolicy(num_regions=1)
