"""Resumable, sharded proposal generation (the engine behind ``tools/generate_proposals.py``).

Output layout of one run (``output`` = the final store directory)::

    output/                         the merged store (see store.py), written once every shard is complete
    output/generate.log             appended by every shard: start, resumed chunks, skipped images, summary
    output/shards/shard-IIIII-of-KKKKK/
        run.json                    method, params, image-list digest: a resumed run must match it
        chunks/chunk-CCCCCC.npz     numeric arrays of chunk C (boxes, scores, counts, sizes; no pickle)
        chunks/chunk-CCCCCC.json    its image ids and skipped images, written last = "chunk C is finished"
        meta.json, boxes.npy, ...   the shard's store, assembled from its chunks when all are finished

Shard I of K takes the contiguous slice ``records[I*N//K : (I+1)*N//K]`` of the image list, so the merged
store has the dataset's order and equals a single-shard run. A killed run restarts at the first unfinished
chunk. The shard that completes last merges (guarded by an exclusive lock file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from .methods import compute_proposals
from .store import ProposalStore, ProposalStoreError, StoreWriter, merge_stores

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_image_dir",
    "dataset_records",
    "shard_dir",
    "generate_shard",
    "merge_if_complete",
    "register_builtin_datasets",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


def list_image_dir(root: str) -> List[Dict[str, str]]:
    """Image files under ``root`` (recursive, by extension), sorted; image_id = posix path relative to root."""
    records = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                full = os.path.join(dirpath, name)
                records.append(
                    {"file_name": full, "image_id": os.path.relpath(full, root).replace(os.sep, "/")}
                )
    records.sort(key=lambda r: r["image_id"])
    return records


def dataset_records(name: str) -> List[Dict[str, str]]:
    """(file_name, image_id) of a registered Detectron2 dataset, in its order."""
    from detectron2.data import DatasetCatalog

    return [{"file_name": d["file_name"], "image_id": str(d["image_id"])} for d in DatasetCatalog.get(name)]


def shard_dir(output: str, shard_id: int, num_shards: int) -> str:
    return os.path.join(output, "shards", f"shard-{shard_id:05d}-of-{num_shards:05d}")


def _append_log(output: str, lines: Sequence[str]) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(os.path.join(output, "generate.log"), "a") as f:
        for line in lines:
            f.write(f"[{stamp}] {line}\n")


def _init_worker() -> None:
    """Each pool worker uses one thread: parallelism comes from the processes."""
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def _process_image(task):
    """Worker: read one image (EXIF-rotated, BGR) and run the method; never raises on a bad image."""
    record, method, params, debug_sleep = task
    from detectron2.data.detection_utils import read_image

    try:
        image = read_image(record["file_name"], format="BGR")
        if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"decoded to shape {image.shape}")
    except Exception as e:  # corrupt, zero-byte, unreadable: skipped and reported, never fatal
        return record["image_id"], None, None, None, f"{type(e).__name__}: {e}".strip()
    kwargs = dict(params)
    max_boxes = kwargs.pop("max_boxes", None)
    seed = kwargs.pop("seed", 0)
    boxes, scores = compute_proposals(
        image, method, max_boxes, seed=seed, image_id=record["image_id"], **kwargs
    )
    if debug_sleep:
        time.sleep(debug_sleep)
    return record["image_id"], boxes, scores, image.shape[:2], None


def _write_chunk(chunks: str, index: int, results, records) -> List[dict]:
    ids, boxes, scores, counts, sizes, skipped = [], [], [], [], [], []
    files = {r["image_id"]: r["file_name"] for r in records}
    for image_id, b, s, hw, error in results:
        if error is not None:
            skipped.append({"image_id": image_id, "file_name": files[image_id], "reason": error})
            continue
        ids.append(image_id)
        boxes.append(np.asarray(b, np.float32).reshape(-1, 4))
        scores.append(np.asarray(s, np.float32).reshape(-1))
        counts.append(len(b))
        sizes.append(hw)
    base = os.path.join(chunks, f"chunk-{index:06d}")
    with open(base + ".npz.tmp", "wb") as f:
        np.savez(
            f,
            boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
            scores=np.concatenate(scores) if scores else np.zeros((0,), np.float32),
            counts=np.asarray(counts, np.int64),
            sizes=np.asarray(sizes, np.int32).reshape(-1, 2),
        )
    os.replace(base + ".npz.tmp", base + ".npz")
    with open(base + ".json.tmp", "w") as f:
        json.dump({"image_ids": ids, "skipped": skipped}, f)
    os.replace(base + ".json.tmp", base + ".json")  # the chunk counts as finished from here on
    return skipped


def generate_shard(
    records: Sequence[dict],
    output: str,
    method: str,
    params: dict,
    dataset: Optional[str] = None,
    num_shards: int = 1,
    shard_id: int = 0,
    num_workers: int = 1,
    chunk_size: int = 1000,
    keep_chunks: bool = False,
    progress: bool = True,
    debug_sleep: float = 0.0,
) -> dict:
    """Generate (or resume) shard ``shard_id`` of ``num_shards`` and write its store.

    Args:
        records: every image of the dataset, [{"file_name", "image_id"}] (the shard slice is taken here).
        params: method parameters incl. "max_boxes" and "seed"; recorded in the store's meta.json.
    Returns:
        {"shard_dir", "images", "skipped": [...], "resumed_chunks", "computed_chunks"}.
    """
    from tqdm import tqdm

    if not 0 <= shard_id < num_shards:
        raise ValueError(f"--shard-id must be in [0, {num_shards}), got {shard_id}")
    n_all = len(records)
    mine = list(records[shard_id * n_all // num_shards : (shard_id + 1) * n_all // num_shards])
    sdir = shard_dir(output, shard_id, num_shards)
    chunks = os.path.join(sdir, "chunks")
    os.makedirs(chunks, exist_ok=True)
    digest = hashlib.sha1("\n".join(str(r["image_id"]) for r in mine).encode()).hexdigest()
    run = {
        "method": method,
        "params": params,
        "dataset": dataset,
        "num_shards": num_shards,
        "shard_id": shard_id,
        "chunk_size": chunk_size,
        "num_images": len(mine),
        "image_ids_sha1": digest,
    }
    run_file = os.path.join(sdir, "run.json")
    if os.path.isfile(run_file):
        with open(run_file) as f:
            previous = json.load(f)
        if previous != json.loads(json.dumps(run)):
            changed = sorted(k for k in run if previous.get(k) != json.loads(json.dumps(run)).get(k))
            raise ProposalStoreError(
                f"{run_file}: this output was started with different settings ({', '.join(changed)} differ); "
                "use another --output, or --overwrite to start again"
            )
    else:
        with open(run_file + ".tmp", "w") as f:
            json.dump(run, f, indent=1)
        os.replace(run_file + ".tmp", run_file)

    summary = {
        "shard_dir": sdir,
        "images": len(mine),
        "skipped": [],
        "resumed_chunks": 0,
        "computed_chunks": 0,
    }
    if os.path.isfile(os.path.join(sdir, "meta.json")):
        summary["skipped"] = ProposalStore.open(sdir, validate=False).skipped
        return summary
    num_chunks = math.ceil(len(mine) / chunk_size)
    finished = [os.path.isfile(os.path.join(chunks, f"chunk-{c:06d}.json")) for c in range(num_chunks)]
    summary["resumed_chunks"] = int(sum(finished))
    _append_log(
        output,
        [
            f"shard {shard_id}/{num_shards}: {method} on {len(mine)} images, {num_chunks} chunks, "
            f"{sum(finished)} already finished (resumed)"
        ],
    )
    done_images = sum(min(chunk_size, len(mine) - c * chunk_size) for c in range(num_chunks) if finished[c])
    # spawn, not fork: forking a process whose OpenCV/OpenMP thread pools are running can deadlock
    pool = mp.get_context("spawn").Pool(num_workers, initializer=_init_worker) if num_workers > 1 else None
    bar = tqdm(
        total=len(mine),
        initial=done_images,
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
        desc=f"{method} shard {shard_id}/{num_shards}",
    )
    try:
        for c in range(num_chunks):
            if finished[c]:
                continue
            chunk_records = mine[c * chunk_size : (c + 1) * chunk_size]
            tasks = [(r, method, params, debug_sleep) for r in chunk_records]
            it = (
                pool.imap(_process_image, tasks, chunksize=max(1, len(tasks) // (8 * num_workers)))
                if pool
                else map(_process_image, tasks)
            )
            results = []
            for result in it:
                results.append(result)
                bar.update(1)
            skipped = _write_chunk(chunks, c, results, chunk_records)
            summary["computed_chunks"] += 1
            if skipped:
                _append_log(
                    output, [f"SKIPPED {s['image_id']} ({s['file_name']}): {s['reason']}" for s in skipped]
                )
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    summary["skipped"] = _assemble_shard(sdir, num_chunks, method, params, dataset, shard_id, num_shards)
    if not keep_chunks:
        shutil.rmtree(chunks, ignore_errors=True)
    return summary


def _assemble_shard(sdir, num_chunks, method, params, dataset, shard_id, num_shards) -> List[dict]:
    """Concatenate the finished chunks of a shard into its store (meta.json written last)."""
    chunks = os.path.join(sdir, "chunks")
    metas, totals = [], [0, 0]
    for c in range(num_chunks):
        with open(os.path.join(chunks, f"chunk-{c:06d}.json")) as f:
            metas.append(json.load(f))
        with np.load(os.path.join(chunks, f"chunk-{c:06d}.npz"), allow_pickle=False) as z:
            totals[0] += len(z["counts"])
            totals[1] += int(z["counts"].sum())
    writer = StoreWriter(sdir, totals[0], totals[1])
    for c in range(num_chunks):
        with np.load(os.path.join(chunks, f"chunk-{c:06d}.npz"), allow_pickle=False) as z:
            writer.append(z["boxes"], z["scores"], z["counts"], z["sizes"])
    ids = [i for m in metas for i in m["image_ids"]]
    skipped = [s for m in metas for s in m["skipped"]]
    writer.close(
        ids, method, params, dataset=dataset, skipped=skipped, shard={"id": shard_id, "of": num_shards}
    )
    return skipped


def merge_if_complete(output: str, num_shards: int, keep_shards: bool = False) -> Optional[str]:
    """Merge the shard stores into ``output`` once all ``num_shards`` are complete; None if some are missing."""
    if os.path.isfile(os.path.join(output, "meta.json")):
        return output
    dirs = [shard_dir(output, i, num_shards) for i in range(num_shards)]
    if not all(os.path.isfile(os.path.join(d, "meta.json")) for d in dirs):
        return None
    lock = os.path.join(output, ".merge.lock")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        logger.warning("%s exists: another process is merging (delete it if that process died)", lock)
        return None
    try:
        os.close(fd)
        merge_stores(dirs, output)
        _append_log(output, [f"merged {num_shards} shard(s) into {output}"])
        if not keep_shards:
            shutil.rmtree(os.path.join(output, "shards"), ignore_errors=True)
    finally:
        os.remove(lock)
    return output


def register_builtin_datasets() -> None:
    """Make the project's built-in datasets (``synthetic_shapes_{train,val}``) known to DatasetCatalog."""
    from detectron2.data import DatasetCatalog

    try:
        import siamese_detr.data  # noqa: F401  (registers the built-in datasets on import)
    except ImportError as e:  # pragma: no cover - only while the package is incomplete
        logger.warning("import siamese_detr.data failed (%s); registering the built-in datasets directly", e)
    if "synthetic_shapes_val" not in DatasetCatalog.list():
        from siamese_detr.data.datasets import register_synthetic_shapes

        register_synthetic_shapes()
