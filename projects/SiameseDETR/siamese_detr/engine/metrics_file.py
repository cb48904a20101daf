"""``metrics.json`` that stays one JSON object per line after a kill.

Detectron2's ``JSONWriter`` appends one line per logged iteration and flushes after each write, so a kill
can at worst leave the last line cut short. A resumed run appends to the same file: without care its first
line would be glued to the torn one, making two records unreadable. :func:`terminate_torn_line` ends a torn
last line with a newline before the writers open the file, so the torn line stays alone (readers such as
``tools/plot_metrics.py`` skip it with a warning) and every new line is whole.
"""
import logging
import os

from detectron2.engine import default_writers

__all__ = ["safe_default_writers", "terminate_torn_line"]

logger = logging.getLogger(__name__)


def terminate_torn_line(path: str) -> bool:
    """Append ``"\\n"`` to ``path`` if it is non-empty and does not end with one; returns whether it did."""
    try:
        with open(path, "rb+") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return False
            f.write(b"\n")
    except FileNotFoundError:
        return False
    logger.warning("%s ended with a torn line (the previous run was killed while writing it); it is kept "
                   "on its own line and skipped by readers", path)
    return True


def safe_default_writers(output_dir: str, max_iter: int):
    """Detectron2's ``default_writers`` after :func:`terminate_torn_line` on ``output_dir/metrics.json``."""
    terminate_torn_line(os.path.join(output_dir, "metrics.json"))
    return default_writers(output_dir, max_iter)
