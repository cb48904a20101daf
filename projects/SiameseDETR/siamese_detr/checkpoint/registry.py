"""Registry of converters from official checkpoint layouts to this project's key names.

A converter takes the official state dict (the CLI passes it unwrapped from its ``model`` / ``state_dict``
key by :func:`model_state`; the built-in converters also accept the wrapped checkpoint) and returns a
:class:`ConversionResult`: the converted tensors, the source keys it could NOT map (the CLI refuses to write
a checkpoint while any remain: weights are never dropped silently) and the keys it dropped on purpose (e.g.
``num_batches_tracked``, pretext-only heads), listed for the user.

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
    """``converted``: project name -> tensor (e.g. ``"transformer.decoder_layers.0.cross_attn.in_proj_weight"``);
    ``unmapped``: source keys with no place (nothing may be written); ``dropped``: source keys left out on
    purpose, and class-head rows removed as ``"KEY[rows 0,12,...]"`` (the removed row indices);
    ``notes``: ``{group: why}``, by the group the CLI prints (``"class_embed.*"``, ``"enc_head.*"``, ...)."""

    converted: Dict[str, torch.Tensor]
    unmapped: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    notes: Dict[str, str] = field(default_factory=dict)


Converter = Callable[..., ConversionResult]
# (pattern of an official key, builder of the project name from its match)
RenameRule = Tuple[re.Pattern, Callable[[re.Match], str]]
_CONVERTERS: Dict[str, Converter] = {}


def register_converter(name: str):
    """Decorator registering ``fn(state_dict: Mapping[str, Tensor], input_format="BGR", **options) ->
    ConversionResult`` under ``name`` (the built-ins' options: ``class_rows`` for ``detr`` /
    ``conditional_detr`` / ``deformable_detr``, ``for_pretraining`` for ``up_detr`` / ``detreg`` /
    ``siamese_detr``); returns ``fn`` unchanged. Raises ``KeyError`` when ``name`` is registered already."""

    def wrap(fn: Converter) -> Converter:
        if name in _CONVERTERS:
            raise KeyError(f"converter {name!r} is registered twice")
        _CONVERTERS[name] = fn
        return fn

    return wrap


def get_converter(name: str) -> Converter:
    """The converter registered as ``name`` (e.g. ``"detr"``), after importing the built-in ones; raises
    ``KeyError`` listing :func:`available_converters` when there is none."""
    _load_builtin_converters()
    if name not in _CONVERTERS:
        raise KeyError(f"no converter {name!r}; available: {', '.join(available_converters())}")
    return _CONVERTERS[name]


def available_converters() -> List[str]:
    """Sorted names of the registered converters, built-in ones included (``["conditional_detr",
    "deformable_detr", "detr", "detreg", "siamese_detr", "up_detr"]`` without third-party ones)."""
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
    under ``backbone.`` (:func:`~siamese_detr.checkpoint.torchvision_resnet.map_torchvision_resnet`), e.g.
    ``backbone.0.body.layer1.0.conv1.weight`` -> ``backbone.res2.0.conv1.weight``.

    Args:
        state: the whole model state dict; only its keys starting with ``source_prefix`` are read.
        input_format: "BGR" (reverse ``conv1``'s input channels) or "RGB".
        source_prefix: the backbone's prefix in ``state`` (``map_torchvision_resnet`` strips
            ``"module."`` / ``"backbone.0.body."`` only, so another prefix is refused there).

    Returns:
        ``(converted, dropped)``: ``{project name: tensor}`` and the source keys dropped on purpose (full
        names, e.g. ``backbone.0.body.bn1.num_batches_tracked``); ``({}, [])`` when no key has the prefix.

    Raises:
        ValueError: from ``map_torchvision_resnet`` (a backbone key it cannot map, no ``conv1.weight``).
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
