"""Sigmoid focal classification loss of Conditional / Deformable DETR against hand computations; the class-head
width and prior bias it implies; the focal loss inside SetCriterion (incl. aux layers)."""

import math

import pytest
import torch

from siamese_detr.modeling import FocalHungarianMatcher, SetCriterion
from siamese_detr.modeling.criterion import sigmoid_focal_loss


class FixedMatcher:
    def __init__(self, indices):
        self.indices = [(torch.tensor(r, dtype=torch.int64), torch.tensor(c, dtype=torch.int64)) for r, c in indices]

    def __call__(self, outputs, targets):
        return self.indices


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _focal(logit, positive, alpha=0.25, gamma=2.0):
    """Lin et al. 2017, Eq. 5: -alpha_t (1 - p_t)^gamma log(p_t)."""
    p = _sigmoid(logit)
    p_t = p if positive else 1 - p
    alpha_t = alpha if positive else 1 - alpha
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


def test_sigmoid_focal_loss_by_hand():
    logits = [[[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]]]  # B = 1, Q = 3, K = 2
    onehot = [[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]]
    total = sum(_focal(logits[0][q][k], onehot[0][q][k] == 1.0) for q in range(3) for k in range(2))
    got = sigmoid_focal_loss(torch.tensor(logits, dtype=torch.float64), torch.tensor(onehot, dtype=torch.float64), 2.0)
    # official reduction: mean over queries, sum over batch and classes, / num_boxes
    assert got.item() == pytest.approx(total / 3 / 2.0, rel=1e-12)


def test_alpha_negative_disables_weighting():
    x, t = torch.tensor([[[0.3]]], dtype=torch.float64), torch.tensor([[[1.0]]], dtype=torch.float64)
    p = _sigmoid(0.3)
    assert sigmoid_focal_loss(x, t, 1.0, alpha=-1).item() == pytest.approx(-(1 - p) ** 2 * math.log(p), rel=1e-12)


