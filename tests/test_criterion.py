"""SetCriterion losses against hand-computed values; GIoU edge cases; aux losses; loss weighting."""

import math

import pytest
import torch

from siamese_detr.modeling import HungarianMatcher, SetCriterion, weight_losses


class FixedMatcher:
    """Returns a prescribed matching, so the loss formulas are tested independently of the matcher."""

    def __init__(self, indices):
        self.indices = [
            (torch.tensor(r, dtype=torch.int64), torch.tensor(c, dtype=torch.int64)) for r, c in indices
        ]

    def __call__(self, outputs, targets):
        return self.indices


def _ce(logits, target):
    return -math.log(math.exp(logits[target]) / sum(math.exp(v) for v in logits))


def _criterion(indices, num_classes=2, eos_coef=0.1):
    return SetCriterion(num_classes, FixedMatcher(indices), eos_coef=eos_coef)


def test_losses_match_hand_computed_values():
    # 2 images, 2 queries each, K = 2 classes (+ no-object = index 2); image 0 has 1 target, image 1 has 2.
    logits = [[[2.0, 0.5, -1.0], [0.1, 0.2, 1.5]], [[0.3, -0.4, 0.9], [1.0, 2.0, 0.0]]]
    boxes = [[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1]], [[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.4, 0.2]]]
    targets = [
        {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.6, 0.2, 0.2]])},
        {"labels": torch.tensor([1, 0]), "boxes": torch.tensor([[0.6, 0.6, 0.4, 0.4], [0.3, 0.3, 0.2, 0.2]])},
    ]
    # image 0: query 0 <-> target 0; image 1: query 0 <-> target 1, query 1 <-> target 0
    crit = _criterion([([0], [0]), ([0, 1], [1, 0])])
    losses = crit({"pred_logits": torch.tensor(logits), "pred_boxes": torch.tensor(boxes)}, targets)

    # classification: targets per query (0, no-object) and (0, 1); weights 1 for classes, 0.1 for no-object
    per_query = [
        (logits[0][0], 0, 1.0),
        (logits[0][1], 2, 0.1),
        (logits[1][0], 0, 1.0),
        (logits[1][1], 1, 1.0),
    ]
    expected_ce = sum(w * _ce(lg, t) for lg, t, w in per_query) / sum(w for _, _, w in per_query)
    assert losses["loss_ce"].item() == pytest.approx(expected_ce, rel=1e-6)

    num_boxes = 3
    # L1 of the matched pairs in cxcywh
    l1 = (0.0 + 0.1 + 0.0 + 0.2) + (0.0 + 0.0 + 0.0 + 0.0) + (0.1 + 0.0 + 0.0 + 0.2)
    assert losses["loss_bbox"].item() == pytest.approx(l1 / num_boxes, rel=1e-5)

    # GIoU by hand (xyxy):
    # pair A: pred (0.4,0.3,0.6,0.7) area 0.08, tgt (0.4,0.5,0.6,0.7) area 0.04 inside it
    #         -> IoU 0.5, hull = pred
    # pair B: identical boxes -> 1
    # pair C: pred (0.5,0.5,0.9,0.7) area 0.08, tgt (0.4,0.4,0.8,0.8) area 0.16;
    #         inter (0.5,0.5,0.8,0.7) = 0.06;
    #         union 0.18; hull (0.4,0.4,0.9,0.8) = 0.2
    giou_a, giou_b = 0.5, 1.0
    giou_c = 0.06 / 0.18 - (0.2 - 0.18) / 0.2
    expected_giou = ((1 - giou_a) + (1 - giou_b) + (1 - giou_c)) / num_boxes
    assert losses["loss_giou"].item() == pytest.approx(expected_giou, rel=1e-5)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou"}


@pytest.mark.parametrize(
    "pred_xyxy, tgt_xyxy, expected_giou",
    [
        ((0.1, 0.2, 0.5, 0.6), (0.1, 0.2, 0.5, 0.6), 1.0),  # identical
        # disjoint: IoU 0, union 0.04 + 0.04, hull (0,0)-(0.7,0.7) = 0.49
        ((0.0, 0.0, 0.2, 0.2), (0.5, 0.5, 0.7, 0.7), -(0.49 - 0.08) / 0.49),
        # contained: hull is the outer box so GIoU = IoU = area ratio 0.16 / 0.64
        ((0.1, 0.1, 0.5, 0.5), (0.0, 0.0, 0.8, 0.8), 0.16 / 0.64),
    ],
)
def test_giou_edge_cases(pred_xyxy, tgt_xyxy, expected_giou):
    def cxcywh(b):
        return [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]]

    crit = _criterion([([0], [0])])
    outputs = {"pred_logits": torch.zeros(1, 1, 3), "pred_boxes": torch.tensor([[cxcywh(pred_xyxy)]])}
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([cxcywh(tgt_xyxy)])}]
    losses = crit(outputs, targets)
    assert 1 - losses["loss_giou"].item() == pytest.approx(expected_giou, abs=1e-6)


