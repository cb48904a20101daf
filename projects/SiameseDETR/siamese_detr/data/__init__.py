"""Data: built-in datasets, DETR finetuning mapper, Siamese two-view mapper, proposals.

Importing this package registers the built-in datasets ``synthetic_shapes_{train,val,train_large,dev}`` and
the default low-label subsets of ``train_large`` (no files are written until they are first used; see
``datasets/builtin_shapes.py``). Registration is idempotent.
"""
from .datasets import (
    SYNTHETIC_SHAPES_CLASSES,
    ensure_synthetic_shapes,
    generate_synthetic_shapes,
    register_synthetic_shapes,
)
from .detr_mapper import DetrDatasetMapper
from .detreg_mapper import DETRegMapper
from .image_folder import register_image_folder
from .siamese_mapper import SiameseViewMapper
from .up_detr_mapper import UPDETRMapper

register_synthetic_shapes()


__all__ = [
    "SYNTHETIC_SHAPES_CLASSES",
    "DETRegMapper",
    "DetrDatasetMapper",
    "SiameseViewMapper",
    "UPDETRMapper",
    "ensure_synthetic_shapes",
    "generate_synthetic_shapes",
    "register_image_folder",
    "register_synthetic_shapes",
]
