"""DETReg pretraining, both official variants: parity of ``DETRegPretrain`` with the official code (github
amirbar/DETReg @ a4b63635) on the fixtures recorded by ``tests/fixtures/detreg_pretrain/record.py`` (see its
README); every test runs for each variant:

* ``deformable`` (the paper's main model, ``configs/DETReg_top30_in.sh``): ``models/deformable_detr.py``
  ``DeformableDETR`` with ``object_embedding_loss`` and its ``SetCriterion`` (sigmoid focal, CE x 2, L1 x 5,
  GIoU x 2, embedding x 1), ``models/def_matcher.py``; tiny float64 model (d 32, 2 heads, 1 encoder + 2
  decoder layers, 4 levels = C3-C5 + one extra, 2 points, Q = 10, dropout 0, no refinement / two-stage);
  ours with ``DeformableDetrTransformer`` and ``FocalHungarianMatcher(2, 5, 2)``.
* ``detr`` (``configs/DETReg_top30_in_detr.sh``: ``--model detr --pre_norm``): ``models/detr.py`` ``DETR``
  with ``object_embedding_loss`` and its ``SetCriterion`` (softmax CE x 1 with eos 0.1, L1 x 5, GIoU x 2,
  embedding x 1), the pre-norm ``models/transformer.py`` (= UP-DETR's), ``models/detr_matcher.py``; tiny
  float64 model (d 32, 2 heads, 1 encoder + 2 decoder layers, C5 only, Q = 10, dropout 0); ours with a
  pre-norm ``DetrTransformer`` and ``HungarianMatcher(1, 5, 2)``.

Both: the official weights loaded through OUR ``detreg`` converter, a stub backbone returning the recorded maps
of the padded batch, and, for the proposal crops, the recorded C3 map whose average is the official crop
embedding (the official computes it with a second frozen SwAV copy, ours with the model's own frozen
backbone: both are cut at that tensor). DETReg's ``PositionEmbeddingSine`` is Deformable DETR's (positions
``cumsum - 0.5``), for the DETR variant too, so ours has ``offset=-0.5`` in both.

Compared: decoder states ``[L, B, Q, d]`` (and, DETR, the encoder memory ``[B, hw, d]``), class logits and
boxes (cxcywh normalised) of every decoder layer, the ``sem_embed`` output (official ``feature_embed``, last
layer, ``[B, Q, 2d]``), the crop embeddings, the targets, the matchings, every weighted loss (with the ``_0``
aux copies; the embedding loss on the last layer only) and the gradient of the total loss w.r.t. every
trainable parameter.

The deliberate deviation is the width of the class head (project card, "Width of the objectness head"):
* Deformable: 1 sigmoid logit against the official 21 here (the official run has 91: ``--dataset_file``
  keeps its default ``coco``, 90 + 1; every label 1). The focal loss is a sum of independent per-column terms
  and the focal matching cost reads the target's column only, so the two are equal under the rule "every
  official column except 1 has logit -inf" with our row = official row 1: then each other column has sigmoid
  0, focal loss 0 and gradient 0. Without it the official loss has the extra terms of the never-positive
  columns, which also send gradients into the shared decoder states.
* DETR: 2 softmax logits (object, no-object) against the official 92 rows (``num_classes`` 91 + no-object,
  row 91). Equal under the rule "every official row except 1 and 91 has logit -inf" with our rows = official
  rows (1, 91): those rows then have softmax probability 0, so the softmax over 92 logits is ours over 2, the
  matching cost ``-p_1`` and the weighted CE (class weights 1 and 0.1) are ours, and their gradient is 0.
  Without it the never-used rows take probability mass: the CE differs and so can the matching.
The fixtures apply the rule with biases -1000 (``exp`` / ``sigmoid`` underflow to exactly 0 in float64).
"""

from pathlib import Path

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone

from siamese_detr.checkpoint.registry import get_converter
from siamese_detr.modeling import (DetrTransformer, FocalHungarianMatcher, HungarianMatcher, PositionEmbeddingSine,
                                   SetCriterion)
from siamese_detr.modeling.meta_arch.detreg import DETRegPretrain
from siamese_detr.modeling.transformers import DeformableDetrTransformer

