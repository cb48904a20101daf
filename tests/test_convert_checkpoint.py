"""tools/convert_checkpoint.py and siamese_detr.checkpoint: torchvision-layout ResNets -> detectron2 ResNet.

The reference is torchvision's own forward pass: after conversion and loading through DetectionCheckpointer,
detectron2's ``res5`` must equal torchvision's ``layer4`` output on the same image.
"""

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from siamese_detr.checkpoint import convert_torchvision_resnet, map_torchvision_resnet
from siamese_detr.modeling import build_resnet_backbone_for_detr

_TOOL = Path(__file__).resolve().parents[1] / "tools" / "convert_checkpoint.py"
_spec = importlib.util.spec_from_file_location("convert_checkpoint_tool", _TOOL)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


class _Detector(nn.Module):
    """Stands in for DETR / SiameseDETRPretrain: a ResNet at ``backbone`` plus a head the file lacks."""

    def __init__(self, depth: int):
        super().__init__()
        self.backbone = build_resnet_backbone_for_detr(depth=depth, norm="FrozenBN", out_features=("res5",))
        self.class_embed = nn.Linear(4, 2)


def _torchvision_resnet(arch: str, seed: int) -> nn.Module:
    """A torchvision ResNet in eval mode with random BN affine parameters and running statistics."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _layer4(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's forward up to layer4 (no pooling / fc): ``[B, C, H/32, W/32]``."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def _load_with_detectron2(path: Path, depth: int) -> _Detector:
    """Fill every backbone tensor with NaN, then load ``path`` with DetectionCheckpointer."""
    det = _Detector(depth).eval()
    with torch.no_grad():
        for t in det.backbone.state_dict().values():
            t.fill_(float("nan"))
    DetectionCheckpointer(det).load(str(path))
    return det


def _assert_same_features(det: _Detector, tv: nn.Module, x_d2: torch.Tensor, x_tv: torch.Tensor, exact: bool):
    """Both networks run in float64, so float32 rounding cannot hide a wrong tensor or a wrong constant: a
    FrozenBatchNorm ``eps`` of 0 instead of torchvision's 1e-5 changes ``res5`` by 5e-5 (ResNet-18) to 1.3e-4
    (ResNet-50) of its max |value| (measured), while the float64 rounding of a conv whose input channels are
    permuted (BGR conv1) is ~3e-15 of it (measured 4.4e-13 at max |ref| 153, ResNet-50): bound 1e-10.
    ``exact``: both forward passes run the same ops on the same tensors (RGB input, weights unpermuted), so
    the outputs must be bit-identical (measured: equal)."""
    for name, t in det.backbone.state_dict().items():
        assert not torch.isnan(t).any(), f"backbone.{name} was not loaded from the checkpoint"
    det, tv = det.double(), tv.double()
    with torch.no_grad():
        ours = det.backbone(x_d2.double())["res5"]
        ref = _layer4(tv, x_tv.double())
    assert ours.dtype == ref.dtype == torch.float64 and ours.shape == ref.shape
    scale = ref.abs().max().item()
    assert scale > 1.0
    if exact:
        assert torch.equal(ours, ref), (ours - ref).abs().max()
    else:
        assert (ours - ref).abs().max().item() <= 1e-10 * scale, (ours - ref).abs().max()


def _saved_keys(path: Path):
    data = torch.load(path, map_location="cpu", weights_only=True)
    assert data["matching_heuristics"] is False
    assert isinstance(data["__author__"], str)
    return set(data["model"])


def test_resnet18_rgb_matches_torchvision(tmp_path):
    tv = _torchvision_resnet("resnet18", seed=0)
    src, dst = tmp_path / "r18.pth", tmp_path / "out" / "r18_d2.pth"
    torch.save(tv.state_dict(), src)
    assert tool.main(["--input", str(src), "--output", str(dst), "--input-format", "RGB"]) == 0

    det = _load_with_detectron2(dst, depth=18)
    assert _saved_keys(dst) == {"backbone." + k for k in det.backbone.state_dict()}
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    _assert_same_features(det, tv, x, x, exact=True)


def test_swav_release_resnet50_bgr_default(tmp_path, capsys):
    """SwAV's swav_800ep_pretrain.pth.tar: a DDP state dict ("module.") with its pretext heads."""
    tv = _torchvision_resnet("resnet50", seed=2)
    swav = {"module." + k: v for k, v in tv.state_dict().items()}
    swav["module.projection_head.0.weight"] = torch.randn(16, 2048)
    swav["module.projection_head.0.bias"] = torch.randn(16)
    swav["module.prototypes.weight"] = torch.randn(8, 16)
    src, dst = tmp_path / "swav_800ep_pretrain.pth.tar", tmp_path / "swav_r50_d2.pth"
    torch.save(swav, src)
    assert tool.main(["--input", str(src), "--output", str(dst)]) == 0
    out = capsys.readouterr().out
    dropped = ("fc.* (2 keys)", "projection_head.* (2 keys)", "prototypes.* (1 key)", "num_batches_tracked")
    assert all(d in out for d in dropped), out

    det = _load_with_detectron2(dst, depth=50)
    assert _saved_keys(dst) == {"backbone." + k for k in det.backbone.state_dict()}
    torch.manual_seed(3)
    rgb = torch.randn(1, 3, 64, 64)
    _assert_same_features(det, tv, rgb[:, [2, 1, 0]], rgb, exact=False)  # the model is fed BGR


