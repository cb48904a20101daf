"""Selection and files of the low-data splits, without Detectron2 (see :mod:`.low_data_splits` for the
protocols and the registration). Pure numpy + json, so any process (and the tests' child processes) can
compute and write a split quickly: the project's user errors (and, with them, torch) are imported only when
one is raised (:func:`_user_errors`)."""

import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "DEFAULT_SEED",
    "LOW_DATA_SPLITS",
    "read_split_file",
    "split_name",
    "select_subset",
    "split_file",
    "write_low_data_split",
]

DEFAULT_SEED = 42
_VOC_PROTOCOL = (
    "Siamese DETR VOC low-data tables: percent of VOC 07+12 trainval images, default_rng(seed).choice over "
    "sorted image ids as DETReg's COCO draw (official split files unreleased)"
)
_COCO_PROTOCOL = (
    "DETReg semi-supervised COCO (released code, datasets/coco.py: np.random.default_rng(42).choice over "
    "torchvision's sorted train2017 ids, round(N * pct) of them, no replacement)"
)


def split_name(parent: str, percent: float, seed: int = DEFAULT_SEED) -> str:
    """``("coco_2017_train", 1) -> "coco_2017_train_1pct_seed42"``; ``voc_2007_2012_trainval_coco`` drops
    its ``_coco`` suffix in split names (``voc_2007_2012_trainval_10pct_seed42``)."""
    base = parent[: -len("_coco")] if parent.endswith("_coco") else parent
    pct = f"{percent:g}".replace(".", "p")
    return f"{base}_{pct}pct_seed{seed}"


# name -> (parent, percent, seed, protocol)
LOW_DATA_SPLITS: Dict[str, Tuple[str, float, int, str]] = {
    split_name(parent, pct): (parent, pct, DEFAULT_SEED, protocol)
    for parent, pcts, protocol in (
        # paper appendix B, Fig. 8 (Table 6: 10 %) = supplementary Fig. 2 (Table 2)
        ("voc_2007_2012_trainval_coco", (10, 30, 50, 70), _VOC_PROTOCOL),
        ("coco_2017_train", (1, 2, 5, 10), _COCO_PROTOCOL),
    )
    for pct in pcts
}


def select_subset(image_ids: Iterable[int], percent: float, seed: int = DEFAULT_SEED) -> List[int]:
    """``round(N * percent / 100)`` of the distinct ids (at least 1), drawn as DETReg's released
    ``datasets/coco.py`` (amirbar/DETReg ``a4b6363``: ``np.random.default_rng(seed).choice(self.ids,
    size=round(float(len(self.ids)) * filter_pct), replace=False)`` over torchvision's sorted ids); the result
    is sorted and does not depend on the input order."""
    ids = np.array(sorted({int(i) for i in image_ids}), dtype=np.int64)
    if len(ids) == 0:
        raise ValueError("select_subset: the parent dataset has no images")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    size = max(1, int(round(float(len(ids)) * (percent / 100.0))))
    chosen = np.random.default_rng(seed).choice(ids, size=size, replace=False)
    return sorted(int(i) for i in chosen)


def _root(root: Optional[str]) -> str:
    return root or os.getenv("DETECTRON2_DATASETS", "datasets")


def split_file(name: str, root: Optional[str] = None) -> str:
    return os.path.join(_root(root), "low_data_splits", f"{name}.json")


def _user_errors():
    """:mod:`siamese_detr.utils.user_errors`, imported when an error is raised (see the module docstring)."""
    from siamese_detr.utils import user_errors

    return user_errors


def read_split_file(path: str, overwrite_flag: str) -> dict:
    """The record of the existing split file ``path``; ``UserValueError`` naming it and ``overwrite_flag`` for
    a file that is empty, not JSON, not a JSON object or without the keys of a split (an interrupted write,
    another file)."""
    try:
        with open(path) as f:
            record = json.load(f)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        what = "is empty (0 bytes)" if os.path.getsize(path) == 0 else f"is not JSON ({e})"
        raise _user_errors().UserValueError(f"{path} {what}, not a low-data split file (an interrupted write?); "
                                            f"pass {overwrite_flag} to write it again") from None
    if not isinstance(record, dict):
        raise _user_errors().UserValueError(f"{path} holds a JSON {type(record).__name__}, not a low-data split "
                                            f"file (a JSON object with 'image_ids'); pass {overwrite_flag} to "
                                            "write it again")
    missing = [key for key in ("parent", "num_parent_images", "image_ids") if key not in record]
    if missing:
        raise _user_errors().UserValueError(f"{path} lacks {', '.join(map(repr, missing))}: not a low-data split "
                                            f"file; pass {overwrite_flag} to write it again")
    return record


def _write_split_file(path: str, record: dict) -> None:
    """Write ``record`` to ``path`` atomically (temp file + ``os.replace``), its folder made if missing;
    ``UserOSError`` naming the folder when it cannot be made or written in."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, path)
    except OSError as e:
        from siamese_detr.utils.writable import folder_problem

        folder = os.path.dirname(path)
        problem = folder_problem(folder) or f"cannot be written in ({e.strerror or e})"
        raise _user_errors().UserOSError(f"cannot write the split file {path}: {folder} {problem}; set "
                                         "$DETECTRON2_DATASETS to a datasets root you can write to") from None


def write_low_data_split(
    name: str, parent_image_ids: Sequence[int], root: Optional[str] = None, overwrite: bool = False,
    overwrite_flag: str = "overwrite=True",
) -> str:
    """Write ``<root>/low_data_splits/<name>.json`` for a name of :data:`LOW_DATA_SPLITS` from the parent's
    image ids. An existing file is kept (and checked to hold the same ids) unless ``overwrite``; one with other
    ids, drawn from another number of images or not a split file raises ``UserValueError``, whose way out
    names ``overwrite_flag`` (how the caller's user asks for ``overwrite``, e.g. ``--force``). A folder that
    cannot be written raises ``UserOSError``. Atomic (temp file + ``os.replace``). Returns the path."""
    parent, percent, seed, protocol = LOW_DATA_SPLITS[name]
    ids = select_subset(parent_image_ids, percent, seed)
    record = {
        "name": name,
        "parent": parent,
        "percent": percent,
        "seed": seed,
        "num_parent_images": len(set(int(i) for i in parent_image_ids)),
        "image_ids": ids,
        "protocol": protocol,
    }
    path = split_file(name, root)
    if os.path.isfile(path) and not overwrite:
        existing = read_split_file(path, overwrite_flag)
        if existing.get("image_ids") != ids:
            raise _user_errors().UserValueError(
                f"{path} exists with different image ids (files written before 2026-12-05 used RandomState(42), "
                f"not DETReg's default_rng(42) draw); pass {overwrite_flag} to replace it")
        if existing.get("num_parent_images") != record["num_parent_images"]:
            raise _user_errors().UserValueError(
                f"{path} was drawn from {existing.get('num_parent_images')} images of {parent}, which now has "
                f"{record['num_parent_images']}: pass {overwrite_flag} to draw it again from the parent as it is")
        return path
    _write_split_file(path, record)
    return path
