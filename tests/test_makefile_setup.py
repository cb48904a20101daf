"""`make setup`'s checks before it creates a virtual environment: the interpreter it needs and the free disk
space, each refused with one line naming the fix (not `/bin/sh: python3.11: not found`, nor pip failing
half-way through a 6 GiB install)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hang_guard import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _check_disk(tmp_path, *variables):
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "check-disk",
                           f"VENV={tmp_path / 'venv'}", *variables],
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def test_a_missing_interpreter_is_named_with_the_fix(tmp_path):
    done = _check_disk(tmp_path, "PYTHON=python3.99-not-here")
    assert done.returncode != 0
    assert ("make setup: no Python interpreter python3.99-not-here (neither a command on the PATH nor an executable "
            "file): install Python 3.11, or give its path: make setup PYTHON=/path/to/python3.11") in done.stderr
    done = _check_disk(tmp_path, f"PYTHON={tmp_path / 'bin' / 'python3.11'}")  # a path that is not there
    assert done.returncode != 0 and f"no Python interpreter {tmp_path / 'bin' / 'python3.11'} (" in done.stderr


def test_too_little_free_space_is_refused_up_front(tmp_path):
    done = _check_disk(tmp_path, f"PYTHON={sys.executable}", "SETUP_FREE_GIB=100000000")
    assert done.returncode != 0
    assert "needs about 6 GiB" in done.stderr and "SETUP_FREE_GIB=N lowers this check" in done.stderr
    assert _check_disk(tmp_path, f"PYTHON={sys.executable}", "SETUP_FREE_GIB=0").returncode == 0
    assert not (tmp_path / "venv").exists()  # a check only
