"""Stop at start-up, with a message a user can act on, when a dataset is not on disk, its annotations are
broken or (for evaluation) one of its images cannot be read.

* :func:`check_datasets_on_disk`: the registered files/folders exist;
* :func:`validate_annotations`: boxes with a zero/negative size, non-finite coordinates or entirely outside
  their image are dropped with a one-line summary (``strict=True`` refuses instead); boxes that only stick
  out are kept (the mappers clip them) and counted; the headers of a seeded sample of images are read: none
  readable is an error (wrong paths), some unreadable a warning, a recorded height/width that differs from
  the file's an error naming the files;
* :func:`check_has_boxes`: a detection train or test set has at least one box;
* :func:`check_images_readable`: every image of a test set decodes with the project's reader, else an error
  listing them (evaluation never skips or replaces an image).
"""
import difflib
import logging
import math
import os
from typing import Dict, Iterable, List, Sequence, Union

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.structures import BoxMode

from .image_io import UnreadableImageError, probe_image_size, read_image_checked
from ..utils.user_errors import UserError, UserFileNotFoundError, UserKeyError, UserValueError

logger = logging.getLogger(__name__)

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


def missing_path_fix(name: str, path: str) -> str:
    """What to do about a missing ``path`` of dataset ``name``: the project's script for the files it writes
    (the COCO-style json of VOC), else the README section that lays the dataset out."""
    if os.path.basename(os.path.dirname(os.path.normpath(path))) == "voc_coco":
        return ("It is written from the VOC XML by 'python datasets/prepare_voc_coco.py' (after laying VOC out as "
                f"the section '{_section(name)}' of {README} says), or point DETECTRON2_DATASETS to where it is.")
    return (f"Follow the section '{_section(name)}' of {README} to download and lay it out, or point "
            "DETECTRON2_DATASETS to where it is.")


def missing_path_error(name: str, path: str) -> FileNotFoundError:
    """The error for a ``path`` that dataset ``name`` expects and that does not exist: the path, the
    ``DETECTRON2_DATASETS`` root and what to do (:func:`missing_path_fix`)."""
    root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    return UserFileNotFoundError(f"Dataset '{name}' expects '{path}', which does not exist "
                                 f"(DETECTRON2_DATASETS={root}). " + missing_path_fix(name, path))


def spec_hint(name: str) -> str:
    """For an unregistered name that looks like a path (``/``, ``:`` or ``.json`` in it): the dataset-spec syntax
    and the spec it probably meant (the prefix forgotten, ``train.json`` -> ``coco:train.json``, or misspelled,
    ``cocos:train.json`` -> ``coco:train.json``); else ""."""
    from .datasets.from_path import SPEC_USAGE

    if not isinstance(name, str) or not ("/" in name or ":" in name or name.lower().endswith(".json")):
        return ""
    path = name
    head, sep, tail = name.partition(":")
    if sep and tail and "/" not in head and "." not in head and len(head) > 1:  # a prefix, not C:\ or a path
        path = tail
    kind = "coco" if ".json" in path.lower() else "folder"
    return (f" It looks like a path: a dataset given by path needs its prefix ({SPEC_USAGE}; coco: for a COCO "
            f"json, folder: for a folder of unlabelled images). Did you mean '{kind}:{path}'?")


# names shown as examples when a dataset name is not registered (those registered): the project's datasets,
# where the first names in sorted order would be detectron2's (ade20k, cityscapes, ...)
_EXAMPLE_NAMES = ("coco_2017_train", "coco_2017_val", "voc_2007_trainval", "voc_2007_test", "synthetic_shapes_train",
                  "synthetic_shapes_val")


def _dataset_choices(registered: Iterable[str]) -> str:
    """What a dataset name can be: one of the registered names (a few examples, how many there are) or a
    dataset given by path (``coco:`` / ``folder:``)."""
    from .datasets.from_path import SPEC_USAGE

    registered = set(registered)
    examples = [n for n in _EXAMPLE_NAMES if n in registered] or sorted(registered)[:6]
    built_in = "; the synthetic_shapes_* ones are built in" if any(n.startswith("synthetic_shapes") for n in examples) \
        else ""
    return (f" Give one of the {len(registered)} registered datasets (e.g. {', '.join(examples)}{built_in}, see "
            f"{README}) or a dataset by path ({SPEC_USAGE}; coco: for a "
            "COCO json, folder: for a folder of unlabelled images).")


def check_datasets_on_disk(names: Union[str, Sequence[str]]) -> None:
    """Raise ``FileNotFoundError`` naming the missing path and the README section to follow.

    Datasets whose files are generated on demand (the built-in synthetic set) are skipped here:
    their loader creates them. Dataset specs given by path (``coco:ANN.json[:IMAGES]``, ``folder:DIR``) are
    registered first. Unregistered names raise ``KeyError`` listing what is registered.
    """
    from .datasets.from_path import ensure_dataset

    names = [names] if isinstance(names, str) else list(names)
    names = [ensure_dataset(n) for n in names]  # coco:/folder: specs register themselves (missing file: error)
    registered = set(DatasetCatalog.list())
    for name in names:
        if name not in registered:
            close = difflib.get_close_matches(name, sorted(registered), n=3, cutoff=0.75)
            hint = spec_hint(name)
            raise UserKeyError(
                f"Dataset '{name}' is not registered."
                + (hint or (f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""))
                + ("" if hint else _dataset_choices(registered))
            )
        if MetadataCatalog.get(name).get("generated_on_demand", False):
            continue
        for path in expected_paths(name):
            if not os.path.exists(path):
                raise missing_path_error(name, path)


