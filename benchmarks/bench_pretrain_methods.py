#!/usr/bin/env python
"""Siamese DETR vs UP-DETR vs DETReg pretraining cost, measured in one run on the same components.

    python benchmarks/bench_pretrain_methods.py [--size r50|tiny] [--variant conditional|vanilla]
        [--batch-size 4] [--iters 5] [--short-side 400] [--device cpu|cuda] [--memory rss|skip] [--no-append]

The three pretraining models are built from the SAME finetune model config (``configs/common/models/
conditional_detr_r50.py``, 100 queries — the setting of the Siamese DETR paper's supplementary Table 7 —
or ``detr_r50.py`` with ``--variant vanilla``) by ``siamese_detr_from`` / ``up_detr_from`` / ``detreg_from``
with their default settings (n = 10 regions / patches, K = 30 proposals, 128 px crops; ``--size tiny``
shrinks everything to the demo shape for the test suite). Inputs come from each method's own mapper
(``SiameseViewMapper``, ``UPDETRMapper``, ``DETRegMapper``) applied to the SAME images (built-in
``synthetic_shapes_train``, upsampled) with the SAME base resize (short side ``--short-side``, no random
resize, no flip / crop branch) and random proposals, prepared before timing, so only the model step is timed:
forward, backward, AdamW step with gradient clipping 0.1.

* **s/it**: the three methods run INTERLEAVED (one step each per round, the order rotating every round), so
  machine noise hits all three alike; mean over ``--iters`` rounds after one warm-up round.
* **peak memory**: each method runs its steps again in a FRESH subprocess, alone: in the timing process the
  other two models hold their weights, gradients and AdamW state on the device, which would count towards
  every method's peak. CUDA — ``torch.cuda.max_memory_allocated`` over the steps (weights, activations,
  gradients, optimiser state). CPU — ``tracemalloc`` does not see torch's allocator, so the child reports the
  peak resident set during the steps (``VmHWM`` of
  /proc/self/status, the kernel's high-water mark, reset right before the steps through
  /proc/self/clear_refs) minus the RSS at "model built, inputs ready": the memory of a training step
  (activations, gradients, AdamW state, allocator caches), not the weights. ``resource.getrusage().ru_maxrss``
  would be the same high-water mark but, in a child, starts at the parent's (Linux keeps it across exec).
  ``torch.profiler``'s memory events were not used: they slow every op and add their own buffers.
* **trainable parameters**: ``requires_grad`` parameters (the frozen backbone excluded).
* **profile**: per method, the step split by forward hooks into the frozen backbone on the image (Siamese: both
  views, one call) and on the crops (one call), encoder, decoder, the rest of the forward pass (matching,
  losses, heads, RoIAlign), backward, optimiser.

Ratios are to UP-DETR; the paper's Table 7 (one GPU, batch 4, Conditional DETR) is printed beside.
Results are printed and appended to ``benchmarks/RESULTS.md`` (``--no-append`` to skip).
"""

import argparse
import copy
import gc
import importlib.util
import json
import os
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_args import at_least, check_device  # noqa: E402
from machine_info import describe_machine  # noqa: E402
from results_md import append_section  # noqa: E402

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

METHODS = ("up_detr", "siamese_detr", "detreg")
LABELS = {"up_detr": "UP-DETR", "siamese_detr": "Siamese DETR", "detreg": "DETReg"}
# Siamese DETR supplementary Table 7: one GPU, batch 4, Conditional DETR (s/it, MB, M parameters)
PAPER = {"siamese_detr": (0.4036, 7528, 19.49), "up_detr": (0.3118, 7377, 19.23), "detreg": (0.3528, 8885, 19.23)}
STAGES = ("backbone image", "backbone crops", "encoder", "decoder", "rest of forward", "backward", "optimizer")


