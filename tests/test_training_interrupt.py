"""Ctrl-C in ``tools/lazyconfig_train_net.py`` ends it with one line that says how to go on (``--resume``) and
exit status 130, not Python's 70-line ``KeyboardInterrupt`` traceback; the interrupted run then resumes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hang_guard import HANG_GUARD_S
from train_net_tool import ROOT, train_net

PROG = "lazyconfig_train_net.py"


@pytest.mark.parametrize("eval_only", [False, True])
def test_ctrl_c_prints_one_line_and_exits_130(monkeypatch, capsys, eval_only):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_net, "launch", interrupted)
    argv = ["--config-file", str(ROOT / "configs" / "demo" / "detr_demo.py")] + (["--eval-only"] if eval_only else [])
    with pytest.raises(SystemExit) as stop:
        train_net.run(argv)
    assert stop.value.code == 130
    (line,) = capsys.readouterr().err.strip().splitlines()
    if eval_only:
        assert line == f"{PROG}: interrupted (Ctrl-C); nothing was written to metrics.json: run the same command " \
                       "again to evaluate"
    else:
        assert line.startswith(f"{PROG}: interrupted (Ctrl-C). The same command with --resume (before the "
                               "key=value overrides) continues from the last checkpoint in train.output_dir")


def _wait_for(predicate, proc):
    deadline = time.monotonic() + HANG_GUARD_S
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the training never got there"
        time.sleep(0.2)


def _iterations(metrics) -> list:
    if not metrics.is_file():
        return []
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip().endswith("}")]
    return [r["iteration"] for r in lines if "total_loss" in r]


def test_a_real_sigint_mid_training_then_resume(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="1",
               SYNTHETIC_SHAPES_NUM_IMAGES="train=4,val=2")
    common = ["--config-file", "configs/demo/detr_demo.py", f"train.output_dir={out}", "train.log_period=1",
              "train.checkpointer.period=1", "train.eval_period=0", "dataloader.train.total_batch_size=2",
              "dataloader.train.num_workers=0", "dataloader.test.num_workers=0", "train.seed=0"]
    # SIGINT at its default in the tool, as in a terminal, whatever the suite was started from: a suite started as
    # `cmd &` from a script (no job control) has SIGINT ignored, which its children inherit, and Python then
    # installs no KeyboardInterrupt handler, so the signal below would do nothing
    proc = subprocess.Popen([sys.executable, "tools/lazyconfig_train_net.py", *common, "train.max_iter=100000"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for(lambda: len(_iterations(out / "metrics.json")) >= 2 and (out / "last_checkpoint").is_file(), proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith(f"{PROG}: interrupted (Ctrl-C). The same command with --resume")
    saved = int((out / "last_checkpoint").read_text().strip()[len("model_"):-len(".pth")])
    # --resume goes on from the checkpoint (to a nearer end, so that the test is short)
    done = subprocess.run([sys.executable, "tools/lazyconfig_train_net.py", "--resume", *common,
                           f"train.max_iter={saved + 3}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    assert _iterations(out / "metrics.json")[-1] == saved + 2
