#!/usr/bin/env python
"""Class-agnostic recall and precision of proposal stores on an annotated (COCO-format) Detectron2 dataset.

Prints, per store, AR@{10,100,1000} (recall averaged over IoU 0.50:0.95, step 0.05) and recall at IoU 0.5,
then the class-agnostic COCO AP / AP50 of the first K proposals of each image scored by their rank
(``--ap-ks``, default 10 and 30): how good the boxes are as pseudo ground truth (DETReg's top-K)::

    python tools/evaluate_proposals.py --dataset synthetic_shapes_val \\
        --store output/proposals/val.edgeboxes.proposals output/proposals/val.ss.proposals --json ar.json
"""

import argparse
import json
import os
import sys
import warnings

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

from siamese_detr.data.proposals import ProposalStore, ProposalStoreError  # noqa: E402
from siamese_detr.data.proposals.generate import register_builtin_datasets  # noqa: E402
from siamese_detr.evaluation.proposal_precision import (  # noqa: E402
    evaluate_proposal_precision,
    format_precision_table,
)
from siamese_detr.evaluation.proposal_recall import evaluate_proposal_recall, format_recall_table  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="registered dataset with box annotations")
    p.add_argument("--store", nargs="+", required=True, help="one or more proposal store directories")
    p.add_argument("--ks", type=int, nargs="+", default=[10, 100, 1000], help="proposal budgets K")
    p.add_argument(
        "--ap-ks", type=int, nargs="*", default=[10, 30],
        help="K of the class-agnostic AP of the top-K proposals (none: skip it)",
    )
    p.add_argument("--json", help="write the results here")
    p.add_argument("--no-check", action="store_true", help="do not require every image to be in the store")
    args = p.parse_args(argv)

    register_builtin_datasets()
    from detectron2.data import DatasetCatalog

    from siamese_detr.data.dataset_checks import check_datasets_on_disk

    try:
        check_datasets_on_disk(args.dataset)
    except (KeyError, FileNotFoundError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    dicts = DatasetCatalog.get(args.dataset)
    coco_gt = None
    if args.ap_ks:
        from siamese_detr.evaluation.class_agnostic import load_coco_ground_truth

        coco_gt = load_coco_ground_truth(args.dataset)
    results = {}
    for path in args.store:
        try:
            store = ProposalStore.open(path, dataset=None if args.no_check else dicts)
        except ProposalStoreError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        name = os.path.basename(os.path.normpath(path))
        r = evaluate_proposal_recall(store, dicts, ks=args.ks)
        if coco_gt is not None:
            r.update(evaluate_proposal_precision(store, coco_gt, ks=args.ap_ks))
        r.update(method=store.method, params=store.params, store=os.path.abspath(path))
        results[name] = r
    print(
        f"class-agnostic proposal recall on {args.dataset} ({results[name]['num_images']} images, "
        f"{results[name]['num_gt']} boxes), in %"
    )
    print(format_recall_table(results, args.ks))
    if coco_gt is not None:
        print("class-agnostic COCO AP of the top-K proposals of each image, ranked as the method ranks them, in %")
        print(format_precision_table(results, args.ap_ks))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dataset": args.dataset, "results": results}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
