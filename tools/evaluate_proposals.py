#!/usr/bin/env python
"""Class-agnostic recall and precision of proposal stores on an annotated (COCO-format) Detectron2 dataset.

Prints, per store, AR@{10,100,1000} (recall averaged over IoU 0.50:0.95, step 0.05) and recall at IoU 0.5,
then the class-agnostic COCO AP / AP50 of the first K proposals of each image scored by their rank
(``--ap-ks``, default 10 and 30): how good the boxes are as pseudo ground truth (DETReg's top-K)::

    python tools/evaluate_proposals.py --dataset synthetic_shapes_val \\
        --store output/proposals/synthetic_shapes_val.edgeboxes.proposals \\
        output/proposals/synthetic_shapes_val.selective_search.proposals --json ar.json

Each store is named by its folder, with as many parent folders as it takes to tell stores of the same folder
name apart (``A/val.proposals``, ``B/val.proposals``). A dataset without box annotations (``folder:DIR``)
is refused.
"""

import argparse
import json
import os
import re
import sys
import warnings
from typing import List, Optional, Sequence

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

from siamese_detr.data.proposals import ProposalStore, ProposalStoreError  # noqa: E402
from siamese_detr.data.proposals.generate import register_builtin_datasets  # noqa: E402
from siamese_detr.data.proposals.store import folder_write_problem  # noqa: E402
from siamese_detr.evaluation.proposal_precision import (  # noqa: E402
    evaluate_proposal_precision,
    format_precision_table,
)
from siamese_detr.evaluation.proposal_recall import evaluate_proposal_recall, format_recall_table  # noqa: E402
from siamese_detr.utils.cli_types import ExtendList, at_least_one  # noqa: E402
from siamese_detr.utils.user_errors import UserError, user_message  # noqa: E402


def store_names(paths: Sequence[str]) -> List[str]:
    """A distinct name per store for the table and the json: its folder name, with as many parent folders as
    it takes to tell stores of the same folder name apart (``A/st``, ``B/st``). Paths must be distinct."""
    parts = [os.path.normpath(os.path.abspath(p)).strip(os.sep).split(os.sep) for p in paths]
    depth = [1] * len(paths)
    while True:
        names = [os.path.join(*ps[-d:]) for ps, d in zip(parts, depth)]
        clashes = {n for n in names if names.count(n) > 1}
        if not clashes:
            return names
        for i, name in enumerate(names):
            if name in clashes:
                if depth[i] == len(parts[i]):
                    raise ValueError(f"store {paths[i]!r} is given twice")
                depth[i] += 1


