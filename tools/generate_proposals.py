#!/usr/bin/env python
"""Generate object proposals for a dataset into a proposal store (resumable, shardable).

Examples::

    # built-in dataset, EdgeBoxes (gradient edges unless --sed-model is given), 2 processes
    python tools/generate_proposals.py --dataset synthetic_shapes_val --method edgeboxes \\
        --output output/proposals/synthetic_shapes_val.edgeboxes.proposals --num-workers 2

    # ImageNet on 8 machines: run shard I on machine I (same --output on a shared file system);
    # the shard that finishes last merges, or run once more with --merge
    # (the ImageNet configs read it from $DETECTRON2_DATASETS/proposals/, default ./datasets/proposals/)
    D=${DETECTRON2_DATASETS:-datasets}
    python tools/generate_proposals.py --image-dir $D/imagenet/train --method edgeboxes \\
        --output $D/proposals/imagenet_train.edgeboxes.proposals --num-shards 8 --shard-id I --num-workers 16

Re-running the same command resumes: finished chunks (``--chunk-size`` images each) are kept. Unreadable
images are skipped, listed in ``<output>/generate.log`` and in the store's meta.json, and summarised; a run
in which no image can be read fails without writing a store. A worker that dies (e.g. killed for memory)
costs its chunk one retry, then the run fails (exit 1) with a message. A complete store asked for again with
other settings (method, parameters, images: another folder or dataset, or a folder whose image list changed)
is refused: pass ``--overwrite`` to regenerate it. ``--overwrite`` clears what the command writes: the whole
output without ``--num-shards``; with ``--num-shards K --shard-id I`` only shard I (and the merged store, if
any; never the other shards); with ``--merge`` only the merged store. Every shard of one output must list the
same images with the same ``--num-shards``, ``--method`` and method flags (checked when a shard starts and at
the merge). An explicit ``--merge`` that cannot merge fails (exit 1) naming the missing shards (exit 2 when
``--output`` is missing or holds no shard folders); without ``--num-shards`` it takes K from the shard folders
on disk. An existing ``--export-detectron2`` file is replaced
only with ``--overwrite`` (a finished command run again leaves it as it is when it holds the same export). A
method flag that ``--method`` does not read (``--alpha`` with ``random``, ``--seed`` with ``edgeboxes``) is noted
on stderr and ignored. ``--import-detectron2`` uses only ``--output``, ``--dataset``, ``--overwrite``,
``--trust-pickle`` and ``--no-progress``; any other option given with it is refused.
"""

import argparse
import json
import logging
import os
import pickle
import shutil
import sys
import warnings

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

