"""Siamese DETR pretraining: parity of ``SiameseDETRPretrain`` with the OFFICIAL model (github.com/Zx55/SiameseDETR
``openselfsup/models/siamese_detr.py`` with ``SiameseDETRPredictHead`` and ``SiameseDETREncoderGlobalLatentHead``,
transformer ``ConditionalTR`` (released configs ``r50_condtr_100q_*``, the paper's main variant), ``VanillaTR``
(``r50_vanillatr_*``) or multi-scale ``DeformableTR`` (``r50_deformtr_ms_300q_*``: C3-C5 + a stride-64 level, the
official pure-PyTorch deformable attention core) on recorded tiny float64 models
(tests/fixtures/siamese_detr_pretrain/README.md).

The official parameters are redrawn from the recorded layout and seed (``record.official_parameters``) and
converted with the project's ``siamese_detr`` converter. Both models see the same backbone feature maps (a
lookup by the id painted into each view / crop), the same region boxes and the same jittered query boxes.
Compared: the region-conditioned queries, both views' encoder memory, every decoder layer's states, reference
points, logits, boxes and Hungarian matches of both MVCA directions, the crop features, every loss term (L_loc:
CE / L1 / GIoU, L_r, L_g, with their auxiliary copies), the total loss and the gradients of every trainable
parameter.

Rules applied here for differences with the official code (see the README of the fixture):

* RoIAlign: the official ``RoIAlign(7, 1/32, sampling_ratio=-1)`` has ``aligned=False``, as the project's
  default (``model.roi_aligned``); a test checks that the option ``roi_aligned=True`` (half-pixel-correct
  sampling) changes the queries.
* L_g: the official projector average-pools the encoder memory over ALL cells of the padded map (of each of
  the first three levels for Deformable-MS, concatenated, as ours); the project averages the non-padded tokens
  only. The parity run uses the official pooling; separate tests measure the difference on these batches
  (their images are padded).
* Deformable-MS region queries: the official ``DeformableTR`` gives EVERY image of the batch image 0's region
  queries (``query_embed[:, 0]``), the project each image its own. The parity run gives every image image 0's
  queries (per MVCA direction) on our side too; the official queries of every image (computed, then unused
  beyond image 0) are compared with ours, and a separate test checks that with the project's rule image 0's
  outputs stay the official ones while image 1's change.
* L_g is Eq. 11 exactly; the official value is ``2 + L_g`` (documented constant, card "Normalisation").
* Objectness head: the official head has three softmax logits (classes 0, 1 and no-object; targets class 1),
  the project two; the fixture switches the official class-0 row off (probability exactly 0), official rows
  (1, 2) are the project's (0, 1).
* SimSiam heads: the official Linear layers before a batch norm carry biases, the project's do not; in train
  mode batch norm removes them (their official gradients are ~0, checked).
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone
from detectron2.utils.events import EventStorage

import siamese_detr.modeling.meta_arch.siamese_detr as siamese_module
from siamese_detr.checkpoint.registry import get_converter
from siamese_detr.modeling.pretext.region_features import region_conditioned_queries
from siamese_detr.modeling.pretext.simsiam import SyncBatchNorm1d
from siamese_detr.modeling import (
    ConditionalDetrTransformer,
    DeformableDetrTransformer,
    DetrTransformer,
    HungarianMatcher,
    PositionEmbeddingSine,
    SetCriterion,
    SiameseDETRPretrain,
)

FOLDER = Path(__file__).resolve().parent / "fixtures" / "siamese_detr_pretrain"
TOL = 1e-12  # float64 parity
_spec = importlib.util.spec_from_file_location("siamese_pretrain_record", FOLDER / "record.py")
RECORD = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(RECORD)  # only its pure-torch helpers are used (no official code is imported)

# official loss name -> project loss name (weights: official config; the project's are the same numbers)
LOSS_NAMES = {"loss_ce": "loss_ce", "loss_bbox": "loss_bbox", "loss_giou": "loss_giou", "loss_feature": "loss_region"}
VARIANTS = ("condtr", "vanilla", "deformtr_ms")
L_G_OFFSET = 2.0  # official loss_enc_global_contra = 2 + L_g (Eq. 11)
# official biases of the SimSiam Linear layers in front of a BatchNorm (the project's have none)
OFFICIAL_PRE_BN_BIASES = ("enc_head.0.projector.mlp.0.bias", "enc_head.0.projector.mlp.3.bias",
                          "enc_head.0.projector.mlp.6.bias", "enc_head.0.predictor.mlp.0.bias")


def assert_close(actual, expected, tol=TOL):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol, f"max abs difference {err:.3g} > {tol:g}"


class IdBackbone(Backbone):
    """Row ``i`` of the output is the recorded feature map whose id is the top-left pixel of input row ``i``
    (views ``view_features[id - 1]``, crops ``crop_features[id - 10]``; ``record.view_id`` / ``crop_id``)."""

    def __init__(self, view_features, crop_features, crop_size):
        super().__init__()
        self.view_features, self.crop_features, self.crop_size = view_features, crop_features, crop_size

    def forward(self, x):
        ids = x[:, 0, 0, 0].round().long().tolist()
        if tuple(x.shape[-2:]) == (self.crop_size, self.crop_size):
            return {"res5": self.crop_features[[i - 10 for i in ids]]}
        assert tuple(x.shape[-2:]) == tuple(32 * s for s in self.view_features.shape[-2:]), "not the recorded padding"
        return {"res5": self.view_features[[i - 1 for i in ids]]}

    def output_shape(self):
        return {"res5": ShapeSpec(channels=self.view_features.shape[1], stride=32)}


class MultiLevelIdBackbone(Backbone):
    """Deformable-MS: ``res3`` / ``res4`` / ``res5`` (strides 8 / 16 / 32); row ``i`` of level ``l`` is
    ``view_features[l][id - 1]`` or ``crop_features[l][id - 10]`` for the id painted into input row ``i``
    (crops have ids from 10, ``record.crop_id``)."""

    NAMES = ("res3", "res4", "res5")

    def __init__(self, view_features, crop_features, strides):
        super().__init__()
        self.view_features, self.crop_features, self.strides = view_features, crop_features, strides

    def forward(self, x):
        ids = x[:, 0, 0, 0].round().long().tolist()
        if min(ids) >= 10:
            return {n: level[[i - 10 for i in ids]] for n, level in zip(self.NAMES, self.crop_features)}
        assert tuple(x.shape[-2:]) == tuple(self.strides[0] * s for s in self.view_features[0].shape[-2:]), \
            "not the recorded padding"
        return {n: level[[i - 1 for i in ids]] for n, level in zip(self.NAMES, self.view_features)}

    def output_shape(self):
        return {n: ShapeSpec(channels=level.shape[1], stride=s)
                for n, level, s in zip(self.NAMES, self.view_features, self.strides)}


def project_weights(record: dict) -> dict:
    """The project's weight_dict of the official config: ``loss_region`` = official ``loss_feature``."""
    w = record["weight_dict"]
    return {"loss_ce": w["loss_ce"], "loss_bbox": w["loss_bbox"], "loss_giou": w["loss_giou"],
            "loss_region": w["loss_feature"], "loss_global": w["loss_enc_global_contra"]}


