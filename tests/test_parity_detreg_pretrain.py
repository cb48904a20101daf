"""DETReg pretraining (Deformable DETR, the paper's main model): parity of ``DETRegPretrain`` with the official
code (github amirbar/DETReg @ a4b63635, ``models/deformable_detr.py`` ``DeformableDETR`` with
``object_embedding_loss`` and its ``SetCriterion`` with ``loss_object_embedding``, ``models/def_matcher.py``)
on the fixture recorded by ``tests/fixtures/detreg_pretrain/record.py`` (see its README): tiny float64 model
(d 32, 2 heads, 1 encoder + 2 decoder layers, 4 levels = C3-C5 + one extra, 2 points, Q = 10, dropout 0, no
refinement / two-stage as ``configs/DETReg_top30_in.sh``), the official weights loaded through OUR ``detreg``
converter, a stub backbone returning the recorded C3-C5 maps of the padded batch, and, for the proposal
crops, the recorded C3 map whose average is the official crop embedding (the official computes it with a second
frozen SwAV copy, ours with the model's own frozen backbone: both are cut at that tensor).

Compared: decoder states ``[L, B, Q, d]``, class logits and boxes (cxcywh normalised) of every decoder layer,
the ``sem_embed`` output (official ``feature_embed``, last layer, ``[B, Q, 2d]``), the crop embeddings, the
targets, the matchings, every weighted loss (focal CE x 2, L1 x 5, GIoU x 2, their ``_0`` aux copies, object
embedding x 1) and the gradient of the total loss w.r.t. every trainable parameter.

The deliberate deviation is the class head: 1 sigmoid logit (objectness) against the official 21
(``num_classes`` 20 + 1 for ``--dataset imagenet``, every label 1). The focal loss is a sum of independent
per-column terms and the focal matching cost reads the target's column only, so the two are equal under the
rule "every official column except 1 has logit -inf" with our row = official row 1: then each other column has
sigmoid 0, focal loss 0 and gradient 0. The fixture applies it with biases -1000 (exact in float64). Without it
(``free_classes.*``) the official loss has the extra terms of 20 never-positive columns, which also send
gradients into the shared decoder states.
"""

from pathlib import Path

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone

from siamese_detr.checkpoint.registry import get_converter
from siamese_detr.modeling import FocalHungarianMatcher, PositionEmbeddingSine, SetCriterion
from siamese_detr.modeling.meta_arch.detreg import DETRegPretrain
from siamese_detr.modeling.transformers import DeformableDetrTransformer

from pretrain_parity_utils import assert_close, assert_gradients_match, per_layer, run_capturing

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "detreg_pretrain" / "detreg_deformable.pt"
# official models/__init__.py with the util/default_args.py deformable_detr defaults (cls_loss_coef 2)
WEIGHTS = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_object_embedding": 1.0}
OFFICIAL_ROWS = [1]  # the official objectness column -> our only one
LEVELS = ("res3", "res4", "res5")
STRIDES = (8, 16, 32)


def load_record():
    """The record and the official state dict (``q * 2^e`` exactly; class bias with the rule's -1000)."""
    record = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    state = {k[2:]: record[k].double() * 2.0 ** int(record["e." + k[2:]]) for k in record if k.startswith("q.")}
    state.update({k[len("state."):]: v for k, v in record.items() if k.startswith("state.")})
    return record, state


class RecordedBackbone(Backbone):
    """C3-C5 of the recorded padded batch, or the crops' C3 (``[sum K_b, 3, S, S]``)."""

    def __init__(self, record):
        super().__init__()
        scale = float(record["map_scale"])
        for i, name in enumerate(LEVELS):
            self.register_buffer(name, record[f"features.{i}"].double() * scale, persistent=False)
        self.register_buffer("crop_maps", record["crop_maps"].double() * scale, persistent=False)
        self.crop_size = int(record["config"][-1])

    def forward(self, x):
        if tuple(x.shape[-2:]) == (self.crop_size, self.crop_size):
            assert x.shape[0] == self.crop_maps.shape[0], "not the recorded crops"
            return {"res3": self.crop_maps}
        b, _, h, w = self.res3.shape
        assert tuple(x.shape) == (b, 3, 8 * h, 8 * w), "not the recorded padded batch"
        return {name: getattr(self, name) for name in LEVELS}

    def output_shape(self):
        return {n: ShapeSpec(channels=getattr(self, n).shape[1], stride=s) for n, s in zip(LEVELS, STRIDES)}


def official_to_ours(state):
    """Our state dict from the official one through the ``detreg`` converter, class head row 1 only."""
    result = get_converter("detreg")(state)
    assert result.unmapped == [] and result.dropped == []
    return {k: v[OFFICIAL_ROWS] if k.startswith("class_embed.") else v for k, v in result.converted.items()}


