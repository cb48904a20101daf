"""Selection and files of the low-data splits, without Detectron2 (see :mod:`.low_data_splits` for the
protocols and the registration). Pure numpy + json, so any process (and the tests' child processes) can
compute and write a split quickly."""

import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "DEFAULT_SEED",
    "LOW_DATA_SPLITS",
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
        ("voc_2007_2012_trainval_coco", (10, 30, 50, 70), _VOC_PROTOCOL),  # paper Fig. 8 (Table 6: 10 %)
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


def write_low_data_split(
    name: str, parent_image_ids: Sequence[int], root: Optional[str] = None, overwrite: bool = False
) -> str:
    """Write ``<root>/low_data_splits/<name>.json`` for a name of :data:`LOW_DATA_SPLITS` from the parent's
    image ids. An existing file is kept (and checked to hold the same ids) unless ``overwrite``.
    Atomic (temp file + ``os.replace``). Returns the path."""
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
        with open(path) as f:
            existing = json.load(f)
        if existing.get("image_ids") != ids:
            raise ValueError(f"{path} exists with different image ids (files written before 2026-12-05 used "
                             "RandomState(42), not DETReg's default_rng(42) draw); pass overwrite=True (--force) "
                             "to replace it")
        if existing.get("num_parent_images") != record["num_parent_images"]:
            raise ValueError(f"{path} was drawn from {existing.get('num_parent_images')} images of {parent}, which "
                             f"now has {record['num_parent_images']}: pass overwrite=True (--force) to draw it again "
                             "from the parent as it is")
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)
    return path
