"""benchmarks/bench_demo_schedule.py: the earlier order it rebuilds from ``run_demo.training_jobs`` (the same
jobs and commands, started in the order of before 2026-12-07 by the real ``StepRunner.parallel``), the flags of
its two-threads alternative, and its arithmetic, driven with a stand-in demo whose runs take known seconds and
CPU seconds on fake clocks."""
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


def _fake_clocks(bench, monkeypatch, wall_seconds, cpu_seconds):
    """Each demo run advances the wall clock and the children's CPU clock by the next of the given seconds."""
    clock = SimpleNamespace(wall=0.0, cpu=0.0)
    walls, cpus = iter(wall_seconds), iter(cpu_seconds)

    def advance():
        clock.wall += next(walls)
        clock.cpu += next(cpus)

    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: clock.wall))
    monkeypatch.setattr(bench, "children_cpu_seconds", lambda: clock.cpu)
    return advance


def _stand_in_demo(bench, monkeypatch, on_run, summaries):
    """Puts a stand-in ``run_demo`` module in the benchmark's hands: its ``main(argv)`` calls ``on_run(argv,
    earlier)`` (``earlier``: the benchmark has swapped in the earlier order of the steps) and writes the next of
    ``summaries`` as the run's ``summary.json``. Returns it; ``own_jobs`` is its own ``training_jobs``."""
    summaries = iter(summaries)

    def own_jobs(*args):
        return [], {}

    def main(argv):
        on_run(argv, fake.training_jobs is not own_jobs)
        out = Path(argv[argv.index("--output") + 1])
        (out / "summary.json").write_text(json.dumps(next(summaries)))
        return 0

    fake = SimpleNamespace(training_jobs=own_jobs, own_jobs=own_jobs, main=main)
    monkeypatch.setattr(bench, "load_run_demo", lambda: fake)
    return fake


def test_the_benchmark_alternates_the_orders_and_works_out_the_ratios(bench, monkeypatch, capsys):
    """Two rounds: current 100 s / earlier 110 s, then earlier 130 s / current 120 s: sums 220 and 240, ratio
    240 / 220 = 1.091; CPU 150 / 180, then 170 / 160: sums 310 and 350, ratio 1.129; the earlier order is in
    place only during its runs."""
    advance = _fake_clocks(bench, monkeypatch, [100.0, 110.0, 130.0, 120.0], [150.0, 180.0, 170.0, 160.0])
    seen_orders = []

    def on_run(argv, earlier):
        seen_orders.append("earlier" if earlier else "current")
        assert argv[argv.index("--pretrain-iters") + 1] == "7"
        assert "--threads" not in argv and "--parallel" not in argv
        advance()

    fake = _stand_in_demo(bench, monkeypatch, on_run, [{"ap": {"pretrained": 1.5, "scratch": 2.5}}] * 4)
    assert bench.main(["--rounds", "2", "--pretrain-iters", "7", "--no-append"]) == 0
    assert seen_orders == ["current", "earlier", "earlier", "current"]
    assert fake.training_jobs is fake.own_jobs
    out = capsys.readouterr().out
    assert "| 1 | current | 100.0 | 150.0 |" in out and "| 2 | earlier | 130.0 | 170.0 |" in out
    assert "Sum: current 220.0 s, earlier 240.0 s; **ratio earlier / current = 1.091**" in out
    assert "CPU time: current 310.0 s, earlier 350.0 s, ratio 1.129." in out
    assert "Same summary.json numbers in every run: yes." in out


def test_the_two_threads_alternative_runs_the_steps_one_at_a_time_with_two_threads(bench, monkeypatch, capsys):
    """Its runs, and only its, get ``--threads 2 --parallel 1``; the steps' order is left alone; other numbers
    than the demo's are reported, not a failure. One round: 100 s / 130 s, CPU 160 / 200 (ratios 1.3, 1.25)."""
    advance = _fake_clocks(bench, monkeypatch, [100.0, 130.0], [160.0, 200.0])
    flags = []

    def on_run(argv, earlier):
        assert not earlier
        flags.append(argv[argv.index("--threads"):] if "--threads" in argv else [])
        advance()

    _stand_in_demo(bench, monkeypatch, on_run, [{"ap": {"pretrained": 8.26}}, {"ap": {"pretrained": 7.54}}])
    assert bench.main(["--against", "two-threads", "--rounds", "1", "--no-append"]) == 0
    assert flags == [[], ["--threads", "2", "--parallel", "1"]]
    out = capsys.readouterr().out
    assert "| 1 | two-threads | 130.0 | 200.0 |" in out
    assert "**ratio two-threads / current = 1.300**" in out and "ratio 1.250" in out
    assert ("Same summary.json numbers in every run of a schedule: yes; between the schedules: NO (not required"
            in out)


def test_the_two_threads_alternative_fails_when_a_schedule_does_not_repeat_its_numbers(bench, monkeypatch, capsys):
    """Two rounds: current, two-threads, two-threads, current; the second two-threads run differs."""
    _stand_in_demo(bench, monkeypatch, lambda argv, earlier: None,
                   [{"ap": {"pretrained": ap}} for ap in (8.26, 7.54, 7.55, 8.26)])
    assert bench.main(["--against", "two-threads", "--rounds", "2", "--no-append"]) == 1
    assert "in every run of a schedule: NO; between the schedules: NO" in capsys.readouterr().out


@pytest.mark.parametrize("aps, expected", [
    ([1.0, 1.0, 1.0, 1.0], (True, True)),
    ([1.0, 2.0, 2.0, 1.0], (True, False)),
    ([1.0, 2.0, 2.0, 1.5], (False, False)),
    ([1.0, 1.0, 2.0, 1.0], (False, True)),  # the first runs agree, a later one does not
])
def test_same_numbers_within_each_schedule_and_between_their_first_runs(bench, aps, expected):
    schedules = ["current", "two-threads", "two-threads", "current"]
    seen = [(s, {"ap": ap}) for s, ap in zip(schedules, aps)]
    assert bench.same_numbers(seen) == expected


def test_the_benchmark_fails_when_the_orders_give_different_numbers(bench, monkeypatch, capsys):
    _stand_in_demo(bench, monkeypatch, lambda argv, earlier: None,
                   [{"ap": {"pretrained": 20.0}}, {"ap": {"pretrained": 20.0000001}}])
    assert bench.main(["--rounds", "1", "--no-append"]) == 1  # the earlier order must give the same numbers
    assert "Same summary.json numbers in every run: NO." in capsys.readouterr().out


def test_a_demo_that_fails_stops_the_benchmark_naming_its_log_which_is_kept(bench, monkeypatch, tmp_path):
    def failing_main(argv):
        print("the demo's own error")
        return 2

    monkeypatch.setattr(bench.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "kept"))
    (tmp_path / "kept").mkdir()
    monkeypatch.setattr(bench, "load_run_demo", lambda: SimpleNamespace(training_jobs=None, main=failing_main))
    with pytest.raises(SystemExit, match=r"the demo's schedule ended with status 2; see .*round1_current/bench.log"):
        bench.main(["--rounds", "1", "--no-append"])
    assert (tmp_path / "kept" / "round1_current" / "bench.log").read_text() == "the demo's own error\n"
