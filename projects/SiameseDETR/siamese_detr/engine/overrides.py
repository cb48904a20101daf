"""Command-line ``key=value`` overrides that refuse keys the config does not have.

detectron2's ``LazyConfig.apply_overrides`` silently creates a new key when the last part of a
dotted key is misspelled (``train.max_iterr=10`` trains for the default length). Here such a key
is an error that names it and suggests the closest existing keys. Prefix a key with ``+`` to add
a key on purpose (hydra's convention): ``+model.new_arg=3``; a ``+`` key that is not in the config but
looks like a typo of one that is (``+train.max_iterr=10``) is added with a warning naming the existing key.
A ``+`` key added to an object the config builds (a node with ``_target_``, e.g. ``model``) must be an argument
of its class or function: ``+model.num_querys_one2many=60`` is an error naming the closest arguments, not a
``TypeError`` when the model is built. On a key the config has, ``+`` changes it, type-checked as without it.

An override must be ``KEY=VALUE`` as one word of the command line: no key (``=5``), an empty part of a key
(``train..max_iter=5``), ``==`` and hydra's ``++`` are errors naming the form meant, and so is a word the shell
split off at a space around ``=`` (``train.max_iter= 5``). A leading ``~`` of ``train.output_dir`` and
``train.init_checkpoint`` is expanded to the home folder (:func:`.config_checks.expand_home_paths`), as the
shell does not expand it inside ``KEY=VALUE``.

Lists and tuples are written ``key=[a,b]``; ``key=(a,b)`` is accepted too (read as a list, see
:mod:`.override_syntax`; quote it for the shell: ``'key=(a,b)'``). Datasets given by path
(``dataloader.train.dataset.names=coco:ANNOTATIONS.json:IMAGE_ROOT`` or ``folder:IMAGE_DIR``) are
registered once the overrides are applied (:mod:`.dataset_specs`). An override that hydra's grammar cannot
parse, or whose value OmegaConf cannot hold (``names=coco:a,b.json``: the comma makes it a list), is an error
naming it and how to quote it (:class:`OverrideSyntaxError`).
"""
import difflib
import inspect
import logging
import os
from typing import Iterable, List, Optional, Sequence

from detectron2.config import LazyConfig
from detectron2.utils.registry import locate
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config_checks import HOME_PATH_KEYS, check_override_type, config_value, expand_home_paths
from .dataset_specs import register_config_datasets
from .override_syntax import tuples_to_lists
from ..utils.user_errors import UserError, UserKeyError, UserValueError

_MISSING = object()
logger = logging.getLogger(__name__)


class OverrideSyntaxError(UserError, ValueError):
    """An override hydra's grammar cannot parse or OmegaConf cannot store; the message names it and the fix."""


# OmegaConf's messages when a value parsed by hydra's grammar is a type it cannot store (an unquoted comma or a
# sweep): a quoting matter, unlike e.g. "Cannot merge DictConfig with ListConfig" (a list where a section is)
_UNSTORABLE = ("Unsupported value type", "Unexpected type annotation")


def _tilde_hint(key: str, value: str) -> str:
    """For a value starting with ``~``: whether the quoted form is expanded (:data:`HOME_PATH_KEYS`), else the
    full path to write; "" for other values."""
    if not value.startswith("~"):
        return ""
    if key.lstrip("+") in HOME_PATH_KEYS:
        return f"; quoted, its leading ~ is expanded to your home folder: {os.path.expanduser(value)}"
    return f"; a ~ in {key.lstrip('+')} is not expanded: write the full path, {os.path.expanduser(value)}"


