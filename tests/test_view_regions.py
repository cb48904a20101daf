"""The regions of a view pair (siamese_detr.data.views): proposals clamped to the views' intersection and
kept by area, padded with jittered copies, random regions where there are no proposals, and the box jitter's
noise, checked against hand-computed cases and replays of the seeded draws."""

import numpy as np
import pytest
from box_sampling_utils import inside, random_boxes_xyxy

from siamese_detr.data import views as V


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


def test_random_regions_rule_on_a_fractional_overlap_with_a_view_2_stretched_in_x():
    """In practice the overlap in view 1's pixels is fractional and view 2 is scaled differently in x and y
    (each view's cut is resized to the outer box's size). Brute force of the official rule for that case: the
    corners drawn between the TRUNCATED bounds (``np.random.randint`` of floats), the aspect limit in both views
    (view 2's aspect is view 1's times kx / ky) and view 2's area against view 1's threshold."""
    from siamese_detr.data.proposals.methods import intersection_random_boxes

    rx0, ry0, rx1, ry1 = 10.6, 20.3, 110.4, 70.8
    kx, ky = 2.0, 0.5  # view 2 stretches a view-1 box's aspect by 4
    min_area = 0.05 * (rx1 - rx0) * (ry1 - ry0)
    rng = np.random.default_rng(7)
    x0, y0 = rng.integers(10, 110, size=100), rng.integers(20, 70, size=100)
    hs = rng.random(100) * (ry1 - y0) + 1e-10
    ws = min_area / hs + rng.random(100) * ((rx1 - x0) - min_area / hs)
    view_1_ok = (x0 + ws < rx1) & (ws / hs >= 1 / 8) & (ws / hs <= 8)
    view_2_ok = (ws * kx / (hs * ky) >= 1 / 8) & (ws * kx / (hs * ky) <= 8) & (ws * kx * hs * ky >= min_area)
    expected = np.stack([x0, y0, x0 + ws, y0 + hs], 1)[view_1_ok & view_2_ok]
    got = intersection_random_boxes(np.random.default_rng(7), np.array([rx0, ry0, rx1, ry1]), 100, 0.05, 8.0, (kx, ky))
    assert len(expected) > 0 and np.allclose(got, expected)
    # the case is one where view 2's aspect decides: some boxes valid in view 1 fail only there
    assert np.any(view_1_ok & ~view_2_ok & (ws * hs >= min_area))
    w, h = got[:, 2] - got[:, 0], got[:, 3] - got[:, 1]
    assert np.all(w * kx / (h * ky) <= 8 + 1e-9) and np.all(w / h >= 1 / 8 - 1e-9)


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


@pytest.mark.parametrize("noise", ["uniform", "sigmoid_normal"])
def test_jitter_boxes_replays_the_seeded_draws(noise):
    """``jitter_boxes`` = box + delta * (w, h, w, h) with delta drawn by ONE call of the generator (replayed
    here from the same seed: ``uniform(-f, f, [K, 4])`` or the official ``sigmoid(N(0, 1)) * 2 - 1`` times
    f), then clamped to the clip box; a row that comes out empty is the input row."""
    rng = np.random.default_rng(5)
    boxes = random_boxes_xyxy(rng, (50, 70), 40)
    clip = np.array([5.0, 4.0, 60.0, 45.0])  # boxes reach over it: some sides are clamped
    for frac in (0.1, 0.9):  # 0.9 > 0.5: opposite sides can cross, some rows come out empty
        got = V.jitter_boxes(np.random.default_rng(9), boxes, frac, clip, noise=noise)
        replay = np.random.default_rng(9)
        if noise == "uniform":
            delta = replay.uniform(-frac, frac, size=(40, 4))
        else:
            delta = (2.0 / (1.0 + np.exp(-replay.standard_normal((40, 4)))) - 1.0) * frac
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        moved = boxes + delta * np.stack([w, h, w, h], axis=1)
        moved[:, [0, 2]] = np.clip(moved[:, [0, 2]], clip[0], clip[2])
        moved[:, [1, 3]] = np.clip(moved[:, [1, 3]], clip[1], clip[3])
        empty = (moved[:, 2] <= moved[:, 0]) | (moved[:, 3] <= moved[:, 1])
        expected = np.where(empty[:, None], boxes, moved)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
        assert (empty.sum() > 0) == (frac > 0.5)
        assert np.all(got[:, 2] > got[:, 0]) and np.all(got[:, 3] > got[:, 1])
    with pytest.raises(ValueError, match="noise"):
        V.jitter_boxes(np.random.default_rng(0), boxes, 0.1, noise="gaussian")


def test_jitter_boxes_uniform_noise_distribution_and_bounds():
    """noise="uniform": each side moves by U(-f, f) of the box's side, so (out - box) / size is uniform on
    (-f, f): std f / sqrt(3) = 0.577 f (the official sigmoid-normal noise has 0.41 f), reaches +-f, and
    every side stays within f * size of the input (the documented bound), with no clip box."""
    boxes = random_boxes_xyxy(np.random.default_rng(6), (300, 400), 20000)
    frac = 0.2
    out = V.jitter_boxes(np.random.default_rng(1), boxes, frac, noise="uniform")
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    delta = (out - boxes) / size
    assert np.all(np.abs(delta) <= frac + 1e-12)
    assert abs(delta.std() - frac / np.sqrt(3)) < 0.01 * frac and abs(delta.mean()) < 0.01 * frac
    assert np.abs(delta).max() > 0.999 * frac
    # the four sides are drawn independently
    assert np.abs(np.corrcoef(delta.T) - np.eye(4)).max() < 0.03