from pretrain_parity_utils import assert_close, assert_gradients_match, per_layer, run_capturing

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "detreg_pretrain"
LEVELS = ("res3", "res4", "res5")  # recorded features.{0,1,2}
STRIDES = (8, 16, 32)
VARIANTS = {
    "deformable": {
        "file": "detreg_deformable.pt",
        # official models/__init__.py with the util/default_args.py deformable_detr defaults (cls_loss_coef 2)
        "weights": {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_object_embedding": 1.0},
        "official_rows": [1],  # the official objectness column -> our only one
    },
    "detr": {
        "file": "detreg_detr.pt",
        # official models/__init__.py with the util/default_args.py detr defaults (cls_loss_coef 1)
        "weights": {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_object_embedding": 1.0},
        "official_rows": [1, 91],  # official (label 1, no-object) -> our (object, no-object)
    },
}


def load_record(variant):
    """The record and the official state dict (``q * 2^e`` exactly; class bias with the rule's -1000)."""
    record = torch.load(FIXTURES / VARIANTS[variant]["file"], map_location="cpu", weights_only=True)
    state = {k[2:]: record[k].double() * 2.0 ** int(record["e." + k[2:]]) for k in record if k.startswith("q.")}
    state.update({k[len("state."):]: v for k, v in record.items() if k.startswith("state.")})
    return record, state


class RecordedBackbone(Backbone):
    """The recorded levels of the padded batch (C3-C5 for Deformable, C5 for DETR), or the crops' C3
    (``[sum K_b, 3, S, S]``); ``res3`` is always an output (the embedding level)."""

    def __init__(self, record):
        super().__init__()
        scale = float(record["map_scale"])
        self.levels = [(name, s) for i, (name, s) in enumerate(zip(LEVELS, STRIDES)) if f"features.{i}" in record]
        for i, name in enumerate(LEVELS):
            if f"features.{i}" in record:
                self.register_buffer(name, record[f"features.{i}"].double() * scale, persistent=False)
        self.register_buffer("crop_maps", record["crop_maps"].double() * scale, persistent=False)
        self.crop_size = int(record["config"][-1])

    def forward(self, x):
        if tuple(x.shape[-2:]) == (self.crop_size, self.crop_size):
            assert x.shape[0] == self.crop_maps.shape[0], "not the recorded crops"
            return {"res3": self.crop_maps}
        name, stride = self.levels[0]
        b, _, h, w = getattr(self, name).shape
        assert tuple(x.shape) == (b, 3, stride * h, stride * w), "not the recorded padded batch"
        return {name: getattr(self, name) for name, _ in self.levels}

    def output_shape(self):
        shapes = {n: ShapeSpec(channels=getattr(self, n).shape[1], stride=s) for n, s in self.levels}
        shapes.setdefault("res3", ShapeSpec(channels=self.crop_maps.shape[1], stride=8))
        return shapes


def official_to_ours(variant):
    """``state -> our state dict`` through the ``detreg`` converter for pretraining, which must keep the class
    head rows ``official_rows`` only."""
    rows = VARIANTS[variant]["official_rows"]

    def convert(state):
        result = get_converter("detreg")(state, for_pretraining=True)
        assert result.unmapped == [] and all(k.startswith("class_embed.") for k in result.dropped)
        for key in [k for k in result.converted if k.startswith("class_embed.")]:
            official = state.get(key, state.get("class_embed." + key.rsplit(".", 1)[1]))  # DETR: one shared head
            assert torch.equal(result.converted[key], official[rows]), key
        return result.converted

    return convert


def build(variant, record, state):
    d_model, nhead, enc, dec, ffn, points, num_queries, classes, levels, _ = record["config"].tolist()
    if variant == "deformable":
        transformer = DeformableDetrTransformer(
            d_model=d_model, nhead=nhead, num_encoder_layers=enc, num_decoder_layers=dec, dim_feedforward=ffn,
            dropout=0.0, num_feature_levels=levels, enc_n_points=points, dec_n_points=points,
        )
        criterion = SetCriterion(1, FocalHungarianMatcher(2.0, 5.0, 2.0), class_loss="focal", focal_alpha=0.25)
        detr_kwargs = dict(in_features=LEVELS, num_extra_levels=levels - len(LEVELS), input_proj_norm=True)
    else:
        assert VARIANTS[variant]["official_rows"] == [1, classes]  # official no-object row = num_classes
        transformer = DetrTransformer(d_model=d_model, nhead=nhead, num_encoder_layers=enc, num_decoder_layers=dec,
                                      dim_feedforward=ffn, dropout=0.0, normalize_before=True,
                                      return_intermediate_dec=True)  # official --pre_norm
        criterion = SetCriterion(1, HungarianMatcher(1.0, 5.0, 2.0), eos_coef=0.1)
        detr_kwargs = dict(in_features=("res5",))
    model = DETRegPretrain(
        backbone=RecordedBackbone(record),
        # DETReg's models/position_encoding.py (Deformable DETR's, -0.5) for both of its variants
        position_embedding=PositionEmbeddingSine(d_model // 2, normalize=True, offset=-0.5),
        transformer=transformer,
        criterion=criterion,
        weight_dict=VARIANTS[variant]["weights"],
        num_queries=num_queries,
        embedding_feature="res3",
        **detr_kwargs,
    ).double()
    model.load_state_dict(official_to_ours(variant)(state), strict=True)
    if variant == "detr":
        # the criterion's class weights are a float32 buffer (eos 0.1 -> 0.10000000149) that .double() only
        # widens; the official was recorded with a float64 0.1 (record.py). Float32 training has the same
        # float32 0.1 on both sides; for this float64 comparison ours gets the float64 value
        model.criterion.empty_weight[-1] = 0.1
    return model.train()


def batched_inputs(record):
    """Mapper-like dicts: uint8 images / crops (pixels unused by the stub), proposal boxes xyxy absolute."""
    crop = int(record["config"][-1])
    out = []
    for b, (h, w) in enumerate(record["image_sizes"].tolist()):
        boxes = record[f"proposal_boxes.{b}"]
        out.append({"image": torch.zeros(3, h, w, dtype=torch.uint8),
                    "crops": torch.zeros(len(boxes), 3, crop, crop, dtype=torch.uint8),
                    "proposal_boxes": boxes.clone()})
    return out


def run(model, inputs):
    """``model(inputs)`` in training mode; ``seen``: ``encode`` (features, memory), ``decode``,
    ``crop_embeddings``, the criterion's inputs and matchings, ``sem`` (``run_capturing``)."""
    losses, seen = run_capturing(model, inputs, ("encode", "decode", "crop_embeddings"))
    seen["memory"], seen["decoded"] = seen["encode"][1].memory, seen["decode"]
    seen["embeddings"] = seen["crop_embeddings"]
    return losses, seen


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def trained_step(request):
    variant = request.param
    record, state = load_record(variant)
    model = build(variant, record, state)
    losses, seen = run(model, batched_inputs(record))
    sum(losses.values()).backward()
    return variant, record, state, model, losses, seen


def test_forward_of_every_decoder_layer_matches_official(trained_step):
    variant, record, _, _, _, seen = trained_step
    rows = VARIANTS[variant]["official_rows"]
    if "memory" in record:  # DETR (Deformable: its memory parity is test_parity_deformable_detr's)
        assert_close(seen["memory"], record["memory"])
    assert_close(seen["decoded"].hidden_states, record["hidden_states"])
    assert_close(per_layer(seen["outputs"], "pred_logits"), record["pred_logits"][..., rows])
    assert_close(per_layer(seen["outputs"], "pred_boxes"), record["pred_boxes"])
    assert_close(seen["sem"], record["pred_features"])  # feature_embed of the last layer only


def test_embeddings_targets_and_matchings_match_official(trained_step):
    _, record, _, _, _, seen = trained_step
    assert len(seen["embeddings"]) == len(seen["targets"]) == record["pred_logits"].shape[1]  # one per image
    for b, (emb, target) in enumerate(zip(seen["embeddings"], seen["targets"])):
        assert_close(emb, record[f"embeddings.{b}"], tol=1e-15)  # the same average of the same C3 map
        assert_close(target["boxes"], record[f"target_boxes.{b}"], tol=0.0)  # exact: sizes chosen so (README)
    assert len(seen["indices"]) == record["pred_logits"].shape[0]
    for layer, indices in enumerate(seen["indices"]):
        ours = torch.stack([torch.cat([s for s, _ in indices]), torch.cat([t for _, t in indices])])
        assert torch.equal(ours, record[f"indices.{layer}"]), layer


def test_weighted_losses_match_official(trained_step):
    """Official: every entry of its loss dict that its weight dict weights (class_error / cardinality_error
    are logging; Deformable's ``_enc`` weights have no loss without two-stage)."""
    _, record, _, _, losses, _ = trained_step
    weights = {k[len("weight."):]: float(v) for k, v in record.items() if k.startswith("weight.")}
    expected = {k: record[f"loss.{k}"] * w for k, w in weights.items() if f"loss.{k}" in record}
    assert set(losses) == set(expected)  # loss_ce / bbox / giou, their _0 copies, loss_object_embedding
    for key, value in expected.items():
        assert_close(losses[key], value)


def test_gradients_of_every_trainable_parameter_match_official(trained_step):
    """Whole gradients (small tensors and the class head) or norm + 4 probe projections (see the recorder);
    the official class rows other than ``official_rows`` get no gradient under the rule."""
    variant, record, state, model, _, _ = trained_step
    assert_gradients_match(record, state, model, official_to_ours(variant), VARIANTS[variant]["official_rows"])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_class_head_rule_is_needed(variant):
    """Documents the rule of the module docstring on the recorded official losses (biases as drawn:
    ``free_classes.*``).

    Deformable: the official focal loss has the extra never-positive columns (larger); the terms that depend
    on the matching only (boxes, embedding) are unchanged, since the focal matching cost reads column 1 only.
    DETR: the 90 other rows take softmax mass from both targets, so the official CE is far from the one under
    the rule (= ours), and, as the matching cost reads ``p_1``, the matchings of both layers change here (box
    and embedding losses differ)."""
    record, _ = load_record(variant)
    free = {k: float(record[f"free_classes.loss.{k}"]) for k in ("loss_ce", "loss_ce_0", "loss_bbox",
                                                                 "loss_bbox_0", "loss_object_embedding")}
    rule = {k: float(record[f"loss.{k}"]) for k in free}
    for key in ("loss_ce", "loss_ce_0"):
        assert free[key] - rule[key] > (1e-4 if variant == "deformable" else 1.0)
    for key in ("loss_bbox", "loss_bbox_0", "loss_object_embedding"):
        if variant == "deformable":
            assert free[key] == rule[key]
        else:
            assert abs(free[key] - rule[key]) > 1e-4
    if variant == "deformable":
        assert float(record["free_classes.loss.loss_giou"]) == float(record["loss.loss_giou"])
