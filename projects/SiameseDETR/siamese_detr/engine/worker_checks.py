"""Data-loader workers and the temporary folder: a start-up check.

Data-loader workers (``num_workers > 0``) hand the tensors of each batch to the process that trains as file
descriptors (torch's default ``file_descriptor`` sharing strategy on Linux), through a Unix socket that Python's
multiprocessing opens in a folder it makes in the temporary folder: ``$TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX``.
A Unix socket's path holds at most :data:`SOCKET_PATH_MAX` bytes (``sun_path`` is 108 bytes with its
terminating NUL). With a longer temporary folder a worker cannot open that socket; the error is raised in the
thread that sends the batch, which prints it to the worker's stderr and drops the batch, and the training
process then waits for it for ever: no error, no progress. :func:`check_worker_temp_dir` refuses such a run at
start-up, naming the folder and the two ways out.
"""
import os
import sys
import tempfile
from typing import List, Optional

from ..utils.user_errors import UserOSError
from .config_checks import config_value

__all__ = ["SOCKET_PATH_MAX", "check_worker_temp_dir", "worker_socket_path", "worker_temp_dir_problem"]

SOCKET_PATH_MAX = 107  # bytes of a Unix socket's path (sun_path[108], NUL-terminated)


def worker_socket_path(temp_dir: str) -> str:
    """The longest path multiprocessing gives the socket of a worker that shares tensors, in ``temp_dir``: its
    folder ``pymp-`` + 8 characters (``tempfile.mkdtemp``) and the socket ``listener-`` + 8 characters
    (``tempfile.mktemp``), here with ``X`` for the random characters."""
    return os.path.join(temp_dir, "pymp-" + "X" * 8, "listener-" + "X" * 8)


def worker_temp_dir_problem(temp_dir: str, worker_loaders: List[str], sharing_strategy: str,
                            platform: str = sys.platform, offer_no_workers: bool = True) -> Optional[str]:
    """Why data-loader workers would wait for ever under ``temp_dir``, or None.

    Args:
        temp_dir: the temporary folder (``tempfile.gettempdir()``: ``$TMPDIR``, else ``/tmp``).
        worker_loaders: the config keys of the loaders that use workers (e.g. ``dataloader.train.num_workers``).
        sharing_strategy: ``torch.multiprocessing.get_sharing_strategy()``; ``file_system`` opens no socket.
        offer_no_workers: end with the overrides that turn the workers off (``key=0`` for each of
            ``worker_loaders``); False for a program whose workers are what it measures (a benchmark).
    """
    if not worker_loaders or sharing_strategy != "file_descriptor" or platform == "win32":
        return None
    path = worker_socket_path(temp_dir)
    length = len(os.fsencode(path))
    if length <= SOCKET_PATH_MAX:
        return None
    no_workers = ", or run without workers: " + " ".join(f"{key}=0" for key in worker_loaders)
    return (f"the temporary folder {temp_dir} ({len(os.fsencode(temp_dir))} bytes, from $TMPDIR) is too long for "
            f"data-loader workers: they pass each batch through a Unix socket such as {path} ({length} bytes, "
            f"at most {SOCKET_PATH_MAX}), and with a longer path the run waits for its first batch for ever. Set "
            f"TMPDIR to a shorter folder (e.g. TMPDIR=/tmp){no_workers if offer_no_workers else ''}")


def check_worker_temp_dir(cfg, eval_only: bool = False) -> None:
    """Raise :class:`UserOSError` (see :func:`worker_temp_dir_problem`) when the config's data loaders use
    workers (the test loader's only for ``eval_only``) and the temporary folder is too long for their sockets."""
    import torch.multiprocessing

    sections = ("test",) if eval_only else ("train", "test")
    counts = {key: config_value(cfg, key, None) for key in (f"dataloader.{s}.num_workers" for s in sections)}
    worker_loaders = [key for key, n in counts.items() if isinstance(n, int) and not isinstance(n, bool) and n > 0]
    problem = worker_temp_dir_problem(tempfile.gettempdir(), worker_loaders,
                                      torch.multiprocessing.get_sharing_strategy())
    if problem:
        raise UserOSError(problem)
