"""The built-in "synthetic shapes" detection dataset: generated on demand, COCO format, registered.

Layout (``root`` = ``$DETECTRON2_DATASETS``, default ``./datasets``, resolved at call time)::

    <root>/synthetic_shapes/{train,val,train_large,dev}/000000.png ...
    <root>/synthetic_shapes/annotations/{train,val,train_large,dev}.json

Registered names: ``synthetic_shapes_train`` (256 images), ``synthetic_shapes_val`` (64),
``synthetic_shapes_train_large`` (1024; its first 256 images are the train split), ``synthetic_shapes_dev``
(64, held out like val: the demo's settings were chosen on it, val is only reported) and the low-label
subsets ``synthetic_shapes_train_large_{P}pct_seed{S}`` (``P`` percent of train_large drawn without
replacement by ``np.random.default_rng(S)``; see :func:`low_label_indices`), used by the demo: ``P`` in
:data:`LOW_LABEL_PERCENTS` and ``S`` in :data:`LOW_LABEL_SEEDS` are registered at import, any other ``P`` / ``S`` on
first use of the name (:func:`register_low_label_by_name`).

Image ``i`` of a split is drawn from ``np.random.default_rng(seed + i)`` (see ``shapes_render``), so the
dataset is identical on every machine with the same numpy/OpenCV; images are lossless 8-bit 3-channel
PNG with a short side of 160..256 px and a long/short side ratio of 1 to about 4/3. Boxes are
COCO ``[x, y, w, h]`` absolute pixels of the *visible* part of each object, ``iscrowd=0``, category ids
1..8 in :data:`SYNTHETIC_SHAPES_CLASSES` order. The json "info" stores the generator version and
parameters, and each image entry the ``sha256`` of its PNG; a split whose json is missing, incomplete or
from other parameters, or whose images are missing or differ from their digest (checked once per process
and json), is regenerated: with a warning naming the json and the settings that differ, or the first damaged
image (a missing or unreadable json is regenerated silently).

Concurrency: generation runs under an exclusive ``flock`` on ``<root>/synthetic_shapes/.lock-<split>``,
writes into a private temp dir, moves the image dir into place, and writes the json last with an atomic
``os.replace``. A complete json therefore implies complete images, and DDP ranks / dataloader workers
calling :func:`ensure_synthetic_shapes` at once generate the split exactly once. A split that must be
generated under a root that cannot be written (a file in the way, no write permission) raises
:class:`~siamese_detr.utils.user_errors.UserOSError` naming the folder; a complete copy is only read.

Registration (``register_synthetic_shapes``, called by ``import siamese_detr.data``) does no I/O. Files
are created on first use: by the DatasetCatalog loader, or by reading ``json_file`` / ``image_root`` from
the metadata (lazy properties calling :func:`ensure_synthetic_shapes`), so ``COCOEvaluator("synthetic_
shapes_val")`` works in a process that never loaded the dataset. Tools may call ``ensure_synthetic_shapes``
directly (``datasets/prepare_synthetic_shapes.py`` does).
"""
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from typing import Dict, Mapping, Optional, Tuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.datasets import load_coco_json

from .shapes_render import CATEGORY_STYLES, render_scene
from ...utils.user_errors import UserValueError
from ...utils.writable import make_folder

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: temp dir + rename still keep the files consistent
    fcntl = None

logger = logging.getLogger(__name__)

SYNTHETIC_SHAPES_CLASSES: Tuple[str, ...] = tuple(style[0] for style in CATEGORY_STYLES)
GENERATOR_VERSION = 2  # 2: each image entry holds the sha256 of its PNG
# "train_large" uses the seeds of "train" (its first 256 images ARE the train split), so it is disjoint
# from "val" too; the demo pretrains on all of it and finetunes on a seeded low-label subset
# "dev" is a second held-out split for choosing settings, so that "val" is only reported on
DEFAULT_NUM_IMAGES = {"train": 256, "val": 64, "train_large": 1024, "dev": 64}
DEFAULT_SEEDS = {"train": 0, "val": 1_000_000, "train_large": 0, "dev": 2_000_000}  # image i uses seed + i
SPLITS = ("train", "val", "train_large", "dev")
# low-label subsets of train_large registered by default: (percent, seed)
LOW_LABEL_PERCENTS = (2, 10)
LOW_LABEL_SEEDS = tuple(range(5))
SHORT_SIDE_RANGE = (160, 256)
MAX_ASPECT = 4 / 3
DATASET_DIR = "synthetic_shapes"

# dataset name -> (split, root or None, num_images or None); filled by register_synthetic_shapes
_REGISTERED: Dict[str, Tuple[str, Optional[str], Optional[int]]] = {}
# json path -> (mtime_ns, size, info) of files already validated in this process
_VALIDATED: Dict[str, Tuple[int, int, dict]] = {}


