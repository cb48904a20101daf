"""Hybrid matching (H-DETR): the extra one-to-many queries are isolated from the ordinary ones, each target
gets ``K`` positives among them, their losses are weighted as documented, and inference ignores them."""

import itertools
import math
import random

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.events import EventStorage

from siamese_detr.modeling import (
    DETR,
    ConditionalDetrTransformer,
    FocalHungarianMatcher,
    PositionEmbeddingSine,
    SetCriterion,
)
from siamese_detr.modeling.hybrid_matching import group_self_attn_mask, repeat_targets, split_query_groups
from siamese_detr.modeling.transformers.deformable import DeformableDetrTransformer
from test_detr_model import NUM_CLASSES, NUM_QUERIES, PatchBackbone, make_input, make_model
from test_matcher import _focal_pair_cost, _random_boxes

NUM_ONE2MANY, REPEAT = 8, 3


def _copy_heads(model: DETR, num_one2many=NUM_ONE2MANY, repeat=REPEAT, weight=1.0, seed=1) -> DETR:
    """A hybrid-matching DETR sharing every module (hence every weight) of ``model``."""
    torch.manual_seed(seed)
    hybrid = DETR(
        backbone=model.backbone, position_embedding=model.position_embedding, transformer=model.transformer,
        num_classes=NUM_CLASSES, num_queries=NUM_QUERIES, criterion=model.criterion, weight_dict=model.weight_dict,
        postprocess=model.postprocess, num_queries_one2many=num_one2many, k_one2many=repeat,
        lambda_one2many=weight,
    )
    missing = hybrid.load_state_dict(model.state_dict(), strict=False).missing_keys
    assert missing == ["query_embed_one2many.weight"]
    return hybrid


def _deformable_model(seed=0) -> DETR:
    torch.manual_seed(seed)
    transformer = DeformableDetrTransformer(
        d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=64, dropout=0.0,
        num_feature_levels=1, with_box_refine=True,
    )
    criterion = SetCriterion(NUM_CLASSES, FocalHungarianMatcher(2.0, 5.0, 2.0), class_loss="focal")
    return DETR(
        backbone=PatchBackbone(), position_embedding=PositionEmbeddingSine(16, normalize=True),
        transformer=transformer, num_classes=NUM_CLASSES, num_queries=NUM_QUERIES, criterion=criterion,
        weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
    )


def _conditional_model(seed=0) -> DETR:
    torch.manual_seed(seed)
    transformer = ConditionalDetrTransformer(d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=2,
                                             dim_feedforward=64, dropout=0.0)
    criterion = SetCriterion(NUM_CLASSES, FocalHungarianMatcher(2.0, 5.0, 2.0), class_loss="focal")
    return DETR(
        backbone=PatchBackbone(), position_embedding=PositionEmbeddingSine(16, normalize=True),
        transformer=transformer, num_classes=NUM_CLASSES, num_queries=NUM_QUERIES, criterion=criterion,
        weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
    )


def _inputs():
    return [
        make_input(64, 96, boxes=((4, 6, 30, 40), (40, 10, 90, 60)), classes=(1, 2)),
        make_input(64, 64, boxes=((0, 0, 20, 20),), classes=(0,), seed=1),
    ]


# ------------------------------------------------------------------------------------------------ helpers
def test_group_mask_blocks_exactly_the_pairs_across_groups():
    mask = group_self_attn_mask(3, 2)
    for i in range(5):
        for j in range(5):
            assert bool(mask[i, j]) == ((i < 3) != (j < 3))