def build(record, state):
    d_model, nhead, enc, dec, ffn, points, num_queries, _, levels, _ = record["config"].tolist()
    transformer = DeformableDetrTransformer(
        d_model=d_model, nhead=nhead, num_encoder_layers=enc, num_decoder_layers=dec, dim_feedforward=ffn,
        dropout=0.0, num_feature_levels=levels, enc_n_points=points, dec_n_points=points,
    )
    model = DETRegPretrain(
        backbone=RecordedBackbone(record),
        position_embedding=PositionEmbeddingSine(d_model // 2, normalize=True, offset=-0.5),
        transformer=transformer,
        criterion=SetCriterion(1, FocalHungarianMatcher(2.0, 5.0, 2.0), class_loss="focal", focal_alpha=0.25),
        weight_dict=WEIGHTS,
        num_queries=num_queries,
        in_features=LEVELS,
        num_extra_levels=levels - len(LEVELS),
        input_proj_norm=True,
        embedding_feature="res3",
    ).double()
    model.load_state_dict(official_to_ours(state), strict=True)
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
    """``model(inputs)`` in training mode; ``seen``: ``decode``, ``crop_embeddings``, the criterion's inputs and
    matchings, ``sem`` (``run_capturing``)."""
    losses, seen = run_capturing(model, inputs, ("decode", "crop_embeddings"))
    seen["decoded"], seen["embeddings"] = seen["decode"], seen["crop_embeddings"]
    return losses, seen


@pytest.fixture(scope="module")
def trained_step():
    record, state = load_record()
    model = build(record, state)
    losses, seen = run(model, batched_inputs(record))
    sum(losses.values()).backward()
    return record, state, model, losses, seen


def test_forward_of_every_decoder_layer_matches_official(trained_step):
    record, _, _, _, seen = trained_step
    assert_close(seen["decoded"].hidden_states, record["hidden_states"])
    assert_close(per_layer(seen["outputs"], "pred_logits"), record["pred_logits"][..., OFFICIAL_ROWS])
    assert_close(per_layer(seen["outputs"], "pred_boxes"), record["pred_boxes"])
    assert_close(seen["sem"], record["pred_features"])  # feature_embed of the last layer only


def test_embeddings_targets_and_matchings_match_official(trained_step):
    record, _, _, _, seen = trained_step
    for b, (emb, target) in enumerate(zip(seen["embeddings"], seen["targets"])):
        assert_close(emb, record[f"embeddings.{b}"], tol=1e-15)  # the same average of the same C3 map
        assert_close(target["boxes"], record[f"target_boxes.{b}"], tol=0.0)  # exact: sizes chosen so (README)
    assert len(seen["indices"]) == record["pred_logits"].shape[0]
    for layer, indices in enumerate(seen["indices"]):
        ours = torch.stack([torch.cat([s for s, _ in indices]), torch.cat([t for _, t in indices])])
        assert torch.equal(ours, record[f"indices.{layer}"]), layer


def test_weighted_losses_match_official(trained_step):
    """Official: every entry of its loss dict that its weight dict weights (class_error / cardinality_error
    are logging; the ``_enc`` weights have no loss without two-stage)."""
    record, _, _, losses, _ = trained_step
    weights = {k[len("weight."):]: float(v) for k, v in record.items() if k.startswith("weight.")}
    expected = {k: record[f"loss.{k}"] * w for k, w in weights.items() if f"loss.{k}" in record}
    assert set(losses) == set(expected)  # loss_ce / bbox / giou, their _0 copies, loss_object_embedding
    for key, value in expected.items():
        assert_close(losses[key], value)


def test_gradients_of_every_trainable_parameter_match_official(trained_step):
    """Whole gradients (small tensors) or norm + 4 probe projections (see the recorder); the official class
    rows other than 1 get no gradient under the rule."""
    record, state, model, _, _ = trained_step
    assert_gradients_match(record, state, model, official_to_ours, OFFICIAL_ROWS)


def test_class_head_rule_is_needed():
    """Documents the rule of the module docstring on the recorded official losses: with the other class
    biases as drawn, the official focal loss has the extra never-positive columns (larger); the matching-only
    dependent terms (boxes, embedding) are unchanged here since the matching cost reads column 1 only."""
    record, _ = load_record()
    for key in ("loss_ce", "loss_ce_0"):
        assert float(record[f"free_classes.loss.{key}"] - record[f"loss.{key}"]) > 1e-4
    for key in ("loss_bbox", "loss_giou", "loss_object_embedding", "loss_bbox_0"):
        assert float(record[f"free_classes.loss.{key}"]) == float(record[f"loss.{key}"])