def _module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------- models
def build_model_configs(size: str, variant: str):
    """LazyConfigs of the three pretraining models from one finetune model config."""
    from detectron2.config import LazyConfig

    base = "conditional_detr_r50.py" if variant == "conditional" else "detr_r50.py"
    detr = LazyConfig.load(str(ROOT / "configs/common/models" / base)).model
    if size == "tiny":
        _module("configs/common/models/demo_shape.py", "bench_demo_shape").apply_demo_shape(detr)
    builders = {
        "up_detr": _module("configs/common/models/up_detr.py", "bench_up_detr").up_detr_from,
        "siamese_detr": _module("configs/common/models/siamese_detr.py", "bench_siamese").siamese_detr_from,
        "detreg": _module("configs/common/models/detreg.py", "bench_detreg").detreg_from,
    }
    regions = 5 if size == "tiny" else 10
    configs = {}
    for name, build in builders.items():
        kwargs = {"num_regions": regions} if name == "siamese_detr" else {}
        kwargs = {"num_patches": regions} if name == "up_detr" else kwargs
        cfg = build(copy.deepcopy(detr), **kwargs)
        cfg.allow_random_backbone = True  # random frozen weights cost the same as SwAV ones
        configs[name] = cfg
    return configs


# ----------------------------------------------------------------------------------------------- data
def build_batches(size: str, batch_size: int, short_side: int, seed: int = 0):
    """The same ``batch_size`` images through each method's mapper (same base resize, random proposals)."""
    from detectron2.data import DatasetCatalog
    from detectron2.data import transforms as T

    import siamese_detr.data  # noqa: F401  (registers the built-in dataset)
    from siamese_detr.data.detreg_mapper import DETRegMapper
    from siamese_detr.data.proposals.sources import RandomProposals
    from siamese_detr.data.siamese_mapper import SiameseViewMapper
    from siamese_detr.data.up_detr_mapper import UPDETRMapper

    n, k, crop = (5, 10, 32) if size == "tiny" else (10, 30, 128)
    resize = [T.ResizeShortestEdge(short_side, max_size=int(short_side * 1.5))]
    proposals = RandomProposals(num_boxes=256, seed=seed)
    mappers = {
        "up_detr": UPDETRMapper(num_patches=n, patch_size=crop, augmentation=resize, seed=seed),
        "siamese_detr": SiameseViewMapper(proposal_source=proposals, num_regions=n, crop_size=crop, seed=seed,
                                          short_side_range=(short_side, short_side),
                                          max_size=int(short_side * 1.5)),
        "detreg": DETRegMapper(proposal_source=proposals, num_proposals=k, crop_size=crop, seed=seed,
                               augmentation=resize, augmentation_with_crop=None),
    }
    dicts = DatasetCatalog.get("synthetic_shapes_train")
    batches = {}
    for name, mapper in mappers.items():
        out, i = [], 0
        while len(out) < batch_size:
            sample = mapper(dicts[i % len(dicts)])
            i += 1
            if sample is not None:
                out.append(sample)
        batches[name] = out
    return batches


# ------------------------------------------------------------------------------------------- stepping
class StageTimer:
    """Seconds per stage of a step from forward hooks on the backbone and wrappers of encode / decode."""

    def __init__(self, model, sync):
        self.sync, self.totals, self._start = sync, defaultdict(float), {}
        self.backbone_calls = 0  # call 0 of a step: the image (Siamese: all views); later calls: the crops
        model.backbone.register_forward_pre_hook(lambda *a: self._begin(self._backbone_stage()))
        model.backbone.register_forward_hook(lambda *a: self._end_backbone())
        for method, stage in (("encode", "encoder"), ("decode", "decoder")):
            original = getattr(model.transformer, method)

            def timed(*args, _original=original, _stage=stage, **kwargs):
                self._begin(_stage)
                out = _original(*args, **kwargs)
                self._end(_stage)
                return out

            setattr(model.transformer, method, timed)

    def _backbone_stage(self):
        return "backbone image" if self.backbone_calls == 0 else "backbone crops"

    def _end_backbone(self):
        self._end(self._backbone_stage())
        self.backbone_calls += 1

    def now(self):
        self.sync()
        return time.perf_counter()

    def _begin(self, stage):
        self._start[stage] = self.now()

    def _end(self, stage):
        self.totals[stage] += self.now() - self._start.pop(stage)


