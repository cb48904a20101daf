"""What the demo reports: ``summary.json`` (each number read from its own step's ``metrics.json``, written
whole or not at all), the summary table it prints (each row's own numbers, the signed gain, reused / resumed
marks, the machine; the README's sample printed again), the demo's minutes from its steps' seconds and the
schedule overrides of its shortened runs."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]


def _tool(name):
    return load_script(ROOT / "tools" / f"{name}.py", f"demo_summary_{name}")


def test_figures_and_summary_are_written_whole(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    tool = _tool("run_demo")
    with pytest.raises(KeyboardInterrupt):
        with tool.written_whole(path) as tmp:
            tmp.write_text('{"half": ')
            raise KeyboardInterrupt
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    with tool.written_whole(path) as tmp:
        assert tmp.suffix == ".json"  # matplotlib and OpenCV choose the format by it
        tmp.write_text("{}")
    assert path.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_each_summary_number_comes_from_its_own_step_and_metric(tmp_path):
    """summary.json's numbers, each read from its own step's metrics.json: every source value is distinct, so
    a swapped folder or metric (AR of the random-init evaluation as the pretrained one's, AP75 as AP50) shows."""
    def metrics(folder, *records):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records))
        return tmp_path / folder

    bb = tmp_path / "backbone"
    bb.mkdir()
    (bb / "metrics.json").write_text(json.dumps({"method": "supervised", "knn_accuracy": 96.0,
                                                 "knn_accuracy_random_init": 64.0}))
    pt = metrics("pretrain", {"iteration": 9, "total_loss": 1.0},
                 {"class_agnostic/AR@100": 1.0, "class_agnostic/AR@1": 0.5},  # an earlier evaluation: not the last
                 {"class_agnostic/AR@100": 11.0, "class_agnostic/AR@1": 0.36})
    rnd = metrics("random_init", {"class_agnostic/AR@100": 0.25, "class_agnostic/AR@1": 0.0})
    ft = {"pretrained": metrics("ft_p", {"bbox/AP": 22.0, "bbox/AP50": 46.0, "bbox/AP75": 17.0}),
          "scratch": metrics("ft_s", {"bbox/AP": 25.0, "bbox/AP50": 50.0, "bbox/AP75": 21.0})}
    summary = _tool("run_demo").write_summary(tmp_path, bb, pt, rnd, ft, {"backbone": 6.0}, 390.0, 60.0,
                                              ["backbone"], [], {"torch": "x"},
                                              {"cpu": "X", "cpu_id": "v f 1", "torch_cpu_capability": "AVX2"})
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["ap"] == {"pretrained": 22.0, "scratch": 25.0}
    assert summary["ap50"] == {"pretrained": 46.0, "scratch": 50.0}
    assert (summary["ar100_pretrained_no_finetune"], summary["ar1_pretrained_no_finetune"]) == (11.0, 0.36)
    assert (summary["ar100_random_init_no_finetune"], summary["ar1_random_init_no_finetune"]) == (0.25, 0.0)
    assert (summary["backbone_knn_accuracy"], summary["backbone_knn_accuracy_random_init"]) == (96.0, 64.0)
    assert summary["backbone"].startswith("narrow ResNet-18 trained by supervised classification")
    assert (summary["minutes"], summary["minutes_this_run"]) == (6.5, 1.0)
    assert summary["machine"] == {"cpu": "X", "cpu_id": "v f 1", "torch_cpu_capability": "AVX2",
                                  "cpus": len(os.sched_getaffinity(0))}


# ------------------------------------------------------------------------------ the demo's summary table
def _table_summary():
    return {"ap": {"pretrained": 22.0, "scratch": 25.0}, "ap50": {"pretrained": 46.0, "scratch": 50.0},
            "ar1_pretrained_no_finetune": 0.36, "ar100_pretrained_no_finetune": 11.0,
            "ar1_random_init_no_finetune": 0.0, "ar100_random_init_no_finetune": 0.25,
            "backbone_knn_accuracy": 96.0, "backbone_knn_accuracy_random_init": 64.0}