def _other_dataset_hint(store, path: str, dataset: str) -> Optional[str]:
    """When ``store`` was made for another dataset than ``dataset``: how to make one for ``dataset`` without
    overwriting it (it is a valid store of its own dataset)."""
    made_for = store.meta.get("dataset")
    if made_for is None or str(made_for) == dataset:
        return None
    if re.fullmatch(r"[\w.-]+", dataset):
        new = os.path.join(os.path.dirname(os.path.normpath(path)), f"{dataset}.{store.method}.proposals")
    else:
        new = "NEW_STORE.proposals"
    return (f"{path} is a store of {made_for!r}, not of {dataset!r}: keep it, and generate one for {dataset} "
            f"into a new folder: tools/generate_proposals.py --dataset {dataset} --method {store.method} "
            f"--output {new}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="registered dataset with box annotations")
    p.add_argument("--store", action=ExtendList, nargs="+", required=True,
                   help="one or more proposal store directories (repeatable)")
    p.add_argument("--ks", action=ExtendList, type=at_least_one("a proposal budget K"), nargs="+",
                   default=[10, 100, 1000], help="proposal budgets K")
    p.add_argument(
        "--ap-ks", action=ExtendList, type=at_least_one("a proposal budget K"), nargs="*", default=[10, 30],
        help="K of the class-agnostic AP of the top-K proposals (none: skip it)",
    )
    p.add_argument("--json", help="write the results here (its folder is created)")
    p.add_argument("--no-check", action="store_true", help="do not require every image to be in the store")
    return p


def check_arguments(p: argparse.ArgumentParser, args) -> None:
    """Mistakes found before any store is read end the tool through ``p.error``: a store named twice, a
    ``--json`` that is a folder, or whose folder cannot be created (it is created here) or written in."""
    real = [os.path.realpath(s) for s in args.store]
    twice = sorted({s for s, r in zip(args.store, real) if real.count(r) > 1})
    if twice:
        p.error(f"--store: {twice} name the same store more than once")
    if args.json:  # checked before the evaluation, not after it
        if os.path.isdir(args.json):
            p.error(f"--json {args.json} is a folder; give the file to write, e.g. "
                    f"{os.path.join(args.json, 'ar.json')}")
        folder = os.path.dirname(os.path.abspath(args.json))
        problem = folder_write_problem(folder)
        if problem:
            p.error(f"--json {args.json}: {problem}; give a file in a folder you can write to")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            p.error(f"--json {args.json}: cannot create its folder ({e.strerror or e})")


def load_dataset(name: str, with_coco_gt: bool):
    """The dataset's dicts and (``with_coco_gt``) its class-agnostic COCO ground truth (else None).

    Raises:
        UserError: a dataset that is not registered, whose files are missing, or whose annotation file cannot be
            used (a ``UserKeyError``, ``UserFileNotFoundError``, ``UserValueError``: the message names it and the
            fix).
    """
    register_builtin_datasets()
    from detectron2.data import DatasetCatalog

    from siamese_detr.data.dataset_checks import check_datasets_on_disk

    check_datasets_on_disk(name)
    dicts = DatasetCatalog.get(name)
    if not with_coco_gt or not any(d.get("annotations") for d in dicts):
        return dicts, None
    from siamese_detr.evaluation.class_agnostic import load_coco_ground_truth

    return dicts, load_coco_ground_truth(name)


def main(argv=None) -> int:
    """The command line: evaluate every ``--store`` on ``--dataset``, print the recall table (and, with ``--ap-ks``,
    the top-K AP table) and write ``--json``. Returns the exit status: 0; 1 for a store that cannot be opened or
    does not match the dataset (checked unless ``--no-check``), or a ``--json`` that could not be written; 2 for
    a dataset that cannot be read or has no box annotations."""
    p = build_parser()
    args = p.parse_args(argv)
    check_arguments(p, args)
    names = store_names(args.store)

    try:
        dicts, coco_gt = load_dataset(args.dataset, with_coco_gt=bool(args.ap_ks))
    except UserError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        return 2
    if not any(d.get("annotations") for d in dicts):
        print(f"error: dataset {args.dataset!r} has no box annotations ({len(dicts)} images, 0 boxes), so there is "
              f"nothing to measure recall against; give an annotated dataset (a registered detection dataset or "
              f"coco:ANNOTATIONS.json:IMAGE_ROOT; a folder: dataset has no labels)", file=sys.stderr)
        return 2
    results = {}
    for path, name in zip(args.store, names):
        store = None
        try:
            store = ProposalStore.open(path)
            if not args.no_check:
                store.check_dataset(dicts, name=args.dataset)
        except ProposalStoreError as e:
            print(f"error: {e}", file=sys.stderr)
            hint = _other_dataset_hint(store, path, args.dataset) if store is not None else None
            if hint:
                print(f"hint: {hint}", file=sys.stderr)
            return 1
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
        try:
            with open(args.json, "w") as f:
                json.dump({"dataset": args.dataset, "results": results}, f, indent=1)
        except OSError as e:  # checked at the start; a full disk can still refuse it
            print(f"error: cannot write --json {args.json} ({e.strerror or e}); the tables above hold the results",
                  file=sys.stderr)
            return 1
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
