"""What a partial checkpoint load says: "as expected" only for a pretraining's pretext heads left out of a
detector; otherwise the fix. A user walkthrough found the load summary reassuring in three wrong cases (an
official pre-norm UP-DETR / DETReg release into a post-norm DETR, an unconverted official checkpoint, a
release converted for finetuning given to a pretraining), and the ``--eval-only`` / frozen-backbone refusals of
an unconverted official checkpoint naming no conversion. The models are the demo configs' (small, CPU); the
official checkpoints are stand-ins with the real key names (tests/fixtures/pretrain_layouts/*.json) and tiny
tensors: the layout is told by the names alone."""
import json
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from siamese_detr.engine.checkpointing import CheckpointLoadError, SafeDetectionCheckpointer
from siamese_detr.engine.load_refusals import refuse_partly_random_model
from siamese_detr.engine.load_summary import official_layout
from siamese_detr.engine.pretrain_checks import RandomBackboneError, check_backbone_loaded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = os.path.join(ROOT, "tests", "fixtures", "pretrain_layouts")
_PRETEXT = ("patch2query.", "feature_align.", "feature_embed.")


def _model(config: str, **transformer):
    """The model of ``configs/demo/<config>.py``, with ``model.transformer.<key>`` overrides."""
    cfg = LazyConfig.load(os.path.join(ROOT, "configs", "demo", config + ".py"))
    for key, value in transformer.items():
        setattr(cfg.model.transformer, key, value)
    if config == "detr_demo":
        cfg.model.backbone.freeze_at = 2  # as the R50 DETR configs: stem and res2 frozen
    return instantiate(cfg.model)


def _layout_keys(name: str):
    with open(os.path.join(LAYOUTS, name + ".json")) as f:
        return list(json.load(f)["layout"])


def _official_keys(fmt: str):
    """Key names of an official checkpoint of each ``--format``: the recorded pretraining layouts, and the
    finetune releases derived from them (DETR = UP-DETR without its pretext heads, Deformable DETR = DETReg's
    without its embedding head, Conditional DETR = Siamese DETR's Conditional one in the official DETR names)."""
    if fmt == "detr":
        return [k for k in _layout_keys("up_detr") if not k.startswith(_PRETEXT + ("transformer.encoder.norm.",))]
    if fmt == "deformable_detr":
        return [k for k in _layout_keys("detreg_deformable") if not k.startswith(_PRETEXT)]
    if fmt == "conditional_detr":
        keys = [k for k in _layout_keys("siamese_condtr")
                if not k.startswith(("enc_head.", "patch2query.", "pred_head.feature_align.", "pred_head.criterion"))]
        return [("backbone.0.body." + k[len("backbone."):]) if k.startswith("backbone.")
                else k[len("pred_head."):] if k.startswith("pred_head.") else k for k in keys]
    return _layout_keys(fmt)


def _save(path, state) -> str:
    torch.save({"model": state}, path)
    return str(path)


def _load_summary(model, path, caplog) -> str:
    """Load ``path`` into ``model``; the one "Partial load, in short" line it logs."""
    caplog.clear()
    checkpointer = SafeDetectionCheckpointer(model)
    with caplog.at_level("INFO"):
        checkpointer.load(path)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Partial load, in short")]
    assert len(lines) == 1, lines
    return lines[0]


def _official_detr_checkpoint(path, model) -> str:
    """An unconverted official DETR checkpoint (``detr-r50-e632da11.pth``'s key names, tiny tensors); its
    ``query_embed.weight`` has the model's shape, so the load matches one tensor, as the real one does."""
    state = {k: torch.zeros(1) for k in _official_keys("detr")}
    state["query_embed.weight"] = torch.zeros_like(model.state_dict()["query_embed.weight"])
    return _save(path, state)


