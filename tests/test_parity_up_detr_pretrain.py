"""UP-DETR pretraining: parity of ``UPDETRPretrain`` with the official code (github dddzg/up-detr @ 44c0c6eb,
``models/updetr.py`` ``UPDETR``, ``models/detr.py`` ``SetCriterion`` with the feature loss, pre-norm
``models/transformer.py``) on the fixture recorded by ``tests/fixtures/up_detr_pretrain/record.py`` (see its
README): tiny float64 model (d 32, 2 heads, 1 encoder + 2 decoder layers, Q = 10 queries, n = 2 patches per
image, dropout 0), the official weights loaded through OUR ``up_detr`` converter, a stub backbone returning the
recorded maps of the image batch and of the patches (so both sides take the same backbone tensors).

Compared: encoder memory ``[B, hw, d]``, decoder states ``[L, B, Q, d]``, class logits, boxes (cxcywh
normalised) and ``sem_embed`` features (official ``feature_align``) of every decoder layer, the matchings,
every weighted loss (CE, L1, GIoU, feature reconstruction and their ``_0`` aux copies), and the gradient of the
total loss w.r.t. every trainable parameter; with and without the official feature masking.

The one deliberate deviation is the class head: 2 logits (object, no-object) against the official 3
(``num_classes=2``: class 0 never a target, class 1 = object, 2 = no-object). They are equal under the rule
"official class-0 logit = -inf" with our rows = official rows (1, 2): then the official class-0 softmax
probability is 0, so the softmax over 3 logits equals ours over 2, the matching cost ``-p_1`` and the
weighted CE (weights (1, 0.1) of the targets 1 and 2) are ours, and the gradient of the class-0 row is 0. The
fixture applies it with a class-0 bias of -1000 (``exp`` underflows to exactly 0 in float64). Without it the
official loss differs (``free_class0.*``): the never-used class takes probability mass from both targets.
"""

from pathlib import Path

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone

from siamese_detr.checkpoint.registry import get_converter
from siamese_detr.modeling import DetrTransformer, HungarianMatcher, PositionEmbeddingSine, SetCriterion
from siamese_detr.modeling.meta_arch.up_detr import UPDETRPretrain
from siamese_detr.modeling.pretext.query_groups import group_attention_mask

from pretrain_parity_utils import assert_close, assert_gradients_match, per_layer, run_capturing

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "up_detr_pretrain" / "up_detr.pt"
WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_feature": 1.0}  # official models/__init__.py
OFFICIAL_ROWS = [1, 2]  # official class rows (object, no-object) -> our rows (0, 1)


def load_record():
    """The record and the official state dict (``q * 2^e`` exactly; class bias with the rule's -1000)."""
    record = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    state = {k[2:]: record[k].double() * 2.0 ** int(record["e." + k[2:]]) for k in record if k.startswith("q.")}
    state["class_embed.bias"] = record["state.class_embed.bias"]
    return record, state


class RecordedBackbone(Backbone):
    """``res5`` of the recorded padded image batch, or of the patches (``[B n, 3, S, S]``)."""

    def __init__(self, features, patch_maps, patch_size):
        super().__init__()
        self.register_buffer("features", features, persistent=False)
        self.register_buffer("patch_maps", patch_maps, persistent=False)
        self.patch_size = patch_size

    def forward(self, x):
        if tuple(x.shape[-2:]) == (self.patch_size, self.patch_size):
            assert x.shape[0] == self.patch_maps.shape[0], "not the recorded patches"
            return {"res5": self.patch_maps}
        b, _, h, w = self.features.shape
        assert tuple(x.shape) == (b, 3, 32 * h, 32 * w), "not the recorded padded batch"
        return {"res5": self.features}

    def output_shape(self):
        return {"res5": ShapeSpec(channels=self.features.shape[1], stride=32)}


def official_to_ours(state):
    """Our state dict from the official one through the ``up_detr`` converter for pretraining (class head rows
    1, 2 = ``OFFICIAL_ROWS``)."""
    result = get_converter("up_detr")(state, for_pretraining=True)
    assert result.unmapped == [] and all(k.startswith("class_embed.") for k in result.dropped)
    return result.converted


