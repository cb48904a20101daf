"""Dataset dicts for label-free pretraining: only the image fields of a registered dataset are read."""
from typing import Iterable, List, Union

from detectron2.data import DatasetCatalog

__all__ = ["IMAGE_KEYS", "unlabelled_dicts"]

IMAGE_KEYS = ("file_name", "image_id", "height", "width")


def unlabelled_dicts(names: Union[str, Iterable[str]]) -> List[dict]:
    """``[{file_name, image_id, height, width}]`` of the registered datasets ``names``.

    Only these keys are looked up in each dataset dict (``key in d`` then ``d[key]``); ``annotations`` and
    every other field are never accessed, so pretraining cannot use a label (tested with a dataset whose
    annotations raise on access). ``image_id`` is prefixed by the dataset name when several are given.
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
