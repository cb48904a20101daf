"""Plain-text ``log.txt``: no ANSI colour codes in log files.

Detectron2 colours some messages themselves, not only the console prefix: the config printed by
``default_setup`` (pygments highlighting) and the class histogram of the dataset (``termcolor``). Its file
handlers write those escape sequences into ``log.txt``. :func:`setup_plain_file_logs` creates detectron2's
loggers (``detectron2``, ``fvcore``) before ``default_setup`` does (``setup_logger`` is cached, so
``default_setup`` then reuses them) and makes their file handlers strip ANSI sequences, and so does a console
handler whose stdout / stderr is redirected to a file or a pipe; a terminal keeps its colours.
"""
import logging
import re

from detectron2.utils.logger import setup_logger

__all__ = ["ANSI_ESCAPE", "PlainFormatter", "make_file_handlers_plain", "setup_plain_file_logs", "strip_ansi"]

# CSI sequences (colours, cursor moves: ESC [ params final-byte) and two-byte escapes (ESC + one char)
ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences."""
    return ANSI_ESCAPE.sub("", text)


class PlainFormatter(logging.Formatter):
    """Formats with ``inner`` (a handler's formatter), then strips ANSI escape sequences."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return strip_ansi(self.inner.format(record))


def _writes_to_file(handler: logging.Handler) -> bool:
    """A file handler, or a stream handler whose stream is not a terminal (also stdout / stderr redirected
    to a file or a pipe, as ``make demo`` does into each step's ``demo.log``)."""
    if isinstance(handler, logging.FileHandler):
        return True
    stream = getattr(handler, "stream", None)
    if stream is None:
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return not (isatty and isatty())
    except ValueError:  # closed stream
        return False


def make_file_handlers_plain(names=("detectron2", "fvcore")) -> int:
    """Wrap the formatter of every file handler of the loggers ``names`` in :class:`PlainFormatter`.
    Idempotent; returns the number of handlers wrapped now."""
    wrapped = 0
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if _writes_to_file(handler) and not isinstance(handler.formatter, PlainFormatter):
                handler.setFormatter(PlainFormatter(handler.formatter or logging.Formatter()))
                wrapped += 1
    return wrapped


def setup_plain_file_logs(output_dir: str, rank: int) -> None:
    """Create detectron2's loggers exactly as ``default_setup(cfg, args)`` does (same cached calls) and make
    their file handlers (``output_dir/log.txt``, ``log.txt.rank{i}``) write plain text."""
    if output_dir:
        setup_logger(output_dir, distributed_rank=rank, name="fvcore")
        setup_logger(output_dir, distributed_rank=rank)
        make_file_handlers_plain()