from siamese_detr.data.proposals import (  # noqa: E402
    METHODS,
    ProposalStore,
    export_detectron2,
)
from siamese_detr.data.proposals.detectron2_format import read_detectron2, write_imported  # noqa: E402
from siamese_detr.data.proposals.generate import (  # noqa: E402
    WorkerDiedError,
    dataset_records,
    generate_shard,
    list_image_dir,
    merge_if_complete,
    missing_shards,
    register_builtin_datasets,
    shard_dir,
)
from siamese_detr.data.proposals.generate_arguments import (  # noqa: E402
    coco_images_missing,
    ignored_by_import,
    ignored_by_method,
    method_params,
    usage_problem,
)
from siamese_detr.data.proposals.store import ARRAY_FILES, ProposalStoreError  # noqa: E402
from siamese_detr.data.proposals.store_settings import import_settings_differ, settings_differ  # noqa: E402
from siamese_detr.data.datasets.from_path import empty_folder_message  # noqa: E402
from siamese_detr.utils.cli_types import at_least_one  # noqa: E402
from siamese_detr.utils.user_errors import UserValueError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="a registered Detectron2 dataset name (e.g. synthetic_shapes_train) or a "
                     "dataset spec coco:ANN.json[:IMAGES] / folder:DIR")
    src.add_argument("--image-dir", help="a folder of images (recursive); image_id = path relative to it")
    p.add_argument("--method", choices=METHODS, default="edgeboxes", help="proposal method (default: edgeboxes)")
    p.add_argument("--output", required=True, help="store directory to write (created if missing; not a file), "
                   "e.g. NAME.edgeboxes.proposals")
    p.add_argument(
        "--max-boxes",
        type=int,
        default=None,
        help="boxes kept per image, 0 = all (EdgeBoxes: up to OpenCV's cap of 10000; not for random; default: 512 "
        "for edgeboxes and random, all for selective_search)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random boxes (combined with the image id) and of Selective Search's random ranking "
        "(combined with the image's pixels; default: 0)",
    )
    p.add_argument("--sed-model", default=None, help="EdgeBoxes: Structured Edge Detection model.yml.gz")
    p.add_argument("--alpha", type=float, default=0.65,
                   help="EdgeBoxes sliding-window step, in (0, 1) (default: 0.65)")
    p.add_argument("--beta", type=float, default=0.75,
                   help="EdgeBoxes NMS IoU threshold, in (0, 1]; 1 = no NMS (default: 0.75)")
    p.add_argument(
        "--ss-resize",
        type=at_least_one("the short side, in pixels, of the copy Selective Search runs on; leave --ss-resize out "
                          "for full resolution"),
        default=None,
        help="Selective Search on a copy with this short side (DETReg-like 128); boxes scaled back",
    )
    p.add_argument("--ss-mode", choices=("fast", "quality"), default="fast",
                   help="Selective Search strategy (default: fast)")
    p.add_argument("--num-workers", type=int, default=1, help="processes (each uses 1 thread; default: 1)")
    p.add_argument("--num-shards", type=at_least_one("machines that split the images"), default=None,
                   help="K machines split the images (default 1; with --merge: K of the shard folders on disk)")
    p.add_argument("--shard-id", type=int, default=0, help="which of the --num-shards this run computes "
                   "(default: 0)")
    p.add_argument("--chunk-size", type=int, default=1000, help="images per resumable chunk (default: 1000)")
    p.add_argument("--merge", action="store_true", help="only merge finished shards into --output")
    p.add_argument("--keep-chunks", action="store_true", help="keep chunk files after a shard is assembled")
    p.add_argument("--keep-shards", action="store_true", help="keep shard stores after merging")
    p.add_argument(
        "--overwrite", action="store_true", help="delete an existing store/partial run at --output (with "
        "--shard-id I: only shard I and the merged store; with --merge: only the merged store), and replace an "
        "existing --export-detectron2 file"
    )
    p.add_argument("--export-detectron2", metavar="FILE.pkl", help="also write Detectron2's proposal file (its "
                   "folder must exist; an existing file is kept unless --overwrite; a finished command run again "
                   "leaves its own export as it is)")
    p.add_argument("--import-detectron2", metavar="FILE.pkl",
                   help="instead of computing proposals, convert a Detectron2 proposal file into a store at "
                   "--output (image sizes from --dataset if given); needs --trust-pickle")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow --import-detectron2 to unpickle its file (unpickling runs code from the file: "
                   "only for files you trust)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output (default: a bar on a terminal; when stderr is a file or pipe, a log "
                   "line with rate and ETA every minute)")
    p.add_argument("--debug-sleep", type=float, default=0.0, help=argparse.SUPPRESS)  # tests: slow a run down
    p.add_argument("--debug-die-on", default=None, help=argparse.SUPPRESS)  # tests: SIGKILL the worker of this id
    return p


STORE_FILES = ("meta.json",) + ARRAY_FILES + ("image_ids.json",)  # meta.json first: no longer "complete"


def _remove_merged_store(output: str) -> None:
    for name in STORE_FILES:
        if os.path.exists(os.path.join(output, name)):
            os.remove(os.path.join(output, name))


def _clear(args):
    """Delete what this command writes again (``--overwrite``); a reason (str) instead when that would lose
    the work of other shards.

    One machine (no ``--num-shards``, or ``--import-detectron2``): the whole output. ``--num-shards K
    --shard-id I``: shard I and the merged store. ``--merge``: the merged store. A merged store is cleared only
    while the shards it came from (but the one being redone) are still on disk.
    """
    output = args.output
    if args.import_detectron2 or (args.num_shards == 1 and not args.merge):
        shutil.rmtree(os.path.join(output, "shards"), ignore_errors=True)
        _remove_merged_store(output)
        for name in ("generate.log", ".merge.lock"):
            if os.path.exists(os.path.join(output, name)):
                os.remove(os.path.join(output, name))
        return None
    k = args.num_shards
    if os.path.isfile(os.path.join(output, "meta.json")):
        lost = [i for i in missing_shards(output, k) if args.merge or i != args.shard_id]
        if lost:
            what = "merge it again" if args.merge else f"redo shard {args.shard_id}"
            return (
                f"{output} is a complete (merged) store, and shard {', '.join(map(str, lost))} of {k} "
                f"{'are' if len(lost) > 1 else 'is'} not on disk (removed after the merge, or never run with "
                f"--num-shards {k}): the store holds the only copy of {'their' if len(lost) > 1 else 'its'} "
                f"proposals, and clearing it to {what} would lose them. To regenerate the whole store, delete "
                f"{output} (or run once without --num-shards and with --overwrite), then run every shard again; "
                "or use another --output"
            )
        _remove_merged_store(output)
    if not args.merge:
        shutil.rmtree(shard_dir(output, args.shard_id, k), ignore_errors=True)
    return None