def test_no_targets_gives_zero_box_losses_and_all_no_object():
    crit = _criterion([([], [])], eos_coef=0.1)
    logits = torch.tensor([[[0.2, 0.1, 0.7], [1.0, -1.0, 0.0]]], requires_grad=True)
    outputs = {"pred_logits": logits, "pred_boxes": torch.rand(1, 2, 4, requires_grad=True)}
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    losses = crit(outputs, targets)
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == 0.0
    expected = (_ce([0.2, 0.1, 0.7], 2) + _ce([1.0, -1.0, 0.0], 2)) / 2  # equal weights cancel
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-6)
    sum(losses.values()).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_aux_losses_and_returned_indices():
    torch.manual_seed(0)
    matcher = HungarianMatcher()
    crit = SetCriterion(3, matcher, eos_coef=0.1)
    targets = [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]
    layers = [
        {"pred_logits": torch.randn(2, 4, 4), "pred_boxes": torch.rand(2, 4, 4) * 0.4 + 0.3} for _ in range(3)
    ]
    outputs = dict(layers[-1], aux_outputs=layers[:-1])
    losses, indices = crit(outputs, targets, return_indices=True)

    base = {"loss_ce", "loss_bbox", "loss_giou"}
    assert set(losses) == base | {f"{k}_{i}" for k in base for i in range(2)}
    assert len(indices) == 3
    for i, layer in enumerate(layers):
        expected = matcher(layer, targets)
        assert len(indices[i]) == len(expected) == len(targets)
        for (r, c), (re_, ce_) in zip(indices[i], expected):
            assert torch.equal(r, re_) and torch.equal(c, ce_)
        # the layer's L1 by hand from its own matches (3 target boxes in the batch)
        l1 = sum(
            (layer["pred_boxes"][b, q] - targets[b]["boxes"][t]).abs().sum().item()
            for b, (rows, cols) in enumerate(indices[i]) for q, t in zip(rows.tolist(), cols.tolist())
        )
        suffix = "" if i == 2 else f"_{i}"
        assert losses["loss_bbox" + suffix].item() == pytest.approx(l1 / 3, rel=1e-6)
        # each aux copy equals the loss of that layer computed on its own
        alone = crit(layer, targets)
        suffix = "" if i == 2 else f"_{i}"
        for k in base:
            assert torch.allclose(losses[k + suffix], alone[k])


