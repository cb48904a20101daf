#!/usr/bin/env python
"""Draw the two views of Siamese DETR pretraining samples, one PNG per sample.

    python tools/visualize_views.py [--config-file configs/common/data/pretrain_builtin.py | --dataset NAME]
        [--num-samples 8] [--output output/views] [--seed 0] [key=value ...]

Top: view 1 and view 2 side by side; region k has the same colour in both views (solid = region box /
target, thin = jittered query box; region 0, the intersection of the views, is drawn thicker).
Underneath: the region crops, one row per view, each framed in its region's colour. The caption gives
the image id, the views' IoU, the number of regions taken from proposals (the rest is padding) and
whether the sample was flipped. ``--dataset NAME`` uses the built-in pretraining config with that dataset;
``key=value`` overrides apply to the config (e.g. ``dataloader.train.mapper.tau=0.7``).
Images the mapper skips (unreadable, or no proposal in the views' overlap) are replaced by others; when
none could be drawn the tool exits with status 1 and an ``error:`` line giving the counts. An ``--output``
that is not a folder this process can write in is refused (exit 2) before the data is read; so is a PNG
that could not be written. ``--seed`` is a whole number >= 0.
"""

import argparse
import logging
import os
import sys
import warnings

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import siamese_detr.data  # noqa: E402,F401  (registers the built-in datasets)
from siamese_detr.data.image_folder import IMAGE_EXTENSIONS  # noqa: E402
from siamese_detr.data.proposals import ProposalStoreError  # noqa: E402
from siamese_detr.data.views import box_iou  # noqa: E402
from siamese_detr.demo.plots import label_box  # noqa: E402
from siamese_detr.engine import apply_checked_overrides  # noqa: E402
from siamese_detr.engine.config_checks import config_value  # noqa: E402
from siamese_detr.utils.cli_types import non_negative_seed  # noqa: E402
from siamese_detr.utils.output_paths import check_output_folder, write_image  # noqa: E402
from siamese_detr.utils.user_errors import USER_ERROR_EXIT, UserError, user_message  # noqa: E402

DEFAULT_CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "configs", "common", "data", "pretrain_builtin.py"
)
GAP = 8
logger = logging.getLogger("visualize_views")


def palette(n: int) -> list:
    """``n`` distinct, saturated BGR colours (evenly spaced hues)."""
    hsv = np.stack([np.arange(n) * 180 // max(n, 1), np.full(n, 230), np.full(n, 255)], axis=1)
    bgr = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2BGR)[0]
    return [tuple(int(c) for c in col) for col in bgr]


def _to_bgr(chw, image_format: str) -> np.ndarray:
    """A ``[3, H, W]`` uint8 tensor of ``image_format`` (RGB or BGR) as a contiguous ``[H, W, 3]`` BGR array."""
    image = np.ascontiguousarray(chw.numpy().transpose(1, 2, 0))
    return np.ascontiguousarray(image[:, :, ::-1]) if image_format == "RGB" else image


def draw_view(image: np.ndarray, region_boxes, query_boxes, colours, scale: float = 1.0) -> np.ndarray:
    """Region boxes (solid) and query boxes (thin) of one view, ``[H, W, 3]`` BGR -> annotated copy,
    enlarged by ``scale`` (boxes are xyxy pixels of ``image``)."""
    out = (
        cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        if scale != 1
        else image.copy()
    )
    scaled = [[float(c) * scale for c in box] for box in region_boxes]
    for k in reversed(range(len(region_boxes))):  # region 0 on top
        x0, y0, x1, y1 = (int(round(float(c) * scale)) for c in query_boxes[k])
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colours[k], 1, cv2.LINE_AA)
        label_box(out, scaled[k], "", colours[k], 3 if k == 0 else 2)
    # the regions' numbers on tags of their colours, readable on any background; region 0's tag placed
    # first, the others moved where they would cover a tag drawn before (jittered copies share a corner)
    taken: list = []
    for k in range(len(region_boxes)):
        label_box(out, scaled[k], str(k), colours[k], 3 if k == 0 else 2, 0.45, taken=taken, draw_box=False)
    return out


