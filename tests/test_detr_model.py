"""Tiny DETR end to end on CPU: losses, inference resolution, batch/padding invariance, training, checkpoints;
plus the transformer's encode/decode API and the sine position encoding."""

import math
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn

from siamese_detr.modeling import (
    DETR,
    DetrTransformer,
    HungarianMatcher,
    PositionEmbeddingSine,
    SetCriterion,
    SoftmaxArgmaxPostProcess,
    SoftmaxTopKPostProcess,
    build_resnet_backbone_for_detr,
    feature_padding_mask,
)

NUM_CLASSES, NUM_QUERIES, D_MODEL = 3, 6, 32
WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}


class PatchBackbone(Backbone):
    """Non-overlapping 32x32 patches -> features: a feature cell depends on its own pixels only, so unlike a
    CNN with 3x3 convs (whose border cells see the padding) it makes batching exactly padding-invariant."""

    def __init__(self, channels=16):
        super().__init__()
        self.proj = nn.Conv2d(3, channels, kernel_size=32, stride=32)
        self.channels = channels

    def forward(self, x):
        return {"res5": torch.relu(self.proj(x))}

    def output_shape(self):
        return {"res5": ShapeSpec(channels=self.channels, stride=32)}


def make_model(seed=0, backbone="resnet18", num_decoder_layers=2, dropout=0.0):
    torch.manual_seed(seed)
    bb = build_resnet_backbone_for_detr(depth=18, freeze_at=1) if backbone == "resnet18" else PatchBackbone()
    transformer = DetrTransformer(
        d_model=D_MODEL,
        nhead=4,
        num_encoder_layers=1,
        num_decoder_layers=num_decoder_layers,
        dim_feedforward=64,
        dropout=dropout,
    )
    criterion = SetCriterion(NUM_CLASSES, HungarianMatcher(1, 5, 2), eos_coef=0.1)
    return DETR(
        backbone=bb,
        position_embedding=PositionEmbeddingSine(D_MODEL // 2, normalize=True),
        transformer=transformer,
        num_classes=NUM_CLASSES,
        num_queries=NUM_QUERIES,
        criterion=criterion,
        weight_dict=WEIGHTS,
        postprocess=SoftmaxTopKPostProcess(num_detections=10),
    )


def make_input(h, w, boxes=((4.0, 6.0, 30.0, 40.0),), classes=(1,), seed=0, **extra):
    g = torch.Generator().manual_seed(seed)
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return dict(
        {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), "instances": inst},
        **extra,
    )


# ------------------------------------------------------------------------------------------------- model
def test_training_returns_weighted_losses_including_aux():
    model = make_model(num_decoder_layers=3)
    model.train()
    inputs = [
        make_input(64, 80),
        make_input(48, 64, boxes=((0, 0, 20, 20), (10, 10, 60, 40)), classes=(0, 2)),
    ]
    with EventStorage():
        losses = model(inputs)
    base = ["loss_ce", "loss_bbox", "loss_giou"]
    assert set(losses) == set(base) | {f"{k}_{i}" for k in base for i in range(2)}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())

    # weights applied: compare with the criterion's unweighted losses on the same outputs
    images = model.preprocess_image(inputs)
    targets = model.prepare_targets(inputs, images.image_sizes, model.device)
    unweighted = model.criterion(model.forward_outputs(images), targets)
    for k, v in losses.items():
        assert torch.allclose(v, WEIGHTS[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] * unweighted[k])


def test_targets_are_normalised_by_unpadded_size():
    inputs = [
        make_input(64, 80, boxes=((8.0, 16.0, 40.0, 48.0),)),
        make_input(32, 40, boxes=((0.0, 0.0, 40.0, 32.0),)),
    ]
    targets = DETR.prepare_targets(inputs, [(64, 80), (32, 40)], torch.device("cpu"))
    # (cx, cy, w, h) / (W, H): (24/80, 32/64, 32/80, 32/64) and the full image (0.5, 0.5, 1, 1)
    assert torch.allclose(targets[0]["boxes"], torch.tensor([[0.3, 0.5, 0.4, 0.5]]))
    assert torch.allclose(targets[1]["boxes"], torch.tensor([[0.5, 0.5, 1.0, 1.0]]))
    assert targets[1]["labels"].tolist() == [1]


