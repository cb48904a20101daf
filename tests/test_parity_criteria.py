"""Set-prediction criteria (Hungarian matcher + SetCriterion + loss weighting): parity with the official
DETR, Conditional DETR and Deformable DETR (two-stage) code on recorded float64 inputs
(tests/fixtures/criteria/README.md: repositories, commits, command).

Each fixture holds random predictions of a batch (``pred_logits [L=3, B, Q=10, K']``, ``pred_boxes [3, B, 10,
4]`` cxcywh normalised; layers 0 and 1 are the ``aux_outputs``, layer 2 the final output; two-stage also
``enc_pred_logits [B, 12, 20]`` / ``enc_pred_boxes [B, 12, 4]``), the targets (``labels.<b>``, ``boxes.<b>``
cxcywh normalised, integer pixels of the ``image_sizes`` (h, w) so that the xyxy-absolute round trip of the
model path is exact) and what the official code computes from them: every loss-dict key, the matchings of
every layer, ``num_boxes``, the ``weight_dict``, the train loop's total ``sum(loss_dict[k] * weight_dict[k])``
and its gradients with respect to every prediction tensor.

Our side is built from the configs (LazyConfig + instantiate, ``num_classes = 20`` as the official ``build``
for non-COCO data, 3 decoder layers), so the configs' matcher costs, focal / no-object parameters and loss
weights are pinned as well. The official logging-only keys ``class_error`` / ``cardinality_error*`` have no
weight and no gradient; we do not compute them.
"""

from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances

from siamese_detr.modeling.criterion import weight_losses

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "criteria"
# float64, relative to max(1, |official|): every loss and gradient is bit-identical today; the totals differ by
# <= 5.7e-14 (1.3e-16 relative; summation order: our dict lists the aux layers first, the official dict last)
TOL = 1e-12
NUM_CLASSES = 20
NUM_DECODER_LAYERS = 3
LOGGING_ONLY = ("class_error", "cardinality_error")  # official keys without weight (engine.py logs them only)

CONFIGS = {
    "detr": "configs/detr/detr_r50_voc_50ep.py",
    "conditional_detr": "configs/detr/conditional_detr_r50_voc_50ep.py",
    "deformable_detr_two_stage": "configs/detr/deformable_detr_refine_two_stage_r50_coco_50ep.py",
}
CASES = [variant + suffix for variant in CONFIGS for suffix in ("", "_no_targets")]


def variant_of(case):
    return case.replace("_no_targets", "")


def load_record(case):
    return torch.load(FIXTURES / f"{case}.pt", map_location="cpu", weights_only=True)


def load_config(variant):
    cfg = LazyConfig.load(str(ROOT / CONFIGS[variant]))
    cfg.model.num_classes = NUM_CLASSES
    cfg.model.transformer.num_decoder_layers = NUM_DECODER_LAYERS
    return cfg


def build_criterion(variant):
    """Our criterion exactly as the config builds it (``num_classes`` interpolated from ``model``)."""
    cfg = load_config(variant)
    return instantiate(cfg.model).criterion


def targets_of(record):
    """The recorded targets: ``[{"labels": Long[N_b], "boxes": [N_b, 4] cxcywh normalised float64}]``."""
    return [{"labels": record[f"labels.{b}"], "boxes": record[f"boxes.{b}"]} for b in range(len(record["num_targets"]))]


def prediction_leaves(record):
    names = ["pred_logits", "pred_boxes", "enc_pred_logits", "enc_pred_boxes"]
    return {k: record[k].clone().requires_grad_(True) for k in names if k in record}


def outputs_of(leaves):
    """The recorded predictions in the layout of ``DETR.forward_outputs``."""
    logits, boxes = leaves["pred_logits"], leaves["pred_boxes"]
    out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1],
           "aux_outputs": [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]}
    if "enc_pred_logits" in leaves:
        out["enc_outputs"] = {"pred_logits": leaves["enc_pred_logits"], "pred_boxes": leaves["enc_pred_boxes"]}
    return out


def official_losses(record):
    """Official loss dict without the logging-only keys."""
    losses = {k[len("loss."):]: v for k, v in record.items() if k.startswith("loss.")}
    return {k: v for k, v in losses.items() if not k.startswith(LOGGING_ONLY)}


def as_rows(indices):
    """B pairs ``(query_idx, target_idx)`` -> Long ``[M, 3]`` rows ``(image, query, target)``."""
    return torch.cat([torch.stack([torch.full_like(i, b), i, j], dim=1) for b, (i, j) in enumerate(indices)])


def assert_close(actual, expected, what):
    assert actual.dtype == torch.float64, what
    assert actual.shape == expected.shape, what
    if not actual.numel():
        return
    diff = (actual - expected).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    assert diff <= TOL * scale, f"{what}: max |ours - official| = {diff:.3e} (official up to {scale:.3e})"


@pytest.fixture(scope="module")
def criteria():
    return {variant: build_criterion(variant) for variant in CONFIGS}