def default_root() -> str:
    """``$DETECTRON2_DATASETS`` (default ``datasets``), read now, as an absolute path."""
    return os.path.abspath(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))


def split_paths(root: str, split: str) -> Tuple[str, str]:
    """(image_root, json_file) of ``split`` under ``root``."""
    base = os.path.join(os.path.abspath(root), DATASET_DIR)
    return os.path.join(base, split), os.path.join(base, "annotations", f"{split}.json")


def _info(split: str, num_images: int, seed: int) -> dict:
    return {
        "description": "Siamese DETR built-in synthetic shapes",
        "generator": "siamese_detr.data.datasets.builtin_shapes",
        "version": GENERATOR_VERSION,
        "split": split,
        "num_images": int(num_images),
        "seed": int(seed),
        "classes": list(SYNTHETIC_SHAPES_CLASSES),
    }


SIZES_ENV = "SYNTHETIC_SHAPES_NUM_IMAGES"


def env_num_images() -> Dict[str, int]:
    """Per-split sizes from ``$SYNTHETIC_SHAPES_NUM_IMAGES`` (e.g. ``"train_large=16,val=4"``), which
    replace the defaults in every process that inherits it (tests run the tools at tiny sizes with it)."""
    sizes = {}
    for item in filter(None, (p.strip() for p in os.getenv(SIZES_ENV, "").split(","))):
        split, _, count = item.partition("=")
        try:
            sizes[split.strip()] = int(count)
        except ValueError:
            raise UserValueError(f"${SIZES_ENV}: expected SPLIT=N[,SPLIT=N...], got {item!r}") from None
        if split.strip() not in DEFAULT_NUM_IMAGES:
            raise UserValueError(f"${SIZES_ENV}: unknown split {split.strip()!r} in {item!r}; the splits are "
                                 f"{', '.join(DEFAULT_NUM_IMAGES)}")
        if sizes[split.strip()] < 1:
            raise UserValueError(f"${SIZES_ENV}: {item!r} must give at least 1 image")
    return sizes


def _resolve(split: str, num_images: Optional[int], seed: Optional[int]) -> Tuple[int, int]:
    if num_images is None:
        num_images = env_num_images().get(split)
    if num_images is None:
        if split not in DEFAULT_NUM_IMAGES:
            raise UserValueError(f"num_images is required for split {split!r} "
                                 f"(defaults exist for {'/'.join(DEFAULT_NUM_IMAGES)})")
        num_images = DEFAULT_NUM_IMAGES[split]
    if seed is None:
        seed = DEFAULT_SEEDS.get(split, 0)
    return int(num_images), int(seed)


def _image_size(rng: np.random.Generator) -> Tuple[int, int]:
    short = int(rng.integers(SHORT_SIDE_RANGE[0], SHORT_SIDE_RANGE[1] + 1))
    long = int(round(short * rng.uniform(1.0, MAX_ASPECT)))
    return (short, long) if rng.random() < 0.5 else (long, short)  # (height, width)


def render_split(image_dir: str, split: str, num_images: int, seed: int) -> dict:
    """Renders ``num_images`` PNGs into ``image_dir`` and returns the COCO dict (nothing else written)."""
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng(seed + index)
        height, width = _image_size(rng)
        image, objects = render_scene(rng, height, width)
        file_name = f"{index:06d}.png"
        ok, png = cv2.imencode(".png", image)
        if not ok:
            raise OSError(f"Could not encode {os.path.join(image_dir, file_name)} as PNG")
        with open(os.path.join(image_dir, file_name), "wb") as f:
            f.write(png.tobytes())
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width,
                       "sha256": hashlib.sha256(png.tobytes()).hexdigest()})
        for obj in objects:
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj["category"] + 1,
                "bbox": [float(v) for v in obj["bbox"]],
                "area": float(obj["area"]),
                "iscrowd": 0,
                "visibility": round(float(obj["visibility"]), 4),
            })
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"}
                  for i, name in enumerate(SYNTHETIC_SHAPES_CLASSES)]
    return {"info": _info(split, num_images, seed), "licenses": [], "images": images,
            "annotations": annotations, "categories": categories}


def _first_damaged_image(image_root: str, images: list) -> Optional[str]:
    """Path of the first image of ``images`` (COCO image entries with ``sha256``) that is missing or whose
    bytes differ from its recorded digest; None when all match."""
    for entry in images:
        path = os.path.join(image_root, entry["file_name"])
        try:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return path
        if digest != entry.get("sha256"):
            return path
    return None


