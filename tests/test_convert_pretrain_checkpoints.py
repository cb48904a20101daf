"""Converters of the official UP-DETR / DETReg / Siamese DETR checkpoints, on the recorded official key / shape
layouts (tests/fixtures/pretrain_layouts): nothing unmapped, every converted key is a key of the project model
of the same variant with the same shape (only the class head differs in width), and pretext tensors land on the
project's pretext modules."""
import copy
import json
import os

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate

from siamese_detr.checkpoint.registry import available_converters
from siamese_detr.modeling.transformers import ConditionalDetrTransformer, DeformableDetrTransformer

ROOT = os.path.join(os.path.dirname(__file__), "..")
LAYOUTS = os.path.join(os.path.dirname(__file__), "fixtures", "pretrain_layouts")


def fake_state(name):
    """Official key -> a zero-storage tensor of the recorded shape (no memory for an R50)."""
    with open(os.path.join(LAYOUTS, name)) as f:
        layout = json.load(f)["layout"]
    return {k: torch.zeros(1).expand(*shape) if shape else torch.zeros(()) for k, shape in layout.items()}


def _config(path):
    return LazyConfig.load(os.path.join(ROOT, "configs", path)).model


def _detr(variant):
    """The R50 finetune model config of a variant (Vanilla from detr_r50.py; Conditional / Deformable MS with the
    official settings of the pretraining releases)."""
    model = copy.deepcopy(_config("common/models/detr_r50.py"))
    if variant == "conditional":
        model.transformer = L(ConditionalDetrTransformer)(d_model=256, nhead=8, num_encoder_layers=6,
                                                          num_decoder_layers=6, dim_feedforward=2048)
    elif variant == "deformable":
        model.transformer = L(DeformableDetrTransformer)(dim_feedforward=1024, num_feature_levels=4)
        model.backbone.out_features = ["res3", "res4", "res5"]
        model.in_features = ["res3", "res4", "res5"]
        model.num_extra_levels = 1
        model.input_proj_norm = True
        model.num_queries = 300
    return model


def project_state(model_cfg):
    with torch.device("meta"):  # shapes only
        return {k: tuple(v.shape) for k, v in instantiate(model_cfg).state_dict().items()}


def _check(result, expected, missing_prefixes=()):
    assert result.unmapped == []
    converted = {k: tuple(v.shape) for k, v in result.converted.items()}
    assert sorted(set(converted) - set(expected)) == []
    missing = sorted(k for k in set(expected) - set(converted) if not k.startswith(tuple(missing_prefixes)))
    assert missing == []
    wrong = sorted(k for k in converted if converted[k] != expected[k])
    assert all(k.startswith("class_embed.") for k in wrong), wrong


def test_converters_are_registered():
    assert {"up_detr", "detreg", "siamese_detr"} <= set(available_converters())


def test_up_detr_layout():
    from siamese_detr.checkpoint.official_pretrain import convert_official_up_detr

    state = fake_state("up_detr.json")
    state["patch2query.weight"] = torch.randn(256, 2048)
    result = convert_official_up_detr(state)
    _check(result, project_state(_config("up_detr/up_detr_r50_imagenet_60ep.py")))  # pre-norm, as official
    assert result.converted["region_proj.weight"] is state["patch2query.weight"]
    assert result.converted["sem_embed.layers.1.weight"] is state["feature_align.layers.1.weight"]
    assert all(result.converted[f"class_embed.{i}.weight"].shape == (3, 256) for i in range(6))


def test_detreg_layouts():
    from siamese_detr.checkpoint.official_pretrain import convert_official_detreg

    state = fake_state("detreg_deformable.json")
    result = convert_official_detreg(state)
    with_detreg = _detreg_from(_detr("deformable"))
    _check(result, project_state(with_detreg))
    assert result.converted["sem_embed.layers.1.weight"].shape == (512, 256)  # C3 width = 2 * hidden_dim

    result = convert_official_detreg(fake_state("detreg_detr.json"))
    _check(result, project_state(_config("detreg/detreg_detr_r50_imagenet_60ep.py")))  # pre-norm, as official


def _detreg_from(model):
    import importlib.util

    spec = importlib.util.spec_from_file_location("detreg_cfg", os.path.join(ROOT, "configs/common/models/detreg.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.detreg_from(model)


def _siamese_from(model):
    import importlib.util

    path = os.path.join(ROOT, "configs/common/models/siamese_detr.py")
    spec = importlib.util.spec_from_file_location("siamese_cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.siamese_detr_from(model)


@pytest.mark.parametrize("layout,variant", [("siamese_vanilla.json", "vanilla"),
                                            ("siamese_condtr.json", "conditional"),
                                            ("siamese_deformable_ms.json", "deformable")])
def test_siamese_detr_layouts(layout, variant):
    from siamese_detr.checkpoint.official_pretrain import convert_official_siamese_detr

    state = fake_state(layout)
    result = convert_official_siamese_detr({"state_dict": {"module." + k: v for k, v in state.items()}})
    # SimSiam heads are dropped (listed), so the project's projector / predictor stay uninitialised
    _check(result, project_state(_siamese_from(_detr(variant))), missing_prefixes=("projector.", "predictor."))
    assert sorted(result.dropped) == sorted(k for k in state if k.startswith("enc_head.")
                                            or k == "pred_head.criterion.empty_weight")
    assert result.converted["region_proj.weight"] is state["patch2query.weight"]


def test_siamese_deformable_queries_and_shared_heads_values():
    from siamese_detr.checkpoint.official_pretrain import convert_official_siamese_detr

    state = fake_state("siamese_deformable_ms.json")
    state["query_embed.weight"] = torch.randn(300, 256)
    state["transformer.tgt_embed.weight"] = torch.randn(300, 256)
    state["pred_head.class_embed.weight"] = torch.randn(3, 256)
    converted = convert_official_siamese_detr(state).converted
    # project Deformable queries are [query_pos | tgt] (positional half first)
    assert torch.equal(converted["query_embed.weight"],
                       torch.cat([state["query_embed.weight"], state["transformer.tgt_embed.weight"]], 1))
    for layer in range(6):  # one official head, written to every decoder layer's alias
        assert torch.equal(converted[f"class_embed.{layer}.weight"], state["pred_head.class_embed.weight"])


def test_unknown_keys_are_listed_never_dropped_silently():
    from siamese_detr.checkpoint.official_pretrain import convert_official_detreg, convert_official_up_detr

    state = fake_state("up_detr.json")
    state["mystery_head.weight"] = torch.zeros(2)
    assert convert_official_up_detr(state).unmapped == ["mystery_head.weight"]
    state = fake_state("detreg_deformable.json")
    state["feature_embed.extra"] = torch.zeros(2)
    assert convert_official_detreg(state).unmapped == ["feature_embed.extra"]
