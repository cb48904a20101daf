"""Helpers of the tests of the demo's tools and step runner (test_demo_adversarial.py, test_demo_steps.py,
test_demo_runner_cache.py): the tiny dataset sizes of ``conftest.demo_env``, the exception of
``conftest.nothing_runs``, whether a process still runs, a counting step command, a step's recorded inputs and
a step folder left as by a killed run."""
import json
import os

from siamese_detr.demo.steps import Step

TINY_SIZES = "train_large=4,val=2,train=4"

# ``python -c COUNTER FILE`` adds one to the number in FILE (a step command whose runs can be counted)
COUNTER = "import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.write_text(str(int(p.read_text() or 0) + 1) " \
          "if p.exists() else '1')"


class StepStarted(Exception):
    """Raised by the stand-ins of ``nothing_runs`` (conftest.py): the tool got as far as running something."""


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def recorded_inputs(runner, cmd):
    """The inputs ``runner`` records for a step that runs ``cmd`` with no config."""
    return {**runner.environment, "command": [str(c) for c in cmd]}


def killed_run(folder, cmd, runner, ran_for, record_extra=()):
    """Leave ``folder`` as a run of ``cmd`` killed after ``ran_for`` seconds (its newest file written then)
    that had checkpointed; ``record_extra``: more fields of its record (e.g. earlier interrupted runs')."""
    Step("s", folder, recorded_inputs(runner, cmd)).begin()
    record_path = folder / "step_inputs.json"
    record = json.loads(record_path.read_text())
    record.update({"started": record["started"] - 1000.0, **dict(record_extra)})
    record_path.write_text(json.dumps(record))
    (folder / "last_checkpoint").write_text("model_0000199.pth")
    for name in ("metrics.json", "demo.log", "last_checkpoint"):
        path = folder / name
        path.touch()
        os.utime(path, (record["started"] + ran_for * 0.5, record["started"] + ran_for * 0.5))
    os.utime(folder / "demo.log", (record["started"] + ran_for, record["started"] + ran_for))
