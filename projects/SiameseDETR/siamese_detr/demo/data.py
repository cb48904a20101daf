"""The demo's data: dataset dicts for label-free pretraining (only the image fields of a registered dataset
are read), and the digests of the built-in splits that the demo's cached steps take as an input."""
from typing import Dict, Iterable, List, Union

from detectron2.data import DatasetCatalog

__all__ = ["IMAGE_KEYS", "synthetic_shapes_digests", "unlabelled_dicts"]

IMAGE_KEYS = ("file_name", "image_id", "height", "width")


def unlabelled_dicts(names: Union[str, Iterable[str]]) -> List[dict]:
    """``[{file_name, image_id, height, width}]`` of the registered datasets ``names``.

    Only these keys are looked up in each dataset dict (``key in d`` then ``d[key]``); ``annotations`` and
    every other field are never accessed, so pretraining cannot use a label (tested with a dataset whose
    annotations raise on access). ``image_id`` is prefixed by the dataset name when several are given
    (``"synthetic_shapes_train/3"``). Raises ``ValueError`` when the datasets have no images together.
    """
    names = [names] if isinstance(names, str) else list(names)
    out = []
    for name in names:
        for d in DatasetCatalog.get(name):
            item = {k: d[k] for k in IMAGE_KEYS if k in d}
            if len(names) > 1 and "image_id" in item:
                item["image_id"] = f"{name}/{item['image_id']}"
            out.append(item)
    if not out:
        raise ValueError(f"datasets {names} have no images")
    return out


def synthetic_shapes_digests(splits: Iterable[str]) -> Dict[str, str]:
    """``{split: sha256 of its annotation json}`` of built-in ``synthetic_shapes`` splits (generated first if
    missing, under ``$DETECTRON2_DATASETS``). The json records the generator's version and parameters, so
    other images (e.g. other ``SYNTHETIC_SHAPES_NUM_IMAGES``) give other digests and redo the steps."""
    from siamese_detr.data.datasets.builtin_shapes import ensure_synthetic_shapes

    from .steps import file_digest

    return {split: file_digest(ensure_synthetic_shapes(split)[1]) for split in splits}
