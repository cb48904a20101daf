#!/usr/bin/env python
"""Convert official checkpoints into this project's layout for ``train.init_checkpoint``.

    python tools/convert_checkpoint.py --input swav_800ep_pretrain.pth.tar --output swav_r50_d2.pth
    python tools/convert_checkpoint.py --format detr --input detr-r50-e632da11.pth --output detr_r50_d2.pth

``--format torchvision`` (default) converts a torchvision-layout ResNet (torchvision ImageNet, SwAV,
DETReg-style); the other formats (``--help`` lists them: official DETR, Conditional DETR, Deformable DETR
and the pretraining methods' releases) convert a whole model. Whole-model conversion lists every source key
it could not map and then refuses to write the output, so no weight is ever dropped silently; the error
names the ``--format`` that does convert every key, when one does. The pretraining releases (``up_detr``,
``detreg``, ``siamese_detr``) convert for finetuning; with ``--for-pretraining`` they convert for the same
method's pretraining config instead (objectness rows of the class heads, Siamese DETR's SimSiam heads), to
continue pretraining from them (``siamese_detr/checkpoint/official_pretrain.py`` gives the details). The
summary counts the written tensors per module, lists the rows removed from class heads (COCO ids without a
class, or the rows an objectness head has no place for) and the keys dropped on purpose, each group with why.

A converted ResNet (the first example) initialises the frozen backbone of any pretraining / finetuning config
with ``train.init_checkpoint=swav_r50_d2.pth``. Build the backbone with ``stride_in_1x1=False`` (the project's
configs do). The written file is ``{"model": {"backbone.stem.conv1.weight": ..., ...}, "__author__": ...,
"matching_heuristics": False}``: exact names, loaded by ``DetectionCheckpointer`` as they are; the
transformer and heads stay randomly initialised (reported as missing keys).

``fc.*``, SwAV's ``projection_head.*`` / ``prototypes.*`` and ``num_batches_tracked`` are dropped; any other
unknown key stops the conversion with its name. ``--input-format BGR`` (default, matching the configs'
``input_format="BGR"``) reverses the input channels of the first conv, since the source weights expect RGB;
pass ``--input-format RGB`` for a model fed RGB images.

The input is read with ``torch.load(weights_only=True)``. A checkpoint that also stores arbitrary python
objects (e.g. an ``argparse.Namespace``) cannot be read that way; ``--trust-pickle`` reads it with
``weights_only=False``, which can execute code from the file: use it only for files from a trusted source.
A file that is not a checkpoint (missing, empty, JSON, random bytes, truncated) is refused with a one-line
error naming it; a Detectron2 ``.pkl`` needs no conversion (``python -m siamese_detr.engine.checkpointing
IN.pkl OUT.pth`` makes a ``.pth`` of it that loads without ``--trust-pickle``). Neither does a checkpoint
already in this project's layout (detectron2 ResNet names such as ``backbone.stem.conv1.weight`` /
``backbone.res2.0.*``: a ``model_final.pth`` written by ``tools/lazyconfig_train_net.py`` or
``tools/train_demo_backbone.py``, or this tool's own output): it is refused (exit 2) with the fix,
``train.init_checkpoint=THAT_FILE``, whatever ``--format``. A torchvision ResNet that lacks a tensor of its
architecture is refused, naming the missing keys. The output (not the input file) is written through a
temporary file and a rename; an existing ``--output`` is refused unless ``--overwrite`` is given, and a path
that cannot be written (under a file, in a folder that takes no file) is refused before the input is read.
``--prefix`` applies to ``--format torchvision`` only (it is refused with the other formats, which write the
model's own names).
"""

import argparse
import os
import pickle
import re
import sys
import warnings
from collections import Counter
from typing import Iterable, List, Optional, Tuple

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

import torch  # noqa: E402
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet  # noqa: E402

from siamese_detr.checkpoint import map_torchvision_resnet, unwrap_state_dict  # noqa: E402
from siamese_detr.checkpoint.registry import available_converters, get_converter, model_state  # noqa: E402
from siamese_detr.engine.checkpointing import (  # noqa: E402
    CheckpointLoadError,
    atomic_torch_save,
    checkpoint_kind,
    error_first_line,
    is_legacy_torch_save,
    load_checkpoint_file,
)
from siamese_detr.utils.output_paths import check_output_file  # noqa: E402
from siamese_detr.utils.user_errors import user_message  # noqa: E402

