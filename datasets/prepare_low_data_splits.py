#!/usr/bin/env python
"""Write the low-data finetuning splits once: seeded image subsets of a registered dataset, as json.

    python datasets/prepare_low_data_splits.py                          # every split whose parent exists
                                                                        # (exit 1 when none does)
    python datasets/prepare_low_data_splits.py --names coco_2017_train_1pct_seed42 coco_2017_train_10pct_seed42
    python datasets/prepare_low_data_splits.py --list

Splits: VOC 07+12 trainval 10 / 30 / 50 / 70 % (``voc_2007_2012_trainval_{10,30,50,70}pct_seed42``; parent
``voc_2007_2012_trainval_coco``, written first by ``datasets/prepare_voc_coco.py``) and COCO train2017
1 / 2 / 5 / 10 % (``coco_2017_train_{1,2,5,10}pct_seed42``, DETReg's protocol). Each file lists the chosen
image ids (``numpy.random.default_rng(42).choice`` over the sorted ids): the same on every process and
machine. Files go to ``$DETECTRON2_DATASETS/low_data_splits/`` (default ``./datasets``; set the variable
before running, Detectron2 reads it at import). An existing file is kept if it holds the same ids
(``--force`` rewrites it). See datasets/README.md, "Low-data splits".
"""
import argparse
import os
import warnings

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from siamese_detr.data.dataset_checks import check_datasets_on_disk, missing_path_fix  # noqa: E402
from siamese_detr.data.datasets.from_path import read_coco_json  # noqa: E402
from siamese_detr.data.datasets.low_data_splits import (LOW_DATA_SPLITS, split_file,  # noqa: E402
                                                        write_low_data_split)
from siamese_detr.utils.cli_types import ExtendList  # noqa: E402
from siamese_detr.utils.user_errors import UserError, UserValueError, user_message  # noqa: E402


def _parent_image_ids(parent, required):
    """The parent's image ids, or None (after saying why) when it is not on disk and not ``required``;
    a missing ``required`` parent stops with its one-line message (the file and the tool that writes it)."""
    try:
        check_datasets_on_disk(parent)  # the missing file named, with the README section to follow
        return [int(d["image_id"]) for d in _load_parent(parent)]
    except (FileNotFoundError, AssertionError) as e:  # detectron2's COCO loader asserts on a missing json
        if required:
            raise SystemExit(f"error: {user_message(e)}") from None
        print(f"skipped splits of {parent}: {e}")
        return None


def _load_parent(parent):
    """The parent's dataset dicts; its json on disk but not loadable (empty, not JSON, not a COCO json) raises
    ``UserValueError`` naming the file and the way to write it again (detectron2's loader would end with a bare
    ``JSONDecodeError`` or ``KeyError``)."""
    try:
        return DatasetCatalog.get(parent)
    except (AssertionError, ValueError, KeyError, TypeError) as e:
        json_file = MetadataCatalog.get(parent).get("json_file", None)
        if isinstance(e, UserError) or not (isinstance(json_file, str) and os.path.isfile(json_file)):
            raise
        raise UserValueError(f"the parent dataset {parent} cannot be loaded: {_json_problem(json_file, e)}. "
                             f"{missing_path_fix(parent, json_file)}") from None


def _json_problem(json_file, error):
    """What is wrong with ``json_file``, which detectron2's loader failed on with ``error``."""
    if os.path.getsize(json_file) == 0:
        return f"{json_file!r} is empty (0 bytes: an interrupted write or download?)"
    try:
        read_coco_json(json_file)
    except ValueError as e:  # not JSON, not a COCO detection json, a field missing: named by the project's check
        return str(e)
    return f"detectron2 cannot load {json_file!r} ({type(error).__name__}: {' '.join(str(error).split())})"


def _write_splits(args):
    """Write the splits of ``args.names`` (default: every split whose parent is on disk); returns the names of
    those not written."""
    names = args.names or list(LOW_DATA_SPLITS)
    parents = {}
    for name in names:
        parent = LOW_DATA_SPLITS[name][0]
        if parent not in parents:
            parents[parent] = _parent_image_ids(parent, required=bool(args.names))
        if parents[parent] is None:
            continue
        # an existing file with other ids (the parent changed) is kept unless --force
        path = write_low_data_split(name, parents[parent], overwrite=args.force, overwrite_flag="--force")
        print(f"{name}: {path}")
    return [n for n in names if not os.path.isfile(split_file(n))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--names", action=ExtendList, nargs="+", choices=sorted(LOW_DATA_SPLITS), default=None)
    p.add_argument("--force", action="store_true", help="rewrite existing split files")
    p.add_argument("--list", action="store_true", help="print the split names and protocols and exit")
    args = p.parse_args(argv)
    if args.list:
        for name, (parent, pct, seed, protocol) in LOW_DATA_SPLITS.items():
            print(f"{name}: {pct:g} % of {parent}, seed {seed} — {protocol}")
        return
    try:
        missing = _write_splits(args)
    except UserError as e:  # a parent or split file that cannot be used, a folder that cannot be written
        raise SystemExit(f"error: {user_message(e)}") from None
    if missing and args.names:
        raise SystemExit(f"error: not written: {missing}")
    if len(missing) == len(args.names or LOW_DATA_SPLITS):
        raise SystemExit("error: no split written: none of their datasets is on disk "
                         "(datasets/README.md, 'Low-data splits')")


if __name__ == "__main__":
    main()
