"""Paths that GPU users hit and the CPU suite otherwise does not: float16 / bfloat16 numerics (AMP, or a model
cast with ``.half()`` / ``.to(torch.bfloat16)``), modules DDP would find unused, and clipping under AMP."""
import math

import pytest
import torch
from detectron2.utils.events import EventStorage

from siamese_detr.modeling import FocalHungarianMatcher, PositionEmbeddingSine, SetCriterion
from siamese_detr.modeling.meta_arch.detr import DETR
from siamese_detr.modeling.ops.ms_deform_attn import multi_scale_deformable_attention_pytorch
from siamese_detr.modeling.transformers import ConditionalDetrTransformer
from siamese_detr.modeling.transformers.base import flatten_levels, inverse_sigmoid
from siamese_detr.modeling.transformers.deformable import DeformableDetrTransformer

from test_detr_model import NUM_CLASSES, NUM_QUERIES, PatchBackbone, make_input


def _detr(transformer, **kwargs):
    torch.manual_seed(0)
    return DETR(backbone=PatchBackbone(), position_embedding=PositionEmbeddingSine(16, normalize=True),
                transformer=transformer, num_classes=NUM_CLASSES, num_queries=NUM_QUERIES,
                criterion=SetCriterion(NUM_CLASSES, FocalHungarianMatcher(2.0, 5.0, 2.0), class_loss="focal"),
                weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}, **kwargs)


def _deformable(**kwargs):
    return DeformableDetrTransformer(d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=2,
                                     dim_feedforward=64, dropout=0.0, num_feature_levels=1, **kwargs)


def test_inverse_sigmoid_of_a_saturated_half_sigmoid_is_finite():
    """float16 sigmoid(8.5) is exactly 1.0; x / (1 - x) = 1 / 1e-5 overflows float16 (max 65504)."""
    x = torch.tensor([8.5, -9.0, 0.3], dtype=torch.float16).sigmoid()
    assert x[0].item() == 1.0
    out = inverse_sigmoid(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out[0].item() == pytest.approx(math.log(1 / 1e-5), rel=1e-6)
    assert out[2].item() == pytest.approx(0.3, abs=2e-3)  # float16's resolution of the sigmoid
    exact = torch.tensor([0.25, 0.5], dtype=torch.float64)
    assert inverse_sigmoid(exact).dtype == torch.float64
    assert torch.equal(inverse_sigmoid(exact), torch.log(exact / (1 - exact)))  # unchanged for float64


def test_deformable_sampling_of_low_precision_values_is_done_in_the_wider_dtype():
    """bfloat16 / float16 values with float32 locations (a cast model's encoder): sampled as float32 values
    (what autocast's promotion does), returned in the values' dtype."""
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[4, 6], [2, 3]])
    starts = torch.tensor([0, 24])
    value = torch.randn(2, 30, 2, 4, generator=g)
    locations = torch.rand(2, 5, 2, 2, 3, 2, generator=g)
    weights = torch.rand(2, 5, 2, 2, 3, generator=g)
    for dtype in (torch.float16, torch.bfloat16):
        low = value.to(dtype)
        out = multi_scale_deformable_attention_pytorch(low, shapes, starts, locations, weights)
        expected = multi_scale_deformable_attention_pytorch(low.float(), shapes, starts, locations, weights)
        assert out.dtype == dtype
        assert torch.equal(out, expected.to(dtype))


