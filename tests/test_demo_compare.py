"""tools/compare_pretraining.py end to end at a tiny setting (values are not asserted: 1-iteration runs), and
its paired gains on hand-made results."""
import importlib.util
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _compare_tool():
    spec = importlib.util.spec_from_file_location("compare_pretraining_tool", ROOT / "tools/compare_pretraining.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_gains_by_hand():
    ap = {"scratch": {0: 20.0, 1: 22.0, 2: 21.0}, "A": {0: 26.0, 1: 23.0, 2: 27.5}, "B": {0: 19.0, 1: None, 2: 21.0}}
    results = {name: {seed: {"AP": v} for seed, v in per_seed.items()} for name, per_seed in ap.items()}
    gains = _compare_tool().paired_gains(results, "scratch")
    assert set(gains) == {"A", "B"}
    # A: +6, +1, +6.5 -> mean 4.5, worst +1 (a mean above +4 that does not hold on every seed)
    assert gains["A"]["per_seed"] == pytest.approx({0: 6.0, 1: 1.0, 2: 6.5})
    assert gains["A"]["mean"] == pytest.approx(4.5) and gains["A"]["worst"] == pytest.approx(1.0)
    # B has no AP for seed 1: only seeds 0 and 2 are paired
    assert gains["B"]["per_seed"] == pytest.approx({0: -1.0, 2: 0.0})
    assert gains["B"]["mean"] == pytest.approx(-0.5) and gains["B"]["worst"] == pytest.approx(-1.0)
    results["C"] = {0: {"AP": None}}
    assert _compare_tool().paired_gains(results, "scratch")["C"] == {"per_seed": {}, "mean": None, "worst": None}


def test_compare_pretraining_tiny(tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"),
               SYNTHETIC_SHAPES_NUM_IMAGES="train_large=10,val=2,train=4", OMP_NUM_THREADS="1")
    out = tmp_path / "compare"
    cmd = [sys.executable, "tools/compare_pretraining.py", "--output", str(out), "--seeds", "1",
           "--method", "scratch=", "--method", "Siamese DETR=configs/demo/demo_siamese_pretrain.py",
           "--backbone-iters", "1", "--backbone-extra", "train.batch_size=4", "train.crop_size=16",
           "data.classification_scenes=1", "train.knn_k=1",
           "--pretrain-iters", "1", "--finetune-iters", "1",
           "--extra", "dataloader.train.num_workers=0", "dataloader.train.total_batch_size=2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
    assert "AP gain vs scratch, paired by seed" in table and summary["baseline"] == "scratch"
    gain = summary["methods"]["Siamese DETR"]["AP_gain_vs_baseline"]
    assert gain["per_seed"]["1"] == summary["methods"]["Siamese DETR"]["per_seed"]["1"]["AP"] - \
        summary["methods"]["scratch"]["per_seed"]["1"]["AP"]
    assert "AP_gain_vs_baseline" not in summary["methods"]["scratch"]
    import torch

    assert summary["software"]["torch"] == torch.__version__  # the versions the runs used
    assert (out / "comparison.png").stat().st_size > 0
    # the finetuning used the seed-1 low-label subset and started from the Siamese checkpoint
    log = (out / "commands.txt").read_text()
    assert "synthetic_shapes_train_large_10pct_seed1" in log
    assert "siamese_detr_seed1/pretrain/model_final.pth" in log


def test_outputs_without_a_baseline_have_no_gain_column(tmp_path):
    tool = _compare_tool()
    results = {"A": {0: {"AP": 10.0, "AP50": 20.0, "pretrain_s_per_iter": 0.5}},
               "B": {0: {"AP": 12.0, "AP50": 25.0, "pretrain_s_per_iter": None}}}
    args = type("Args", (), {"seeds": [0], "low_label_percent": 10})()
    table = tool.write_outputs(tmp_path, results, args, 60.0, baseline=None)
    assert "gain" not in table and (tmp_path / "comparison.png").stat().st_size > 0
    table = tool.write_outputs(tmp_path, results, args, 60.0, baseline="B")
    assert "| A | 10.00 ± 0.00 | 20.00 ± 0.00 | 0.500 ± 0.000 | -2.00 (worst seed -2.00) |" in table
    assert json.loads((tmp_path / "comparison.json").read_text())["methods"]["A"]["AP_gain_vs_baseline"]["mean"] == -2.0


@pytest.mark.parametrize("gains", [[-2.49, -1.84, -1.45], [1.0, 3.0, 2.0]])
def test_the_gain_panel_of_one_method_keeps_its_bar_narrow_and_its_value_and_zero_line_inside(gains):
    """One method (the demo pair): its bar takes at most a third of the panel's width (matplotlib alone fits the
    axes to the bar), the value written beside it lies inside the axes, and so does the line at 0 when every
    gain is negative (or positive)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = sum(gains) / len(gains)
    summary = {"baseline": "scratch", "methods": {"Siamese DETR": {"AP_gain_vs_baseline": {
        "mean": mean, "worst": min(gains), "per_seed": dict(enumerate(gains))}}}}
    fig, ax = plt.subplots()
    try:
        _compare_tool()._plot_gains(ax, summary, ["Siamese DETR"], {"Siamese DETR": "C0"})
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        bar = ax.patches[0]
        assert bar.get_width() <= (x1 - x0) / 3
        (text,) = ax.texts
        assert x0 < text.get_position()[0] < x1 and y0 < text.get_position()[1] < y1
        assert y0 < 0.0 < y1 and y0 <= min(gains) and max(gains) <= y1
    finally:
        plt.close(fig)


@pytest.mark.parametrize("args, message", [
    # two names that map to one run folder: their pretrainings and finetunings would overwrite each other
    (["--method", "scratch=", "--method", "Siamese DETR=configs/demo/demo_siamese_pretrain.py",
      "--method", "siamese-detr=configs/demo/demo_up_detr_pretrain.py"],
     "'Siamese DETR' and 'siamese-detr' both map to the run folders siamese_detr_seed*"),
    (["--method", "a=configs/demo/demo_siamese_pretrain.py", "--method", "a=configs/demo/demo_up_detr_pretrain.py"],
     "--method 'a' is given twice"),
    (["--method", "a/b="], "must not contain '/'"),
    (["--method", "="], "must be non-empty"),
    (["--seeds", "1", "1"], r"--seeds: \[1\] given more than once"),
    (["--seeds", "-1"], "--seeds must be non-negative"),
    (["--low-label-percent", "0"], "--low-label-percent must be in 1..100, got 0"),
    (["--low-label-percent", "150"], "--low-label-percent must be in 1..100, got 150"),
    # a --method whose config does not exist is refused (it used to be skipped with a note, and the rest ran)
    (["--seeds", "0", "--method", "foo=configs/demo/nope.py"],
     r"--method 'foo': its pretraining config configs/demo/nope.py does not exist \(paths are relative to the "
     r"repository root .*\); give an existing config, or foo= for no pretraining"),
    (["--method", "scratch=", "--method", "foo=configs/demo/nope.py"], "configs/demo/nope.py does not exist"),
    (["--method", "foo=configs/demo"], "its pretraining config configs/demo is a folder, not a config file"),
])
def test_bad_methods_seeds_and_percent_are_refused_before_any_step(tmp_path, capsys, args, message):
    out = tmp_path / "compare"
    with pytest.raises(SystemExit) as exc:
        _compare_tool().main(["--output", str(out)] + args)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert re.search(message, captured.err) and "Traceback" not in captured.err
    assert not out.exists()  # nothing ran, not even the backbone step
    assert "[data]" not in captured.out and "skipped" not in captured.out


def test_a_builtin_method_without_its_config_is_left_out_but_never_all_of_them(tmp_path, capsys, monkeypatch):
    """Without --method, a built-in method whose config is not in the checkout is left out with a note (the
    others still compare); a list left with no method to run is refused before any step."""
    tool = _compare_tool()
    defaults = [("scratch", None), ("Siamese DETR", "configs/demo/demo_siamese_pretrain.py"),
                ("UP-DETR", "configs/demo/nope.py")]
    present, notes, problem = tool.check_configs(defaults, explicit=False)
    assert problem is None and present == defaults[:2]
    assert notes == ["note: built-in method UP-DETR left out: its config configs/demo/nope.py does not exist"]
    # the same list given with --method: the missing config is an error, not a note
    present, notes, problem = tool.check_configs(defaults, explicit=True)
    assert problem.startswith("--method 'UP-DETR': its pretraining config configs/demo/nope.py does not exist")
    monkeypatch.setattr(tool, "DEFAULT_METHODS", [("UP-DETR", "configs/demo/nope.py")])
    out = tmp_path / "compare"
    with pytest.raises(SystemExit) as exc:
        tool.main(["--output", str(out), "--seeds", "0"])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "note: built-in method UP-DETR left out" in captured.out
    assert "error: no method to run: none of the methods (UP-DETR=configs/demo/nope.py) has its config" in captured.err
    assert not out.exists() and "[data]" not in captured.out


def test_mean_and_spread_over_three_seeds_by_hand(tmp_path):
    """AP 10 / 13 / 20 over three seeds: mean 43/3 = 14.33 (not the median 13, not the first seed's 10), spread
    half the min-max range (20 - 10) / 2 = 5; AP50 30 / 31 / 38 (mean 33, spread 4) and s/it 0.2 / 0.3 / 0.6
    (mean 0.366.., spread 0.2) differ from the AP, so a swapped key shows."""
    tool = _compare_tool()
    results = {"A": {0: {"AP": 10.0, "AP50": 30.0, "pretrain_s_per_iter": 0.2},
                     1: {"AP": 13.0, "AP50": 31.0, "pretrain_s_per_iter": 0.3},
                     2: {"AP": 20.0, "AP50": 38.0, "pretrain_s_per_iter": 0.6}}}
    args = type("Args", (), {"seeds": [0, 1, 2], "low_label_percent": 10})()
    table = tool.write_outputs(tmp_path, results, args, 60.0, baseline=None)
    assert "| method | AP (mean ± spread, 3 seeds) | AP50 | pretraining s/it |" in table
    assert "| A | 14.33 ± 5.00 | 33.00 ± 4.00 | 0.367 ± 0.200 |" in table
    summary = json.loads((tmp_path / "comparison.json").read_text())["methods"]["A"]
    assert summary["AP"] == pytest.approx([43 / 3, 5.0])
    assert summary["AP50"] == pytest.approx([33.0, 4.0])
    assert summary["pretrain_s_per_iter"] == pytest.approx([1.1 / 3, 0.2])
    # a seed without an AP is left out of the mean and spread, not counted as 0
    assert tool.mean_spread([10.0, None, 20.0]) == pytest.approx((15.0, 5.0))
    assert tool.mean_spread([None]) == (None, None)


def test_schedule_overrides_drop_the_lr_at_80_percent():
    assert _compare_tool().schedule_overrides(10) == [
        "train.max_iter=10", "lr_multiplier.milestones=[8]", "lr_multiplier.num_updates=10"]
    # the drop is never at iteration 0, and num_updates stays above it
    assert _compare_tool().schedule_overrides(1) == [
        "train.max_iter=1", "lr_multiplier.milestones=[1]", "lr_multiplier.num_updates=2"]
    assert _compare_tool().schedule_overrides(None) == []


# finetuning evaluations per (method, seed): an earlier evaluation, then the last one (the one reported); every
# AP, AP50 and AP75 differs, so a swapped metric, method or seed shows
_FINETUNE_METRICS = {
    ("X", 0): {"bbox/AP": 30.0, "bbox/AP50": 50.0, "bbox/AP75": 31.5},
    ("X", 1): {"bbox/AP": 34.0, "bbox/AP50": 56.0, "bbox/AP75": 35.5},
    ("scratch", 0): {"bbox/AP": 20.0, "bbox/AP50": 40.0, "bbox/AP75": 21.5},
    ("scratch", 1): {"bbox/AP": 21.0, "bbox/AP50": 43.0, "bbox/AP75": 24.5},
}
# the `time` (s/it) entries of each pretraining: median 0.3 and 0.4 (means 0.4667 and 0.6)
_PRETRAIN_TIMES = {("X", 0): [0.2, 0.9, 0.3], ("X", 1): [0.4, 1.0, 0.4]}


class _FakeRunner:
    """StepRunner stand-in: runs nothing; each job's folder gets the metrics.json its run would write."""
    jobs = []

    def __init__(self, root, log_dir):
        self.environment = {"code": "c", "software": {"torch": "fake"}, "machine": {"cpu": "fake"}}
        self.reused, self.resumed = set(), set()

    def step(self, name, folder, cmd, config=None, overrides=None, inputs=None, total=None):
        return 1.0

    def parallel(self, jobs, max_parallel=2):
        for job in jobs:
            type(self).jobs.append(job)
            name, kind, _, seed = job["name"].rsplit(" ", 3)
            folder = Path(job["folder"])
            folder.mkdir(parents=True, exist_ok=True)
            if kind == "pretrain":
                records = [{"iteration": i, "time": t, "total_loss": 1.0}
                           for i, t in enumerate(_PRETRAIN_TIMES[name, int(seed)])]
            else:
                records = [{"bbox/AP": 1.0, "bbox/AP50": 2.0, "bbox/AP75": 3.0, "iteration": 4},
                           {"iteration": 9, "total_loss": 0.5, "time": 7.0},
                           dict(_FINETUNE_METRICS[name, int(seed)], iteration=9)]
            (folder / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records))
        return [1.0] * len(jobs)


def test_comparison_numbers_come_from_each_runs_metrics(tmp_path, monkeypatch, capsys):
    """main with the steps stood in for: each method and seed's AP / AP50 are its finetuning's last bbox/AP and
    bbox/AP50 (not AP75), its s/it the median of its pretraining's `time` entries, and the baseline of the
    gains the first method WITHOUT pretraining (scratch, given second here), not the first method."""
    import siamese_detr.demo.runner as runner

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("SYNTHETIC_SHAPES_NUM_IMAGES", "train_large=4,val=2,train=4")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::FutureWarning:torch.jit._script")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_FakeRunner, "jobs", [])
    monkeypatch.setattr(runner, "StepRunner", _FakeRunner)
    out = tmp_path / "compare"
    assert _compare_tool().main(["--output", str(out), "--seeds", "0", "1", "--pretrain-iters", "10",
                                 "--method", "X=configs/demo/demo_siamese_pretrain.py", "--method", "scratch="]) == 0
    jobs = {job["name"]: job for job in _FakeRunner.jobs}
    assert sorted(jobs) == sorted(["X pretrain seed 0", "X pretrain seed 1", "X finetune seed 0", "X finetune seed 1",
                                   "scratch finetune seed 0", "scratch finetune seed 1"])
    pretrain_over = jobs["X pretrain seed 1"]["overrides"]
    assert pretrain_over[-3:] == ["train.max_iter=10", "lr_multiplier.milestones=[8]", "lr_multiplier.num_updates=10"]
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["baseline"] == "scratch" and list(summary["methods"]) == ["X", "scratch"]
    for (name, seed), metrics in _FINETUNE_METRICS.items():
        per_seed = summary["methods"][name]["per_seed"][str(seed)]
        assert (per_seed["AP"], per_seed["AP50"]) == (metrics["bbox/AP"], metrics["bbox/AP50"]), (name, seed)
    x, scratch = summary["methods"]["X"], summary["methods"]["scratch"]
    assert (x["per_seed"]["0"]["pretrain_s_per_iter"], x["per_seed"]["1"]["pretrain_s_per_iter"]) == (0.3, 0.4)
    assert scratch["per_seed"]["0"]["pretrain_s_per_iter"] is None
    assert x["AP"] == pytest.approx([32.0, 2.0]) and x["AP50"] == pytest.approx([53.0, 3.0])
    assert scratch["AP"] == pytest.approx([20.5, 0.5]) and scratch["AP50"] == pytest.approx([41.5, 1.5])
    assert x["pretrain_s_per_iter"] == pytest.approx([0.35, 0.05])
    # X minus scratch, seed by seed: +10, +13
    assert x["AP_gain_vs_baseline"]["per_seed"] == pytest.approx({"0": 10.0, "1": 13.0})
    assert (x["AP_gain_vs_baseline"]["mean"], x["AP_gain_vs_baseline"]["worst"]) == pytest.approx((11.5, 10.0))
    assert "AP_gain_vs_baseline" not in scratch
    table = (out / "comparison.md").read_text()
    assert "| X | 32.00 ± 2.00 | 53.00 ± 3.00 | 0.350 ± 0.050 | +11.50 (worst seed +10.00) |" in table
    assert "| scratch | 20.50 ± 0.50 | 41.50 ± 1.50 | - | - |" in table
    assert "AP gain vs scratch, paired by seed" in table
    assert summary["software"] == {"torch": "fake"}
