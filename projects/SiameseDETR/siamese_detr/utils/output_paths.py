"""Checks of the paths the tools write to (``--output``), made before any work, and a checked image write.

A path that cannot be written (a file where a folder is needed, a file on the way to it, a folder that takes
no new file: no permission, a read-only file system, ``chattr +i``) used to fail with ``FileExistsError`` /
``PermissionError`` tracebacks after the model was loaded, or not at all: ``cv2.imwrite`` returns False
rather than raising, so a tool printed "wrote ..." for images that were never written. Each check raises
:class:`~siamese_detr.utils.user_errors.UserOSError` naming the flag, the path and the fix; nothing is
created by the checks (a probe file is made and removed at once).
"""
import os

from .user_errors import UserOSError
from .writable import nearest_existing, write_refused

__all__ = ["check_output_file", "check_output_folder", "write_image"]


def _check_can_be_made(target: str, flag: str, shown: str) -> None:
    """``target`` (a folder, existing or not) can be made and takes a new file; else ``UserOSError`` about
    ``flag shown`` (the path as the user gave it)."""
    existing = nearest_existing(target)
    if not os.path.isdir(existing):
        where = "its parent" if existing == os.path.dirname(os.path.abspath(shown)) else "on its path,"
        raise UserOSError(f"{flag} {shown}: {where} {existing} is a file, not a folder: give a path in a folder")
    refused = write_refused(existing)  # the file system's own answer: root ignores permission bits, not +i
    if refused is not None:
        raise UserOSError(f"{flag} {shown}: cannot write in {existing} ({refused}): give a folder you can write in")


def check_output_folder(path: str, flag: str = "--output") -> None:
    """Raise ``UserOSError`` unless ``path`` is a folder this process can write in, or one it can make (it is
    made by the tool when it writes, not here)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserOSError(f"{flag} {path} is a file, not a folder: give the folder to write in (a new one is "
                          "made)")
    _check_can_be_made(path, flag, path)


def check_output_file(path: str, flag: str = "--output", overwrite: bool = False) -> None:
    """Raise ``UserOSError`` unless ``path`` can be written as a new file: it is a folder, it exists already
    (unless ``overwrite``: the message names ``--overwrite``), or its folder cannot be made or written in."""
    if os.path.isdir(path):
        raise UserOSError(f"{flag} {path} is a folder: give the file to write")
    if os.path.lexists(path) and not overwrite:
        raise UserOSError(f"{flag} {path} exists already: give a new file, or add --overwrite to replace it")
    _check_can_be_made(os.path.dirname(os.path.abspath(path)), flag, path)


def write_image(path: str, image, flag: str = "--output") -> None:
    """``cv2.imwrite(path, image)`` (``image``: uint8 BGR ``[H, W, 3]``; format by ``path``'s extension),
    raising ``UserOSError`` naming ``path`` when no file was written (``imwrite`` returns False where it
    cannot write, e.g. in a folder that became read-only) or OpenCV refused it (``cv2.error``, e.g. an
    extension it has no encoder for)."""
    import cv2

    try:
        written = cv2.imwrite(path, image)
    except cv2.error as err:  # e.g. an extension OpenCV has no encoder for
        raise UserOSError(f"cannot write {path}: {str(err).strip().splitlines()[-1]}") from None
    if not written:
        raise UserOSError(f"cannot write {path} (OpenCV wrote nothing: no permission, a read-only or full disk?): "
                          f"give another {flag}")
