"""``siamese_detr.utils.parent_watch``: the parent-death signal is armed with the signal asked for (read back
from the kernel with ``prctl(PR_GET_PDEATHSIG)``), and a worker whose launcher is alive keeps running while
one whose launcher is already gone exits at once. Each check runs in a child process (arming the signal in
the test process would tie pytest to its own parent)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "projects", "SiameseDETR") + os.pathsep
           + os.environ.get("PYTHONPATH", ""))

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux")


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)


@linux_only
def test_the_parent_death_signal_is_armed_with_the_signal_asked_for():
    """``arm_parent_death_signal(SIGTERM)`` returns True and the kernel then holds SIGTERM (15) as this
    process's parent-death signal; the default is SIGKILL (9)."""
    code = (
        "import ctypes, signal\n"
        "from siamese_detr.utils.parent_watch import arm_parent_death_signal\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def held():\n"
        "    out = ctypes.c_int(-1)\n"
        "    assert libc.prctl(2, ctypes.byref(out), 0, 0, 0) == 0  # PR_GET_PDEATHSIG\n"
        "    return out.value\n"
        "before = held()\n"
        "armed = arm_parent_death_signal(signal.SIGTERM)\n"
        "term = held()\n"
        "default = arm_parent_death_signal()\n"
        "print(before, armed, term, default, held())\n"
    )
    result = _child(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "True", "15", "True", "9"]


def test_a_worker_whose_launcher_lives_keeps_running_one_whose_launcher_is_gone_exits():
    """``exit_with_parent(os.getppid())`` returns and the worker goes on (prints, exit 0); a ``parent_pid``
    that is not its parent (the launcher died before the call) ends the process at once with status 1."""
    alive = _child("import os\nfrom siamese_detr.utils.parent_watch import exit_with_parent\n"
                   "exit_with_parent(os.getppid())\nprint('running')\n")
    assert alive.returncode == 0 and alive.stdout.strip() == "running", alive.stderr
    gone = _child("import os\nfrom siamese_detr.utils.parent_watch import exit_with_parent\n"
                  "exit_with_parent(os.getppid() + 1000003)\nprint('running')\n")
    assert gone.returncode == 1 and gone.stdout == ""
