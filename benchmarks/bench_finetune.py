#!/usr/bin/env python
"""Cost of one DETR finetuning step for every transformer variant (Vanilla, Conditional, Deformable DETR).

    python benchmarks/bench_finetune.py [--quick] [--sizes demo r50] [--batch-size 2] [--device cpu|cuda]
        [--no-append]

For each variant and model size, one training step (forward, backward, AdamW step with the config's
gradient clipping) on real ``DetrDatasetMapper`` outputs of the built-in ``synthetic_shapes_train``
(prepared before timing): seconds per iteration (mean over the timed steps after one warm-up) and peak
memory. ``demo`` = the variant's ``configs/demo/*_demo.py`` (single-scale Deformable DETR has none: ``r50``
only); ``r50`` = the variant's COCO config
(ResNet-50 backbone, full transformer), both with the built-in dataset's 8 classes and the training
augmentation replaced by one deterministic resize: short side 224 for ``demo``, ``--r50-short-side``
(default 480) for ``r50``, so every variant times the same inputs.

Peak memory: CUDA — ``torch.cuda.max_memory_allocated``; CPU — each row runs in a FRESH process and reports
the growth of ``ru_maxrss`` from "model built, inputs ready" to "after the steps".

**Deformable attention, PyTorch vs compiled**: when the official ``MultiScaleDeformableAttention`` extension
is importable and the device is CUDA, the Deformable rows are measured twice (``grid_sample`` path forced,
and the compiled path); otherwise the table says that only the PyTorch path exists here.

Results are printed and appended to ``benchmarks/RESULTS.md``.
"""

import argparse
import resource
import sys
import warnings
from pathlib import Path

import torch
from bench_args import at_least, parse_device_benchmark_args
from bench_child import answer_if_child, run_child_process
from bench_inputs import build_training, mapped_batches, time_step  # benchmarks/ is on sys.path when run as a script
from machine_info import describe_machine
from results_md import append_section

from siamese_detr.utils.cli_types import ExtendList

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    # variant: (demo config, R50 config)
    "vanilla": ("configs/demo/detr_demo.py", "configs/detr/detr_r50_coco_150ep.py"),
    "conditional": ("configs/demo/conditional_detr_demo.py", "configs/detr/conditional_detr_r50_coco_50ep.py"),
    "deformable-ss": (None, "configs/detr/deformable_detr_ss_r50_coco_50ep.py"),
    "deformable-ms": ("configs/demo/deformable_detr_demo.py", "configs/detr/deformable_detr_r50_coco_50ep.py"),
}


def load_config(variant: str, size: str, r50_short_side: int):
    from detectron2.config import LazyConfig

    from siamese_detr.data.datasets import SYNTHETIC_SHAPES_CLASSES

    from detectron2.config import LazyCall as L
    from detectron2.data import transforms as T

    path = VARIANTS[variant][0 if size == "demo" else 1]
    cfg = LazyConfig.load(str(ROOT / path))
    cfg.model.num_classes = len(SYNTHETIC_SHAPES_CLASSES)
    cfg.dataloader.train.dataset.names = "synthetic_shapes_train"
    # one deterministic resize (no flip / crop / multi-scale): every variant times the same inputs
    short = 224 if size == "demo" else r50_short_side
    cfg.dataloader.train.mapper.augmentation = [
        L(T.ResizeShortestEdge)(short_edge_length=short, max_size=int(short * 5 / 3))
    ]
    cfg.dataloader.train.mapper.augmentation_with_crop = None
    return cfg, path


def prepare_batches(cfg, batch_size: int, count: int):
    """``count`` batches of real DetrDatasetMapper outputs of the built-in training images."""
    from detectron2.config import instantiate

    return mapped_batches(instantiate(cfg.dataloader.train.mapper), batch_size, count)


