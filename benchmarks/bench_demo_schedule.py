#!/usr/bin/env python
"""Wall-clock time of the whole demo (``tools/run_demo.py``) in its order of the steps against the order it had
until 2026-12-06, measured in one run.

    python benchmarks/bench_demo_schedule.py [--rounds 2] [--pretrain-iters 150] [--finetune-iters 200]
        [--eval-period 50] [--no-append]

The demo's order (``run_demo.training_jobs``, two steps at a time): the pretraining beside the random-init
evaluation, then the two finetunings side by side. The earlier order: the scratch finetuning beside the
pretraining, the pretrained finetuning in the slot the pretraining frees, then the random-init evaluation.
Every step is the same command in both orders (one torch thread each), so both must give the same numbers in
``summary.json``; this benchmark checks that they do.

Each round runs the demo once in each order, in a fresh output folder under a temporary directory, at reduced
iterations (the defaults are a quarter of the demo's, with four evaluations per finetuning as in the demo);
the first order alternates between rounds. Each run's output goes to ``bench.log`` in its folder (the folders
are deleted at the end, and kept when a run fails). Prints each
run's seconds, the sums and the ratio earlier / current (above 1: the current order is faster); the table is
appended to ``benchmarks/RESULTS.md``. The dataset is generated on first use in ``$DETECTRON2_DATASETS``
(default ``./datasets``) and then reused by every run.
"""
import argparse
import contextlib
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_args import at_least  # benchmarks/ is on sys.path when run as a script
from machine_info import describe_machine
from results_md import append_section

ROOT = Path(__file__).resolve().parents[1]
ORDERS = ("current", "earlier")
# summary.json fields that every order must reproduce to the last digit
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


def run_order(run_demo, order: str, output: Path, demo_args) -> float:
    """One whole demo in ``order`` into ``output`` (its terminal output into ``output/bench.log``); returns its
    wall-clock seconds. Raises if the demo does not finish."""
    current = run_demo.training_jobs
    if order == "earlier":
        run_demo.training_jobs = earlier_order(current)
    output.mkdir(parents=True)
    try:
        with open(output / "bench.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            start = time.perf_counter()
            status = run_demo.main(["--output", str(output)] + list(demo_args))
            seconds = time.perf_counter() - start
    finally:
        run_demo.training_jobs = current
    if status != 0:
        raise SystemExit(f"error: the demo in the {order} order ended with status {status}; see {output}/bench.log")
    return seconds


def numbers(output: Path) -> dict:
    summary = json.loads((output / "summary.json").read_text())
    return {key: summary.get(key) for key in SAME_NUMBERS}


def order_of_round(round_index: int):
    """Round 0 runs the current order first, round 1 the earlier one first, and so on."""
    return ORDERS if round_index % 2 == 0 else ORDERS[::-1]


def report(runs, same: bool, command: str, machine: str):
    """Markdown lines of the result: ``runs`` is a list of ``(round, order, seconds)``."""
    totals = {order: sum(s for _, o, s in runs if o == order) for order in ORDERS}
    lines = [f"\n## bench_demo_schedule.py ({machine})\n", f"Command: `{command}`\n",
             "| round | order | seconds |", "|---|---|---|"]
    lines += [f"| {r + 1} | {order} | {seconds:.1f} |" for r, order, seconds in runs]
    lines += ["", f"Sum: current {totals['current']:.1f} s, earlier {totals['earlier']:.1f} s; "
                  f"**ratio earlier / current = {totals['earlier'] / totals['current']:.3f}** "
                  f"(above 1: the current order is faster). Same summary.json numbers in every run: "
                  f"{'yes' if same else 'NO'}."]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=at_least(1), default=2, help="runs per order (default: 2)")
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
        for order in order_of_round(r):
            output = tmp / f"round{r + 1}_{order}"
            seconds = run_order(run_demo, order, output, demo_args)
            runs.append((r, order, seconds))
            seen.append(numbers(output))
            print(f"round {r + 1}, {order} order: {seconds:.1f} s", flush=True)
    shutil.rmtree(tmp)
    same = all(n == seen[0] for n in seen)
    command = "python benchmarks/bench_demo_schedule.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = report(runs, same, command.strip(), describe_machine())
    print("\n".join(lines))
    if not args.no_append:
        append_section(lines)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
