"""tools/compare_pretraining.py at a low-label percent other than the default 10%: its finetunings go to
``<slug>_seed<s>/finetune_{P}pct`` and its files to ``comparison_{P}pct.*``, beside the 10% ones (``finetune``,
``comparison.*``, the layout from before), and the pretrainings are shared, so that switching between
percents reuses every finished run instead of redoing (and deleting) the other percent's finetunings."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_demo_compare import _compare_tool

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_percent_keeps_the_old_names_and_others_get_their_own(tmp_path):
    tool = _compare_tool()
    assert tool.DEFAULT_LOW_LABEL_PERCENT == 10
    assert tool.finetune_folder(10) == "finetune"  # the folder existing caches and the docs name
    assert tool.finetune_folder(2) == "finetune_2pct" and tool.finetune_folder(100) == "finetune_100pct"
    assert tool.comparison_paths(tmp_path, 10) == {s: tmp_path / f"comparison.{s}" for s in ("json", "md", "png")}
    assert tool.comparison_paths(tmp_path, 2) == {s: tmp_path / f"comparison_2pct.{s}"
                                                  for s in ("json", "md", "png")}
    names = {tool.finetune_folder(p) for p in range(1, 101)} | {"pretrain"}
    assert len(names) == 101  # every percent its own folder, none the pretraining's
    assert len({tool.comparison_paths(tmp_path, p)["json"] for p in range(1, 101)}) == 100


def test_write_outputs_at_another_percent_leaves_the_10pct_files(tmp_path):
    tool = _compare_tool()
    results = {"scratch": {0: {"AP": 10.0, "AP50": 20.0, "pretrain_s_per_iter": None}},
               "A": {0: {"AP": 12.0, "AP50": 25.0, "pretrain_s_per_iter": 0.5}}}
    ten = type("Args", (), {"seeds": [0], "low_label_percent": 10})()
    two = type("Args", (), {"seeds": [0], "low_label_percent": 2})()
    tool.write_outputs(tmp_path, results, ten, 60.0, baseline="scratch")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["comparison.json", "comparison.md", "comparison.png"]
    results["A"][0]["AP"] = 8.0
    tool.write_outputs(tmp_path, results, two, 60.0, baseline="scratch")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        list(before) + ["comparison_2pct.json", "comparison_2pct.md", "comparison_2pct.png"])
    summary = json.loads((tmp_path / "comparison_2pct.json").read_text())
    assert summary["low_label_percent"] == 2 and summary["methods"]["A"]["AP_gain_vs_baseline"]["mean"] == -2.0
    assert "finetuning on 2% of" in (tmp_path / "comparison_2pct.md").read_text()
    assert json.loads((tmp_path / "comparison.json").read_text())["low_label_percent"] == 10


class _StepStarted(Exception):
    pass


def test_a_run_at_another_percent_removes_only_its_own_earlier_files(tmp_path, monkeypatch):
    """A run removes its earlier comparison files before any step (a run that does not finish must not leave
    them beside its new runs), but not those of another percent, whose runs it does not touch."""
    import siamese_detr.demo.runner as runner

    def refuse(*args, **kwargs):
        raise _StepStarted(args)

    for name in ("DETECTRON2_DATASETS", "OMP_NUM_THREADS", "PYTHONWARNINGS"):  # set by the tool: restored after
        monkeypatch.setenv(name, os.environ.get(name, ""))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "StepRunner", refuse)
    out = tmp_path / "compare"
    out.mkdir()
    earlier = ["comparison.json", "comparison.md", "comparison.png", "comparison_2pct.json", "comparison_2pct.md",
               "comparison_2pct.png", "comparison_5pct.json"]
    for name in earlier:
        (out / name).write_text("an earlier run's")
    with pytest.raises(_StepStarted):
        _compare_tool().main(["--output", str(out), "--method", "scratch=", "--low-label-percent", "2"])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "comparison.json", "comparison.md", "comparison.png", "comparison_5pct.json"]
    with pytest.raises(_StepStarted):
        _compare_tool().main(["--output", str(out), "--method", "scratch="])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["comparison_5pct.json"]


_REUSED = re.compile(r"^\[(.+?)\] inputs unchanged and finished before: reused", re.M)


def test_switching_percents_reuses_every_finished_run(tmp_path):
    """10% -> 2% -> 10% -> 2% at the tiny setting of test_demo_compare: the 2% run reuses the backbone and the
    pretraining and leaves the 10% finetunings and files alone; after that, both percents reuse every step."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"),
               SYNTHETIC_SHAPES_NUM_IMAGES="train_large=10,val=2,train=4", OMP_NUM_THREADS="1")
    out = tmp_path / "compare"
    base = [sys.executable, "tools/compare_pretraining.py", "--output", str(out), "--seeds", "1",
            "--method", "scratch=", "--method", "Siamese DETR=configs/demo/demo_siamese_pretrain.py",
            "--backbone-iters", "1", "--backbone-extra", "train.batch_size=4", "train.crop_size=16",
            "data.classification_scenes=1", "train.knn_k=1",
            "--pretrain-iters", "1", "--finetune-iters", "1",
            "--extra", "dataloader.train.num_workers=0", "dataloader.train.total_batch_size=2"]
    steps = {"backbone", "Siamese DETR pretrain seed 1", "scratch finetune seed 1", "Siamese DETR finetune seed 1"}

    def run(percent):
        proc = subprocess.run(base + ["--low-label-percent", str(percent)], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout, set(_REUSED.findall(proc.stdout))

    def why(stdout):
        """Why steps were not reused (e.g. ``inputs changed (code)``: a file of the package or tools/ was edited
        while the test ran)."""
        return "\n".join(line for line in stdout.splitlines() if "redoing" in line or "inputs changed" in line)

    def finetunings(folder):
        """The 10% or 2% finetunings' records and metrics, as bytes."""
        return {(run_dir, name): (out / run_dir / folder / name).read_bytes()
                for run_dir in ("scratch_seed1", "siamese_detr_seed1")
                for name in ("step_inputs.json", "metrics.json", "model_final.pth")}

    stdout, reused = run(10)
    assert reused == set()
    assert (out / "siamese_detr_seed1" / "finetune" / "model_final.pth").is_file()
    assert f"written: {out / 'comparison.json'}, {out / 'comparison.md'}, {out / 'comparison.png'}" in stdout
    ten, ten_summary = finetunings("finetune"), json.loads((out / "comparison.json").read_text())
    ten_files = {name: (out / name).read_bytes() for name in ("comparison.json", "comparison.md", "comparison.png")}

    stdout, reused = run(2)
    # the runs that do not depend on the percent
    assert reused == {"backbone", "Siamese DETR pretrain seed 1"}, why(stdout)
    assert finetunings("finetune") == ten  # the 10% finetunings were not redone
    assert {name: (out / name).read_bytes() for name in ten_files} == ten_files
    two, two_summary = finetunings("finetune_2pct"), json.loads((out / "comparison_2pct.json").read_text())
    assert two_summary["low_label_percent"] == 2 and ten_summary["low_label_percent"] == 10
    assert f"written: {out / 'comparison_2pct.json'}, {out / 'comparison_2pct.md'}" in stdout
    assert "siamese_detr_seed1/finetune_2pct" in stdout
    log = (out / "commands.txt").read_text()
    assert "train.output_dir=" + str(out / "siamese_detr_seed1" / "finetune_2pct") in log
    assert "synthetic_shapes_train_large_2pct_seed1" in log

    # back to 10%, then 2% again: every step is reused, the tables are the same
    again_runs = [(10, "finetune", ten, "comparison.json", ten_summary),
                  (2, "finetune_2pct", two, "comparison_2pct.json", two_summary)]
    for percent, folder, previous, summary_name, summary in again_runs:
        stdout, reused = run(percent)
        assert reused == steps, why(stdout)
        assert finetunings(folder) == previous
        again = json.loads((out / summary_name).read_text())
        assert again["methods"] == summary["methods"] and again["low_label_percent"] == percent
    assert finetunings("finetune") == ten
