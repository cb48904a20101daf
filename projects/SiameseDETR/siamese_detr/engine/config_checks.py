"""Type checks of command-line overrides: ``train.max_iter=abc`` fails at start-up naming the key.

Detectron2's ``LazyConfig.apply_overrides`` parses a value with ``ast.literal_eval`` and keeps the raw string
when that fails, so ``train.max_iter=abc`` sets the string ``"abc"`` and the run fails (or misbehaves) much
later. Here an override must keep the kind of value the config holds: a bool stays a bool, a number a number
(int or float: configs write ``0`` where ``0.5`` is fine too), a list a list, a dict a dict. ``null`` is
accepted (switching a part off on purpose) except in place of the objects of :data:`BUILT_NODES` below that
the run needs, and keys whose value is ``None`` or a string in the config accept anything. A lazy call (a node
with ``_target_``) may be replaced by the value it returns (a dataset spec for ``L(register_image_folder)(...)``),
except the objects the training tool builds itself
(:data:`BUILT_NODES`: ``model=3``, ``lr_multiplier=null`` failed later with an ``AttributeError`` naming no key).

:func:`expand_home_paths` expands a leading ``~`` of the paths of :data:`HOME_PATH_KEYS`: the shell does not
expand it inside ``KEY=VALUE``, and the quoted ``"train.output_dir='~/run'"`` made a folder named ``~``.

:func:`check_image_formats` refuses an ``image_format`` under ``dataloader`` that the mappers cannot decode to
(a string key accepts any override: ``dataloader.train.mapper.image_format=42`` made every image be skipped as
"unreadable" and the run fail in a data-loader worker).
"""
import os
import re
from typing import Any, Iterator, List, Optional, Tuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..data.image_io import check_image_format
from ..utils.user_errors import UserError, UserValueError

__all__ = ["BUILT_NODES", "HOME_PATH_KEYS", "OverrideTypeError", "check_image_formats", "check_override_type",
           "config_value", "expand_home_paths", "image_format_keys"]

_UNSET = object()


class OverrideTypeError(UserError, TypeError):
    """An override gives a value of another kind than the config's (e.g. a string for an int)."""


def config_value(cfg, key: str, default: Any = _UNSET) -> Any:
    """The value at dotted ``key``, interpolations resolved; None when the key is absent (or ``???``),
    ``default`` when it cannot be read (e.g. an interpolation that does not resolve)."""
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


# the nodes the training tool instantiates itself -> whether null is accepted there (nothing built: no
# evaluation; a test loader is built only for one)
BUILT_NODES = {"model": False, "optimizer": False, "lr_multiplier": False, "dataloader.train": False,
               "dataloader.test": True, "dataloader.evaluator": True}

# path keys whose leading ~ is expanded to the home folder
HOME_PATH_KEYS = ("train.output_dir", "train.init_checkpoint")

_ACCEPTS = {"bool": {"bool"}, "int": {"int", "number"}, "number": {"int", "number"}, "list": {"list"}, "dict": {"dict"}}
_NAMES = {"bool": "True or False", "int": "a number", "number": "a number", "list": "a list [...]",
          "dict": "a dict {...}"}


def check_override_type(key: str, old: Any, new: Any, item: str) -> None:
    """Raise :class:`OverrideTypeError` naming ``key`` when ``new`` is not of the kind of ``old``, or replaces
    an object of :data:`BUILT_NODES` by a value that is not a config of one."""
    _check_built_node(key, old, new, item)
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


def _check_built_node(key: str, old: Any, new: Any, item: str) -> None:
    """Raise :class:`OverrideTypeError` when ``new`` replaces the config of an object the training tool builds
    (``key`` in :data:`BUILT_NODES`, ``old`` a dict) by a value that is not one (null, where not accepted)."""
    if key not in BUILT_NODES or not isinstance(old, (dict, DictConfig)) or isinstance(new, (dict, DictConfig)):
        return
    if new is None and BUILT_NODES[key]:
        return
    target = old.get("_target_", None)
    what = f"the {getattr(target, '__qualname__', target)}" if target is not None else "what"
    names = [f"{key}.{name}" for name in old.keys() if name != "_target_"]
    fields = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    raise OverrideTypeError(
        f"Config key '{key}' holds the config of {what} the run builds; override '{item}' would replace it by "
        f"{'null' if new is None else repr(new)}. Set its fields instead" + (f" ({fields})" if fields else "")
        + ", or give another --config-file."
    )


