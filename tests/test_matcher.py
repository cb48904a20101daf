"""HungarianMatcher: optimality against brute force over all assignments, empty-target images."""

import itertools
import math
import random

import pytest
import torch

from siamese_detr.modeling import HungarianMatcher

W_CLASS, W_BBOX, W_GIOU = 1.0, 5.0, 2.0


def _xyxy(b):
    cx, cy, w, h = b
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def _giou(a, b):
    """Plain-python GIoU of two cxcywh boxes."""
    ax0, ay0, ax1, ay1 = _xyxy(a)
    bx0, by0, bx1, by1 = _xyxy(b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def _pair_cost(logits, box, label, tgt_box):
    exps = [math.exp(v) for v in logits]
    prob = exps[label] / sum(exps)
    l1 = sum(abs(p - t) for p, t in zip(box, tgt_box))
    return -W_CLASS * prob + W_BBOX * l1 - W_GIOU * _giou(box, tgt_box)


def _random_boxes(rng, n):
    out = []
    for _ in range(n):
        w, h = rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6)
        out.append([rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2), w, h])
    return out


def _brute_force_min(cost, num_queries, num_targets):
    """Min over injective maps target j -> query perm[j]."""
    best = math.inf
    for perm in itertools.permutations(range(num_queries), num_targets):
        best = min(best, sum(cost[perm[j]][j] for j in range(num_targets)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_matching_is_optimal_against_brute_force(seed):
    rng = random.Random(seed)
    num_classes = 3
    num_queries = rng.randint(2, 6)
    sizes = [rng.randint(1, min(4, num_queries)) for _ in range(3)]
    logits = [[[rng.gauss(0, 2) for _ in range(num_classes + 1)] for _ in range(num_queries)] for _ in sizes]
    boxes = [_random_boxes(rng, num_queries) for _ in sizes]
    targets_py = [([rng.randrange(num_classes) for _ in range(n)], _random_boxes(rng, n)) for n in sizes]

    outputs = {"pred_logits": torch.tensor(logits), "pred_boxes": torch.tensor(boxes)}
    targets = [{"labels": torch.tensor(lab), "boxes": torch.tensor(bx)} for lab, bx in targets_py]
    indices = HungarianMatcher(W_CLASS, W_BBOX, W_GIOU)(outputs, targets)

    assert len(indices) == len(sizes)
    for b, (n, (rows, cols)) in enumerate(zip(sizes, indices)):
        assert rows.dtype == torch.int64 and cols.dtype == torch.int64
        assert len(rows) == len(cols) == n
        assert len(set(rows.tolist())) == n and sorted(cols.tolist()) == list(range(n))
        labels, tgt_boxes = targets_py[b]
        cost = [
            [_pair_cost(logits[b][q], boxes[b][q], labels[j], tgt_boxes[j]) for j in range(n)]
            for q in range(num_queries)
        ]
        total = sum(cost[q][j] for q, j in zip(rows.tolist(), cols.tolist()))
        assert total == pytest.approx(_brute_force_min(cost, num_queries, n), abs=1e-5)


def test_obvious_matching_follows_box_distance():
    boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.2, 0.2], [0.5, 0.5, 0.3, 0.3]]])
    outputs = {"pred_logits": torch.zeros(1, 3, 3), "pred_boxes": boxes}
    targets = [
        {
            "labels": torch.tensor([0, 1]),
            "boxes": torch.tensor([[0.79, 0.81, 0.2, 0.2], [0.21, 0.2, 0.1, 0.1]]),
        }
    ]
    rows, cols = HungarianMatcher()(outputs, targets)[0]
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 0}


def test_images_without_targets_get_empty_indices():
    torch.manual_seed(0)
    outputs = {"pred_logits": torch.randn(3, 4, 3), "pred_boxes": torch.rand(3, 4, 4) * 0.5 + 0.1}
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    one = {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    matcher = HungarianMatcher()

    indices = matcher(outputs, [empty, one, empty])
    assert [len(r) for r, _ in indices] == [0, 1, 0]
    assert all(len(c) == len(r) for r, c in indices)
    assert indices[1][1].tolist() == [0]

    all_empty = matcher(outputs, [empty, empty, empty])
    assert all(len(r) == 0 and len(c) == 0 and r.dtype == torch.int64 for r, c in all_empty)


def test_degenerate_boxes_do_not_break_the_assignment():
    outputs = {
        "pred_logits": torch.zeros(1, 2, 2),
        "pred_boxes": torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.3, 0.3, 0.2, 0.2]]]),
    }
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.0, 0.0]])}]
    rows, cols = HungarianMatcher()(outputs, targets)[0]
    # the degenerate pair's GIoU is NaN: its cost must be high (never chosen), so the proper box is matched
    assert rows.tolist() == [1] and cols.tolist() == [0]


