"""Datasets given by path instead of by registered name: a COCO json + image folder, or an image folder.

Wherever a config or a tool takes a dataset name (``dataloader.train.dataset.names``,
``dataloader.test.dataset.names``, an evaluator's ``dataset_name``, ``StoreProposals(dataset=...)``), it
also takes a *dataset spec*:

``coco:ANNOTATIONS.json:IMAGE_ROOT``
    a COCO-format detection json (``images`` with ``id``, ``file_name``, ``height``, ``width``; ``annotations``
    with ``id``, ``image_id``, ``category_id``, ``bbox`` = [x, y, w, h] absolute pixels, ``area``, ``iscrowd``;
    ``categories`` with ``id``, ``name``: checked when the spec is registered, see :func:`check_coco_fields`;
    ``area`` and ``iscrowd``, which only COCO evaluation reads, when a run is to evaluate on it)
    whose ``file_name`` entries are relative to ``IMAGE_ROOT``. ``coco:ANNOTATIONS.json``
    alone uses the json's folder as the image root. Registered with detectron2's
    ``register_coco_instances``: ``image_id`` = the json's integer image id, classes = the json's
    categories sorted by id (contiguous ids 0..K-1, as ``load_coco_json``), COCO evaluation reads the json.
``folder:IMAGE_DIR``
    every image under ``IMAGE_DIR`` (recursive), no labels (pretraining); ``image_id`` = the path relative
    to ``IMAGE_DIR`` (as ``tools/generate_proposals.py --image-dir`` keys its stores).

The spec string itself becomes the registered name, so the same string works everywhere, in every process
(each process registers it again from the string: DDP workers, tools). Relative paths are resolved against
the working directory. On the command line::

    dataloader.train.dataset.names=coco:data/train.json:data/images
    'dataloader.train.dataset.names=[coco:a/train.json:a/images,coco:b/train.json:b/images]'

A path containing ``,`` or ``=`` must be quoted for Detectron2's (hydra's) override parser:
``names="'coco:my,data/train.json'"``.
"""
import json
import logging
import os
from typing import Iterable, List, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..image_folder import IMAGE_EXTENSIONS, load_image_folder, register_image_folder
from .builtin_shapes import register_low_label_by_name
from ...utils.user_errors import UserFileNotFoundError, UserValueError

__all__ = [
    "SPEC_PREFIXES",
    "SPEC_USAGE",
    "check_coco_fields",
    "coco_categories",
    "read_coco_json",
    "ensure_dataset",
    "is_dataset_spec",
    "parse_dataset_spec",
    "register_dataset_spec",
    "register_unlabeled_folder",
    "spec_thing_classes",
]

logger = logging.getLogger(__name__)

SPEC_PREFIXES = ("coco:", "folder:")
SPEC_USAGE = "expected 'coco:ANNOTATIONS.json[:IMAGE_ROOT]' or 'folder:IMAGE_DIR'"


def is_dataset_spec(name) -> bool:
    """True for strings of the form ``coco:...`` or ``folder:...``."""
    return isinstance(name, str) and name.startswith(SPEC_PREFIXES)


def parse_dataset_spec(spec: str) -> Tuple[str, dict]:
    """``spec`` -> (kind, paths): ``("coco", {"json_file", "image_root"})`` or ``("folder", {"image_root"})``,
    paths made absolute (a leading ``~`` is the home folder, as in a shell). Raises ``ValueError`` for a
    malformed spec (naming the accepted forms)."""
    usage = SPEC_USAGE
    if not is_dataset_spec(spec):
        raise UserValueError(f"{spec!r} is not a dataset spec: {usage}")
    kind, rest = spec.split(":", 1)
    if not rest:
        raise UserValueError(f"dataset spec {spec!r} has no path: {usage}")
    if kind == "folder":
        return "folder", {"image_root": _absolute(rest)}
    # coco: the json path ends at ".json"; whatever follows ":" is the image root
    marker = rest.lower().find(".json:")
    if marker >= 0:
        json_file, image_root = rest[: marker + len(".json")], rest[marker + len(".json:"):]
    else:
        json_file, image_root = rest, ""
    if not json_file.lower().endswith(".json"):
        raise UserValueError(f"dataset spec {spec!r}: the annotation file must end in .json; {usage}")
    json_file = _absolute(json_file)
    image_root = _absolute(image_root) if image_root else os.path.dirname(json_file)
    return "coco", {"json_file": json_file, "image_root": image_root}


