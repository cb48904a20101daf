"""Rename a torchvision-layout ResNet state dict (torchvision ImageNet, SwAV, DETReg) to detectron2's ResNet.

torchvision / SwAV names                     detectron2 names (``prefix`` = "backbone.")
``conv1.weight``                             ``backbone.stem.conv1.weight``
``bn1.{weight,bias,running_*}``              ``backbone.stem.conv1.norm.*``
``layer{N}.{i}.conv{K}.weight``              ``backbone.res{N+1}.{i}.conv{K}.weight``
``layer{N}.{i}.bn{K}.*``                     ``backbone.res{N+1}.{i}.conv{K}.norm.*``
``layer{N}.{i}.downsample.0.weight``         ``backbone.res{N+1}.{i}.shortcut.weight``
``layer{N}.{i}.downsample.1.*``              ``backbone.res{N+1}.{i}.shortcut.norm.*``

Dropped: the classifier ``fc.*``, SwAV's pretext heads ``projection_head.*`` / ``prototypes.*`` and the BN
counters ``*.num_batches_tracked``. Any other key is an error naming it (a wrong file must not silently
yield a randomly initialised backbone).

torchvision's ResNet-50 (v1.5) puts the bottleneck stride in the 3x3 conv: build the detectron2 ResNet with
``stride_in_1x1=False``. ``FrozenBN`` uses eps 1e-5 like torchvision's ``BatchNorm2d``.

Channel order: these weights were trained on RGB images normalised by the ImageNet mean/std. The project's
models default to ``input_format="BGR"`` with BGR-ordered ``pixel_mean/std`` (0-255 scale, i.e. the same
normalisation), so by default the first conv's input channels are reversed (``input_format="BGR"``) and the
converted backbone computes on BGR images exactly what the original computes on the RGB image.
"""

import re
from collections.abc import Mapping
from typing import Dict, List, Tuple

import torch

__all__ = ["convert_torchvision_resnet", "map_torchvision_resnet", "unwrap_state_dict"]

# leading parts of key names added by training wrappers: DDP ("module."), DETR/DETReg's
# ``Joiner(Backbone(body=IntermediateLayerGetter))`` ("backbone.0.body.")
_WRAPPER_PREFIXES = ("module.", "backbone.0.body.")
_DROPPED = re.compile(r"^(fc|projection_head|prototypes)(\..*)?$|(^|\.)num_batches_tracked$")
_BN = r"(weight|bias|running_mean|running_var)"
_STAGE = r"^layer([1-4])\.(\d+)\."  # torchvision layer{N} is detectron2 res{N+1}
# (pattern on the unwrapped torchvision name, detectron2 name built from the match)
_RULES = [
    (re.compile(r"^conv1\.weight$"), lambda m: "stem.conv1.weight"),
    (re.compile(rf"^bn1\.{_BN}$"), lambda m: f"stem.conv1.norm.{m[1]}"),
    (re.compile(_STAGE + r"conv(\d)\.weight$"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight"),
    (re.compile(_STAGE + rf"bn(\d)\.{_BN}$"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (re.compile(_STAGE + r"downsample\.0\.weight$"), lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight"),
    (
        re.compile(_STAGE + rf"downsample\.1\.{_BN}$"),
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}",
    ),
]


def unwrap_state_dict(obj) -> Dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint.

    Accepts a plain state dict (torchvision, SwAV release ``swav_800ep_pretrain.pth.tar``) or one wrapped
    as ``{"state_dict": ...}`` / ``{"model": ...}`` (extra entries such as ``"epoch"`` are ignored), and
    strips leading ``"module."`` (DDP) / ``"backbone.0.body."`` (DETR-style backbone) from every key.

    Raises:
        ValueError: not a mapping of tensors, or two keys collide once the wrapper prefixes are removed.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    out: Dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = str(key)
        stripped = True
        while stripped:
            stripped = False
            for p in _WRAPPER_PREFIXES:
                if name.startswith(p):
                    name, stripped = name[len(p):], True
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"entry {key!r} is a {type(value).__name__}, not a tensor: not a state dict")
        if name in out:
            raise ValueError(f"key {key!r} collides with another key once wrapper prefixes are removed")
        out[name] = value
    return out


def _rename(name: str) -> str:
    """detectron2 name (without prefix) of one torchvision key, or '' when it has no counterpart."""
    for pattern, build in _RULES:
        m = pattern.match(name)
        if m is not None:
            return build(m)
    return ""


def map_torchvision_resnet(
    state_dict, prefix: str = "backbone.", input_format: str = "BGR"
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Convert a torchvision-layout ResNet (18/34/50/101/152) state dict to detectron2 names.

    Args:
        state_dict: a state dict or a checkpoint wrapping one (see :func:`unwrap_state_dict`).
        prefix: prepended to every detectron2 name: the attribute path of the ResNet in the target model
            ("backbone." for this project's DETR / SiameseDETRPretrain, "" for a bare ResNet). A missing
            trailing "." is added.
        input_format: channel order of the images the target model feeds the backbone. The source weights
            expect RGB; "BGR" reverses the input channels of ``stem.conv1.weight`` ``[64, 3, 7, 7]``.

    Returns:
        ``(converted, dropped)``: ``{detectron2 name: tensor}`` in the input's order, and the (unwrapped)
        source names deliberately left out (``fc.*``, ``projection_head.*``, ``prototypes.*``,
        ``*.num_batches_tracked``).

    Raises:
        ValueError: a key that is neither converted nor known to be droppable (the first 20 such keys are
            named, with the total when there are more), no ``conv1.weight``, or an ``input_format`` other than
            "BGR" / "RGB".
    """
    if input_format not in ("BGR", "RGB"):
        raise ValueError(f"input_format must be 'BGR' or 'RGB', got {input_format!r}")
    if prefix and not prefix.endswith("."):
        prefix += "."
    converted: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    unexpected: List[str] = []
    for name, value in unwrap_state_dict(state_dict).items():
        new = _rename(name)
        if new:
            if new == "stem.conv1.weight" and input_format == "BGR":
                value = value.flip(1)  # [C_out, 3 (RGB -> BGR), kh, kw]
            converted[prefix + new] = value
        elif _DROPPED.search(name):
            dropped.append(name)
        else:
            unexpected.append(name)
    if unexpected:
        shown = ", ".join(unexpected[:20])
        if len(unexpected) > 20:
            shown += f", ... ({len(unexpected)} in all)"
        raise ValueError(
            f"unexpected keys for a torchvision-layout ResNet: {shown}. Expected conv1/bn1/layer1-4 "
            f"(optionally under 'module.' or 'backbone.0.body.'); fc/projection_head/prototypes are dropped. "
            f"Is this a full detector checkpoint or an already converted detectron2 file?"
        )
    if "stem.conv1.weight" not in {k[len(prefix):] for k in converted}:
        raise ValueError("no 'conv1.weight' found: this does not look like a torchvision-layout ResNet")
    return converted, dropped


def convert_torchvision_resnet(
    state_dict, prefix: str = "backbone.", input_format: str = "BGR"
) -> Dict[str, torch.Tensor]:
    """:func:`map_torchvision_resnet` without the list of dropped keys: ``{detectron2 name: tensor}``, e.g.
    ``{"backbone.stem.conv1.weight": [64, 3, 7, 7] (BGR), ...}``; same arguments and errors."""
    return map_torchvision_resnet(state_dict, prefix=prefix, input_format=input_format)[0]
