"""Vanilla DETR: parity with the official implementation (github.com/facebookresearch/detr) on a recorded tiny
float64 model (tests/fixtures/detr/README.md), and the official checkpoint converter."""

import pytest
import torch

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
    DetrTransformer,
    HungarianMatcher,
    PositionEmbeddingSine,
    SetCriterion,
    SoftmaxArgmaxPostProcess,
)

WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def build_model(io):
    d_model, nhead, enc, dec, ffn, num_queries, num_classes, _ = io["config"].tolist()
    transformer = DetrTransformer(
        d_model=d_model, nhead=nhead, num_encoder_layers=enc, num_decoder_layers=dec, dim_feedforward=ffn,
        dropout=0.0, normalize_before=False, return_intermediate_dec=True,
    )
    return DETR(
        backbone=RecordedBackbone(io["features"]),
        position_embedding=PositionEmbeddingSine(d_model // 2, normalize=True),
        transformer=transformer,
        num_classes=num_classes,
        num_queries=num_queries,
        criterion=SetCriterion(num_classes, HungarianMatcher(1.0, 5.0, 2.0), eos_coef=0.1),
        weight_dict=WEIGHTS,
        postprocess=SoftmaxArgmaxPostProcess(),
    )


@pytest.fixture(scope="module")
def official():
    state, io = load_fixture("detr")
    model = build_model(io).double().eval()
    convert_into(model, "detr", state)
    with torch.no_grad():
        images = model.preprocess_image(batched_inputs(io))
        outputs = model.forward_outputs(images)
        _, memory = model.encode(images)
        decoded = model.decode(memory, model.object_queries(len(images)))
    return model, io, outputs, memory, decoded


def test_encoder_and_decoder_states_match_official(official):
    _, io, _, memory, decoded = official
    assert_close(memory.memory, io["memory"])
    assert decoded.references is None
    assert_close(decoded.hidden_states, io["hidden_states"])


def test_every_decoder_layer_matches_official(official):
    _, io, outputs, _, _ = official
    logits, boxes = per_layer_outputs(outputs)
    assert len(outputs["aux_outputs"]) == io["pred_logits"].shape[0] - 1
    assert_close(logits, io["pred_logits"])
    assert_close(boxes, io["pred_boxes"])


def test_postprocess_matches_official_argmax(official):
    model, io, outputs, _, _ = official
    sizes = [tuple(s) for s in io["target_sizes"].tolist()]
    results = model.inference(outputs["pred_logits"], outputs["pred_boxes"], sizes)
    for b, res in enumerate(results):
        assert len(res) == io["post_scores"].shape[1]  # one detection per query, in query order
        assert torch.equal(res.pred_classes, io["post_labels"][b])
        assert_close(res.scores, io["post_scores"][b])
        assert_close(res.pred_boxes.tensor, io["post_boxes"][b], tol=1e-6 * max(sizes[b]))


# official DETR key prefix -> the project's (written out by hand from the two models' module trees)
OFFICIAL_TO_PROJECT_PREFIXES = [
    ("transformer.encoder.layers.", "transformer.encoder_layers."),
    ("transformer.decoder.layers.", "transformer.decoder_layers."),
    ("transformer.decoder.norm.", "transformer.decoder_norm."),
    ("input_proj.", "input_proj.0.0."),  # one input level: a Sequential(conv) per level
    ("query_embed.", "query_embed."),
]


def _project_name(official_key: str) -> str:
    for old, new in OFFICIAL_TO_PROJECT_PREFIXES:
        if official_key.startswith(old):
            return (new + official_key[len(old):]).replace(".multihead_attn.", ".cross_attn.")
    raise AssertionError(f"no rule for {official_key}")


def test_converter_round_trip_through_model(official):
    """Official -> project keys: every official tensor lands, unchanged (the same tensor object), under the name
    the hand-written table above gives it; the shared heads under one alias per decoder layer; and the keys
    written are exactly the model's (none missing, none extra)."""
    model, io, *_ = official
    state, _ = load_fixture("detr")
    result = get_converter("detr")(state)
    assert result.unmapped == [] and result.dropped == []
    assert set(result.converted) == set(model.state_dict())
    num_layers = int(io["config"][3])
    expected = {}
    for key, value in state.items():
        if key.startswith(("class_embed.", "bbox_embed.")):
            head, rest = key.split(".", 1)
            expected.update({f"{head}.{layer}.{rest}": value for layer in range(num_layers)})
        else:
            expected[_project_name(key)] = value
    assert set(expected) == set(result.converted)
    for name, value in expected.items():
        assert result.converted[name] is value, name


def test_converter_coco_rows_keep_no_object_and_lists_extra_keys():
    state, _ = load_fixture("detr")
    state = dict(state)
    state["class_embed.weight"] = torch.arange(92 * 32, dtype=torch.float64).view(92, 32)
    state["class_embed.bias"] = torch.arange(92.0)
    state["detr.extra"] = torch.zeros(1)
    result = get_converter("detr")(state)
    assert result.unmapped == ["detr.extra"]
    bias = result.converted["class_embed.0.bias"]
    assert bias.shape == (81,) and bias[-1] == 91  # the no-object row stays last
    assert bias[:3].tolist() == [1.0, 2.0, 3.0] and bias[79] == 90  # person, bicycle, car ... toothbrush
    kept_all = get_converter("detr")(state, class_rows="none").converted["class_embed.0.bias"]
    assert torch.equal(kept_all, torch.arange(92.0))
    picked = get_converter("detr")(state, class_rows=[5, 7]).converted["class_embed.1.bias"]
    assert picked.tolist() == [5.0, 7.0, 91.0]
