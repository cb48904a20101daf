"""PASCAL VOC as COCO-format json, evaluated COCO-style as the paper does (§4.1: AP, AP50, AP75, APs/m/l on
VOC test2007), registered with Detectron2's catalogs.

The official code (``downstream_finetune/conditionaldetr/util/voc_to_coco_style.py`` and the released
``data/datasets/voc_meta/voc_test2007.cocostyle.json`` of Zx55/SiameseDETR) converts the VOC XML to COCO
json and evaluates with ``pycocotools``; every object is ordinary ground truth (``difficult`` objects are kept
and only recorded in an extra ``difficult`` field that COCOeval ignores; ``iscrowd = 0``). Its boxes are the
raw XML numbers, ``bbox = [xmin, ymin, xmax - xmin, ymax - ymin]`` (no 1-pixel shift; Detectron2's VOC
loader instead uses ``[xmin - 1, ymin - 1, xmax, ymax]``); we write the same.

Layout (``root`` = ``$DETECTRON2_DATASETS``, default ``./datasets``)::

    <root>/VOC2007/{Annotations,ImageSets/Main,JPEGImages}   <root>/VOC2012/...
    <root>/voc_coco/voc_2007_test.json                     written by datasets/prepare_voc_coco.py
    <root>/voc_coco/voc_2007_2012_trainval.json            07 trainval + 12 trainval ("07+12")

``file_name`` is relative to ``root`` (``VOC2007/JPEGImages/000001.jpg``). Image ids: ``int`` of the file
stem without underscores (``000001`` -> 1, ``2008_000001`` -> 2008000001; the official and DETReg rule),
unique across the two years. Category ids 1..20 in :data:`VOC_CLASSES` order (the official json uses
0..19; the numbering does not change any metric).

Registered names: ``voc_2007_test_coco`` and ``voc_2007_2012_trainval_coco`` (``evaluator_type="coco"``).
Detectron2's own ``voc_2007_test`` etc. stay registered for ``PascalVOCDetectionEvaluator``.
"""

import json
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = [
    "VOC_CLASSES",
    "VOC_COCO_SPLITS",
    "voc_image_id",
    "parse_voc_xml",
    "voc_to_coco",
    "write_voc_coco",
    "register_voc_coco",
]

VOC_CLASSES: Tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

# registered name -> (json file relative to root, [(VOC year folder, ImageSets/Main split), ...])
VOC_COCO_SPLITS: Dict[str, Tuple[str, List[Tuple[str, str]]]] = {
    "voc_2007_test_coco": ("voc_coco/voc_2007_test.json", [("VOC2007", "test")]),
    "voc_2007_2012_trainval_coco": (
        "voc_coco/voc_2007_2012_trainval.json",
        [("VOC2007", "trainval"), ("VOC2012", "trainval")],
    ),
}


def voc_image_id(stem: str) -> int:
    """``"000001"`` -> 1, ``"2008_000001"`` -> 2008000001."""
    return int(stem.replace("_", ""))


def parse_voc_xml(path: str) -> Tuple[int, int, List[dict]]:
    """One VOC annotation file -> ``(height, width, objects)``; each object ``{"name", "xyxy" (raw XML
    numbers, float), "difficult" (0/1), "truncated" (0/1)}``, in file order."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    height, width = int(float(size.find("height").text)), int(float(size.find("width").text))
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        objects.append(
            {
                "name": obj.find("name").text.strip(),
                "xyxy": [float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")],
                "difficult": int(obj.findtext("difficult", "0").strip() or 0),
                "truncated": int(obj.findtext("truncated", "0").strip() or 0),
            }
        )
    return height, width, objects


def voc_to_coco(root: str, parts: Sequence[Tuple[str, str]], description: str = "") -> dict:
    """COCO-format dict of the VOC images listed by ``<root>/<year>/ImageSets/Main/<split>.txt`` for each
    ``(year, split)`` in ``parts``, in list order. Boxes ``[x, y, w, h]`` = ``[xmin, ymin, xmax - xmin,
    ymax - ymin]`` (raw XML, as the official json); ``area = w * h``; ``difficult`` kept as ordinary GT."""
    cat_id = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}
    images, annotations, seen = [], [], {}
    for year, split in parts:
        list_file = os.path.join(root, year, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(list_file):
            raise FileNotFoundError(f"{list_file} not found: see datasets/README.md, 'PASCAL VOC'")
        with open(list_file) as f:
            stems = [line.split()[0] for line in f if line.strip()]
        for stem in stems:
            image_id = voc_image_id(stem)
            if image_id in seen:
                raise ValueError(f"image id {image_id} of {year}/{stem} already used by {seen[image_id]}")
            seen[image_id] = f"{year}/{stem}"
            height, width, objects = parse_voc_xml(os.path.join(root, year, "Annotations", f"{stem}.xml"))
            images.append(
                {"id": image_id, "file_name": f"{year}/JPEGImages/{stem}.jpg", "height": height, "width": width}
            )
            for obj in objects:
                if obj["name"] not in cat_id:
                    raise ValueError(f"{year}/{stem}.xml: unknown VOC class {obj['name']!r}")
                x0, y0, x1, y1 = obj["xyxy"]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": cat_id[obj["name"]],
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": 0,
                        "difficult": obj["difficult"],
                        "truncated": obj["truncated"],
                    }
                )
    return {
        "info": {"description": description or "PASCAL VOC as COCO json (siamese_detr voc_coco)",
                 "parts": [list(p) for p in parts]},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "voc"} for i, name in enumerate(VOC_CLASSES)],
    }


def write_voc_coco(root: str, names: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Write the json of each registered name (default: all of :data:`VOC_COCO_SPLITS`) under ``root``;
    atomic (temp file + ``os.replace``). Returns ``{name: json path}``."""
    written = {}
    for name in names or list(VOC_COCO_SPLITS):
        rel, parts = VOC_COCO_SPLITS[name]
        path = os.path.join(root, rel)
        data = voc_to_coco(root, parts, description=name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
        written[name] = path
    return written


def _loader(name: str, json_file: str, image_root: str):
    def load():
        if not os.path.isfile(json_file):
            raise FileNotFoundError(
                f"{name}: {json_file} does not exist. Write it from the VOC XML with "
                f"'python datasets/prepare_voc_coco.py --root {image_root}' (datasets/README.md, 'PASCAL VOC')."
            )
        return load_coco_json(json_file, image_root, name)

    return load


def register_voc_coco(root: Optional[str] = None) -> None:
    """Register (or re-register) ``voc_2007_test_coco`` and ``voc_2007_2012_trainval_coco`` for ``root``
    (default ``$DETECTRON2_DATASETS`` or ``./datasets``). No I/O."""
    root = root or os.getenv("DETECTRON2_DATASETS", "datasets")
    for name, (rel, _parts) in VOC_COCO_SPLITS.items():
        json_file = os.path.join(root, rel)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, _loader(name, json_file, root))
        MetadataCatalog.get(name).set(
            json_file=json_file,
            image_root=root,
            evaluator_type="coco",
            thing_classes=list(VOC_CLASSES),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(VOC_CLASSES))},
        )


register_voc_coco()