def load_record(variant: str) -> dict:
    return torch.load(FOLDER / f"{variant}.pt", map_location="cpu", weights_only=True)


def official_state(record: dict) -> dict:
    layout = list(zip(record["layout_names"], record["layout_shapes"]))
    return RECORD.official_parameters(layout, record["config"]["seed"])


def to_project(official: dict) -> dict:
    """Official parameters -> project keys: the ``siamese_detr`` converter for pretraining (class rows 1, 2; the
    SimSiam heads; the pre-BN biases dropped, the fixture has no running statistics to fold them into)."""
    result = get_converter("siamese_detr")(official, for_pretraining=True)
    assert result.unmapped == [], result.unmapped
    assert set(OFFICIAL_PRE_BN_BIASES) <= set(result.dropped)
    assert not any(k.startswith("enc_head.") and k not in OFFICIAL_PRE_BN_BIASES for k in result.dropped)
    return result.converted


def build_project_model(record: dict, roi_aligned=None) -> SiameseDETRPretrain:
    """The project's model of the recorded configuration, built with float64 as the default dtype (as the
    official one was: constants such as the no-object weight 0.1 are then not rounded to float32 first);
    ``roi_aligned``: the model option (None: the model's default, the official sampling)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _build_project_model(record, roi_aligned)
    finally:
        torch.set_default_dtype(default)


def _build_project_model(record: dict, roi_aligned) -> SiameseDETRPretrain:
    c = record["config"]
    sizes = dict(d_model=c["d_model"], nhead=c["nhead"], num_encoder_layers=c["enc"], num_decoder_layers=c["dec"],
                 dim_feedforward=c["ffn"], dropout=0.0)
    levels = {}
    backbone = IdBackbone(record["view_features"], record["crop_features"], c["crop_size"]) \
        if record["variant"] != "deformtr_ms" else None
    if record["variant"] == "condtr":
        transformer = ConditionalDetrTransformer(**sizes)
    elif record["variant"] == "vanilla":  # official VanillaTR: post-norm, intermediate decoder outputs
        transformer = DetrTransformer(**sizes, normalize_before=False, return_intermediate_dec=True)
    else:  # official DeformableTR: 4 levels (C3-C5 + input_proj's stride-64 level), no refinement, one stage
        transformer = DeformableDetrTransformer(
            **sizes, num_feature_levels=c["num_feature_levels"], enc_n_points=c["n_points"],
            dec_n_points=c["n_points"], use_compiled_op=False,
        )
        backbone = MultiLevelIdBackbone(record["view_features"], record["crop_features"], c["strides"])
        levels = dict(in_features=MultiLevelIdBackbone.NAMES, num_extra_levels=1, input_proj_norm=True)
    model = SiameseDETRPretrain(
        backbone=backbone,
        # the official Siamese DETR sine encoding (openselfsup position_encoding.py) has no -0.5 offset, also
        # for its Deformable variant (unlike the official Deformable DETR's)
        position_embedding=PositionEmbeddingSine(c["d_model"] // 2, normalize=True),
        transformer=transformer,
        criterion=SetCriterion(1, HungarianMatcher(1.0, 5.0, 2.0), eos_coef=0.1),
        num_queries=c["num_queries"],
        num_regions=c["num_regions"],
        weight_dict=project_weights(record),
        projection_dim=c["proj_dim"],
        predictor_hidden_dim=c["pred_hidden"],
        **({} if roi_aligned is None else {"roi_aligned": roi_aligned}),
        **levels,
        pixel_mean=(0.0, 0.0, 0.0),
        pixel_std=(1.0, 1.0, 1.0),
    ).double()
    state = to_project(official_state(record))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert unexpected == [], unexpected
    assert [k for k in missing if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))] == []
    return model.train()


def batched_inputs(record: dict) -> list:
    """``SiameseViewMapper``-like samples: views and crops are uint8 images filled with their id."""
    c = record["config"]
    batch, n, size = len(c["image_sizes"]), c["num_regions"], c["crop_size"]
    samples = []
    for b, (h, w) in enumerate(c["image_sizes"]):
        views = []
        for v in (0, 1):
            crops = [torch.full((3, size, size), RECORD.crop_id(v, b, j, batch, n), dtype=torch.uint8)
                     for j in range(n)]
            views.append({
                "image": torch.full((3, h, w), RECORD.view_id(v, b, batch), dtype=torch.uint8),
                "region_boxes": record["region_boxes"][b, v],  # xyxy absolute in view v
                "query_boxes": record["query_boxes"][b, v],  # the official jittered boxes
                "crops": torch.stack(crops),
            })
        samples.append({"image_id": b, "views": views})
    return samples


def unmasked_average_pool(memory, padding_mask):
    """The official rule: ``AdaptiveAvgPool2d(1)`` of (each level of) the padded memory map, padding cells
    included (called per level by ``per_level_average_pool``)."""
    return memory.mean(dim=1)


def image0_region_queries(region_embeddings, object_queries, seen):
    """The official Deformable rule on the project's side: every image of a direction decodes image 0's
    queries (``DeformableTR``: ``query_embed[:, 0]``). Rows are view-major ``[2B, Q, 2D]``; the project's own
    queries are kept in ``seen["own_queries"]``."""
    queries = region_conditioned_queries(region_embeddings, object_queries)
    seen["own_queries"] = queries
    per_view = split_directions(queries)  # [2, B, Q, 2D]
    return per_view[:, :1].expand_as(per_view).reshape(queries.shape)


def run_project(record: dict, official_pooling: bool = True, official_queries: bool = True, roi_aligned=None) -> dict:
    """One training forward / backward of the project's model; returns its losses, internals and gradients.

    ``official_pooling``: L_g's pooling over every cell of the padded memory (of each level), as the official
    code (see the module doc); False runs the project's masked pooling. ``official_queries`` (Deformable-MS
    only): every image decodes image 0's region queries, as the official ``DeformableTR``; False keeps the
    project's per-image queries. ``roi_aligned``: the model option (None: its default, the official RoIAlign
    sampling)."""
    model = build_project_model(record, roi_aligned)
    seen = {}
    encode, decode, criterion = model.encode, model.decode, model.criterion.forward

    def capture_encode(images):
        features, memory = encode(images)
        seen["memory"] = memory
        return features, memory

    def capture_decode(memory, queries, *a, **k):
        seen["queries"] = queries
        seen.setdefault("own_queries", queries)
        seen["decoded"] = decode(memory, queries, *a, **k)
        return seen["decoded"]

    def capture_criterion(outputs, targets, **k):
        seen["outputs"], seen["targets"] = outputs, targets
        losses, indices = criterion(outputs, targets, **k)
        seen["indices"] = indices
        return losses, indices

    model.encode, model.decode, model.criterion.forward = capture_encode, capture_decode, capture_criterion

    def capture_projector_input(module, args):  # returns None: the input is not replaced
        seen["projector_input"] = args[0].detach()

    model.projector.register_forward_pre_hook(capture_projector_input)
    with pytest.MonkeyPatch.context() as mp:
        if official_pooling:
            mp.setattr(siamese_module, "masked_average_pool", unmasked_average_pool)
        if official_queries and record["variant"] == "deformtr_ms":
            mp.setattr(siamese_module, "region_conditioned_queries",
                       lambda z, q: image0_region_queries(z, q, seen))
        with EventStorage():
            losses = model(batched_inputs(record))
    total = sum(losses.values())
    total.backward()
    seen["losses"], seen["total"] = losses, total
    seen["grads"] = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    seen["model"] = model
    return seen


@pytest.fixture(scope="module", params=VARIANTS)
def parity(request):
    record = load_record(request.param)
    return record, run_project(record)


def split_directions(x):
    """Project rows are view-major ``[2B, ...]`` (queries of view 1, then view 2) -> ``[2, B, ...]``."""
    return x.reshape(2, x.shape[0] // 2, *x.shape[1:])


# ------------------------------------------------------------------------------------------------ the set-up
@pytest.mark.parametrize("variant", VARIANTS)
def test_redrawn_parameters_are_the_recorded_ones(variant):
    """Guards the fixture: the parameters are regenerated, not stored (a torch RNG change would show here)."""
    record = load_record(variant)
    state = official_state(record)
    sums = torch.stack([state[n].sum() for n in record["layout_names"]])
    assert_close(sums, record["param_sums"], 1e-12)


def test_simsiam_batch_norm_inputs_of_the_fixture_batches_are_not_near_degenerate(parity):
    """Guards the fixtures' conditioning: with two images per view, a SimSiam batch norm maps a feature whose
    two values differ by ``delta << sqrt(eps)`` (eps 1e-5) almost linearly, ``x_hat = delta / (2 sqrt(eps))``,
    so rounding is amplified ~158x per such layer (the first seed drawn for Deformable-MS had two in a row:
    L_g off by 4e-12 from a 4e-16 difference of the context; ``deformtr_ms`` uses another seed). Every batch
    norm input of the project's run keeps ``|delta| > 5e-3``."""
    record, ours = parity
    deltas = []
    model = build_project_model(record)
    for module in list(model.projector) + list(model.predictor):
        if isinstance(module, SyncBatchNorm1d):
            module.register_forward_pre_hook(
                lambda m, args: deltas.extend((c[0] - c[1]).abs().min().item() for c in args[0].chunk(2)))
            # (list.extend returns None: the input is not replaced)
    with torch.no_grad():
        projection = model.projector(ours["projector_input"], num_views=2)
        model.predictor(projection, num_views=2)
    assert len(deltas) == 8 and min(deltas) > 5e-3, deltas


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_switched_off_class_and_pre_bn_biases_have_no_gradient(variant):
    """The rules of the mapping hold in the official run: class-0 row and pre-BN biases get (almost) no
    gradient, so leaving them out of the project's model changes nothing."""
    record = load_record(variant)
    grads = record["grads"]
    assert grads["pred_head.class_embed.bias"][0].abs().item() == 0.0
    assert grads["pred_head.class_embed.weight"][0].abs().max().item() == 0.0
    for official in OFFICIAL_PRE_BN_BIASES:  # mathematically 0 (train-mode BN removes constants): rounding
        assert grads[official].abs().max().item() < 1e-12, official


