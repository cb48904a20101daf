"""Whether a file or folder can be written where the user asked for it: checked before a tool does its work, so
that a file in the way or a folder without write permission ends it with one line naming the path, not with a
traceback after the work.

The checks create nothing: a missing folder is judged by the nearest folder on its way that exists (the one it
would be made in).
"""
import os
import tempfile
from typing import Optional

from .user_errors import UserOSError

__all__ = ["file_problem", "folder_problem", "make_folder", "nearest_existing", "write_refused"]


def nearest_existing(path: str) -> str:
    """``path`` (made absolute) or its nearest parent that exists (as a file, folder or link)."""
    path = os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def write_refused(folder: str) -> Optional[str]:
    """Why a file cannot be created in the existing ``folder`` (``strerror``: no permission, a read-only
    file system, an immutable folder), or None; an unnamed temporary file is made and removed to find out."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def folder_problem(folder) -> Optional[str]:
    """Why files cannot be written in ``folder`` (made with its parents when missing), as words that follow
    its name: ``is a file, not a folder``, ``is not writable (Permission denied)``, ``cannot be made: /a/b
    is a file, not a folder``, ...; None when they can. Creates nothing."""
    target = os.path.abspath(folder)
    existing = nearest_existing(target)
    if not os.path.isdir(existing):
        what = "a file, not a folder" if os.path.isfile(existing) else "not a folder"
        return f"is {what}" if existing == target else f"cannot be made: {existing} is {what}"
    refused = write_refused(existing)
    if refused is None:
        return None
    return f"is not writable ({refused})" if existing == target else \
        f"cannot be made: {existing} is not writable ({refused})"


def file_problem(path) -> Optional[str]:
    """Why the file ``path`` cannot be written (its folder made when missing), as words that follow its name:
    ``is a folder, not a file``, ``is not writable`` (an existing file), ``cannot be written: /a is a file, not
    a folder``, ``cannot be written: /ro is not writable (Permission denied)``, ...; None when it can. Creates
    nothing."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return "is a folder, not a file"
    if os.path.isfile(path) and not os.access(path, os.W_OK):
        return "is not writable"
    folder = os.path.dirname(os.path.abspath(path))
    problem = folder_problem(folder)
    return None if problem is None else f"cannot be written: {folder} {problem}"


def make_folder(folder, subject: str, fix: str) -> None:
    """``os.makedirs(folder, exist_ok=True)`` for a folder files will be written in; raise
    :class:`~siamese_detr.utils.user_errors.UserOSError` ``"{subject} {folder} {problem}; {fix}"`` when it
    cannot be made or written in (:func:`folder_problem`), e.g. ``subject="the split folder"``,
    ``fix="set $DETECTRON2_DATASETS to a folder you can write to"``."""
    problem = folder_problem(folder)
    if problem is None:
        try:
            os.makedirs(folder, exist_ok=True)
            return
        except OSError as e:  # made meanwhile as a file, or what the check cannot see
            problem = f"cannot be made ({e.strerror or e})"
    raise UserOSError(f"{subject} {folder} {problem}; {fix}")