# SwAV and DETReg release ResNets use torchvision's layout; the rest are whole-model converters
FORMATS = ("torchvision",) + tuple(available_converters())
PRETRAINING_FORMATS = ("up_detr", "detreg", "siamese_detr")  # converters with a for_pretraining option
PREFIX_FORMATS = ("torchvision",)  # formats that write a bare ResNet, under --prefix
DEFAULT_PREFIX = "backbone."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="source checkpoint (.pth / .pth.tar)")
    p.add_argument("--output", required=True, help="detectron2 checkpoint to write (.pth): a new file")
    p.add_argument("--overwrite", action="store_true", help="replace --output when it exists")
    p.add_argument("--format", default="torchvision", choices=FORMATS, help="key layout of --input")
    p.add_argument(
        "--prefix",
        default=None,
        help=f"(--format torchvision only) module path of the ResNet in the target model (default "
        f"{DEFAULT_PREFIX!r}; '' for a bare ResNet); the whole-model formats keep the model's own names",
    )
    p.add_argument(
        "--input-format",
        default="BGR",
        choices=("BGR", "RGB"),
        help="channel order of the images the target model feeds its backbone (model.input_format)",
    )
    p.add_argument(
        "--for-pretraining",
        action="store_true",
        help=f"({', '.join(PRETRAINING_FORMATS)}) convert for the method's pretraining config, to continue "
        "pretraining from the release: objectness rows of the class heads, Siamese DETR's SimSiam heads",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load --input with torch.load(weights_only=False); can run code from the file",
    )
    return p


def load_checkpoint(path: str, trust_pickle: bool = False):
    """``torch.load`` on CPU, tensors and plain containers only unless ``trust_pickle``.

    Raises:
        SystemExit: with a one-line message naming ``path`` and what it is: missing, a folder, empty, not a
            checkpoint (JSON, random bytes), a plain pickle such as a Detectron2 ``.pkl`` (which this tool does
            not convert: the message gives the command that does), truncated or corrupt, or holding python
            objects besides tensors while ``trust_pickle`` is False (the message explains ``--trust-pickle``).
    """
    if os.path.isdir(path):
        raise SystemExit(f"error: --input {path} is a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise SystemExit(f"error: --input {path} does not exist")
    kind = checkpoint_kind(path)
    if kind == "empty":
        raise SystemExit(f"error: {path} is empty (0 bytes), not a checkpoint: an interrupted download or copy?")
    if kind == "unknown":
        with open(path, "rb") as f:
            head = f.read(16)
        looks = " (it looks like JSON or other text)" if head.lstrip()[:1] in (b"{", b"[") else ""
        raise SystemExit(f"error: {path} is not a checkpoint: neither a PyTorch file (torch.save) nor a pickle; it "
                         f"starts with {head!r}{looks}")
    if kind == "pickle" and not is_legacy_torch_save(path):
        raise SystemExit(
            f"error: {path} is a plain pickle, not a torch.save file: a Detectron2 .pkl? Those are in detectron2's "
            f"layout already and need no conversion; to get a .pth that loads without --trust-pickle, run once "
            f"(it unpickles the file: only for files you trust): python -m siamese_detr.engine.checkpointing "
            f"{path} OUT.pth"
        )
    try:
        return load_checkpoint_file(path, trust_pickle=trust_pickle)
    except CheckpointLoadError as e:
        cause = e.__cause__
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(cause)) if cause is not None else None
        weights_only_refusal = "weights_only" in str(cause) or "Weights only" in str(cause)
        if isinstance(cause, pickle.UnpicklingError) and weights_only_refusal and not trust_pickle:
            what = f" (it contains {found.group(1)})" if found else ""
            raise SystemExit(
                f"error: {path} holds python objects besides tensors{what}, so it cannot be loaded safely with "
                f"torch.load(weights_only=True). Unpickling it can execute code from the file. If you trust its "
                f"source, re-run with --trust-pickle."
            ) from None
        raise SystemExit(f"error: {e}") from None
    except Exception as e:  # --trust-pickle: unpickling failed (a class that no longer exists, ...)
        raise SystemExit(f"error: cannot unpickle {path} ({type(e).__name__}: {error_first_line(e)})") from None