# ------------------------------------------------------------------------------------------------ forward parity
def test_region_conditioned_queries_match_official(parity):
    """proj(avgpool(RoIAlign(h, b~))) repeated per region + query_embed: ``[2 directions, B, Q, D]``, every
    image's own (Deformable-MS: the positional half ``query_pos`` of ``[query_pos | tgt]``, the official
    ``DeformableTR`` input before it keeps image 0's; its ``tgt`` half is the official ``tgt_embed``)."""
    record, ours = parity
    queries = split_directions(ours["own_queries"])
    d = record["config"]["d_model"]
    if record["variant"] == "deformtr_ms":
        tgt = official_state(record)["transformer.tgt_embed.weight"]
        assert_close(queries[..., d:], tgt.expand(*queries.shape[:2], -1, -1))
        queries = queries[..., :d]
        # ... and the decoder got image 0's queries in every row of a direction (the official rule)
        decoded = split_directions(ours["queries"])
        assert torch.equal(decoded, decoded[:, :1].expand_as(decoded))
    assert_close(queries, record["queries"])


def test_encoder_memory_of_both_views_matches_official(parity):
    """``[2 views, B, S, D]``, padded cells included (images padded to the batch: 128 x 128 (one level), or
    64 x 64 for Deformable-MS, whose 4 levels (8 x 8 .. 1 x 1) are compared through ``record.sketch``)."""
    record, ours = parity
    memory = split_directions(ours["memory"].memory)
    if "memory_sketches" in record:
        sketches = torch.stack([torch.stack([RECORD.sketch(m) for m in view]) for view in memory])
        assert_close(sketches, record["memory_sketches"])
    else:
        assert_close(memory, record["memory"])


