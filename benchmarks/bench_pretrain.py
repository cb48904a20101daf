#!/usr/bin/env python
"""Cost of one Siamese DETR pretraining step (``SiameseDETRPretrain``), stage by stage.

    python benchmarks/bench_pretrain.py [--quick] [--models demo r50] [--batch-sizes 2 4]
        [--device cpu|cuda] [--no-append]

1. **Stages** — seconds per iteration and peak memory of one training step (forward, backward, AdamW step
   with the config's gradient clipping) for batch sizes 2/4 (the SimSiam heads need two images per view)
   of two model sizes, each for every transformer variant (``demo`` / ``r50`` are Vanilla DETR;
   ``-conditional``, ``-deformable-ss`` (C5; ``r50`` only, there is no demo-size config of it) and
   ``-deformable-ms`` (C3-C5 + a stride-64 level) use the variant's pretraining config of the same size):

   * ``demo``: ``configs/demo/siamese_detr_pretrain_demo.py`` as is (ResNet-18, d_model 128, 2+2 layers,
     20 queries, 5 regions, 32 px crops, views of short side 128-160, max 224);
   * ``r50``: ``configs/siamese_detr/siamese_detr_r50_imagenet_60ep.py`` as is (ResNet-50, d_model 256,
     6+6 layers, 100 queries, 10 regions, 128 px crops, images resized to short side 320-480, max 600;
     the views, sub-rectangles of area 0.5-1.0, are smaller). Only the batch size is reduced.

   Inputs are real ``SiameseViewMapper`` outputs on the built-in ``synthetic_shapes_train`` (online
   EdgeBoxes, fixed seed), prepared before timing, so this section has no data wait. The forward pass
   is split with forward hooks (no change to the model): backbone call 1 (the 2B views) and call 2 (all
   2·B·n crops), encoder (``transformer.encode``), decoder (``transformer.decode``), Hungarian
   matching (``criterion.matcher``, every decoder layer); "losses + heads" is the rest of the forward pass
   (criterion minus matching, box / class / f_sem heads, L_r, the SimSiam heads and L_g, RoIAlign,
   normalisation and padding). Backward (transformer and heads only: the backbone is frozen) and the
   optimiser step are timed separately. On CUDA each boundary synchronises.

   Peak memory: CUDA — ``torch.cuda.max_memory_allocated`` over the timed steps. CPU — each configuration
   runs in a FRESH process and reports the growth of ``ru_maxrss`` (the process's resident-set high-water
   mark, which cannot be reset) from "model built, inputs ready" to "after the steps": activations,
   gradients, AdamW state and allocator caches of a step, not the weights.

   The same hooks verify the two batching targets: per step the backbone is called exactly twice (views
   ``[2B, 3, H, W]``, crops ``[2·B·n, 3, c, c]``: all crops of the batch in ONE call) and the decoder
   once with a batch of 2B (both Multi-View Cross-Attention directions in ONE decoder pass).

2. **Data wait** — the ``demo`` model's own training loader (``SiameseViewMapper``, batch 4, 2 workers) with
   online EdgeBoxes, and also with the EdgeBoxes store its config reads when
   ``$DETECTRON2_DATASETS/proposals/synthetic_shapes_train.edgeboxes.proposals`` exists
   (``tools/generate_proposals.py --dataset synthetic_shapes_train --method edgeboxes``; ``make demo``
   computes its proposals online instead), feeding that model: share of each iteration spent waiting in
   ``next(loader)`` after a warm-up (target < 25 %).

``--quick`` runs fewer iterations. Results are printed and appended to ``benchmarks/RESULTS.md``.
"""

import argparse
import os
import resource
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from bench_args import at_least, parse_device_benchmark_args
from bench_child import answer_if_child, run_child_process  # benchmarks/ is on sys.path when run as a script
from bench_inputs import build_training, mapped_batches, time_step
from machine_info import describe_machine
from results_md import append_section

from siamese_detr.engine.worker_checks import worker_temp_dir_problem
from siamese_detr.utils.cli_types import ExtendList

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "demo": ROOT / "configs/demo/siamese_detr_pretrain_demo.py",
    "demo-conditional": ROOT / "configs/demo/siamese_detr_conditional_pretrain_demo.py",
    "demo-deformable-ms": ROOT / "configs/demo/siamese_detr_deformable_pretrain_demo.py",
    "r50": ROOT / "configs/siamese_detr/siamese_detr_r50_imagenet_60ep.py",
    "r50-conditional": ROOT / "configs/siamese_detr/siamese_detr_conditional_r50_imagenet_60ep.py",
    "r50-deformable-ss": ROOT / "configs/siamese_detr/siamese_detr_deformable_ss_r50_imagenet_60ep.py",
    "r50-deformable-ms": ROOT / "configs/siamese_detr/siamese_detr_deformable_ms_r50_imagenet_60ep.py",
}
STAGES = ["backbone views", "backbone crops", "encoder", "decoder", "matching", "losses + heads", "backward",
          "optimizer"]