def _focal_pair_cost(logits, box, label, tgt_box, alpha=0.25, gamma=2.0, w=(2.0, 5.0, 2.0)):
    """Official Conditional / Deformable DETR cost with the focal class term, in plain python."""
    p = 1 / (1 + math.exp(-logits[label]))
    pos = alpha * (1 - p) ** gamma * -math.log(p + 1e-8)
    neg = (1 - alpha) * p ** gamma * -math.log(1 - p + 1e-8)
    l1 = sum(abs(a - b) for a, b in zip(box, tgt_box))
    return w[0] * (pos - neg) + w[1] * l1 - w[2] * _giou(box, tgt_box)


@pytest.mark.parametrize("seed", range(4))
def test_focal_matching_is_optimal_against_brute_force(seed):
    from siamese_detr.modeling import FocalHungarianMatcher

    rng = random.Random(100 + seed)
    num_classes, num_queries = 3, rng.randint(2, 6)
    sizes = [rng.randint(1, min(4, num_queries)) for _ in range(2)]
    logits = [[[rng.gauss(0, 2) for _ in range(num_classes)] for _ in range(num_queries)] for _ in sizes]
    boxes = [_random_boxes(rng, num_queries) for _ in sizes]
    targets_py = [([rng.randrange(num_classes) for _ in range(n)], _random_boxes(rng, n)) for n in sizes]
    outputs = {"pred_logits": torch.tensor(logits), "pred_boxes": torch.tensor(boxes)}
    targets = [{"labels": torch.tensor(lab), "boxes": torch.tensor(bx)} for lab, bx in targets_py]
    indices = FocalHungarianMatcher()(outputs, targets)
    assert len(indices) == len(sizes)
    for b, (n, (rows, cols)) in enumerate(zip(sizes, indices)):
        assert rows.dtype == torch.int64 and cols.dtype == torch.int64
        assert len(rows) == len(cols) == n and len(set(rows.tolist())) == n
        labels, tgt_boxes = targets_py[b]
        cost = [
            [_focal_pair_cost(logits[b][q], boxes[b][q], labels[j], tgt_boxes[j]) for j in range(n)]
            for q in range(num_queries)
        ]
        total = sum(cost[q][j] for q, j in zip(rows.tolist(), cols.tolist()))
        assert sorted(cols.tolist()) == list(range(n))
        assert total == pytest.approx(_brute_force_min(cost, num_queries, n), abs=1e-5)


def test_focal_class_cost_by_hand():
    from siamese_detr.modeling import FocalHungarianMatcher

    m = FocalHungarianMatcher(alpha=0.25, gamma=2.0)
    cost = m.class_cost(torch.tensor([[0.0, 2.0]], dtype=torch.float64), torch.tensor([1, 0]))
    p1, p0 = 1 / (1 + math.exp(-2.0)), 0.5
    expected = [
        0.25 * (1 - p) ** 2 * -math.log(p + 1e-8) - 0.75 * p ** 2 * -math.log(1 - p + 1e-8) for p in (p1, p0)
    ]
    assert cost.tolist()[0] == pytest.approx(expected, rel=1e-12)


def test_focal_class_cost_with_other_alpha_and_gamma_by_hand():
    """alpha = 0.4, gamma = 1 (not the defaults) enter the class cost as in Deformable DETR's matcher:
    alpha (1 - p)^gamma (-log p) - (1 - alpha) p^gamma (-log(1 - p)), p = sigmoid of the target class's logit
    (a column per target, repeated classes included)."""
    from siamese_detr.modeling import FocalHungarianMatcher

    m = FocalHungarianMatcher(alpha=0.4, gamma=1.0)
    logits = [[-1.0, 0.5, 2.5], [0.0, -3.0, 1.0]]
    tgt_ids = [2, 0, 1, 0]
    cost = m.class_cost(torch.tensor(logits, dtype=torch.float64), torch.tensor(tgt_ids))
    expected = []
    for row in logits:
        ps = [1 / (1 + math.exp(-row[c])) for c in tgt_ids]
        expected.append([0.4 * (1 - p) * -math.log(p + 1e-8) - 0.6 * p * -math.log(1 - p + 1e-8) for p in ps])
    assert cost.shape == (2, 4)
    for got_row, exp_row in zip(cost.tolist(), expected):
        assert got_row == pytest.approx(exp_row, rel=1e-12)


