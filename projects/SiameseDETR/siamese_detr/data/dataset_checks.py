"""Stop at start-up, with a message a user can act on, when a dataset is not on disk."""
import os
from typing import Iterable, List, Sequence, Union

from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts

README = "datasets/README.md"

# Section of datasets/README.md to follow, by dataset-name prefix.
_README_SECTIONS = (
    ("coco_", "COCO"),
    ("voc_", "PASCAL VOC"),
    ("imagenet", "ImageNet (unlabeled pretraining)"),
    ("synthetic_shapes", "Built-in synthetic dataset"),
)


def _section(name: str) -> str:
    for prefix, section in _README_SECTIONS:
        if name.startswith(prefix):
            return section
    return "the section for your dataset"


def expected_paths(name: str) -> List[str]:
    """Files/folders a registered dataset reads, from its metadata (COCO json + image root, VOC dirname)."""
    meta = MetadataCatalog.get(name)
    paths = []
    for key in ("json_file", "image_root", "dirname"):
        value = meta.get(key, None)
        if isinstance(value, str) and value:
            paths.append(value)
    return paths


def check_datasets_on_disk(names: Union[str, Sequence[str]]) -> None:
    """Raise ``FileNotFoundError`` naming the missing path and the README section to follow.

    Datasets whose files are generated on demand (the built-in synthetic set) are skipped here:
    their loader creates them. Unregistered names raise ``KeyError`` listing what is registered.
    """
    names = [names] if isinstance(names, str) else list(names)
    registered = set(DatasetCatalog.list())
    for name in names:
        if name not in registered:
            raise KeyError(
                f"Dataset '{name}' is not registered. Registered datasets include: "
                f"{', '.join(sorted(registered)[:20])} ... (see {README})."
            )
        if MetadataCatalog.get(name).get("generated_on_demand", False):
            continue
        for path in expected_paths(name):
            if not os.path.exists(path):
                root = os.environ.get("DETECTRON2_DATASETS", "datasets")
                raise FileNotFoundError(
                    f"Dataset '{name}' expects '{path}', which does not exist "
                    f"(DETECTRON2_DATASETS={root}). Follow the section '{_section(name)}' of {README} "
                    "to download and lay it out, or point DETECTRON2_DATASETS to where it is."
                )


def get_checked_dataset_dicts(names: Union[str, Iterable[str]], **kwargs):
    """:func:`detectron2.data.get_detection_dataset_dicts` after :func:`check_datasets_on_disk`."""
    names = [names] if isinstance(names, str) else list(names)
    check_datasets_on_disk(names)
    return get_detection_dataset_dicts(names, **kwargs)
