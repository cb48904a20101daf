"""CPU multi-process launch over gloo: detectron2's comm works in every worker."""
import json
import os

import torch

from siamese_detr.engine import launch

from hang_guard import HANG_GUARD_S


def _worker(out_dir):
    from detectron2.utils import comm

    rank = comm.get_rank()
    gathered = comm.all_gather(rank * 10)
    info = {"rank": rank, "world": comm.get_world_size(), "local_rank": comm.get_local_rank(),
            "local_size": comm.get_local_size(), "gathered": gathered}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(info, f)


def test_two_cpu_processes_join_one_gloo_group(tmp_path):
    if torch.cuda.is_available():
        import pytest

        pytest.skip("with CUDA, launch delegates to detectron2's NCCL launcher")
    launch(_worker, 2, dist_url="auto", args=(str(tmp_path),))
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, info in enumerate(infos):
        assert info == {"rank": r, "world": 2, "local_rank": r, "local_size": 2, "gathered": [0, 10]}


LAUNCHER = """
import os, sys, time
from siamese_detr.engine import launch


def work(folder):
    from detectron2.utils import comm

    with open(os.path.join(folder, f"worker{comm.get_rank()}.pid"), "w") as f:
        f.write(str(os.getpid()))
    while True:  # a training that would never end by itself
        time.sleep(0.2)


if __name__ == "__main__":
    launch(work, 2, dist_url="auto", args=(sys.argv[1],))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(")")[-1].split()[0] != "Z"


def kill_and_wait_for(proc, pids, seconds: float = HANG_GUARD_S) -> bool:
    """SIGKILL ``proc``, then whether every one of ``pids`` has ended within ``seconds``."""
    import signal
    import time

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not any(_alive(pid) for pid in pids)


def test_workers_end_when_the_launcher_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import pytest

    if torch.cuda.is_available() or not os.path.isdir("/proc"):
        pytest.skip("CPU workers on Linux")
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)
    # started as `cmd &` from a script (or under nohup) starts it: SIGINT ignored, so torch's own
    # parent-death signal for spawned workers (SIGINT) does nothing
    # (its rendezvous folder in tmp_path: the killed launcher cannot remove it)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)],
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        pids_files = [tmp_path / f"worker{r}.pid" for r in range(2)]
        deadline = time.monotonic() + HANG_GUARD_S
        while not all(p.exists() and p.read_text() for p in pids_files):
            assert proc.poll() is None and time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        pids = [int(p.read_text()) for p in pids_files]
        assert all(_alive(pid) for pid in pids)
        assert kill_and_wait_for(proc, pids)
    finally:
        proc.kill()
        for p in tmp_path.glob("worker*.pid"):
            try:
                os.kill(int(p.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def test_rendezvous_folders_of_dead_launchers_are_removed(tmp_path):
    """A launcher killed with SIGKILL leaves its rendezvous folder; the next launch removes it, not the folder
    of a launcher that still runs, nor other folders."""
    import subprocess
    import sys

    from siamese_detr.engine.launch import remove_stale_rendezvous

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"siamese_detr_dist_{gone.pid}_abc"
    alive = tmp_path / f"siamese_detr_dist_{os.getpid()}_def"
    other = tmp_path / "siamese_detr_dist_notapid"
    for folder in (dead, alive, other):
        folder.mkdir()
        (folder / "rendezvous").write_text("")
    assert remove_stale_rendezvous(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and alive.exists() and other.exists()


def test_process_groups_are_released_after_destroy(tmp_path):
    """After destroy_process_group a worker drops comm's references to its groups (freed before interpreter
    shutdown, where freeing gloo state can abort the process)."""
    import torch.distributed as dist
    from detectron2.utils import comm

    from siamese_detr.engine.launch import release_process_groups

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", world_size=1, rank=0)
    try:
        comm._LOCAL_PROCESS_GROUP = dist.new_group([0])
        assert comm._get_global_gloo_group() is not None
        assert comm._get_global_gloo_group.cache_info().currsize == 1
    finally:
        dist.destroy_process_group()
        release_process_groups()
    assert comm._LOCAL_PROCESS_GROUP is None
    assert comm._get_global_gloo_group.cache_info().currsize == 0


TWO_MACHINE_LAUNCHER = """
import json, os, sys
from siamese_detr.engine import launch


def work(folder):
    from detectron2.utils import comm

    rank = comm.get_rank()
    info = {"rank": rank, "world": comm.get_world_size(), "local_rank": comm.get_local_rank(),
            "local_size": comm.get_local_size(), "gathered": comm.all_gather(rank * 10)}
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    folder, machine_rank, dist_url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    launch(work, 1, num_machines=2, machine_rank=machine_rank, dist_url=dist_url, args=(folder,))
"""


def test_two_machines_of_one_process_each_join_through_the_given_url(tmp_path):
    """``--num-machines 2 --machine-rank R --dist-url file://<shared file>``, one launcher per "machine" (two on
    this host): each worker's global rank is its machine's rank, its local group holds itself alone, and the
    all-gather spans both machines."""
    import subprocess
    import sys

    import pytest

    if torch.cuda.is_available():
        pytest.skip("with CUDA, launch delegates to detectron2's NCCL launcher")
    script = tmp_path / "launcher.py"
    script.write_text(TWO_MACHINE_LAUNCHER)
    url = f"file://{tmp_path}/shared_rendezvous"
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(r), url]) for r in range(2)]
    try:
        assert [p.wait(timeout=HANG_GUARD_S) for p in procs] == [0, 0]
    finally:
        for p in procs:
            p.kill()
    for r in range(2):
        info = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert info == {"rank": r, "world": 2, "local_rank": 0, "local_size": 1, "gathered": [0, 10]}


def test_auto_rendezvous_is_refused_across_machines():
    """A temporary file on one machine cannot be found by another: ``dist_url='auto'`` with several machines
    is refused before any process starts, naming the option to give instead."""
    import pytest

    from siamese_detr.utils.user_errors import UserValueError

    if torch.cuda.is_available():
        pytest.skip("with CUDA, launch delegates to detectron2's NCCL launcher")
    started = []
    with pytest.raises(UserValueError, match=r"only works on one machine; pass --dist-url tcp://HOST:PORT"):
        launch(started.append, 1, num_machines=2, machine_rank=0, dist_url="auto", args=(1,))
    assert started == []