def test_focal_matching_follows_alpha_and_gamma():
    """With every box equal only the class cost decides, and the two assignments of 2 queries to targets of labels
    0 and 1 swap between (alpha, gamma) = (0.25, 2) and (0.4, 1) (by hand: a margin of ~0.57 either way), so the
    matcher's choice shows which parameters it used."""
    from siamese_detr.modeling import FocalHungarianMatcher

    logits = [[-4.0, 1.0], [1.5, 4.0]]  # query 0, query 1; columns = classes 0, 1
    box = [0.5, 0.5, 0.2, 0.2]
    outputs = {"pred_logits": torch.tensor([logits], dtype=torch.float64),
               "pred_boxes": torch.tensor([[box, box]], dtype=torch.float64)}
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([box, box], dtype=torch.float64)}]
    expected = {}
    for alpha, gamma in ((0.25, 2.0), (0.4, 1.0)):
        straight = sum(_focal_pair_cost(logits[q], box, q, box, alpha, gamma) for q in (0, 1))
        crossed = sum(_focal_pair_cost(logits[q], box, 1 - q, box, alpha, gamma) for q in (0, 1))
        assert abs(straight - crossed) > 0.5
        expected[alpha, gamma] = [0, 1] if straight < crossed else [1, 0]
    assert expected[0.25, 2.0] != expected[0.4, 1.0]  # else this test could not fail
    for (alpha, gamma), expected_cols in expected.items():
        rows, cols = FocalHungarianMatcher(alpha=alpha, gamma=gamma)(outputs, targets)[0]
        assert rows.tolist() == [0, 1] and cols.tolist() == expected_cols


def test_float64_predictions_are_matched_in_float64(monkeypatch):
    """A difference below float32's resolution decides the match in float64 (as the official matcher, which
    keeps the input dtype); half precision is promoted to float32."""
    target = torch.tensor([[0.3, 0.3, 0.2, 0.2]], dtype=torch.float64)
    # query 0 is 4e-9 from the target, query 1 is 1e-9: equal once rounded to float32 (eps 3e-8 at 0.3)
    boxes = torch.stack([target[0] + 4e-9, target[0] + 1e-9])[None]
    assert torch.equal(boxes.float()[0, 0], boxes.float()[0, 1])
    outputs = {"pred_logits": torch.zeros(1, 2, 2, dtype=torch.float64), "pred_boxes": boxes}
    targets = [{"labels": torch.tensor([0]), "boxes": target}]
    rows, cols = HungarianMatcher(cost_class=0.0, cost_bbox=1.0, cost_giou=0.0)(outputs, targets)[0]
    assert rows.tolist() == [1] and cols.tolist() == [0]
    import siamese_detr.modeling.matcher as matcher_module

    solved_dtypes = []
    solve = matcher_module.linear_sum_assignment

    def recording_solve(cost):
        solved_dtypes.append(cost.dtype)
        return solve(cost)

    monkeypatch.setattr(matcher_module, "linear_sum_assignment", recording_solve)
    half = {"pred_logits": torch.zeros(1, 2, 2, dtype=torch.float16), "pred_boxes": boxes.half()}
    matcher = HungarianMatcher(cost_class=0.0, cost_bbox=1.0, cost_giou=0.0)
    rows, _ = matcher(half, [{**targets[0], "boxes": target.half()}])[0]
    matcher(outputs, targets)
    assert len(rows) == 1
    assert [str(d) for d in solved_dtypes] == ["float32", "float64"]


def _default_weight_problem(rng, num_images=40, num_queries=3, num_targets=2, num_logits=3, num_classes=2):
    logits = [[[rng.gauss(0, 2.5) for _ in range(num_logits)] for _ in range(num_queries)] for _ in range(num_images)]
    boxes = [_random_boxes(rng, num_queries) for _ in range(num_images)]
    targets_py = [([rng.randrange(num_classes) for _ in range(num_targets)], _random_boxes(rng, num_targets))
                  for _ in range(num_images)]
    return logits, boxes, targets_py


def _optimal_assignments(cost_fn, logits, boxes, targets_py):
    """Per image, the set of optimal injective maps target j -> query (brute force, ties kept)."""
    out = []
    for b, (labels, tgt_boxes) in enumerate(targets_py):
        n, q = len(labels), len(boxes[b])
        totals = {perm: sum(cost_fn(logits[b][perm[j]], boxes[b][perm[j]], labels[j], tgt_boxes[j]) for j in range(n))
                  for perm in itertools.permutations(range(q), n)}
        best = min(totals.values())
        out.append({perm for perm, v in totals.items() if v <= best + 1e-6})
    return out


