"""Datasets of the project: the built-in synthetic set (generated on demand) and datasets given by path
(``coco:ANNOTATIONS.json:IMAGE_ROOT``, ``folder:IMAGE_DIR``), PASCAL VOC as COCO json (``voc_2007_test_coco``,
``voc_2007_2012_trainval_coco``) and the low-data splits (``voc_2007_2012_trainval_10pct_seed42``, ...), registered
with Detectron2's catalogs (importing the VOC and low-data modules registers their names; no I/O)."""
from .builtin_shapes import (
    DEFAULT_NUM_IMAGES,
    SYNTHETIC_SHAPES_CLASSES,
    ensure_synthetic_shapes,
    generate_synthetic_shapes,
    register_synthetic_shapes,
)
from .from_path import (
    ensure_dataset,
    is_dataset_spec,
    parse_dataset_spec,
    register_dataset_spec,
    spec_thing_classes,
)
from .low_data_splits import (
    LOW_DATA_SPLITS,
    load_low_data_split,
    register_low_data_splits,
    select_subset,
    write_low_data_split,
)
from .voc_coco import VOC_CLASSES, register_voc_coco, voc_to_coco, write_voc_coco

__all__ = [
    "DEFAULT_NUM_IMAGES",
    "LOW_DATA_SPLITS",
    "SYNTHETIC_SHAPES_CLASSES",
    "VOC_CLASSES",
    "ensure_dataset",
    "ensure_synthetic_shapes",
    "generate_synthetic_shapes",
    "is_dataset_spec",
    "load_low_data_split",
    "parse_dataset_spec",
    "register_dataset_spec",
    "register_low_data_splits",
    "register_synthetic_shapes",
    "register_voc_coco",
    "select_subset",
    "spec_thing_classes",
    "voc_to_coco",
    "write_low_data_split",
    "write_voc_coco",
]
