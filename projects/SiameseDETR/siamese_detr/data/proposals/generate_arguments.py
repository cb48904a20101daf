"""The argument checks of ``tools/generate_proposals.py``, made before any work and before ``--output`` is created.

Each ``*_problem`` function returns a one-line reason (the tool prints ``error: REASON`` and exits 2) or None.
:func:`usage_problem` runs them in the order a user would fix them; :func:`ignored_by_import` refuses options
that ``--import-detectron2`` would ignore, and :func:`ignored_by_method` notes the method flags ``--method``
does not read; :func:`coco_images_missing` runs once the dataset's records are
listed. :func:`method_params` is what a store records of its method (``meta.json``'s ``params``).
"""

import argparse
import difflib
import os

from .generate import existing_shards, register_builtin_datasets
from .methods import DEFAULT_MAX_BOXES, _load_sed_model, edgeboxes_value_problem
from .store import folder_write_problem


def method_params(args) -> dict:
    """What is recorded in meta.json and what the workers pass to compute_proposals."""
    max_boxes = args.max_boxes if args.max_boxes is not None else DEFAULT_MAX_BOXES[args.method]
    params = {"max_boxes": max_boxes, "seed": args.seed}
    if args.method == "edgeboxes":
        params.update(alpha=args.alpha, beta=args.beta, sed_model=args.sed_model)
    elif args.method == "selective_search":
        params.update(resize=args.ss_resize, mode=args.ss_mode)
    if args.method == "edgeboxes":
        params.pop("seed")
    return params


def merge_num_shards(args):
    """``--merge`` without ``--num-shards``: set ``args.num_shards`` to the K of the shard folders under --output
    (1 for a store merged already); a reason instead when that is not clear (none, or several K)."""
    found = existing_shards(args.output)
    complete = os.path.isfile(os.path.join(args.output, "meta.json"))
    if len(found) == 1:
        args.num_shards = next(iter(found))
    elif len(found) > 1:
        return (f"{os.path.join(args.output, 'shards')} holds shards of several --num-shards ("
                f"{', '.join(map(str, found))}): give --num-shards K")
    elif complete and not args.overwrite:
        args.num_shards = 1  # merged already: nothing to do
    else:
        return (f"nothing to merge: {os.path.join(args.output, 'shards')} holds no shard folders"
                + (" (they were removed after the merge)" if complete else ""))
    return None