def _absolute(path: str) -> str:
    """``path`` made absolute, a leading ``~`` expanded (the shell leaves it in ``coco:~/a.json``)."""
    return os.path.abspath(os.path.expanduser(path))


def coco_categories(json_file: str) -> List[dict]:
    """The ``categories`` of a COCO json, sorted by id (the order of detectron2's contiguous class ids)."""
    return read_coco_json(json_file)[0]


def read_coco_json(json_file: str) -> Tuple[List[dict], Optional[str]]:
    """Read a COCO detection json once: its ``categories`` sorted by id, and why COCO evaluation could not
    use it (the message of :func:`check_coco_fields` for the fields only evaluation reads, ``iscrowd`` and
    ``area``; None when it can). Raises ``ValueError`` for a json detectron2 cannot load."""
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise UserValueError(f"cannot read the COCO json {json_file!r}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list) or "images" not in data:
        raise UserValueError(
            f"{json_file!r} is not a COCO detection json (needs 'images' and 'categories', and 'annotations' "
            "to train a detector)"
        )
    empty = [key for key in ("images", "categories") if not data[key]]
    if empty:
        raise UserValueError(
            f"the COCO json {json_file!r} has an empty {' and an empty '.join(repr(k) for k in empty)} list: a "
            "dataset needs at least one image and one category (for unlabelled images use folder:IMAGE_DIR)"
        )
    check_coco_fields(data, json_file, evaluation=False)
    try:
        check_coco_fields(data, json_file)
        evaluation_problem = None
    except ValueError as e:
        evaluation_problem = str(e)
    return sorted(data["categories"], key=lambda c: c["id"]), evaluation_problem


# What every entry of each list of a COCO json must have, with what to put there. Readers (detectron2 v0.6,
# pycocotools): images[].id, annotations[].{id, image_id, category_id}, categories[].id: COCO.createIndex
# (load_coco_json and COCOEvaluator); images[].{file_name, height, width}: load_coco_json; categories[].name:
# load_coco_json (thing_classes); annotations[].bbox: the mappers and COCOeval.computeIoU; annotations[].iscrowd:
# COCOeval.computeIoU / evaluateImg (int(o['iscrowd'])); annotations[].area: COCOeval.evaluateImg (g['area']).
# Optional, not checked: segmentation, keypoints, supercategory, info, licenses.
_COCO_FIELDS = {
    "images": {
        "id": "its integer id, which annotations[].image_id refers to",
        "file_name": "its path relative to IMAGE_ROOT",
        "height": "in pixels",
        "width": "in pixels",
    },
    "annotations": {
        "id": "an integer unique in the file, e.g. 1, 2, 3, ...",
        "image_id": "the id of its image",
        "category_id": "the id of its category",
        "bbox": "[x, y, width, height] in pixels",
        "iscrowd": "0 for an ordinary object",
        "area": "e.g. the box's w*h",
    },
    "categories": {
        "id": "an integer, which annotations[].category_id refers to",
        "name": "the class name",
    },
}
_EVAL_ONLY = ("iscrowd", "area")  # read by COCO evaluation only, i.e. at the end of training
_ENTRY_LABEL = {"images": ("file_name", "id"), "annotations": ("id", "image_id"), "categories": ("name", "id")}
_SINGULAR = {"images": "image", "annotations": "annotation", "categories": "category"}


def _entry(key: str, index: int, entry) -> str:
    """``annotations[3] (id 7)``, ``images[0] (file_name 'a.png')``: an entry of a COCO json, findable."""
    if not isinstance(entry, dict):
        return f"{key}[{index}]"
    for field in _ENTRY_LABEL[key]:
        if field in entry:
            return f"{key}[{index}] ({field} {entry[field]!r})"
    return f"{key}[{index}]"


def _quoted(fields, hints: Optional[dict] = None) -> str:
    """'a', 'b' and 'c'; with ``hints``: 'a' (what a is), ..."""
    fields = [f"{f!r} ({hints[f]})" if hints else repr(f) for f in fields]
    return fields[0] if len(fields) == 1 else ", ".join(fields[:-1]) + " and " + fields[-1]


def _missing_fields_error(json_file: str, key: str, entries: list, first: int, required: dict) -> ValueError:
    """The error for ``entries[first]`` (of the list ``key``) lacking fields of ``required`` (name -> what to
    put there): the entry, what it lacks, how many entries lack something, and what to put in each field
    missing anywhere in the list."""
    entry = entries[first]
    if not isinstance(entry, dict):
        return ValueError(f"the COCO json {json_file!r}: {key}[{first}] is {entry!r}, not an object with "
                          f"{_quoted(required)}")
    lacks = [f for f in required if f not in entry]
    bad = [e for e in entries if not (isinstance(e, dict) and e.keys() >= required.keys())]
    anywhere = [f for f in required if any(not isinstance(e, dict) or f not in e for e in bad)]
    fixes = []
    for reader, fields in (("Loading the dataset", [f for f in anywhere if f not in _EVAL_ONLY]),
                           ("COCO evaluation", [f for f in anywhere if f in _EVAL_ONLY])):
        if fields:
            fixes.append(f"{reader} needs {_quoted(fields, required)} in every {_SINGULAR[key]}")
    return ValueError(
        f"the COCO json {json_file!r}: {_entry(key, first, entry)} lacks {_quoted(lacks)}"
        + (f" ({len(bad)} of {len(entries)} {key} lack a required field)" if len(bad) > 1 else "")
        + ". " + "; ".join(fixes) + f": add {'it' if len(anywhere) == 1 else 'them'} to the json."
    )


def check_coco_fields(data: dict, json_file: str, evaluation: bool = True) -> None:
    """Refuse a COCO detection json (loaded as ``data``) that lacks a field detectron2's loader or (with
    ``evaluation``) COCO evaluation reads (``_COCO_FIELDS``; they would fail with a bare ``KeyError``,
    evaluation only after the whole training) or whose ``bbox`` is not a list of 4 numbers: ``ValueError``
    naming the file, the first offending entry, the missing fields and the fix. ``annotations`` may be absent
    (an image list). Without ``evaluation``, ``iscrowd`` and ``area`` are not required (detectron2's loader
    and the mappers do without them: a json that is only trained on).

    One pass of a key check per entry (COCO train2017's 860k annotations: a fraction of ``json.load``'s time).
    """
    for key in ("images", "annotations", "categories"):
        if key not in data:
            continue
        entries = data[key]
        if not isinstance(entries, list):
            raise UserValueError(f"the COCO json {json_file!r}: {key!r} is a {type(entries).__name__}, not a list")
        fields = {f: hint for f, hint in _COCO_FIELDS[key].items() if evaluation or f not in _EVAL_ONLY}
        required = fields.keys()
        if key == "annotations":  # in the same pass: bbox a list of 4 (its values: one C-level sum below)
            first = next((i for i, e in enumerate(entries) if not (
                type(e) is dict and e.keys() >= required and type(e["bbox"]) is list and len(e["bbox"]) == 4)),
                None)
        else:
            first = next((i for i, e in enumerate(entries) if not (type(e) is dict and e.keys() >= required)),
                         None)
        if first is None and key == "annotations":
            try:
                sum(map(sum, (e["bbox"] for e in entries)))
            except TypeError:
                first = next((i for i, e in enumerate(entries) if not all(
                    isinstance(v, (int, float)) for v in e["bbox"])), None)
        if first is None:
            continue
        entry = entries[first]
        if isinstance(entry, dict) and entry.keys() >= required:  # all fields there: the bbox is wrong
            raise UserValueError(
                f"the COCO json {json_file!r}: {_entry(key, first, entry)} has 'bbox' {entry['bbox']!r}, not a "
                "list of 4 numbers [x, y, width, height] in pixels"
            )
        raise _missing_fields_error(json_file, key, entries, first, fields)


_ARCHIVES = (".tar", ".tar.gz", ".tgz", ".zip")


def empty_folder_message(subject: str, image_root: str) -> str:
    """Why the image folder ``image_root`` lists no image, in one line starting with ``subject`` (``Dataset
    'NAME'``, or a tool's ``--image-dir 'DIR'``): archives left unextracted (the ImageNet train tar holds one
    tar per class) are named, with the fix."""
    archives = sorted(f for f in os.listdir(image_root) if f.lower().endswith(_ARCHIVES))
    hint = "; point it at the folder that holds the images"
    if archives:
        shown = ", ".join(archives[:3]) + (f" and {len(archives) - 3} more" if len(archives) > 3 else "")
        hint = (f"; it holds archives ({shown}): extract each into a folder of its own, e.g. "
                "'for f in *.tar; do mkdir ${f%.tar} && tar -xf $f -C ${f%.tar} && rm $f; done' (ImageNet's "
                "train tar holds one tar per class)")
    return (f"{subject}: no image files ({', '.join(IMAGE_EXTENSIONS)}) under {image_root}{hint} "
            "(datasets/README.md, 'ImageNet (unlabeled pretraining)')")


def _load_nonempty_folder(name: str, image_root: str, extensions: Tuple[str, ...]) -> List[dict]:
    dicts = load_image_folder(image_root, extensions)
    if not dicts:
        raise UserFileNotFoundError(empty_folder_message(f"Dataset {name!r}", image_root))
    return dicts


def register_unlabeled_folder(name: str, image_root: str, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> str:
    """:func:`~siamese_detr.data.image_folder.register_image_folder` (lazy, idempotent, same dataset dicts)
    whose loader refuses a folder without images with a message naming it (and unextracted archives in it),
    instead of Detectron2's bare ``Dataset '...' is empty!``. Returns ``name`` (for ``names=L(...)(...)``)."""
    if name in DatasetCatalog.list():
        return register_image_folder(name, image_root, tuple(extensions))  # same root: no-op; another: error
    root = os.path.abspath(image_root)
    exts = tuple(extensions)
    DatasetCatalog.register(name, lambda: _load_nonempty_folder(name, root, exts))
    MetadataCatalog.get(name).set(image_root=root)
    return name


def register_dataset_spec(spec: str) -> str:
    """Register ``spec`` under the name ``spec`` (idempotent) and return it.

    Raises:
        FileNotFoundError: the json or image folder does not exist (naming it);
        ValueError: a malformed spec or json, or the same spec string already registered for other paths
            (a relative spec used from another working directory).
    """
    kind, paths = parse_dataset_spec(spec)
    if spec in DatasetCatalog.list():
        registered = {k: MetadataCatalog.get(spec).get(k, None) for k in paths}
        if registered == paths:
            return spec
        raise UserValueError(
            f"dataset {spec!r} is already registered for {registered}, not {paths}: use absolute paths"
        )
    for key, path in paths.items():
        exists = os.path.isfile(path) if key == "json_file" else os.path.isdir(path)
        if not exists:
            what = "annotation file" if key == "json_file" else "image folder"
            raise UserFileNotFoundError(f"dataset {spec!r}: the {what} {path!r} does not exist")
    if kind == "folder":
        register_unlabeled_folder(spec, paths["image_root"])
        MetadataCatalog.get(spec).set(dataset_spec=spec)
        return spec

    from detectron2.data.datasets import register_coco_instances

    categories, evaluation_problem = read_coco_json(paths["json_file"])
    # the same values load_coco_json sets when the dataset is first read (it refuses to change them)
    metadata = {
        "thing_classes": [c["name"] for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
        "dataset_spec": spec,
    }
    if evaluation_problem is not None:  # a test set is refused at start-up for it (engine.evaluation_checks)
        metadata["coco_evaluation_problem"] = evaluation_problem
    register_coco_instances(spec, metadata, paths["json_file"], paths["image_root"])
    logger.info("Registered %s: %d classes %s", spec, len(categories), metadata["thing_classes"])
    return spec


def ensure_dataset(name):
    """Register ``name`` if it is a dataset spec (see the module docstring) or an unregistered low-label subset
    of the built-in data (``synthetic_shapes_train_large_{P}pct_seed{S}``); return it unchanged.

    Lists/tuples of names are handled element by element. Registered names and anything else pass through
    untouched (an unknown plain name fails later, where Detectron2 looks it up).
    """
    if isinstance(name, (list, tuple)):
        return type(name)(ensure_dataset(n) for n in name)
    if is_dataset_spec(name):
        register_dataset_spec(name)
    elif isinstance(name, str):
        register_low_label_by_name(name)  # a low-label subset of the built-in data not registered by default
    return name


def spec_thing_classes(names: Iterable[str]) -> Optional[List[str]]:
    """The class names shared by the ``coco:`` specs among ``names`` (registered first), or None if none
    is a ``coco:`` spec. Raises ``ValueError`` when two of them have different categories."""
    names = [names] if isinstance(names, str) else list(names)
    classes, first = None, None
    for name in names:
        if not (is_dataset_spec(name) and name.startswith("coco:")):
            continue
        register_dataset_spec(name)
        these = list(MetadataCatalog.get(name).thing_classes)
        if classes is None:
            classes, first = these, name
        elif these != classes:
            raise UserValueError(
                f"datasets {first!r} and {name!r} have different categories ({classes} vs {these}); "
                "one model needs one set of classes"
            )
    return classes
