"""Registry of converters from official checkpoint layouts to this project's key names.

A converter takes the official state dict (already unwrapped from its ``model`` / ``state_dict`` key) and
returns a :class:`ConversionResult`: the converted tensors, the source keys it could NOT map (the CLI
refuses to write a checkpoint while any remain: weights are never dropped silently) and the keys it dropped
on purpose (e.g. ``num_batches_tracked``, pretext-only heads), listed for the user.

    @register_converter("my_detr")  # a name not registered yet
    def convert_my_detr(state_dict, input_format="BGR") -> ConversionResult: ...

``tools/convert_checkpoint.py --format NAME`` looks converters up here.
"""

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = [
    "ConversionResult",
    "available_converters",
    "convert_detr_backbone",
    "get_converter",
    "model_state",
    "register_converter",
    "rename_by_rules",
    "RenameRule",
]


@dataclass
class ConversionResult:
    """``converted``: project name -> tensor; ``unmapped``: source keys with no place (nothing may be written);
    ``dropped``: source keys left out on purpose, and class-head rows removed as ``"KEY[rows 0,12,...]"``;
    ``notes``: why, by the group the CLI prints (``"class_embed.*"``, ``"enc_head.*"``, ...)."""

    converted: Dict[str, torch.Tensor]
    unmapped: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    notes: Dict[str, str] = field(default_factory=dict)


Converter = Callable[..., ConversionResult]
# (pattern of an official key, builder of the project name from its match)
RenameRule = Tuple[re.Pattern, Callable[[re.Match], str]]
_CONVERTERS: Dict[str, Converter] = {}


def register_converter(name: str):
    """Decorator registering ``fn(state_dict: Mapping[str, Tensor], input_format="BGR") -> ConversionResult``."""

    def wrap(fn: Converter) -> Converter:
        if name in _CONVERTERS:
            raise KeyError(f"converter {name!r} is registered twice")
        _CONVERTERS[name] = fn
        return fn

    return wrap


def get_converter(name: str) -> Converter:
    _load_builtin_converters()
    if name not in _CONVERTERS:
        raise KeyError(f"no converter {name!r}; available: {', '.join(available_converters())}")
    return _CONVERTERS[name]


def available_converters() -> List[str]:
    _load_builtin_converters()
    return sorted(_CONVERTERS)


def _load_builtin_converters() -> None:
    """Import the modules that register the project's converters (each registers itself on import)."""
    import importlib
    import pkgutil

    package = __name__.rsplit(".", 1)[0]
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if info.name.startswith("official_"):
            importlib.import_module(f"{package}.{info.name}")


def model_state(obj) -> Dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint (a state dict, or a dict holding it under ``model`` /
    ``state_dict``), with DDP's ``module.`` prefix removed.

    Raises:
        ValueError: ``obj`` is not a mapping, or an entry is not a tensor (not a state dict).
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict or a checkpoint dict, got {type(obj).__name__}")
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"entry {key!r} is a {type(value).__name__}, not a tensor: not a state dict")
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def convert_detr_backbone(
    state: Mapping[str, torch.Tensor], input_format: str, source_prefix: str = "backbone.0.body."
):
    """The ResNet of a DETR-style checkpoint (``backbone.0.body.*``, torchvision names) in detectron2's names
    under ``backbone.`` (:func:`~siamese_detr.checkpoint.torchvision_resnet.map_torchvision_resnet`).

    Returns:
        ``(converted, dropped)``: ``{project name: tensor}`` and the source keys dropped on purpose.
    """
    from .torchvision_resnet import map_torchvision_resnet

    backbone = {k: v for k, v in state.items() if k.startswith(source_prefix)}
    if not backbone:
        return {}, []
    mapped, dropped = map_torchvision_resnet(backbone, prefix="backbone.", input_format=input_format)
    return mapped, [source_prefix + k for k in dropped]


def rename_by_rules(key: str, rules: Sequence[RenameRule]) -> Optional[str]:
    """The project name of the official ``key`` given by the FIRST rule whose pattern matches it (rules are
    tried in order); None when no rule matches."""
    for pattern, build in rules:
        m = pattern.match(key)
        if m is not None:
            return build(m)
    return None
