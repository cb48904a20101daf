"""Low-data finetuning splits: seeded image subsets written ONCE to json, registered by name.

- ``voc_2007_2012_trainval_{10,30,50,70}pct_seed42`` (parent ``voc_2007_2012_trainval_coco``): Siamese DETR's
  VOC data efficiency (appendix B of the paper text: Fig. 8, 10 / 30 / 50 / 70 % of 07+12 trainval; Table 6:
  10 %; = supplementary §B, Fig. 2 and Table 2);
- ``coco_2017_train_{1,2,5,10}pct_seed42`` (parent ``coco_2017_train``): DETReg's semi-supervised COCO protocol
  (DETReg §6 "Datasets": "small subsets of the data (1%, 2%, 5% and 10%)").

Selection (:func:`select_subset`): the parent's image ids sorted ascending, then
``numpy.random.default_rng(seed).choice(ids, size=round(N * percent / 100), replace=False)``, sorted. This is
the draw of DETReg's released code (``datasets/coco.py`` at ``a4b6363``: ``np.random.default_rng(seed)
.choice(self.ids, size=round(float(len(self.ids)) * filter_pct), replace=False)`` over torchvision's sorted
ids, seed 42; before its commit ``33a6433`` it drew from the global ``np.random`` state, seeded per rank). It
depends on nothing but the ids and the seed (no global random state, Python hash seed, directory listing order
or process), so every process and machine gets the same ids with one NumPy version; a file written earlier
is checked against a new draw, so a NumPy that changed ``Generator.choice`` would be reported, not used
silently. The official Siamese DETR code reads VOC split files (``voc_trainval2012.cocostyle_split{N}.json``)
that are not released; how they were drawn is unknown, so the VOC splits use the same rule.

Files: ``<root>/low_data_splits/<name>.json`` (``root`` = ``$DETECTRON2_DATASETS``), written by
``datasets/prepare_low_data_splits.py``: ``{"name", "parent", "percent", "seed", "num_parent_images",
"image_ids", "protocol"}`` (selection and writing: :mod:`.low_data_select`, free of Detectron2). Loading a
split filters the parent's dataset dicts by ``image_id`` and checks that the parent still has
``num_parent_images`` images.
"""

import os
from typing import List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

from . import voc_coco  # noqa: F401  (registers the VOC parents, whose metadata the splits copy)
from .low_data_select import (
    DEFAULT_SEED,
    LOW_DATA_SPLITS,
    read_split_file,
    select_subset,
    split_file,
    split_name,
    write_low_data_split,
)
from ...utils.user_errors import UserFileNotFoundError, UserValueError

__all__ = [
    "DEFAULT_SEED",
    "LOW_DATA_SPLITS",
    "split_name",
    "select_subset",
    "split_file",
    "write_low_data_split",
    "load_low_data_split",
    "register_low_data_splits",
]


def load_low_data_split(name: str, root: Optional[str] = None) -> List[dict]:
    """Dataset dicts of split ``name``: the parent's dicts whose ``image_id`` is in the split file."""
    path = split_file(name, root)
    if not os.path.isfile(path):
        raise UserFileNotFoundError(
            f"{name}: {path} does not exist. Write it once with 'python datasets/prepare_low_data_splits.py' "
            "(datasets/README.md, 'Low-data splits')."
        )
    record = read_split_file(path, "--force of datasets/prepare_low_data_splits.py")
    parent_dicts = DatasetCatalog.get(record["parent"])
    if len(parent_dicts) != record["num_parent_images"]:
        raise UserValueError(
            f"{name}: the split was drawn from {record['num_parent_images']} images of {record['parent']}, "
            f"which now has {len(parent_dicts)}; re-write it (--force) or restore the parent"
        )
    keep = set(record["image_ids"])
    dicts = [d for d in parent_dicts if int(d["image_id"]) in keep]
    if len(dicts) != len(keep):
        raise UserValueError(f"{name}: {len(keep) - len(dicts)} image ids of {path} are not in {record['parent']}")
    return dicts


def register_low_data_splits(root: Optional[str] = None) -> None:
    """Register every name of :data:`LOW_DATA_SPLITS` (no I/O; the file is read when the split is loaded).
    Metadata (classes, evaluator type) follow the parent's."""
    for name, (parent, _pct, _seed, _protocol) in LOW_DATA_SPLITS.items():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda name=name: load_low_data_split(name, root))
        parent_meta = MetadataCatalog.get(parent)
        fields = {}
        for key in ("thing_classes", "thing_dataset_id_to_contiguous_id", "evaluator_type", "image_root"):
            if hasattr(parent_meta, key):
                fields[key] = getattr(parent_meta, key)
        MetadataCatalog.get(name).set(parent=parent, **fields)


register_low_data_splits()
