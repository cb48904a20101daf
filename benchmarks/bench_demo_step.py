#!/usr/bin/env python
"""Where the demo's training time goes, kind of op by kind of op, and whether ``torch.compile`` shortens it.

    python benchmarks/bench_demo_step.py [--steps 20] [--warmup 10] [--profile-steps 5] [--threads 1]
        [--configs pretrain finetune] [--modes eager compile] [--device cpu|cuda] [--no-append]

``make demo``'s time is mostly two chained trainings, the Siamese DETR pretraining
(``configs/demo/demo_siamese_pretrain.py``) and the detector finetuning from it (``configs/demo/demo_detector.py``).
For each, one training step (forward, backward, AdamW step) on batches of the config's own training loader (the
demo's augmentations, image sizes and batch of 4, with the demo's seed 0; made before any timing, so every process
of a config steps through the same batches, which the report checks), with ``--threads`` torch threads (the demo
gives each of its steps 1):

* ``eager``, as the demo runs: seconds per step after ``--warmup`` steps, then ``--profile-steps`` more steps under
  ``torch.profiler``: the share of the step's self time (CPU time on the CPU, kernel time on CUDA) in each kind of
  op (:data:`OP_CATEGORIES`: the linear layers' matrix products, the deformable attention's ``grid_sample``
  forward and backward, the frozen backbone's convolutions and pooling, ...);
* ``compile``: the same step with ``torch.compile(dynamic=True)`` on the Transformer's ``encode`` and ``decode``
  (the part that trains; the frozen backbone and the matcher stay eager), compiled from an empty inductor cache
  as on a first run: the first step (where the compilation happens), the warm-up, seconds per step after it,
  the ratio to the eager step, and how many graphs dynamo compiled (a new input size can cost another), in all
  and in the timed steps (their time includes those compilations, as a training's would).

Each (config, mode) runs in a fresh process. The weights are random (seed 0; the pretraining's backbone is not
the demo's trained one): the time of a step does not depend on what its weights have learned. Results are printed
and appended to ``benchmarks/RESULTS.md``.
"""

import argparse
import hashlib
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from bench_args import at_least, parse_device_benchmark_args
from bench_child import answer_if_child, run_child_process
from bench_inputs import build_training, time_step  # benchmarks/ is on sys.path when run as a script
from machine_info import describe_machine
from results_md import append_section

from siamese_detr.utils.cli_types import ExtendList

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

ROOT = Path(__file__).resolve().parents[1]
STEP_CONFIGS = {"pretrain": "configs/demo/demo_siamese_pretrain.py", "finetune": "configs/demo/demo_detector.py"}
MODES = ("eager", "compile")
# (label, exact op names, substrings of op names); an op goes to the first category that names it, else "other"
OP_CATEGORIES = (
    ("matrix products (linear layers)", {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv",
                                         "aten::mv"}, ()),
    ("grid_sample (deformable attention)", set(), ("grid_sampler",)),
    ("convolution + pooling (frozen backbone)", set(), ("convolution", "pool")),
    ("attention kernels (softmax, SDPA)", set(), ("scaled_dot_product", "softmax")),
    ("RoIAlign (region features)", set(), ("roi_align",)),
)
OTHER = "other ops (elementwise, copies, reductions, optimizer)"


def op_category(name: str) -> str:
    """The :data:`OP_CATEGORIES` label of a profiler op name (``aten::mm``), or :data:`OTHER`."""
    for label, exact, parts in OP_CATEGORIES:
        if name in exact or any(part in name for part in parts):
            return label
    return OTHER


def category_seconds(op_times, steps: int) -> dict:
    """Seconds per step in each category, from ``(op name, self seconds over all profiled steps)`` pairs; every
    label of :data:`OP_CATEGORIES` and :data:`OTHER`, in that order (0.0 where no op fell in it)."""
    out = {label: 0.0 for label, _, _ in OP_CATEGORIES}
    out[OTHER] = 0.0
    for name, seconds in op_times:
        out[op_category(name)] += seconds / steps
    return out


def profile_summary(op_stats, steps: int, top: int = 3) -> dict:
    """From ``(op name, self seconds, calls)`` over ``steps`` profiled steps: ``categories``
    (:func:`category_seconds`), and of the :data:`OTHER` ops the ``top`` largest (``[name, seconds per step]``)
    and their number of calls per step (``other_calls``)."""
    other = sorted((row for row in op_stats if op_category(row[0]) == OTHER), key=lambda row: -row[1])
    return {
        "categories": category_seconds([(name, seconds) for name, seconds, _ in op_stats], steps),
        "other_top": [[name, seconds / steps] for name, seconds, _ in other[:top]],
        "other_calls": sum(calls for _, _, calls in other) / steps,
    }