def test_decoder_states_and_reference_points_match_official(parity):
    """Every decoder layer of both MVCA directions: states ``[2, L, B, Q, D]``; reference points (x, y)."""
    record, ours = parity
    hidden = ours["decoded"].hidden_states  # [L, 2B, Q, D]
    assert_close(split_directions(hidden.transpose(0, 1)).transpose(1, 2), record["hidden_states"])
    if record["variant"] in ("condtr", "deformtr_ms"):
        references = ours["decoded"].references  # [L, 2B, Q, 2] logits; no box refinement: the same per layer
        assert all(torch.equal(r, references[0]) for r in references)
        points = references[0].sigmoid()  # inverse_sigmoid(s) -> s, [2B, Q, 2]
        assert_close(split_directions(points), record["reference_points"], 1e-10)  # eps-clamped logit round trip
    else:
        assert ours["decoded"].references is None


def test_head_outputs_and_matches_of_every_layer_match_official(parity):
    """Objectness logits (official rows 1, 2), boxes cxcywh normalised by the other view's size, matches."""
    record, ours = parity
    out = ours["outputs"]
    layers = out["aux_outputs"] + [out]
    logits = torch.stack([split_directions(x["pred_logits"]) for x in layers], dim=1)  # [2, L, B, Q, 2]
    boxes = torch.stack([split_directions(x["pred_boxes"]) for x in layers], dim=1)
    assert_close(logits, record["pred_logits"][..., 1:])
    assert_close(boxes, record["pred_boxes"])
    assert_matches_official(ours["indices"], record, images=range(record["match_regions"].shape[2]))