# torchvision ResNets: (block type, blocks per stage) by depth
_STANDARD_RESNETS = {
    18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3)),
}
_NOT_CONVERTED = re.compile(r"^fc\.|(^|\.)num_batches_tracked$")


def missing_resnet_keys(state_dict) -> Tuple[str, List[str]]:
    """``(architecture, missing keys)``: the torchvision ResNet the keys of ``state_dict`` (wrapped or not,
    see :func:`unwrap_state_dict`) come from, the smallest standard one (18/34/50/101/152) with at least as
    many blocks per stage, and the tensors of it (``fc.*`` and ``num_batches_tracked`` aside) that are not
    there: a conversion without them would leave weights at their defaults without a word."""
    names = set(unwrap_state_dict(state_dict))
    blocks = [0, 0, 0, 0]
    bottleneck = False
    for name in names:
        m = re.match(r"^layer([1-4])\.(\d+)\.(?:(?:conv|bn)(\d)\.)?", name)
        if m:
            blocks[int(m[1]) - 1] = max(blocks[int(m[1]) - 1], int(m[2]) + 1)
            bottleneck |= m[3] == "3"
    block = Bottleneck if bottleneck else BasicBlock
    fits = [(depth, layers) for depth, (b, layers) in _STANDARD_RESNETS.items()
            if b is block and all(n >= have for n, have in zip(layers, blocks))]
    if fits:
        depth, layers = min(fits, key=lambda f: sum(f[1]))
        arch = f"ResNet-{depth}"
    else:
        layers = tuple(max(1, n) for n in blocks)
        arch = f"ResNet of {block.__name__} blocks {list(layers)}"
    with torch.device("meta"):  # names only: no memory, no initialisation
        expected = ResNet(block, list(layers)).state_dict()
    return arch, [k for k in expected if not _NOT_CONVERTED.search(k) and k not in names]


# a detectron2 ResNet's names (stem.conv1, res2..res5 blocks), under any module path (``backbone.``, none, ...):
# the layout of this project's models, never of an official checkpoint (torchvision names: conv1, layer1..4)
_PROJECT_RESNET_KEY = re.compile(r"^(?:.+\.)?(?:stem\.conv1|res[2-5]\.\d+\.(?:conv[1-3]|shortcut))\.")


def project_layout_modules(checkpoint) -> List[str]:
    """When ``checkpoint`` (a state dict, or a dict holding it under ``model`` / ``state_dict``) is already in
    this project's layout, i.e. holds a detectron2 ResNet (``backbone.stem.conv1.weight``, ``backbone.res2.0.*``,
    ...) as a ``model_final.pth`` of ``tools/lazyconfig_train_net.py`` / ``tools/train_demo_backbone.py`` or this
    tool's own output does: its top-level modules with their tensor counts (``["backbone.* (75)",
    "transformer.* (101)", ...]``, the backbone's first); else ``[]``. Such a file needs no conversion."""
    try:
        state = model_state(checkpoint)
    except ValueError:
        return []
    if not any(_PROJECT_RESNET_KEY.match(k) for k in state):
        return []
    modules = Counter(k.split(".")[0] + (".*" if "." in k else "") for k in state)
    first = sorted(modules, key=lambda m: (not m.startswith("backbone"), -modules[m], m))  # the largest next
    return [f"{m} ({modules[m]})" for m in first]


_REMOVED_ROWS = re.compile(r"^(?P<key>.+)\[rows (?P<rows>[\d,]*)\]$")  # "class_embed.weight[rows 0,12]"


def _group(key: str, notes: Optional[dict] = None) -> str:
    """``module.*`` of a key; ``*.num_batches_tracked`` for the BatchNorm counters of a module without a note."""
    module = key.split(".")[0] + ".*"
    return "*.num_batches_tracked" if key.endswith("num_batches_tracked") and module not in (notes or {}) else module


def summarize_dropped(dropped: Iterable[str], notes: Optional[dict] = None) -> List[str]:
    """Group the source keys dropped whole for printing: ``fc.* (2 keys)``, ``*.num_batches_tracked (53 keys)``,
    with the converter's reason where it gives one (``notes``: ``{"enc_head.*": "..."}``). Class-head rows
    (``"KEY[rows ...]"`` entries) are left to :func:`summarize_removed_rows`."""
    notes = notes or {}
    groups = Counter(_group(k, notes) for k in dropped if not _REMOVED_ROWS.match(k))
    return [f"{g} ({n} key{'s' if n > 1 else ''}{': ' + notes[g] if g in notes else ''})"
            for g, n in sorted(groups.items())]