def _apply_one(cfg, item: str, typed: str):
    """``LazyConfig.apply_overrides(cfg, [item])`` with its parser's errors turned into one line naming the
    override as the user ``typed`` it (hydra's own message does not say which override it is; OmegaConf's, for
    an unquoted comma, names a Python type)."""
    try:
        return LazyConfig.apply_overrides(cfg, [item])
    except (HydraException, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        unstorable = isinstance(e, OmegaConfBaseException) and first.startswith(_UNSTORABLE)
        if isinstance(e, OmegaConfBaseException) and not unstorable:
            raise OverrideSyntaxError(f"Override '{typed}' cannot be applied: {first}") from None
        key, value = typed.split("=", 1)
        example = (f"\"{key}='{value}'\" (in the shell, as written here, with the double quotes"
                   f"{_tilde_hint(key, value)})" if "'" not in value
                   else "the value between quotes inside the override, and the override itself for the shell")
        reason = ("its value does not parse to one a config can hold" if unstorable
                  else "an unquoted ~ is not part of the override grammar (nor expanded by the shell inside "
                       "KEY=VALUE)" if value.startswith("~") else first)
        raise OverrideSyntaxError(
            f"Override '{typed}' cannot be read: {reason}. In the override grammar , [ ] ( ) = ' \" and spaces "
            f"have a meaning (a comma makes a list); quote a value holding them: {example}."
        ) from None


def _all_keys(cfg, prefix: str = "") -> List[str]:
    keys = []
    items = cfg.items() if isinstance(cfg, DictConfig) else enumerate(cfg) if isinstance(cfg, ListConfig) else []
    for k, v in items:
        name = f"{prefix}{k}"
        keys.append(name)
        if isinstance(v, (DictConfig, ListConfig)):
            keys.extend(_all_keys(v, name + "."))
    return keys


def _config_has_key(cfg, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if isinstance(node, DictConfig) and part in node:
            node = node[part] if not OmegaConf.is_missing(node, part) else None
        elif isinstance(node, ListConfig) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _close_existing_key(cfg, added: str) -> List[str]:
    """The existing key that a new key ``added`` most likely misspells: among its siblings when its section
    exists (``train.max_iterr`` -> ``train.max_iter``; the shared section alone must not make ``strict`` look
    like ``_target_``), else among all keys (``trian.max_iter``)."""
    parent, _, name = added.rpartition(".")
    if parent and _config_has_key(cfg, parent):
        node = OmegaConf.select(cfg, parent)
        siblings = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
        return [f"{parent}.{k}" for k in difflib.get_close_matches(name, siblings, n=1, cutoff=0.8)]
    return difflib.get_close_matches(added, _all_keys(cfg), n=1, cutoff=0.85)


def _unknown_argument(cfg, added: str, typed: str) -> Optional[str]:
    """Why ``+added`` cannot be an argument of the object its parent node builds, or None.

    None when the parent is not built from a ``_target_``, when the target cannot be resolved or inspected, or
    when it takes ``**kwargs`` (any name may be meant for it)."""
    parent, _, name = added.rpartition(".")
    if not parent or not _config_has_key(cfg, parent):
        return None
    node = OmegaConf.select(cfg, parent)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    target = node["_target_"]
    try:
        target = locate(target) if isinstance(target, str) else target
        parameters = inspect.signature(target).parameters
    except Exception:  # a target detectron2 would fail on anyway, or one without a signature: not ours to judge
        return None
    if name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return None
    names = [n for n, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n != "self"]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(f'{parent}.{c}' for c in close)}?" if close else ""
    return (f"Override '{typed}' adds '{name}' to {parent}, which builds {getattr(target, '__qualname__', target)}: "
            f"it has no argument '{name}'.{hint} Its arguments: {', '.join(names)}.")


def _split_at_spaces(overrides: Sequence[str], index: int) -> Optional[str]:
    """The override meant when ``overrides[index]`` (no ``=`` in it) is a piece the shell split off at a space
    around ``=``: ``["train.max_iter=", "5"]``, ``["train.max_iter", "=5"]`` or ``["train.max_iter", "=", "5"]``
    all mean ``train.max_iter=5``; None otherwise."""
    item = overrides[index]
    before = overrides[index - 1] if index > 0 else ""
    after = list(overrides[index + 1:index + 3])
    if before.endswith("=") and "=" not in before[:-1]:
        return before + item
    if after and after[0].startswith("="):
        return item + after[0] + (after[1] if after[0] == "=" and len(after) > 1 else "")
    return None


def _checked_key(cfg, overrides: Sequence[str], index: int, item: str) -> str:
    """The key of ``item`` (``overrides[index]`` with its tuples read as lists), ``+`` kept; a
    ``UserValueError`` naming the form meant for one that is not ``KEY=VALUE``, ``+KEY=VALUE``."""
    typed = overrides[index]
    if "=" not in item:
        joined = _split_at_spaces(overrides, index)
        hint = (f" The shell splits the command line at spaces: write no spaces around '=', as {joined} (quote a "
                "value that holds spaces: \"KEY='a b'\")." if joined
                else " Flags (like --eval-only, --resume) go before the key=value overrides." if item.startswith("-")
                else "")
        raise UserValueError(f"Override '{item}' is not of the form key=value.{hint}")
    key, value = (part.strip() for part in item.split("=", 1))
    name = key.lstrip("+").strip()
    if not name:
        raise UserValueError(f"Override '{typed}' has no key: write KEY=VALUE, e.g. train.max_iter=5.")
    if name.startswith("-"):
        raise UserValueError(f"Override '{typed}' is a flag: flags (like --num-gpus, --resume) go before the "
                             "key=value overrides.")
    if "" in name.split("."):
        raise UserValueError(f"Override '{typed}': its key '{name}' has an empty part (a dot too many or "
                             "missing a name): write the key's names separated by single dots, e.g. "
                             "train.max_iter=5.")
    if value.startswith("="):
        raise UserValueError(f"Override '{typed}' has '==': write {key}={value[1:]} (one '='; a value that "
                             f"starts with '=' is written quoted: \"{key}='{value}'\").")
    if key.startswith("++"):
        meant = f"{name}={value}" if _config_has_key(cfg, name) else f"+{name}={value}"
        raise UserValueError(f"Override '{typed}': '++' (hydra's add-or-override) is not understood here: write "
                             f"{meant} ({name} without '+' changes an existing key, +{name} adds a new one).")
    return key


def apply_checked_overrides(cfg, overrides: Iterable[str]):
    """Apply ``key=value`` overrides to a LazyConfig, raising ``KeyError`` for unknown keys.

    Args:
        cfg: a config from ``LazyConfig.load``.
        overrides: strings ``"a.b.c=value"``; ``"+a.b=value"`` adds a new key.
    Returns:
        the same config, updated (a leading ``~`` of :data:`~.config_checks.HOME_PATH_KEYS` expanded; its
        datasets given by path registered and ``model.num_classes`` set from them,
        :func:`~.dataset_specs.register_config_datasets`).
    Raises:
        ValueError: an override that is not ``KEY=VALUE`` / ``+KEY=VALUE`` (no key, ``==``, ``++``, a space
        around ``=``), naming the form meant;
        KeyError: unknown key, or a ``+`` key that is no argument of the object its section builds;
        ``OverrideTypeError`` (a ``TypeError``): a value of another kind than the
        config's (``train.max_iter=abc``, also with ``+`` on an existing key), see :mod:`.config_checks`;
        :class:`OverrideSyntaxError` (a ``ValueError``): an override the grammar cannot read (``train.max_iter=[1``);
        FileNotFoundError / ValueError: a dataset given by path that is missing or malformed (see
        :func:`~.dataset_specs.register_config_datasets`).
    """
    overrides = list(overrides)
    plain, checks = [], []  # plain: (override as applied, as typed)
    for index, typed in enumerate(overrides):
        item = tuples_to_lists(typed)
        key = _checked_key(cfg, overrides, index, item)
        if key.startswith("+"):
            added = key[1:].strip()
            if _config_has_key(cfg, added):  # '+' on an existing key changes it: its value is checked as well
                checks.append((added, config_value(cfg, added), item))
            else:  # a new key: say so when it looks like a typo of an existing one
                problem = _unknown_argument(cfg, added, typed)
                if problem:
                    raise UserKeyError(problem)
                close = _close_existing_key(cfg, added)
                if close:
                    logger.warning("Override '%s' adds the new key '%s', close to the existing '%s': if you meant "
                                   "to change that one, write '%s=...' without '+'", item, added, close[0], close[0])
            plain.append((item[1:] if item.startswith("+") else item.replace("+", "", 1), typed))
            continue
        if not _config_has_key(cfg, key):
            close = difflib.get_close_matches(key, _all_keys(cfg), n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UserKeyError(
                f"Config key '{key}' (from override '{item}') does not exist in the config.{hint} "
                f"To add a new key on purpose, write '+{item}'."
            )
        checks.append((key, config_value(cfg, key), item))
        plain.append((item, typed))
    for item, typed in plain:  # one at a time (as detectron2 applies them) so that an error can name its override
        cfg = _apply_one(cfg, item, typed)
    for key, old, item in checks:
        check_override_type(key, old, config_value(cfg, key), item)
    expand_home_paths(cfg)
    register_config_datasets(cfg, [item.split("=", 1)[0].strip().lstrip("+") for item, _ in plain])
    return cfg