def expand_home_paths(cfg, keys=HOME_PATH_KEYS) -> None:
    """Rewrite each string value of ``keys`` (dotted) in ``cfg`` that starts with ``~`` with
    ``os.path.expanduser``, so that the run uses (and its ``config.yaml`` records) the real path."""
    for key in keys:
        value = config_value(cfg, key, None)
        if isinstance(value, str) and value.startswith("~"):
            OmegaConf.update(cfg, key, os.path.expanduser(value), merge=False)


def _named(node, name: str, prefix: str) -> Iterator[Tuple[str, Any]]:
    """``(dotted key, value as written)`` of every ``name`` in the nested dicts and lists ``node``, keys under
    ``prefix``."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        if key == name:
            yield f"{prefix}.{key}", child
        else:
            yield from _named(child, name, f"{prefix}.{key}")


def image_format_keys(cfg, eval_only: bool = False) -> List[Tuple[str, Any]]:
    """``(dotted key, value as written)`` of the keys named ``image_format`` under ``dataloader.train`` and
    ``dataloader.test`` (only the latter with ``eval_only``), e.g. ``dataloader.train.mapper.image_format`` and
    ``dataloader.train.mapper.proposal_source.image_format``; an interpolation stays ``"${...}"``."""
    found: List[Tuple[str, Any]] = []
    for section in ("dataloader.test",) if eval_only else ("dataloader.train", "dataloader.test"):
        node = OmegaConf.select(cfg, section, default=None)
        if isinstance(node, (DictConfig, ListConfig)):
            found += _named(OmegaConf.to_container(node, resolve=False), "image_format", section)
    return found


_INTERPOLATION = re.compile(r"^\$\{(\.*)([\w.]+)\}$")  # ${a.b} (absolute) or ${..a.b} (relative)


def interpolated_key(key: str, written: Any) -> Optional[str]:
    """The dotted key that the interpolation ``written`` at ``key`` reads (``${...train.mapper.image_format}`` at
    ``dataloader.test.mapper.image_format``: ``dataloader.train.mapper.image_format``); None for another value."""
    match = _INTERPOLATION.match(written) if isinstance(written, str) else None
    if match is None:
        return None
    dots, target = len(match.group(1)), match.group(2)
    parent = key.split(".")[:-1]
    return ".".join(parent[: len(parent) - dots + 1] + [target]) if dots else target


def check_image_formats(cfg, eval_only: bool = False) -> None:
    """Raise ``UserValueError`` naming the first key of :func:`image_format_keys` whose value is not an image
    format the mappers decode to (:data:`~siamese_detr.data.image_io.IMAGE_FORMATS`), with the value and the
    accepted ones; before any image is read. A value set by an interpolation names it too (with ``eval_only``
    the test mapper's ``${...train.mapper.image_format}``)."""
    for key, written in image_format_keys(cfg, eval_only):
        value = config_value(cfg, key, _UNSET)
        if value is _UNSET:  # an interpolation that does not resolve: building the mapper names it
            continue
        source = interpolated_key(key, written)
        check_image_format(value, f"Config key '{key}'" + (f" (set from '{source}')" if source else ""))
    _check_mapper_formats_match_the_model(cfg, eval_only)


def _check_mapper_formats_match_the_model(cfg, eval_only: bool) -> None:
    """Raise ``UserValueError`` when a mapper decodes images in another channel order than ``model.input_format``
    (the order of the model's pixel statistics and backbone weights): the model would read swapped channels."""
    model_format = config_value(cfg, "model.input_format", _UNSET)
    if not isinstance(model_format, str):
        return
    for key, _ in image_format_keys(cfg, eval_only):
        value = config_value(cfg, key, _UNSET)
        if key.endswith(".mapper.image_format") and isinstance(value, str) and value != model_format:
            raise UserValueError(
                f"Config key '{key}' is {value!r} but model.input_format is {model_format!r}: the model would read "
                f"the images with their channels swapped (its pixel statistics and backbone weights are in "
                f"{model_format} order). Give both the same order (the configs use 'BGR')."
            )
