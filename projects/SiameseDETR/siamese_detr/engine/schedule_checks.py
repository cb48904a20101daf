"""Start-up checks of the counts a training run is made of, and of the folder it writes to: whole numbers,
and at least 1 where 0 or less cannot work (detectron2 would divide by them, or loop zero times and still
write a ``model_final.pth``).

The override type check (:mod:`.config_checks`) accepts any number where the config has a number, since
a float key may be written ``0`` in a config; these keys must be integers, so ``train.max_iter=1e3`` (a
float) is refused here, naming the key, rather than failing inside detectron2's training loop. The learning
rate must be above 0 and the weight decay at least 0 (:func:`check_rates`), and a step schedule's milestones must
be increasing, inside its ``num_updates`` and one fewer than its values (:func:`check_milestones`; fvcore's
``ValueError`` named no key).
"""
import math
import os
import tempfile
from typing import Dict, List, Optional, Tuple

from omegaconf import DictConfig, ListConfig

from .config_checks import config_value
from ..utils.user_errors import UserOSError, UserValueError

__all__ = ["COUNT_KEYS", "EVAL_COUNT_KEYS", "RATE_KEYS", "check_counts", "check_milestones", "check_output_dir",
           "check_rates", "describe_lr_schedule", "lr_drop_iterations"]

_MISSING = object()

# key -> (smallest value allowed or None, what it means); train.eval_period <= 0 switches evaluation off; None
# (where the config allows it) is not checked: max_to_keep=None keeps every periodic checkpoint
COUNT_KEYS: Dict[str, Tuple[Optional[int], str]] = {
    "train.max_iter": (1, "iterations to train"),
    "train.checkpointer.period": (1, "iterations between checkpoints"),
    "train.checkpointer.max_to_keep": (1, "periodic checkpoints kept"),
    "train.log_period": (1, "iterations between log lines"),
    "train.eval_period": (None, "iterations between evaluations (<= 0: none)"),
    "train.seed": (None, "the random seed; < 0: a random one per run"),
    "dataloader.train.total_batch_size": (1, "images per iteration, over all processes"),
    "dataloader.train.num_workers": (0, "data-loading processes per training process; 0: none"),
    "dataloader.test.num_workers": (0, "data-loading processes per evaluating process; 0: none"),
    "model.num_queries": (1, "object queries"),
    "model.num_classes": (1, "object classes"),
}

# the keys of COUNT_KEYS that an --eval-only run reads (the others only drive training)
EVAL_COUNT_KEYS = ("train.seed", "dataloader.test.num_workers", "model.num_queries", "model.num_classes")

SEED_KEY = "train.seed"
_SEED_END = 2**32  # numpy's seeds are below 2**32; process i seeds with train.seed + i (detectron2's default_setup)


