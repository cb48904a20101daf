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


# ------------------------------------------------------------------------------------ --for-pretraining
def _exact(result, expected):
    """Every key of the project pretraining model, nothing else, every shape equal (class heads included)."""
    assert result.unmapped == []
    converted = {k: tuple(v.shape) for k, v in result.converted.items()}
    assert sorted(set(converted) ^ set(expected)) == []
    assert {k: s for k, s in converted.items() if s != expected[k]} == {}


def test_for_pretraining_up_detr_keeps_object_and_no_object_rows():
    from siamese_detr.checkpoint.official_pretrain import convert_official_up_detr

    state = fake_state("up_detr.json")
    state["class_embed.weight"] = torch.randn(3, 256)
    state["class_embed.bias"] = torch.tensor([-7.0, 1.5, 2.5])
    result = convert_official_up_detr(state, for_pretraining=True)
    _exact(result, project_state(_config("up_detr/up_detr_r50_imagenet_60ep.py")))
    for layer in range(6):  # official rows 1 (object) and 2 (no-object) -> ours 0, 1
        assert torch.equal(result.converted[f"class_embed.{layer}.weight"], state["class_embed.weight"][[1, 2]])
        assert result.converted[f"class_embed.{layer}.bias"].tolist() == [1.5, 2.5]
    assert "class_embed.0.bias[rows 0]" in result.dropped


def test_for_pretraining_detreg_deformable_sigmoid_row_and_detr_softmax_rows():
    from siamese_detr.checkpoint.official_pretrain import convert_official_detreg

    state = fake_state("detreg_deformable.json")
    for layer in range(6):
        state[f"class_embed.{layer}.bias"] = torch.arange(91.0) + 100 * layer
    result = convert_official_detreg(state, for_pretraining=True)
    expected = project_state(_config("detreg/detreg_deformable_ms_r50_imagenet_5ep.py"))
    _exact(result, expected)
    for layer in range(6):  # sigmoid: the objectness column 1 alone
        assert result.converted[f"class_embed.{layer}.bias"].tolist() == [1.0 + 100 * layer]

    state = fake_state("detreg_detr.json")
    state["class_embed.bias"] = torch.arange(92.0)
    result = convert_official_detreg(state, for_pretraining=True)
    _exact(result, project_state(_config("detreg/detreg_detr_r50_imagenet_60ep.py")))
    assert result.converted["class_embed.5.bias"].tolist() == [1.0, 91.0]  # label 1, no-object (last)


@pytest.mark.parametrize("layout,config", [
    ("siamese_vanilla.json", "siamese_detr_r50_imagenet_60ep.py"),
    ("siamese_condtr.json", "siamese_detr_conditional_r50_imagenet_60ep.py"),
    ("siamese_deformable_ms.json", "siamese_detr_deformable_ms_r50_imagenet_60ep.py"),
])
def test_for_pretraining_siamese_detr_fills_every_key_of_the_pretraining_model(layout, config):
    from siamese_detr.checkpoint.official_pretrain import convert_official_siamese_detr

    state = {k: torch.randn(v.shape) if v.dim() else v for k, v in fake_state(layout).items()}
    result = convert_official_siamese_detr(state, for_pretraining=True)
    _exact(result, project_state(_config(f"siamese_detr/{config}")))
    assert result.converted["projector.6.weight"] is state["enc_head.0.projector.mlp.6.weight"]
    assert result.converted["predictor.3.bias"] is state["enc_head.0.predictor.mlp.3.bias"]  # no BN after it
    # the biases in front of a BatchNorm: dropped, listed, and taken out of its running mean
    pre_bn = ["enc_head.0.projector.mlp.0.bias", "enc_head.0.projector.mlp.3.bias", "enc_head.0.projector.mlp.6.bias",
              "enc_head.0.predictor.mlp.0.bias"]
    assert set(pre_bn) <= set(result.dropped)
    assert not any(k.startswith("enc_head.") and k not in pre_bn for k in result.dropped)
    assert torch.equal(result.converted["projector.4.running_mean"],
                       state["enc_head.0.projector.mlp.4.running_mean"] - state["enc_head.0.projector.mlp.3.bias"])
    assert torch.equal(result.converted["class_embed.0.weight"], state["pred_head.class_embed.weight"][[1, 2]])