def render_sample(
    sample: dict, image_format: str = "BGR", crop_display: int = 64, min_view_height: int = 320
) -> np.ndarray:
    """One mapper output -> a BGR canvas (views side by side, crops of view 1 and view 2 underneath).
    Small views are enlarged (same factor for both) to at least ``min_view_height`` pixels."""
    views = sample["views"]
    n = len(views[0]["region_boxes"])
    colours = palette(n)
    scale = max(1.0, min_view_height / max(v["image"].shape[1] for v in views))
    panels = [
        draw_view(_to_bgr(v["image"], image_format), v["region_boxes"], v["query_boxes"], colours, scale)
        for v in views
    ]
    cell = crop_display + 2 * 3
    top_h = max(p.shape[0] for p in panels)
    width = max(sum(p.shape[1] for p in panels) + 3 * GAP, n * (cell + GAP) + GAP + 60)
    height = 24 + top_h + GAP + 2 * (cell + GAP) + GAP
    iou = float(box_iou(views[0]["view_box"].numpy(), views[1]["view_box"].numpy()))
    caption = (
        f"image {sample['image_id']}  IoU(view1, view2)={iou:.3f}  regions: 0 = overlap, "
        f"{sample['num_proposals']} from proposals, {n - 1 - sample['num_proposals']} jittered copies"
        f"  flip={sample.get('flip')}"
    )
    width = max(width, cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0][0] + 2 * GAP)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    cv2.putText(canvas, caption, (GAP, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    x = GAP
    for panel in panels:
        canvas[24 : 24 + panel.shape[0], x : x + panel.shape[1]] = panel
        x += panel.shape[1] + GAP
    for row, view in enumerate(views):
        y = 24 + top_h + GAP + row * (cell + GAP)
        cv2.putText(
            canvas, f"view{row + 1}", (GAP, y + cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1
        )
        for k in range(n):
            x = GAP + 60 + k * (cell + GAP)
            crop = cv2.resize(_to_bgr(view["crops"][k], image_format), (crop_display, crop_display))
            canvas[y : y + cell, x : x + cell] = colours[k]
            canvas[y + 3 : y + 3 + crop_display, x + 3 : x + 3 + crop_display] = crop
    return canvas


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config-file", help="a pretraining config defining dataloader.train (default: built-in)"
    )
    source.add_argument("--dataset", help="registered dataset name, with the built-in pretraining config")
    parser.add_argument("--num-samples", type=int, default=8, help="images to draw, one PNG each (default: 8)")
    parser.add_argument("--output", default="output/views", help="folder for the PNG files (default: output/views)")
    parser.add_argument("--seed", type=non_negative_seed, default=0,
                        help="picks the images and seeds the mapper (>= 0)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="key=value config overrides")
    return parser


def load_config(parser: argparse.ArgumentParser, args):
    """The pretraining config to draw from (``--config-file`` or the built-in one); a count below 1, a missing
    file, a folder, a file LazyConfig cannot load (not python or yaml) or a config without a
    ``SiameseViewMapper`` end the tool through ``parser.error``."""
    if args.num_samples < 1:
        parser.error(f"--num-samples must be at least 1, got {args.num_samples}")
    config_file = args.config_file or DEFAULT_CONFIG
    if os.path.isdir(config_file):
        parser.error(f"--config-file {config_file!r} is a folder, not a config file (e.g. "
                     "configs/demo/siamese_detr_pretrain_demo.py)")
    if not os.path.isfile(config_file):
        parser.error(f"--config-file {config_file!r} does not exist")
    try:
        cfg = LazyConfig.load(config_file)
    except ValueError as err:  # not .py / .yaml
        parser.error(f"{err} Give a pretraining config (e.g. configs/demo/siamese_detr_pretrain_demo.py)")
    mapper = config_value(cfg, "dataloader.train.mapper", None)  # None: no such section (configs/common/train.py)
    if mapper is None:
        parser.error(f"{config_file} is not a Siamese DETR pretraining config: it defines no dataloader.train.mapper "
                     "(e.g. configs/demo/siamese_detr_pretrain_demo.py)")
    if "SiameseViewMapper" not in str(mapper.get("_target_", "")):
        parser.error(f"{config_file} is not a Siamese DETR pretraining config: its dataloader.train.mapper is not "
                     "a SiameseViewMapper (e.g. configs/demo/siamese_detr_pretrain_demo.py)")
    return cfg


def build_mapper_and_dataset(cfg, args):
    """``(mapper, dataset dicts, image_format)`` of the config's training data with ``--dataset``, the overrides
    and ``--seed`` applied; the proposal store, if any, is opened (and checked against the dataset) here. A
    user's mistake raises one of ``ProposalStoreError``, ``KeyError``, ``ValueError``, ``TypeError``,
    ``FileNotFoundError``, ``AssertionError``."""
    if args.dataset:
        cfg.dataloader.train.dataset.names = args.dataset
    apply_checked_overrides(cfg, args.opts)
    cfg.dataloader.train.mapper.seed = args.seed
    mapper = instantiate(cfg.dataloader.train.mapper)
    image_format = cfg.dataloader.train.mapper.get("image_format", "BGR")
    dicts = instantiate(cfg.dataloader.train.dataset)
    if len(dicts) == 0:
        raise ValueError(f"dataset {cfg.dataloader.train.dataset.names} is empty")
    source = getattr(mapper, "proposal_source", None)
    if hasattr(source, "store"):
        source.store  # noqa: B018  (opening checks the store against the dataset)
    return mapper, dicts, image_format


def draw_samples(mapper, dicts, image_format: str, args):
    """``(written, tried)``: up to ``--num-samples`` PNGs in ``--output``, from the images of ``dicts`` in the
    order of ``--seed`` (those the mapper skips replaced by the next); a PNG not written raises
    ``UserOSError``."""
    os.makedirs(args.output, exist_ok=True)
    order = np.random.default_rng(args.seed).permutation(len(dicts))
    written = tried = 0
    for index in order:
        if written >= args.num_samples:
            break
        tried += 1
        sample = mapper(dicts[int(index)])
        if sample is None:  # unreadable, or no proposal in the views' overlap: the mapper counts and logs it
            continue
        name = str(sample["image_id"]).replace("/", "_").replace(os.sep, "_")
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_EXTENSIONS:  # a folder: dataset's id is the file's path: no "x.png.png"
            name = stem
        path = os.path.join(args.output, f"views_{written:03d}_{name}.png")
        write_image(path, render_sample(sample, image_format))
        logger.info("wrote %s", path)
        written += 1
    return written, tried


def main(argv=None) -> int:
    """The command line: load the config (:func:`load_config`), check ``--output``, build the mapper and the dataset
    (:func:`build_mapper_and_dataset`) and draw the samples (:func:`draw_samples`). Returns 0; 1 when no sample
    could be drawn; ``USER_ERROR_EXIT`` (2) after an ``error:`` line for a user's mistake."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logger(name="visualize_views")
    setup_logger(name="siamese_detr")
    cfg = load_config(parser, args)
    try:
        check_output_folder(args.output)  # before the dataset and the proposal store are read
        mapper, dicts, image_format = build_mapper_and_dataset(cfg, args)
    except (UserError, ProposalStoreError, KeyError, ValueError, TypeError, FileNotFoundError, AssertionError) as e:
        # a user's mistake (an --output that cannot be written, a store not made yet, an unknown dataset or key,
        # a value out of range): one line
        print(f"error: {user_message(e)}", file=sys.stderr)
        return USER_ERROR_EXIT
    try:
        written, tried = draw_samples(mapper, dicts, image_format, args)
    except UserError as err:  # a PNG that could not be written
        print(f"error: {user_message(err)}", file=sys.stderr)
        return USER_ERROR_EXIT
    skipped = (f"{mapper.num_unreadable} unreadable, {mapper.num_no_proposals} with no proposal in the views' "
               "overlap")
    logger.info("%d sample(s) in %s (skipped: %s)", written, args.output, skipped)
    if written:
        return 0
    print(f"error: no sample was drawn: each of the {tried} image(s) of {cfg.dataloader.train.dataset.names} was "
          f"skipped ({skipped}; see the warnings above): check the image files, and the proposal store or "
          "dataloader.train.mapper's settings", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
