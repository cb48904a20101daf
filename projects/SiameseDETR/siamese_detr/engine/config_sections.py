"""Start-up checks that a config file is a training config of this project and that its batch splits over
the processes of the run.

* :func:`load_config`: ``LazyConfig.load`` with a syntax error in the file (or in a config it imports) as one
  line ``FILE:LINE: MESSAGE`` (detectron2's said ``File "<unknown>", line 2`` after a 35-line traceback);
* :func:`check_config_sections`: ``--config-file`` pointing at another python file (a tool, a config
  fragment under ``configs/common``) loads fine and failed later with omegaconf's ``Missing key train``;
  refused here, naming the file and what it lacks.
* :func:`check_batch_split`: ``--num-gpus 3`` with ``dataloader.train.total_batch_size=4`` failed in
  detectron2 with an assertion that names no key.
"""
import re
from typing import List

from detectron2.config import LazyConfig
from omegaconf import DictConfig

from .config_checks import config_value
from ..utils.user_errors import UserValueError

__all__ = ["EVAL_SECTIONS", "TRAIN_SECTIONS", "check_batch_split", "check_config_sections", "load_config",
           "syntax_error_line"]

EVAL_SECTIONS = ("model", "dataloader", "train")  # what --eval-only reads
TRAIN_SECTIONS = EVAL_SECTIONS + ("optimizer", "lr_multiplier")  # and what training reads besides


# detectron2's message for a config (or a config it imports) that does not parse; the parser's error is its cause
_SYNTAX_ERROR_FILE = re.compile(r"^Config file (.+) has syntax error!$")


def syntax_error_line(error: SyntaxError, config_file: str) -> str:
    """``FILE:LINE: MESSAGE: CODE`` for a ``SyntaxError`` from ``LazyConfig.load(config_file)``: the file
    detectron2 names (the config or one it imports), else the error's own file, else ``config_file``."""
    cause = error.__cause__ if isinstance(error.__cause__, SyntaxError) else error
    named = _SYNTAX_ERROR_FILE.match(str(error.msg or ""))
    filename = named.group(1) if named else cause.filename
    if not filename or filename.startswith("<"):
        filename = config_file
    code = f": {cause.text.strip()}" if cause.text and cause.text.strip() else ""
    return f"{filename}:{cause.lineno}: {cause.msg}{code}"


def load_config(config_file: str):
    """``LazyConfig.load(config_file)``; a syntax error raises ``ValueError`` (:class:`UserValueError`) with the
    one line of :func:`syntax_error_line`."""
    try:
        return LazyConfig.load(config_file)
    except SyntaxError as e:
        raise UserValueError(syntax_error_line(e, config_file)) from e


def check_config_sections(cfg, config_file: str, eval_only: bool = False) -> None:
    """Raise ``ValueError`` naming ``config_file`` and the top-level sections it lacks.

    ``cfg`` is what ``LazyConfig.load(config_file)`` returned; a training config defines
    :data:`TRAIN_SECTIONS`, an evaluation needs :data:`EVAL_SECTIONS`.
    """
    needed = EVAL_SECTIONS if eval_only else TRAIN_SECTIONS
    missing: List[str] = [name for name in needed if not isinstance(cfg.get(name, None), DictConfig)]
    if missing:
        found = ", ".join(sorted(str(k) for k in cfg.keys())) or "nothing"
        raise UserValueError(
            f"{config_file} is not a training config of this project: it defines no {', '.join(missing)} "
            f"(it defines {found}). Give a config under configs/ that sets {', '.join(needed)}, e.g. "
            "configs/demo/detr_demo.py (configs/common/ holds parts that configs import, not configs to run)."
        )


def check_batch_split(cfg, world_size: int) -> None:
    """Raise ``ValueError`` naming ``dataloader.train.total_batch_size`` when it does not split evenly over
    ``world_size`` processes (``--num-gpus``)."""
    total = config_value(cfg, "dataloader.train.total_batch_size", None)
    if isinstance(total, int) and not isinstance(total, bool) and world_size > 1 and total % world_size:
        lower, upper = total // world_size * world_size, -(-total // world_size) * world_size
        choices = " or ".join(str(v) for v in (lower, upper) if v > 0)
        raise UserValueError(
            f"dataloader.train.total_batch_size={total} images per iteration do not split over {world_size} "
            f"processes (--num-gpus {world_size}): set dataloader.train.total_batch_size={choices}, or another "
            "--num-gpus that divides it."
        )