def export_path_problem(path: str, overwrite: bool, store_complete: bool):
    """Why ``--export-detectron2 PATH`` cannot be written (None if it can), checked before any work: a folder, an
    existing file (without ``--overwrite``; when the store is complete already, a finished command run again, the
    file is compared with the export at the end instead), a folder that does not exist or cannot be written in."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        example = os.path.join(path, "proposals.pkl")
        return f"--export-detectron2 {path!r} is a folder; give a file name such as {example!r}"
    if os.path.exists(path) and not overwrite and not store_complete:
        return (f"--export-detectron2 {path!r} exists already and is kept: delete it, choose another path, or pass "
                "--overwrite to replace it (which also regenerates what this command writes at --output)")
    problem = folder_write_problem(folder)
    if problem:
        return f"--export-detectron2 {path!r}: {problem}; choose another path"
    if not os.path.isdir(folder):
        return (f"--export-detectron2 {path!r}: its folder {folder!r} does not exist; create it "
                f"(mkdir -p {folder}) or choose another path")
    return None


# with --import-detectron2, the options that are used; any other one given would be ignored
IMPORT_OPTIONS = ("import_detectron2", "trust_pickle", "dataset", "output", "overwrite", "no_progress")
# the method flags, and the methods that read each (:func:`method_params`)
METHOD_FLAG_USERS = {
    "alpha": ("edgeboxes",),
    "beta": ("edgeboxes",),
    "sed_model": ("edgeboxes",),
    "ss_resize": ("selective_search",),
    "ss_mode": ("selective_search",),
    "seed": ("selective_search", "random"),
}


def given_options(args, argv, parser) -> list:
    """The destinations of the options written in ``argv``, whatever their value (one equal to its default
    included), in the parser's order. ``parser`` is the tool's parser: ``argv`` is parsed again onto a
    namespace in which argparse finds every destination set, so it fills in no default."""
    unset = object()
    parsed = parser.parse_args(argv, namespace=argparse.Namespace(**{dest: unset for dest in vars(args)}))
    return [dest for dest, value in vars(parsed).items() if value is not unset]


def _flags(dests) -> str:
    return ", ".join("--" + dest.replace("_", "-") for dest in dests)


def ignored_by_import(args, argv, parser):
    """With ``--import-detectron2``: why the other options given in ``argv`` (whatever their value) cannot be
    used with it, naming them; None without it or when only :data:`IMPORT_OPTIONS` are given."""
    if not args.import_detectron2:
        return None
    ignored = [dest for dest in given_options(args, argv, parser) if dest not in IMPORT_OPTIONS]
    if not ignored:
        return None
    return (f"--import-detectron2 converts the proposals of its file as they are: {_flags(ignored)} "
            f"{'has' if len(ignored) == 1 else 'have'} no effect with it; leave "
            f"{'it' if len(ignored) == 1 else 'them'} out (it uses --output, --dataset for the image sizes, "
            "--overwrite, --trust-pickle and --no-progress)")


def ignored_by_method(args, argv, parser):
    """The method flags given in ``argv`` that ``--method`` does not read (e.g. ``--alpha`` with ``random``), as
    a one-line note, or None. A note, not an error: scripts that pass one set of flags to every method keep
    working, and the store records only the parameters its method used (``meta.json``'s ``params``)."""
    if args.import_detectron2 or args.merge:
        return None
    ignored = [dest for dest in given_options(args, argv, parser)
               if dest in METHOD_FLAG_USERS and args.method not in METHOD_FLAG_USERS[dest]]
    if not ignored:
        return None
    users = "; ".join(f"--{dest.replace('_', '-')}: {' and '.join(METHOD_FLAG_USERS[dest])}" for dest in ignored)
    return (f"--method {args.method} does not use {_flags(ignored)}, which {'is' if len(ignored) == 1 else 'are'} "
            f"ignored ({users} only)")


def value_problem(args):
    """Why a method flag's value is out of its range (None if all are in range): --alpha and --beta as
    :func:`edgeboxes` checks them (the integer flags are checked by their argparse types)."""
    for flag, name, value in (("--alpha", "alpha", args.alpha), ("--beta", "beta", args.beta)):
        problem = edgeboxes_value_problem(name, value)
        if problem:
            return f"{flag} (EdgeBoxes {name}) {problem}"
    return None


def sed_model_problem(args):
    """Why ``--sed-model`` cannot be used (missing, or not a model OpenCV reads), or None; checked before
    --output is created, so a wrong path fails at once, not in the workers, and leaves no folder behind."""
    if not (args.sed_model and args.method == "edgeboxes" and not args.merge and not args.import_detectron2):
        return None
    try:
        _load_sed_model(args.sed_model)
    except (FileNotFoundError, ValueError) as e:
        return f"--sed-model: {e}"
    return None


def dataset_problem(name: str):
    """Why ``--dataset NAME`` cannot be read (None if it can): a ``coco:``/``folder:`` spec whose files are
    missing, a name that is not registered (with close matches), or a registered dataset whose files are
    not on disk. Registers the built-in datasets and the spec first."""
    register_builtin_datasets()
    from detectron2.data import DatasetCatalog

    from siamese_detr.data.datasets import ensure_dataset

    try:
        ensure_dataset(name)  # coco:ANN.json[:IMAGES] / folder:DIR specs register themselves
    except (ValueError, FileNotFoundError) as e:
        return str(e)
    if name not in DatasetCatalog.list():
        registered = sorted(DatasetCatalog.list())
        from siamese_detr.data.dataset_checks import spec_hint

        close = difflib.get_close_matches(name, registered, n=3, cutoff=0.75)  # as the training tool
        hint = spec_hint(name) or (f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else "")
        return (f"--dataset {name!r} is not a registered dataset.{hint} (registered: "
                f"{', '.join(registered[:12])}, ...)")
    from siamese_detr.data.dataset_checks import check_datasets_on_disk

    try:
        check_datasets_on_disk(name)
    except FileNotFoundError as e:
        return str(e)
    return None


def usage_problem(args):
    """A one-line reason why the arguments cannot work, or None (checked before --output is created). Fills in
    ``args.num_shards`` where it was left out (1, or with ``--merge`` the K on disk)."""
    if args.max_boxes is not None and args.max_boxes < 0:
        return f"--max-boxes must be 0 (all boxes) or more, got {args.max_boxes}"
    if args.max_boxes == 0 and args.method == "random" and not (args.merge or args.import_detectron2):
        return (f"--max-boxes 0 (all boxes) has no meaning for --method random, whose boxes are drawn as many as "
                f"asked: give a count of 1 or more (default {DEFAULT_MAX_BOXES['random']})")
    problem = value_problem(args)
    if problem:
        return problem
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        return (f"--output {args.output!r} is a file, not a proposal store folder (it is left as it is); give a "
                "folder to write the store into, e.g. NAME.METHOD.proposals (created if missing)")
    if args.merge and not os.path.isdir(args.output):
        return f"nothing to merge: --output {args.output!r} does not exist"
    if args.num_shards is None:
        if args.merge:
            problem = merge_num_shards(args)
            if problem:
                return problem
        else:
            args.num_shards = 1
    if not 0 <= args.shard_id < args.num_shards:
        return f"--shard-id must be in [0, {args.num_shards}) for --num-shards {args.num_shards}, got {args.shard_id}"
    for option, value in (("--num-workers", args.num_workers), ("--chunk-size", args.chunk_size)):
        if value < 1:
            return f"{option} must be at least 1, got {value}"
    if args.export_detectron2:
        complete = os.path.isfile(os.path.join(args.output, "meta.json"))
        problem = export_path_problem(args.export_detectron2, args.overwrite, complete)
        if problem:
            return problem
    if args.image_dir and not os.path.isdir(args.image_dir):
        return f"--image-dir {args.image_dir!r} does not exist or is not a folder"
    problem = sed_model_problem(args)
    if problem:
        return problem
    problem = args.dataset and dataset_problem(args.dataset)
    if problem:
        return problem
    complete = os.path.isfile(os.path.join(args.output, "meta.json"))
    if not (args.merge or args.import_detectron2 or args.dataset or args.image_dir or complete):
        return "give --dataset NAME or --image-dir DIR"
    return None


def coco_images_missing(dataset, records):
    """For a ``coco:`` spec none of whose images exist: why, naming the ``coco:ANNOTATIONS.json:IMAGE_ROOT``
    form (the json's file names are relative to IMAGE_ROOT); None otherwise. Checked before any work, so
    no chunk of unreadable images is written. Stops at the first image that exists."""
    if not (dataset and dataset.startswith("coco:") and records):
        return None
    if any(os.path.exists(r["file_name"]) for r in records):
        return None
    from siamese_detr.data.datasets.from_path import parse_dataset_spec

    rest = dataset[len("coco:"):]
    marker = rest.lower().find(".json:")  # where parse_dataset_spec splits the json from the image root
    json_file = rest[: marker + len(".json")] if marker >= 0 else rest
    paths = parse_dataset_spec(dataset)[1]
    root = (f"the image root {paths['image_root']!r} given after the json" if marker >= 0
            else f"the json's own folder {paths['image_root']!r} (no image root given)")
    return (f"none of the {len(records)} images of --dataset {dataset!r} exist (first: {records[0]['file_name']}): "
            f"the json's file names are taken relative to {root}. Give the folder that holds them as "
            f"--dataset coco:ANNOTATIONS.json:IMAGE_ROOT (here: coco:{json_file}:IMAGE_ROOT)")