STORE = "synthetic_shapes_train.edgeboxes.proposals"


# ------------------------------------------------------------------------------------------ model & data
def load_config(name: str, online_proposals: bool):
    """LazyConfig of ``name`` (demo / r50) with the built-in dataset as training data."""
    from detectron2.config import LazyCall as L
    from detectron2.config import LazyConfig

    from siamese_detr.data.proposals.sources import OnlineProposals

    cfg = LazyConfig.load(str(CONFIGS[name]))
    mapper = cfg.dataloader.train.mapper
    mapper.seed = 0
    if online_proposals:
        mapper.proposal_source = L(OnlineProposals)(method="edgeboxes", max_boxes=64, image_format="BGR")
    if name.startswith("r50"):
        cfg.dataloader.train.dataset.names = "synthetic_shapes_train"  # ~240 px images, upsampled
    return cfg


def prepare_batches(cfg, batch_size: int, count: int):
    """``count`` batches of real SiameseViewMapper outputs (the same images for every batch size)."""
    from detectron2.config import instantiate

    return mapped_batches(instantiate(cfg.dataloader.train.mapper), batch_size, count)


# ------------------------------------------------------------------------------------------------ timing
class StageTimer:
    """Hooks timing the model's stages and counting backbone / decoder calls (see module doc).

    The encoder and decoder are timed by wrapping ``transformer.encode`` / ``transformer.decode`` (the
    variant interface), so the same timer serves Vanilla, Conditional and Deformable DETR."""

    def __init__(self, model, device: str):
        self.cuda = device.startswith("cuda")
        self.times = defaultdict(float)
        self.calls = defaultdict(list)  # name -> input batch size of every call
        self._start = {}
        self._span(model.backbone, "backbone")
        self._span(model.criterion, "criterion")
        self._span(model.criterion.matcher, "matching")
        self._wrap(model.transformer, "encode", "encoder", lambda args: args[0][0].shape[0])
        self._wrap(model.transformer, "decode", "decoder", lambda args: args[0].memory.shape[0])

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _span(self, module, name):
        def pre(module, args):
            self._start[name] = self.now()
            if name == "backbone":
                self.calls[name].append(int(args[0].shape[0]))

        def post(module, args, output):
            elapsed = self.now() - self._start.pop(name)
            if name == "backbone":  # call 1 = views, call 2 = crops
                name_ = "backbone views" if len(self.calls["backbone"]) % 2 == 1 else "backbone crops"
                self.times[name_] += elapsed
            else:
                self.times[name] += elapsed

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    def _wrap(self, obj, method, name, batch_of):
        original = getattr(obj, method)

        def timed(*args, **kwargs):
            self.calls[name].append(int(batch_of(args)))
            start = self.now()
            out = original(*args, **kwargs)
            self.times[name] += self.now() - start
            return out

        setattr(obj, method, timed)

    def reset(self):
        self.times.clear()
        self.calls.clear()


def time_steps(model, optimizer, batches, warmup: int, device: str):
    """Per-stage seconds per iteration (mean over the timed batches) and the per-step call checks."""
    timer = StageTimer(model, device)
    totals, checks = defaultdict(float), []
    for i, batch in enumerate(batches):
        timer.reset()
        t0 = timer.now()
        losses = model(batch)
        loss = sum(losses.values())
        t1 = timer.now()
        optimizer.zero_grad()
        loss.backward()
        t2 = timer.now()
        optimizer.step()
        t3 = timer.now()
        if i == warmup - 1 and device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        checks.append({k: list(v) for k, v in timer.calls.items()})
        if i < warmup:
            continue
        t = timer.times
        measured = ("backbone views", "backbone crops", "encoder", "decoder", "criterion")
        rest = (t1 - t0) - sum(t[k] for k in measured)
        step = {k: t[k] for k in ("backbone views", "backbone crops", "encoder", "decoder", "matching")}
        step.update({"losses + heads": rest + t["criterion"] - t["matching"], "backward": t2 - t1,
                     "optimizer": t3 - t2, "total": t3 - t0})
        for k, v in step.items():
            totals[k] += v
    n = len(batches) - warmup
    return {k: v / n for k, v in totals.items()}, checks