# ------------------------------------------------------------------------------- official layouts by name
@pytest.mark.parametrize("source, fmt", [
    ("detr", "detr"), ("conditional_detr", "conditional_detr"), ("deformable_detr", "deformable_detr"),
    ("up_detr", "up_detr"), ("detreg_detr", "detreg"), ("detreg_deformable", "detreg"),
    ("siamese_vanilla", "siamese_detr"), ("siamese_condtr", "siamese_detr"), ("siamese_deformable_ms", "siamese_detr"),
])
def test_official_release_layouts_are_recognised_with_their_converter_format(source, fmt):
    assert official_layout(_official_keys(source)) == fmt


def test_a_torchvision_resnet_and_this_projects_layout_are_told_apart():
    swav = ["module.conv1.weight", "module.bn1.weight", "module.layer1.0.conv1.weight",
            "module.projection_head.0.weight"]  # swav_800ep_pretrain.pth.tar: DDP names, SwAV's heads
    assert official_layout(swav) == "torchvision"
    assert official_layout(list(_model("siamese_detr_pretrain_demo").state_dict())) is None
    assert official_layout(["backbone.stem.conv1.weight", "backbone.res2.0.conv1.weight", "class_embed.0.weight"]) \
        is None


# ------------------------------------------------------------------------------- 1b / 2: unconverted official
def test_an_unconverted_official_detr_checkpoint_names_the_conversion_not_as_expected(tmp_path, caplog):
    model = _model("detr_demo")
    path = _official_detr_checkpoint(tmp_path / "detr-r50-e632da11.pth", model)
    summary = _load_summary(model, path, caplog)
    assert "as expected" not in summary
    assert "names of an official layout, not of this project" in summary
    assert f"{path} looks like an official DETR checkpoint in its own key layout" in summary
    assert f"python tools/convert_checkpoint.py --format detr --input {path} --output OUT.pth" in summary


def _loaded_official_detr(tmp_path):
    """The demo DETR after loading an unconverted official DETR checkpoint: (model, path, checkpointer)."""
    model = _model("detr_demo")
    path = _official_detr_checkpoint(tmp_path / "detr-r50-e632da11.pth", model)
    checkpointer = SafeDetectionCheckpointer(model)
    checkpointer.load(path)
    return model, path, checkpointer


def test_eval_only_of_an_unconverted_official_checkpoint_names_the_conversion_first(tmp_path):
    _, path, checkpointer = _loaded_official_detr(tmp_path)
    with pytest.raises(CheckpointLoadError) as err:
        refuse_partly_random_model(checkpointer, path)
    message = str(err.value)
    assert message.startswith(f"--eval-only: {path} looks like an official DETR checkpoint")
    command = f"python tools/convert_checkpoint.py --format detr --input {path} --output OUT.pth"
    assert message.index(command) < message.index("would be evaluated as randomly initialised")
    assert "evaluate train.init_checkpoint=OUT.pth" in message
    assert "finetune it first" not in message and "eval_allow_random" not in message


def test_a_frozen_backbone_missing_from_an_official_checkpoint_names_the_conversion_first(tmp_path):
    model, path, checkpointer = _loaded_official_detr(tmp_path)
    with pytest.raises(RandomBackboneError) as err:
        check_backbone_loaded(model, checkpointer.loaded_names, path)
    message = str(err.value)
    assert message.startswith(f"{path} looks like an official DETR checkpoint")
    assert f"--format detr --input {path} --output OUT.pth" in message
    assert "would stay random" in message
    assert "convert a torchvision/SwAV ResNet" not in message


def test_a_pretraining_model_given_an_official_release_is_told_to_convert_it_for_pretraining(tmp_path):
    """UP-DETR's official release, unconverted, for the UP-DETR pretraining: nothing matches, and the refusal
    names the conversion with --for-pretraining."""
    path = _save(tmp_path / "up-detr-pre-training-60ep-imagenet.pth",
                 {k: torch.zeros(1) for k in _official_keys("up_detr")})
    with pytest.raises(CheckpointLoadError) as err:
        SafeDetectionCheckpointer(_model("up_detr_pretrain_demo")).load(path)
    assert f"--format up_detr --for-pretraining --input {path} --output OUT.pth" in str(err.value)


