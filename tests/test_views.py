"""Two-view geometry (siamese_detr.data.views): pure functions on boxes, checked over many seeded samples
against independent computations (torchvision IoU, hand-written resize/flip, brute-force region selection)."""

import math

import numpy as np
import pytest
import torch
from detectron2.data.transforms import ResizeShortestEdge
from torchvision.ops import box_iou as tv_box_iou

from siamese_detr.data import views as V


def random_boxes_xyxy(rng, image_hw, num_boxes):
    """Test proposals: sides U(0.1, 0.6) of the image side, anywhere inside it; [num_boxes, 4] xyxy."""
    h, w = float(image_hw[0]), float(image_hw[1])
    sizes = rng.uniform(0.1, 0.6, size=(num_boxes, 2)) * np.array([w, h])
    x0 = rng.uniform(0.0, 1.0, size=num_boxes) * (w - sizes[:, 0])
    y0 = rng.uniform(0.0, 1.0, size=num_boxes) * (h - sizes[:, 1])
    return np.stack([x0, y0, x0 + sizes[:, 0], y0 + sizes[:, 1]], axis=1)


EPS = 1e-6


def tv_iou(a, b) -> float:
    return float(
        tv_box_iou(
            torch.as_tensor(a, dtype=torch.float64)[None], torch.as_tensor(b, dtype=torch.float64)[None]
        )
    )


def inside(boxes, container, tol=1e-6) -> bool:
    boxes = np.asarray(boxes).reshape(-1, 4)
    return bool(
        np.all(boxes[:, 0] >= container[0] - tol)
        and np.all(boxes[:, 1] >= container[1] - tol)
        and np.all(boxes[:, 2] <= container[2] + tol)
        and np.all(boxes[:, 3] <= container[3] + tol)
    )


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


def test_random_regions_follow_the_official_rule():
    from siamese_detr.data.proposals.methods import intersection_random_boxes

    inter = np.array([10.0, 20.0, 110.0, 70.0])  # 100 x 50, area 5000, threshold 250
    for seed in range(20):
        for other in ((1.0, 1.0), (0.8, 0.8), (1.2, 1.2)):
            boxes = intersection_random_boxes(np.random.default_rng(seed), inter, 100, 0.05, 8.0, other)
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            assert len(boxes) <= 100 and len(boxes) > 0
            assert np.all(boxes[:, 0] == np.floor(boxes[:, 0])) and np.all(boxes[:, 1] == np.floor(boxes[:, 1]))
            assert inside(boxes, inter) and np.all(boxes[:, 2] < inter[2])
            assert np.all(w * h >= 250 - 1e-6) and np.all(w * h * other[0] * other[1] >= 250 - 1e-6)
            assert np.all(w / h <= 8 + 1e-9) and np.all(w / h >= 1 / 8 - 1e-9)
    # brute force: re-draw with the same generator calls and apply the rule by hand
    rng = np.random.default_rng(5)
    x0, y0 = rng.integers(10, 110, size=100), rng.integers(20, 70, size=100)
    hs = rng.random(100) * (70 - y0) + 1e-10
    ws = 250 / hs + rng.random(100) * ((110 - x0) - 250 / hs)
    ok = [(x + w < 110) and (1 / 8 <= w / h <= 8) and (w * h >= 250) for x, w, h in zip(x0, ws, hs)]
    expected = np.stack([x0, y0, x0 + ws, y0 + hs], 1)[np.array(ok)]
    got = intersection_random_boxes(np.random.default_rng(5), inter, 100, 0.05, 8.0)
    assert np.allclose(got, expected)
    # the policy uses them when there are no proposals: always proposals, first n-1 taken
    policy = V.ViewPolicy(num_regions=10)
    for i in range(50):
        s = policy.sample(np.random.default_rng(i), (375, 500), None)
        assert s is not None and s.num_proposals >= 1 and s.region_boxes.shape == (2, 10, 4)