def run_config(name: str, batch_size: int, iters: int, warmup: int, device: str) -> dict:
    """One (model, batch size) measurement; meant to run in a fresh process (peak RSS)."""
    cfg = load_config(name, online_proposals=True)
    batches = prepare_batches(cfg, batch_size, warmup + iters)
    model, optimizer = build_training(cfg, device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    seconds, checks = time_steps(model, optimizer, batches, warmup, device)
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        memory = "cuda max_memory_allocated"
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        memory = "ru_maxrss growth"
    n, crop = cfg.model.num_regions, cfg.dataloader.train.mapper.crop_size
    ok_backbone = all(
        len(c["backbone"]) == 2 and c["backbone"] == [2 * batch_size, 2 * batch_size * n] for c in checks
    )
    ok_decoder = all(c["decoder"] == [2 * batch_size] for c in checks)
    views = [tuple(b["views"][0]["image"].shape[-2:]) for batch in batches for b in batch]
    return {
        "model": name, "batch": batch_size, "device": device, "seconds": seconds, "peak_mb": peak_mb,
        "memory": memory, "backbone_calls": checks[-1]["backbone"], "decoder_calls": checks[-1]["decoder"],
        "one_backbone_call_for_crops": ok_backbone, "one_decoder_pass": ok_decoder,
        "regions": n, "crop": crop, "queries": cfg.model.num_queries,
        "view_px": [min(min(v) for v in views), max(max(v) for v in views)],
    }


def run_in_subprocess(name, batch_size, iters, warmup, device) -> dict:
    return run_child_process(__file__, [name, batch_size, iters, warmup, device])


# --------------------------------------------------------------------------------------------- data wait
def data_wait(iters: int, warmup: int, num_workers: int, device: str, online: bool) -> dict:
    """Share of the step spent in ``next(loader)`` with the ``demo`` model's real training loader (the EdgeBoxes
    store its config reads, or online EdgeBoxes)."""
    from detectron2.config import instantiate

    import siamese_detr.data  # noqa: F401

    cfg = load_config("demo", online_proposals=online)
    cfg.dataloader.train.num_workers = num_workers
    problem = worker_temp_dir_problem(tempfile.gettempdir(), ["dataloader.train.num_workers"] if num_workers else [],
                                      torch.multiprocessing.get_sharing_strategy(), offer_no_workers=False)
    if problem:  # the first next(loader) would wait for ever
        raise SystemExit(f"bench_pretrain.py, data wait with {num_workers} loader workers: {problem}")
    model, optimizer = build_training(cfg, device)
    loader = iter(instantiate(cfg.dataloader.train))
    wait = total = 0.0
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        batch = next(loader)
        waited = time.perf_counter() - t0
        step = time_step(model, optimizer, batch, device)
        if i >= warmup:
            wait += waited
            total += waited + step
    return {"proposals": "online EdgeBoxes" if online else "EdgeBoxes store",
            "batch": cfg.dataloader.train.total_batch_size, "workers": num_workers,
            "seconds": total / iters, "wait": wait / iters, "share": wait / total}


# ------------------------------------------------------------------------------------------------ report
def bound_by(seconds: dict) -> str:
    groups = {
        "frozen backbone (views + crops)": seconds["backbone views"] + seconds["backbone crops"],
        "transformer (encoder + decoder forward, and backward)":
            seconds["encoder"] + seconds["decoder"] + seconds["backward"],
        "matching": seconds["matching"],
        "losses + heads": seconds["losses + heads"],
        "optimizer": seconds["optimizer"],
    }
    name = max(groups, key=groups.get)
    return f"{name} {100 * groups[name] / seconds['total']:.0f}%"


def stage_table(results) -> list:
    lines = [
        "| model | batch | view px | s/it | " + " | ".join(STAGES) + " | peak MiB | bound by |",
        "|---" * (len(STAGES) + 6) + "|",
    ]
    for r in results:
        s = r["seconds"]
        shares = " | ".join(f"{s[k]:.3f} ({100 * s[k] / s['total']:.0f}%)" for k in STAGES)
        views = f"{r['view_px'][0]}-{r['view_px'][1]}"
        lines.append(
            f"| {r['model']} | {r['batch']} | {views} | {s['total']:.3f} | {shares} "
            f"| {r['peak_mb']:.0f} | {bound_by(s)} |"
        )
    return lines


def wait_lines(waits, results, device) -> list:
    lines = [
        "Data wait with the `demo` model's training loader (real SiameseViewMapper on synthetic_shapes_train, "
        f"2 loader workers, demo model on {device}) — target < 25%:", "",
        "| proposals | batch | s/it | waiting in next(loader) |", "|---|---|---|---|",
    ]
    for w in waits:
        share = f"**{100 * w['share']:.1f}%**"
        lines.append(f"| {w['proposals']} | {w['batch']} | {w['seconds']:.3f} | {share} |")
    batch = waits[0]["batch"]
    alone = [r["seconds"]["total"] for r in results if r["model"] == "demo" and r["batch"] == batch]
    if alone:
        lines += ["", (
            f"The same step without a loader (table above, demo batch {batch}) takes {alone[0]:.3f} s/it: "
            "the "
            "rest of a loaded step is the workers taking CPU time from the step (the step's threads and the "
            "workers share the cores), which the wait share does not show."
        )]
    return lines


def report(args, results, waits, timed: str, warmup: int) -> list:
    """The RESULTS.md section (markdown lines)."""
    command = "python benchmarks/bench_pretrain.py " + " ".join(sys.argv[1:])
    if os.getenv("DETECTRON2_DATASETS"):
        command = f"DETECTRON2_DATASETS={os.environ['DETECTRON2_DATASETS']} {command}"
    memory = results[0]["memory"] if results else "-"
    if args.device == "cpu":
        memory += " in a fresh process per row (activations, grads, AdamW state; not the weights)"
    ok_crops = all(r["one_backbone_call_for_crops"] for r in results)
    ok_decoder = all(r["one_decoder_pass"] for r in results)
    return [
        "", f"## bench_pretrain.py ({describe_machine()})", "",
        f"Command: `{command.strip()}` (device {args.device}; timed iterations: {timed}, after {warmup} "
        "warm-up; mean per iteration).", "",
        "One pretraining step (forward, backward, AdamW + clip) per stage: seconds per iteration (share of "
        "the step). `demo` = configs/demo/siamese_detr_pretrain_demo.py; `r50` = "
        "siamese_detr_r50_imagenet_60ep as is (R50, d 256, 6+6 layers, 100 queries, n = 10, 128 px crops, "
        "images resized to short side 320-480, max 600) on synthetic_shapes_train; `-conditional`, "
        "`-deformable-ss`, `-deformable-ms`: the same size with that variant's pretraining config "
        "(configs/demo/siamese_detr_*_pretrain_demo.py, configs/siamese_detr/siamese_detr_*_r50_imagenet_*); "
        "`view px` = "
        "smallest-largest side of the views. Backward covers the transformer and heads only (frozen "
        f"backbone). Peak memory: {memory}.", "",
        *stage_table(results), "",
        "Batching checks (forward hooks, every step): backbone called twice per step — views [2B] and all "
        f"2·B·n crops in ONE call: {ok_crops}; decoder called once per step with batch 2B "
        f"(both MVCA directions in ONE pass): {ok_decoder}.", "",
        *wait_lines(waits, results, args.device),
    ]


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a batch below 2 (the SimSiam heads' batch norm) or a device not here is refused."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--models", action=ExtendList, nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                        help="pretraining models to time (default: all)")
    parser.add_argument("--batch-sizes", action=ExtendList, nargs="+", default=[2, 4],
                        type=at_least(2, "Siamese DETR's SimSiam batch norm needs 2 images per view"),
                        help="images per step, each >= 2 (default: 2 4)")
    return parse_device_benchmark_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    if answer_if_child(args, run_config):
        return

    iters = {m: (3 if args.quick else 10) if m.startswith("demo") else (1 if args.quick else 3) for m in CONFIGS}
    warmup = 1
    results = []
    for name in args.models:
        for b in args.batch_sizes:
            r = run_in_subprocess(name, b, iters[name], warmup, args.device)
            results.append(r)
            print(f"{name} batch {b}: {r['seconds']['total']:.3f} s/it, peak {r['peak_mb']:.0f} MiB "
                  f"({r['memory']}); backbone input batches per step {r['backbone_calls']} "
                  f"(crops in one call: {r['one_backbone_call_for_crops']}), decoder passes per step "
                  f"{r['decoder_calls']} (both directions in one pass: {r['one_decoder_pass']})", flush=True)
    store = Path(os.getenv("DETECTRON2_DATASETS", "datasets")) / "proposals" / STORE
    waits = []
    for online in ([False] if store.exists() else []) + [True]:
        w = data_wait(iters=10 if args.quick else 40, warmup=5, num_workers=2, device=args.device,
                      online=online)
        waits.append(w)
        print(f"data wait: {100 * w['share']:.1f}% of {w['seconds']:.3f} s/it "
              f"(batch {w['batch']}, {w['workers']} workers, {w['proposals']})", flush=True)

    lines = report(args, results, waits, ", ".join(f"{iters[m]} for {m}" for m in args.models), warmup)
    print("\n".join(lines))
    if not args.no_append:
        append_section(lines)


if __name__ == "__main__":
    main()