def summarize_removed_rows(dropped: Iterable[str], converted: dict, notes: Optional[dict] = None) -> List[str]:
    """One line per class head whose rows were removed: ``class_embed.* (12 tensors): rows 0,12,... removed, 81
    of 92 kept (why)``; the tensor count is that of ``converted`` (the per-module line's)."""
    notes, rows = notes or {}, {}
    for entry in dropped:
        m = _REMOVED_ROWS.match(entry)
        if m:
            rows.setdefault(_group(m["key"]), set()).add(m["rows"])
    lines = []
    for group, removed in sorted(rows.items()):
        tensors = [v for k, v in converted.items() if _group(k) == group]
        kept = len(tensors[0]) if tensors else 0
        count = max(len(r.split(",")) if r else 0 for r in removed)
        why = f" ({notes[group]})" if group in notes else ""
        lines.append(f"{group} ({len(tensors)} tensors): rows {' / '.join(sorted(removed))} removed, {kept} of "
                     f"{kept + count} kept{why}")
    return lines


def formats_that_convert(checkpoint, exclude: str = "") -> List[str]:
    """The ``--format`` values (``FORMATS`` order: torchvision, finetune and pretraining layouts) whose
    conversion of ``checkpoint`` maps every key, ``exclude`` left out."""
    found = []
    for name in FORMATS:
        if name == exclude:
            continue
        try:
            if name == "torchvision":
                map_torchvision_resnet(checkpoint)
                ok = not missing_resnet_keys(checkpoint)[1]
            else:
                result = get_converter(name)(model_state(checkpoint))
                ok = bool(result.converted) and not result.unmapped
        except (ValueError, KeyError):
            ok = False
        if ok:
            found.append(name)
    return found


def format_hint(checkpoint, chosen: str) -> str:
    """The fix to print when ``--format chosen`` does not fit: the formats that do, or that none does."""
    fits = formats_that_convert(checkpoint, exclude=chosen)
    if not fits:
        return f"no --format converts every key of it (--format {chosen} was given): is it an official checkpoint?"
    others = f" (also: {', '.join(fits[1:])})" if len(fits) > 1 else ""
    return f"it is not a {chosen} checkpoint: re-run with --format {fits[0]}{others}"


class _Refused(Exception):
    """Nothing can be written: ``args[0]`` is the whole ``error: ...`` message, ``args[1]`` the exit status."""


def check_arguments(parser, args) -> None:
    """Mistakes in the arguments end the tool through ``parser.error`` before the input is read: an ``--output``
    that is a folder, the input, an existing file (without ``--overwrite``) or under a file or a folder that
    takes no file; ``--for-pretraining`` or ``--prefix`` with a ``--format`` they do not apply to."""
    if os.path.isdir(args.output):
        parser.error(f"--output {args.output} is a folder; give the .pth file to write, e.g. "
                     f"{os.path.join(args.output, 'converted_d2.pth')}")
    if os.path.realpath(args.output) == os.path.realpath(args.input) or (
            os.path.exists(args.output) and os.path.exists(args.input) and os.path.samefile(args.output, args.input)):
        parser.error(f"--output {args.output} is the --input file: write the conversion to another file")
    if args.for_pretraining and args.format not in PRETRAINING_FORMATS:
        parser.error(f"--for-pretraining converts the pretraining releases (--format {'|'.join(PRETRAINING_FORMATS)}),"
                     f" not --format {args.format}: drop it to convert for finetuning / evaluation")
    if args.prefix is not None and args.format not in PREFIX_FORMATS:
        parser.error(f"--prefix places a bare ResNet in the target model (--format {'|'.join(PREFIX_FORMATS)}); "
                     f"--format {args.format} converts a whole model under its own names: drop --prefix")
    try:  # an existing file (without --overwrite), or a path whose folder cannot be made or written in
        check_output_file(args.output, overwrite=args.overwrite)
    except OSError as e:
        parser.error(user_message(e))


