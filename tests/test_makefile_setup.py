"""`make setup`'s checks before it creates a virtual environment: the interpreter it needs, the free disk
space and a venv path make can use, each refused with one line naming the fix (not `/bin/sh: python3.11: not
found`, nor pip failing half-way through a 6 GiB install); and its steps, with an interpreter at a path with
spaces."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hang_guard import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _make(*arguments):
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *arguments],
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def _check_disk(tmp_path, *variables):
    return _make("check-disk", f"VENV={tmp_path / 'venv'}", *variables)


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


def test_a_venv_path_that_is_a_file_is_refused_before_anything_is_made(tmp_path):
    (tmp_path / "venv").write_text("a file")
    done = _check_disk(tmp_path, f"PYTHON={sys.executable}", "SETUP_FREE_GIB=0")
    assert done.returncode != 0
    assert (f"make setup: VENV={tmp_path / 'venv'} is a file, not a folder: give the venv's folder (made if "
            "missing), e.g. make setup VENV=/elsewhere/venv") in done.stderr
    assert (tmp_path / "venv").read_text() == "a file"


def test_an_interpreter_at_a_path_with_spaces_is_checked(tmp_path):
    spaced = tmp_path / "my pythons" / "python3.11"
    spaced.parent.mkdir()
    spaced.symlink_to(sys.executable)
    assert _check_disk(tmp_path, f"PYTHON={spaced}", "SETUP_FREE_GIB=0").returncode == 0
    done = _check_disk(tmp_path, f"PYTHON={spaced}", "SETUP_FREE_GIB=100000000")
    assert done.returncode != 0 and "needs about 6 GiB" in done.stderr


def _fake_interpreter(tmp_path):
    """A stand-in interpreter at a path with spaces that records its arguments in ``calls.txt`` (and, for
    ``-m venv DIR``, puts a copy of itself at DIR/bin/python); returns (interpreter, log)."""
    log = tmp_path / "calls.txt"
    fake = tmp_path / "my pythons" / "python3.11"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf "%s :: %s\\n" "$0" "$*" >> "{}"\n'
                    'if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; fi\n'
                    .format(log))
    fake.chmod(0o755)
    return fake, log


@pytest.mark.parametrize("constraints, pinned", [
    ((), "-c constraints.txt "), (("CONSTRAINTS=",), ""), (("CONSTRAINTS=tests/fixtures/../../constraints.txt",),
                                                           "-c tests/fixtures/../../constraints.txt ")])
def test_setup_runs_its_steps_with_an_interpreter_at_a_path_with_spaces_then_nothing(tmp_path, constraints, pinned):
    """The whole `make setup` recipe with a stand-in interpreter: every step reaches the interpreter whole, in
    order, each pip install and the detectron2 installer with the constraints file (none with CONSTRAINTS=),
    the stamp file records which, and a second `make setup` finds the stamp file and runs nothing."""
    fake, log = _fake_interpreter(tmp_path)
    venv = tmp_path / "venv"
    done = _make("setup", f"PYTHON={fake}", f"VENV={venv}", "SETUP_FREE_GIB=0", *constraints)
    assert done.returncode == 0, done.stderr
    calls = [line.split(" :: ") for line in log.read_text().splitlines()]
    pins = "torch==2.14.1 torchvision==0.29.1"
    assert [interpreter for interpreter, _ in calls] == [str(fake)] * 2 + [f"{venv}/bin/python"] * 4
    arguments = [a for _, a in calls]
    assert arguments[0].startswith("-c import os, shutil, sys;")  # the free-space check
    detectron2 = "tools/install_detectron2.py" + (f" --constraint {pinned[3:-1]}" if pinned else "")
    assert arguments[1:5] == [f"-m venv {venv}", f"-m pip install --quiet {pinned}{pins}", detectron2,
                              f"-m pip install --quiet --no-build-isolation {pinned}-e .[test] {pins}"]
    assert arguments[5].startswith("-c import torch, detectron2, siamese_detr;")  # the import check
    assert (venv / ".setup-complete").read_text() == f"constraints={pinned[3:-1]}\n"
    log.unlink()
    again = _make("setup", f"PYTHON={fake}", f"VENV={venv}", *constraints)
    assert again.returncode == 0 and not log.exists()


def test_a_missing_or_unusable_constraints_file_is_refused_with_the_fix(tmp_path):
    fake, log = _fake_interpreter(tmp_path)
    done = _make("setup", f"PYTHON={fake}", f"VENV={tmp_path / 'venv'}", f"CONSTRAINTS={tmp_path / 'gone.txt'}")
    assert done.returncode != 0 and not log.exists()
    assert (f"make setup: the constraints file {tmp_path / 'gone.txt'} is not there: restore it (git checkout -- "
            "constraints.txt), give another with CONSTRAINTS=FILE, or install without pins: make setup "
            "CONSTRAINTS=") in done.stderr
    done = _make("setup", f"VENV={tmp_path / 'venv'}", "CONSTRAINTS=my pins.txt")
    assert done.returncode != 0
    assert ('CONSTRAINTS="my pins.txt": the constraints file\'s path must not contain spaces') in done.stderr


def test_an_existing_venv_is_set_up_again_when_the_pins_change(tmp_path):
    """The stamp depends on the constraints file: a newer file makes `make setup` run its steps again, as does
    `make -B setup`."""
    import os

    fake, log = _fake_interpreter(tmp_path)
    pins = tmp_path / "pins.txt"
    pins.write_text("numpy==1.0\n")
    venv = tmp_path / "venv"
    assert _make("setup", f"PYTHON={fake}", f"VENV={venv}", "SETUP_FREE_GIB=0", f"CONSTRAINTS={pins}").returncode == 0
    log.unlink()
    stamp_time = (venv / ".setup-complete").stat().st_mtime
    os.utime(pins, (stamp_time + 10, stamp_time + 10))
    assert _make("setup", f"PYTHON={fake}", f"VENV={venv}", f"CONSTRAINTS={pins}").returncode == 0
    assert f"-m pip install --quiet -c {pins} torch==2.14.1" in log.read_text()
    # make -B (the fix freeze_constraints.py --check names after a package was changed by hand) runs them too,
    # the constraints file being there
    log.unlink()
    done = _make("-B", "setup", f"PYTHON={fake}", f"VENV={venv}", f"CONSTRAINTS={pins}")
    assert done.returncode == 0, done.stderr
    assert f"-m pip install --quiet -c {pins} torch==2.14.1" in log.read_text()


@pytest.mark.parametrize("venv, message", [
    ("/tmp/a b/venv", 'VENV="/tmp/a b/venv": the venv\'s path must not contain spaces'),
    ("", "VENV is empty: give the venv's folder, e.g. make setup VENV=/elsewhere/venv"),
])
def test_a_venv_path_make_cannot_use_is_refused_with_the_fix(venv, message):
    for target in ("setup", "test", "check-disk"):
        done = _make(target, f"VENV={venv}")
        assert done.returncode != 0 and message in done.stderr, (target, done.stderr)


def test_help_lists_every_target_and_variable_and_makes_nothing(tmp_path):
    """`make help` names each target a user runs and each variable with its value, and creates no venv."""
    done = _make("help", f"VENV={tmp_path / 'venv'}", "SETUP_FREE_GIB=3")
    assert done.returncode == 0, done.stderr
    phony = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith(".PHONY:"))
    for target in set(phony.split()[1:]) - {"check-disk", "help"}:
        assert f"make {target} " in done.stdout, target
    assert f"VENV={tmp_path / 'venv'} (the venv's folder)" in done.stdout
    assert "SETUP_FREE_GIB=3 " in done.stdout and "PYTHON=python3.11 " in done.stdout
    assert not (tmp_path / "venv").exists()