def build(record, state, mask_ratio=0.0):
    d_model, nhead, enc, dec, ffn, num_queries, num_patches, _, patch = record["config"].tolist()
    transformer = DetrTransformer(d_model=d_model, nhead=nhead, num_encoder_layers=enc, num_decoder_layers=dec,
                                  dim_feedforward=ffn, dropout=0.0, normalize_before=True,
                                  return_intermediate_dec=True)  # official --pre_norm
    model = UPDETRPretrain(
        backbone=RecordedBackbone(record["features"], record["patch_maps"], patch),
        position_embedding=PositionEmbeddingSine(d_model // 2, normalize=True),
        transformer=transformer,
        criterion=SetCriterion(1, HungarianMatcher(1.0, 5.0, 2.0), eos_coef=0.1),
        weight_dict=WEIGHTS,
        num_queries=num_queries,
        num_patches=num_patches,
        mask_ratio=mask_ratio,
    ).double()
    model.load_state_dict(official_to_ours(state), strict=True)
    # the criterion's class weights are a float32 buffer (eos 0.1 -> 0.10000000149 in float32) that .double()
    # only widens; the official criterion was built in float64 (exact 0.1). Float32 training has the same float32
    # 0.1 on both sides; for this float64 comparison ours gets the float64 value (else loss_ce differs by 9e-9)
    model.criterion.empty_weight[-1] = 0.1
    return model.train()


def batched_inputs(record):
    """Mapper-like dicts: uint8 images / patches (pixels unused by the stub), patch boxes xyxy absolute."""
    patch = int(record["config"][-1])
    out = []
    for (h, w), boxes in zip(record["image_sizes"].tolist(), record["patch_boxes"]):
        out.append({"image": torch.zeros(3, h, w, dtype=torch.uint8),
                    "patches": torch.zeros(len(boxes), 3, patch, patch, dtype=torch.uint8),
                    "patch_boxes": boxes.clone()})
    return out


def run(model, inputs):
    """``model(inputs)`` in training mode; ``seen``: ``encode`` (features, memory), ``decode``, the criterion's
    inputs and matchings, ``sem`` (``run_capturing``)."""
    losses, seen = run_capturing(model, inputs, ("encode", "decode"))
    seen["memory"], seen["decoded"] = seen["encode"][1].memory, seen["decode"]
    return losses, seen


def official_weighted_losses(record, prefix=""):
    """The official loss dict weighted by the official weight dict (logging entries class_error and
    cardinality_error are not in it)."""
    weights = {k[len("weight."):]: float(v) for k, v in record.items() if k.startswith("weight.")}
    return {k: record[f"{prefix}loss.{k}"] * w for k, w in weights.items()}


@pytest.fixture(scope="module")
def trained_step():
    record, state = load_record()
    model = build(record, state)
    losses, seen = run(model, batched_inputs(record))
    sum(losses.values()).backward()
    return record, state, model, losses, seen


def test_forward_of_every_decoder_layer_matches_official(trained_step):
    record, _, _, _, seen = trained_step
    assert_close(seen["memory"], record["memory"])
    assert_close(seen["decoded"].hidden_states, record["hidden_states"])
    assert_close(per_layer(seen["outputs"], "pred_logits"), record["pred_logits"][..., OFFICIAL_ROWS])
    assert_close(per_layer(seen["outputs"], "pred_boxes"), record["pred_boxes"])
    assert_close(seen["sem"], record["pred_feature"])  # feature_align of every layer (aux_loss)


def test_targets_and_matchings_match_official(trained_step):
    record, _, _, _, seen = trained_step
    boxes = torch.stack([t["boxes"] for t in seen["targets"]])
    assert_close(boxes, record["target_boxes"], tol=0.0)  # exact: image sizes chosen so (README)
    assert len(seen["indices"]) == record["pred_logits"].shape[0]  # one matching per decoder layer
    for layer, indices in enumerate(seen["indices"]):
        ours = torch.stack([torch.stack([src, tgt]) for src, tgt in indices])
        assert torch.equal(ours, record[f"indices.{layer}"]), layer


def test_weighted_losses_match_official(trained_step):
    record, _, _, losses, _ = trained_step
    expected = official_weighted_losses(record)
    assert set(losses) == set(expected)  # loss_ce, loss_bbox, loss_giou, loss_feature and their _0 copies
    for key, value in expected.items():
        assert_close(losses[key], value)


def test_class_head_rule_is_needed():
    """Documents the rule of the module docstring on the recorded official losses: with its class-0 logit as
    drawn (finite) the official CE differs from the one under the rule (= ours), and so can the matching of a
    layer (its box losses differ here); the feature loss of the last layer, whose matching is unchanged, not."""
    record, _ = load_record()
    assert abs(float(record["free_class0.loss.loss_ce"] - record["loss.loss_ce"])) > 0.1
    assert abs(float(record["free_class0.loss.loss_bbox_0"] - record["loss.loss_bbox_0"])) > 1e-4
    assert float(record["free_class0.loss.loss_feature"]) == float(record["loss.loss_feature"])


def test_gradients_of_every_trainable_parameter_match_official(trained_step):
    """d(total weighted loss)/d(parameter) for every trainable parameter: the whole gradient (small tensors)
    or its norm and 4 probe projections (see the recorder). The official class-0 row gets no gradient."""
    record, state, model, _, _ = trained_step
    assert_gradients_match(record, state, model, official_to_ours, OFFICIAL_ROWS)


def test_feature_masking_matches_official(monkeypatch):
    """``mask_ratio = 0.5``: the official draw ``torch.rand(Q, B, 1)`` fed to ours, which draws
    ``torch.rand(B, Q, 1)`` (same distribution, another layout: with one seed the two codes mask different
    queries, by design not comparable draw for draw). Checks where the mask acts (on the projected patch
    feature, before the learned query is added, no rescaling) through outputs and losses."""
    record, state = load_record()
    model = build(record, state, mask_ratio=0.5)
    draw = record["masked.draw"]  # [Q, B, 1]
    assert 0 < int((draw <= 0.5).sum()) < draw.numel()  # some queries masked, not all
    real_rand = torch.rand

    def official_draw(*size, **kwargs):
        if tuple(size) == (draw.shape[1], draw.shape[0], 1):
            return draw.permute(1, 0, 2).clone()
        return real_rand(*size, **kwargs)

    monkeypatch.setattr(torch, "rand", official_draw)
    with torch.no_grad():
        losses, seen = run(model, batched_inputs(record))
    monkeypatch.undo()
    assert_close(per_layer(seen["outputs"], "pred_logits"), record["masked.pred_logits"][..., OFFICIAL_ROWS])
    assert_close(per_layer(seen["outputs"], "pred_boxes"), record["masked.pred_boxes"])
    assert_close(seen["sem"], record["masked.pred_feature"])
    expected = official_weighted_losses(record, prefix="masked.")
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert_close(losses[key], value)


def test_decoder_mask_equals_official_exactly_when_n_squared_at_most_q():
    """The official ``UPDETR.__init__`` loops ``for i in range(Q // n)`` over blocks of ``Q // n`` queries:
    for ``n <= Q / n`` the blocks past ``Q`` are empty slices and the mask is exactly ours (True = blocked);
    for ``n > Q / n`` only the first ``Q // n`` groups get their block and every query of the later groups
    has its whole row blocked (softmax of all ``-inf``: NaN decoder outputs). Ours is right for any ``n``."""
    record, state = load_record()
    model = build(record, state)
    num_queries, num_patches = (int(x) for x in record["config"][5:7])
    assert torch.equal(model.attention_mask, record[f"decoder_mask.{num_queries}_{num_patches}"])
    cases = [k for k in record if k.startswith("decoder_mask.")]
    assert len(cases) >= 5
    for key in cases:
        q, n = (int(x) for x in key.split(".")[1].split("_"))
        official, ours = record[key], group_attention_mask(q, n)
        per_group = q // n
        handled = per_group * per_group  # queries whose block the official loop writes
        if n <= per_group:
            assert torch.equal(ours, official), key
        else:
            assert torch.equal(ours[:handled], official[:handled]), key
            assert bool(official[handled:].all()) and not bool(ours.all(dim=1).any()), key