def run_row(variant: str, size: str, batch_size: int, iters: int, device: str, force_pytorch: bool,
            r50_short_side: int) -> dict:
    """One (variant, size) measurement; meant to run in a fresh process (peak RSS)."""
    from detectron2.utils.events import EventStorage

    from siamese_detr.modeling.ops import ms_deform_attn

    cfg, path = load_config(variant, size, r50_short_side)
    if force_pytorch and variant.startswith("deformable"):
        cfg.model.transformer.use_compiled_op = False
    batches = prepare_batches(cfg, batch_size, iters + 1)
    model, optimizer = build_training(cfg, device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    total = 0.0
    with EventStorage():
        for i, batch in enumerate(batches):
            if i == 1 and device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            seconds = time_step(model, optimizer, batch, device)
            if i > 0:  # the first step is the warm-up
                total += seconds
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    sizes = sorted({tuple(x["image"].shape[-2:]) for b in batches for x in b})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "variant": variant, "size": size, "config": path, "batch": batch_size, "seconds": total / iters,
        "peak_mb": peak, "trainable_m": trainable / 1e6,
        "image_px": [min(min(s) for s in sizes), max(max(s) for s in sizes)],
        "attention": "pytorch" if (force_pytorch or not ms_deform_attn.compiled_op_available()
                                   or not device.startswith("cuda")) else "compiled",
    }


def run_in_subprocess(*row) -> dict:
    return run_child_process(__file__, row)


def report(args, rows, compiled_note: str) -> list:
    command = "python benchmarks/bench_finetune.py " + " ".join(sys.argv[1:])
    memory = "cuda max_memory_allocated" if args.device.startswith("cuda") else \
        "ru_maxrss growth in a fresh process per row (activations, grads, AdamW state; not the weights)"
    vanilla = {r["size"]: r["seconds"] for r in rows if r["variant"] == "vanilla"}
    lines = [
        "", f"## bench_finetune.py ({describe_machine()})", "",
        f"Command: `{command.strip()}` (device {args.device}, batch {args.batch_size}, {args.iters} timed "
        f"steps after 1 warm-up). One finetuning step (forward, backward, AdamW + clip) on the built-in "
        f"synthetic_shapes_train; `demo` = the variant's demo config, `r50` = its COCO config (R50) with the "
        f"images resized to short side {args.r50_short_side}. Peak memory: {memory}.", "",
        "| variant | size | config | image px | deformable attention | s/it | vs vanilla | peak MiB "
        "| trainable M |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["seconds"] / vanilla[r["size"]] if r["size"] in vanilla else float("nan")
        attention = r["attention"] if r["variant"].startswith("deformable") else "-"
        lines.append(
            f"| {r['variant']} | {r['size']} | `{r['config']}` | {r['image_px'][0]}-{r['image_px'][1]} "
            f"| {attention} | {r['seconds']:.3f} | {ratio:.2f}x | {r['peak_mb']:.0f} | {r['trainable_m']:.2f} |"
        )
    return lines + ["", compiled_note]


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; a batch below 1, a short side below 32 px or a device that is not here is refused."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 timed steps instead of 5")
    parser.add_argument("--sizes", action=ExtendList, nargs="+", default=["demo", "r50"], choices=["demo", "r50"],
                        help="demo: the variant's configs/demo config; r50: its COCO config (default: both)")
    parser.add_argument("--variants", action=ExtendList, nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="transformer variants to time (default: all)")
    parser.add_argument("--batch-size", type=at_least(1), default=2, help="images per step (default: 2)")
    parser.add_argument("--r50-short-side", type=at_least(32, "pixels"), default=480,
                        help="short side of the r50 images, in pixels (default: 480; demo: 224)")
    return parse_device_benchmark_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    if answer_if_child(args, run_row):
        return
    args.iters = 2 if args.quick else 5

    from siamese_detr.modeling.ops.ms_deform_attn import compiled_op_available

    both_paths = compiled_op_available() and args.device.startswith("cuda")
    compiled_note = (
        "Deformable rows are measured with the PyTorch (grid_sample) path and with the official compiled "
        "MultiScaleDeformableAttention extension." if both_paths else
        "The official compiled MultiScaleDeformableAttention extension is not importable here (or the device "
        "is not CUDA): the Deformable rows use the PyTorch grid_sample path only."
    )
    rows = []
    for size in args.sizes:
        for variant in args.variants:
            if VARIANTS[variant][0 if size == "demo" else 1] is None:
                continue
            paths = [True, False] if variant.startswith("deformable") and both_paths else [True]
            for force_pytorch in paths:
                r = run_in_subprocess(variant, size, args.batch_size, args.iters, args.device, force_pytorch,
                                      args.r50_short_side)
                rows.append(r)
                print(f"{variant} {size}: {r['seconds']:.3f} s/it, peak {r['peak_mb']:.0f} MiB, "
                      f"{r['trainable_m']:.2f} M trainable ({r['attention']} attention)", flush=True)
    lines = report(args, rows, compiled_note)
    print("\n".join(lines))
    if not args.no_append:
        append_section(lines)


if __name__ == "__main__":
    main()
