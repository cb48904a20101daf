"""Type checks of command-line overrides: ``train.max_iter=abc`` fails at start-up naming the key.

Detectron2's ``LazyConfig.apply_overrides`` parses a value with ``ast.literal_eval`` and keeps the raw string
when that fails, so ``train.max_iter=abc`` sets the string ``"abc"`` and the run fails (or misbehaves) much
later. Here an override must keep the kind of value the config holds: a bool stays a bool, a number a number
(int or float: configs write ``0`` where ``0.5`` is fine too), a list a list, a dict a dict. ``null`` is
always accepted (switching a part off on purpose), and keys whose value is ``None`` or a string in the config
accept anything.
"""
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..utils.user_errors import UserError

__all__ = ["OverrideTypeError", "check_override_type", "config_value"]

_UNSET = object()


class OverrideTypeError(UserError, TypeError):
    """An override gives a value of another kind than the config's (e.g. a string for an int)."""


def config_value(cfg, key: str, default: Any = _UNSET) -> Any:
    """The value at dotted ``key`` (interpolations resolved when possible); ``default`` when unreadable."""
    try:
        return OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except Exception:
        return default


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, (list, tuple, ListConfig)):
        return "list"
    if isinstance(value, (dict, DictConfig)):
        return "dict"
    return "other"


_ACCEPTS = {"bool": {"bool"}, "int": {"int", "number"}, "number": {"int", "number"}, "list": {"list"}, "dict": {"dict"}}
_NAMES = {"bool": "True or False", "int": "a number", "number": "a number", "list": "a list [...]",
          "dict": "a dict {...}"}


def check_override_type(key: str, old: Any, new: Any, item: str) -> None:
    """Raise :class:`OverrideTypeError` naming ``key`` when ``new`` is not of the kind of ``old``."""
    if old is _UNSET or old is None or new is None:
        return
    if isinstance(old, (dict, DictConfig)) and "_target_" in old:
        return  # a lazy call (e.g. L(register_image_folder)(...)) may be replaced by the value it returns
    expected = _kind(old)
    if expected not in _ACCEPTS or _kind(new) in _ACCEPTS[expected]:
        return
    raise OverrideTypeError(
        f"Config key '{key}' expects {_NAMES[expected]} (the config has {old!r}), but override '{item}' gives "
        f"{new!r}. Fix the value."
    )
