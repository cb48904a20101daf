#!/usr/bin/env python
"""Generate the built-in "synthetic shapes" dataset and optionally write a preview grid with its boxes.

Examples::

    python datasets/prepare_synthetic_shapes.py                    # under $DETECTRON2_DATASETS or ./datasets
    python datasets/prepare_synthetic_shapes.py --root /data --preview shapes_preview.png

An existing split with the same generator version and parameters is reused unless --force is given.
Training and evaluation generate the dataset on first use anyway; this script only makes it explicit.
See datasets/README.md, section "Built-in synthetic dataset".
"""
import argparse
import json
import math
import os
import warnings

import cv2
import numpy as np

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

from siamese_detr.data.datasets import (  # noqa: E402
    DEFAULT_NUM_IMAGES,
    SYNTHETIC_SHAPES_CLASSES,
    ensure_synthetic_shapes,
    generate_synthetic_shapes,
)
from siamese_detr.data.datasets.builtin_shapes import SPLITS, default_root  # noqa: E402
from siamese_detr.utils.cli_types import ExtendList, at_least_one  # noqa: E402
from siamese_detr.utils.user_errors import UserError, user_message  # noqa: E402
from siamese_detr.utils.writable import file_problem  # noqa: E402


def preview_grid(image_root: str, json_file: str, count: int = 12, cell: int = 256,
                 columns: int = 4) -> np.ndarray:
    """Tiles the first ``count`` images (fitted into ``cell`` x ``cell``) with boxes and class names."""
    with open(json_file) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    palette = {cid: cv2.cvtColor(np.uint8([[[int(180 * i / len(names)), 255, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
               for i, cid in enumerate(sorted(names))}
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    images = coco["images"][:count]
    rows = max(1, math.ceil(len(images) / columns))
    grid = np.zeros((rows * cell, columns * cell, 3), np.uint8)
    for i, im in enumerate(images):
        image = cv2.imread(os.path.join(image_root, im["file_name"]))
        scale = cell / max(image.shape[:2])
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        for ann in by_image.get(im["id"], []):
            x, y, w, h = (v * scale for v in ann["bbox"])
            colour = palette[ann["category_id"]].tolist()
            cv2.rectangle(image, (round(x), round(y)), (round(x + w) - 1, round(y + h) - 1), colour, 1)
            cv2.putText(image, names[ann["category_id"]], (round(x) + 1, max(8, round(y) - 2)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA)
        r, c = divmod(i, columns)
        grid[r * cell:r * cell + image.shape[0], c * cell:c * cell + image.shape[1]] = image
    return grid


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None,
                        help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--splits", action=ExtendList, nargs="+", default=["train", "val"], choices=list(SPLITS),
                        help="train_large (1024 images, a superset of train) is what `make demo` uses")
    # default None: $SYNTHETIC_SHAPES_NUM_IMAGES if set, else DEFAULT_NUM_IMAGES (256 / 64 / 1024 / 64)
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--num-val", type=int, default=None)
    parser.add_argument("--num-train-large", type=int, default=None)
    parser.add_argument("--num-dev", type=int, default=None)
    parser.add_argument("--force", action="store_true", help="regenerate even if a complete copy exists")
    parser.add_argument("--preview", metavar="PNG", help="write a grid of images with their boxes drawn")
    parser.add_argument("--preview-count", type=at_least_one("images in the preview grid"), default=12,
                        help="images in the --preview grid (default: 12)")
    args = parser.parse_args(argv)
    for flag, value in (("--num-train", args.num_train), ("--num-val", args.num_val),
                        ("--num-train-large", args.num_train_large), ("--num-dev", args.num_dev)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if args.preview and os.path.splitext(args.preview)[1].lower() not in (".png", ".jpg", ".jpeg"):
        parser.error(f"--preview {args.preview!r}: give a .png or .jpg file")
    problem = file_problem(args.preview) if args.preview else None  # checked before the splits are generated
    if problem:
        parser.error(f"--preview {args.preview} {problem}; give a file in a folder you can write to")
    if args.root is not None and os.path.exists(args.root) and not os.path.isdir(args.root):
        parser.error(f"--root {args.root!r} is a file, not a folder")

    root = default_root() if args.root is None else os.path.abspath(args.root)
    num_images = {"train": args.num_train, "val": args.num_val, "train_large": args.num_train_large,
                  "dev": args.num_dev}
    paths = {}
    for split in args.splits:
        make = generate_synthetic_shapes if args.force else ensure_synthetic_shapes
        try:
            paths[split] = make(split=split, root=root, num_images=num_images[split])
        except UserError as e:  # a root that cannot be written, a bad $SYNTHETIC_SHAPES_NUM_IMAGES
            raise SystemExit(f"error: {user_message(e)}") from None
        print(f"synthetic_shapes {split}: images in {paths[split][0]}, annotations {paths[split][1]}")
    print(f"classes: {', '.join(SYNTHETIC_SHAPES_CLASSES)}")
    if any(num_images[s] not in (None, DEFAULT_NUM_IMAGES[s]) for s in SPLITS):
        print("note: non-default sizes; register them with "
              "register_synthetic_shapes(num_images={'train': N, 'val': M}) or they are regenerated on use")
    if args.preview:
        split = "val" if "val" in paths else args.splits[0]
        grid = preview_grid(*paths[split], count=args.preview_count)
        os.makedirs(os.path.dirname(os.path.abspath(args.preview)), exist_ok=True)
        if not cv2.imwrite(args.preview, grid):
            raise SystemExit(f"error: could not write {args.preview} (--preview)")
        print(f"preview of '{split}' written to {args.preview}")


if __name__ == "__main__":
    main()
