"""Start-up checks of the counts a training run is made of: whole numbers, and at least 1 where 0 or less
cannot work (detectron2 would divide by them, or loop zero times and still write a ``model_final.pth``).

The override type check (:mod:`.config_checks`) accepts any number where the config has a number, since
a float key may be written ``0`` in a config; these keys must be integers, so ``train.max_iter=1e3`` (a
float) is refused here, naming the key, rather than failing inside detectron2's training loop.
"""
from typing import Dict, Optional, Tuple

from .config_checks import config_value

__all__ = ["COUNT_KEYS", "check_counts"]

_MISSING = object()

# key -> (smallest value allowed or None, what it means); train.eval_period <= 0 switches evaluation off
COUNT_KEYS: Dict[str, Tuple[Optional[int], str]] = {
    "train.max_iter": (1, "iterations to train"),
    "train.checkpointer.period": (1, "iterations between checkpoints"),
    "train.log_period": (1, "iterations between log lines"),
    "train.eval_period": (None, "iterations between evaluations (<= 0: none)"),
    "dataloader.train.total_batch_size": (1, "images per iteration, over all processes"),
    "model.num_queries": (1, "object queries"),
}


def check_counts(cfg) -> None:
    """Raise ``ValueError`` naming the first key of :data:`COUNT_KEYS` (present in ``cfg``) that is not a
    whole number at or above its minimum."""
    for key, (minimum, meaning) in COUNT_KEYS.items():
        value = config_value(cfg, key, _MISSING)
        if value is _MISSING or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            hint = f" (write {int(value)}, not {value!r})" if isinstance(value, float) and value.is_integer() else ""
            raise ValueError(f"Config key '{key}' ({meaning}) must be a whole number, got {value!r}{hint}.")
        if minimum is not None and value < minimum:
            raise ValueError(f"Config key '{key}' ({meaning}) must be at least {minimum}, got {value}.")