def _is_complete(root: str, split: str, num_images: int, seed: int) -> bool:
    image_root, json_file = split_paths(root, split)
    try:
        stat = os.stat(json_file)
    except OSError:
        return False
    expected = _info(split, num_images, seed)
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _VALIDATED.get(json_file)
    if cached is not None and cached[:2] == key:
        return cached[2] == expected
    try:
        with open(json_file) as f:
            coco = json.load(f)
        info = coco.get("info", {})
        if info != expected:
            info = info if isinstance(info, dict) else {}
            differ = ", ".join(f"{k} {info.get(k)!r} (now {expected.get(k)!r})"
                               for k in sorted(set(info) | set(expected)) if info.get(k) != expected.get(k))
            logger.warning(f"Synthetic shapes '{split}': {json_file} was made with other settings ({differ}); "
                           "regenerating the split")
            return False
        if len(coco.get("images", [])) != num_images:
            logger.warning(f"Synthetic shapes '{split}': {json_file} lists {len(coco.get('images', []))} images, "
                           f"its settings {num_images}; regenerating the split")
            return False
        damaged = _first_damaged_image(image_root, coco["images"])
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return False
    if damaged is not None:
        logger.warning(f"Synthetic shapes '{split}': {damaged} is missing or differs from the digest in "
                       f"{json_file}; regenerating the split")
        return False
    _VALIDATED[json_file] = key + (info,)
    return True


@contextlib.contextmanager
def _split_lock(root: str, split: str):
    base = os.path.join(os.path.abspath(root), DATASET_DIR)
    make_folder(base, "the synthetic shapes folder",
                "set $DETECTRON2_DATASETS (or --root of datasets/prepare_synthetic_shapes.py) to a folder you can "
                "write to")
    with open(os.path.join(base, f".lock-{split}"), "a") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _generate_unlocked(root: str, split: str, num_images: int, seed: int) -> Tuple[str, str]:
    image_root, json_file = split_paths(root, split)
    base = os.path.dirname(image_root)
    os.makedirs(os.path.dirname(json_file), exist_ok=True)
    for name in os.listdir(base):  # left by a killed process; we hold the split's lock
        if name.startswith(f".tmp-{split}-"):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=base)
    try:
        new_images = os.path.join(tmp, "images")
        os.makedirs(new_images)
        coco = render_split(new_images, split, num_images, seed)
        with contextlib.suppress(FileNotFoundError):
            os.remove(json_file)  # invalidate first: readers never pair a json with other images
        if os.path.exists(image_root):
            os.rename(image_root, os.path.join(tmp, "old"))
        os.rename(new_images, image_root)
        tmp_json = os.path.join(tmp, "annotations.json")
        with open(tmp_json, "w") as f:
            json.dump(coco, f)
        os.replace(tmp_json, json_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    num_annotations = len(coco["annotations"])
    logger.info(f"Generated synthetic shapes '{split}': {num_images} images, {num_annotations} boxes "
                f"in {image_root}")
    return image_root, json_file


def generate_synthetic_shapes(root: Optional[str], split: str, num_images: Optional[int] = None,
                              seed: Optional[int] = None) -> Tuple[str, str]:
    """(Re)generates ``split`` under ``root`` unconditionally; safe to call from concurrent processes.

    Args:
        root: datasets root (None: ``$DETECTRON2_DATASETS`` or ``./datasets``).
        split: sub-folder / json name, e.g. "train" or "val".
        num_images: number of images (default: the split's entry of ``$SYNTHETIC_SHAPES_NUM_IMAGES``, else
            :data:`DEFAULT_NUM_IMAGES`: 256 train, 64 val, 1024 train_large, 64 dev).
        seed: image ``i`` uses ``np.random.default_rng(seed + i)`` (default :data:`DEFAULT_SEEDS`: 0 for train
            and train_large, 1e6 for val, 2e6 for dev).

    Returns:
        (image_root, json_file), absolute paths.
    """
    root = default_root() if root is None else root
    num_images, seed = _resolve(split, num_images, seed)
    with _split_lock(root, split):
        return _generate_unlocked(root, split, num_images, seed)


def ensure_synthetic_shapes(split: str, root: Optional[str] = None, num_images: Optional[int] = None,
                            seed: Optional[int] = None) -> Tuple[str, str]:
    """Returns (image_root, json_file) of ``split``, generating it first unless a complete copy with the
    same generator version and parameters exists. Arguments as :func:`generate_synthetic_shapes`."""
    root = default_root() if root is None else root
    num_images, seed = _resolve(split, num_images, seed)
    if not _is_complete(root, split, num_images, seed):
        with _split_lock(root, split):
            if not _is_complete(root, split, num_images, seed):  # another process may have just made it
                _generate_unlocked(root, split, num_images, seed)
    return split_paths(root, split)


class _SyntheticShapesMetadata(Metadata):
    """Metadata whose ``json_file`` / ``image_root`` ensure the files exist when read."""

    def _paths(self) -> Tuple[str, str]:
        split, root, num_images = _REGISTERED[self.name]
        return ensure_synthetic_shapes(split, root, num_images)

    @property
    def image_root(self) -> str:
        return self._paths()[0]

    @property
    def json_file(self) -> str:
        return self._paths()[1]


def _load_split(name: str):
    split, root, num_images = _REGISTERED[name]
    image_root, json_file = ensure_synthetic_shapes(split, root, num_images)
    return load_coco_json(json_file, image_root, name)


def low_label_name(percent: int, seed: int, parent: str = "synthetic_shapes_train_large") -> str:
    """Registered name of a low-label subset, e.g. ``synthetic_shapes_train_large_10pct_seed0``."""
    return f"{parent}_{int(percent)}pct_seed{int(seed)}"


def low_label_indices(num_images: int, percent: float, seed: int) -> np.ndarray:
    """Sorted indices of the ``max(1, round(num_images * percent / 100))`` images kept in a low-label
    subset: drawn without replacement by ``np.random.default_rng(seed)``."""
    count = max(1, int(round(num_images * percent / 100.0)))
    return np.sort(np.random.default_rng(seed).choice(num_images, size=count, replace=False))


_LOW_LABEL_NAME = re.compile(r"^(synthetic_shapes_(?:train|train_large))_(\d+)pct_seed(\d+)$")


def register_low_label_by_name(name: str) -> bool:
    """Registers a low-label subset named as :func:`low_label_name` writes it, e.g.
    ``synthetic_shapes_train_large_5pct_seed3``, when it is not registered yet (any percent in 1..100, any
    seed: the defaults of :data:`LOW_LABEL_PERCENTS` x :data:`LOW_LABEL_SEEDS` are registered at import,
    other subsets on first use, e.g. by ``tools/compare_pretraining.py --low-label-percent 5`` in each
    training process). Returns whether ``name`` is (now) such a registered subset."""
    match = _LOW_LABEL_NAME.match(name)
    if match is None:
        return False
    parent, percent, seed = match.group(1), int(match.group(2)), int(match.group(3))
    if not 1 <= percent <= 100:
        raise UserValueError(f"dataset {name!r}: the percent of a low-label subset must be in 1..100, got {percent}")
    if name not in DatasetCatalog.list():
        register_low_label_split(percent, seed, parent)
    return True


def _load_low_label(parent: str, percent: int, seed: int, name: str):
    dicts = DatasetCatalog.get(parent)
    keep = low_label_indices(len(dicts), percent, seed)
    return [dict(dicts[i]) for i in keep.tolist()]


def register_low_label_split(percent: int, seed: int, parent: str = "synthetic_shapes_train_large") -> str:
    """Registers (idempotently) the ``percent``% subset of ``parent`` drawn with ``seed``; returns its name.
    The metadata (classes, evaluator type) is the parent's; the files are the parent's, made on first use."""
    name = low_label_name(percent, seed, parent)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, functools.partial(_load_low_label, parent, int(percent), int(seed), name))
    MetadataCatalog.get(name).set(
        thing_classes=list(SYNTHETIC_SHAPES_CLASSES),
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SYNTHETIC_SHAPES_CLASSES))},
        evaluator_type="coco",
        generated_on_demand=True,
        parent_dataset=parent,
    )
    return name


