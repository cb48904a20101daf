#!/usr/bin/env python
"""Wall-clock and CPU time of the whole demo (``tools/run_demo.py``) in its schedule against an alternative,
measured in one run.

    python benchmarks/bench_demo_schedule.py [--against earlier-order|two-threads] [--rounds 2]
        [--pretrain-iters 150] [--finetune-iters 200] [--eval-period 50] [--no-append]

The demo's schedule (``run_demo.training_jobs``, two steps at a time, one torch thread each): the pretraining
beside the random-init evaluation, then the two finetunings side by side. The alternatives (``--against``):

- ``earlier-order`` (default): the order the demo had until 2026-12-06, the scratch finetuning beside the
  pretraining, the pretrained finetuning in the slot the pretraining frees, then the random-init evaluation.
  Every step is the same command in both, so both must give the same numbers in ``summary.json``; this
  benchmark checks that they do and fails when they do not.
- ``two-threads``: the same steps one at a time with two torch threads each (``run_demo.py --threads 2
  --parallel 1``). More threads split some float sums differently, so its numbers may differ from the
  demo's; the table says whether they do, and the benchmark fails only when a schedule does not give the
  same numbers in each of its runs.

Each round runs the demo once in each schedule, in a fresh output folder under a temporary directory, at
reduced iterations (the defaults are a quarter of the demo's, with four evaluations per finetuning as in the
demo); the first schedule alternates between rounds. Each run's output goes to ``bench.log`` in its folder (the
folders are deleted at the end, and kept when a run fails). Prints each run's seconds and CPU seconds (user +
system of the demo's processes), the sums and the ratios alternative / demo (above 1: the demo's schedule is
faster, or uses less CPU time); the table is appended to ``benchmarks/RESULTS.md``. The dataset is generated on
first use in ``$DETECTRON2_DATASETS`` (default ``./datasets``) and then reused by every run.
"""
import argparse
import contextlib
import importlib.util
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_args import at_least  # benchmarks/ is on sys.path when run as a script
from machine_info import describe_machine
from results_md import append_section

ROOT = Path(__file__).resolve().parents[1]
CURRENT = "current"
# --against: (the alternative's name in the table, run_demo.py flags it adds, must it give the same numbers)
ALTERNATIVES = {
    "earlier-order": ("earlier", [], True),
    "two-threads": ("two-threads", ["--threads", "2", "--parallel", "1"], False),
}
# summary.json fields compared between the runs
SAME_NUMBERS = ("ap", "ap50", "ar1_pretrained_no_finetune", "ar100_pretrained_no_finetune",
                "ar1_random_init_no_finetune", "ar100_random_init_no_finetune", "backbone_knn_accuracy")


def load_run_demo():
    """``tools/run_demo.py`` as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_run_demo", ROOT / "tools" / "run_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def earlier_order(training_jobs):
    """``training_jobs`` with the order before 2026-12-07: the same four jobs, the scratch finetuning no longer
    waiting for the pretraining, listed as pretraining, scratch finetuning, pretrained finetuning, random-init
    evaluation (``StepRunner.parallel`` starts jobs in list order as soon as they may)."""

    def jobs_in_earlier_order(*args, **kwargs):
        jobs, folders = training_jobs(*args, **kwargs)
        by_name = {job["name"]: job for job in jobs}
        scratch = {key: value for key, value in by_name["finetune scratch"].items() if key != "after"}
        order = [by_name["pretrain"], scratch, by_name["finetune pretrained"], by_name["random-init eval"]]
        if len(order) != len(jobs):
            raise RuntimeError(f"run_demo.training_jobs returned the jobs {sorted(by_name)}; this benchmark knows four")
        return order, folders

    return jobs_in_earlier_order


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished children (the demo's steps and their loader
    workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_schedule(run_demo, schedule: str, output: Path, demo_args):
    """One whole demo in ``schedule`` (``CURRENT`` or an ``ALTERNATIVES`` key) into ``output`` (its terminal
    output into ``output/bench.log``); returns its wall-clock and CPU seconds. Raises if the demo does not
    finish."""
    current = run_demo.training_jobs
    extra_flags = []
    if schedule == "earlier-order":
        run_demo.training_jobs = earlier_order(current)
    elif schedule != CURRENT:
        extra_flags = ALTERNATIVES[schedule][1]
    output.mkdir(parents=True)
    try:
        with open(output / "bench.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            start, cpu_start = time.perf_counter(), children_cpu_seconds()
            status = run_demo.main(["--output", str(output)] + list(demo_args) + extra_flags)
            seconds, cpu_seconds = time.perf_counter() - start, children_cpu_seconds() - cpu_start
    finally:
        run_demo.training_jobs = current
    if status != 0:
        name = "demo's" if schedule == CURRENT else ALTERNATIVES[schedule][0]
        raise SystemExit(f"error: the demo in the {name} schedule ended with status {status}; see {output}/bench.log")
    return seconds, cpu_seconds


def numbers(output: Path) -> dict:
    summary = json.loads((output / "summary.json").read_text())
    return {key: summary.get(key) for key in SAME_NUMBERS}


def schedules_of_round(round_index: int, against: str):
    """Round 0 runs the demo's schedule first, round 1 the alternative first, and so on."""
    pair = (CURRENT, against)
    return pair if round_index % 2 == 0 else pair[::-1]


