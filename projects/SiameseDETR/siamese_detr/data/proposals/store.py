"""Proposal store: one directory of numpy arrays per dataset, memory-mapped, O(1) lookup, no pickle.

Layout of ``<name>.proposals/`` (format_version 1)::

    meta.json        {"format_version", "method", "params", "dataset", "num_images", "num_boxes",
                      "counts": {"min", "max", "mean"}, "skipped": [{"image_id", "file_name", "reason"}], ...};
                      generated stores add "image_list": {"num_images", "sha1"} of every image listed at
                      generation (stored + skipped; the generator compares it with the images listed now)
    image_ids.json   list[str] of length N (str(image_id) of the Detectron2 dataset dict, or a relative path)
    offsets.npy      int64 [N + 1]; image i owns rows offsets[i]:offsets[i+1]; offsets[0] = 0, non-decreasing
    boxes.npy        float32 [total, 4] xyxy, ABSOLUTE pixels of the original image, method's score order
    scores.npy       float32 [total]
    sizes.npy        int32 [N, 2] (height, width) of each image as read (EXIF-rotated); -1 = unknown

``meta.json`` is written last, so a directory without it is an interrupted write. Arrays are opened with
``np.load(mmap_mode="r")`` (``allow_pickle=False``); ids map to rows through a dict built at open
(about a second for 1.28 M ImageNet ids; a lookup is a dict hit plus two array slices).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...utils.user_errors import UserError, UserKeyError
from ...utils.writable import nearest_existing, write_refused

__all__ = [
    "FORMAT_VERSION",
    "ProposalStore",
    "ProposalStoreError",
    "StoreWriter",
    "write_store",
    "merge_stores",
    "folder_write_problem",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
ARRAY_FILES = ("boxes.npy", "scores.npy", "offsets.npy", "sizes.npy")
REGENERATE_HINT = (
    "regenerate it: tools/generate_proposals.py --dataset NAME | --image-dir DIR --method METHOD --output STORE "
    "--overwrite (a plain re-run keeps a complete store as it is)"
)
_BOX_TOLERANCE = 0.01  # pixels a box may stick out of its image (float rounding of scaled boxes)


class ProposalStoreError(UserError, ValueError):
    """A proposal store is missing, corrupt or does not match the dataset."""


def folder_write_problem(folder: str) -> Optional[str]:
    """Why no file can be written into ``folder``, or None. A folder that does not exist yet is judged by its
    nearest existing parent (where it would be created), so nothing is created here.

    Writing is tried (a temporary file, removed at once): permission bits do not tell, since root ignores them
    and an immutable folder (``chattr +i``) or a pseudo file system (``/proc``) refuses anyway.
    """
    existing = nearest_existing(folder)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    refused = write_refused(existing)
    return None if refused is None else f"cannot write in {existing} ({refused})"


def _atomic_write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


class StoreWriter:
    """Write a store in chunks without holding it in memory (``np.lib.format.open_memmap``).

    Usage: ``w = StoreWriter(path, num_images, num_boxes); w.append(boxes [k,4], scores [k], counts [m],
    sizes [m,2]) ...; w.close(image_ids, method, params, dataset=..., skipped=...)``. Totals must be known up
    front (they are: merged shards, generated chunks, benchmarks).
    """

    def __init__(self, path: str, num_images: int, num_boxes: int):
        os.makedirs(path, exist_ok=True)
        if os.path.exists(os.path.join(path, "meta.json")):
            os.remove(os.path.join(path, "meta.json"))  # invalidate any previous store while rewriting
        self.path = path
        self.num_images, self.num_boxes = int(num_images), int(num_boxes)
        mm = np.lib.format.open_memmap
        self._boxes = mm(os.path.join(path, "boxes.npy"), "w+", np.float32, (self.num_boxes, 4))
        self._scores = mm(os.path.join(path, "scores.npy"), "w+", np.float32, (self.num_boxes,))
        self._offsets = np.zeros(self.num_images + 1, np.int64)
        self._sizes = np.full((self.num_images, 2), -1, np.int32)
        self._row = 0
        self._image = 0

    def append(
        self, boxes: np.ndarray, scores: np.ndarray, counts: np.ndarray, sizes: Optional[np.ndarray] = None
    ):
        counts = np.asarray(counts, np.int64).reshape(-1)
        k, m = int(counts.sum()), len(counts)
        if len(boxes) != k or len(scores) != k:
            raise ValueError(f"append: {len(boxes)} boxes / {len(scores)} scores but counts sum to {k}")
        self._boxes[self._row : self._row + k] = boxes
        self._scores[self._row : self._row + k] = scores
        self._offsets[self._image + 1 : self._image + m + 1] = self._row + np.cumsum(counts)
        if sizes is not None:
            self._sizes[self._image : self._image + m] = sizes
        self._row += k
        self._image += m

    def close(
        self, image_ids: Sequence, method: str, params: dict, dataset=None, skipped=None, **extra
    ) -> str:
        if self._row != self.num_boxes or self._image != self.num_images or len(image_ids) != self.num_images:
            raise ValueError(
                f"StoreWriter.close: wrote {self._image}/{self.num_images} images, {self._row}/{self.num_boxes} "
                f"boxes, got {len(image_ids)} ids"
            )
        self._boxes.flush()
        self._scores.flush()
        del self._boxes, self._scores
        np.save(os.path.join(self.path, "offsets.npy"), self._offsets)
        np.save(os.path.join(self.path, "sizes.npy"), self._sizes)
        _atomic_write_json(os.path.join(self.path, "image_ids.json"), [str(i) for i in image_ids])
        counts = np.diff(self._offsets)
        meta = {
            "format_version": FORMAT_VERSION,
            "method": method,
            "params": params or {},
            "dataset": dataset,
            "num_images": self.num_images,
            "num_boxes": self.num_boxes,
            "counts": {
                "min": int(counts.min()) if len(counts) else 0,
                "max": int(counts.max()) if len(counts) else 0,
                "mean": float(counts.mean()) if len(counts) else 0.0,
            },
            "skipped": list(skipped or []),
        }
        meta.update(extra)
        _atomic_write_json(os.path.join(self.path, "meta.json"), meta)  # last: marks the store complete
        return self.path


def write_store(
    path: str,
    image_ids: Sequence,
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    sizes: Optional[Sequence[Tuple[int, int]]] = None,
    method: str = "unknown",
    params: Optional[dict] = None,
    dataset=None,
    skipped=None,
    **extra,
) -> str:
    """Write a store from per-image lists: boxes[i] float [K_i, 4] xyxy absolute, scores[i] [K_i]."""
    counts = np.array([len(b) for b in boxes], np.int64)
    writer = StoreWriter(path, len(image_ids), int(counts.sum()))
    cat_boxes = (
        np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]) if len(boxes) else []
    )
    cat_scores = (
        np.concatenate([np.asarray(s, np.float32).reshape(-1) for s in scores]) if len(scores) else []
    )
    sizes_arr = None if sizes is None else np.asarray(sizes, np.int32).reshape(-1, 2)
    writer.append(
        np.asarray(cat_boxes, np.float32).reshape(-1, 4),
        np.asarray(cat_scores, np.float32),
        counts,
        sizes_arr,
    )
    return writer.close(image_ids, method, params or {}, dataset=dataset, skipped=skipped, **extra)


def merge_stores(inputs: Sequence[str], output: str, chunk_images: int = 65536) -> str:
    """Concatenate stores (e.g. the shards of one run, in shard order) into ``output``.

    All inputs must share method and params; ids must be disjoint. Copies in chunks of ``chunk_images`` images.
    """
    stores = [ProposalStore.open(p, full_check_limit=0) for p in inputs]
    if not stores:
        raise ValueError("merge_stores: no input stores")
    for s in stores[1:]:
        if s.method != stores[0].method or s.params != stores[0].params:
            raise ProposalStoreError(
                f"cannot merge {s.path} (method={s.method}, params={s.params}) with {stores[0].path} "
                f"(method={stores[0].method}, params={stores[0].params}): shards come from different runs"
            )
    ids = [i for s in stores for i in s.image_ids]
    if len(set(ids)) != len(ids):
        raise ProposalStoreError(f"cannot merge {list(inputs)}: the same image id occurs in several shards")
    writer = StoreWriter(output, len(ids), sum(s.num_boxes for s in stores))
    for s in stores:
        for start in range(0, len(s), chunk_images):
            stop = min(start + chunk_images, len(s))
            lo, hi = int(s._offsets[start]), int(s._offsets[stop])
            counts = np.diff(s._offsets[start : stop + 1])
            writer.append(s._boxes[lo:hi], s._scores[lo:hi], counts, s._sizes[start:stop])
    skipped = [x for s in stores for x in s.meta.get("skipped", [])]
    extra = {k: v for k, v in stores[0].meta.items() if k not in _CORE_META_KEYS}
    extra.pop("shard", None)
    extra["merged_from"] = len(stores)
    return writer.close(
        ids, stores[0].method, stores[0].params, stores[0].meta.get("dataset"), skipped, **extra
    )


_CORE_META_KEYS = {
    "format_version",
    "method",
    "params",
    "dataset",
    "num_images",
    "num_boxes",
    "counts",
    "skipped",
}


class ProposalStore:
    """Read-only, memory-mapped proposals of one dataset (see the module docstring for the layout).

    ``store.get(image_id) -> (boxes float32 [K, 4] xyxy absolute original pixels, scores float32 [K])``
    in the method's score order; ``image_id in store``; ``len(store)``; ``store.method``; ``store.params``;
    ``store.check_image(image_id, (height, width), file_name)`` refuses an image whose size differs from the
    one recorded at generation.
    """

    def __init__(self, path: str, meta: dict, image_ids: List[str], offsets, boxes, scores, sizes):
        self.path = path
        self.meta = meta
        self.image_ids = image_ids
        self._offsets, self._boxes, self._scores, self._sizes = offsets, boxes, scores, sizes
        self._row: Dict[str, int] = {k: i for i, k in enumerate(image_ids)}

    # ------------------------------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        path: str,
        dataset: Union[None, str, Iterable[dict]] = None,
        validate: bool = True,
        full_check_limit: int = 20_000_000,
    ) -> "ProposalStore":
        """Open and validate a store.

        Args:
            dataset: a registered Detectron2 dataset name or its list of dicts: every ``str(image_id)`` must be
                in the store (or listed as skipped in meta.json) and sizes must match its height/width.
            validate: check structure (always cheap) and boxes (finite, x1 <= x2, y1 <= y2, inside the image).
            full_check_limit: check every box when the store has at most this many boxes, else the boxes of a
                seeded sample of 10,000 images (``store.validate(full=True)`` checks all, in chunks).
        Raises:
            ProposalStoreError: naming the file, what is wrong and how to fix it.
        """
        path = os.fspath(path)
        meta_file = os.path.join(path, "meta.json")
        if os.path.exists(path) and not os.path.isdir(path):
            raise ProposalStoreError(
                f"proposal store {path!r} is a file, not a store folder: a store is the folder that "
                f"tools/generate_proposals.py --output writes (e.g. NAME.METHOD.proposals), holding meta.json, "
                f"image_ids.json and {', '.join(ARRAY_FILES)}; give that folder. A Detectron2 proposal file "
                "(.pkl) becomes one with tools/generate_proposals.py --import-detectron2 FILE --trust-pickle "
                "--output NAME.proposals"
            )
        if not os.path.isdir(path):
            raise ProposalStoreError(
                f"proposal store {path!r} does not exist; create it with tools/generate_proposals.py"
            )
        if not os.path.isfile(meta_file):
            raise ProposalStoreError(
                f"{meta_file} is missing: the store in {path!r} is incomplete (interrupted write?); {REGENERATE_HINT}"
            )
        try:
            with open(meta_file) as f:
                meta = json.load(f)
            with open(os.path.join(path, "image_ids.json")) as f:
                image_ids = [str(i) for i in json.load(f)]
        except (OSError, ValueError) as e:
            raise ProposalStoreError(
                f"cannot read the json files of proposal store {path!r}: {e}; {REGENERATE_HINT}"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise ProposalStoreError(
                f"{meta_file}: format_version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}; "
                f"{REGENERATE_HINT}"
            )
        arrays = {}
        for name in ARRAY_FILES:
            file = os.path.join(path, name)
            try:
                arrays[name] = np.load(file, mmap_mode="r", allow_pickle=False)
            except Exception as e:  # truncated file, bad header, missing file
                raise ProposalStoreError(
                    f"{file} is missing or corrupt ({type(e).__name__}: {e}); {REGENERATE_HINT}"
                )
        store = cls(
            path,
            meta,
            image_ids,
            np.asarray(arrays["offsets.npy"]),
            arrays["boxes.npy"],
            arrays["scores.npy"],
            np.asarray(arrays["sizes.npy"]),
        )
        if validate:
            store._check_structure()
            store.validate(full=store.num_boxes <= full_check_limit)
        if dataset is not None:
            store.check_dataset(dataset)
        return store

    # ---------------------------------------------------------------------------------- validation
    def _fail(self, file: str, what: str):
        raise ProposalStoreError(f"{os.path.join(self.path, file)}: {what}; {REGENERATE_HINT}")

    def _check_structure(self) -> None:
        n, off = len(self.image_ids), self._offsets
        if len(self._row) != n:
            self._fail("image_ids.json", f"{n - len(self._row)} duplicated image ids")
        if self.meta.get("num_images") != n:
            self._fail(
                "meta.json", f"num_images={self.meta.get('num_images')} but image_ids.json has {n} ids"
            )
        if off.dtype.kind != "i" or off.shape != (n + 1,):
            self._fail(
                "offsets.npy", f"expected an integer array of shape ({n + 1},), got {off.dtype} {off.shape}"
            )
        if off[0] != 0 or np.any(np.diff(off) < 0):
            self._fail("offsets.npy", "offsets must start at 0 and be non-decreasing")
        total = int(off[-1])
        if self._boxes.dtype != np.float32 or self._boxes.shape != (total, 4):
            self._fail(
                "boxes.npy", f"expected float32 ({total}, 4), got {self._boxes.dtype} {self._boxes.shape}"
            )
        if self._scores.dtype != np.float32 or self._scores.shape != (total,):
            self._fail(
                "scores.npy", f"expected float32 ({total},), got {self._scores.dtype} {self._scores.shape}"
            )
        if self._sizes.shape != (n, 2):
            self._fail("sizes.npy", f"expected shape ({n}, 2), got {self._sizes.shape}")

    def validate(self, full: bool = True, chunk_rows: int = 4_000_000, sample_images: int = 10_000) -> None:
        """Check that boxes are finite, well ordered and inside their image (+-0.01 px); scores finite."""
        n = len(self)
        if full or n <= sample_images:
            image_starts = (
                np.searchsorted(self._offsets, np.arange(0, self.num_boxes, chunk_rows), side="right") - 1
            )
            bounds = sorted(set(np.clip(image_starts, 0, n).tolist()) | {0, n})
            ranges = list(zip(bounds[:-1], bounds[1:]))
        else:
            picks = np.sort(np.random.default_rng(0).choice(n, sample_images, replace=False))
            ranges = [(int(i), int(i) + 1) for i in picks]
        for start, stop in ranges:
            self._validate_images(start, stop)

    def _validate_images(self, start: int, stop: int) -> None:
        lo, hi = int(self._offsets[start]), int(self._offsets[stop])
        if hi == lo:
            return
        boxes, scores = np.asarray(self._boxes[lo:hi]), np.asarray(self._scores[lo:hi])
        owner = np.repeat(np.arange(start, stop), np.diff(self._offsets[start : stop + 1]))
        bad = ~np.isfinite(boxes).all(1) | ~np.isfinite(scores)
        bad |= (
            (boxes[:, 2] < boxes[:, 0])
            | (boxes[:, 3] < boxes[:, 1])
            | (boxes[:, :2] < -_BOX_TOLERANCE).any(1)
        )
        h, w = self._sizes[owner, 0], self._sizes[owner, 1]
        known = (h > 0) & (w > 0)
        bad |= known & ((boxes[:, 2] > w + _BOX_TOLERANCE) | (boxes[:, 3] > h + _BOX_TOLERANCE))
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            i = int(owner[j])
            self._fail(
                "boxes.npy",
                f"{int(bad.sum())} invalid boxes (non-finite, x2 < x1 / y2 < y1, or outside the image); first: row "
                f"{lo + j} = {boxes[j].tolist()} score {float(scores[j])} of image {self.image_ids[i]!r} "
                f"(height, width) = {tuple(int(v) for v in self._sizes[i])}",
            )

    def check_dataset(self, dataset: Union[str, Iterable[dict]], name: Optional[str] = None) -> None:
        """Every image of ``dataset`` (a registered name, or its records with ``name`` naming them) must be in
        the store (or recorded as skipped) with matching size. The error's advice never overwrites a store
        that was made for another dataset: it is valid there."""
        name = dataset if isinstance(dataset, str) else name
        if name is not None:
            from detectron2.data import DatasetCatalog

            dataset = DatasetCatalog.get(name)
        skipped = {str(s["image_id"]): s for s in self.meta.get("skipped", [])}
        missing, wrong_size, unreadable = [], [], []
        for d in dataset:
            key = str(d["image_id"])
            row = self._row.get(key)
            if row is None:
                if key not in skipped:
                    missing.append(key)
                else:
                    unreadable.append(key)
                continue
            h, w = (int(v) for v in self._sizes[row])
            if "height" in d and "width" in d and h > 0 and (h, w) != (int(d["height"]), int(d["width"])):
                wrong_size.append((key, (h, w), (int(d["height"]), int(d["width"]))))
        where = f"dataset {name!r}" if name else "the dataset"
        made_for = self.meta.get("dataset")
        made_by = self._remake_option()
        if self.method == "detectron2_import":  # the same file would give the same store: another file, or compute
            source = self.params.get("source_file", "its proposal file")
            fix = (f"it was imported from {source}, which does not match these images: import a proposal file "
                   f"made for them (tools/generate_proposals.py --dataset {name or 'NAME'} {made_by} --output "
                   f"NEW_STORE) or compute proposals (--method edgeboxes in place of --import-detectron2)")
        elif name and made_for is not None and str(made_for) != name:
            fix = (f"keep it (it is the store of {made_for!r}) and generate one for {name} into a new folder: "
                   f"tools/generate_proposals.py --dataset {name} {made_by} --output NEW_STORE")
        else:
            fix = (f"generate a store for it with tools/generate_proposals.py --dataset {name or 'NAME'} "
                   f"{made_by} --output NEW_STORE (or, if {self.path} was made from these images before they "
                   f"changed, regenerate it: --output {self.path} --overwrite)")
        if missing:
            raise ProposalStoreError(
                f"{os.path.join(self.path, 'image_ids.json')}: {len(missing)} image ids of {where} have no "
                f"proposals (first: {missing[:5]}); the store was made for {self.meta.get('dataset')!r}: {fix}"
            )
        if wrong_size:
            raise ProposalStoreError(
                f"{os.path.join(self.path, 'sizes.npy')}: {len(wrong_size)} images differ in size from {where} "
                f"(first: id, store (h, w), dataset (h, w) = {wrong_size[0]}); {fix}"
            )
        if unreadable:  # only those of this dataset: a store may have skipped images another dataset lacks
            first = "; ".join(f"{k} ({skipped[k].get('file_name')}: {skipped[k].get('reason')})"
                              for k in unreadable[:3])
            logger.warning(
                "%s: %d images of %s were unreadable at generation time and have no proposals (first: %s); "
                "training skips them. To use them, replace the files and regenerate the store (--overwrite)",
                self.path, len(unreadable), where, first,
            )

    # ------------------------------------------------------------------------------------- access
    def get(self, image_id) -> Tuple[np.ndarray, np.ndarray]:
        """(boxes float32 [K, 4] xyxy absolute original pixels, scores float32 [K]), best first (copies)."""
        try:
            row = self._row[str(image_id)]
        except KeyError:
            raise UserKeyError(
                f"image id {image_id!r} is not in proposal store {self.path!r} (dataset {self.meta.get('dataset')!r}"
                f", {len(self)} images); generate proposals for this dataset with tools/generate_proposals.py"
            ) from None
        lo, hi = self._offsets[row], self._offsets[row + 1]
        return np.array(self._boxes[lo:hi]), np.array(self._scores[lo:hi])

    def check_image(self, image_id, hw: Tuple[int, int], file_name: Optional[str] = None) -> None:
        """Raise :class:`ProposalStoreError` when the image now has another (height, width) than at generation
        (its boxes would be in the wrong pixels); sizes unknown to the store (-1) are not checked."""
        recorded = self.image_size(image_id)
        if recorded[0] > 0 and tuple(int(v) for v in hw) != recorded:
            raise ProposalStoreError(
                f"{os.path.join(self.path, 'sizes.npy')}: image {image_id!r}"
                f"{f' ({file_name})' if file_name else ''} is {hw[0]}x{hw[1]} now but was {recorded[0]}x{recorded[1]} "
                f"when the store was generated (from {self.meta.get('dataset')!r}): the images changed (re-exported "
                f"at another size?) or the store is for other images; {REGENERATE_HINT}"
            )

    def image_size(self, image_id) -> Tuple[int, int]:
        """(height, width) recorded for the image (-1, -1 if unknown)."""
        h, w = self._sizes[self._row[str(image_id)]]
        return int(h), int(w)

    def __contains__(self, image_id) -> bool:
        return str(image_id) in self._row

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def method(self) -> str:
        return self.meta.get("method")

    def _remake_option(self) -> str:
        """The ``tools/generate_proposals.py`` option that makes a store like this one: ``--method M``, or, for
        an imported store, the import of a proposal file (``--method METHOD`` when neither is known)."""
        from .methods import METHODS

        if self.method in METHODS:
            return f"--method {self.method}"
        if self.method == "detectron2_import":
            return "--import-detectron2 NEW_FILE.pkl --trust-pickle"
        return "--method METHOD"

    @property
    def params(self) -> dict:
        return self.meta.get("params", {})

    @property
    def num_boxes(self) -> int:
        return int(self._offsets[-1])

    @property
    def skipped(self) -> List[dict]:
        return list(self.meta.get("skipped", []))

    def __repr__(self) -> str:
        return f"ProposalStore({self.path!r}, method={self.method!r}, images={len(self)}, boxes={self.num_boxes})"
