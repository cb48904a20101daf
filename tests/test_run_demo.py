"""tools/run_demo.py (what ``make demo`` runs) end to end at a tiny setting: every step, the summary table,
summary.json and the figures; a second run reuses every step. Values are not asserted (1-iteration runs)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["backbone", "finetune pretrained", "finetune scratch", "pretrain", "random-init eval"]


def _run_demo(tmp_path, out):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"),
               SYNTHETIC_SHAPES_NUM_IMAGES="train_large=10,val=2,train=4")
    cmd = [sys.executable, "tools/run_demo.py", "--output", str(out), "--backbone-iters", "1",
           "--pretrain-iters", "1", "--finetune-iters", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_run_demo_tiny_then_reused(tmp_path):
    import torch

    out = tmp_path / "demo"
    stdout = _run_demo(tmp_path, out)
    for row in ("backbone (k-NN on val objects)", "Siamese DETR pretraining (no labels)",
                "finetune 10% labels from pretraining", "finetune 10% labels from scratch",
                "gain from Siamese DETR pretraining"):
        assert row in stdout
    summary = json.loads((out / "summary.json").read_text())
    for key in ("ap", "ap50"):
        assert set(summary[key]) == {"pretrained", "scratch"}
        assert all(isinstance(v, float) for v in summary[key].values())  # evaluated (value not asserted)
    for key in ("ar100_pretrained_no_finetune", "ar1_pretrained_no_finetune", "ar100_random_init_no_finetune",
                "backbone_knn_accuracy", "minutes"):
        assert isinstance(summary[key], float), key
    assert "supervised classification" in summary["backbone"]
    assert summary["software"]["torch"] == torch.__version__ and summary["reused_steps"] == []
    for png in ("ap_curves.png", "detections.png", "loss_curves.png"):
        assert (out / png).stat().st_size > 0, png
    # the pretrained finetuning started from the pretraining's checkpoint, the scratch one from the backbone's
    commands = (out / "commands.txt").read_text()
    assert f"train.output_dir={out / 'finetune_pretrained'} " \
           f"train.init_checkpoint={out / 'siamese_pretrain' / 'model_final.pth'}" in commands
    assert f"train.output_dir={out / 'finetune_scratch'} " \
           f"train.init_checkpoint={out / 'backbone' / 'model_final.pth'}" in commands

    # every file the steps wrote is one that --fresh may delete (tools/run_demo.py's STEP_FILES)
    from script_modules import load_script

    assert load_script(ROOT / "tools" / "run_demo.py", "tiny_run_demo").foreign_step_files(out) == []
    stamp = (out / "finetune_pretrained" / "model_final.pth").stat().st_mtime_ns
    stdout = _run_demo(tmp_path, out)
    assert json.loads((out / "summary.json").read_text())["reused_steps"] == STEPS
    assert stdout.count("inputs unchanged and finished before: reused") == len(STEPS)
    assert (out / "finetune_pretrained" / "model_final.pth").stat().st_mtime_ns == stamp
