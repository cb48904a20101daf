"""A user error ends a tool with one line on the terminal, not a traceback (see
:mod:`siamese_detr.utils.user_errors`).

:func:`user_errors_exit` wraps a tool's command line: a :class:`UserError` leaving it prints
``PROG: error: MESSAGE`` to stderr and exits with status 2. Once the run's ``log.txt`` exists
(:func:`~siamese_detr.engine.logging_utils.active_log_file`), the message and its traceback go there as well,
and the terminal line names that file. Other exceptions pass unchanged, with their traceback.
"""
import contextlib
import logging
import os
import sys
from typing import Iterator, Optional

from ..utils.user_errors import TRACEBACK_ENV, USER_ERROR_EXIT, UserError, user_message
from .logging_utils import PROJECT_LOGGER, active_log_file, stream_name

__all__ = ["user_errors_exit", "wants_traceback"]


def wants_traceback() -> bool:
    """``SIAMESE_DETR_TRACEBACK`` set to anything but empty or ``0``: user errors keep their traceback."""
    return os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0")


def _log_file_handler() -> Optional[logging.Handler]:
    """The handler of the project logger that writes this run's log file (detectron2's file handlers are
    stream handlers on the open file), or None."""
    path = active_log_file()
    if path is None:
        return None
    for handler in logging.getLogger(PROJECT_LOGGER).handlers:
        name = stream_name(handler)
        if isinstance(name, str) and os.path.abspath(name) == os.path.abspath(path):
            return handler
    return None


@contextlib.contextmanager
def user_errors_exit(prog: str) -> Iterator[None]:
    """Turn a :class:`UserError` leaving the block into ``PROG: error: MESSAGE`` on stderr and
    ``SystemExit(2)`` (the traceback kept with ``SIAMESE_DETR_TRACEBACK=1``)."""
    try:
        yield
    except UserError as error:
        if wants_traceback():
            raise
        line = f"{prog}: error: {user_message(error)}"
        handler = _log_file_handler()
        if handler is not None:  # the traceback, for a bug report, where the run's log is
            logger = logging.getLogger(PROJECT_LOGGER)
            handler.handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, line, None,
                                             (type(error), error, error.__traceback__)))
            handler.flush()
            line += f" (traceback in {handler.stream.name})"
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_EXIT) from None
