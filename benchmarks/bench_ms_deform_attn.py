#!/usr/bin/env python
"""Pure-PyTorch multi-scale deformable attention on CPU: the memory layout of its ``grid_sample`` calls.

    python benchmarks/bench_ms_deform_attn.py [--steps 20] [--rounds 3] [--no-append]

:func:`~siamese_detr.modeling.ops.ms_deform_attn.multi_scale_deformable_attention_pytorch` samples every
level with ``grid_sample`` over a grid of ``P`` rows (the sampling points) by ``Q`` columns (the queries), so
the bilinear sampling, the weighted sum over the points and their backward run along rows of ``Q`` elements.
This benchmark times it against the same computation with the queries on the rows and the points on the
columns (rows of ``P = 4`` elements; the layout of the official ``ms_deform_attn_core_pytorch``), written out
below as ``query_major_core``, measured in the same run:

1. the core alone, forward + backward (median of ``--rounds`` alternating measurements), at the demo
   detector's shapes (4 images at short side 160: levels
   20 x 24 and 10 x 12, 4 heads of 32 channels, 4 points) for its encoder (``Q = S``) and decoder (``Q =
   120``: 30 + 90 hybrid-matching queries), and at an R50 Deformable DETR encoder's shapes (2 images at
   short side 480, four levels, 8 heads);
2. one training step of the demo detector (``configs/demo/demo_detector.py``: forward, backward, AdamW)
   on real mapper outputs of ``synthetic_shapes_train_large``, with either core patched in.

Each measurement alternates between the two layouts ``--rounds`` times, the one measured first swapping every
round, so that drifts of a shared machine (and whatever the first of a pair pays: caches, allocator growth)
hit both alike.

Both layouts compute the same sums in the same order in the forward pass (outputs are checked to be
identical) and differ only in the float summation order of some gradients. Results are printed and
appended to ``benchmarks/RESULTS.md``.
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_args import at_least
from machine_info import describe_machine  # benchmarks/ is on sys.path when run as a script
from results_md import append_section

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo" / "demo_detector.py"

# (name, batch, queries (None = every encoder token), level shapes, heads)
CORE_CASES = [
    ("demo encoder", 4, None, [(20, 24), (10, 12)], 4),
    ("demo decoder", 4, 120, [(20, 24), (10, 12)], 4),
    ("R50 encoder, short side 480", 2, None, [(60, 80), (30, 40), (15, 20), (8, 10)], 8),
]


def query_major_core(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """The same computation as ``multi_scale_deformable_attention_pytorch`` with the queries on
    ``grid_sample``'s rows and the ``P`` points on its columns (``[B*M, D, Q, P]`` samples); shapes as
    there."""
    batch, _, heads, channels = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, num_queries, num_levels, num_points)
    out = None
    for lvl in range(num_levels):
        h, w = int(spatial_shapes[lvl, 0]), int(spatial_shapes[lvl, 1])
        start = int(level_start_index[lvl])
        value_l = value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(batch * heads, channels, h, w)
        grid_l = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        term = (sampled * weights[:, :, :, lvl]).sum(-1)
        out = term if out is None else out + term
    return out.view(batch, heads * channels, num_queries).transpose(1, 2).contiguous()


def core_inputs(batch, queries, shapes, heads, channels=32, points=4):
    """Random inputs of the core (seed 0): value ``[B, S, M, D]``, locations in [-0.1, 1.1] (some outside the
    map), softmax-normalised weights; the three float inputs require grad."""
    gen = torch.Generator().manual_seed(0)
    spatial = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial[:, 0] * spatial[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    tokens = int(sizes.sum())
    queries = tokens if queries is None else queries
    value = torch.randn(batch, tokens, heads, channels, generator=gen).requires_grad_()
    loc = (torch.rand(batch, queries, heads, len(shapes), points, 2, generator=gen) * 1.2 - 0.1).requires_grad_()
    weights = torch.rand(batch, queries, heads, len(shapes) * points, generator=gen).softmax(-1)
    weights = weights.view(batch, queries, heads, len(shapes), points).detach().requires_grad_()
    return (value, spatial, starts, loc, weights), torch.randn(batch, queries, heads * channels, generator=gen)


def time_core(core, inputs, grad, steps):
    """Mean seconds of ``core`` forward + backward over ``steps`` calls after 2 warm-up calls."""
    for _ in range(2):
        core(*inputs).backward(grad)
    start = time.perf_counter()
    for _ in range(steps):
        core(*inputs).backward(grad)
    return (time.perf_counter() - start) / steps


def alternating(pairs, rounds):
    """The ``(name, value)`` pairs in the order to measure them in each of ``rounds`` rounds: as given in even
    rounds, reversed in odd ones, so that neither is always measured first."""
    return [pairs if r % 2 == 0 else pairs[::-1] for r in range(rounds)]


def bench_cores(steps, rounds):
    from siamese_detr.modeling.ops.ms_deform_attn import multi_scale_deformable_attention_pytorch as points_major

    rows = []
    for name, batch, queries, shapes, heads in CORE_CASES:
        inputs, grad = core_inputs(batch, queries, shapes, heads)
        with torch.no_grad():
            if not torch.equal(points_major(*inputs), query_major_core(*inputs)):
                raise RuntimeError(f"{name}: the two layouts give different outputs")
        times = {"old": [], "new": []}
        for order in alternating([("old", query_major_core), ("new", points_major)], rounds):
            for key, core in order:
                times[key].append(time_core(core, inputs, grad, steps))
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        rows.append((name, inputs[0].shape[1], inputs[3].shape[1], old, new))
        print(f"{name}: query-major {old * 1e3:.1f} ms, points x queries {new * 1e3:.1f} ms, {old / new:.2f}x")
    return rows


def bench_training_step(steps, rounds):
    """Seconds per demo-detector training step with each core, median of ``rounds`` alternating
    measurements each (see :func:`alternating`)."""
    from bench_inputs import build_training, mapped_batches
    from detectron2.config import LazyConfig, instantiate

    import siamese_detr.modeling.ops.ms_deform_attn as msda

    cfg = LazyConfig.load(str(CONFIG))
    model, optimizer = build_training(cfg, "cpu")
    mapper = instantiate(cfg.dataloader.train.mapper)
    batches = mapped_batches(mapper, cfg.dataloader.train.total_batch_size, steps + 1,
                             dataset="synthetic_shapes_train_large")

    def step(batch):
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    current = msda.multi_scale_deformable_attention_pytorch
    times = {"query-major": [], "points x queries": []}
    try:
        for r, order in enumerate(alternating([("query-major", query_major_core), ("points x queries", current)],
                                              rounds)):
            for name, core in order:
                msda.multi_scale_deformable_attention_pytorch = core
                step(batches[0])
                start = time.perf_counter()
                for batch in batches[1:]:
                    step(batch)
                times[name].append((time.perf_counter() - start) / steps)
                print(f"training step, round {r + 1}/{rounds}, {name}: {times[name][-1]:.3f} s/it")
    finally:
        msda.multi_scale_deformable_attention_pytorch = current
    return {k: statistics.median(v) for k, v in times.items()}


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (``--steps`` and ``--rounds`` at least 1: a mean of nothing is no measurement)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=at_least(1), default=20, help="timed calls / training steps per measurement")
    parser.add_argument("--rounds", type=at_least(1), default=3,
                        help="alternating measurements of each layout (the first one swaps every round)")
    parser.add_argument("--no-append", action="store_true", help="print only, do not touch RESULTS.md")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    cores = bench_cores(args.steps, args.rounds)
    step = bench_training_step(args.steps, args.rounds)
    old, new = step["query-major"], step["points x queries"]
    lines = [
        "", f"## bench_ms_deform_attn.py ({describe_machine()})", "",
        f"Command: `{' '.join(['python', 'benchmarks/bench_ms_deform_attn.py'] + sys.argv[1:])}`. Pure-PyTorch "
        f"deformable attention core, forward + backward, median of {args.rounds} alternating measurements of the "
        f"mean of {args.steps} calls; the `grid_sample` grid "
        "as queries x points (query-major, the previous layout) or points x queries (the project's).", "",
        "| case | tokens S | queries Q | query-major ms | points x queries ms | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for name, tokens, queries, t_old, t_new in cores:
        lines.append(f"| {name} | {tokens} | {queries} | {t_old * 1e3:.1f} | {t_new * 1e3:.1f} "
                     f"| {t_old / t_new:.2f}x |")
    lines += [
        "", f"Demo detector training step (`{CONFIG.relative_to(ROOT)}`, batch 4, median of {args.rounds} "
        f"alternating measurements of {args.steps} steps): query-major {old:.3f} s/it, points x queries "
        f"{new:.3f} s/it, **{old / new:.2f}x**.",
    ]
    print("\n".join(lines))
    if not args.no_append:
        append_section(lines)


if __name__ == "__main__":
    main()