def test_the_summary_table_shows_each_rows_own_numbers_and_the_signed_gain(capsys):
    """The pretrained finetuning's row shows its AP (22 / 46), the scratch one's its own (25 / 50), the gain is
    pretrained minus scratch (-3.0, a loss shown as one), and reused (*) / resumed (+) steps are marked."""
    times = {"data": 3.0, "backbone": 6.0, "pretrain": 125.0, "random-init eval": 9.0,
             "finetune (pretrained)": 61.0, "finetune (scratch)": 70.0, "figures": 2.0}
    _tool("run_demo").print_table(_table_summary(), times, reused={"backbone", "finetune scratch"},
                                  resumed={"pretrain"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == ("Summary (metrics on synthetic_shapes_val, %; * = reused from an earlier run, its time then; "
                        "+ = continued after an interruption, the interrupted run's time included):")
    assert lines[2] == f"{'stage':<40} {'time':>6}  key metric"
    assert lines[3:] == [
        f"{'data (generate / reuse)':<40}   0:03  ",
        f"{'backbone (k-NN on val objects)':<40}   0:06* k-NN 96.0% (random init 64.0%)",
        f"{'Siamese DETR pretraining (no labels)':<40}   2:05+ AR@1/100 0.4/11.0",
        f"{'same model, random init':<40}   0:09  AR@1/100 0.0/0.2",
        f"{'finetune 10% labels from pretraining':<40}   1:01  AP 22.0  AP50 46.0",
        f"{'finetune 10% labels from scratch':<40}   1:10* AP 25.0  AP50 50.0",
        f"{'figures':<40}   0:02  ",
        "gain from Siamese DETR pretraining: -3.0 AP (one seed; the AP varies by about 2 between seeds here: "
        "python tools/compare_pretraining.py compares over several)",
    ]


def test_the_summary_table_without_resumed_steps_or_an_ap(capsys):
    """No resumed step: no `+` in the legend; a missing AP: `-` and no gain line."""
    summary = _table_summary()
    summary["ap"]["scratch"] = None
    _tool("run_demo").print_table(summary, {}, reused=set(), resumed=set())
    out = capsys.readouterr().out
    assert "(metrics on synthetic_shapes_val, %; * = reused from an earlier run, its time then):" in out
    assert f"{'finetune 10% labels from scratch':<40}   0:00  AP -  AP50 50.0" in out.splitlines()
    assert "gain" not in out and "*" not in out.split("\n", 3)[3]


def test_the_summary_table_names_the_machine(capsys):
    """The last line names the processor kind and the processors the demo had, which its numbers depend on."""
    summary = _table_summary()
    summary["machine"] = {"cpu": "AMD EPYC", "cpu_id": "vendor_id AuthenticAMD cpu family 25 model 1 stepping 1",
                          "torch_cpu_capability": "AVX2", "cpus": 2}
    _tool("run_demo").print_table(summary, {}, reused=set(), resumed=set())
    assert capsys.readouterr().out.splitlines()[-1] == (
        "machine: AMD EPYC (vendor_id AuthenticAMD cpu family 25 model 1 stepping 1), torch CPU kernels AVX2, "
        "2 CPUs (the floats, so the numbers, depend on the processor kind)")
    describe = _tool("run_demo").describe_machine
    assert describe({"cpu": "arm64", "cpu_id": "arm64", "torch_cpu_capability": "DEFAULT", "cpus": 1}) == (
        "arm64, torch CPU kernels DEFAULT, 1 CPU")


def test_the_readmes_sample_of_the_summary_table_is_what_the_demo_prints(capsys):
    """The README's Quick start shows the end of a real run, its long lines folded (continuations indented by two
    spaces). Printed again by ``print_table`` from the numbers read off its rows, the table must come out line for
    line as the README shows it, so the sample cannot drift from the demo's current format."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```text\nSummary (metrics on")
    block = readme[start + len("```text\n"):readme.index("```", start + 3)]
    shown = []
    for line in block.splitlines():
        if line.startswith("  "):
            shown[-1] += " " + line.strip()
        elif line:
            shown.append(line)
    rows = {line[:40].strip(): line[40:] for line in shown[2:9]}

    def numbers(stage):
        return [float(v) for v in re.findall(r"\d+\.\d+", rows[stage].split(None, 1)[1])]

    def seconds(stage):
        minutes, secs = rows[stage].split()[0].split(":")
        return 60 * int(minutes) + int(secs)

    knn, knn_random = numbers("backbone (k-NN on val objects)")
    ar1, ar100 = numbers("Siamese DETR pretraining (no labels)")
    ar1_random, ar100_random = numbers("same model, random init")
    ap_pre, ap50_pre = numbers("finetune 10% labels from pretraining")
    ap_scratch, ap50_scratch = numbers("finetune 10% labels from scratch")
    machine = re.fullmatch(r"machine: (.+) \((.+)\), torch CPU kernels (\w+), (\d+) CPUs \(.*\)", shown[10])
    summary = {"ap": {"pretrained": ap_pre, "scratch": ap_scratch},
               "ap50": {"pretrained": ap50_pre, "scratch": ap50_scratch},
               "ar1_pretrained_no_finetune": ar1, "ar100_pretrained_no_finetune": ar100,
               "ar1_random_init_no_finetune": ar1_random, "ar100_random_init_no_finetune": ar100_random,
               "backbone_knn_accuracy": knn, "backbone_knn_accuracy_random_init": knn_random,
               "machine": {"cpu": machine[1], "cpu_id": machine[2], "torch_cpu_capability": machine[3],
                           "cpus": int(machine[4])}}
    times = {key: seconds(stage) for key, stage in [
        ("data", "data (generate / reuse)"), ("backbone", "backbone (k-NN on val objects)"),
        ("pretrain", "Siamese DETR pretraining (no labels)"), ("random-init eval", "same model, random init"),
        ("finetune (pretrained)", "finetune 10% labels from pretraining"),
        ("finetune (scratch)", "finetune 10% labels from scratch"), ("figures", "figures")]}
    _tool("run_demo").print_table(summary, times, reused=set(), resumed=set())
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines() if line]
    # the gain is taken from the unrounded APs: the README's may differ from the rounded ones' by 0.1
    gain = re.compile(r"(?<=^gain from Siamese DETR pretraining: )[-+]\d+\.\d")
    assert abs(float(gain.search(shown[9])[0]) - float(gain.search(printed[9])[0])) <= 0.1 + 1e-9
    assert [gain.sub("G", line) for line in printed] == [gain.sub("G", line) for line in shown[:len(printed)]]
    assert shown[len(printed)].startswith("Demo finished in ")


def test_demo_seconds_by_hand():
    """Two at a time: data + backbone + the longer of pretraining 10 and random-init eval 3 + the longer of the
    finetunings (pretrained 5, scratch 8) + figures = 1 + 2 + 10 + 8 + 1 = 22 (not a chain pretraining ->
    pretrained finetuning beside scratch -> random-init, 19); one at a time: the sum, 30."""
    tool = _tool("run_demo")
    times = {"data": 1.0, "backbone": 2.0, "pretrain": 10.0, "finetune (pretrained)": 5.0,
             "finetune (scratch)": 8.0, "random-init eval": 3.0, "figures": 1.0}
    assert tool.demo_seconds(times, 2) == 22.0
    assert tool.demo_seconds(times, 3) == 22.0
    assert tool.demo_seconds(times, 1) == 30.0
    # the other member of each pair the longer one: 1 + 2 + 12 + 6 + 1
    assert tool.demo_seconds(dict(times, **{"finetune (pretrained)": 6.0, "finetune (scratch)": 4.0,
                                            "random-init eval": 12.0}), 2) == 22.0
    without_figures = {k: v for k, v in times.items() if k != "figures"}
    assert tool.demo_seconds(without_figures, 2) == 21.0


def test_schedule_overrides_of_the_demo_drop_the_lr_at_80_percent():
    assert _tool("run_demo").schedule_overrides(10) == [
        "train.max_iter=10", "lr_multiplier.milestones=[8]", "lr_multiplier.num_updates=10"]
    assert _tool("run_demo").schedule_overrides(1) == [
        "train.max_iter=1", "lr_multiplier.milestones=[1]", "lr_multiplier.num_updates=2"]


def test_each_step_time_of_the_demo_is_its_own(demo_env, monkeypatch):
    """run with the steps, the data command and the figures stood in for: the seconds ``parallel`` returns for
    each job (a distinct number per job) land under that job's stage in summary.json's stage_seconds."""
    import siamese_detr.demo.plots as plots
    import siamese_detr.demo.runner as runner

    seconds = {"pretrain": 100.0, "finetune scratch": 200.0, "random-init eval": 300.0, "finetune pretrained": 700.0}

    class FakeRunner:
        def __init__(self, root, log_dir):
            self.environment = {"code": "c", "software": {"torch": "fake"}, "machine": {"cpu": "fake"}}
            self.reused, self.resumed = {"backbone"}, set()

        def step(self, name, folder, cmd, config=None, overrides=None, inputs=None, total=None):
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "model_final.pth").write_text("weights")
            return 50.0

        def parallel(self, jobs, max_parallel=2):
            return [seconds[job["name"]] for job in jobs]

    def command(cmd, *args, **kwargs):  # the data command, and plot_metrics.py writing its figure
        cmd = [str(c) for c in cmd]
        if "--output" in cmd:
            Path(cmd[cmd.index("--output") + 1]).write_text("png")
        return subprocess.CompletedProcess(cmd, 0)

    def figure(output):
        Path(output).write_text("png")

    monkeypatch.setattr(runner, "StepRunner", FakeRunner)
    monkeypatch.setattr(subprocess, "run", command)
    monkeypatch.setattr(plots, "eval_history", lambda *args, **kwargs: [])
    monkeypatch.setattr(plots, "plot_ap_curves", lambda curves, output, title: figure(output))
    monkeypatch.setattr(plots, "draw_detections", lambda config, runs, output, top_k: figure(output))
    out = demo_env / "demo"
    assert _tool("run_demo").main(["--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stage_seconds"]
    assert {k: stages[k] for k in ("backbone", "pretrain", "finetune (scratch)", "random-init eval",
                                   "finetune (pretrained)")} == {
        "backbone": 50.0, "pretrain": 100.0, "finetune (scratch)": 200.0, "random-init eval": 300.0,
        "finetune (pretrained)": 700.0}
    assert summary["reused_steps"] == ["backbone"]
    # two at a time: max(pretraining 100, random-init eval 300) + max(finetunings 700, 200)
    assert summary["minutes"] * 60 == pytest.approx(stages["data"] + 50.0 + 300.0 + 700.0 + stages["figures"])