def test_key_mapping_by_hand():
    sd = _torchvision_resnet("resnet18", seed=4).state_dict()
    plain = convert_torchvision_resnet(sd, input_format="RGB")
    assert torch.equal(plain["backbone.stem.conv1.norm.running_var"], sd["bn1.running_var"])
    assert torch.equal(plain["backbone.res4.1.conv2.norm.bias"], sd["layer3.1.bn2.bias"])
    assert torch.equal(plain["backbone.res3.0.shortcut.weight"], sd["layer2.0.downsample.0.weight"])
    assert torch.equal(
        plain["backbone.res5.0.shortcut.norm.running_mean"], sd["layer4.0.downsample.1.running_mean"]
    )
    assert not any("fc" in k or "num_batches_tracked" in k for k in plain)
    # 20 convs in a ResNet-18 (stem 1 + 8 blocks x 2 + 3 shortcuts), each with 4 FrozenBN tensors
    assert len(plain) == 20 * 5

    bgr = convert_torchvision_resnet(sd)  # default: the model feeds BGR images
    w = sd["conv1.weight"]
    assert torch.equal(bgr["backbone.stem.conv1.weight"][:, 0], w[:, 2])
    assert torch.equal(bgr["backbone.stem.conv1.weight"][:, 2], w[:, 0])
    assert torch.equal(bgr["backbone.stem.conv1.weight"][:, 1], w[:, 1])

    bare = convert_torchvision_resnet(sd, prefix="", input_format="RGB")
    assert set(bare) == {k[len("backbone."):] for k in plain}
    nested = convert_torchvision_resnet(sd, prefix="model.backbone", input_format="RGB")
    assert "model.backbone.res2.0.conv1.weight" in nested


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 800},
        lambda sd: {"model": sd},
        lambda sd: {"backbone.0.body." + k: v for k, v in sd.items()},  # DETR/DETReg backbone naming
    ],
)
def test_wrappers_and_prefixes_accepted(wrap):
    sd = _torchvision_resnet("resnet18", seed=5).state_dict()
    expected = convert_torchvision_resnet(sd)
    got = convert_torchvision_resnet(wrap(sd))
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_unexpected_key_is_named(tmp_path, capsys):
    sd = _torchvision_resnet("resnet18", seed=6).state_dict()
    sd["transformer.encoder.layers.0.linear1.weight"] = torch.zeros(2, 2)
    sd["layer5.0.conv1.weight"] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"transformer\.encoder\.layers\.0\.linear1\.weight") as err:
        map_torchvision_resnet(sd)
    assert "layer5.0.conv1.weight" in str(err.value)

    src, dst = tmp_path / "bad.pth", tmp_path / "bad_d2.pth"
    torch.save(sd, src)
    assert tool.main(["--input", str(src), "--output", str(dst)]) == 1
    assert "layer5.0.conv1.weight" in capsys.readouterr().err
    assert not dst.exists()


