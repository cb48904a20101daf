#!/usr/bin/env python
"""Write the low-data finetuning splits once: seeded image subsets of a registered dataset, as json.

    python datasets/prepare_low_data_splits.py                          # every split whose parent exists
    python datasets/prepare_low_data_splits.py --names coco_2017_train_1pct_seed42 coco_2017_train_10pct_seed42
    python datasets/prepare_low_data_splits.py --list

Splits: VOC 07+12 trainval 10 % / 30 % (``voc_2007_2012_trainval_{10,30}pct_seed42``; parent
``voc_2007_2012_trainval_coco``, written first by ``datasets/prepare_voc_coco.py``) and COCO train2017
1 / 2 / 5 / 10 % (``coco_2017_train_{1,2,5,10}pct_seed42``, DETReg's protocol). Each file lists the chosen
image ids (``numpy.random.RandomState(42).choice`` over the sorted ids): the same on every process and
machine. Files go to ``$DETECTRON2_DATASETS/low_data_splits/`` (default ``./datasets``; set the variable
before running, Detectron2 reads it at import). An existing file is kept if it holds the same ids
(``--force`` rewrites it). See datasets/README.md, "Low-data splits".
"""
import argparse
import os

from detectron2.data import DatasetCatalog

from siamese_detr.data.datasets.low_data_splits import LOW_DATA_SPLITS, split_file, write_low_data_split


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--names", nargs="+", choices=sorted(LOW_DATA_SPLITS), default=None)
    p.add_argument("--force", action="store_true", help="rewrite existing split files")
    p.add_argument("--list", action="store_true", help="print the split names and protocols and exit")
    args = p.parse_args(argv)
    if args.list:
        for name, (parent, pct, seed, protocol) in LOW_DATA_SPLITS.items():
            print(f"{name}: {pct:g} % of {parent}, seed {seed} — {protocol}")
        return
    names = args.names or list(LOW_DATA_SPLITS)
    parents = {}
    for name in names:
        parent = LOW_DATA_SPLITS[name][0]
        if parent not in parents:
            try:
                parents[parent] = [int(d["image_id"]) for d in DatasetCatalog.get(parent)]
            except (FileNotFoundError, AssertionError) as e:  # detectron2's COCO loader asserts on a missing json
                if args.names:
                    raise
                print(f"skipped splits of {parent}: {e}")
                parents[parent] = None
        if parents[parent] is None:
            continue
        path = write_low_data_split(name, parents[parent], overwrite=args.force)
        print(f"{name}: {path}")
    missing = [n for n in names if not os.path.isfile(split_file(n))]
    if missing and args.names:
        raise SystemExit(f"not written: {missing}")


if __name__ == "__main__":
    main()
