"""Conditional DETR: parity with the official implementation (github.com/Atten4Vis/ConditionalDETR) on a recorded
tiny float64 model (tests/fixtures/conditional_detr/README.md), the official checkpoint converter, padding
invariance and the decoder's invariants (reference points, self-attention mask, spatial query embedding)."""

import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone
from torch import nn

from detr_parity_utils import (
    RecordedBackbone,
    assert_close,
    batched_inputs,
    convert_into,
    load_fixture,
    per_layer_outputs,
)
from siamese_detr.checkpoint.registry import get_converter
from siamese_detr.modeling import (
    DETR,
    ConditionalDetrTransformer,
    FocalHungarianMatcher,
    PositionEmbeddingSine,
    SetCriterion,
    SigmoidTopKPostProcess,
)
from siamese_detr.modeling.transformers.base import EncoderMemory
from siamese_detr.modeling.transformers.conditional import ProjectedAttention, sine_embed_points

WEIGHTS = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def build_model(backbone, d_model, nhead, enc, dec, ffn, num_queries, num_classes, dropout=0.0):
    transformer = ConditionalDetrTransformer(
        d_model=d_model, nhead=nhead, num_encoder_layers=enc, num_decoder_layers=dec, dim_feedforward=ffn,
        dropout=dropout,
    )
    return DETR(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(d_model // 2, normalize=True),
        transformer=transformer,
        num_classes=num_classes,
        num_queries=num_queries,
        criterion=SetCriterion(num_classes, FocalHungarianMatcher(), class_loss="focal"),
        weight_dict=WEIGHTS,
        postprocess=SigmoidTopKPostProcess(num_detections=100),
    )


@pytest.fixture(scope="module")
def official():
    state, io = load_fixture("conditional_detr")
    d_model, nhead, enc, dec, ffn, num_queries, num_classes, _ = io["config"].tolist()
    model = build_model(RecordedBackbone(io["features"]), d_model, nhead, enc, dec, ffn, num_queries, num_classes)
    model = model.double().eval()
    convert_into(model, "conditional_detr", state)
    with torch.no_grad():
        images = model.preprocess_image(batched_inputs(io))
        outputs = model.forward_outputs(images)
        _, memory = model.encode(images)
        decoded = model.decode(memory, model.object_queries(len(images)))
    return model, io, outputs, memory, decoded


# ------------------------------------------------------------------------------------------ official parity
def test_padding_mask_matches_official(official):
    model, io, *_ = official
    images = model.preprocess_image(batched_inputs(io))
    pixel = torch.ones_like(io["pixel_mask"])
    for b, (h, w) in enumerate(images.image_sizes):
        pixel[b, :h, :w] = False
    assert torch.equal(pixel, io["pixel_mask"])


def test_encoder_memory_matches_official(official):
    _, io, _, memory, _ = official
    assert_close(memory.memory, io["memory"])


def test_reference_points_and_decoder_states_match_official(official):
    model, io, _, _, decoded = official
    queries = model.object_queries(2)
    assert_close(model.transformer.reference_points(queries), io["reference_points"])
    assert_close(decoded.hidden_states, io["hidden_states"])


def test_every_decoder_layer_matches_official(official):
    _, io, outputs, _, _ = official
    logits, boxes = per_layer_outputs(outputs)
    assert len(outputs["aux_outputs"]) == io["pred_logits"].shape[0] - 1
    assert_close(logits, io["pred_logits"])
    assert_close(boxes, io["pred_boxes"])


def test_postprocess_matches_official_topk(official):
    model, io, outputs, _, _ = official
    sizes = [tuple(s) for s in io["target_sizes"].tolist()]
    results = model.inference(outputs["pred_logits"], outputs["pred_boxes"], sizes)
    for b, res in enumerate(results):
        assert len(res) == 100
        assert torch.equal(res.pred_classes, io["post_labels"][b])
        assert_close(res.scores, io["post_scores"][b])
        assert_close(res.pred_boxes.tensor, io["post_boxes"][b], tol=1e-6 * max(sizes[b]))


# ------------------------------------------------------------------------------------------------ converter
def test_converter_maps_every_official_tensor_once():
    state, io = load_fixture("conditional_detr")
    result = get_converter("conditional_detr")(state)
    assert result.unmapped == [] and result.dropped == []
    num_layers = int(io["config"][3])
    converted = result.converted
    # every official tensor reappears unchanged; shared heads appear once per decoder layer
    for key, value in state.items():
        if key.startswith(("class_embed.", "bbox_embed.")):
            head, rest = key.split(".", 1)
            targets = [f"{head}.{layer}.{rest}" for layer in range(num_layers)]
        else:
            targets = [k for k, v in converted.items() if v is value]
            assert len(targets) == 1, (key, targets)
        for t in targets:
            assert torch.equal(converted[t], value), (key, t)
    assert set(converted) == set(k for k in official_model_keys(io))


def official_model_keys(io):
    d_model, nhead, enc, dec, ffn, num_queries, num_classes, _ = io["config"].tolist()
    model = build_model(RecordedBackbone(io["features"]), d_model, nhead, enc, dec, ffn, num_queries, num_classes)
    return model.state_dict().keys()


def test_converter_round_trip_through_model(official):
    """The converted tensors load into the project's model: the same keys, each of the model's shape, and the
    model's state after loading is the converted one (the per-layer aliases of the shared heads included). That
    each official tensor is converted once and unchanged: the test above."""
    model, *_ = official
    state, _ = load_fixture("conditional_detr")
    converted = get_converter("conditional_detr")(state).converted
    ours = model.state_dict()
    assert set(converted) == set(ours)
    for key, value in converted.items():
        assert ours[key].shape == value.shape and torch.equal(ours[key], value), key


def test_converter_backbone_unmapped_and_coco_rows():
    torchvision = pytest.importorskip("torchvision")
    state, _ = load_fixture("conditional_detr")
    state = dict(state)
    body = torchvision.models.resnet18(weights=None).state_dict()
    state.update({f"backbone.0.body.{k}": v for k, v in body.items() if not k.startswith("fc.")})
    state["bbox_attention.q_linear.weight"] = torch.zeros(2, 2)  # a segmentation head: not in our model
    coco = torch.arange(91 * 32, dtype=torch.float64).view(91, 32)
    state["class_embed.weight"], state["class_embed.bias"] = coco, torch.arange(91.0)
    result = get_converter("conditional_detr")({"model": state})
    assert result.unmapped == ["bbox_attention.q_linear.weight"]
    conv1 = result.converted["backbone.stem.conv1.weight"]
    assert torch.equal(conv1, body["conv1.weight"].flip(1))  # RGB -> BGR
    assert torch.equal(result.converted["backbone.res5.1.conv2.norm.running_var"], body["layer4.1.bn2.running_var"])
    # 91 COCO-id rows -> detectron2's 80 contiguous classes: class i <- category id of class i
    from detectron2.data import MetadataCatalog

    ids = sorted(MetadataCatalog.get("coco_2017_val").thing_dataset_id_to_contiguous_id.items(), key=lambda x: x[1])
    rows = [cat for cat, _ in ids]
    assert torch.equal(result.converted["class_embed.1.bias"], torch.tensor(rows, dtype=torch.float64))
    assert torch.equal(result.converted["class_embed.0.weight"], coco[rows])
    assert any(d.startswith("class_embed.weight[rows 0,12,") for d in result.dropped)
    assert "backbone.0.body.layer1.0.bn1.num_batches_tracked" in result.dropped


# ------------------------------------------------------------------------------------------ model invariants
class PatchBackbone(Backbone):
    """Non-overlapping 32x32 patches: each feature cell sees only its own pixels (exact padding invariance)."""

    def __init__(self, channels=16):
        super().__init__()
        self.proj = nn.Conv2d(3, channels, kernel_size=32, stride=32)
        self.channels = channels

    def forward(self, x):
        return {"res5": torch.relu(self.proj(x))}

    def output_shape(self):
        return {"res5": ShapeSpec(channels=self.channels, stride=32)}


def _randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / math.sqrt(p.shape[-1]))


