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

from ...utils.user_errors import UserError, UserFileNotFoundError
from ...utils.writable import make_folder

__all__ = [
    "VOC_CLASSES",
    "VOC_COCO_SPLITS",
    "VocAnnotationError",
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


class VocAnnotationError(UserError, ValueError):
    """A VOC annotation file (or list) that cannot be converted; the message is one line naming the file,
    what is wrong and the fix."""


def voc_image_id(stem: str) -> int:
    """``"000001"`` -> 1, ``"2008_000001"`` -> 2008000001."""
    return int(stem.replace("_", ""))


def _listed_image_id(stem: str, list_file: str) -> int:
    """:func:`voc_image_id` of a stem read from ``list_file``; :class:`VocAnnotationError` for a stem that is
    not VOC's ``NNNNNN`` / ``YYYY_NNNNNN``."""
    try:
        return voc_image_id(stem)
    except ValueError:
        raise VocAnnotationError(
            f"{list_file}: {stem!r} is not a VOC image name (digits, optionally 'YYYY_'), so it has no integer "
            "image id; rename the image or use a 'coco:' dataset spec for other data"
        ) from None


_XML_FIX = "re-extract it from the VOC tar, or drop its line from the ImageSets/Main list"


def _read_xml_root(path: str) -> ET.Element:
    """The root element of ``path``; :class:`VocAnnotationError` for a missing, empty or non-XML file."""
    if not os.path.isfile(path):
        raise VocAnnotationError(f"{path}: annotation file not found (listed in ImageSets/Main); {_XML_FIX}")
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        raise VocAnnotationError(f"{path}: not valid XML ({e}); {_XML_FIX}") from None


def _number(parent: ET.Element, tag: str, path: str, where: str) -> float:
    """The number in ``<tag>`` under ``parent``; :class:`VocAnnotationError` naming ``where`` if it is absent
    or not a number."""
    text = parent.findtext(tag)
    if text is None or not text.strip():
        raise VocAnnotationError(f"{path}: {where} has no <{tag}>; {_XML_FIX}")
    try:
        return float(text)
    except ValueError:
        raise VocAnnotationError(f"{path}: {where}<{tag}> is {text.strip()!r}, not a number; {_XML_FIX}") from None


def _image_size(root: ET.Element, path: str) -> Tuple[int, int]:
    """``(height, width)`` from ``<size>``, both positive."""
    size = root.find("size")
    if size is None:
        raise VocAnnotationError(f"{path}: no <size> element (image height/width); {_XML_FIX}")
    height, width = (int(_number(size, k, path, "<size>")) for k in ("height", "width"))
    if height <= 0 or width <= 0:
        raise VocAnnotationError(f"{path}: <size> is {width}x{height} (width x height), not a positive size; "
                                 f"write the image's real size there or {_XML_FIX}")
    return height, width


def _parse_object(obj: ET.Element, index: int, path: str) -> dict:
    """One ``<object>``: name, raw ``xyxy``, difficult / truncated flags (0/1)."""
    where = f"<object> {index + 1}"
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise VocAnnotationError(f"{path}: {where} has no <name>; {_XML_FIX}")
    box = obj.find("bndbox")
    if box is None:
        raise VocAnnotationError(f"{path}: {where} ({name}) has no <bndbox>; {_XML_FIX}")
    # raw numbers, as the official json; VOC's pixel coordinates are inclusive, so xmax == xmin is a box one
    # pixel wide (Detectron2's VOC loader makes it [xmin - 1, xmax]; the official json writes a width of 0, and
    # the loader's annotation check, siamese_detr.data.dataset_checks, drops and counts it): kept. A max below
    # its min means no box under any convention: refused
    xyxy = [_number(box, k, path, f"{where} <bndbox>") for k in ("xmin", "ymin", "xmax", "ymax")]
    for axis, low, high in (("x", xyxy[0], xyxy[2]), ("y", xyxy[1], xyxy[3])):
        if high < low:
            raise VocAnnotationError(f"{path}: {where} ({name}) <bndbox> has {axis}max {high:g} < {axis}min "
                                     f"{low:g}, an inverted box; swap the two if they are swapped, or {_XML_FIX}")
    return {
        "name": name,
        "xyxy": xyxy,
        "difficult": _flag(obj, "difficult", path, where),
        "truncated": _flag(obj, "truncated", path, where),
    }


def _flag(obj: ET.Element, tag: str, path: str, where: str) -> int:
    """A 0/1 field that may be absent or empty (0)."""
    text = (obj.findtext(tag, "0") or "").strip() or "0"
    try:
        return int(float(text))
    except ValueError:
        raise VocAnnotationError(f"{path}: {where}<{tag}> is {text!r}, not 0 or 1; {_XML_FIX}") from None


def parse_voc_xml(path: str) -> Tuple[int, int, List[dict]]:
    """One VOC annotation file -> ``(height, width, objects)``; each object ``{"name", "xyxy" (raw XML
    numbers, float), "difficult" (0/1), "truncated" (0/1)}``, in file order.

    Raises:
        VocAnnotationError: the file is missing, not XML, or lacks ``<size>`` / an object's ``<name>`` /
            ``<bndbox>`` / a coordinate, or a box is inverted (``xmax < xmin`` or ``ymax < ymin``) (one line
            naming the file, the element and the fix).
    """
    root = _read_xml_root(path)
    height, width = _image_size(root, path)
    objects = [_parse_object(obj, i, path) for i, obj in enumerate(root.findall("object"))]
    return height, width, objects


def _missing_list_message(root: str, year: str, list_file: str) -> str:
    """One line for a missing ``ImageSets/Main`` list; names the usual cause, the ``VOCdevkit/`` folder the
    VOC tars extract to, when that is what ``root`` holds."""
    devkit = os.path.join(root, "VOCdevkit", year)
    if os.path.isdir(devkit):
        return (f"{list_file} not found, but {devkit} exists: the VOC tars extract to VOCdevkit/; move or "
                f"symlink {devkit} to {os.path.join(root, year)} (datasets/README.md, 'PASCAL VOC')")
    return f"{list_file} not found: see datasets/README.md, 'PASCAL VOC'"


def voc_to_coco(root: str, parts: Sequence[Tuple[str, str]], description: str = "") -> dict:
    """COCO-format dict of the VOC images listed by ``<root>/<year>/ImageSets/Main/<split>.txt`` for each
    ``(year, split)`` in ``parts``, in list order. Boxes ``[x, y, w, h]`` = ``[xmin, ymin, xmax - xmin,
    ymax - ymin]`` (raw XML, as the official json); ``area = w * h``; ``difficult`` kept as ordinary GT.

    Raises:
        FileNotFoundError: a list file is missing (pointing at ``VOCdevkit/`` when the tars were extracted as is);
        VocAnnotationError: a malformed or missing annotation file, an unknown class, a repeated or non-VOC
            image name (one line naming the file and the fix).
    """
    cat_id = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}
    images, annotations, seen = [], [], {}
    for year, split in parts:
        list_file = os.path.join(root, year, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(list_file):
            raise UserFileNotFoundError(_missing_list_message(root, year, list_file))
        with open(list_file) as f:
            stems = [line.split()[0] for line in f if line.strip()]
        for stem in stems:
            image_id = _listed_image_id(stem, list_file)
            if image_id in seen:
                raise VocAnnotationError(f"{list_file}: image id {image_id} of {year}/{stem} already used by "
                                         f"{seen[image_id]}; remove the duplicate line")
            seen[image_id] = f"{year}/{stem}"
            height, width, objects = parse_voc_xml(os.path.join(root, year, "Annotations", f"{stem}.xml"))
            images.append(
                {"id": image_id, "file_name": f"{year}/JPEGImages/{stem}.jpg", "height": height, "width": width}
            )
            for obj in objects:
                if obj["name"] not in cat_id:
                    raise VocAnnotationError(
                        f"{os.path.join(root, year, 'Annotations', stem + '.xml')}: unknown VOC class "
                        f"{obj['name']!r} (expected one of the 20 of VOC_CLASSES); fix the <name>"
                    )
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
    atomic (temp file + ``os.replace``). Returns ``{name: json path}``. A ``voc_coco/`` folder that cannot be
    made or written in raises :class:`~siamese_detr.utils.user_errors.UserOSError` naming it."""
    written = {}
    for name in names or list(VOC_COCO_SPLITS):
        rel, parts = VOC_COCO_SPLITS[name]
        path = os.path.join(root, rel)
        data = voc_to_coco(root, parts, description=name)
        make_folder(os.path.dirname(path), "the json folder",
                    "make it writable, or use a datasets root you can write to, with links to VOC2007/ and "
                    "VOC2012/ in it")
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
        written[name] = path
    return written


def _loader(name: str, json_file: str, image_root: str):
    def load():
        if not os.path.isfile(json_file):
            raise UserFileNotFoundError(
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
