"""benchmarks/bench_demo_schedule.py: the earlier order it rebuilds from ``run_demo.training_jobs`` (the same
jobs and commands, started in the order of before 2026-12-07 by the real ``StepRunner.parallel``), and its
arithmetic, driven with a stand-in demo whose runs take known seconds on a fake clock."""
import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from script_modules import load_script
from siamese_detr.demo.runner import StepRunner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return load_script(ROOT / "benchmarks" / "bench_demo_schedule.py", "test_bench_demo_schedule_module")


def _demo_jobs(bench, tmp_path, training_jobs=None):
    run_demo = bench.load_run_demo()
    args = argparse.Namespace(seed=None, pretrain_iters=None, finetune_iters=None, eval_period=None)
    return (training_jobs or run_demo.training_jobs)(args, tmp_path / "demo", tmp_path / "backbone.pth", {})[0]


def test_the_earlier_order_has_the_same_jobs_and_starts_the_scratch_finetuning_beside_the_pretraining(
        bench, tmp_path, monkeypatch):
    current = _demo_jobs(bench, tmp_path)
    earlier = _demo_jobs(bench, tmp_path, bench.earlier_order(bench.load_run_demo().training_jobs))
    assert [job["name"] for job in earlier] == ["pretrain", "finetune scratch", "finetune pretrained",
                                                "random-init eval"]
    by_name = {job["name"]: job for job in current}
    for job in earlier:  # the same commands, only the scratch finetuning's wait removed
        expected = {k: v for k, v in by_name[job["name"]].items() if not (job["name"] == "finetune scratch"
                                                                          and k == "after")}
        assert job == expected
    assert by_name["finetune scratch"]["after"] == ["pretrain"]
    assert "after" not in earlier[1]

    # started by the real runner with two slots (stand-in commands that end at once): the scratch finetuning
    # starts second, before the pretraining has been polled as finished
    started = []
    launch = StepRunner._launch

    def recording_launch(self, **job):
        started.append(job["name"])
        return launch(self, **job)

    monkeypatch.setattr(StepRunner, "_launch", recording_launch)
    stand_ins = [dict(name=job["name"], folder=job["folder"], after=job.get("after", ()),
                      cmd=[sys.executable, "-c", ""]) for job in earlier]
    StepRunner(tmp_path, tmp_path).parallel(stand_ins, max_parallel=2)
    assert started[:2] == ["pretrain", "finetune scratch"]


def test_the_benchmark_alternates_the_orders_and_works_out_the_ratio(bench, monkeypatch, capsys):
    """Two rounds: current 100 s / earlier 110 s, then earlier 130 s / current 120 s: sums 220 and 240, ratio
    240 / 220 = 1.091; the earlier order is in place only during its runs."""
    clock = SimpleNamespace(t=0.0)
    seconds = iter([100.0, 110.0, 130.0, 120.0])
    seen_orders = []

    def fake_main(argv):
        out = Path(argv[argv.index("--output") + 1])
        seen_orders.append("current" if fake.training_jobs is real_jobs else "earlier")
        assert argv[argv.index("--pretrain-iters") + 1] == "7"
        clock.t += next(seconds)
        (out / "summary.json").write_text(json.dumps({"ap": {"pretrained": 1.5, "scratch": 2.5}}))
        return 0

    def real_jobs(*args):
        return [], {}

    fake = SimpleNamespace(training_jobs=real_jobs, main=fake_main)
    monkeypatch.setattr(bench, "load_run_demo", lambda: fake)
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: clock.t))
    assert bench.main(["--rounds", "2", "--pretrain-iters", "7", "--no-append"]) == 0
    assert seen_orders == ["current", "earlier", "earlier", "current"]
    assert fake.training_jobs is real_jobs
    out = capsys.readouterr().out
    assert "| 1 | current | 100.0 |" in out and "| 2 | earlier | 130.0 |" in out
    assert "Sum: current 220.0 s, earlier 240.0 s; **ratio earlier / current = 1.091**" in out
    assert "Same summary.json numbers in every run: yes." in out


def test_the_benchmark_fails_when_the_orders_give_different_numbers(bench, monkeypatch, capsys):
    aps = iter([20.0, 20.0000001])

    def fake_main(argv):
        out = Path(argv[argv.index("--output") + 1])
        (out / "summary.json").write_text(json.dumps({"ap": {"pretrained": next(aps)}}))
        return 0

    monkeypatch.setattr(bench, "load_run_demo", lambda: SimpleNamespace(training_jobs=None, main=fake_main))
    assert bench.main(["--rounds", "1", "--no-append"]) == 1
    assert "Same summary.json numbers in every run: NO." in capsys.readouterr().out


def test_a_demo_that_fails_stops_the_benchmark_naming_its_log_which_is_kept(bench, monkeypatch, tmp_path):
    def failing_main(argv):
        print("the demo's own error")
        return 2

    monkeypatch.setattr(bench.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "kept"))
    (tmp_path / "kept").mkdir()
    monkeypatch.setattr(bench, "load_run_demo", lambda: SimpleNamespace(training_jobs=None, main=failing_main))
    with pytest.raises(SystemExit, match=r"current order ended with status 2; see .*round1_current/bench.log"):
        bench.main(["--rounds", "1", "--no-append"])
    assert (tmp_path / "kept" / "round1_current" / "bench.log").read_text() == "the demo's own error\n"