def test_padding_invariance():
    torch.manual_seed(0)
    model = build_model(PatchBackbone(), 32, 4, 1, 2, 64, num_queries=6, num_classes=3).double().eval()
    _randomise(model, 1)  # also the zero-initialised last box layer
    g = torch.Generator().manual_seed(2)
    inputs = [
        {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)} for h, w in [(96, 160), (160, 64)]
    ]
    with torch.no_grad():
        both = model.forward_outputs(model.preprocess_image(inputs))
        for b, x in enumerate(inputs):
            alone = model.forward_outputs(model.preprocess_image([x]))
            for key in ("pred_logits", "pred_boxes"):
                assert_close(both[key][b], alone[key][0], tol=1e-10)
                for aux_both, aux_alone in zip(both["aux_outputs"], alone["aux_outputs"]):
                    assert_close(aux_both[key][b], aux_alone[key][0], tol=1e-10)


def _tiny_memory(b=2, s=7, c=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, s, dtype=torch.bool)
    mask[1, 5:] = True
    return EncoderMemory(
        memory=torch.randn(b, s, c, generator=g, dtype=torch.float64),
        padding_mask=mask,
        pos=torch.randn(b, s, c, generator=g, dtype=torch.float64),
        spatial_shapes=torch.tensor([[1, s]]),
        level_start_index=torch.tensor([0]),
        valid_ratios=torch.ones(b, 1, 2, dtype=torch.float64),
    )