# ------------------------------------------------------------------------------- 1a: pre-norm into post-norm
def test_a_pre_norm_checkpoint_into_a_post_norm_detr_asks_for_normalize_before(tmp_path, caplog):
    """A (converted) UP-DETR pretraining with the official ``--pre_norm`` into the post-norm DETR finetuning."""
    pre_norm = _model("up_detr_pretrain_demo", normalize_before=True).state_dict()
    assert any(k.startswith("transformer.encoder_norm.") for k in pre_norm)
    summary = _load_summary(_model("detr_demo"), _save(tmp_path / "up_detr.pth", pre_norm), caplog)
    assert ("2 checkpoint tensors unused (transformer.encoder_norm): the final encoder LayerNorm of a pre-norm "
            "transformer") in summary
    assert "which this post-norm model lacks: set model.transformer.normalize_before=True" in summary
    assert "as expected when finetuning from a pretraining" in summary  # the pretext heads, and only those


def test_a_post_norm_checkpoint_into_a_pre_norm_detr_asks_for_post_norm(tmp_path, caplog):
    post_norm = _model("detr_demo").state_dict()
    summary = _load_summary(_model("detr_demo", normalize_before=True), _save(tmp_path / "post.pth", post_norm),
                            caplog)
    assert "set model.transformer.normalize_before=False" in summary


# ------------------------------------------------------------------------------- 1c: continuing a pretraining
def _for_finetuning(state, drop=("projector.", "predictor.")):
    """A release converted without --for-pretraining: no SimSiam heads, the official 3 class rows."""
    out = {k: v for k, v in state.items() if not k.startswith(drop)}
    for key in [k for k in out if k.startswith("class_embed.")]:
        out[key] = torch.cat([out[key], out[key][:1]])
    return out


@pytest.mark.parametrize("config, fmt, lacking", [
    ("siamese_detr_pretrain_demo", "siamese_detr", "lacks its pretext heads (predictor, projector) and "),
    ("up_detr_pretrain_demo", "up_detr", ""),
    ("detreg_pretrain_demo", "detreg", ""),
])
def test_continuing_a_pretraining_from_a_release_converted_for_finetuning(tmp_path, caplog, config, fmt, lacking):
    path = _save(tmp_path / "release_d2.pth", _for_finetuning(_model(config).state_dict()))
    summary = _load_summary(_model(config), path, caplog)
    assert "as expected" not in summary
    assert "3 class logits in the checkpoint, 2 in the model) is initialised anew, NOT expected when continuing " \
           "a pretraining" in summary
    assert f"This is a pretraining model, and the checkpoint {lacking}has a class head of another width" in summary
    assert f"python tools/convert_checkpoint.py --format {fmt} --for-pretraining --input RELEASE --output " \
           "OUT.pth" in summary
    # started from a backbone (the usual SwAV start) the pretext heads are missing too: that is no mistake
    model = _model(config)
    backbone = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    summary = _load_summary(model, _save(tmp_path / "backbone.pth", backbone), caplog)
    assert "convert" not in summary and "for-pretraining" not in summary


# ------------------------------------------------------------------------------- the expected case
@pytest.mark.parametrize("config", ["siamese_detr_pretrain_demo", "up_detr_pretrain_demo", "detreg_pretrain_demo"])
def test_this_projects_pretraining_into_a_detector_is_as_expected(tmp_path, caplog, config):
    pretraining = _model(config)
    detector = {k.split(".")[0] for k in _model("detr_demo").state_dict()}
    heads = sorted({k.split(".")[0] for k in pretraining.state_dict()} - detector)
    assert heads and set(heads) <= {"region_proj", "sem_embed", "projector", "predictor"}
    summary = _load_summary(_model("detr_demo"), _save(tmp_path / "model_final.pth", pretraining.state_dict()),
                            caplog)
    assert "of pretext heads unused (" in summary
    assert summary.endswith("a pretraining's heads, which a detector does not have, as expected when finetuning "
                            "from a pretraining.")
    assert all(head in summary for head in heads)
    assert "convert" not in summary and "normalize_before" not in summary and "NOT expected" not in summary