def _official_simsiam_head(widths, bn_after, seed):
    """An official-style MLP (``openselfsup`` NonLinearNeck: every Linear has a bias) with trained-looking
    BatchNorm statistics, as ``nn.Sequential``."""
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(torch.nn.Linear(a, b))
        if bn_after[i]:
            bn = torch.nn.BatchNorm1d(b)
            bn.running_mean.normal_(0, 2)
            bn.running_var.uniform_(0.5, 3)
            bn.weight.data.normal_(1, 0.2)
            bn.bias.data.normal_(0, 0.2)
            bn.num_batches_tracked.fill_(123)
            layers.append(bn)
            if i < len(widths) - 2:
                layers.append(torch.nn.ReLU())
        elif i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    for m in layers:
        if isinstance(m, torch.nn.Linear):
            m.bias.data.normal_(0, 1)  # large biases: a fold that is off shows
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_for_pretraining_simsiam_heads_compute_what_the_official_ones_do(mode):
    """Independent reference: official-style projector (FC-BN-ReLU x2, FC-BN) and predictor (FC-BN-ReLU-FC),
    biases everywhere, run as plain torch modules; ours loaded from the converted tensors must give the same
    outputs in both modes and, in training mode, the same updated running statistics."""
    from siamese_detr.checkpoint.official_pretrain import _convert_simsiam_heads
    from siamese_detr.modeling.pretext.simsiam import SimSiamPredictor, SimSiamProjector

    projector = _official_simsiam_head([12, 8, 8, 6], [True, True, True], seed=0)
    predictor = _official_simsiam_head([6, 5, 6], [True, False], seed=1)
    state = {f"enc_head.0.projector.mlp.{k}": v for k, v in projector.state_dict().items()}
    state.update({f"enc_head.0.predictor.mlp.{k}": v for k, v in predictor.state_dict().items()})
    converted, dropped = _convert_simsiam_heads(state)
    ours_proj, ours_pred = SimSiamProjector(12, 8, 6), SimSiamPredictor(6, 5, 6)
    for module, prefix in ((ours_proj, "projector."), (ours_pred, "predictor.")):
        own = {k[len(prefix):]: v.clone() for k, v in converted.items() if k.startswith(prefix)}
        result = module.load_state_dict(own, strict=True)  # raises on a missing or unexpected key
        assert result.missing_keys == [] and result.unexpected_keys == []
    assert len(dropped) == 4
    x = torch.randn(10, 12, generator=torch.Generator().manual_seed(2)) * 3
    for m in (projector, predictor, ours_proj, ours_pred):
        m.train(mode == "train")
    with torch.no_grad():
        expected = predictor(projector(x))
        actual = ours_pred(ours_proj(x))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # the running statistics (updated in training mode from the folded start): official mean = ours + bias
    for official, linear, ours in ((projector, 0, ours_proj), (projector, 3, ours_proj), (projector, 6, ours_proj),
                                   (predictor, 0, ours_pred)):
        ours_bn, official_bn = ours[linear + 1], official[linear + 1]
        torch.testing.assert_close(ours_bn.running_mean + official[linear].bias, official_bn.running_mean)
        torch.testing.assert_close(ours_bn.running_var, official_bn.running_var)


def test_cli_for_pretraining(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_tool", os.path.join(ROOT, "tools", "convert_checkpoint.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    state = {k: v.contiguous() for k, v in fake_state("up_detr.json").items() if not k.startswith("backbone.")}
    src = tmp_path / "up_detr.pth"
    torch.save({"model": state}, src)
    assert tool.main(["--format", "up_detr", "--for-pretraining", "--input", str(src), "--output",
                      str(tmp_path / "pre.pth")]) == 0
    assert "for pretraining" in capsys.readouterr().out
    written = torch.load(tmp_path / "pre.pth", weights_only=True)
    assert written["model"]["class_embed.3.weight"].shape == (2, 256)
    assert "for pretraining" in written["__author__"]
    assert tool.main(["--format", "up_detr", "--input", str(src), "--output", str(tmp_path / "ft.pth")]) == 0
    assert torch.load(tmp_path / "ft.pth", weights_only=True)["model"]["class_embed.3.weight"].shape == (3, 256)
    with pytest.raises(SystemExit):
        tool.main(["--format", "detr", "--for-pretraining", "--input", str(src), "--output", str(tmp_path / "x.pth")])
    assert "--for-pretraining converts the pretraining releases" in capsys.readouterr().err


def test_a_deformable_detreg_without_level_embed_is_still_converted_as_deformable():
    """The variant is recognised by any deformable-attention key (``sampling_offsets``), not only by
    ``transformer.level_embed``: without it, every other key of the recorded DETReg Deformable layout keeps its
    Deformable DETR name (none is renamed to the vanilla DETR layout or left unmapped)."""
    from siamese_detr.checkpoint.official_pretrain import convert_official_detreg

    state = fake_state("detreg_deformable.json")
    del state["transformer.level_embed"]
    result = convert_official_detreg(state)
    assert not result.unmapped
    assert "transformer.encoder.layers.0.self_attn.sampling_offsets.weight" in result.converted
    assert not any(k.startswith("transformer.encoder_layers.") for k in result.converted)