# ------------------------------------------------------------------------------------------------- the config
@pytest.mark.parametrize("variant", list(CONFIGS))
def test_config_matches_official_arguments(variant, criteria):
    """Matcher costs, no-object / focal parameters and every official ``weight_dict`` entry (incl. ``_0``,
    ``_1``, ``_enc``) resolved through our ``weight_losses`` from the config's base weights."""
    record = load_record(variant)
    criterion, cfg = criteria[variant], load_config(variant)
    matcher = criterion.matcher
    assert (matcher.cost_class, matcher.cost_bbox, matcher.cost_giou) == (
        record["args.set_cost_class"].item(), record["args.set_cost_bbox"].item(), record["args.set_cost_giou"].item()
    )
    assert criterion.num_classes == NUM_CLASSES
    if variant == "detr":
        assert criterion.class_loss == "ce"
        assert criterion.eos_coef == record["args.eos_coef"].item()
    else:
        assert criterion.class_loss == "focal"
        assert criterion.focal_alpha == record["args.focal_alpha"].item()
        assert criterion.focal_gamma == 2.0  # hard-coded in the official loss_labels
        assert (matcher.alpha, matcher.gamma) == (0.25, 2.0)  # hard-coded in the official matcher
    official = {k[len("weight."):]: v.item() for k, v in record.items() if k.startswith("weight.")}
    ones = {k: torch.tensor(1.0, dtype=torch.float64) for k in official}
    ours = {k: v.item() for k, v in weight_losses(ones, dict(cfg.model.weight_dict)).items()}
    assert ours == official


# ------------------------------------------------------------------------------------------ the criterion alone
@pytest.mark.parametrize("case", CASES)
def test_num_boxes_matches_official(case, criteria):
    record = load_record(case)
    criterion = criteria[variant_of(case)]
    assert criterion.get_num_boxes(targets_of(record), torch.device("cpu")) == record["num_boxes"].item()


@pytest.mark.parametrize("case", CASES)
def test_matching_matches_official(case, criteria):
    """The matchings of both aux layers, the final layer and (two-stage) the class-agnostic encoder proposals."""
    record = load_record(case)
    criterion = criteria[variant_of(case)]
    targets = targets_of(record)
    outputs = outputs_of(prediction_leaves(record))
    with torch.no_grad():
        _, indices = criterion(outputs, targets, return_indices=True)
    names = [str(i) for i in range(NUM_DECODER_LAYERS - 1)] + ["final"]
    assert len(indices) == len(names)
    for name, layer_indices in zip(names, indices):
        assert torch.equal(as_rows(layer_indices), record[f"match.{name}"]), name
    if "enc_outputs" in outputs:
        bin_targets = [dict(t, labels=torch.zeros_like(t["labels"])) for t in targets]
        enc_indices = criterion.matcher(outputs["enc_outputs"], bin_targets)
        assert torch.equal(as_rows(enc_indices), record["match.enc"])
    if case.endswith("_no_targets"):
        assert all(record[f"match.{name}"].numel() == 0 for name in names)


@pytest.mark.parametrize("case", CASES)
def test_unweighted_losses_match_official(case, criteria):
    """Every official loss key (``loss_ce``, ``loss_bbox``, ``loss_giou``, ``*_0``, ``*_1``, ``*_enc``)."""
    record = load_record(case)
    criterion = criteria[variant_of(case)]
    with torch.no_grad():
        ours = criterion(outputs_of(prediction_leaves(record)), targets_of(record))
    expected = official_losses(record)
    assert sorted(ours) == sorted(expected)
    for key, value in expected.items():
        assert_close(ours[key], value, key)


# ------------------------------------------------------------------------------- what the trainer receives
def batched_inputs(record):
    """detectron2 training inputs whose ``instances`` hold the recorded targets as xyxy absolute pixels (exact:
    the recorded boxes are integer pixels of power-of-two image sizes); the pixels themselves are unused."""
    inputs = []
    for b, (h, w) in enumerate(record["image_sizes"].tolist()):
        cx, cy, bw, bh = record[f"boxes.{b}"].unbind(-1)
        xyxy = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], dim=-1)
        assert torch.equal(xyxy, xyxy.round()), "recorded boxes are not integer pixels"
        instances = Instances((h, w), gt_boxes=Boxes(xyxy), gt_classes=record[f"labels.{b}"])
        inputs.append({"image": torch.zeros(3, h, w, dtype=torch.uint8), "instances": instances})
    return inputs


@pytest.mark.parametrize("case", CASES)
def test_model_losses_total_and_gradients_match_official_train_loop(case, monkeypatch):
    """``DETR.forward`` in training mode (built from the config) on the recorded predictions: the weighted
    loss dict it returns to the trainer, its sum (detectron2's ``SimpleTrainer`` sums every value) against the
    official ``sum(loss_dict[k] * weight_dict[k] for k in loss_dict if k in weight_dict)``, and the gradients
    of that sum with respect to ``pred_logits`` / ``pred_boxes`` of every layer (and the encoder proposals)."""
    record = load_record(case)
    model = instantiate(load_config(variant_of(case)).model)
    model.train()
    leaves = prediction_leaves(record)
    monkeypatch.setattr(model, "forward_outputs", lambda images: outputs_of(leaves))

    inputs = batched_inputs(record)
    prepared = model.prepare_targets(inputs, [tuple(s) for s in record["image_sizes"].tolist()], model.device)
    for t, expected in zip(prepared, targets_of(record)):
        assert torch.equal(t["labels"], expected["labels"]) and torch.equal(t["boxes"].double(), expected["boxes"])

    losses = model(inputs)
    weights = {k[len("weight."):]: v for k, v in record.items() if k.startswith("weight.")}
    expected = {k: v * weights[k] for k, v in official_losses(record).items()}
    assert sorted(losses) == sorted(expected)
    for key, value in expected.items():
        assert_close(losses[key], value, f"weighted {key}")
    total = sum(losses.values())
    assert_close(total, record["total_loss"], "total loss")

    total.backward()
    for name, leaf in leaves.items():
        assert_close(leaf.grad, record[f"grad.{name}"], f"d total / d {name}")