def main(argv=None) -> int:
    """The command line: check the arguments (an ``error:`` line and exit status 2; a note for a method flag the
    method does not read), create ``--output`` and run :func:`_main` (a store or worker failure: an ``error:`` line
    and status 1). A folder this command created is removed again when it fails and leaves it empty. Returns the
    exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    problem = ignored_by_import(args, argv, build_parser()) or usage_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    note = ignored_by_method(args, argv, build_parser())
    if note:
        print(f"note: {note}", file=sys.stderr)
    created = not os.path.exists(args.output)
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as e:  # a file on the way (a/b with a a file), no permission, ...
        print(f"error: cannot create the store folder --output {args.output!r} ({e.strerror or e}); give a folder "
              "you can write to", file=sys.stderr)
        return 2
    try:
        rc = _main(args)
    except (ProposalStoreError, WorkerDiedError) as err:
        print(f"error: {err}", file=sys.stderr)
        rc = 1
    if rc != 0 and created and not os.listdir(args.output):
        os.rmdir(args.output)  # leave no empty folder behind a failed start
    return rc


def _main(args) -> int:
    """Import ``--import-detectron2`` (:func:`_import`), or list the images of ``--dataset`` / ``--image-dir``
    (unless ``--merge``), clear what ``--overwrite`` asks (:func:`_clear`), refuse a complete store made with other
    settings, then :func:`_run`. Returns the exit status (2 for a problem found here)."""
    final_meta = os.path.join(args.output, "meta.json")
    if args.import_detectron2:
        return _import(args, final_meta)
    records = None
    if not args.merge and (args.dataset or args.image_dir):
        if args.dataset:
            register_builtin_datasets()
            records = dataset_records(args.dataset)
        else:
            records = list_image_dir(args.image_dir)
        problem = None if os.path.isfile(final_meta) and not args.overwrite else (  # complete: nothing to compute
            coco_images_missing(args.dataset, records))
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        if not records and args.image_dir:  # a folder (checked above) with no image file, at any depth
            print("error: " + empty_folder_message(f"--image-dir {args.image_dir!r}", args.image_dir),
                  file=sys.stderr)
            return 2
        if not records:
            print(f"error: no images found in {args.dataset}; datasets/README.md says where each dataset's images "
                  f"go (DETECTRON2_DATASETS={os.environ.get('DETECTRON2_DATASETS', 'datasets')})", file=sys.stderr)
            return 2
    if args.overwrite:
        problem = _clear(args)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    if os.path.isfile(final_meta):
        differ = settings_differ(args, final_meta, records)
        if differ:
            print(f"error: {args.output} is a complete store made with other settings ({differ}); pass "
                  "--overwrite to regenerate it, or choose another --output", file=sys.stderr)
            return 2
    return _run(args, final_meta, records)


def _import(args, final_meta: str) -> int:
    """--import-detectron2: read and validate the file first; then refuse a complete store made otherwise
    (without --overwrite), or clear the output, and write."""
    if not args.trust_pickle:  # worded for the command line (the library's error names its argument)
        print(f"error: {args.import_detectron2} is a pickle file, and loading a pickle can execute arbitrary code: "
              "add --trust-pickle only if you trust where the file comes from", file=sys.stderr)
        return 2
    if args.dataset:
        register_builtin_datasets()
    try:
        data = read_detectron2(args.import_detectron2, allow_pickle=args.trust_pickle, dataset=args.dataset)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if os.path.isfile(final_meta) and not args.overwrite:
        diff = import_settings_differ(args, final_meta)
        if diff:
            print(f"error: {args.output} is a complete store made with other settings ({diff}); pass --overwrite "
                  "to replace it with the import, or choose another --output", file=sys.stderr)
            return 2
        print(f"{args.output} is already complete (use --overwrite to import again)")
        print(f"store: {ProposalStore.open(args.output)!r}")
        return 0
    if args.overwrite:
        _clear(args)
    store = write_imported(data, args.output, args.import_detectron2, dataset=args.dataset)
    print(f"store: {store!r}")
    return 0


def _compute_shard(args, records) -> None:
    """Generate (or resume) this process's shard and print what it did: images, chunks resumed and computed,
    the unreadable images it skipped."""
    summary = generate_shard(
        records,
        args.output,
        args.method,
        method_params(args),
        dataset=args.dataset or os.path.abspath(args.image_dir),
        num_shards=args.num_shards,
        shard_id=args.shard_id,
        num_workers=args.num_workers,
        chunk_size=args.chunk_size,
        keep_chunks=args.keep_chunks,
        progress=not args.no_progress,
        debug_sleep=args.debug_sleep,
        debug_die_on=args.debug_die_on,
    )
    skipped = summary["skipped"]
    print(
        f"shard {args.shard_id}/{args.num_shards}: {summary['images']} images, "
        f"{summary['resumed_chunks']} chunks resumed, {summary['computed_chunks']} computed, "
        f"{len(skipped)} unreadable images skipped"
    )
    for s in skipped:
        print(f"  skipped {s['image_id']}: {s['reason']}")
    if skipped:
        print(f"  (listed in {os.path.join(args.output, 'generate.log')})")


def _run(args, final_meta: str, records) -> int:
    """Compute this shard unless the store is complete or ``--merge`` is given, merge the shards once all are
    complete, print the store and write ``--export-detectron2`` (:func:`_export`). Returns the exit status: 1 when
    ``--merge`` finds shards not complete or another process merging, that of :func:`_export` when it runs, else 0
    (also while other shards are not complete: the last one to finish merges)."""
    if args.merge and not os.path.isfile(final_meta):
        missing = missing_shards(args.output, args.num_shards)
        if missing:
            k = args.num_shards
            states = [f"shard {i} of {k} ("
                      f"{'started, not finished' if os.path.isdir(shard_dir(args.output, i, k)) else 'not started'})"
                      for i in missing]
            print(f"error: cannot merge {args.output}: {len(missing)} of {k} shards are not complete: "
                  f"{', '.join(states)}. Run {'it' if len(missing) == 1 else 'them'} (--num-shards {k} "
                  f"{' / '.join(f'--shard-id {i}' for i in missing)}, with the same --dataset / --image-dir and "
                  "settings as the others), then --merge again", file=sys.stderr)
            return 1

    if not args.merge and not os.path.isfile(final_meta):
        _compute_shard(args, records)
    elif os.path.isfile(final_meta) and not args.merge:
        print(f"{args.output} is already complete (use --overwrite to regenerate)")

    merged = merge_if_complete(args.output, args.num_shards, keep_shards=args.keep_shards)
    if merged is None:
        missing = missing_shards(args.output, args.num_shards)
        if not missing:  # all shards are complete: another process holds the merge lock
            lock = os.path.join(args.output, ".merge.lock")
            if args.merge:
                print(f"error: another process is merging {args.output} ({lock}); if it died on another machine, "
                      "delete the lock and run --merge again", file=sys.stderr)
                return 1
            print(f"another process is merging {args.output} ({lock}); it writes the store")
            return 0
        print(
            f"waiting for the other shards of {args.num_shards} (missing: {', '.join(map(str, missing))}); the "
            "last one to finish merges (or run --merge once they are all complete)"
        )
        return 0
    store = ProposalStore.open(merged)
    print(f"store: {store!r}")
    print(
        json.dumps(
            {
                "num_images": len(store),
                "num_boxes": store.num_boxes,
                "counts": store.meta["counts"],
                "skipped": len(store.skipped),
            }
        )
    )
    if args.export_detectron2:
        return _export(store, args.export_detectron2, keep_other=not args.overwrite)
    return 0


def _export(store, path: str, keep_other: bool) -> int:
    """Write ``--export-detectron2`` (checked at the start; a write can still fail, e.g. a full disk). With
    ``keep_other`` an existing file is kept: unchanged when it holds this export already, an error otherwise."""
    try:
        export_detectron2(store, path, keep_other=keep_other)
    except UserValueError as e:
        print(f"error: --export-detectron2 {e}; the store {store.path} is complete (pass --overwrite to regenerate "
              "it and replace the file)", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write --export-detectron2 {path!r} ({e.strerror or e}); the store {store.path} is "
              f"complete: export it again with tools/generate_proposals.py --output {store.path} "
              "--export-detectron2 FILE.pkl", file=sys.stderr)
        return 1
    print(f"Detectron2 proposal file: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