def load_step_config(step: str):
    """The demo config of ``step``, its training loader in this process (no worker processes)."""
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(str(ROOT / STEP_CONFIGS[step]))
    cfg.dataloader.train.num_workers = 0
    return cfg


def loader_batches(cfg, count: int, seed: int = 0) -> list:
    """The first ``count`` batches of the config's training loader, every random generator seeded with ``seed``
    first (the same batches in every fresh process)."""
    from detectron2.config import instantiate
    from detectron2.utils.env import seed_all_rng

    seed_all_rng(seed)
    batches = iter(instantiate(cfg.dataloader.train))
    return [next(batches) for _ in range(count)]


def inputs_digest(batches) -> str:
    """A short hash of the batches' file names and tensors (key, shape, dtype and bytes): equal in two processes
    that stepped through the same inputs."""
    digest = hashlib.sha1()
    for sample in (sample for batch in batches for sample in batch):
        digest.update(str(sample.get("file_name")).encode())
        for key in sorted(k for k, v in sample.items() if isinstance(v, torch.Tensor)):
            tensor = sample[key].contiguous()
            digest.update(f"{key}{list(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:12]


def compile_transformer(model) -> None:
    """``torch.compile(dynamic=True)`` on ``model.transformer``'s ``encode`` and ``decode`` (what the DETR
    meta-architectures call), in place."""
    transformer = model.transformer
    for name in ("encode", "decode"):
        setattr(transformer, name, torch.compile(getattr(transformer, name), dynamic=True))


def profile_training_steps(model, optimizer, batches, device: str) -> dict:
    """:func:`profile_summary` of ``batches``' steps under ``torch.profiler`` (self CPU time on the CPU, self
    kernel time on CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for batch in batches:
            time_step(model, optimizer, batch, device)
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    return profile_summary([(e.key, getattr(e, attr) / 1e6, e.count) for e in prof.key_averages()], len(batches))


def run_child(step: str, mode: str, steps: int, warmup: int, profile_steps: int, threads: int, device: str) -> dict:
    """One (config, mode) measurement; meant to run in a fresh process."""
    from detectron2.utils.events import EventStorage

    torch.set_num_threads(threads)
    cfg = load_step_config(step)
    profiled = profile_steps if mode == "eager" else 0
    batches = loader_batches(cfg, warmup + steps + profiled)
    model, optimizer = build_training(cfg, device)
    if mode == "compile":
        compile_transformer(model)
    graphs = []  # graphs dynamo compiled in this process: after the warm-up, then after the timed steps
    with EventStorage():
        times = [time_step(model, optimizer, batch, device) for batch in batches[:warmup]]
        graphs.append(_graphs_compiled())
        times += [time_step(model, optimizer, batch, device) for batch in batches[warmup:warmup + steps]]
        graphs.append(_graphs_compiled())
        profile = profile_training_steps(model, optimizer, batches[warmup + steps:], device) if profiled else None
    return {
        "step": step, "mode": mode, "config": STEP_CONFIGS[step], "first_s": times[0],
        "warmup_s": sum(times[:warmup]), "seconds": sum(times[warmup:]) / steps, "profile": profile,
        "graphs": graphs if mode == "compile" else None, "inputs": inputs_digest(batches[:warmup + steps]),
    }


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def run_in_subprocess(*row) -> dict:
    """:func:`run_child` of ``row`` in a fresh process with an empty inductor cache (its compilation is a first
    run's, as in a fresh ``make demo``)."""
    with tempfile.TemporaryDirectory(prefix="bench_demo_step_inductor_") as cache:
        return run_child_process(__file__, row, env=dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache))


def report(args, rows) -> list:
    """The RESULTS.md section: one row per (config, mode), the eager profile of each config, and the reading."""
    command = "python benchmarks/bench_demo_step.py " + " ".join(sys.argv[1:])
    eager = {r["step"]: r for r in rows if r["mode"] == "eager"}
    lines = [
        "", f"## bench_demo_step.py ({describe_machine()})", "",
        f"Command: `{command.strip()}` (device {args.device}, {args.threads} torch thread(s) per process, "
        f"{args.warmup} warm-up steps, then {args.steps} timed; {args.profile_steps} more eager steps profiled). "
        f"One training step (forward, backward, AdamW) of the demo's configs on the first batches of their own "
        f"training loaders (seed 0, random weights); `compile` = `torch.compile(dynamic=True)` on the "
        f"Transformer's encode and decode, compiled from an empty inductor cache.", "",
        "| step | config | mode | first step s | warm-up s | s/it | x eager | graphs compiled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = eager.get(r["step"])
        ratio = f"{r['seconds'] / base['seconds']:.2f}x" if base else "-"
        graphs = "-" if r["graphs"] is None else \
            f"{r['graphs'][1]} ({r['graphs'][1] - r['graphs'][0]} in the timed steps)"
        lines.append(f"| {r['step']} | `{r['config']}` | {r['mode']} | {r['first_s']:.2f} | {r['warmup_s']:.1f} "
                     f"| {r['seconds']:.3f} | {ratio} | {graphs} |")
    same = {step: len({r["inputs"] for r in rows if r["step"] == step}) == 1 for step in eager}
    profiled = [r for r in eager.values() if r["profile"]]
    if profiled:
        labels = list(profiled[0]["profile"]["categories"])
        lines += ["", "Eager step, self time per kind of op (seconds per step and share of the profiled total):", "",
                  "| step | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for r in profiled:
            seconds = r["profile"]["categories"].values()
            cells = [f"{s:.3f} ({100 * s / sum(seconds):.0f}%)" for s in seconds]
            lines.append(f"| {r['step']} | " + " | ".join(cells) + " |")
    lines.append("")
    for step, r in eager.items():
        lines.append(" ".join([f"* {step}:", *_profile_reading(r["profile"]), *(
            f"compiled: {c['seconds'] / r['seconds']:.2f} times the eager step's time after {args.warmup} warm-up "
            f"steps, the first step {c['first_s']:.0f} s (eager {r['first_s']:.1f} s), {c['graphs'][1]} graphs "
            f"({c['graphs'][1] - c['graphs'][0]} of them compiled in the timed steps)."
            for c in rows if c["step"] == step and c["mode"] == "compile"),
            f"Every process stepped through the same batches: {same[step]}."]))
    return lines


def _profile_reading(profile) -> list:
    """The reading's sentences on one eager profile: the largest named kind of op, and what the other ops are."""
    if not profile:
        return []
    categories = profile["categories"]
    total = sum(categories.values())
    label, seconds = max(((k, v) for k, v in categories.items() if k != OTHER), key=lambda kv: kv[1])
    top = ", ".join(f"{name} {100 * s / total:.0f}%" for name, s in profile["other_top"])
    return [f"largest named kind of op: {label}, {100 * seconds / total:.0f}% of the profiled time;",
            f"other ops {100 * categories[OTHER] / total:.0f}% in {profile['other_calls']:.0f} calls per step "
            f"(largest: {top})."]


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; counts below their minimum or a device that is not here are refused."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=at_least(1), default=20, help="timed steps after the warm-up (default 20)")
    parser.add_argument("--warmup", type=at_least(1, "the first step compiles"), default=10,
                        help="untimed steps first; a compiled step may compile again for new input sizes "
                             "(default 10)")
    parser.add_argument("--profile-steps", type=at_least(0), default=5,
                        help="eager steps profiled after the timed ones; 0: no profile (default 5)")
    parser.add_argument("--threads", type=at_least(1), default=1, help="torch threads per process (the demo's 1)")
    parser.add_argument("--configs", action=ExtendList, nargs="+", default=list(STEP_CONFIGS),
                        choices=list(STEP_CONFIGS), help="which of the demo's trainings (default: both)")
    parser.add_argument("--modes", action=ExtendList, nargs="+", default=list(MODES), choices=MODES,
                        help="eager (as the demo runs) and/or compile (default: both)")
    return parse_device_benchmark_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    if answer_if_child(args, run_child):
        return
    rows = []
    for step in args.configs:
        for mode in args.modes:
            r = run_in_subprocess(step, mode, args.steps, args.warmup, args.profile_steps, args.threads, args.device)
            rows.append(r)
            print(f"{step} {mode}: {r['seconds']:.3f} s/it (first step {r['first_s']:.1f} s)", flush=True)
    lines = report(args, rows)
    print("\n".join(lines))
    if not args.no_append:
        append_section(lines)


if __name__ == "__main__":
    main()