def _whole_number(key: str, value, meaning: str) -> None:
    """Raise ``ValueError`` naming ``key`` when ``value`` is not an int (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int):
        hint = f" (write {int(value)}, not {value!r})" if isinstance(value, float) and value.is_integer() else ""
        raise UserValueError(f"Config key '{key}' ({meaning}) must be a whole number, got {value!r}{hint}.")


def check_counts(cfg, world_size: int = 1, eval_only: bool = False) -> None:
    """Raise ``ValueError`` naming the first key of :data:`COUNT_KEYS` (present in ``cfg``) that is not a
    whole number at or above its minimum, or a seed that ``world_size`` processes cannot all use. With
    ``eval_only``, only the keys an evaluation reads (:data:`EVAL_COUNT_KEYS`): ``train.max_iter=0`` is no
    mistake there."""
    for key, (minimum, meaning) in COUNT_KEYS.items():
        if eval_only and key not in EVAL_COUNT_KEYS:
            continue
        value = config_value(cfg, key, _MISSING)
        if value is _MISSING or value is None:
            continue
        _whole_number(key, value, meaning)
        if minimum is not None and value < minimum:
            raise UserValueError(f"Config key '{key}' ({meaning}) must be at least {minimum}, got {value}.")
    seed = config_value(cfg, SEED_KEY, None)
    if isinstance(seed, int) and seed + world_size > _SEED_END:
        each = f", and each of the {world_size} processes seeds with {SEED_KEY} + its rank" if world_size > 1 else ""
        raise UserValueError(f"Config key '{SEED_KEY}' must be below {_SEED_END - world_size + 1} (numpy's seeds are "
                             f"below 2**32{each}), or negative for a random seed; got {seed}.")


# key -> (lowest value allowed, whether it is allowed itself, what it means)
RATE_KEYS: Dict[str, Tuple[float, bool, str]] = {
    "optimizer.lr": (0.0, False, "the base learning rate"),
    "optimizer.weight_decay": (0.0, True, "the weight decay"),
}


def check_rates(cfg) -> None:
    """Raise ``ValueError`` naming the first key of :data:`RATE_KEYS` that is not a finite number in its range
    (``optimizer.lr=-1`` failed inside torch's optimizer, naming no key)."""
    for key, (lowest, inclusive, meaning) in RATE_KEYS.items():
        value = config_value(cfg, key, _MISSING)
        if value is _MISSING or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # absent, or a value of another kind: the override type check names that
        if not math.isfinite(value) or value < lowest or (value == lowest and not inclusive):
            bound = f"at least {lowest:g}" if inclusive else f"above {lowest:g}"
            raise UserValueError(f"Config key '{key}' ({meaning}) must be a finite number {bound}, got {value!r}.")


def _milestones_node(cfg):
    """(dotted key, node) of the step schedule of ``lr_multiplier`` (itself, or the ``scheduler`` a warm-up
    wraps) that has ``milestones``; (None, None) for a schedule without them."""
    for key in ("lr_multiplier", "lr_multiplier.scheduler"):
        node = config_value(cfg, key, None)
        if isinstance(node, DictConfig) and "milestones" in node:
            return key, node
    return None, None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_milestones(cfg) -> None:
    """Raise ``ValueError`` naming the key when the milestones of a step schedule (``lr_multiplier.milestones``
    or ``lr_multiplier.scheduler.milestones``: fvcore's ``MultiStepParamScheduler``, whose ``ValueError`` named
    no key) are not strictly increasing numbers in ``1 .. num_updates - 1``, or its ``values`` have not one
    entry more than them. Without ``num_updates``, the last milestone is the schedule's end (fvcore's rule)."""
    key, node = _milestones_node(cfg)
    if node is None:
        return
    milestones, values = config_value(cfg, f"{key}.milestones", None), config_value(cfg, f"{key}.values", None)
    num_updates = config_value(cfg, f"{key}.num_updates", None)
    if not isinstance(milestones, ListConfig) or not isinstance(values, ListConfig) or not milestones:
        return  # null (fvcore spreads the drops evenly), or another kind: the override type check names that
    milestones, values = list(milestones), list(values)
    if not all(_is_number(m) for m in milestones + [num_updates if num_updates is not None else 1]):
        raise UserValueError(f"Config key '{key}.milestones' must be a list of numbers of updates, got {milestones}"
                             + (f" ({key}.num_updates={num_updates!r})." if num_updates is not None else "."))
    drops, end = (milestones, num_updates) if num_updates is not None else (milestones[:-1], milestones[-1])
    if any(b <= a for a, b in zip([0] + drops, drops + [end])):
        length = (f"{key}.num_updates={num_updates}" if num_updates is not None
                  else f"the last milestone, {end}, ends the schedule without {key}.num_updates")
        raise UserValueError(
            f"Config key '{key}.milestones' must be strictly increasing numbers between 1 and {end - 1} "
            f"({length}: the schedule's length in updates, spread over train.max_iter), got {milestones}.")
    if len(values) != len(drops) + 1:
        raise UserValueError(
            f"Config key '{key}.values' must have one entry more than the drops of {key}.milestones (the "
            f"multiplier before the first drop, then the one after each), got {len(values)} values for "
            f"{len(drops)} drops: also set {key}.values (e.g. "
            f"{key}.values=[{','.join(f'{0.1 ** i:g}' for i in range(len(drops) + 1))}]).")


def check_output_dir(output_dir) -> None:
    """``train.output_dir`` must be a folder path this process can create and write in; raise ``ValueError``
    (not a path) or ``OSError`` (:class:`UserOSError`) naming the key otherwise, before anything is logged there."""
    if not isinstance(output_dir, str) or not output_dir.strip():
        raise UserValueError(f"Config key 'train.output_dir' must be a folder path, got {output_dir!r}.")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserOSError(f"train.output_dir={output_dir} is a file, not a folder: choose another "
                          "train.output_dir.")
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as e:
        raise UserOSError(f"train.output_dir={output_dir}: cannot write there ({e.strerror}); choose "
                          "another train.output_dir") from None


def lr_drop_iterations(multiplier, max_iter: int, min_drop: float = 0.1) -> List[Tuple[int, float]]:
    """``[(iteration, multiplier)]``: the 0-based iterations at which the lr multiplier falls by more than
    ``min_drop`` of its value at the iteration before, with the new value, and is flat on at least one side
    of that fall, as a step schedule is (a warm-up's rise and a smooth decay are not listed: a cosine to 0
    falls by more than ``min_drop`` per iteration in its last few percent, and is flat nowhere).

    ``multiplier`` is an fvcore ``ParamScheduler`` as detectron2's ``LRMultiplier`` uses it: iteration ``i``
    trains at ``multiplier(i / max_iter)`` (the milestones of a ``MultiStepParamScheduler`` count in units of
    its ``num_updates``, spread over ``max_iter``). Long runs are sampled on a grid of about 4096 points and
    each fall is located by bisection (exact for step schedules, which do not rise between their drops).
    """
    def value(i):
        return float(multiplier(i / max_iter))

    def falls(before, after):
        return after < before * (1.0 - min_drop)

    def flat_beside(i):  # the value is constant just before the fall at i, or just after it
        return (i >= 2 and value(i - 2) == value(i - 1)) or (i + 1 < max_iter and value(i + 1) == value(i))

    drops = []
    step = max(1, max_iter // 4096)
    grid = list(range(0, max_iter, step))
    if grid[-1] != max_iter - 1:
        grid.append(max_iter - 1)
    previous = value(0)
    for lo, hi in zip(grid, grid[1:]):
        end = value(hi)
        while falls(previous, end):  # a fall in (lo, hi]: the first iteration below the threshold
            a, b = lo, hi
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (a, mid) if falls(previous, value(mid)) else (mid, b)
            lo, previous = b, value(b)
            if flat_beside(b):
                drops.append((b, previous))
        previous = end
    return drops


def _num_updates(cfg):
    for key in ("lr_multiplier.num_updates", "lr_multiplier.scheduler.num_updates"):
        value = config_value(cfg, key, None)  # None: absent (OmegaConf.select) or unreadable
        if value is not None:
            return key, value
    return None, None


def describe_lr_schedule(cfg, multiplier) -> Tuple[str, bool]:
    """One line saying at which iterations of ``train.max_iter`` the lr drops (``multiplier``: the instantiated
    ``cfg.lr_multiplier``), and whether it deserves a warning: ``lr_multiplier...num_updates`` differs from
    ``train.max_iter``, so milestones written in iterations land elsewhere (a shortened ``train.max_iter``
    alone keeps each drop at the same fraction of the run, as the README says)."""
    max_iter = int(cfg.train.max_iter)
    drops = lr_drop_iterations(multiplier, max_iter)
    text = ("learning rate: " + ", ".join(f"x{v:g} from iteration {i}" for i, v in drops) if drops
            else "learning rate: no step drop")
    text += f" (of train.max_iter={max_iter})"
    key, num_updates = _num_updates(cfg)
    differs = isinstance(num_updates, int) and num_updates != max_iter
    if differs:
        text += (f"; {key}={num_updates} differs from train.max_iter, so its milestones are scaled by "
                 f"{max_iter}/{num_updates}: to place them in iterations, also set {key}={max_iter}")
    return text, differs