def test_weight_losses_resolves_aux_keys():
    losses = {"loss_ce": torch.tensor(2.0), "loss_ce_0": torch.tensor(3.0), "loss_bbox_4": torch.tensor(1.0)}
    weighted = weight_losses(losses, {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_ce_0": 0.5})
    assert weighted["loss_ce"].item() == 4.0
    assert weighted["loss_ce_0"].item() == 1.5  # explicit per-layer key wins
    assert weighted["loss_bbox_4"].item() == 5.0  # resolved from the base key
    with pytest.raises(KeyError, match="loss_giou"):
        weight_losses({"loss_giou": torch.tensor(1.0)}, {"loss_ce": 1.0})


def test_unknown_loss_name_raises():
    crit = SetCriterion(2, FixedMatcher([([0], [0])]), losses=("class", "masks"))
    outputs = {"pred_logits": torch.zeros(1, 1, 3), "pred_boxes": torch.full((1, 1, 4), 0.5)}
    targets = [{"labels": torch.tensor([0]), "boxes": torch.full((1, 4), 0.5)}]
    with pytest.raises(KeyError, match="masks"):
        crit(outputs, targets)


def test_empty_weight_is_not_in_state_dict():
    crit = SetCriterion(5, HungarianMatcher(), eos_coef=0.2)
    assert "empty_weight" not in crit.state_dict()
    assert crit.empty_weight.tolist() == pytest.approx([1, 1, 1, 1, 1, 0.2])


def test_encoder_outputs_use_binary_targets_and_enc_suffix():
    """Two-stage "enc_outputs": matched against the targets with every label 0, losses suffixed ``_enc``,
    weighted with the base key's weight."""
    seen = []

    class RecordingMatcher:
        def __call__(self, outputs, targets):
            seen.append([t["labels"].tolist() for t in targets])
            return [(torch.tensor([0]), torch.tensor([0]))]

    crit = SetCriterion(3, RecordingMatcher(), class_loss="focal")
    enc_logits = torch.tensor([[[0.5, -1.0, 0.2], [-0.3, 0.1, 0.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]])
    outputs = {
        "pred_logits": torch.zeros(1, 2, 3),
        "pred_boxes": boxes,
        "enc_outputs": {"pred_logits": enc_logits, "pred_boxes": boxes},
    }
    targets = [{"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    losses = crit(outputs, targets)
    assert seen == [[[2]], [[0]]]  # final layer with the real label, then the encoder with label 0
    assert targets[0]["labels"].tolist() == [2]  # the caller's targets are not modified
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_enc", "loss_bbox_enc", "loss_giou_enc"}

    def focal(x, positive, alpha=0.25):
        p = 1 / (1 + math.exp(-x))
        p_t = p if positive else 1 - p
        return -(alpha if positive else 1 - alpha) * (1 - p_t) ** 2 * math.log(p_t)

    expected = sum(focal(float(enc_logits[0, q, k]), (q, k) == (0, 0)) for q in range(2) for k in range(3))
    assert losses["loss_ce_enc"].item() == pytest.approx(expected, rel=1e-5)
    assert losses["loss_bbox_enc"].item() == pytest.approx(0.0, abs=1e-7)

    weighted = weight_losses(losses, {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0})
    assert weighted["loss_ce_enc"].item() == pytest.approx(2 * losses["loss_ce_enc"].item())
    with pytest.raises(KeyError):
        weight_losses({"loss_ce_encoder": torch.tensor(1.0)}, {"loss_ce": 1.0})


def test_weight_losses_resolves_aux_keys_of_two_digit_layers():
    """A decoder of more than 11 layers has aux copies ``loss_x_10``, ``loss_x_11``...: their weight is the base
    key's (the suffix is any number of digits, not one)."""
    losses = {"loss_ce_10": torch.tensor(1.0), "loss_giou_11": torch.tensor(3.0)}
    weighted = weight_losses(losses, {"loss_ce": 2.0, "loss_giou": 0.5})
    assert weighted["loss_ce_10"].item() == 2.0
    assert weighted["loss_giou_11"].item() == 1.5


def _one_query_outputs():
    return {"pred_logits": torch.zeros(1, 1, 3), "pred_boxes": torch.full((1, 1, 4), 0.5)}


@pytest.mark.parametrize(
    "labels, bad",
    [
        ([[0], [2]], 2),  # label K = 2 would index the no-object column (an object trained as background)
        ([[1], [-1]], -1),  # with the focal loss -1 would index the last class
        ([[5, -3], [1]], -3),  # a negative label is named even when a label above K is there too
        ([[], [0, 7]], 7),  # the first image has no target: the later ones are still checked
    ],
)
def test_out_of_range_target_labels_are_refused_by_name(labels, bad):
    """Every target label must lie in [0, K) (K = 2 here): the first out-of-range value found (negative ones
    first) is named in the ValueError, whichever image it is in."""
    crit = _criterion([([0], [0]), ([0], [0])])
    outputs = {"pred_logits": torch.zeros(2, 1, 3), "pred_boxes": torch.full((2, 1, 4), 0.5)}
    targets = [
        {"labels": torch.tensor(lab, dtype=torch.int64), "boxes": torch.full((len(lab), 4), 0.5)} for lab in labels
    ]
    with pytest.raises(ValueError, match=rf"target label {bad} is outside \[0, 2\)"):
        crit(outputs, targets)


def test_labels_on_both_ends_of_the_range_are_accepted():
    """Labels 0 and K - 1 are legal (no error), also in an image after an empty one."""
    crit = _criterion([([], []), ([0, 1], [0, 1])])
    outputs = {"pred_logits": torch.zeros(2, 2, 3), "pred_boxes": torch.full((2, 2, 4), 0.5)}
    targets = [
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
        {"labels": torch.tensor([0, 1]), "boxes": torch.full((2, 4), 0.5)},
    ]
    losses = crit(outputs, targets)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou"}


def test_box_losses_are_divided_by_the_number_of_targets_not_of_matched_pairs():
    """DETR divides the box losses by ``num_boxes``, the number of TARGET boxes. With 1 query and 2 targets only
    one pair is matched, yet the sums are divided by 2.

    Pair: pred (0.5, 0.5, 0.2, 0.4) cxcywh -> xyxy (0.4, 0.3, 0.6, 0.7), target 0 (0.5, 0.6, 0.2, 0.2) -> (0.4,
    0.5, 0.6, 0.7) inside it: L1 = 0.1 + 0.2 = 0.3, GIoU = IoU = 0.04 / 0.08 = 0.5."""
    crit = _criterion([([0], [0])])
    outputs = {"pred_logits": torch.zeros(1, 1, 3), "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.4]]])}
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.5, 0.6, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]])}]
    losses = crit(outputs, targets)
    assert losses["loss_bbox"].item() == pytest.approx(0.3 / 2, rel=1e-5)
    assert losses["loss_giou"].item() == pytest.approx((1 - 0.5) / 2, rel=1e-5)


def test_a_single_matched_query_gets_its_class_as_target():
    """One target (label 1) matched to query 1 of 2 (K = 2): query 1's CE target is class 1 (weight 1), query 0's
    the no-object class 2 (weight eos_coef = 0.1); weighted mean by hand."""
    logits = [[0.3, -0.2, 0.8], [0.1, 1.2, -0.4]]
    crit = _criterion([([1], [0])], eos_coef=0.1)
    outputs = {"pred_logits": torch.tensor([logits]), "pred_boxes": torch.full((1, 2, 4), 0.5)}
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    losses = crit(outputs, targets)
    expected = (0.1 * _ce(logits[0], 2) + 1.0 * _ce(logits[1], 1)) / (0.1 + 1.0)
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-6)