def test_same_seed_same_sample_different_seed_different():
    policy = V.ViewPolicy()
    props = random_boxes_xyxy(np.random.default_rng(0), (375, 500), 50)
    a = policy.sample(np.random.default_rng(7), (375, 500), props)
    b = policy.sample(np.random.default_rng(7), (375, 500), props)
    c = policy.sample(np.random.default_rng(8), (375, 500), props)
    assert np.array_equal(a.view_boxes, b.view_boxes) and np.array_equal(a.query_boxes, b.query_boxes)
    assert not (np.array_equal(a.view_boxes, c.view_boxes) and np.array_equal(a.query_boxes, c.query_boxes))


def test_select_regions_hand_computed():
    rng = np.random.default_rng(0)
    inter = np.array([100.0, 100.0, 200.0, 200.0])  # area 10000, threshold 500
    proposals = np.array(
        [
            [0, 0, 50, 50],  # outside: dropped
            [150, 150, 300, 300],  # clamped to [150,150,200,200], area 2500: kept
            [190, 100, 205, 130],  # clamped to [190,100,200,130], area 300 < 500: dropped
            [110, 120, 130, 160],  # inside, area 800: kept
            [90, 90, 210, 210],  # clamped to the intersection itself: kept
        ],
        dtype=np.float64,
    )
    regions, k = V.select_regions(rng, proposals, inter, num_regions=3)
    assert k == 2
    assert np.array_equal(regions, [[100, 100, 200, 200], [150, 150, 200, 200], [110, 120, 130, 160]])
    regions, k = V.select_regions(rng, proposals, inter, num_regions=7)
    assert k == 3 and regions.shape == (7, 4)
    # padding: cyclic copies of the PROPOSAL regions (not region 0), each side moved < 10 % of the size
    sources = regions[1:4]
    for j, p in enumerate(regions[4:]):
        size = np.r_[sources[j % 3, 2:] - sources[j % 3, :2], sources[j % 3, 2:] - sources[j % 3, :2]]
        assert np.all(np.abs(p - sources[j % 3]) < 0.1 * size) and inside(p, inter)
    # one proposal: every pad is a copy of it
    regions, k = V.select_regions(rng, proposals[3:4], inter, num_regions=5)
    assert k == 1 and np.all(np.abs(regions[2:] - [110, 120, 130, 160]) < 4.0)
    # no proposal inside the overlap: nothing to pad from, the caller skips the sample
    regions, k = V.select_regions(rng, np.zeros((0, 4)), inter, num_regions=10)
    assert k == 0 and np.array_equal(regions, inter[None])


def test_sigmoid_normal_noise_distribution():
    """(sigmoid(N(0,1)) * 2 - 1) * f: inside (-f, f), symmetric, std 0.41 f (numeric integral)."""
    x = V.sigmoid_normal_noise(np.random.default_rng(0), (200000,), 0.1)
    assert np.all(np.abs(x) < 0.1) and abs(x.mean()) < 1e-3
    z = np.linspace(-8, 8, 160001)
    pdf = np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    expected_std = 0.1 * np.sqrt(np.sum((2 / (1 + np.exp(-z)) - 1) ** 2 * pdf) * (z[1] - z[0]))
    assert abs(x.std() - expected_std) < 1e-3 and abs(expected_std - 0.041) < 2e-3


def test_flip_and_translation_are_inverses():
    rng = np.random.default_rng(4)
    boxes = random_boxes_xyxy(rng, (300, 400), 20)
    assert np.allclose(V.flip_boxes(V.flip_boxes(boxes, 400), 400), boxes)
    flipped = V.flip_boxes(boxes, 400)
    assert np.allclose(flipped[:, 2] - flipped[:, 0], boxes[:, 2] - boxes[:, 0])
    assert np.allclose(flipped[:, 0], 400 - boxes[:, 2])
    vb = np.array([13.0, 7.0, 300.0, 250.0])
    assert np.allclose(V.view_to_image(V.image_to_view(boxes, vb), vb), boxes)