def assert_matches_official(matches, record, images):
    """The project's matches (per decoder layer, per row of the 2B batch: ``(queries, regions)``) of the given
    images equal the recorded official ones in both MVCA directions (as sets of pairs: sorted by region)."""
    assert len(matches) == record["match_regions"].shape[1]  # one matching per decoder layer
    for layer, indices in enumerate(matches):
        assert len(indices) == 2 * record["match_regions"].shape[2]  # both MVCA directions of every image
        for row, (queries, regions) in enumerate(indices):
            d, b = divmod(row, len(indices) // 2)
            if b not in images:
                continue
            order = regions.argsort()  # both are permutations of the matched pairs
            official = record["match_regions"][d, layer, b].argsort()
            assert torch.equal(queries[order], record["match_queries"][d, layer, b][official])
            assert torch.equal(regions[order], record["match_regions"][d, layer, b][official])


def test_targets_are_the_other_views_regions(parity):
    record, ours = parity
    for row, target in enumerate(ours["targets"]):
        d, b = divmod(row, len(ours["targets"]) // 2)
        h, w = record["config"]["image_sizes"][b]
        x0, y0, x1, y1 = (record["region_boxes"][b, 1 - d] / torch.tensor([w, h, w, h])).unbind(-1)
        expected = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)
        assert_close(target["boxes"], expected)


# ------------------------------------------------------------------------------------------------ losses
def test_every_loss_term_matches_official(parity):
    """L_loc (CE, L1, GIoU), L_r (official ``loss_feature``) and their aux copies, weighted; the official value
    of a term is the mean of its two directions, the project's one normaliser over both (card)."""
    record, ours = parity
    official = record["losses"]
    losses = ours["losses"]
    compared = set()
    for name, value in official.items():
        base, _, layer = name.rpartition("_")
        key = name if name in LOSS_NAMES else base if base in LOSS_NAMES and layer.isdigit() else None
        if key is None:
            continue  # logging only (class_error, cardinality_error) or L_g (below)
        ours_name = LOSS_NAMES[key] + name[len(key):]
        assert_close(losses[ours_name], value * record["weight_dict"][name])
        compared.add(ours_name)
    assert compared == set(losses) - {"loss_global"}


def test_global_discrimination_loss_matches_official_up_to_its_constant(parity):
    """L_g = official ``loss_enc_global_contra`` - 2 (Eq. 11 exactly, card "Normalisation"), weight 10."""
    record, ours = parity
    weight = record["weight_dict"]["loss_enc_global_contra"]
    expected = (record["losses"]["loss_enc_global_contra"] - L_G_OFFSET) * weight
    assert_close(ours["losses"]["loss_global"], expected)


def test_total_loss_matches_official(parity):
    record, ours = parity
    constant = L_G_OFFSET * record["weight_dict"]["loss_enc_global_contra"]
    assert_close(ours["total"], record["total_loss"] - constant, 1e-11)


def test_gradients_of_every_trainable_parameter_match_official(parity):
    """Gradients of the total loss (the constant of L_g has none): full tensors where small, else row sums,
    column sums and four fixed projections (``record.sketch``), mapped to project names by the converter.
    Deformable: the project's ``query_embed [Q, 2D]`` joins the official ``query_embed`` (``query_pos``) and
    ``transformer.tgt_embed`` (``tgt``), so its gradient is compared half by half."""
    record, ours = parity
    official = official_state(record)
    converted = to_project(official)
    checked, grads = set(), dict(ours["grads"])
    if record["variant"] == "deformtr_ms":
        d = record["config"]["d_model"]
        grad = grads.pop("query_embed.weight")
        assert_close(grad[:, :d], record["grads"]["query_embed.weight"])
        assert_close(grad[:, d:], record["grads"]["transformer.tgt_embed.weight"])
        checked |= {"query_embed.weight", "transformer.tgt_embed.weight"}
    # project name -> official name, by identity of the (random, distinct) parameter values
    names = {}
    for ours_name, value in converted.items():
        for name, tensor in official.items():
            if name.startswith("pred_head.class_embed."):
                tensor = tensor[1:]  # official class rows (1, 2)
            if tensor.shape == value.shape and torch.equal(tensor, value):
                names[ours_name] = name
    for ours_name, grad in grads.items():
        name = names[ours_name]
        if name.startswith("pred_head.class_embed."):
            assert_close(grad, record["grads"][name][1:])
        elif name in record["grads"]:
            assert_close(grad, record["grads"][name])
        else:
            assert_close(RECORD.sketch(grad), record["grad_sketches"][name], 1e-11)
        checked.add(name)
    trainable = set(record["grads"]) | set(record["grad_sketches"])
    assert checked == trainable - set(OFFICIAL_PRE_BN_BIASES)


# ------------------------------------------------------------------------------------------------ the deviations
def own_query_pos(record, ours):
    """The project's per-image region queries ``[2, B, Q, D]`` (Deformable: the ``query_pos`` half)."""
    return split_directions(ours["own_queries"])[..., :record["config"]["d_model"]]


@pytest.mark.parametrize("variant", VARIANTS)
def test_project_defaults_differ_from_official_only_through_padded_pooling(variant):
    """The project's defaults sample RoIAlign as the official code (the option ``roi_aligned=True`` changes
    the queries, so all that follows them); the masked pooling of L_g changes L_g alone, which is then the masked
    average of each of the first min(3, L) levels (recomputed here), through the heads. Fails (and must be
    updated with the card) if either changes. (Deformable-MS keeps the official image-0 queries here.)"""
    record = load_record(variant)
    assert build_project_model(record).roi_aligned is False
    aligned = run_project(record, roi_aligned=True)
    assert (own_query_pos(record, aligned) - record["queries"]).abs().max() > 0.1
    # the project's defaults: official RoIAlign, masked pooling (non-padded tokens only)
    ours = run_project(record, official_pooling=False)
    official = record["losses"]
    for name in ("loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_bbox_0", "loss_giou_0"):
        assert_close(ours["losses"][name], official[name] * record["weight_dict"][name])
    assert_close(ours["losses"]["loss_region"], official["loss_feature"] * record["weight_dict"]["loss_feature"])
    offset = (official["loss_enc_global_contra"] - L_G_OFFSET) * record["weight_dict"]["loss_enc_global_contra"]
    assert (ours["losses"]["loss_global"] - offset).abs() > 0.01  # the batches' images are padded
    model = ours["model"]
    with torch.no_grad():  # ... and it is L_g of the per-level non-padded averages: recomputed from the memory
        memory = ours["memory"]
        sizes = [h * w for h, w in memory.spatial_shapes.tolist()]
        assert len(sizes) == (4 if variant == "deformtr_ms" else 1)
        parts, start = [], 0
        for size in sizes[:3]:  # first three levels (official x[:3]); level-major tokens
            tokens = memory.memory[:, start:start + size]
            valid = (~memory.padding_mask[:, start:start + size]).to(tokens.dtype).unsqueeze(-1)
            parts.append((tokens * valid).sum(1) / valid.sum(1))
            start += size
        pooled = torch.cat(parts, dim=1)  # [2B, k d]
        model.projector.train(), model.predictor.train()
        projection = model.projector(pooled, num_views=2)
        prediction = model.predictor(projection, num_views=2)
        batch = pooled.shape[0] // 2
        cos = torch.nn.functional.cosine_similarity
        l_g = -cos(prediction[:batch], projection[batch:]).mean() - cos(prediction[batch:], projection[:batch]).mean()
    assert_close(ours["losses"]["loss_global"], l_g * project_weights(record)["loss_global"])


def test_deformable_project_decodes_each_images_own_queries():
    """The project's rule (each image its own region queries) vs the official Deformable one (image 0's for
    every image, ``query_embed[:, 0]``): image 0's decoder states, boxes and matches stay the official ones in
    both MVCA directions (the images of a batch decode independently), image 1's change."""
    record = load_record("deformtr_ms")
    ours = run_project(record, official_queries=False)
    queries = split_directions(ours["queries"])
    assert torch.equal(queries, split_directions(ours["own_queries"]))  # no rule applied
    assert (queries[:, 1] - queries[:, 0]).abs().max() > 0.1
    hidden = split_directions(ours["decoded"].hidden_states.transpose(0, 1)).transpose(1, 2)  # [2, L, B, Q, D]
    assert_close(hidden[:, :, 0], record["hidden_states"][:, :, 0])
    assert (hidden[:, :, 1] - record["hidden_states"][:, :, 1]).abs().max() > 0.1
    boxes = split_directions(ours["outputs"]["pred_boxes"])  # [2, B, Q, 4], last layer
    assert_close(boxes[:, 0], record["pred_boxes"][:, -1, 0])
    assert (boxes[:, 1] - record["pred_boxes"][:, -1, 1]).abs().max() > 0.01
    assert_matches_official(ours["indices"], record, images={0})


@pytest.mark.parametrize("config", [
    "siamese_detr/siamese_detr_r50_imagenet_60ep.py",
    "siamese_detr/siamese_detr_conditional_r50_imagenet_60ep.py",
    "siamese_detr/siamese_detr_deformable_ms_r50_imagenet_60ep.py",
    "siamese_detr/siamese_detr_deformable_ss_r50_imagenet_60ep.py",
    "demo/demo_siamese_pretrain.py",
])
def test_pretraining_configs_use_the_official_positions_and_sampling(config):
    """What the parity runs use: sine positions without offset (also for Deformable DETR, whose finetuning
    configs keep its -0.5), RoIAlign with aligned=False, L_g over the first 3 levels."""
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(str(Path(__file__).resolve().parents[1] / "configs" / config))
    assert cfg.model.position_embedding.offset == 0.0
    assert cfg.model.get("roi_aligned", False) is False
    assert cfg.model.get("global_context_levels", 3) == 3
