"""tools/compare_pretraining.py end to end at a tiny setting (values are not asserted: 1-iteration runs)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compare_pretraining_tiny(tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"),
               SYNTHETIC_SHAPES_NUM_IMAGES="train_large=10,val=2,train=4", OMP_NUM_THREADS="1")
    out = tmp_path / "compare"
    cmd = [sys.executable, "tools/compare_pretraining.py", "--output", str(out), "--seeds", "1",
           "--method", "scratch=", "--method", "Siamese DETR=configs/demo/demo_siamese_pretrain.py",
           "--method", "missing=configs/demo/does_not_exist.py",
           "--backbone-iters", "1", "--backbone-extra", "train.batch_size=4", "train.crop_size=16",
           "data.classification_scenes=1", "train.knn_k=1",
           "--pretrain-iters", "1", "--finetune-iters", "1",
           "--extra", "dataloader.train.num_workers=0", "dataloader.train.total_batch_size=2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "missing skipped" in proc.stdout
    summary = json.loads((out / "comparison.json").read_text())
    assert list(summary["methods"]) == ["scratch", "Siamese DETR"]
    for name, method in summary["methods"].items():
        assert set(method["per_seed"]) == {"1"}
        assert isinstance(method["per_seed"]["1"]["AP"], float)  # evaluated (value not asserted)
    # s/it comes from the trainer's `time` entries (none in a 1-iteration run: detectron2 skips warm-up)
    assert "pretrain_s_per_iter" in summary["methods"]["Siamese DETR"]
    assert summary["methods"]["scratch"]["pretrain_s_per_iter"][0] is None
    table = (out / "comparison.md").read_text()
    assert "| scratch |" in table and "| Siamese DETR |" in table
    assert (out / "comparison.png").stat().st_size > 0
    # the finetuning used the seed-1 low-label subset and started from the Siamese checkpoint
    log = (out / "commands.txt").read_text()
    assert "synthetic_shapes_train_large_10pct_seed1" in log
    assert "siamese_detr_seed1/pretrain/model_final.pth" in log