def make_runner(cfg, batch, device: str):
    """(model, step) where ``step()`` runs one timed training step and returns per-stage seconds."""
    from detectron2.config import instantiate
    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)
    model = instantiate(cfg).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    timer = StageTimer(model, sync)

    def step():
        timer.totals.clear()
        timer.backbone_calls = 0
        with EventStorage():
            t0 = timer.now()
            loss = sum(model(batch).values())
            t1 = timer.now()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t2 = timer.now()
            torch.nn.utils.clip_grad_norm_(params, 0.1)
            optimizer.step()
            t3 = timer.now()
        stages = dict(timer.totals)
        stages["rest of forward"] = (t1 - t0) - sum(stages.get(s, 0.0) for s in STAGES[:4])
        stages["backward"], stages["optimizer"], stages["total"] = t2 - t1, t3 - t2, t3 - t0
        return stages

    return model, step


def run_interleaved(configs, batches, iters: int, device: str):
    """Mean per-stage seconds and trainable parameters per method."""
    runners = {m: make_runner(configs[m], batches[m], device) for m in METHODS}
    params = {m: sum(p.numel() for p in r[0].parameters() if p.requires_grad) for m, r in runners.items()}
    for _, step in runners.values():  # warm-up round
        step()
    sums = {m: defaultdict(float) for m in METHODS}
    for i in range(iters):
        order = METHODS[i % 3:] + METHODS[:i % 3]
        for m in order:
            for stage, seconds in runners[m][1]().items():
                sums[m][stage] += seconds
    means = {m: {s: v / iters for s, v in sums[m].items()} for m in METHODS}
    return means, params


def memory_subprocess(method: str, args) -> float:
    """Peak memory (MiB) of ``--iters`` steps of one method alone in a fresh process (:func:`memory_child`)."""
    cmd = [sys.executable, __file__, "--memory-child", method, "--size", args.size, "--variant", args.variant,
           "--batch-size", str(args.batch_size), "--iters", str(args.iters), "--short-side", str(args.short_side),
           "--device", args.device]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {method} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