# max |low - float32| over the 2 x 6 queries (CPU, seed 0): boxes 2.6e-4 / 2.9e-3, sigmoid scores 6.0e-5 / 2.3e-4,
# logits 4.0e-3 / 2.0e-2 (float16 / bfloat16); seeds 1-7 gave at most 4.0e-4 / 2.9e-3, 6e-5 / 3.0e-4 and
# 4.5e-3 / 2.4e-2. Bounds: about 4x the seed-0 values.
_LOW_PRECISION_BOUNDS = {  # dtype: (boxes, sigmoid scores, logits)
    torch.float16: (1e-3, 2.5e-4, 1.5e-2),
    torch.bfloat16: (1e-2, 1e-3, 8e-2),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_deformable_detr_cast_to_low_precision_runs_inference(dtype):
    """The same model (seeded: the transformer is built before ``_detr`` seeds) cast to float16 (11 bits of
    mantissa) or bfloat16 (8 bits) gives the float32 boxes and scores up to that dtype's rounding: the bounds
    (``_LOW_PRECISION_BOUNDS``) reject a float16 model that loses bfloat16-level precision somewhere (boxes off by
    2.9e-3) and scores of clamped or coarsely rounded logits, which a 0.05 box bound let through."""
    torch.manual_seed(0)
    model = _detr(_deformable(with_box_refine=True)).eval()
    inputs = [make_input(64, 96), make_input(64, 64, seed=1)]
    with torch.no_grad():
        reference = model.forward_outputs(model.preprocess_image(inputs))
        model.to(dtype)
        low = model.forward_outputs(model.preprocess_image(inputs))
    assert low["pred_logits"].dtype == dtype  # boxes come out float32: refined around float32 references
    assert torch.isfinite(low["pred_boxes"]).all() and torch.isfinite(low["pred_logits"]).all()
    box_bound, score_bound, logit_bound = _LOW_PRECISION_BOUNDS[dtype]
    assert (low["pred_boxes"].float() - reference["pred_boxes"]).abs().max() <= box_bound
    scores = low["pred_logits"].float().sigmoid()
    assert (scores - reference["pred_logits"].sigmoid()).abs().max() <= score_bound
    assert (low["pred_logits"].float() - reference["pred_logits"]).abs().max() <= logit_bound
    # logits near the focal prior -log(99) = -4.6 (scores ~0.01): clamping them to [-4, 4] moves scores by 1.4e-2
    assert reference["pred_logits"].max() < -3.5 and reference["pred_logits"].min() < -5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_two_stage_deformable_detr_cast_to_low_precision_runs_inference(dtype):
    """The two-stage queries come from a float32 sine encoding of the selected proposals, which a cast model's
    ``pos_trans`` (low-precision weights) used to refuse ("mat1 and mat2 must have the same dtype"). Not
    compared with float32: the top-k of a random tiny model's proposal scores has near-ties that the rounding
    flips (a different proposal moves a box by up to 0.5)."""
    torch.manual_seed(0)
    model = _detr(_deformable(with_box_refine=True, two_stage=True, two_stage_num_proposals=NUM_QUERIES))
    model.eval().to(dtype)
    with torch.no_grad():
        out = model.forward_outputs(model.preprocess_image([make_input(64, 96), make_input(64, 64, seed=1)]))
    assert out["pred_logits"].dtype == dtype and out["pred_logits"].shape[:2] == (2, NUM_QUERIES)
    assert torch.isfinite(out["pred_logits"]).all()
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_valid_ratios_of_low_precision_tokens_are_exact_float32_fractions(dtype):
    mask = torch.zeros(1, 20, 53, dtype=torch.bool)
    mask[:, :, 40:] = True  # 40 of 53 columns and 17 of 20 rows hold the image
    mask[:, 17:] = True
    src = torch.zeros(1, 4, 20, 53, dtype=dtype)
    *_, ratios = flatten_levels([src], [mask], [src])
    assert ratios.dtype == torch.float32
    assert torch.equal(ratios[0, 0], torch.tensor([40 / 53, 17 / 20], dtype=torch.float32))
    assert ratios.to(dtype)[0, 0, 0] != ratios[0, 0, 0]  # the low-precision rounding this avoids


def test_box_refinement_without_auxiliary_losses_is_refused():
    """Each earlier decoder layer's own heads learn only through its auxiliary loss: without it they never
    train (and DDP with find_unused_parameters=False stops at the second iteration)."""
    with pytest.raises(ValueError, match="aux_loss=False with per-layer prediction heads"):
        _detr(_deformable(with_box_refine=True), aux_loss=False)
    _detr(_deformable(with_box_refine=True), aux_loss=True)
    _detr(_deformable(with_box_refine=False), aux_loss=False)  # one shared head: used by the last layer


@pytest.mark.parametrize("build", [
    lambda: _detr(_deformable(with_box_refine=True)),
    lambda: _detr(_deformable(with_box_refine=False), aux_loss=False),
    lambda: _detr(ConditionalDetrTransformer(d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                             dim_feedforward=64, dropout=0.0)),
], ids=["deformable_refine", "deformable_no_aux", "conditional_one_layer"])
def test_every_trainable_parameter_gets_a_gradient(build):
    """What DistributedDataParallel(find_unused_parameters=False), the configs' setting, requires."""
    model = build().train()
    with EventStorage():
        losses = model([make_input(64, 96, boxes=((4, 6, 30, 40), (40, 10, 90, 60)), classes=(1, 2))])
    sum(model.weight_dict.get(k, 0.0) * v for k, v in losses.items()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_bfloat16_batch_norm_statistics_are_computed_in_float32(monkeypatch):
    """The synchronised per-view batch norm of the SimSiam heads (world size > 1; the all-reduce is the
    identity here, one process standing for the group): E[x^2] - E[x]^2 in bfloat16 cancels to a negative
    variance (NaN) when the mean is large against the spread; computed in float32 it matches float32."""
    import siamese_detr.modeling.pretext.simsiam as simsiam

    monkeypatch.setattr(simsiam.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(simsiam.dist, "get_world_size", lambda: 1)
    monkeypatch.setattr(simsiam, "differentiable_all_reduce", lambda x: x)
    g = torch.Generator().manual_seed(0)
    x = (300.0 + 4 * torch.randn(8, 64, generator=g)).to(torch.bfloat16)  # two views of 4 rows
    reference = simsiam.SyncBatchNorm1d(64).train()(x.float(), num_views=2)  # the same inputs, in float32
    low = simsiam.SyncBatchNorm1d(64).train().to(torch.bfloat16)(x, num_views=2)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    # only the output is rounded to bfloat16 (|values| < 2: steps of at most 2^-7 * 2)
    assert (low.float() - reference).abs().max() <= 2 ** -6


def test_clipping_refuses_an_optimizer_that_unscales_amp_gradients_itself():
    from siamese_detr.engine.gradient_clipping import add_gradient_clipping

    params = [torch.nn.Parameter(torch.ones(3))]
    fused = torch.optim.AdamW(params, lr=1e-3)
    fused._step_supports_amp_scaling = True  # what fused=True sets (fused kernels need CUDA to construct)
    with pytest.raises(ValueError, match="unscales the AMP gradients inside its own step"):
        add_gradient_clipping(fused, 0.1, amp=True)
    assert add_gradient_clipping(fused, 0.1, amp=False) is not None  # no GradScaler: nothing is scaled
    assert add_gradient_clipping(torch.optim.AdamW(params, lr=1e-3), 0.1, amp=True) is not None


def test_focal_loss_of_half_logits_is_the_float32_loss_of_the_same_logits():
    from siamese_detr.modeling.criterion import sigmoid_focal_loss

    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(2, 5, 4, generator=g)).half()
    targets = (torch.rand(2, 5, 4, generator=g) > 0.8).half()
    low = sigmoid_focal_loss(logits, targets, num_boxes=3.0)
    assert low.dtype == torch.float32
    assert torch.equal(low, sigmoid_focal_loss(logits.float(), targets.float(), num_boxes=3.0))


def test_region_features_of_half_maps_keep_float32_box_coordinates():
    """A box edge at 1000.75 px is 1000.5 or 1001 in float16: the RoIAlign of half feature maps samples where
    the float32 one does (same features, rounded to float16), and returns float16."""
    from siamese_detr.modeling.pretext.region_features import average_pooled_roi_features

    g = torch.Generator().manual_seed(0)
    level = torch.randn(1, 3, 40, 70, generator=g).half()  # stride 32: a 2240 x 1280 image
    boxes = [torch.tensor([[1000.75, 300.25, 1500.5, 900.75]])]
    low = average_pooled_roi_features([level], boxes, [32])
    expected = average_pooled_roi_features([level.float()], boxes, [32])
    assert low.dtype == torch.float16
    assert torch.equal(low, expected.half())
