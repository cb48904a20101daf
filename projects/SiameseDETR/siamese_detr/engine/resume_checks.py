"""``--resume`` continues the run that is in ``train.output_dir``, not another one.

A resumed run loads the newest checkpoint of its output folder. When that folder was written by a different
run (another config, e.g. a command whose ``train.output_dir`` override names another config's folder),
resuming would silently continue a different model or data. Before ``default_setup`` overwrites
``config.yaml``, :func:`check_resume_matches` compares the sections that define what is trained — ``model``
and the training data (``dataloader.train.dataset``) — of the saved ``config.yaml`` with the new config,
both serialised by Detectron2's own ``LazyConfig.save``, and refuses with the differing keys. Schedule,
logging and output keys may change on resume (e.g. a longer ``train.max_iter``). An object in a config, which
``LazyConfig.save`` writes with a Python tag (``!!python/name:torch.nn.ReLU``), is compared by its tag and
fields; nothing in a ``config.yaml`` is built or imported to read it.

A changed learning rate or weight decay does resume, and takes effect: the optimizer state a resume loads
holds the old base lr (``initial_lr``, from which the schedule computes every step's lr) and weight decay of
each parameter group, so :func:`reapply_optimizer_settings` puts back the ones the config built.

``--eval-only`` into a training run's folder (the README's evaluation example does this) must not replace
that reference: :func:`keep_training_config` puts the training run's ``config.yaml`` back after
``default_setup`` and keeps the evaluation's config as ``config_eval_only.yaml``.
"""

import contextlib
import os
import tempfile
from typing import Any, Dict, Iterator, List, Sequence

import yaml
from detectron2.config import LazyConfig

from ..utils.user_errors import UserError

__all__ = ["ResumeMismatchError", "check_resume_matches", "differing_keys", "keep_training_config",
           "EVAL_ONLY_CONFIG", "optimizer_settings", "reapply_optimizer_settings"]

EVAL_ONLY_CONFIG = "config_eval_only.yaml"

COMPARED_SECTIONS = ("model", "dataloader.train.dataset")


class ResumeMismatchError(UserError, ValueError):
    """``--resume`` into an output folder written by a run of another model or training data."""


class _PythonTagsAsText(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads a value ``LazyConfig.save`` wrote with a Python tag (an object in a config:
    ``!!python/name:torch.nn.ReLU ''``, ``!!python/object:...``) as ``{"!python/<tag>": its fields}``, where
    ``safe_load`` refuses the whole file: enough to compare two configs, and no object is built or imported."""


def _python_tag_as_text(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {f"!python/{suffix}": value}


_PythonTagsAsText.add_multi_constructor("tag:yaml.org,2002:python/", _python_tag_as_text)


def _read_config_yaml(path: str) -> Dict[str, Any]:
    """A ``config.yaml`` written by ``LazyConfig.save``, read without building any object (see
    :class:`_PythonTagsAsText`); raises ``yaml.YAMLError`` for a file that is not YAML."""
    with open(path) as f:
        return yaml.load(f, Loader=_PythonTagsAsText) or {}


def _serialised(cfg) -> Dict[str, Any]:
    """``cfg`` as ``LazyConfig.save`` writes it (plain yaml), read back as a dict."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.yaml")
        LazyConfig.save(cfg, path)
        if not os.path.isfile(path):  # not serialisable as yaml (LazyConfig wrote a .pkl): nothing to compare
            return {}
        return _read_config_yaml(path)


def _section(d: Dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def differing_keys(old: Any, new: Any, prefix: str) -> List[str]:
    """Dotted keys whose values differ between two nested dicts / lists (``prefix`` names the root)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=str)
        return [k for key in keys for k in differing_keys(old.get(key), new.get(key), f"{prefix}.{key}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [k for i, (a, b) in enumerate(zip(old, new)) for k in differing_keys(a, b, f"{prefix}.{i}")]
    return [] if old == new else [prefix]


def check_resume_matches(cfg, output_dir: str) -> None:
    """Raise :class:`ResumeMismatchError` when ``output_dir/config.yaml`` (the previous run's) trains another
    model or dataset than ``cfg``. Nothing to check when there is no previous ``config.yaml``."""
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return
    try:
        old = _read_config_yaml(path)
    except yaml.YAMLError:
        return  # not written by LazyConfig.save: nothing reliable to compare
    new = _serialised(cfg)
    if not new:
        return
    diffs = [k for s in COMPARED_SECTIONS for k in differing_keys(_section(old, s), _section(new, s), s)]
    if diffs:
        shown = ", ".join(diffs[:8]) + (f" and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        raise ResumeMismatchError(
            f"--resume: {output_dir} holds a run of another model or training data ({path} differs in {shown}). "
            f"Resuming would continue that run. Use another train.output_dir, or drop --resume to start afresh "
            f"there."
        )


@contextlib.contextmanager
def keep_training_config(output_dir: str, active: bool = True) -> Iterator[None]:
    """While active, a ``config.yaml`` that ``output_dir`` already holds survives the block: the one the block
    writes is moved to :data:`EVAL_ONLY_CONFIG` and the original is written back (call it on the process that
    writes, the main one), also when the block raises (the exception then propagates unchanged)."""
    path = os.path.join(output_dir or ".", "config.yaml")
    original = None
    if active and os.path.isfile(path):
        with open(path, "rb") as f:
            original = f.read()
    try:
        yield
    finally:
        if original is not None:
            if os.path.isfile(path):
                os.replace(path, os.path.join(os.path.dirname(path), EVAL_ONLY_CONFIG))
            with open(path + ".tmp", "wb") as f:
                f.write(original)
            os.replace(path + ".tmp", path)


def optimizer_settings(optimizer) -> List[Dict[str, float]]:
    """Base lr and weight decay of each parameter group, as the config built them (take it before a resume
    loads the saved optimizer state)."""
    return [{"lr": float(g["lr"]), "weight_decay": float(g.get("weight_decay", 0.0))} for g in optimizer.param_groups]


def reapply_optimizer_settings(optimizer, settings: Sequence[Dict[str, float]]) -> List[str]:
    """After a resume: make the config's base lr (``initial_lr``, what the lr schedule multiplies) and weight
    decay those of each parameter group again; returns what changed, e.g. ``["group 0: lr 0.0001 -> 0.0002"]``
    (nothing when the number of groups differs: another model, which the resume check refuses anyway)."""
    if len(settings) != len(optimizer.param_groups):
        return []
    changed = []
    for i, (group, wanted) in enumerate(zip(optimizer.param_groups, settings)):
        base = float(group.get("initial_lr", group["lr"]))
        if base != wanted["lr"]:
            changed.append(f"group {i}: lr {base:g} -> {wanted['lr']:g}")
            group["initial_lr"] = wanted["lr"]
        decay = float(group.get("weight_decay", 0.0))
        if decay != wanted["weight_decay"]:
            changed.append(f"group {i}: weight_decay {decay:g} -> {wanted['weight_decay']:g}")
            group["weight_decay"] = wanted["weight_decay"]
    return changed
