"""Start-up checks of the counts a training run is made of, and of the folder it writes to: whole numbers,
and at least 1 where 0 or less cannot work (detectron2 would divide by them, or loop zero times and still
write a ``model_final.pth``).

The override type check (:mod:`.config_checks`) accepts any number where the config has a number, since
a float key may be written ``0`` in a config; these keys must be integers, so ``train.max_iter=1e3`` (a
float) is refused here, naming the key, rather than failing inside detectron2's training loop.
"""
import os
import tempfile
from typing import Dict, Optional, Tuple

from .config_checks import config_value

__all__ = ["COUNT_KEYS", "check_counts", "check_output_dir"]

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


def check_output_dir(output_dir) -> None:
    """``train.output_dir`` must be a folder path this process can create and write in; raise ``ValueError``
    (not a path) or ``OSError`` naming the key otherwise, before anything is logged there."""
    if not isinstance(output_dir, str) or not output_dir.strip():
        raise ValueError(f"Config key 'train.output_dir' must be a folder path, got {output_dir!r}.")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise NotADirectoryError(f"train.output_dir={output_dir} is a file, not a folder: choose another "
                                 "train.output_dir.")
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as e:
        raise type(e)(e.errno, f"train.output_dir={output_dir}: cannot write there ({e.strerror}); choose "
                      "another train.output_dir") from None