def proc_status_kib(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (resident high-water mark of this process's memory map) from
    /proc/self/status, KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_growth_mib(step, calls: int) -> tuple[float, bool]:
    """Peak RSS growth (MiB) of ``calls`` calls of ``step`` in this process: ``VmHWM`` after them minus ``VmRSS``
    before them, with ``VmHWM`` reset right before (see :func:`reset_peak_rss`; the bool says whether it was,
    otherwise an earlier, higher peak of the process may be what is measured).

    Unreachable reference cycles are collected first: one that a collection during the steps frees would
    lower the RSS under the baseline and hide as much growth (seen in the test suite, where earlier tests
    leave such garbage: two 64 MiB steps read as 64 MiB)."""
    gc.collect()
    fresh = reset_peak_rss()
    before = proc_status_kib("VmRSS")
    for _ in range(calls):
        step()
    return max(proc_status_kib("VmHWM") - before, 0) / 1024, fresh


def memory_child(args) -> float:
    """One method's steps alone in this (fresh) process, MiB (printed as JSON for the parent): on CUDA
    ``torch.cuda.max_memory_allocated`` over the steps (everything of the method: weights, activations,
    gradients, optimiser state); on the CPU the peak RSS during the steps minus the RSS right before them.

    The CPU peak is ``VmHWM``, the high-water mark of this process's own memory map, reset right before the steps.
    ``getrusage(RUSAGE_SELF).ru_maxrss`` is NOT usable in a child: Linux carries the parent's high-water mark
    across fork + exec into it (measured: every child reported the 2.7 GB of the parent holding three R50s)."""
    configs = build_model_configs(args.size, args.variant)
    batches = build_batches(args.size, args.batch_size, args.short_side)
    _, step = make_runner(configs[args.memory_child], batches[args.memory_child], args.device)
    del configs
    gc.collect()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        for _ in range(args.iters + 1):
            step()
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
        print(json.dumps({"peak_mib": peak}))
        return peak
    growth, fresh = rss_growth_mib(step, args.iters + 1)
    print(json.dumps({"peak_mib": growth, "peak_reset": fresh}))
    return growth


# ------------------------------------------------------------------------------------------- reporting
def report(args, means, memory, params, memory_kind: str) -> str:
    ref = means["up_detr"]["total"]
    lines = [
        f"## bench_pretrain_methods.py ({describe_machine()})", "",
        f"Command: `python benchmarks/bench_pretrain_methods.py {' '.join(sys.argv[1:])}` — device {args.device}, "
        f"{args.variant} DETR ({args.size}), batch {args.batch_size}, base short side {args.short_side}, "
        f"{args.iters} interleaved rounds after 1 warm-up; peak memory = {memory_kind}.", "",
        "| method | s/it | x UP-DETR | peak MiB | x UP-DETR | trainable M | paper s/it | paper MB | paper M "
        "| paper x UP-DETR (time / mem) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        t = means[m]["total"]
        mem = memory[m] if memory else float("nan")
        mem_ratio = mem / memory["up_detr"] if memory and memory["up_detr"] > 0 else float("nan")
        p = PAPER[m]
        lines.append(
            f"| {LABELS[m]} | {t:.4f} | {t / ref:.2f} | {mem:.0f} | {mem_ratio:.2f} | {params[m] / 1e6:.2f} | "
            f"{p[0]:.4f} | {p[1]} | {p[2]:.2f} | {p[0] / PAPER['up_detr'][0]:.2f} / {p[1] / PAPER['up_detr'][1]:.2f} |"
        )
    lines += ["", "Profile (mean seconds per step and share):", "",
              "| method | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]
    for m in METHODS:
        total = means[m]["total"]
        cells = [f"{means[m].get(s, 0.0):.4f} ({100 * means[m].get(s, 0.0) / total:.0f}%)" for s in STAGES]
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("r50", "tiny"), default="r50",
                   help="r50: the methods' default settings; tiny: the demo shape, for the tests (default: r50)")
    p.add_argument("--variant", choices=("conditional", "vanilla"), default="conditional",
                   help="the finetune model the three are built from (default: conditional)")
    p.add_argument("--batch-size", type=at_least(2, "Siamese DETR's SimSiam batch norm needs 2 images per view"),
                   default=4, help=">= 2 (Siamese DETR's SimSiam batch norm)")
    p.add_argument("--iters", type=at_least(1, "timed rounds"), default=5, help="timed rounds (default: 5)")
    p.add_argument("--short-side", type=at_least(32, "pixels"), default=400,
                   help="short side of the images, in pixels (default: 400)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                   help="default: cuda where available, else cpu")
    p.add_argument("--memory", choices=("rss", "skip"), default="rss",
                   help="peak memory per method in a fresh subprocess (CUDA: allocated; CPU: RSS growth)")
    p.add_argument("--no-append", action="store_true", help="print only, do not touch RESULTS.md")
    p.add_argument("--memory-child", choices=METHODS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_device(p, args.device)
    return args


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return ""
    configs = build_model_configs(args.size, args.variant)
    batches = build_batches(args.size, args.batch_size, args.short_side)
    means, params = run_interleaved(configs, batches, args.iters, args.device)
    print({m: round(means[m]["total"], 4) for m in METHODS}, "s/it;", params, "trainable parameters", flush=True)
    memory, kind = None, "not measured"
    if args.memory == "rss":
        memory = {m: memory_subprocess(m, args) for m in METHODS}
        kind = ("torch.cuda.max_memory_allocated of the steps, each method alone in a fresh process (total)"
                if args.device == "cuda" else "peak RSS (VmHWM) growth of the steps in a fresh process (CPU)")
    text = report(args, means, memory, params, kind)
    print(text)
    if not args.no_append:
        append_section(["", text.rstrip("\n")])
    return text


if __name__ == "__main__":
    main()