def test_inference_rescales_to_original_size():
    model = make_model().eval()
    inp = make_input(64, 80, height=128, width=200)
    with torch.no_grad():
        out = model([inp])
        raw = model.forward_outputs(model.preprocess_image([inp]))
    inst = out[0]["instances"]
    assert inst.image_size == (128, 200)
    assert len(inst) == 10
    assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes"}

    # independent top-10 over (query, class) of the foreground softmax, boxes scaled to 200 x 128
    prob = raw["pred_logits"][0].softmax(-1)[:, :-1]
    scores, flat = prob.flatten().topk(10)
    assert torch.allclose(inst.scores, scores)
    assert inst.pred_classes.tolist() == [f % NUM_CLASSES for f in flat.tolist()]
    cx, cy, w, h = raw["pred_boxes"][0][flat // NUM_CLASSES].unbind(-1)
    expected = torch.stack(
        [(cx - w / 2) * 200, (cy - h / 2) * 128, (cx + w / 2) * 200, (cy + h / 2) * 128], -1
    )
    expected = torch.minimum(expected.clamp(min=0), torch.tensor([200.0, 128.0, 200.0, 128.0]))
    assert torch.allclose(inst.pred_boxes.tensor, expected, atol=1e-4)


def test_default_postprocess_is_one_arg_max_class_per_query():
    model = make_model().eval()
    model.postprocess = SoftmaxArgmaxPostProcess()
    inp = make_input(64, 80)
    with torch.no_grad():
        inst = model([inp])[0]["instances"]
        raw = model.forward_outputs(model.preprocess_image([inp]))
    assert len(inst) == NUM_QUERIES  # every query, once
    prob = raw["pred_logits"][0].softmax(-1)
    for q in range(NUM_QUERIES):  # independent loop: best foreground class of each query
        fg = prob[q, :NUM_CLASSES].tolist()
        best = max(range(NUM_CLASSES), key=lambda c: fg[c])
        assert inst.pred_classes[q].item() == best
        assert math.isclose(inst.scores[q].item(), fg[best], rel_tol=1e-6)


def test_batched_predictions_equal_single_image_predictions():
    model = make_model(backbone="patch").eval()
    small, large = make_input(70, 90, seed=1), make_input(100, 130, seed=2)
    with torch.no_grad():
        batched = model([small, large])
        alone = [model([small])[0], model([large])[0]]
    for b, a in zip(batched, alone):
        b, a = b["instances"], a["instances"]
        assert b.image_size == a.image_size
        assert len(b) == len(a)
        assert torch.allclose(b.scores, a.scores, atol=1e-4)
        assert torch.allclose(b.pred_boxes.tensor, a.pred_boxes.tensor, atol=1e-3)
        assert torch.equal(b.pred_classes, a.pred_classes)


def test_padding_mask_matches_resnet_feature_grid():
    model = make_model().eval()
    images = model.preprocess_image([make_input(70, 90), make_input(100, 130)])
    assert images.tensor.shape[-2:] == (128, 160)  # padded to a multiple of the stride 32
    with torch.no_grad():
        feat = model.backbone(images.tensor)["res5"]
    mask = feature_padding_mask(images, feat.shape[-2:])
    assert mask.shape == (2, *feat.shape[-2:]) == (2, 4, 5)
    for i, (h, w) in enumerate(images.image_sizes):
        rows, cols = math.ceil(h / 32), math.ceil(w / 32)  # cells whose stride-32 anchor pixel is inside
        expected = torch.ones(4, 5, dtype=torch.bool)
        expected[:rows, :cols] = False
        assert torch.equal(mask[i], expected)


def test_few_adamw_steps_lower_the_loss():
    model = make_model(seed=3).train()
    model.backbone.requires_grad_(False)  # frozen backbone (as in pretraining) keeps the test fast
    inputs = [
        make_input(64, 80, seed=5),
        make_input(64, 80, boxes=((30, 20, 70, 60), (2, 2, 20, 30)), classes=(0, 2)),
    ]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    with EventStorage():
        history = []
        for _ in range(12):
            loss = sum(model(inputs).values())
            history.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
        final = sum(model(inputs).values()).item()
    assert final < 0.9 * history[0]
    assert history[-1] < history[0]


def test_normalisation_buffers_are_not_saved_and_give_the_device():
    model = make_model()
    keys = model.state_dict().keys()
    assert "pixel_mean" not in keys and "pixel_std" not in keys
    assert model.device == torch.device("cpu")
    for name in (
        "backbone",
        "input_proj",
        "position_embedding",
        "transformer",
        "query_embed",
        "class_embed",
        "bbox_embed",
        "criterion",
    ):
        assert hasattr(model, name)
    assert model.query_embed.weight.shape == (NUM_QUERIES, D_MODEL)
    assert model.class_embed[0].out_features == NUM_CLASSES + 1
    assert len(model.bbox_embed[0].layers) == 3
    # Vanilla DETR shares one class / box head across decoder layers: the entries alias one module
    assert len(model.class_embed) == len(model.bbox_embed) == 2
    assert model.class_embed[0] is model.class_embed[1] and model.bbox_embed[0] is model.bbox_embed[1]
    keys = model.state_dict()
    assert torch.equal(keys["class_embed.0.weight"], keys["class_embed.1.weight"])


def test_checkpoint_round_trip_reproduces_outputs(tmp_path):
    model = make_model(seed=0).eval()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("detr_tiny")
    fresh = make_model(seed=1).eval()
    inp = [make_input(64, 80, seed=7)]
    with torch.no_grad():
        before = fresh([dict(inp[0])])[0]["instances"]
        DetectionCheckpointer(fresh).load(str(tmp_path / "detr_tiny.pth"))
        expected = model(inp)[0]["instances"]
        got = fresh(inp)[0]["instances"]
    assert not torch.equal(before.scores, expected.scores)  # the seeds really differ
    assert torch.equal(got.scores, expected.scores)
    assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(got.pred_classes, expected.pred_classes)


def test_config_overrides_keep_aux_weights_consistent():
    cfg = LazyConfig.load(str(Path(__file__).resolve().parents[1] / "configs/common/models/detr_r50.py"))
    assert cfg.model.backbone.stages.depth == 50 and cfg.model.num_classes == 80
    cfg.model.num_classes = 5
    cfg.model.num_queries = 4
    cfg.model.backbone.stages.depth = 18
    cfg.model.transformer.update(
        d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=3, dim_feedforward=32, dropout=0.0
    )
    cfg.model.position_embedding.num_pos_feats = 8
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert model.criterion.num_classes == 5 and model.class_embed[0].out_features == 6
    assert model.input_proj[0][0].in_channels == 512
    with EventStorage():
        losses = model.train()([make_input(64, 64, classes=(4,))])
    assert set(losses) == {f"{k}{s}" for k in ("loss_ce", "loss_bbox", "loss_giou") for s in ("", "_0", "_1")}
    unweighted = model.criterion(
        model.forward_outputs(model.preprocess_image([make_input(64, 64, classes=(4,))])),
        [{"labels": torch.tensor([4]), "boxes": torch.tensor([[17 / 64, 23 / 64, 26 / 64, 34 / 64]])}],
    )
    assert torch.allclose(losses["loss_bbox_1"], 5.0 * unweighted["loss_bbox_1"])
    assert torch.allclose(losses["loss_giou_0"], 2.0 * unweighted["loss_giou_0"])


# ------------------------------------------------------------------------------------------- transformer
def _encode(tr, src, mask, pos):
    return tr.encode([src], [mask], [pos])


@pytest.mark.parametrize("normalize_before", [False, True])
def test_transformer_encode_flattens_row_major_and_decode_stacks_layers(normalize_before):
    torch.manual_seed(0)
    tr = DetrTransformer(16, 2, 1, 3, 32, dropout=0.0, normalize_before=normalize_before).eval()
    src, pos = torch.randn(2, 16, 3, 4), torch.randn(2, 16, 3, 4)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[1, :, 3:] = True
    memory = _encode(tr, src, mask, pos)
    assert memory.memory.shape == (2, 12, 16)
    assert torch.equal(memory.padding_mask, mask.flatten(1))
    assert torch.equal(memory.pos, pos.flatten(2).transpose(1, 2))
    assert memory.spatial_shapes.tolist() == [[3, 4]] and memory.level_start_index.tolist() == [0]
    assert torch.allclose(memory.valid_ratios, torch.tensor([[[1.0, 1.0]], [[0.75, 1.0]]]))
    query = torch.randn(2, 5, 16)
    decoded = tr.decode(memory, query)
    assert decoded.hidden_states.shape == (3, 2, 5, 16) and decoded.references is None
    # image 1 alone gives the same states as in the batch (padding is masked)
    alone = tr.decode(memory.select(torch.tensor([1])), query[1:])
    assert torch.allclose(alone.hidden_states, decoded.hidden_states[:, 1:], atol=1e-6)


def test_padded_memory_is_ignored_and_self_attn_mask_blocks_groups():
    torch.manual_seed(0)
    tr = DetrTransformer(16, 2, 1, 2, 32, dropout=0.0).eval()
    src, pos = torch.randn(1, 16, 2, 3), torch.randn(1, 16, 2, 3)
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    mask[0, 1, :] = True
    query = torch.randn(1, 4, 16)
    hs = tr.decode(_encode(tr, src, mask, pos), query).hidden_states
    src2, pos2 = src.clone(), pos.clone()
    src2[..., 1, :] += 5.0
    pos2[..., 1, :] -= 3.0
    assert torch.allclose(hs, tr.decode(_encode(tr, src2, mask, pos2), query).hidden_states, atol=1e-5)

    # block-diagonal mask between query groups {0, 1} and {2, 3} (True = not allowed): changing the
    # queries of group 2 leaves group 1's states unchanged only with the mask
    memory = _encode(tr, src, mask, pos)
    attn_mask = torch.ones(4, 4, dtype=torch.bool)
    attn_mask[:2, :2] = attn_mask[2:, 2:] = False
    query2 = query.clone()
    query2[:, 2:] += 1.0
    out1 = tr.decode(memory, query, self_attn_mask=attn_mask).hidden_states
    out2 = tr.decode(memory, query2, self_attn_mask=attn_mask).hidden_states
    assert torch.allclose(out1[:, :, :2], out2[:, :, :2], atol=1e-6)
    assert not torch.allclose(out1[:, :, 2:], out2[:, :, 2:], atol=1e-3)
    unmasked1 = tr.decode(memory, query).hidden_states
    unmasked2 = tr.decode(memory, query2).hidden_states
    assert not torch.allclose(unmasked1[:, :, :2], unmasked2[:, :, :2], atol=1e-4)


# ------------------------------------------------------------------------------------- position encoding
def test_position_encoding_hand_values_and_padding_invariance():
    pe = PositionEmbeddingSine(num_pos_feats=4, temperature=100, normalize=True)
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    out = pe(mask)
    assert out.shape == (1, 8, 2, 3)
    # cell (y=1, x=0): 1-based y = 2 of 2 rows, x = 1 of 3 columns, scaled to [0, 2 pi]
    y, x = 2 / 2 * 2 * math.pi, 1 / 3 * 2 * math.pi
    freqs = [1.0, 1.0, 100 ** (2 / 4), 100 ** (2 / 4)]
    expected_y = [
        math.sin(y / freqs[0]),
        math.cos(y / freqs[1]),
        math.sin(y / freqs[2]),
        math.cos(y / freqs[3]),
    ]
    expected_x = [
        math.sin(x / freqs[0]),
        math.cos(x / freqs[1]),
        math.sin(x / freqs[2]),
        math.cos(x / freqs[3]),
    ]
    assert torch.allclose(out[0, :, 1, 0], torch.tensor(expected_y + expected_x), atol=1e-5)

    padded = torch.ones(1, 4, 5, dtype=torch.bool)
    padded[0, :2, :3] = False
    assert torch.allclose(pe(padded)[..., :2, :3], out, atol=1e-6)


@pytest.mark.parametrize("variant", ["vanilla", "conditional", "deformable"])
def test_a_width_that_the_heads_do_not_divide_names_the_config_keys(variant):
    """``model.transformer.nhead=7`` with d_model 32: torch's MultiheadAttention asserted, naming no key."""
    from siamese_detr.modeling.transformers import (ConditionalDetrTransformer, DeformableDetrTransformer,
                                                    DetrTransformer)

    cls = {"vanilla": DetrTransformer, "conditional": ConditionalDetrTransformer,
           "deformable": DeformableDetrTransformer}[variant]
    with pytest.raises(ValueError, match=r"d_model \(?32\)? must be .*divisible by n_?heads? \(?7\)?.*"
                                         r"model\.transformer\.d_model / model\.transformer\.nhead"):
        cls(d_model=32, nhead=7, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16)


# ------------------------------------------------------------------------ focal variants (Conditional / Deformable)
def _focal_model(variant, seed=0, num_queries=NUM_QUERIES, two_stage=False):
    """Tiny focal-loss DETR of a variant (PatchBackbone, d_model 32, 2 decoder layers, no dropout), with the
    default post-processing; the box heads get random last layers so the hidden states move the boxes."""
    from siamese_detr.modeling import ConditionalDetrTransformer, DeformableDetrTransformer, FocalHungarianMatcher

    torch.manual_seed(seed)
    if variant == "conditional":
        transformer = ConditionalDetrTransformer(d_model=D_MODEL, nhead=2, num_encoder_layers=1,
                                                 num_decoder_layers=2, dim_feedforward=64, dropout=0.0)
    else:
        transformer = DeformableDetrTransformer(
            d_model=D_MODEL, nhead=2, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=64,
            dropout=0.0, num_feature_levels=1, enc_n_points=2, dec_n_points=2, with_box_refine=two_stage,
            two_stage=two_stage, two_stage_num_proposals=num_queries,
        )
    criterion = SetCriterion(NUM_CLASSES, FocalHungarianMatcher(2.0, 5.0, 2.0), class_loss="focal")
    model = DETR(
        backbone=PatchBackbone(), position_embedding=PositionEmbeddingSine(D_MODEL // 2, normalize=True),
        transformer=transformer, num_classes=NUM_CLASSES, num_queries=num_queries, criterion=criterion,
        weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
    )
    with torch.no_grad():  # away from the official zero init of the last box layer
        for head in model.bbox_embed:
            head.layers[-1].weight.normal_(0.0, 0.1)
            head.layers[-1].bias.normal_(0.0, 0.1)
    return model


def _inverse_sigmoid(x, eps=1e-5):
    """Official ``util/misc.py`` ``inverse_sigmoid``, written out."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


@pytest.mark.parametrize("variant", ["conditional", "deformable"])
def test_box_loss_trains_the_reference_head_through_the_reference(variant):
    """Official Conditional / Deformable DETR: ``pred_boxes = sigmoid(bbox_embed(hs) + [inverse_sigmoid(s), 0,
    0])`` with ``s = sigmoid(ref_point_head(p_q))`` (Conditional) or ``sigmoid(reference_points(query_pos))``
    (Deformable, no refinement); nothing detached, so the box loss reaches the reference head through ``s``.
    With the hidden states detached (isolating that path), the gradient of the final boxes' centres on the
    reference head equals autograd of that formula written out here."""
    from siamese_detr.modeling.transformers.base import DecoderOutput

    model = _focal_model(variant).eval()
    images = model.preprocess_image([make_input(64, 96), make_input(64, 64, seed=1)])
    _, memory = model.encode(images)
    decoded = model.decode(memory, model.object_queries(len(images)))
    isolated = DecoderOutput(decoded.hidden_states.detach(), decoded.references, decoded.encoder_outputs)
    out = model.head_outputs(isolated)
    tr = model.transformer
    if variant == "conditional":
        head = tr.ref_point_head
        w0, b0, w1, b1 = (p for layer in head.layers for p in (layer.weight, layer.bias))
        points = torch.sigmoid(torch.relu(model.query_embed.weight @ w0.T + b0) @ w1.T + b1)  # [Q, 2]
    else:
        head = tr.reference_points
        points = torch.sigmoid(model.query_embed.weight[:, :D_MODEL] @ head.weight.T + head.bias)
    params = list(head.parameters())
    got = torch.autograd.grad(out["pred_boxes"][..., :2].sum(), params, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in got)

    delta = model.bbox_embed[-1](decoded.hidden_states[-1].detach())[..., :2]
    expected_boxes = torch.sigmoid(delta + _inverse_sigmoid(points)[None])
    torch.testing.assert_close(out["pred_boxes"][..., :2], expected_boxes, rtol=1e-5, atol=1e-6)
    expected = torch.autograd.grad(expected_boxes.sum(), params)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_conditional_gradients_flow_through_the_query_scale_input():
    """Conditional DETR's ``T = query_scale(f)`` takes the previous layer's output ``f`` undetached (official
    ``TransformerDecoder``), so the first layer also learns from how it scales the later spatial queries:
    autograd of the final boxes w.r.t. a first-layer parameter equals finite differences (float64)."""
    model = _focal_model("conditional").double().eval()
    images = model.preprocess_image([make_input(64, 64)])
    with torch.no_grad():
        _, memory = model.encode(images)
    queries = model.object_queries(1)
    name = "transformer.decoder_layers.0.norm3.bias"
    bias = dict(model.named_parameters())[name].detach().clone().requires_grad_()

    class FinalBoxes(nn.Module):
        def __init__(self, detr):
            super().__init__()
            self.detr = detr

        def forward(self, mem, q):
            return self.detr.head_outputs(self.detr.decode(mem, q))["pred_boxes"]

    wrapper = FinalBoxes(model)

    def final_boxes(b):
        return torch.func.functional_call(wrapper, {"detr." + name: b}, (memory, queries))

    assert torch.autograd.gradcheck(final_boxes, (bias,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_focal_models_keep_the_official_top_100_detections():
    """Official Conditional / Deformable DETR ``PostProcess``: the top 100 (query, class) sigmoid scores. With
    ``Q * K = 40 * 3 = 120 > 100`` pairs every image gives exactly 100 instances, the 100 best pairs."""
    from siamese_detr.modeling import FocalHungarianMatcher, SigmoidTopKPostProcess
    from siamese_detr.modeling.meta_arch.detr import default_postprocess

    focal = SetCriterion(NUM_CLASSES, FocalHungarianMatcher(2.0, 5.0, 2.0), class_loss="focal")
    rule = default_postprocess(focal)
    assert isinstance(rule, SigmoidTopKPostProcess) and rule.num_detections == 100

    for variant in ("conditional", "deformable"):
        model = _focal_model(variant, num_queries=40).eval()
        assert model.postprocess.num_detections == 100
        inputs = [make_input(64, 96), make_input(64, 64, seed=1)]
        with torch.no_grad():
            results = model(inputs)
            outputs = model.forward_outputs(model.preprocess_image(inputs))
        for b, res in enumerate(results):
            inst = res["instances"]
            assert len(inst) == 100, variant
            best = outputs["pred_logits"][b].sigmoid().flatten().sort(descending=True).values[:100]
            torch.testing.assert_close(inst.scores.sort(descending=True).values, best)


@pytest.mark.parametrize("normalize_before", [False, True])
def test_last_layer_only_decoder_output_is_normalised_like_the_intermediate_ones(normalize_before):
    """``return_intermediate_dec=False`` (official DETR ``TransformerDecoder`` with ``norm``): the single
    output is the last layer's, after ``decoder_norm``, i.e. the last of the intermediate outputs. The final
    LayerNorm gets random affine parameters so that it is not (nearly) the identity after a post-norm layer."""
    torch.manual_seed(0)
    full = DetrTransformer(16, 2, 1, 3, 32, dropout=0.0, normalize_before=normalize_before).eval()
    with torch.no_grad():
        full.decoder_norm.weight.normal_(1.0, 0.5)
        full.decoder_norm.bias.normal_(0.0, 0.5)
    last = DetrTransformer(16, 2, 1, 3, 32, dropout=0.0, normalize_before=normalize_before,
                           return_intermediate_dec=False).eval()
    last.load_state_dict(full.state_dict())
    src, pos = torch.randn(2, 16, 3, 4), torch.randn(2, 16, 3, 4)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[1, :, 3:] = True
    query = torch.randn(2, 5, 16)
    every = full.decode(_encode(full, src, mask, pos), query).hidden_states
    single = last.decode(_encode(last, src, mask, pos), query).hidden_states
    assert every.shape == (3, 2, 5, 16) and single.shape == (1, 2, 5, 16)
    torch.testing.assert_close(single[0], every[-1], rtol=1e-5, atol=1e-6)