def test_self_attn_mask_separates_query_groups():
    """With a block-diagonal self-attention mask, the only interaction between queries is cut: changing the
    queries of group B leaves group A's states unchanged (and without the mask it does not)."""
    torch.manual_seed(0)
    transformer = ConditionalDetrTransformer(16, 2, 1, 3, 32, dropout=0.0).double().eval()
    memory = _tiny_memory()
    g = torch.Generator().manual_seed(3)
    queries = torch.randn(2, 6, 16, generator=g, dtype=torch.float64)
    changed = queries.clone()
    changed[:, 3:] += torch.randn(2, 3, 16, generator=g, dtype=torch.float64)
    block = torch.ones(6, 6, dtype=torch.bool)
    block[:3, :3] = block[3:, 3:] = False  # True = blocked
    with torch.no_grad():
        a = transformer.decode(memory, queries, self_attn_mask=block).hidden_states
        b = transformer.decode(memory, changed, self_attn_mask=block).hidden_states
        c = transformer.decode(memory, changed).hidden_states
    assert_close(a[:, :, :3], b[:, :, :3], tol=1e-12)
    assert (a[:, :, :3] - c[:, :, :3]).abs().max() > 1e-3
    # a float additive mask with -inf is the same mask
    additive = torch.zeros(6, 6, dtype=torch.float64).masked_fill(block, float("-inf"))
    with torch.no_grad():
        d = transformer.decode(memory, queries, self_attn_mask=additive).hidden_states
    assert_close(a, d, tol=1e-12)


def test_references_are_inverse_sigmoid_of_reference_points():
    torch.manual_seed(0)
    transformer = ConditionalDetrTransformer(16, 2, 1, 2, 32, dropout=0.0).double().eval()
    queries = torch.randn(2, 5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = transformer.decode(_tiny_memory(), queries)
        points = torch.sigmoid(transformer.ref_point_head(queries))
    assert out.references.shape == (2, 2, 5, 2)
    for layer in range(2):
        assert_close(out.references[layer], torch.log(points / (1 - points)), tol=1e-9)


def test_sine_embedding_by_hand():
    """(x, y) = (0.25, 0.5), F = 4: y channels first, then x; frequencies 10000^(2*floor(i/2)/F)."""
    emb = sine_embed_points(torch.tensor([[0.25, 0.5]], dtype=torch.float64), 4)[0]
    y, x = 0.5 * 2 * math.pi, 0.25 * 2 * math.pi
    f1 = 10000 ** (2 / 4)
    expected = [math.sin(y), math.cos(y), math.sin(y / f1), math.cos(y / f1)]
    expected += [math.sin(x), math.cos(x), math.sin(x / f1), math.cos(x / f1)]
    assert_close(emb, torch.tensor(expected, dtype=torch.float64), tol=1e-12)


def test_projected_attention_against_loop():
    """Multi-head attention on pre-projected q/k/v (q/k width 2C, v width C) against an explicit loop."""
    torch.manual_seed(0)
    attn = ProjectedAttention(qk_dim=8, num_heads=2, v_dim=6).double()
    q, k, v = (torch.randn(2, n, d, dtype=torch.float64) for n, d in [(3, 8), (5, 8), (5, 6)])
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    out = attn(q, k, v, key_padding_mask=mask)
    expected = torch.zeros(2, 3, 6, dtype=torch.float64)
    for b in range(2):
        for h in range(2):
            for i in range(3):
                qi = q[b, i, 4 * h:4 * h + 4]
                logits = [float(qi @ k[b, j, 4 * h:4 * h + 4]) / 2.0 for j in range(5) if not mask[b, j]]
                w = torch.tensor(logits, dtype=torch.float64).softmax(0)
                vals = torch.stack([v[b, j, 3 * h:3 * h + 3] for j in range(5) if not mask[b, j]])
                expected[b, i, 3 * h:3 * h + 3] = w @ vals
    assert_close(out, attn.out_proj(expected), tol=1e-12)


def test_projected_attention_attn_mask_rows_are_queries_against_loop():
    """``attn_mask [Q, S]``: row i, column j masks query i from key j (bool True = blocked, float = added to the
    logit). Square (Q = S = 4) and asymmetric, so a transposed mask gives other outputs; against a loop."""
    torch.manual_seed(1)
    attn = ProjectedAttention(qk_dim=8, num_heads=2, v_dim=6).double()
    q, k, v = (torch.randn(2, 4, d, dtype=torch.float64) for d in (8, 8, 6))
    blocked = torch.tensor([[False, True, True, True], [False, False, True, True],
                            [False, False, False, True], [False, False, False, False]])
    bias = torch.arange(16, dtype=torch.float64).view(4, 4) / 4.0
    for mask in (blocked, bias):
        out = attn(q, k, v, attn_mask=mask)
        expected = torch.zeros(2, 4, 6, dtype=torch.float64)
        for b in range(2):
            for h in range(2):
                for i in range(4):
                    keys = [j for j in range(4) if mask.dtype != torch.bool or not mask[i, j]]
                    added = [float(mask[i, j]) if mask.dtype != torch.bool else 0.0 for j in keys]
                    logits = [float(q[b, i, 4 * h:4 * h + 4] @ k[b, j, 4 * h:4 * h + 4]) / 2.0 + a
                              for j, a in zip(keys, added)]
                    w = torch.tensor(logits, dtype=torch.float64).softmax(0)
                    expected[b, i, 3 * h:3 * h + 3] = w @ torch.stack([v[b, j, 3 * h:3 * h + 3] for j in keys])
        assert_close(out, attn.out_proj(expected), tol=1e-12)
