"""End a worker process when the process that started it dies (kill -9, out of memory).

Spawned workers are otherwise re-parented and run on: training workers keep writing into the run's folder,
proposal workers hold their memory forever. Light on imports, so proposal-generation workers can use it.
"""
import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["arm_parent_death_signal", "exit_with_parent"]

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def arm_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``; kept
    across ``exec``, so usable as a ``subprocess`` ``preexec_fn``). Returns whether it is armed (False
    elsewhere than Linux, or if the call fails)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def exit_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """Make this process end when ``parent_pid`` (its launcher) ends.

    Linux: the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); elsewhere, or if
    that call fails, a daemon thread polls ``os.getppid()``. A parent already gone ends the process now.
    (``torch.multiprocessing.spawn`` asks for SIGINT instead, which does nothing in a run started with SIGINT
    ignored: ``cmd &`` in a script, ``nohup``; this replaces it.)
    """
    armed = arm_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the launcher died before the signal was armed
        os._exit(1)
    if armed:
        return

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-launcher", daemon=True).start()