def test_not_a_resnet_is_rejected():
    with pytest.raises(ValueError, match="conv1.weight"):
        convert_torchvision_resnet({"fc.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="not a tensor"):
        convert_torchvision_resnet({"conv1.weight": [1, 2, 3]})


def test_trust_pickle_needed_for_python_objects(tmp_path, capsys):
    tv = _torchvision_resnet("resnet18", seed=7)
    sd = tv.state_dict()
    src, dst = tmp_path / "with_args.pth", tmp_path / "with_args_d2.pth"
    torch.save({"state_dict": sd, "args": argparse.Namespace(arch="resnet18")}, src)

    with pytest.raises(SystemExit) as exc:
        tool.main(["--input", str(src), "--output", str(dst)])
    message = str(exc.value.code)
    assert "--trust-pickle" in message and "argparse.Namespace" in message
    assert not dst.exists()

    assert tool.main(["--input", str(src), "--output", str(dst), "--trust-pickle"]) == 0
    assert "converted 100 tensors" in capsys.readouterr().out
    _assert_converts_resnet18(dst, tv)


def _assert_converts_resnet18(dst: Path, tv: nn.Module):
    """``dst`` (converted with the default BGR input format) holds exactly the detectron2 ResNet-18 backbone's
    keys, and that backbone fed BGR computes torchvision's ``tv`` fed the same image in RGB."""
    det = _load_with_detectron2(dst, depth=18)
    assert _saved_keys(dst) == {"backbone." + k for k in det.backbone.state_dict()}
    torch.manual_seed(1)
    rgb = torch.randn(1, 3, 64, 64)
    _assert_same_features(det, tv, rgb[:, [2, 1, 0]], rgb, exact=False)


def _not_checkpoints(tmp_path):
    """Files that are not checkpoints, with what the error must say about each."""
    import pickle

    files = {}
    (tmp_path / "x.json").write_text('{"model": {"a": [1, 2]}}')
    files["x.json"] = "is not a checkpoint: neither a PyTorch file"
    (tmp_path / "rand.bin").write_bytes(bytes(range(7, 250, 3)))
    files["rand.bin"] = "is not a checkpoint: neither a PyTorch file"
    (tmp_path / "zero.pth").write_bytes(b"")
    files["zero.pth"] = "is empty (0 bytes)"
    torch.save(_torchvision_resnet("resnet18", seed=8).state_dict(), tmp_path / "full.pth")
    (tmp_path / "trunc.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:5000])
    files["trunc.pth"] = "is truncated or corrupt"
    files["nonexist.pth"] = "does not exist"
    (tmp_path / "adir").mkdir()
    files["adir"] = "is a folder, not a checkpoint file"
    # a Detectron2 model-zoo pickle: numpy arrays in detectron2's layout, not a torch.save file
    with open(tmp_path / "d2.pkl", "wb") as f:
        pickle.dump({"model": {"stem.conv1.weight": torch.zeros(2).numpy()}, "__author__": "d2"}, f, protocol=2)
    files["d2.pkl"] = "python -m siamese_detr.engine.checkpointing " + str(tmp_path / "d2.pkl") + " OUT.pth"
    return files


@pytest.mark.parametrize("trust", [[], ["--trust-pickle"]])
def test_files_that_are_not_checkpoints_get_one_line_errors(tmp_path, trust):
    for name, message in _not_checkpoints(tmp_path).items():
        dst = tmp_path / "out" / "a.pth"
        with pytest.raises(SystemExit) as exc:
            tool.main(["--input", str(tmp_path / name), "--output", str(dst)] + trust)
        text = str(exc.value.code)
        assert text.startswith("error: ") and str(tmp_path / name) in text
        assert message in text, (name, text)
        assert "\n" not in text and not dst.exists()
        if name != "d2.pkl":
            assert "--trust-pickle" not in text, (name, text)


def test_a_resnet_missing_a_tensor_is_refused(tmp_path, capsys):
    sd = _torchvision_resnet("resnet50", seed=9).state_dict()
    del sd["layer4.2.bn3.weight"]
    for k in [k for k in sd if k.startswith("layer3.5.")]:  # a whole last block of a stage, too
        del sd[k]
    src, dst = tmp_path / "r50_damaged.pth", tmp_path / "r50_d2.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, src)
    assert tool.main(["--input", str(src), "--output", str(dst)]) == 1
    err = capsys.readouterr().err
    assert "lacks 16 tensor(s) of a torchvision ResNet-50" in err  # 1 + the 15 of block layer3.5
    assert "layer4.2.bn3.weight" in err and "layer3.5.conv1.weight" in err and "layer3.5.bn3.running_var" in err
    assert not dst.exists()
    assert tool.missing_resnet_keys(_torchvision_resnet("resnet34", seed=0).state_dict()) == ("ResNet-34", [])


def test_output_is_not_the_input_nor_a_folder_and_is_written_atomically(tmp_path, capsys, monkeypatch):
    src = tmp_path / "r18.pth"
    torch.save(_torchvision_resnet("resnet18", seed=10).state_dict(), src)
    before = src.read_bytes()
    for output, message in [(src, "is the --input file"), (tmp_path / "." / "r18.pth", "is the --input file"),
                            (tmp_path, "is a folder")]:
        with pytest.raises(SystemExit) as exc:
            tool.main(["--input", str(src), "--output", str(output)])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert src.read_bytes() == before
    # the write goes through the checkpointing module's temporary file and rename
    saved = []
    monkeypatch.setattr(tool, "atomic_torch_save", lambda obj, path: saved.append(path) or torch.save(obj, path))
    dst = tmp_path / "r18_d2.pth"
    assert tool.main(["--input", str(src), "--output", str(dst)]) == 0
    assert saved == [str(dst)] and _saved_keys(dst)


def test_a_legacy_torch_save_file_still_converts(tmp_path):
    """Releases saved by torch < 1.6 are pickles too, but torch.save's: they are read, not refused as a .pkl."""
    from siamese_detr.engine.checkpointing import checkpoint_kind, is_legacy_torch_save

    tv = _torchvision_resnet("resnet18", seed=11)
    src, dst = tmp_path / "legacy.pth.tar", tmp_path / "legacy_d2.pth"
    torch.save(tv.state_dict(), src, _use_new_zipfile_serialization=False)
    assert checkpoint_kind(str(src)) == "pickle" and is_legacy_torch_save(str(src))
    assert tool.main(["--input", str(src), "--output", str(dst)]) == 0
    _assert_converts_resnet18(dst, tv)


# COCO's 80 thing category ids (1..90 without the 10 ids that have no category), written out by hand
_COCO_THING_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]


def _official_detr_state(num_rows: int, hidden: int = 4) -> dict:
    """A tiny official-DETR-layout state dict (one decoder layer, no backbone) whose class head has
    ``num_rows`` rows; row ``r`` of the weight is filled with ``r`` and the bias is ``r + 0.5``."""
    rows = torch.arange(num_rows, dtype=torch.float32)
    return {
        "query_embed.weight": torch.zeros(3, hidden),
        "transformer.decoder.layers.0.linear1.weight": torch.ones(2 * hidden, hidden),
        "transformer.decoder.norm.weight": torch.ones(hidden),
        "class_embed.weight": rows[:, None].repeat(1, hidden),
        "class_embed.bias": rows + 0.5,
        "bbox_embed.layers.0.weight": torch.ones(hidden, hidden),
        "bbox_embed.layers.0.bias": torch.zeros(hidden),
    }


@pytest.mark.parametrize(
    "num_rows, kept_rows",
    [
        (92, _COCO_THING_IDS + [91]),  # the official COCO width: 80 thing ids, then the no-object row
        (91, list(range(91))),  # not the DETR COCO width (91 ids + no-object = 92): kept as is
        (93, list(range(93))),
        (100, list(range(100))),
        (1204, list(range(1204))),  # an LVIS-width head (1203 classes + no-object)
        (21, list(range(21))),  # VOC
    ],
)
def test_official_detr_auto_class_rows_only_cut_the_coco_width(tmp_path, capsys, num_rows, kept_rows):
    """``class_rows="auto"`` (the tool's default) maps exactly the official COCO head (92 rows) to the 80
    Detectron2 classes + no-object; a head of any other width (wider ones included) is kept whole."""
    from siamese_detr.checkpoint.official_detr import convert_official_detr

    state = _official_detr_state(num_rows)
    result = convert_official_detr(state)
    assert not result.unmapped
    expected = torch.tensor(kept_rows, dtype=torch.float32)
    assert torch.equal(result.converted["class_embed.0.bias"], expected + 0.5)
    assert torch.equal(result.converted["class_embed.0.weight"][:, 0], expected)
    assert any("[rows " in d for d in result.dropped) == (num_rows == 92)

    src, dst = tmp_path / "detr.pth", tmp_path / "detr_d2.pth"
    torch.save({"model": state}, src)
    assert tool.main(["--input", str(src), "--output", str(dst), "--format", "detr"]) == 0
    out = capsys.readouterr().out
    saved = torch.load(dst, map_location="cpu", weights_only=True)["model"]
    assert torch.equal(saved["class_embed.0.bias"], expected + 0.5)
    assert ("class rows:" in out) == (num_rows == 92), out


@pytest.mark.parametrize(
    "num_rows, kept_rows",
    [
        (91, _COCO_THING_IDS),  # Conditional DETR's COCO width: 91 sigmoid rows, no no-object row
        (92, list(range(92))),
        (100, list(range(100))),
        (1203, list(range(1203))),  # LVIS width
    ],
)
def test_official_conditional_detr_auto_class_rows_only_cut_the_coco_width(num_rows, kept_rows):
    from siamese_detr.checkpoint.official_detr import convert_official_conditional_detr

    result = convert_official_conditional_detr(_official_detr_state(num_rows))
    assert not result.unmapped
    expected = torch.tensor(kept_rows, dtype=torch.float32)
    assert torch.equal(result.converted["class_embed.0.bias"], expected + 0.5)
    assert torch.equal(result.converted["class_embed.0.weight"][:, 0], expected)
