"""Multi-process launch that also works without GPUs (gloo on CPU).

detectron2's ``launch`` (v0.6) asserts CUDA and always uses NCCL. With GPUs we delegate to it
unchanged; without GPUs we spawn ``num_processes`` CPU workers that join a gloo process group
and set up detectron2's local process group, so ``detectron2.utils.comm`` works as usual.

With several processes, a user error (:class:`UserError`: a wrong key, value or file) in one of them is
printed there as one line and ends it with exit status 2; the launcher then raises a :class:`UserError` that
says so, in place of torch's traceback of the worker.

A CPU worker ends when its launcher dies (kill -9, out of memory): otherwise it would train on, re-parented,
writing checkpoints and ``metrics.json`` into the run's folder while the ``--resume`` that the README
recommends after a kill starts a second run there.
"""
import contextlib
import gc
import glob
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm

from ..utils.parent_watch import exit_with_parent
from ..utils.user_errors import USER_ERROR_EXIT, UserError, UserValueError
from .user_error_exit import user_errors_exit

# detectron2 v0.6 (through fvcore.nn) scripts functions with torch.jit when imported, and recent torch warns on
# each; silenced for this import only (the tools filter it too, but `python -m siamese_detr.engine...` commands
# import the package, and so this module, before any line of theirs runs)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")
    from detectron2.engine import launch as d2_launch

DEFAULT_TIMEOUT = timedelta(minutes=30)
_RENDEZVOUS_PREFIX = "siamese_detr_dist_"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_rendezvous(folder: "str | None" = None) -> list:
    """Delete the rendezvous folders (``siamese_detr_dist_<launcher pid>_*`` in ``folder``, default the
    temporary folder) whose launcher is gone: one killed with SIGKILL cannot remove its own. Returns the
    folders removed."""
    removed = []
    for path in glob.glob(os.path.join(folder or tempfile.gettempdir(), _RENDEZVOUS_PREFIX + "*")):
        match = re.match(rf"{_RENDEZVOUS_PREFIX}(\d+)_", os.path.basename(path))
        if match and os.path.isdir(path) and not _pid_alive(int(match[1])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def launch(main_func, num_processes, num_machines=1, machine_rank=0, dist_url=None, args=(),
           timeout=DEFAULT_TIMEOUT):
    """Run ``main_func(*args)`` in ``num_processes`` processes per machine.

    With one process in all, ``main_func`` runs in this process and its result is returned; otherwise None.

    Args:
        num_processes: processes per machine (GPUs per machine when CUDA is available).
        dist_url: ``tcp://host:port``, ``file://...`` or ``"auto"``. Without GPUs on one machine, "auto"
            and local ``tcp://127.0.0.1:...`` URLs (detectron2's default) use a temporary file instead.
    Other arguments as :func:`detectron2.engine.launch`.
    """
    world_size = num_machines * num_processes
    if world_size <= 1:
        return main_func(*args)
    try:
        return _launch_processes(ReportUserErrors(main_func), num_processes, num_machines, machine_rank,
                                 dist_url, args, timeout)
    except mp.ProcessExitedException as e:
        if e.exit_code != USER_ERROR_EXIT:
            raise
        raise UserError(f"process {e.error_index} of the {world_size} stopped on the error printed above "
                        f"(exit status {USER_ERROR_EXIT})") from None


class ReportUserErrors:
    """``main_func`` of a launched process: a :class:`UserError` in it is printed as one line prefixed with
    the process's rank and ends the process with status 2 (:func:`user_errors_exit`). Picklable."""

    def __init__(self, main_func):
        self.main_func = main_func

    def __call__(self, *args):
        with user_errors_exit(f"[rank {comm.get_rank()}] {os.path.basename(sys.argv[0]) or 'python'}"):
            return self.main_func(*args)


def _launch_processes(main_func, num_processes, num_machines, machine_rank, dist_url, args, timeout):
    """Start ``num_machines * num_processes`` processes (world size > 1): detectron2's launch with CUDA,
    CPU workers over gloo otherwise."""
    if torch.cuda.is_available():
        return d2_launch(main_func, num_processes, num_machines=num_machines, machine_rank=machine_rank,
                         dist_url=dist_url, args=args, timeout=timeout)
    world_size = num_machines * num_processes
    if dist_url in (None, "auto") or (num_machines == 1 and str(dist_url).startswith("tcp://127.0.0.1")):
        if num_machines != 1:
            raise UserValueError("dist_url='auto' only works on one machine; pass --dist-url tcp://HOST:PORT")
        # one machine: rendezvous through a fresh file rather than a TCP store, whose server lives in
        # rank 0 and can vanish while another rank is still tearing its process group down
        remove_stale_rendezvous()
        with tempfile.TemporaryDirectory(prefix=f"{_RENDEZVOUS_PREFIX}{os.getpid()}_") as tmp:
            _spawn(main_func, num_processes, world_size, machine_rank, f"file://{tmp}/rendezvous", args, timeout)
        return
    _spawn(main_func, num_processes, world_size, machine_rank, dist_url, args, timeout)


def _spawn(main_func, num_processes, world_size, machine_rank, dist_url, args, timeout):
    """``mp.spawn`` of the CPU workers, less the ``pytorch-errorfile-*.pickle`` it leaves in the temporary
    folder for each worker that raised (it reads the failed one's traceback from it, then keeps it)."""
    workers = mp.spawn(_cpu_worker, nprocs=num_processes, daemon=False, join=False,
                       args=(main_func, world_size, num_processes, machine_rank, dist_url, args, timeout,
                             os.getpid()))
    try:
        while not workers.join():
            pass
    finally:
        for path in workers.error_files:
            with contextlib.suppress(FileNotFoundError):  # the workers that did not raise wrote none
                os.remove(path)


def _cpu_worker(local_rank, main_func, world_size, num_processes, machine_rank, dist_url, args, timeout,
                parent_pid):
    exit_with_parent(parent_pid)
    global_rank = machine_rank * num_processes + local_rank
    try:
        dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=global_rank,
                                timeout=timeout)
    except Exception:
        logging.getLogger(__name__).error(f"Could not join the gloo process group at {dist_url}")
        raise
    num_machines = world_size // num_processes
    for i in range(num_machines):
        group = dist.new_group(list(range(i * num_processes, (i + 1) * num_processes)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    main_func(*args)
    # every rank must be done with every group (detectron2's comm keeps its own gloo group) before any
    # rank tears them down; tearing down early aborts the other ranks
    comm.synchronize()
    dist.destroy_process_group()
    release_process_groups()


def release_process_groups():
    """Drops the references detectron2's ``comm`` keeps to process groups (its local group, its cached
    global gloo group), so that they are freed now, after ``destroy_process_group``, and not during the
    interpreter's shutdown, where freeing gloo state can abort the process ("terminate called without an
    active exception", SIGABRT, seen once in a 2-process test on a 2-core machine)."""
    if hasattr(comm, "_LOCAL_PROCESS_GROUP"):
        comm._LOCAL_PROCESS_GROUP = None
    cached = getattr(comm, "_get_global_gloo_group", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()
    gc.collect()