class AnnotationError(UserError, ValueError):
    """Annotations that cannot be used as they are (strict mode), or recorded image sizes that are wrong."""


_BOX_TOLERANCE = 1.0  # px a box may stick out of its image before it is counted as "sticking out"
_PROBLEMS = ("non-finite coordinates", "zero or negative size", "entirely outside the image")


def _box_problem(bbox, mode, height, width):
    """None (fine), "sticks out", or one of _PROBLEMS; boxes in modes other than XYXY/XYWH_ABS are not checked."""
    if mode not in (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS) or len(bbox) != 4:
        return None
    box = [float(v) for v in bbox]
    if not all(math.isfinite(v) for v in box):
        return _PROBLEMS[0]
    x1, y1, x2, y2 = BoxMode.convert(box, mode, BoxMode.XYXY_ABS)
    if x2 <= x1 or y2 <= y1:
        return _PROBLEMS[1]
    if height is None:
        return None
    if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
        return _PROBLEMS[2]
    t = _BOX_TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        return "sticks out"
    return None


def _unreadable_images_fix(name: str) -> str:
    """What to check when the images of dataset ``name`` (names joined by ``,``) cannot be found or read."""
    if name.startswith("coco:") or ",coco:" in name:
        return ("The file names of coco:ANN.json are relative to the image folder given after it "
                "(coco:ANN.json:IMAGES; without it, the json's own folder): give the folder that holds them.")
    root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    known = [section for prefix, section in _README_SECTIONS if name.startswith(prefix)]
    where = f"as the section '{known[0]}' of {README} says" if known else "(the dataset's file_name paths)"
    return f"Check that the images are where the dataset says {where}, and DETECTRON2_DATASETS (now {root})."


def _check_sampled_images(dicts: Sequence[dict], num_checks: int, name: str, seed: int = 0) -> None:
    """Probe the headers of a seeded sample of ``num_checks`` images.

    None of them readable: :class:`~.image_io.UnreadableImageError` (the paths are wrong; training would
    otherwise skip every image and fail deep in the data loader). Some unreadable: a warning (training skips
    them). A recorded ``height`` x ``width`` that differs from the file's: :class:`AnnotationError`.
    """
    with_files = [d for d in dicts if "file_name" in d]
    if not with_files or num_checks <= 0:
        return
    picks = np.random.default_rng(seed).choice(len(with_files), min(num_checks, len(with_files)), replace=False)
    wrong, unreadable = [], []
    for i in sorted(picks.tolist()):
        d = with_files[i]
        try:
            hw = probe_image_size(d["file_name"])
        except UnreadableImageError as e:
            unreadable.append(f"{d['file_name']} ({e})")
            continue
        if "height" in d and "width" in d and hw != (int(d["height"]), int(d["width"])):
            wrong.append(f"{d['file_name']}: annotation {d['height']}x{d['width']}, file {hw[0]}x{hw[1]}")
    if len(unreadable) == len(picks):
        raise UnreadableImageError(
            f"{name}: none of {len(picks)} sampled images can be read: {'; '.join(unreadable[:3])}. "
            + _unreadable_images_fix(name)
        )
    if unreadable:
        logger.warning(f"{name}: {len(unreadable)} of {len(picks)} sampled images cannot be read (first: "
                       f"{unreadable[0]}); training skips unreadable images, evaluation refuses them")
    if wrong:
        raise AnnotationError(
            f"{len(wrong)} of {len(picks)} sampled images differ in size from their annotation's height x width "
            f"(after EXIF rotation): {'; '.join(wrong[:5])}. The images were probably re-exported at another "
            "size: use the original images or regenerate the annotation file."
        )


