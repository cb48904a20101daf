"""`make test` runs the suite on pytest-xdist workers: how many "auto" gives (one per usable CPU, capped for
memory, xdist's own variable still obeyed) and the command the Makefile runs."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import conftest
from hang_guard import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def auto_num_workers(pytestconfig):
    """The ``-n auto`` hook as pytest-xdist calls it; the hook exists only with the xdist plugin (`make setup`
    installs it: setup.cfg's ``[test]``)."""
    if not pytestconfig.pluginmanager.hasplugin("xdist"):
        pytest.skip("needs the pytest-xdist plugin")
    return lambda: pytestconfig.hook.pytest_xdist_auto_num_workers(config=pytestconfig)


@pytest.mark.parametrize("cpus, workers", [(1, 1), (2, 2), (3, 3), (4, 4), (16, 4), (128, 4)])
def test_auto_takes_one_worker_per_usable_cpu_up_to_the_cap(monkeypatch, auto_num_workers, cpus, workers):
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(100, 100 + cpus)), raising=False)
    assert conftest.MAX_AUTO_WORKERS == 4
    assert conftest.usable_cpus() == cpus
    # through pytest's hook caller: the conftest's implementation is the one xdist gets
    assert auto_num_workers() == workers


def test_xdist_variable_still_decides(monkeypatch, auto_num_workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "7")
    assert auto_num_workers() == 7


def test_usable_cpus_without_affinity_falls_back_to_the_cpu_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert conftest.usable_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert conftest.usable_cpus() == 1


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("variables, option", [((), "-n auto"), (("TEST_WORKERS=0",), "-n 0"),
                                               (("TEST_WORKERS=3",), "-n 3")])
def test_make_test_runs_pytest_on_the_chosen_workers(variables, option):
    # not what the make running this suite passes down to its children (`make test TEST_WORKERS=0` puts
    # TEST_WORKERS=0 in MAKEFLAGS, which would override the default here)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "TEST_WORKERS")}
    # -n: print the recipe only; -o setup: as if the venv were up to date
    done = subprocess.run(["make", "--no-print-directory", "-n", "-o", "setup", "-C", str(ROOT), "test", *variables],
                          capture_output=True, text=True, timeout=HANG_GUARD_S, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].endswith(f"/bin/python\" -m pytest -q {option} tests")
