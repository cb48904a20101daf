#!/usr/bin/env python
"""Convert official checkpoints into this project's layout for ``train.init_checkpoint``.

    python tools/convert_checkpoint.py --input swav_800ep_pretrain.pth.tar --output swav_r50_d2.pth
    python tools/convert_checkpoint.py --format detr --input detr-r50-e632da11.pth --output detr_r50_d2.pth

``--format torchvision`` (default) converts a torchvision-layout ResNet (torchvision ImageNet, SwAV,
DETReg-style); the other formats (``--help`` lists them: official DETR, Conditional DETR, Deformable DETR
and the pretraining methods' releases) convert a whole model. Whole-model conversion lists every source key
it could not map and then refuses to write the output, so no weight is ever dropped silently.

then initialise the frozen backbone of any pretraining / finetuning config with
``train.init_checkpoint=swav_r50_d2.pth``. Build the backbone with ``stride_in_1x1=False`` (the project's
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
"""

import argparse
import os
import pickle
import re
import sys
from collections import Counter
from typing import Iterable, List, Optional

import torch

from siamese_detr.checkpoint import map_torchvision_resnet
from siamese_detr.checkpoint.registry import available_converters, get_converter, model_state

# SwAV and DETReg release ResNets use torchvision's layout; the rest are whole-model converters
FORMATS = ("torchvision",) + tuple(available_converters())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="source checkpoint (.pth / .pth.tar)")
    p.add_argument("--output", required=True, help="detectron2 checkpoint to write (.pth)")
    p.add_argument("--format", default="torchvision", choices=FORMATS, help="key layout of --input")
    p.add_argument(
        "--prefix",
        default="backbone.",
        help="module path of the ResNet in the target model ('' for a bare ResNet)",
    )
    p.add_argument(
        "--input-format",
        default="BGR",
        choices=("BGR", "RGB"),
        help="channel order of the images the target model feeds its backbone (model.input_format)",
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
        SystemExit: the file holds other python objects and ``trust_pickle`` is False (the message explains).
    """
    if trust_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" (it contains {found.group(1)})" if found else ""
        raise SystemExit(
            f"error: {path} holds python objects besides tensors{what}, so it cannot be loaded safely with "
            f"torch.load(weights_only=True). Unpickling it can execute code from the file. If you trust its "
            f"source, re-run with --trust-pickle."
        ) from None


def summarize_dropped(dropped: Iterable[str]) -> List[str]:
    """Group dropped source keys for printing: ``fc.*``, ``projection_head.*``, ``*.num_batches_tracked``."""
    groups = Counter(
        "*.num_batches_tracked" if k.endswith("num_batches_tracked") else k.split(".")[0] + ".*"
        for k in dropped
    )
    return [f"{g} ({n} key{'s' if n > 1 else ''})" for g, n in sorted(groups.items())]


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    prefix = args.prefix if not args.prefix or args.prefix.endswith(".") else args.prefix + "."
    checkpoint = load_checkpoint(args.input, trust_pickle=args.trust_pickle)
    try:
        if args.format == "torchvision":
            converted, dropped = map_torchvision_resnet(checkpoint, prefix=prefix, input_format=args.input_format)
        else:
            result = get_converter(args.format)(model_state(checkpoint), input_format=args.input_format)
            if result.unmapped:
                shown = "\n  ".join(result.unmapped[:50])
                more = f"\n  ... and {len(result.unmapped) - 50} more" if len(result.unmapped) > 50 else ""
                print(
                    f"error: {len(result.unmapped)} key(s) of {args.input} have no place in the {args.format} "
                    f"layout, so nothing was written (is --format right?):\n  {shown}{more}",
                    file=sys.stderr,
                )
                return 1
            converted, dropped, prefix = result.converted, result.dropped, ""
    except ValueError as e:
        print(f"error: cannot convert {args.input}: {e}", file=sys.stderr)
        return 1

    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    author = f"siamese_detr tools/convert_checkpoint.py ({args.format}, {args.input_format} input)"
    torch.save({"model": converted, "__author__": author, "matching_heuristics": False}, args.output)

    modules = Counter(k[len(prefix):].split(".")[0] for k in converted)
    print(
        f"converted {len(converted)} tensors from {args.input} "
        f"({args.format} layout, {args.input_format} input)"
    )
    print("  per module: " + ", ".join(f"{prefix}{m}: {n}" for m, n in sorted(modules.items())))
    print("  dropped: " + (", ".join(summarize_dropped(dropped)) if dropped else "nothing"))
    print(f"wrote {args.output}; use it with train.init_checkpoint={args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