def register_synthetic_shapes(root: Optional[str] = None,
                              num_images: Optional[Mapping[str, int]] = None) -> None:
    """Registers ``synthetic_shapes_{train,val,train_large,dev}`` and the default low-label subsets of
    train_large (``LOW_LABEL_PERCENTS`` x ``LOW_LABEL_SEEDS``); idempotent (re-registers); no I/O.

    Args:
        root: fixed datasets root; None reads ``$DETECTRON2_DATASETS`` each time the files are needed.
        num_images: optional per-split image counts, e.g. ``{"train": 32, "val": 8}`` (tests, demos);
            when ``train`` is given and ``train_large`` is not, ``train_large`` gets the same count (a tiny
            world stays tiny).
    """
    num_images = dict(num_images or {})
    if "train" in num_images and "train_large" not in num_images:
        num_images["train_large"] = num_images["train"]
    for split in SPLITS:
        name = f"synthetic_shapes_{split}"
        _REGISTERED[name] = (split, root, num_images.get(split))
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, functools.partial(_load_split, name))
        MetadataCatalog[name] = _SyntheticShapesMetadata(name=name).set(
            thing_classes=list(SYNTHETIC_SHAPES_CLASSES),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SYNTHETIC_SHAPES_CLASSES))},
            evaluator_type="coco",
            generated_on_demand=True,  # start-up checks need not look for the files
        )
    for percent in LOW_LABEL_PERCENTS:
        for seed in LOW_LABEL_SEEDS:
            register_low_label_split(percent, seed)