def validate_annotations(dicts: List[dict], strict: bool = False, filter_empty: bool = False,
                         size_checks: int = 32, name: str = "dataset") -> List[dict]:
    """Drop unusable boxes (see the module docstring) and return the dicts (the same list, filtered).

    Args:
        dicts: Detectron2 dataset dicts; ``annotations[i]["bbox"]`` in ``bbox_mode`` (XYXY_ABS / XYWH_ABS
            checked), image size from ``height`` / ``width`` when present.
        strict: raise :class:`AnnotationError` on any dropped or sticking-out box instead of a warning.
        filter_empty: also drop images left without annotations (as ``filter_empty`` of the loader did).
        size_checks: how many images (seeded sample) to probe: readable, and of the recorded size; 0 disables.
    """
    counts: Dict[str, int] = {}
    first: Dict[str, str] = {}
    images_touched, kept_dicts = 0, []
    for d in dicts:
        annos = d.get("annotations")
        if annos is None:
            kept_dicts.append(d)
            continue
        height = int(d["height"]) if "height" in d and "width" in d else None
        width = int(d["width"]) if height is not None else None
        kept = []
        for a in annos:
            problem = _box_problem(a.get("bbox", ()), a.get("bbox_mode", BoxMode.XYWH_ABS), height, width)
            if problem is not None:
                counts[problem] = counts.get(problem, 0) + 1
                first.setdefault(problem, f"{d.get('file_name', d.get('image_id'))} bbox {list(a['bbox'])}")
            if problem is None or problem == "sticks out":
                kept.append(a)
        if len(kept) != len(annos):
            images_touched += 1
            d["annotations"] = kept
        if kept or not filter_empty or not annos:
            kept_dicts.append(d)
    dropped = sum(counts.get(p, 0) for p in _PROBLEMS)
    if counts:
        parts = [f"{counts[p]} {p} (first: {first[p]})" for p in _PROBLEMS + ("sticks out",) if p in counts]
        summary = (f"{name}: dropped {dropped} boxes of {images_touched} images, "
                   f"{len(dicts) - len(kept_dicts)} images left without boxes removed; " + "; ".join(parts))
        if strict:
            raise AnnotationError(summary.replace("dropped", "refusing (strict mode):", 1)
                                  + ". Fix the annotation file, or drop strict=True to skip these boxes.")
        logger.warning(summary + ("; boxes that stick out are kept and clipped" if "sticks out" in counts else ""))
    _check_sampled_images(kept_dicts, size_checks, name)
    dicts[:] = kept_dicts
    return dicts


_readable_cache: Dict[tuple, Union[None, str]] = {}  # (path, size, mtime) -> None (readable) or the reason


def _decode_problem(file_name: str):
    try:
        st = os.stat(file_name)
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    key = (file_name, st.st_size, st.st_mtime_ns)
    if key not in _readable_cache:
        _readable_cache[key] = read_image_checked(file_name, "BGR")[1]
    return _readable_cache[key]


def check_images_readable(dicts: Sequence[dict], name: str = "test set", num_threads: int = 4) -> None:
    """Refuse a test set with an image the mappers cannot read, listing them all.

    Every image is decoded once per process with the project's reader (``image_io.read_image``; 4 threads,
    results cached by path, size and modification time, so periodic evaluations decode only once).
    """
    from concurrent.futures import ThreadPoolExecutor

    files = [d["file_name"] for d in dicts]
    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        problems = list(pool.map(_decode_problem, files))
    bad = [f"{f} ({p})" for f, p in zip(files, problems) if p is not None]
    if bad:
        raise UnreadableImageError(
            f"{len(bad)} of {len(dicts)} images of {name} cannot be read: {'; '.join(bad[:10])}"
            + (f"; ... and {len(bad) - 10} more" if len(bad) > 10 else "")
            + ". Evaluation never skips an image (its objects would count as misses, or another image would "
            "be counted twice): restore these files, or remove them and their annotations from the test set."
        )


def check_has_boxes(dicts: Sequence[dict], name: str) -> None:
    """Refuse a detection dataset in which no image has a box (after :func:`validate_annotations`).

    A detector trained on it learns only "no object" and exits 0; evaluated on it, COCO AP is undefined. The
    usual cause is an image-list json (COCO ``image_info_*.json``, ``unlabeled2017``) or the wrong annotation
    file given to a finetuning or test set; such image lists are for pretraining, which reads no labels.
    """
    if any(d.get("annotations") for d in dicts):
        return
    labelled = sum("annotations" in d for d in dicts)
    raise AnnotationError(
        f"{name}: none of its {len(dicts)} images has a box"
        + ("" if labelled else " (its dicts have no 'annotations' at all)")
        + "; a detector cannot be trained or evaluated on it. Give the annotation file with the boxes (for "
        f"a registered dataset: check its files as {README} says; for coco:ANN.json[:IMAGES], ANN.json's "
        "'annotations' list), or use this image list for pretraining, which reads no labels."
    )


def get_checked_dataset_dicts(names: Union[str, Iterable[str]], strict: bool = False, size_checks: int = 32,
                              require_boxes: bool = False, **kwargs):
    """:func:`detectron2.data.get_detection_dataset_dicts` after :func:`check_datasets_on_disk`, then
    :func:`validate_annotations` (``strict`` / ``size_checks`` are passed on; a config sets them with
    ``+dataloader.train.dataset.strict=True``), then, with ``require_boxes`` (the detection configs' train and
    test sets), :func:`check_has_boxes`."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise UserValueError("no dataset given (names=[], e.g. dataloader.train.dataset.names=[]): give a registered "
                             f"name, coco:ANNOTATIONS.json:IMAGE_ROOT or folder:IMAGE_DIR (see {README})")
    check_datasets_on_disk(names)
    dicts = get_detection_dataset_dicts(names, **kwargs)
    dicts = validate_annotations(dicts, strict=strict, filter_empty=kwargs.get("filter_empty", True),
                                 size_checks=size_checks, name=",".join(names))
    if require_boxes:
        check_has_boxes(dicts, ",".join(names))
    return dicts
