"""Helpers of the tests of the demo's tools (test_demo_adversarial.py, test_demo_runner_cache.py): the tiny
dataset sizes of ``conftest.demo_env``, the exception of ``conftest.nothing_runs`` and whether a process still
runs."""

TINY_SIZES = "train_large=4,val=2,train=4"


class StepStarted(Exception):
    """Raised by the stand-ins of ``nothing_runs`` (conftest.py): the tool got as far as running something."""


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
