"""Errors in what a user gave: a config key or value, a command-line override, a file, a flag, a dataset.

Their messages name what is wrong (the key, the file) and the way out. The training tool prints such an
error as one line, ``lazyconfig_train_net.py: error: MESSAGE``, with exit status 2 (as ``argparse`` does for
a wrong flag), and writes the traceback only into the run's ``log.txt`` when that exists
(:mod:`siamese_detr.engine.user_error_exit`). Every other exception keeps its traceback on the terminal: it
is a bug to report, not a mistake to fix. ``SIAMESE_DETR_TRACEBACK=1`` shows the traceback of user errors
too.

Each class also derives from the built-in exception it refines (``ValueError``, ``KeyError``, ...), so code
that catches those keeps working.
"""

import re

__all__ = ["TRACEBACK_ENV", "USER_ERROR_EXIT", "UserError", "UserFileNotFoundError", "UserKeyError", "UserOSError",
           "UserValueError", "user_message"]

TRACEBACK_ENV = "SIAMESE_DETR_TRACEBACK"  # set to 1: user errors keep their traceback on the terminal
USER_ERROR_EXIT = 2  # argparse's exit status for a usage error


class UserError(Exception):
    """Marks an error whose message names the user's mistake and its fix; raised together with a built-in
    class (``class XError(UserError, ValueError)``)."""


class UserValueError(UserError, ValueError):
    """A config value, an override or a file's content the project cannot use."""


class UserKeyError(UserError, KeyError):
    """An unknown config key or dataset name. Unlike ``KeyError``, ``str()`` gives the message unquoted."""

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A file or folder named in the config or on the command line that does not exist."""


class UserOSError(UserError, OSError):
    """A folder or file named in the config or by a command-line flag that cannot be used as one (a file where
    a folder is needed, no write permission); the message names the key or flag and the reason."""


# torch's DataLoader re-raises a worker's exception in the main process as the same class, with the message
# "Caught NAME in DataLoader worker process N.\nOriginal Traceback (most recent call last):\n...\nmodule.NAME: MSG"
_WORKER_WRAPPER = re.compile(r"Caught \w+ (in DataLoader worker process \d+)\.\nOriginal Traceback \(most recent call "
                             r"last\):\n")


def user_message(error: BaseException) -> str:
    """The message of ``error`` as a user reads it: a ``KeyError``'s without the quotes ``str()`` adds, and
    one raised in a DataLoader worker without the worker's traceback that the DataLoader puts into it
    (``MESSAGE (in DataLoader worker process N)``)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and len(error.args) == 1 else str(error)
    wrapped = _WORKER_WRAPPER.match(text)
    if wrapped:
        cls = type(error)
        plain = cls.__module__ in ("builtins", "__main__")  # traceback's rule for the class name it prints
        name = cls.__qualname__ if plain else f"{cls.__module__}.{cls.__qualname__}"
        last = text.rfind(f"\n{name}: ")
        if last >= 0:
            return f"{text[last + len(name) + 3:].rstrip()} ({wrapped.group(1)})"
    return text