def test_repeat_targets_copies_every_box_and_label():
    """Every block ``k * n : (k + 1) * n`` of the repeated targets is the original boxes and labels (the documented
    block layout the one-to-many matching relies on), not just one of them."""
    targets = [{"labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5] * 4]),
                "image_id": 7}]
    rep = repeat_targets(targets, 3)[0]
    assert rep["labels"].tolist() == [2, 0] * 3
    assert rep["boxes"].shape == (6, 4) and rep["image_id"] == 7
    for k in range(3):
        assert torch.equal(rep["boxes"][2 * k:2 * (k + 1)], targets[0]["boxes"])
        assert torch.equal(rep["labels"][2 * k:2 * (k + 1)], targets[0]["labels"])
    with pytest.raises(ValueError, match="k_one2many"):
        repeat_targets(targets, 0)


def test_split_refuses_outputs_it_cannot_split():
    outputs = {"pred_logits": torch.zeros(1, 5, 2), "pred_boxes": torch.zeros(1, 5, 4), "enc_outputs": {}}
    with pytest.raises(ValueError, match="enc_outputs"):
        split_query_groups(outputs, 3)


def test_split_sends_every_aux_layer_to_its_own_group():
    """Each auxiliary layer is split like the final one: the first ``Q1`` queries to the one-to-one group, the
    rest to the one-to-many group (distinct values per layer, key and query, so no swap can go unseen)."""
    b, q1, q2, k, layers = 2, 3, 4, 5, 3

    def layer(i):
        logits = torch.arange(b * (q1 + q2) * k, dtype=torch.float32).view(b, q1 + q2, k) + 1000.0 * i
        boxes = torch.arange(b * (q1 + q2) * 4, dtype=torch.float32).view(b, q1 + q2, 4) + 1000.0 * i + 500.0
        return {"pred_logits": logits, "pred_boxes": boxes}

    outputs = dict(layer(layers - 1), aux_outputs=[layer(i) for i in range(layers - 1)])
    one2one, one2many = split_query_groups(outputs, q1)
    assert len(one2one["aux_outputs"]) == len(one2many["aux_outputs"]) == layers - 1
    pairs = [(one2one, outputs)] + list(zip(one2one["aux_outputs"], outputs["aux_outputs"]))
    many = [(one2many, outputs)] + list(zip(one2many["aux_outputs"], outputs["aux_outputs"]))
    for key in ("pred_logits", "pred_boxes"):
        for got, full in pairs:
            assert torch.equal(got[key], full[key][:, :q1]), key
        for got, full in many:
            assert got[key].shape[1] == q2
            assert torch.equal(got[key], full[key][:, q1:]), key


# ------------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("build", [make_model, _conditional_model, _deformable_model],
                         ids=["vanilla", "conditional", "deformable"])