def test_sigmoid_focal_loss_with_gamma_0_is_the_alpha_weighted_bce():
    """gamma = 0 removes the modulating factor: the loss is the alpha_t-weighted binary cross-entropy (plain BCE
    with alpha < 0), with the same reduction (mean over queries, sum over batch and classes, / num_boxes)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 2, dtype=torch.float64) * 2
    targets = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]]],
                           dtype=torch.float64)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    alpha_t = 0.4 * targets + 0.6 * (1 - targets)
    got = sigmoid_focal_loss(logits, targets, 4.0, alpha=0.4, gamma=0.0)
    assert got.item() == pytest.approx(float((alpha_t * bce).mean(1).sum() / 4.0), rel=1e-12)
    unweighted = sigmoid_focal_loss(logits, targets, 4.0, alpha=-1, gamma=0.0)
    assert unweighted.item() == pytest.approx(float(bce.mean(1).sum() / 4.0), rel=1e-12)


def test_sigmoid_focal_loss_gamma_3_alpha_0_4_by_hand():
    """Non-default gamma and alpha: three logits (one positive) written out by hand, / num_boxes = 2."""
    x0, x1, x2 = 0.7, -1.2, 2.0
    p0, p1, p2 = (1 / (1 + math.exp(-x)) for x in (x0, x1, x2))
    expected = (
        0.6 * p0 ** 3 * -math.log(1 - p0)  # negative
        + 0.4 * (1 - p1) ** 3 * -math.log(p1)  # positive
        + 0.6 * p2 ** 3 * -math.log(1 - p2)  # negative
    ) / 2.0
    got = sigmoid_focal_loss(torch.tensor([[[x0, x1, x2]]], dtype=torch.float64),
                             torch.tensor([[[0.0, 1.0, 0.0]]], dtype=torch.float64), 2.0, alpha=0.4, gamma=3.0)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_class_head_width_and_prior_bias():
    ce = SetCriterion(5, FixedMatcher([]))
    focal = SetCriterion(5, FixedMatcher([]), class_loss="focal")
    assert ce.num_class_logits == 6 and ce.initial_class_bias is None
    assert focal.num_class_logits == 5
    assert _sigmoid(focal.initial_class_bias) == pytest.approx(0.01, rel=1e-12)
    with pytest.raises(ValueError, match="model.criterion.class_loss must be 'ce' or 'focal', got 'bce'"):
        SetCriterion(5, FixedMatcher([]), class_loss="bce")


def test_criterion_focal_loss_ce_by_hand():
    # 2 images x 2 queries x K = 3; image 0: query 1 <-> target 0 (label 2); image 1: query 0 <-> target 0 (label 0),
    # query 1 <-> target 1 (label 1)
    logits = [[[0.2, -1.0, 0.4], [1.5, 0.3, -0.7]], [[-0.3, 0.8, 2.0], [0.0, -2.5, 1.1]]]
    positives = {(0, 1, 2), (1, 0, 0), (1, 1, 1)}
    targets = [
        {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])},
        {"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.2, 0.2]])},
    ]
    crit = SetCriterion(3, FixedMatcher([([1], [0]), ([0, 1], [0, 1])]), class_loss="focal", focal_alpha=0.3)
    outputs = {"pred_logits": torch.tensor(logits, dtype=torch.float64), "pred_boxes": torch.full((2, 2, 4), 0.5)}
    losses = crit(outputs, targets)
    total = sum(
        _focal(logits[b][q][k], (b, q, k) in positives, alpha=0.3) for b in range(2) for q in range(2) for k in range(3)
    )
    # official: sigmoid_focal_loss (mean over Q) * Q == sum over all entries / num_boxes
    assert losses["loss_ce"].item() == pytest.approx(total / 3, rel=1e-12)


def test_criterion_passes_focal_gamma_and_alpha_through():
    """SetCriterion(focal_gamma=3, focal_alpha=0.4): loss_ce is the sum of the focal terms with THESE parameters
    over all queries and classes, divided by num_boxes = 2 (1 image, Q = 3, K = 2; query 0 <-> target 1 of label
    0, query 2 <-> target 0 of label 1)."""
    logits = [[[0.4, -0.9], [1.3, 0.2], [-0.6, 2.2]]]
    positives = {(0, 0), (2, 1)}
    targets = [{"labels": torch.tensor([1, 0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]])}]
    crit = SetCriterion(2, FixedMatcher([([0, 2], [1, 0])]), class_loss="focal", focal_alpha=0.4, focal_gamma=3.0)
    losses = crit({"pred_logits": torch.tensor(logits, dtype=torch.float64), "pred_boxes": torch.full((1, 3, 4), 0.5)},
                  targets)
    total = sum(_focal(logits[0][q][k], (q, k) in positives, alpha=0.4, gamma=3.0) for q in range(3) for k in range(2))
    assert losses["loss_ce"].item() == pytest.approx(total / 2, rel=1e-12)


def test_focal_loss_without_targets_counts_every_query_as_negative():
    logits = torch.tensor([[[0.5, -0.5]]], dtype=torch.float64)
    crit = SetCriterion(2, FixedMatcher([([], [])]), class_loss="focal")
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    losses = crit({"pred_logits": logits, "pred_boxes": torch.full((1, 1, 4), 0.5)}, targets)
    expected = _focal(0.5, False) + _focal(-0.5, False)  # num_boxes clamps to 1
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-12)
    assert losses["loss_bbox"].item() == 0.0


def test_focal_criterion_with_focal_matcher_end_to_end():
    """The focal matcher picks the query whose box and class agree; aux layers get their own suffixed copy."""
    logits = torch.full((1, 3, 2), -3.0)
    logits[0, 2, 1] = 3.0
    boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1], [0.5, 0.5, 0.3, 0.3]]])
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]])}]
    crit = SetCriterion(2, FocalHungarianMatcher(), class_loss="focal")
    losses, indices = crit(
        {"pred_logits": logits, "pred_boxes": boxes, "aux_outputs": [{"pred_logits": logits, "pred_boxes": boxes}]},
        targets,
        return_indices=True,
    )
    assert [i[0][0].tolist() for i in indices] == [[2], [2]]
    assert losses["loss_bbox"].item() == pytest.approx(0.0, abs=1e-7)
    assert losses["loss_ce_0"].item() == pytest.approx(losses["loss_ce"].item(), rel=1e-7)
    expected = sum(_focal(float(logits[0, q, k]), (q, k) == (2, 1)) for q in range(3) for k in range(2))
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-5)


def test_alpha_0_weights_only_the_negatives():
    """``alpha = 0`` is a legal weighting (``alpha >= 0`` enables it, only ``alpha < 0`` disables it): positives get
    weight 0, negatives 1 - 0 = 1. One positive (logit 0.3) and one negative (logit -0.8), / num_boxes = 1."""
    x = torch.tensor([[[0.3, -0.8]]], dtype=torch.float64)
    t = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    p_neg = _sigmoid(-0.8)
    expected = (0.0 + 1.0 * p_neg ** 2 * -math.log(1 - p_neg)) / 1  # mean over the single query
    assert sigmoid_focal_loss(x, t, 1.0, alpha=0.0).item() == pytest.approx(expected, rel=1e-12)