class _FixedUniform:
    """Generator stand-in whose ``uniform(low, high, size)`` returns the given delta (checked in range)."""

    def __init__(self, delta):
        self.delta = np.asarray(delta, dtype=np.float64)

    def uniform(self, low, high, size):
        assert np.all((self.delta >= low) & (self.delta < high)) and tuple(size) == self.delta.shape
        return self.delta


def test_jitter_boxes_that_would_become_empty_keep_their_original_sides():
    """Hand-computed: a row whose jittered (and clamped) box has x1 <= x0 or y1 <= y0 keeps ALL four
    original sides exactly, even the axis that did not collapse, and even a box reaching over the clip box
    (the original is not clamped); the other rows move by delta * size."""
    boxes = np.array(
        [
            [10.0, 20.0, 30.0, 60.0],  # w 20, h 40
            [10.0, 20.0, 30.0, 60.0],
            [10.0, 20.0, 30.0, 60.0],
            [0.0, 0.0, 10.0, 10.0],
            [-10.0, 0.0, 10.0, 10.0],  # reaches left of the clip box
            [30.0, 30.0, 40.0, 40.0],
        ]
    )
    delta = [
        [0.3, -0.2, -0.1, 0.4],  # -> [16, 12, 28, 76] (no clip box) / y1 clamped to 50
        [0.8, 0.0, -0.8, 0.0],  # x0 26 > x1 14: empty
        [0.1, 0.6, 0.1, -0.6],  # y0 44 > y1 36: empty in y only, x would have moved by 2
        [0.5, 0.0, -0.5, 0.0],  # x0 == x1 == 5: empty (zero width)
        [0.0, 0.1, -0.6, 0.1],  # x1 -2, clamped with x0 to 0: empty only through the clip box
        [0.9, 0.0, 0.9, 0.0],  # x0 39, x1 49 clamped to 40: 1 px wide, kept
    ]
    got = V.jitter_boxes(_FixedUniform(delta), boxes, 0.95, noise="uniform")
    expected = np.array(
        [
            [16.0, 12.0, 28.0, 76.0],
            [10.0, 20.0, 30.0, 60.0],
            [10.0, 20.0, 30.0, 60.0],
            [0.0, 0.0, 10.0, 10.0],
            [-10.0, 1.0, -2.0, 11.0],  # no clip box: x0 -10, x1 -2, not empty
            [39.0, 30.0, 49.0, 40.0],
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    clip = np.array([0.0, 0.0, 40.0, 50.0])
    got = V.jitter_boxes(_FixedUniform(delta), boxes, 0.95, clip, noise="uniform")
    expected[0] = [16.0, 12.0, 28.0, 50.0]
    expected[4] = [-10.0, 0.0, 10.0, 10.0]  # empty after clamping: the original, still over the clip edge
    expected[5] = [39.0, 30.0, 40.0, 40.0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_select_regions_area_threshold_is_inclusive_and_configurable():
    """``clamped area >= min_area_frac * area(I)``: a proposal of exactly 5 % of I is kept; the fraction is
    the argument's (3 % keeps a 300 px² region, 10 % drops an 800 px² one)."""
    rng = np.random.default_rng(0)
    inter = np.array([100.0, 100.0, 200.0, 200.0])  # area 10000
    proposals = np.array([[100, 100, 120, 125], [190, 100, 205, 130], [110, 120, 130, 160]], dtype=np.float64)
    # areas after clamping: 500 (= 5 %), 300, 800
    regions, k = V.select_regions(rng, proposals, inter, num_regions=3)
    assert k == 2 and regions[1:].tolist() == [[100, 100, 120, 125], [110, 120, 130, 160]]
    regions, k = V.select_regions(rng, proposals, inter, num_regions=4, min_area_frac=0.03)
    assert k == 3 and regions[2].tolist() == [190, 100, 200, 130]
    regions, k = V.select_regions(rng, proposals, inter, num_regions=4, min_area_frac=0.1)
    assert k == 0 and regions.tolist() == [inter.tolist()]


@pytest.mark.parametrize("noise, frac", [("uniform", 0.4), ("sigmoid_normal", 0.3), ("uniform", 0.0)])
def test_select_regions_padding_replays_its_jitter_draws(noise, frac):
    """The pads are the cyclic copies jittered with the given ``pad_jitter`` and ``noise``: replayed by hand
    from the same seed (one draw of ``[num_pad, 4]``, times (w, h, w, h), clamped to I). ``pad_jitter=0``
    gives exact copies."""
    inter = np.array([100.0, 100.0, 200.0, 200.0])
    proposals = np.array([[110.0, 120.0, 130.0, 160.0], [150.0, 105.0, 190.0, 125.0]])  # 20 x 40, 40 x 20
    regions, k = V.select_regions(np.random.default_rng(3), proposals, inter, 6, 0.05, frac, noise)
    assert k == 2 and regions.shape == (6, 4)
    replay = np.random.default_rng(3)
    if noise == "uniform":
        delta = replay.uniform(-frac, frac, size=(3, 4))
    else:
        delta = (2.0 / (1.0 + np.exp(-replay.standard_normal((3, 4)))) - 1.0) * frac
    source = proposals[[0, 1, 0]]
    size = np.array([[20.0, 40.0, 20.0, 40.0], [40.0, 20.0, 40.0, 20.0], [20.0, 40.0, 20.0, 40.0]])
    expected = np.clip(source + delta * size, 100.0, 200.0)
    assert np.all(expected[:, 2:] > expected[:, :2])  # no empty row here
    np.testing.assert_allclose(regions[3:], expected, rtol=0, atol=1e-12)
    if frac == 0.0:
        assert np.array_equal(regions[3:], source)