def convert(args, checkpoint, prefix: str):
    """``(converted, dropped, prefix, notes)``: the state dict in this project's layout (keys under ``prefix``),
    what was left out, and the converter's notes on it. A file already in this layout, a torchvision ResNet
    with missing tensors, keys with no place in ``--format``'s layout and a file the converter cannot read are
    ``_Refused``."""
    modules = project_layout_modules(checkpoint)
    if modules:  # any --format would fail on it, naming its keys as if the file were broken
        shown = ", ".join(modules[:4]) + (f", ... ({len(modules)} modules)" if len(modules) > 4 else "")
        raise _Refused(f"error: {args.input} is already in this project's (Detectron2) layout ({shown}; e.g. a "
                       f"model_final.pth written by tools/lazyconfig_train_net.py, or a file this tool wrote): it "
                       f"needs no conversion, nothing was written; pass it to train.init_checkpoint directly: "
                       f"train.init_checkpoint={args.input}", 2)
    try:
        if args.format == "torchvision":
            converted, dropped = map_torchvision_resnet(checkpoint, prefix=prefix, input_format=args.input_format)
            arch, missing = missing_resnet_keys(checkpoint)
            if missing:
                shown = ", ".join(missing[:20]) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
                raise _Refused(f"error: {args.input} lacks {len(missing)} tensor(s) of a torchvision {arch}, so "
                               f"nothing was written (a damaged or partial file?): {shown}", 1)
            return converted, dropped, prefix, {}
        options = {"for_pretraining": True} if args.for_pretraining else {}
        result = get_converter(args.format)(model_state(checkpoint), input_format=args.input_format, **options)
    except ValueError as e:
        raise _Refused(f"error: cannot convert {args.input}: {e}; {format_hint(checkpoint, args.format)}", 1) from None
    if result.unmapped:  # every key, one a line: nothing is written, the user needs them all
        shown = "\n  ".join(result.unmapped)
        raise _Refused(f"error: {len(result.unmapped)} key(s) of {args.input} have no place in the {args.format} "
                       f"layout, so nothing was written; {format_hint(checkpoint, args.format)}:\n  {shown}", 1)
    return result.converted, result.dropped, "", result.notes


def print_summary(args, converted, dropped, prefix: str, notes, target: str) -> None:
    """What was converted (tensors per module), the class rows removed, what was dropped, where it went."""
    per_module = Counter(k[len(prefix):].split(".")[0] for k in converted)
    print(
        f"converted {len(converted)} tensors from {args.input} "
        f"({args.format} layout{target}, {args.input_format} input)"
    )
    print("  per module: " + ", ".join(f"{prefix}{m}: {n}" for m, n in sorted(per_module.items())))
    for line in summarize_removed_rows(dropped, converted, notes):
        print(f"  class rows: {line}")
    whole = summarize_dropped(dropped, notes)
    print("  dropped: " + (", ".join(whole) if whole else "nothing"))
    print(f"wrote {args.output}; use it with train.init_checkpoint={args.output}")


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: check the arguments (:func:`check_arguments`), read ``--input`` (:func:`load_checkpoint`),
    convert it (:func:`convert`), write ``{"model", "__author__", "matching_heuristics": False}`` to ``--output``
    through a temporary file and a rename, and print the summary. Returns the exit status: 0; 1 for a refused
    conversion or an ``--output`` that could not be written; 2 for a file already in this project's layout. A
    wrong argument or an unreadable ``--input`` ends the tool before, through :func:`check_arguments` /
    :func:`load_checkpoint`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    prefix = DEFAULT_PREFIX if args.prefix is None else args.prefix
    prefix = prefix if not prefix or prefix.endswith(".") else prefix + "."
    checkpoint = load_checkpoint(args.input, trust_pickle=args.trust_pickle)
    try:
        converted, dropped, prefix, notes = convert(args, checkpoint, prefix)
    except _Refused as refusal:
        message, status = refusal.args
        print(message, file=sys.stderr)
        return status

    target = ", for pretraining" if args.for_pretraining else ""
    author = f"siamese_detr tools/convert_checkpoint.py ({args.format}{target}, {args.input_format} input)"
    try:  # through a temporary file and a rename: a kill never leaves a torn output
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        atomic_torch_save({"model": converted, "__author__": author, "matching_heuristics": False}, args.output)
    except OSError as e:
        print(f"error: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    print_summary(args, converted, dropped, prefix, notes, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