def test_one2one_outputs_do_not_depend_on_the_extra_queries(build):
    plain = build().eval()
    hybrid = _copy_heads(plain, NUM_ONE2MANY, REPEAT, 1.0, seed=1).eval()
    images = plain.preprocess_image(_inputs())
    with torch.no_grad():
        reference = plain.forward_outputs(images)
        one2one, one2many = hybrid.hybrid_outputs(images)
        torch.nn.init.normal_(hybrid.query_embed_one2many.weight, std=3.0)
        one2one_other, _ = hybrid.hybrid_outputs(images)
    assert one2many["pred_boxes"].shape == (2, NUM_ONE2MANY, 4)
    assert len(one2many["aux_outputs"]) == len(reference["aux_outputs"])
    for out in (one2one, one2one_other):
        torch.testing.assert_close(out["pred_logits"], reference["pred_logits"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out["pred_boxes"], reference["pred_boxes"], rtol=1e-5, atol=1e-5)
        assert len(out["aux_outputs"]) == len(reference["aux_outputs"]) > 0
        for a, r in zip(out["aux_outputs"], reference["aux_outputs"]):
            torch.testing.assert_close(a["pred_logits"], r["pred_logits"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(a["pred_boxes"], r["pred_boxes"], rtol=1e-5, atol=1e-5)


def _brute_force_one2many(cost, num_queries, num_copies):
    """Min over injective maps of the target copies j -> query perm[j] of ``sum cost[perm[j]][j]``."""
    return min(sum(cost[q][j] for j, q in enumerate(perm))
               for perm in itertools.permutations(range(num_queries), num_copies))


def _one2many_cost(logits, boxes, labels, tgt_boxes, repeat):
    """Plain-python focal matching cost (official defaults) of every query against copy ``j`` of the targets
    repeated ``repeat`` times, copy ``j`` being target ``j % n`` (computed from the ORIGINAL targets)."""
    n = len(labels)
    return [[_focal_pair_cost(logits[q], boxes[q], labels[j % n], tgt_boxes[j % n]) for j in range(repeat * n)]
            for q in range(len(boxes))]


def test_every_target_gets_repeat_positives_among_the_extra_queries():
    """The extra queries are matched one-to-one against the targets repeated ``REPEAT`` times: each target gets
    ``REPEAT`` distinct positives, and the assignment minimises the focal matching cost against the ORIGINAL
    targets' copies (brute force over all injective assignments), so wrong copies or a suboptimal assignment
    fail."""
    hybrid = _copy_heads(_deformable_model(), NUM_ONE2MANY, REPEAT, 1.0, seed=1)
    inputs = _inputs()
    images = hybrid.preprocess_image(inputs)
    targets = hybrid.prepare_targets(inputs, images.image_sizes, hybrid.device)
    with torch.no_grad():
        _, one2many = hybrid.hybrid_outputs(images)
    _, indices = hybrid.criterion(one2many, repeat_targets(targets, REPEAT), return_indices=True)
    for b, ((queries, matched), target) in enumerate(zip(indices[-1], targets)):
        n = len(target["labels"])
        assert len(set(queries.tolist())) == REPEAT * n  # distinct queries
        assert sorted((matched % n).tolist()) == sorted(list(range(n)) * REPEAT)
        cost = _one2many_cost(one2many["pred_logits"][b].tolist(), one2many["pred_boxes"][b].tolist(),
                              target["labels"].tolist(), target["boxes"].tolist(), REPEAT)
        total = sum(cost[q][j] for q, j in zip(queries.tolist(), matched.tolist()))
        assert total == pytest.approx(_brute_force_one2many(cost, NUM_ONE2MANY, REPEAT * n), abs=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_one2many_matching_is_optimal_against_brute_force(seed):
    """2 targets x repeat 2 over 5 queries: the focal matcher's assignment of the 4 copies costs the minimum over
    all 5P4 = 120 injective assignments, the cost computed by hand from the original targets."""
    rng = random.Random(300 + seed)
    num_queries, num_classes, repeat = 5, 3, 2
    logits = [[rng.gauss(0, 2) for _ in range(num_classes)] for _ in range(num_queries)]
    boxes = _random_boxes(rng, num_queries)
    labels, tgt_boxes = [rng.randrange(num_classes) for _ in range(2)], _random_boxes(rng, 2)
    targets = [{"labels": torch.tensor(labels), "boxes": torch.tensor(tgt_boxes, dtype=torch.float64)}]
    outputs = {"pred_logits": torch.tensor([logits], dtype=torch.float64),
               "pred_boxes": torch.tensor([boxes], dtype=torch.float64)}
    rows, cols = FocalHungarianMatcher()(outputs, repeat_targets(targets, repeat))[0]
    assert len(set(rows.tolist())) == 4 and sorted(cols.tolist()) == [0, 1, 2, 3]
    cost = _one2many_cost(logits, boxes, labels, tgt_boxes, repeat)
    total = sum(cost[q][j] for q, j in zip(rows.tolist(), cols.tolist()))
    best = _brute_force_one2many(cost, num_queries, 4)
    assert math.isfinite(best) and total == pytest.approx(best, abs=1e-9)


def test_losses_add_the_weighted_one2many_copies():
    plain = _deformable_model()
    inputs = _inputs()
    full = _copy_heads(plain, NUM_ONE2MANY, REPEAT, 1.0, seed=1).train()
    half = _copy_heads(plain, NUM_ONE2MANY, REPEAT, 0.5, seed=1).train()
    with EventStorage():
        losses_full, losses_half, losses_plain = full(inputs), half(inputs), plain.train()(inputs)
    assert set(losses_full) == set(losses_plain) | {f"{k}_one2many" for k in losses_plain}
    for k, v in losses_plain.items():
        torch.testing.assert_close(losses_full[k], v, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(losses_half[f"{k}_one2many"], 0.5 * losses_full[f"{k}_one2many"])
    # the one-to-many L1 loss is normalised by the repeated box count: by hand from the matching
    images = full.preprocess_image(inputs)
    targets = repeat_targets(full.prepare_targets(inputs, images.image_sizes, full.device), REPEAT)
    with torch.no_grad():
        _, one2many = full.hybrid_outputs(images)
    _, indices = full.criterion(one2many, targets, return_indices=True)
    l1 = sum((one2many["pred_boxes"][b, q] - t["boxes"][j]).abs().sum()
             for b, ((qs, js), t) in enumerate(zip(indices[-1], targets)) for q, j in zip(qs, js))
    expected = 5.0 * l1 / sum(len(t["boxes"]) for t in targets)
    torch.testing.assert_close(losses_full["loss_bbox_one2many"], expected, rtol=1e-5, atol=1e-6)


def test_one2one_losses_send_no_gradient_to_the_extra_queries():
    hybrid = _copy_heads(_deformable_model(), NUM_ONE2MANY, REPEAT, 1.0, seed=1).train()
    with EventStorage():
        losses = hybrid(_inputs())
    sum(v for k, v in losses.items() if not k.endswith("_one2many")).backward(retain_graph=True)
    grad = hybrid.query_embed_one2many.weight.grad
    assert grad is None or torch.count_nonzero(grad) == 0
    assert torch.count_nonzero(hybrid.query_embed.weight.grad) > 0
    hybrid.zero_grad()
    sum(v for k, v in losses.items() if k.endswith("_one2many")).backward()
    assert torch.count_nonzero(hybrid.query_embed_one2many.weight.grad) > 0


def test_inference_uses_the_ordinary_queries_alone(tmp_path):
    plain = _deformable_model().eval()
    DetectionCheckpointer(plain, save_dir=str(tmp_path)).save("plain")
    hybrid = DETR(
        backbone=PatchBackbone(), position_embedding=plain.position_embedding,
        transformer=DeformableDetrTransformer(d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=2,
                                              dim_feedforward=64, dropout=0.0, num_feature_levels=1,
                                              with_box_refine=True),
        num_classes=NUM_CLASSES, num_queries=NUM_QUERIES, criterion=plain.criterion,
        weight_dict=plain.weight_dict, num_queries_one2many=NUM_ONE2MANY,
    ).eval()
    # a checkpoint without the extra queries still loads everything else
    DetectionCheckpointer(hybrid).load(str(tmp_path / "plain.pth"))
    with torch.no_grad():
        expected = plain(_inputs())
        got = hybrid(_inputs())
    assert len(got) == len(expected) == len(_inputs())
    for e, g in zip(expected, got):
        torch.testing.assert_close(g["instances"].scores, e["instances"].scores, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g["instances"].pred_boxes.tensor, e["instances"].pred_boxes.tensor,
                                   rtol=1e-5, atol=1e-4)


def test_two_stage_is_rejected():
    plain = _deformable_model()
    two_stage = DeformableDetrTransformer(d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                          dim_feedforward=64, num_feature_levels=1, two_stage=True,
                                          with_box_refine=True)
    with pytest.raises(ValueError, match="learned object queries"):
        DETR(backbone=PatchBackbone(), position_embedding=plain.position_embedding, transformer=two_stage,
             num_classes=NUM_CLASSES, num_queries=NUM_QUERIES, criterion=plain.criterion,
             weight_dict=plain.weight_dict, num_queries_one2many=4)