def _weighted_cost_fn(weights, focal):
    """The matching cost of one (query, target) pair written out with the given (class, L1, GIoU) weights."""
    if focal:
        return lambda lg, box, lab, tb: _focal_pair_cost(lg, box, lab, tb, w=weights)

    def softmax_cost(lg, box, lab, tb):
        exps = [math.exp(v) for v in lg]
        l1 = sum(abs(p - t) for p, t in zip(box, tb))
        return -weights[0] * exps[lab] / sum(exps) + weights[1] * l1 - weights[2] * _giou(box, tb)

    return softmax_cost


def _assert_matches_with_weights(matcher, weights, other_weights, focal):
    """On 40 random images, ``matcher``'s assignment is optimal for the cost with ``weights``; for each of
    ``other_weights`` some image's optimum is another assignment (so a matcher using those cannot pass)."""
    rng = random.Random(0)
    logits, boxes, targets_py = _default_weight_problem(rng, num_logits=2 if focal else 3)
    expected = _optimal_assignments(_weighted_cost_fn(weights, focal), logits, boxes, targets_py)
    for other in other_weights:
        alternative = _optimal_assignments(_weighted_cost_fn(other, focal), logits, boxes, targets_py)
        assert any(not (a & e) for a, e in zip(alternative, expected)), other
    outputs = {"pred_logits": torch.tensor(logits, dtype=torch.float64),
               "pred_boxes": torch.tensor(boxes, dtype=torch.float64)}
    targets = [{"labels": torch.tensor(lab), "boxes": torch.tensor(bx, dtype=torch.float64)} for lab, bx in targets_py]
    for b, (rows, cols) in enumerate(matcher(outputs, targets)):
        perm = [None] * len(cols)
        for q, j in zip(rows.tolist(), cols.tolist()):
            perm[j] = q
        assert tuple(perm) in expected[b], b


@pytest.mark.parametrize("focal", [False, True])
def test_default_cost_weights_are_the_official_ones(focal):
    """``HungarianMatcher()`` matches with DETR's weights class 1 / L1 5 / GIoU 2 and ``FocalHungarianMatcher()``
    with Conditional / Deformable DETR's 2 / 5 / 2 (alpha 0.25, gamma 2): its matching is optimal for the cost
    written out with these weights, on images where each weight halved or doubled gives another optimum."""
    from siamese_detr.modeling import FocalHungarianMatcher

    official = (2.0, 5.0, 2.0) if focal else (W_CLASS, W_BBOX, W_GIOU)
    others = [tuple(w * f if k == i else w for k, w in enumerate(official)) for i in range(3) for f in (0.5, 2.0)]
    _assert_matches_with_weights(FocalHungarianMatcher() if focal else HungarianMatcher(), official, others, focal)


@pytest.mark.parametrize("focal", [False, True])
@pytest.mark.parametrize("weights", [(4.0, 5.0, 2.0), (2.0, 2.0, 2.0), (2.0, 5.0, 0.5)])
def test_explicit_cost_weights_are_used(focal, weights):
    """Each weight given to the constructor enters the cost (none is replaced by its default): with one weight
    moved off the focal defaults 2 / 5 / 2 the matching is optimal for the cost with the given weights, on
    images where the defaults give another optimum."""
    from siamese_detr.modeling import FocalHungarianMatcher

    matcher = (FocalHungarianMatcher if focal else HungarianMatcher)(*weights)
    _assert_matches_with_weights(matcher, weights, [(2.0, 5.0, 2.0), (W_CLASS, W_BBOX, W_GIOU)], focal)


@pytest.mark.parametrize("weights", [(0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)])
def test_a_single_nonzero_cost_is_a_valid_matcher(weights):
    """Any one cost may be the only one (e.g. GIoU-only); only all three at 0 are refused. With GIoU alone, the
    query whose box overlaps the target wins although its class probability is lower."""
    matcher = HungarianMatcher(*weights)
    outputs = {"pred_logits": torch.tensor([[[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]]),
               "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.54, 0.5, 0.2, 0.2]]])}
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    rows, cols = matcher(outputs, targets)[0]
    # class alone prefers query 1 (logit 5); L1 and GIoU alone prefer query 0 (identical box)
    assert rows.tolist() == ([1] if weights[0] else [0]) and cols.tolist() == [0]
    with pytest.raises(ValueError, match="all costs are 0"):
        HungarianMatcher(0.0, 0.0, 0.0)
