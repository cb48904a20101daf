#!/usr/bin/env python
"""Convert PASCAL VOC XML to COCO json for COCO-style evaluation (Siamese DETR paper §4.1).

    python datasets/prepare_voc_coco.py                  # under $DETECTRON2_DATASETS or ./datasets
    python datasets/prepare_voc_coco.py --root /data --names voc_2007_test_coco

Writes ``<root>/voc_coco/voc_2007_test.json`` (VOC2007 test) and ``<root>/voc_coco/voc_2007_2012_trainval.json``
(VOC2007 trainval + VOC2012 trainval), registered as ``voc_2007_test_coco`` / ``voc_2007_2012_trainval_coco``.
All 20 classes; ``difficult`` objects are ordinary ground truth, as in the official conversion. Needs only
the XML annotations and ImageSets lists (image sizes come from the XML). See datasets/README.md, "PASCAL VOC".
"""
import argparse
import json
import os
import warnings
from collections import Counter

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

from siamese_detr.data.datasets.voc_coco import VOC_COCO_SPLITS, write_voc_coco  # noqa: E402
from siamese_detr.utils.cli_types import ExtendList  # noqa: E402
from siamese_detr.utils.user_errors import UserError, user_message  # noqa: E402

ROOT_HINT = ("give the folder holding VOC2007/ and VOC2012/ as --root (default: $DETECTRON2_DATASETS or "
             "./datasets; datasets/README.md, 'PASCAL VOC')")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                   help="folder holding VOC2007/ and VOC2012/ (default: $DETECTRON2_DATASETS or ./datasets)")
    p.add_argument("--names", action=ExtendList, nargs="+", choices=sorted(VOC_COCO_SPLITS), default=None,
                   help="which json files to write (default: all)")
    args = p.parse_args(argv)
    if not os.path.exists(args.root):
        p.error(f"--root {args.root!r} does not exist: {ROOT_HINT}")
    if not os.path.isdir(args.root):
        p.error(f"--root {args.root!r} is a file, not a folder: {ROOT_HINT}")
    try:
        written = write_voc_coco(args.root, args.names)
    except UserError as e:  # a bad or missing VOC file, a json folder that cannot be written: one line
        raise SystemExit(f"error: {user_message(e)}") from None
    for name, path in written.items():
        with open(path) as f:
            data = json.load(f)
        difficult = Counter(a["difficult"] for a in data["annotations"])
        print(f"{name}: {len(data['images'])} images, {len(data['annotations'])} objects "
              f"({difficult[1]} difficult, kept as ground truth) -> {path}")


if __name__ == "__main__":
    main()