def ratio(numerator: float, denominator: float) -> str:
    """``numerator / denominator`` to three decimals, ``n/a`` when the denominator is not positive (no CPU
    time recorded)."""
    return f"{numerator / denominator:.3f}" if denominator > 0 else "n/a"


def same_numbers(seen) -> tuple:
    """``seen``: ``(schedule, summary numbers)`` of every run. Returns (does each schedule give the same
    numbers in all its runs, do the two schedules' first runs give the same numbers)."""
    first = {}
    for schedule, found in seen:
        first.setdefault(schedule, found)
    within = all(found == first[schedule] for schedule, found in seen)
    firsts = list(first.values())
    return within, all(found == firsts[0] for found in firsts)


def report(runs, same: tuple, against: str, command: str, machine: str):
    """Markdown lines of the result: ``runs`` is a list of ``(round, schedule, seconds, cpu seconds)``,
    ``same`` what :func:`same_numbers` returns."""
    label, _, required = ALTERNATIVES[against]
    names = {CURRENT: CURRENT, against: label}
    wall = {s: sum(r[2] for r in runs if r[1] == s) for s in names}
    cpu = {s: sum(r[3] for r in runs if r[1] == s) for s in names}
    yes = {True: "yes", False: "NO"}
    if required:
        numbers_line = f"Same summary.json numbers in every run: {yes[all(same)]}."
    else:
        numbers_line = (f"Same summary.json numbers in every run of a schedule: {yes[same[0]]}; between the "
                        f"schedules: {yes[same[1]]} (not required: the thread count changes float sums).")
    lines = [f"\n## bench_demo_schedule.py ({machine})\n", f"Command: `{command}`\n",
             "| round | schedule | seconds | CPU seconds |", "|---|---|---|---|"]
    lines += [f"| {r + 1} | {names[s]} | {seconds:.1f} | {cpu_seconds:.1f} |" for r, s, seconds, cpu_seconds in runs]
    lines += ["", f"Sum: {CURRENT} {wall[CURRENT]:.1f} s, {label} {wall[against]:.1f} s; "
                  f"**ratio {label} / {CURRENT} = {ratio(wall[against], wall[CURRENT])}** "
                  f"(above 1: the demo's schedule is faster). CPU time: {CURRENT} {cpu[CURRENT]:.1f} s, "
                  f"{label} {cpu[against]:.1f} s, ratio {ratio(cpu[against], cpu[CURRENT])}. " + numbers_line]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", choices=sorted(ALTERNATIVES), default="earlier-order",
                        help="the schedule to compare with the demo's (default: earlier-order)")
    parser.add_argument("--rounds", type=at_least(1), default=2, help="runs per schedule (default: 2)")
    parser.add_argument("--pretrain-iters", type=at_least(1), default=150, help="pretraining iterations (150)")
    parser.add_argument("--finetune-iters", type=at_least(1), default=200, help="finetuning iterations (200)")
    parser.add_argument("--eval-period", type=at_least(1), default=50, help="finetuning evaluation period (50)")
    parser.add_argument("--no-append", action="store_true", help="do not append the table to RESULTS.md")
    args = parser.parse_args(argv)
    demo_args = ["--pretrain-iters", str(args.pretrain_iters), "--finetune-iters", str(args.finetune_iters),
                 "--eval-period", str(args.eval_period)]
    run_demo = load_run_demo()
    runs, seen = [], []
    tmp = Path(tempfile.mkdtemp(prefix="bench_demo_schedule_"))  # kept when a run fails, for its bench.log
    for r in range(args.rounds):
        for schedule in schedules_of_round(r, args.against):
            output = tmp / f"round{r + 1}_{schedule}"
            seconds, cpu_seconds = run_schedule(run_demo, schedule, output, demo_args)
            runs.append((r, schedule, seconds, cpu_seconds))
            seen.append((schedule, numbers(output)))
            print(f"round {r + 1}, {schedule}: {seconds:.1f} s, {cpu_seconds:.1f} CPU s", flush=True)
    shutil.rmtree(tmp)
    same = same_numbers(seen)
    command = "python benchmarks/bench_demo_schedule.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = report(runs, same, args.against, command.strip(), describe_machine())
    print("\n".join(lines))
    if not args.no_append:
        append_section(lines)
    return 0 if all(same) or (same[0] and not ALTERNATIVES[args.against][2]) else 1


if __name__ == "__main__":
    sys.exit(main())
