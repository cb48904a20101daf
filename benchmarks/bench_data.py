#!/usr/bin/env python
"""Data-pipeline benchmark: proposal methods, proposal-store lookups and the two-view mapper.

Sections (all single-threaded: ``cv2.setNumThreads(1)``, ``torch.set_num_threads(1)``, so rates are per core):

1. proposals per second per core for each method at two image sizes (short side 224 and 500; built-in
   ``synthetic_shapes_val`` images resized to that short side): every method on the SAME images, after one
   untimed call (the first call of a method pays for its set-up), the fast ones over several rounds;
2. EdgeBoxes vs Selective Search (fast) speed ratio at the same size, with each one's AR@100 on the built-in
   val split (native size) next to it;
3. store lookup: a store of 1.28 M images with random box counts U{1..511} (mean ~256 boxes/image, up to
   511) written in vectorised chunks to a temp dir, timed (open, µs per ``get``, warm page cache), deleted;
4. ``SiameseViewMapper`` samples/s per worker with store / online EdgeBoxes / random proposals and where the
   time goes (decode, proposals, geometry, resize + warp: the base resize and each view's one-step warp,
   augmentation, crops, and the rest).

``--quick`` shrinks every section (fewer images, a 128 k-image store). Results are printed and appended to
``benchmarks/RESULTS.md`` with the machine description.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict

import cv2
import numpy as np
import torch

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

from siamese_detr.data.proposals import ProposalStore, StoreWriter, compute_proposals  # noqa: E402
from siamese_detr.data.proposals.generate import register_builtin_datasets  # noqa: E402
from siamese_detr.evaluation.proposal_recall import evaluate_proposal_recall  # noqa: E402
from bench_args import at_least  # noqa: E402
from machine_info import describe_machine  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from results_md import append_section  # noqa: E402

METHODS = {  # name -> (method, kwargs)
    "edgeboxes (512)": ("edgeboxes", {"max_boxes": 512}),
    "selective_search fast": ("selective_search", {}),
    "selective_search fast, resize 128": ("selective_search", {"resize": 128}),
    "random (512)": ("random", {"max_boxes": 512}),
}


def resize_short(image, short):
    h, w = image.shape[:2]
    s = short / min(h, w)
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)


def bench_methods(images, sizes, rounds):
    """{(name, size): seconds per image}: every method on the same ``images`` resized to each short side,
    ``rounds[method]`` times over, after one untimed call."""
    out = {}
    for size in sizes:
        batch = [resize_short(im, size) for im in images]
        for name, (method, kw) in METHODS.items():
            compute_proposals(batch[0], method, image_id="x", **kw)  # warm-up
            t0 = time.perf_counter()
            for _ in range(rounds[method]):
                for im in batch:
                    compute_proposals(im, method, image_id="x", **kw)
            out[(name, size)] = (time.perf_counter() - t0) / (rounds[method] * len(batch))
    return out


class _DictStore(dict):
    def get(self, image_id):
        return self[image_id]


def recall_on_val(dicts, images):
    out = {}
    for name in ("edgeboxes (512)", "selective_search fast"):
        method, kw = METHODS[name]
        props = _DictStore(
            {d["image_id"]: compute_proposals(im, method, **kw) for d, im in zip(dicts, images)}
        )
        out[name] = evaluate_proposal_recall(props, dicts, ks=(100,))["AR@100"]
    return out


def bench_store(num_images, lookups=100_000, chunk=65536):
    tmp = tempfile.mkdtemp(prefix="bench_store_")
    path = os.path.join(tmp, "big.proposals")
    try:
        rng = np.random.default_rng(0)
        counts = rng.integers(1, 512, num_images)  # U{1..511}: mean ~256 boxes per image
        total = int(counts.sum())
        t0 = time.perf_counter()
        writer = StoreWriter(path, num_images, total)
        for start in range(0, num_images, chunk):
            c = counts[start : start + chunk]
            k = int(c.sum())
            xy = rng.random((k, 2), dtype=np.float32) * np.float32(250)
            wh = rng.random((k, 2), dtype=np.float32) * np.array([250, 125], np.float32)  # inside 500 x 375
            scores = np.sort(rng.random(k, dtype=np.float32))[::-1]  # order within images is irrelevant here
            writer.append(np.concatenate([xy, xy + wh], 1), scores, c, np.tile([[375, 500]], (len(c), 1)))
        ids = [f"n{i // 1300:08d}/n{i // 1300:08d}_{i:07d}.JPEG" for i in range(num_images)]
        writer.close(ids, "random", {"bench": True})
        t_write = time.perf_counter() - t0
        size_gb = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) / 1e9
        t0 = time.perf_counter()
        store = ProposalStore.open(path)
        t_open = time.perf_counter() - t0
        queries = [ids[i] for i in rng.integers(0, num_images, lookups)]
        for q in queries[:1000]:
            store.get(q)  # warm-up
        t0 = time.perf_counter()
        for q in queries:
            store.get(q)
        t_get = (time.perf_counter() - t0) / lookups
        return {
            "images": num_images,
            "boxes": total,
            "mean_boxes": total / num_images,
            "gb": size_gb,
            "write_s": t_write,
            "open_s": t_open,
            "get_us": t_get * 1e6,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_mapper(dicts, n, store_path):
    try:
        from siamese_detr.data import siamese_mapper as sm
        from siamese_detr.data.proposals import OnlineProposals, StoreProposals
    except Exception as e:  # noqa: BLE001
        return f"skipped: SiameseViewMapper not importable ({type(e).__name__}: {e})"
    timers = defaultdict(float)

    def timed(key, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            r = fn(*a, **k)
            timers[key] += time.perf_counter() - t0
            return r

        return wrapper

    rows = {}
    saved = sm.simsiam_augment, sm.crop_regions
    sm.simsiam_augment, sm.crop_regions = timed("augmentation", saved[0]), timed("crops", saved[1])
    try:
        for name, source in (
            ("store (EdgeBoxes)", StoreProposals(store_path)),
            ("online EdgeBoxes", OnlineProposals("edgeboxes", max_boxes=512)),
            ("random", None),
        ):
            mapper = sm.SiameseViewMapper(proposal_source=source, seed=0)
            mapper._read = timed("decode", mapper._read)
            mapper._proposals = timed("proposals", mapper._proposals)
            mapper.policy.sample = timed("geometry", mapper.policy.sample)
            mapper._resize = timed("resize + warp", mapper._resize)
            mapper._warp_view = timed("resize + warp", mapper._warp_view)
            mapper(dicts[0])  # warm-up (opens the store)
            timers.clear()
            t0 = time.perf_counter()
            for d in dicts[:n]:
                mapper(d)
            total = time.perf_counter() - t0
            share = {k: v / total for k, v in timers.items()}
            share["other"] = 1.0 - sum(share.values())  # the rest of __call__: boxes, region bookkeeping
            rows[name] = (n / total, share)
    finally:
        sm.simsiam_augment, sm.crop_regions = saved
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (``--no-append``, as the other benchmarks, is the same as ``--no-write``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shrink every section (fewer images, a 128 k-image store)")
    p.add_argument("--store-images", type=at_least(1, "images in the lookup store"), default=None,
                   help="images in the store whose lookups are timed (default: 1,280,000, ImageNet's size; "
                   "128,000 with --quick)")
    p.add_argument("--no-write", "--no-append", action="store_true", help="do not append to RESULTS.md")
    return p.parse_args(argv)


def emit_speed_tables(emit, dicts, images, n_speed, rounds):
    """Sections 1 and 2: proposals per second per core for every method at two sizes (the first ``n_speed``
    images), then EdgeBoxes vs Selective Search at the same size with their AR@100 on ``dicts``/``images``."""
    sizes = (224, 500)
    speed = bench_methods(images[:n_speed], sizes, rounds)
    emit(f"Proposals per second per core (the same {n_speed} synthetic_shapes_val images for every method, "
         "resized to the short side; one untimed call first):\n")
    emit("| method | " + " | ".join(f"short {s} px" for s in sizes) + " |")
    emit("|---|" + "---|" * len(sizes))
    for name in METHODS:
        emit(f"| {name} | " + " | ".join(f"{1 / speed[(name, s)]:.2f} img/s" for s in sizes) + " |")
    ar = recall_on_val(dicts, images)
    emit(
        f"\nEdgeBoxes vs Selective Search fast at the same size, AR@100 on synthetic_shapes_val ({len(dicts)} images,"
        " native size; EdgeBoxes on gradient edges, no SED model):\n"
    )
    emit("| short side | EdgeBoxes s/img | SS fast s/img | speed ratio SS/EB | AR@100 EB | AR@100 SS |")
    emit("|---|---|---|---|---|---|")
    for s in sizes:
        eb, ss = speed[("edgeboxes (512)", s)], speed[("selective_search fast", s)]
        emit(
            f"| {s} | {eb:.3f} | {ss:.3f} | {ss / eb:.1f}x | {100 * ar['edgeboxes (512)']:.1f} | "
            f"{100 * ar['selective_search fast']:.1f} |"
        )


def emit_store_line(emit, num):
    """Section 3: write, open and look up a store of ``num`` images (see ``bench_store``)."""
    st = bench_store(num)
    emit(
        f"\nStore lookup: {st['images']:,} images, {st['boxes']:,} boxes (U{{1..511}} per image, mean "
        f"{st['mean_boxes']:.0f}), {st['gb']:.2f} GB; write {st['write_s']:.1f} s, open (incl. validation) "
        f"{st['open_s']:.2f} s, **{st['get_us']:.1f} µs per get()** (random ids, warm page cache; target <= 50)."
    )


def emit_mapper_table(emit, dicts, images, n_samples):
    """Section 4: ``SiameseViewMapper`` samples/s and time shares on ``n_samples`` of ``dicts``, the store made
    in a temporary folder from EdgeBoxes on ``images`` (one per dict) and deleted afterwards."""
    from siamese_detr.data.proposals import write_store

    tmp = tempfile.mkdtemp(prefix="bench_mapper_")
    try:
        spath = os.path.join(tmp, "val.proposals")
        res = [compute_proposals(im, "edgeboxes") for im in images]
        write_store(
            spath,
            [d["image_id"] for d in dicts],
            [r[0] for r in res],
            [r[1] for r in res],
            [im.shape[:2] for im in images],
            method="edgeboxes",
        )
        rows = bench_mapper(dicts, n_samples, spath)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(rows, str):
        emit(f"\nSiameseViewMapper: {rows}")
        return
    keys = ["decode", "proposals", "geometry", "resize + warp", "augmentation", "crops", "other"]
    emit(
        "\nSiameseViewMapper per worker (1 thread, default settings, synthetic_shapes_val ~240 px images"
        " upsampled to short side 320-480); share of the time per stage:\n"
    )
    emit("| proposal source | samples/s | " + " | ".join(keys) + " |")
    emit("|---|---|" + "---|" * len(keys))
    for name, (rate, share) in rows.items():
        emit(f"| {name} | {rate:.1f} | " + " | ".join(f"{100 * share.get(k, 0):.0f}%" for k in keys) + " |")
    base = rows["store (EdgeBoxes)"][0]
    emit(
        f"\nRatios: store / online EdgeBoxes = {base / rows['online EdgeBoxes'][0]:.1f}x, "
        f"random / store = {rows['random'][0] / base:.2f}x"
    )


def main(argv=None):
    args = parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    register_builtin_datasets()
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image

    dicts = DatasetCatalog.get("synthetic_shapes_val")
    n_val = 16 if args.quick else len(dicts)
    images = [read_image(d["file_name"], "BGR") for d in dicts[:n_val]]
    n_speed = 2 if args.quick else 6  # images per size for the speeds (Selective Search takes seconds each)
    rounds = {"edgeboxes": 1 if args.quick else 3, "selective_search": 1, "random": 10}
    command = " ".join(["python benchmarks/bench_data.py"] + list(argv if argv is not None else sys.argv[1:]))
    lines = [f"\n## bench_data.py ({describe_machine()})\n", f"Command: `{command}`\n"]

    def emit(s=""):
        print(s)
        lines.append(s)

    emit_speed_tables(emit, dicts[:n_val], images, n_speed, rounds)
    emit_store_line(emit, args.store_images or (128_000 if args.quick else 1_280_000))
    emit_mapper_table(emit, dicts[:n_val], images, 8 if args.quick else n_val)
    if not args.no_write:
        append_section(lines)
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    sys.exit(main())
