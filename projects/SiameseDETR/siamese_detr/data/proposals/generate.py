"""Resumable, sharded proposal generation (the engine behind ``tools/generate_proposals.py``).

Output layout of one run (``output`` = the final store directory)::

    output/                         the merged store (see store.py), written once every shard is complete
    output/generate.log             appended by every shard: start, resumed chunks, skipped images, summary
    output/shards/shard-IIIII-of-KKKKK/
        run.json                    method, params, dataset, K, digests of the shard's slice and of the
                                    whole image list: a resumed run, the other shards and the merge must match it
        chunks/chunk-CCCCCC.npz     numeric arrays of chunk C (boxes, scores, counts, sizes; no pickle)
        chunks/chunk-CCCCCC.json    its image ids and skipped images, written last = "chunk C is finished"
        meta.json, boxes.npy, ...   the shard's store, assembled from its chunks when all are finished

Shard I of K takes the contiguous slice ``records[I*N//K : (I+1)*N//K]`` of the image list, so the merged store has
the dataset's order and equals a single-shard run. Every shard of one output must list the same images (dataset,
whole-list digest) with the same K, method and parameters: a shard that starts next to shards of another K, of
other images or of other settings is refused, and so is a merge of such shards. A killed run restarts at the first
unfinished chunk. The shard that completes last merges, guarded by a lock file naming its owner (host, pid); a lock
left by a killed merge (its owner is gone) is taken over. A worker that dies (e.g. killed for memory) breaks the
pool: its chunk is computed once more in a fresh pool, then the run fails with a message (never hangs). Images are
listed and read by the project's one lister and reader (``image_folder``, ``image_io``); a run in which no image
could be read writes no store and fails. An image whose size differs from the height/width its dataset records (a
wrong COCO json) stops the run, naming the json and the image: every consumer of the store would refuse it.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Dict, List, Optional, Sequence

import numpy as np

from ...utils.progress import progress_bar
from ..image_folder import IMAGE_EXTENSIONS, list_image_files
from .methods import compute_proposals
from .shards import (  # noqa: F401  (existing_shards, missing_shards, merge_if_complete: re-exported)
    _append_log,
    _check_other_shards,
    existing_shards,
    image_list_digest,
    merge_if_complete,
    missing_shards,
    same_source,
    shard_dir,
)
from .store import ProposalStore, ProposalStoreError, StoreWriter
from ...utils.user_errors import UserValueError

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_image_dir",
    "dataset_records",
    "shard_dir",
    "existing_shards",
    "missing_shards",
    "image_list_digest",
    "same_source",
    "generate_shard",
    "merge_if_complete",
    "register_builtin_datasets",
]

logger = logging.getLogger(__name__)


def list_image_dir(root: str) -> List[Dict[str, str]]:
    """Image files under ``root`` (the project's one lister, ``image_folder.list_image_files``: recursive,
    by extension, symlinked folders followed, hidden entries skipped), sorted;
    image_id = posix path relative to root, file_name = absolute path."""
    root = os.path.abspath(root)
    return [{"file_name": os.path.join(root, rel), "image_id": rel} for rel in list_image_files(root)]


def dataset_records(name: str) -> List[dict]:
    """(file_name, image_id[, height, width]) of a registered Detectron2 dataset, in its order; height and
    width only where the dataset records them (the generator checks them against the files)."""
    from detectron2.data import DatasetCatalog

    records = []
    for d in DatasetCatalog.get(name):
        r = {"file_name": d["file_name"], "image_id": str(d["image_id"])}
        if "height" in d and "width" in d:
            r["height"], r["width"] = int(d["height"]), int(d["width"])
        records.append(r)
    return records


def _init_worker(parent_pid: Optional[int] = None) -> None:
    """Each pool worker uses one thread: parallelism comes from the processes; it ends with the generator
    process (``parent_pid``) rather than living on, re-parented, after a kill -9 of it."""
    if parent_pid is not None:
        from ...utils.parent_watch import exit_with_parent

        exit_with_parent(parent_pid)
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def _process_image(task):
    """Worker: read one image with the project's one reader (``image_io.read_image``: EXIF-rotated, BGR,
    16-bit scaled, degenerate sizes refused) and run the method; never raises on a bad image."""
    record, method, params, debug_sleep, debug_die_on = task
    from ..image_io import read_image_checked

    if debug_die_on is not None and record["image_id"] == debug_die_on:  # tests: a worker killed mid-chunk
        os.kill(os.getpid(), signal.SIGKILL)
    image, reason = read_image_checked(record["file_name"], "BGR")
    if image is None:  # corrupt, zero-byte, unreadable: skipped and reported, never fatal
        return record["image_id"], None, None, None, reason
    kwargs = dict(params)
    max_boxes = kwargs.pop("max_boxes", None)
    seed = kwargs.pop("seed", 0)
    boxes, scores = compute_proposals(
        image, method, max_boxes, seed=seed, image_id=record["image_id"], **kwargs
    )
    if debug_sleep:
        time.sleep(debug_sleep)
    return record["image_id"], boxes, scores, image.shape[:2], None


_NEW_RUN_KEYS = ("num_images_all", "image_list_sha1")  # not in the run.json of older versions


def _atomic_json(path: str, obj) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


MAX_CHUNK_ATTEMPTS = 2  # a chunk whose worker died is computed once more before the run fails


class WorkerDiedError(RuntimeError):
    """A worker of the pool died (e.g. killed for memory) on the same chunk more than once."""


def _new_pool(num_workers: int) -> Optional[ProcessPoolExecutor]:
    """A pool that notices a dead worker (``BrokenProcessPool``), unlike ``multiprocessing.Pool``, whose
    ``imap`` waits forever for the lost task. Spawn, not fork: forking a process whose OpenCV/OpenMP thread
    pools are running can deadlock."""
    if num_workers <= 1:
        return None
    return ProcessPoolExecutor(num_workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(os.getpid(),))


def _run_chunk(pool, tasks, bar, num_workers) -> list:
    """Results of ``tasks`` in order; the progress bar is rolled back if the pool breaks."""
    results = []
    it = (pool.map(_process_image, tasks, chunksize=max(1, len(tasks) // (8 * num_workers)))
          if pool is not None else map(_process_image, tasks))
    try:
        for result in it:
            results.append(result)
            bar.update(1)
    except BrokenProcessPool:
        bar.update(-len(results))
        raise
    return results


def _refuse_if_nothing_readable(chunks: str, num_chunks: int, num_images: int, output: str) -> None:
    skipped = []
    for c in range(num_chunks):
        with open(os.path.join(chunks, f"chunk-{c:06d}.json")) as f:
            meta = json.load(f)
        if meta["image_ids"]:
            return
        skipped += meta["skipped"]
    first = "; ".join(f"{s['file_name']}: {s['reason']}" for s in skipped[:3])
    raise ProposalStoreError(
        f"none of the {num_images} images could be read (first: {first}); no store was written. Check the "
        f"paths (DETECTRON2_DATASETS, --image-dir); the full list is in {os.path.join(output, 'generate.log')}. "
        "After fixing the images, run the same command with --overwrite (a plain re-run keeps the finished "
        "chunks, and with them these unreadable images)"
    )


def _annotation_file(dataset) -> Optional[str]:
    """The json a registered dataset is read from (COCO-style datasets and ``coco:`` specs), or None."""
    if not isinstance(dataset, str):
        return None
    try:
        from detectron2.data import MetadataCatalog

        json_file = MetadataCatalog.get(dataset).get("json_file", None)
    except Exception:  # pragma: no cover - not a registered name
        return None
    return json_file if isinstance(json_file, str) else None


def _check_recorded_sizes(results, records, dataset) -> None:
    """Refuse images whose (EXIF-rotated) size differs from the height/width their dataset records: the store
    would record the file's size, and every consumer that checks the store against the dataset refuses it."""
    by_id = {r["image_id"]: r for r in records}
    wrong = []
    for image_id, _, _, hw, error in results:
        r = by_id[image_id]
        if error is None and "height" in r and "width" in r and tuple(int(v) for v in hw) != (r["height"], r["width"]):
            wrong.append(f"image {image_id!r} ({r['file_name']}): recorded {r['height']}x{r['width']}, file "
                         f"{int(hw[0])}x{int(hw[1])}")
    if not wrong:
        return
    json_file = _annotation_file(dataset)
    source = json_file or f"dataset {dataset!r}"
    raise ProposalStoreError(
        f"{source}: {len(wrong)} image(s) differ in size from the height x width the dataset records (height x "
        f"width, the file after EXIF rotation; the run stops at the first chunk that has one): "
        f"{'; '.join(wrong[:5])}. Every user of the store checks "
        f"the sizes against the dataset and would refuse it: correct height/width in {source} (or use the "
        "original images), then run the same command again"
    )


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
    debug_die_on: Optional[str] = None,
) -> dict:
    """Generate (or resume) shard ``shard_id`` of ``num_shards`` and write its store.

    Args:
        records: every image of the dataset, [{"file_name", "image_id"}] (the shard slice is taken here).
        params: method parameters incl. "max_boxes" and "seed"; recorded in the store's meta.json.
    Returns:
        {"shard_dir", "images", "skipped": [...], "resumed_chunks", "computed_chunks"}.
    Raises:
        WorkerDiedError: a worker process died twice on the same chunk (finished chunks are kept).
        ProposalStoreError: a single-shard run in which no image could be read (no empty store is written).
    """
    if not 0 <= shard_id < num_shards:
        raise UserValueError(f"--shard-id must be in [0, {num_shards}), got {shard_id}")
    n_all = len(records)
    first = shard_id * n_all // num_shards  # index of the shard's first image in the whole list
    mine = list(records[first : (shard_id + 1) * n_all // num_shards])
    sdir = shard_dir(output, shard_id, num_shards)
    chunks = os.path.join(sdir, "chunks")
    digest_all = image_list_digest(r["image_id"] for r in records)
    run = {
        "method": method,
        "params": params,
        "dataset": dataset,
        "num_shards": num_shards,
        "shard_id": shard_id,
        "chunk_size": chunk_size,
        "num_images": len(mine),
        "image_ids_sha1": image_list_digest(r["image_id"] for r in mine),
        "num_images_all": n_all,
        "image_list_sha1": digest_all,
    }
    _check_other_shards(output, run)
    _start_or_resume_run(sdir, run)
    os.makedirs(chunks, exist_ok=True)

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
    summary["computed_chunks"] = _compute_missing_chunks(
        mine, first, finished, chunks, output, method, params, dataset,
        shard_label=f"{shard_id}/{num_shards}", chunk_size=chunk_size, num_workers=num_workers,
        progress=progress, debug_sleep=debug_sleep, debug_die_on=debug_die_on,
    )
    if num_shards == 1 and mine:
        _refuse_if_nothing_readable(chunks, num_chunks, len(mine), output)
    summary["skipped"] = _assemble_shard(sdir, num_chunks, method, params, dataset, shard_id, num_shards,
                                         image_list={"num_images": n_all, "sha1": digest_all})
    if not keep_chunks:
        shutil.rmtree(chunks, ignore_errors=True)
    return summary


def _compute_missing_chunks(
    mine: Sequence[dict],
    first: int,
    finished: Sequence[bool],
    chunks: str,
    output: str,
    method: str,
    params: dict,
    dataset: Optional[str],
    *,
    shard_label: str,
    chunk_size: int,
    num_workers: int,
    progress: bool,
    debug_sleep: float,
    debug_die_on: Optional[str],
) -> int:
    """Compute and write every chunk of the shard's images ``mine`` that is not ``finished`` yet.

    ``first`` is the index of ``mine[0]`` in the whole dataset (for the messages), ``chunks`` the folder of the
    ``chunk-NNNNNN.json`` files; skipped images are logged to the output's log. Returns the number of chunks
    computed. Ctrl-C (or any error) stops the workers at once; the chunks written so far are kept."""
    num_chunks = len(finished)
    done_images = sum(min(chunk_size, len(mine) - c * chunk_size) for c in range(num_chunks) if finished[c])
    # a bar on a terminal; in a log file, a line with rate and ETA every minute
    bar = progress_bar(len(mine), initial=done_images, unit="img", enabled=progress,
                       desc=f"{method} shard {shard_label}", logger=logger)
    pool = _RetryingPool(num_workers, log=lambda message: _append_log(output, [message]))
    computed = 0
    try:
        for c in range(num_chunks):
            if finished[c]:
                continue
            chunk_records = mine[c * chunk_size : (c + 1) * chunk_size]
            where = (f"chunk {c} (images {first + c * chunk_size} to {first + c * chunk_size + len(chunk_records) - 1}"
                     f" of the dataset, first {chunk_records[0]['image_id']!r})")
            results = pool.compute([(r, method, params, debug_sleep, debug_die_on) for r in chunk_records], bar, where)
            _check_recorded_sizes(results, chunk_records, dataset)
            skipped = _write_chunk(chunks, c, results, chunk_records)
            computed += 1
            if skipped:
                _append_log(
                    output, [f"SKIPPED {s['image_id']} ({s['file_name']}): {s['reason']}" for s in skipped]
                )
    except BaseException:
        pool.abort()  # e.g. Ctrl-C: do not wait for the rest of the chunk
        raise
    finally:
        bar.close()
        pool.close()
    return computed


def _start_or_resume_run(sdir: str, run: dict) -> None:
    """Write the shard's ``run.json``, or, when it exists (a resumed run), refuse settings that differ from it.

    Keys that the run.json of an older version lacks (``_NEW_RUN_KEYS``) are not compared; they are added to it.
    Raises ProposalStoreError naming the file and the keys that differ."""
    run_file = os.path.join(sdir, "run.json")
    wanted = json.loads(json.dumps(run))  # as json would read it back (tuples as lists)
    if not os.path.isfile(run_file):
        os.makedirs(sdir, exist_ok=True)
        _atomic_json(run_file, run)
        return
    with open(run_file) as f:
        previous = json.load(f)
    changed = sorted(k for k in run if (k in previous or k not in _NEW_RUN_KEYS)
                     and not (same_source(previous.get(k), wanted[k]) if k == "dataset"
                              else previous.get(k) == wanted[k]))
    if changed:
        raise ProposalStoreError(
            f"{run_file}: this output was started with different settings ({', '.join(changed)} differ); "
            "use another --output, or --overwrite to start this shard again"
        )
    if any(k not in previous for k in _NEW_RUN_KEYS):
        _atomic_json(run_file, dict(previous, **{k: wanted[k] for k in _NEW_RUN_KEYS}))


class _RetryingPool:
    """The worker processes of one shard (none for ``num_workers <= 1``: the images are computed in this
    process). A chunk whose worker died (``BrokenProcessPool``, e.g. killed for memory) is computed once more in
    a fresh pool; after ``MAX_CHUNK_ATTEMPTS`` the run fails with ``WorkerDiedError``. Each death is written to
    ``log`` (the store's generate.log) and to the logger."""

    def __init__(self, num_workers: int, log) -> None:
        self.num_workers = num_workers
        self.log = log
        self.pool = _new_pool(num_workers)

    def compute(self, tasks: list, bar, where: str) -> list:
        """Results of ``tasks`` (one per image, in order); ``where`` names the chunk in the messages."""
        attempt = 1
        while True:
            try:
                return _run_chunk(self.pool, tasks, bar, self.num_workers)
            except BrokenProcessPool:
                self.abort()
                message = (f"a worker process died (killed by a signal, e.g. out of memory) while computing "
                           f"{where}, attempt {attempt} of {MAX_CHUNK_ATTEMPTS}")
                self.log(message)
                logger.warning(message)
                if attempt == MAX_CHUNK_ATTEMPTS:
                    raise WorkerDiedError(
                        f"{message}; giving up. Finished chunks are kept: run the same command again to "
                        "resume (with fewer --num-workers if memory is short)"
                    ) from None
                attempt += 1
                self.pool = _new_pool(self.num_workers)

    def abort(self) -> None:
        """Stop at once: queued images are cancelled, running ones not waited for."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def close(self) -> None:
        """Wait for the workers to end (after a finished shard)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


def _assemble_shard(sdir, num_chunks, method, params, dataset, shard_id, num_shards, image_list=None) -> List[dict]:
    """Concatenate the finished chunks of a shard into its store (meta.json written last). ``image_list``
    ({"num_images", "sha1"} of the whole listed image list) goes into meta.json and on into the merged store."""
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
        ids, method, params, dataset=dataset, skipped=skipped, shard={"id": shard_id, "of": num_shards},
        **({"image_list": image_list} if image_list else {}),
    )
    return skipped


def register_builtin_datasets() -> None:
    """Make the project's built-in datasets (``synthetic_shapes_*``) known to DatasetCatalog."""
    from detectron2.data import DatasetCatalog

    try:
        import siamese_detr.data  # noqa: F401  (registers the built-in datasets on import)
    except ImportError as e:  # pragma: no cover - only while the package is incomplete
        logger.warning("import siamese_detr.data failed (%s); registering the built-in datasets directly", e)
    if "synthetic_shapes_val" not in DatasetCatalog.list():
        from siamese_detr.data.datasets import register_synthetic_shapes

        register_synthetic_shapes()
