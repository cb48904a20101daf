"""Plain-text ``log.txt``: no ANSI colour codes in log files.

Detectron2 colours some messages themselves, not only the console prefix: the config printed by
``default_setup`` (pygments highlighting) and the class histogram of the dataset (``termcolor``). Its file
handlers write those escape sequences into ``log.txt``. :func:`setup_plain_file_logs` creates detectron2's
loggers (``detectron2``, ``fvcore``) before ``default_setup`` does (``setup_logger`` is cached, so
``default_setup`` then reuses them) and makes their file handlers strip ANSI sequences, and so does a console
handler whose stdout / stderr is redirected to a file or a pipe; a terminal keeps its colours.

The project's own loggers (``siamese_detr.*``: dataset checks, mappers, proposal stores) get the same
console and ``log.txt`` handlers as detectron2's; records they emit before the logs exist (while the
command-line overrides are applied) are held by :func:`held_records` and replayed once they do.

A record carrying the traceback of a user error (detectron2's training loop logs "Exception during training:"
with it before re-raising) goes to ``log.txt`` only, not to the terminal (:class:`UserErrorTracebackFilter`):
the tool prints such an error as one line (:mod:`.user_error_exit`).
"""
import contextlib
import logging
import os
import re
from typing import Iterator, List, Optional

from detectron2.utils.logger import setup_logger

from ..utils.user_errors import UserError

__all__ = ["ANSI_ESCAPE", "PROJECT_LOGGER", "PlainFormatter", "UserErrorTracebackFilter", "active_log_file",
           "held_records", "keep_user_error_tracebacks_off_the_terminal", "make_file_handlers_plain",
           "replay_records", "setup_plain_file_logs", "stream_name", "strip_ansi"]

PROJECT_LOGGER = "siamese_detr"  # parent of every module logger of the package (logging.getLogger(__name__))
_LOGGERS = ("detectron2", "fvcore", PROJECT_LOGGER)

_active_log_file: Optional[str] = None  # the log file of this process's run, once set up


def active_log_file() -> Optional[str]:
    """The log file of the last :func:`setup_plain_file_logs` of this process (``output_dir/log.txt``,
    ``log.txt.rank{i}`` for rank i > 0, as detectron2 names them), or None before it."""
    return _active_log_file


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


def stream_name(handler: logging.Handler):
    """The ``name`` of the stream a handler writes to (a path for detectron2's ``log.txt`` handlers, which are
    stream handlers on the file they opened; ``<stdout>`` for the console), or None."""
    return getattr(getattr(handler, "stream", None), "name", None)


def _opened_a_file(handler: logging.Handler) -> bool:
    """A handler writing to a file it opened (``log.txt``), not to stdout / stderr (even redirected to a file)."""
    if isinstance(handler, logging.FileHandler):
        return True
    name = stream_name(handler)
    return isinstance(name, str) and not name.startswith("<") and os.path.isfile(name)


class UserErrorTracebackFilter(logging.Filter):
    """Drops a record that carries the traceback of a :class:`~siamese_detr.utils.user_errors.UserError`."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, UserError)


def keep_user_error_tracebacks_off_the_terminal(names=_LOGGERS) -> None:
    """Add a :class:`UserErrorTracebackFilter` to every handler of the loggers ``names`` that does not write a
    log file (the console). Idempotent."""
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not _opened_a_file(handler) and not any(isinstance(f, UserErrorTracebackFilter)
                                                       for f in handler.filters):
                handler.addFilter(UserErrorTracebackFilter())


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


def make_file_handlers_plain(names=_LOGGERS) -> int:
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
    their file handlers (``output_dir/log.txt``, ``log.txt.rank{i}``) write plain text; the project's loggers
    get the same handlers, and their consoles no user error's traceback. Remembers that file
    (:func:`active_log_file`)."""
    global _active_log_file
    if output_dir:
        log_file = output_dir if output_dir.endswith((".txt", ".log")) else os.path.join(output_dir, "log.txt")
        _active_log_file = log_file + (f".rank{rank}" if rank > 0 else "")
        setup_logger(output_dir, distributed_rank=rank, name="fvcore")
        setup_logger(output_dir, distributed_rank=rank)
        setup_logger(output_dir, distributed_rank=rank, name=PROJECT_LOGGER)
        make_file_handlers_plain()
        keep_user_error_tracebacks_off_the_terminal()


class _Holder(logging.Handler):
    def __init__(self, records: List[logging.LogRecord]):
        super().__init__(logging.INFO)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def replay_records(records: List[logging.LogRecord]) -> None:
    """Hand held ``records`` to their loggers' handlers now (Python's last-resort handler when there is
    none: warnings and errors to stderr)."""
    for record in records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


@contextlib.contextmanager
def held_records(name: str = PROJECT_LOGGER) -> Iterator[List[logging.LogRecord]]:
    """Hold the INFO and higher records of logger ``name`` and its children emitted inside the block (its
    handlers, when it has some already, from an earlier run in this process, get them only on replay);
    yields the list to :func:`replay_records` once the logs are set up. An exception leaving the block
    replays them at once (they may explain it)."""
    logger = logging.getLogger(name)
    records: List[logging.LogRecord] = []
    saved = (list(logger.handlers), logger.level, logger.propagate)
    logger.handlers = [_Holder(records)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield records
    except BaseException:
        _restore(logger, saved)
        replay_records(records)
        records.clear()
        raise
    _restore(logger, saved)


def _restore(logger: logging.Logger, saved) -> None:
    logger.handlers, level, logger.propagate = saved
    logger.setLevel(level)
