"""tools/convert_checkpoint.py on inputs that need no conversion: a checkpoint already in this project's
(Detectron2) layout is refused with the fix (train.init_checkpoint=FILE), whatever --format; an output that
cannot be written is one error line; and the tool starts without torch's FutureWarning about torch.jit.script
(detectron2 v0.6 scripts functions at import)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from hang_guard import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
_TOOL = ROOT / "tools" / "convert_checkpoint.py"
_spec = importlib.util.spec_from_file_location("convert_checkpoint_errors_tool", _TOOL)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def _trained_model_final(path: Path) -> Path:
    """What tools/lazyconfig_train_net.py writes (SafeDetectionCheckpointer.save): ``{"model": state dict,
    "trainer": ..., "optimizer": ..., "iteration": N}``, the model's names as the demo detector's (detectron2
    ResNet under ``backbone.``, the transformer and heads beside it); a few tensors of each, small."""
    names = ["backbone.stem.conv1.weight", "backbone.stem.conv1.norm.weight", "backbone.res2.0.conv1.weight",
             "backbone.res2.0.shortcut.weight", "backbone.res5.1.conv2.norm.bias",
             "transformer.encoder.layers.0.linear1.weight", "transformer.decoder.layers.0.norm1.bias",
             "class_embed.0.weight", "bbox_embed.0.layers.0.weight", "query_embed.weight", "input_proj.0.0.weight"]
    model = {name: torch.zeros(2, 2) for name in names}
    torch.save({"model": model, "trainer": {"iteration": 0}, "optimizer": {"state": {}, "param_groups": []},
                "iteration": 0}, path)
    return path


@pytest.mark.parametrize("fmt", [None, "torchvision", "detr", "deformable_detr", "siamese_detr"])
def test_a_checkpoint_of_this_project_needs_no_conversion(tmp_path, capsys, fmt):
    """A model_final.pth of the training tool: one error line (exit 2) saying it is already in this project's
    layout and giving train.init_checkpoint=FILE; not "unexpected keys for a torchvision-layout ResNet" /
    "is it an official checkpoint?"; nothing written."""
    src, dst = _trained_model_final(tmp_path / "model_final.pth"), tmp_path / "out.pth"
    argv = ["--input", str(src), "--output", str(dst)] + (["--format", fmt] if fmt else [])
    assert tool.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {src} is already in this project's (Detectron2) layout (backbone.* (5), "
                          "transformer.* (2), ")
    assert err.endswith(f"it needs no conversion, nothing was written; pass it to train.init_checkpoint directly: "
                        f"train.init_checkpoint={src}\n")
    assert err.count("\n") == 1
    assert "unexpected keys" not in err and "official checkpoint" not in err and "--format" not in err
    assert not dst.exists()


@pytest.mark.parametrize("prefix", ["backbone.", ""])
def test_the_tools_own_output_is_not_converted_again(tmp_path, capsys, prefix):
    """A torchvision ResNet converts (exit 0); converting the result again is refused as above (a bare
    detectron2 ResNet, ``--prefix ''``, too)."""
    torch.manual_seed(0)
    src, once, twice = tmp_path / "r18.pth", tmp_path / "r18_d2.pth", tmp_path / "r18_d2_d2.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), src)
    assert tool.main(["--input", str(src), "--output", str(once), "--prefix", prefix]) == 0
    capsys.readouterr()
    assert tool.main(["--input", str(once), "--output", str(twice), "--prefix", prefix]) == 2
    err = capsys.readouterr().err
    assert f"error: {once} is already in this project's (Detectron2) layout (" in err
    assert ("backbone.* (" if prefix else "res4.* (") in err
    assert f"train.init_checkpoint={once}\n" in err and not twice.exists()


def test_an_official_checkpoint_is_not_taken_for_this_projects_layout():
    """torchvision (conv1, layer1..4) and DETR-style (backbone.0.body.*, transformer.*) names are not this
    project's layout: those files still go to their converters."""
    resnet = torchvision.models.resnet18(weights=None).state_dict()
    assert tool.project_layout_modules(resnet) == []
    detr = {f"backbone.0.body.{k}": v for k, v in resnet.items()}
    detr["transformer.encoder.layers.0.linear1.weight"] = torch.zeros(2, 2)
    assert tool.project_layout_modules({"model": detr}) == []
    assert tool.project_layout_modules({"model": "not a state dict"}) == []


def test_no_torch_jit_script_future_warning(tmp_path):
    """Starting the tool prints no FutureWarning about torch.jit.script (detectron2 v0.6 at import)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([sys.executable, str(_TOOL), "--input", str(tmp_path / "missing.pth"), "--output",
                           str(tmp_path / "out.pth")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert proc.returncode == 1
    assert proc.stderr == f"error: --input {tmp_path / 'missing.pth'} does not exist\n"
    assert "FutureWarning" not in proc.stderr and "torch.jit" not in proc.stderr


def test_an_output_that_cannot_be_written_is_one_error_line(tmp_path, capsys):
    """``--output`` under a path whose folder is a file: the output cannot be written, which is said before the
    input is read, in one line naming the output and its parent as a file (exit 2, a usage error), and nothing
    is left beside the file."""
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    (tmp_path / "a_file").write_text("x")
    output = tmp_path / "a_file" / "r18_d2.pth"
    with pytest.raises(SystemExit) as exit_:
        tool.main(["--input", str(tmp_path / "r18.pth"), "--output", str(output)])
    assert exit_.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]  # PROG: error: MESSAGE
    expected = f"--output {output}: its parent {tmp_path / 'a_file'} is a file, not a folder: give a path in a folder"
    assert line.split(": error: ", 1)[1] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "r18.pth"]