def _deformable_heads(n: int) -> list:
    return [name for i in range(n) for p in ("weight", "bias")
            for name in (f"class_embed.{i}.{p}", f"bbox_embed.{i}.layers.0.{p}")]


# names of a Deformable DETR with box refinement (2 decoder layers): shared, one-stage only, two-stage only
_DEFORMABLE_SHARED = ["transformer.level_embed", "transformer.encoder.layers.0.linear1.weight",
                      "transformer.decoder.layers.0.linear1.weight"]
_ONE_STAGE_ONLY = ["query_embed.weight", "transformer.reference_points.weight", "transformer.reference_points.bias"]
_TWO_STAGE_ONLY = ["transformer.enc_output.weight", "transformer.enc_output.bias", "transformer.enc_output_norm.weight",
                   "transformer.pos_trans.weight", "transformer.pos_trans_norm.bias"]


def test_deformable_checkpoints_across_one_and_two_stage_are_named_with_what_starts_anew():
    """A two-stage checkpoint in a one-stage model used to get "modules this model does not have: check that
    the checkpoint is of this architecture" with no word on the queries that start anew; the other way round
    (DETReg's finetuning) the same words for the learned queries it drops by design."""
    from siamese_detr.engine.load_summary import partial_load_summary

    one = _DEFORMABLE_SHARED + _ONE_STAGE_ONLY + _deformable_heads(2)
    two = _DEFORMABLE_SHARED + _TWO_STAGE_ONLY + _deformable_heads(3)  # + the encoder proposals' head
    encoder_head = [k for k in _deformable_heads(3) if ".2." in k]
    summary = partial_load_summary([], _ONE_STAGE_ONLY, _TWO_STAGE_ONLY + encoder_head, checkpoint_keys=two,
                                   model_keys=one)
    assert summary.startswith("Partial load, in short: a two-stage Deformable DETR checkpoint in a one-stage model")
    assert f"encoder proposals are unused ({len(_TWO_STAGE_ONLY) + len(encoder_head)} tensors: " in summary
    assert "learned queries start anew (3 tensors: query_embed, transformer.reference_points)" in summary
    assert "deformable_detr_refine_two_stage_r50_coco_50ep.py" in summary
    assert "check that the checkpoint is of this architecture" not in summary

    summary = partial_load_summary([], _TWO_STAGE_ONLY + encoder_head, _ONE_STAGE_ONLY, checkpoint_keys=one,
                                   model_keys=two)
    assert "a one-stage Deformable DETR checkpoint in a two-stage model: its learned queries are unused " \
           "(3 tensors: query_embed, transformer.reference_points)" in summary
    assert f"encoder proposals start anew ({len(_TWO_STAGE_ONLY) + len(encoder_head)} tensors: " in summary
    assert "as in DETReg's finetuning" in summary and "check that" not in summary

    # anything else unused is still named as before, beside it
    summary = partial_load_summary([], _ONE_STAGE_ONLY, _TWO_STAGE_ONLY + encoder_head + ["extra.weight"],
                                   checkpoint_keys=two + ["extra.weight"], model_keys=one)
    assert "1 checkpoint tensor unused (extra): modules this model does not have" in summary
    # one-stage on both sides: no such part
    summary = partial_load_summary([], ["transformer.reference_points.bias"], [], checkpoint_keys=one,
                                   model_keys=one)
    assert "Deformable DETR checkpoint in a" not in summary