def test_half_precision_boxes_are_compared_with_unrounded_float32_targets():
    """Under autocast the predicted boxes are float16, the targets float32: the box losses are computed in float32
    without rounding the targets to float16. Target width 0.2501 is 0.25 in float16 (spacing 2^-12 there), so a
    rounded target would give L1 = 0 instead of |0.25 - 0.2501|."""
    crit = _criterion([([0], [0])])
    pred = torch.tensor([[[0.5, 0.5, 0.25, 0.25]]], dtype=torch.float16)
    tgt = torch.tensor([[0.5, 0.5, 0.2501, 0.25]], dtype=torch.float32)
    assert tgt.half()[0, 2].item() == 0.25  # rounding to float16 would erase the difference
    losses = crit({"pred_logits": torch.zeros(1, 1, 3), "pred_boxes": pred}, [{"labels": torch.tensor([0]),
                                                                               "boxes": tgt}])
    assert losses["loss_bbox"].dtype == torch.float32
    assert losses["loss_bbox"].item() == pytest.approx(abs(0.25 - float(tgt[0, 2])), rel=1e-4)


def test_an_aux_copy_without_its_base_weight_is_refused():
    """``loss_giou_3`` with neither ``loss_giou_3`` nor ``loss_giou`` in the weights raises KeyError naming it, rather
    than counting with weight 1."""
    with pytest.raises(KeyError, match="loss_giou_3"):
        weight_losses({"loss_giou_3": torch.tensor(1.0)}, {"loss_ce": 1.0, "loss_bbox": 5.0})


def _as_rank_of_two(monkeypatch, other_rank_value):
    """The criterion's view of a 2-process run in which the other process contributes ``other_rank_value`` to
    every all-reduce (a sum), without starting processes."""
    from siamese_detr.modeling import criterion as C

    monkeypatch.setattr(C.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(C.dist, "all_reduce", lambda tensor: tensor.add_(other_rank_value))
    return C


def test_weighted_ce_under_ddp_divides_by_the_mean_class_weight_sum_of_the_processes(monkeypatch):
    C = _as_rank_of_two(monkeypatch, 5.0)
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 1.0, 0.0], [0.0, 0.0, 3.0]]])  # 1 image, 3 queries, 2 + 1
    target = torch.tensor([[0, 2, 2]])  # query 0 -> class 0, the others -> no-object
    weight = torch.tensor([1.0, 1.0, 0.1])
    ce = [-torch.log_softmax(logits[0, q], 0)[t] for q, t in enumerate(target[0].tolist())]
    by_hand = (1.0 * ce[0] + 0.1 * ce[1] + 0.1 * ce[2]) / ((1.2 + 5.0) / 2)  # local weight sum 1.2, other 5
    assert C.weighted_cross_entropy(logits, target, weight).item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_weighted_ce_under_ddp_is_zero_not_nan_when_no_process_has_weight(monkeypatch):
    C = _as_rank_of_two(monkeypatch, 0.0)
    logits = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    target = torch.full((2, 4), 2)  # every query no-object, whose weight is 0 (eos_coef 0)
    loss = C.weighted_cross_entropy(logits, target, torch.tensor([1.0, 1.0, 0.0]))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() == 0
