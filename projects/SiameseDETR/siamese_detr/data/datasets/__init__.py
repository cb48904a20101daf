"""Built-in datasets of the project (generated on demand, registered with Detectron2's catalogs)."""
from .builtin_shapes import (
    DEFAULT_NUM_IMAGES,
    SYNTHETIC_SHAPES_CLASSES,
    ensure_synthetic_shapes,
    generate_synthetic_shapes,
    register_synthetic_shapes,
)

__all__ = [
    "DEFAULT_NUM_IMAGES",
    "SYNTHETIC_SHAPES_CLASSES",
    "ensure_synthetic_shapes",
    "generate_synthetic_shapes",
    "register_synthetic_shapes",
]
