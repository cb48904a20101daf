#!/usr/bin/env python
"""Draw a model's detections (and the ground truth when there is one) on images, one PNG per image.

    python tools/visualize_predictions.py --config-file configs/demo/detr_demo.py \\
        --checkpoint output/detr_demo/model_final.pth \\
        [--dataset NAME | --dataset coco:ANN.json:IMAGES | --image-dir DIR] \\
        [--num-images 8] [--score-threshold 0.5] [--output output/predictions] [key=value ...]

The model is the config's ``model`` (with the ``key=value`` overrides), loaded from ``--checkpoint`` (a
detectron2 ``.pth`` written by tools/lazyconfig_train_net.py) with the rules of ``--eval-only``: a ``.pkl``
(or a ``.pth`` holding python objects) is unpickled only with ``--trust-pickle``, and a checkpoint that leaves
parameters of the model as initialised (one of another architecture, a backbone-only ResNet, a pretraining
whose model differs from the config's) is refused (exit 2) naming the modules it lacks: give the config the
checkpoint was trained with, or add ``train.eval_allow_random=True`` to draw a partly random model on purpose.

Images come from ``--dataset`` (a registered name or a dataset spec, see README "Train on your own data"),
``--image-dir`` (every image of a folder, no ground truth) or, by default, the config's
``dataloader.test.dataset.names``; they are resized by the config's test mapper, as in evaluation. The
number of classes is taken from a ``coco:`` dataset's json, else from the checkpoint's class head (``K + 1``
rows with the softmax loss of Vanilla DETR, ``K`` with the focal loss of Conditional / Deformable DETR: the
config's criterion says which); the detections' class names from the dataset or the config's training
dataset (with ``--image-dir``, add ``dataloader.train.dataset.names=coco:TRAIN.json:IMAGES`` to name the
classes). A head with one foreground class (a pretraining's "object" vs "no object") is drawn as
class-agnostic "object" detections (the log says so). The ground truth is always labelled with the dataset's
own class names (its ``thing_classes``), whatever the model's classes.

Each PNG shows, side by side, the ground-truth boxes (when the dataset has annotations) and the detections
with ``score >= --score-threshold`` (class name and score; one colour per class), on the original image
(small images are enlarged for legibility). ``--num-images`` must be at least 1 and ``--score-threshold`` in
[0, 1]; when no image could be read (or none was drawn) the tool exits with status 1 and an ``error:`` line.
A ``--config-file`` that is not a model's config (a part under ``configs/common``, a file that is not python
or yaml), a dataset that is not registered or holds no image, and an ``--output`` that is not a folder this
process can write in are refused (exit 2) before the model is loaded; so is a PNG that could not be written.
"""
import argparse
import logging
import os
import re
import sys
import warnings

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import siamese_detr.data  # noqa: E402,F401  (registers the built-in datasets)
from siamese_detr.data.dataset_checks import check_datasets_on_disk  # noqa: E402
from siamese_detr.data.image_io import NoReadableImagesError, read_image_or_none  # noqa: E402
from siamese_detr.demo.plots import label_box  # noqa: E402
from siamese_detr.engine import apply_checked_overrides  # noqa: E402
from siamese_detr.engine.checkpointing import CheckpointLoadError, SafeDetectionCheckpointer  # noqa: E402
from siamese_detr.engine.load_refusals import architecture_mismatch, refuse_partly_random_model  # noqa: E402
from siamese_detr.engine.config_sections import check_config_sections  # noqa: E402
from siamese_detr.engine.load_summary import module_prefixes  # noqa: E402
from siamese_detr.utils.cli_types import at_least_one, probability  # noqa: E402
from siamese_detr.utils.output_paths import check_output_folder, write_image  # noqa: E402
from siamese_detr.utils.user_errors import USER_ERROR_EXIT, UserError, user_message  # noqa: E402

logger = logging.getLogger("visualize_predictions")
GAP = 8
CAPTION = 24
GT_COLOUR = (255, 0, 255)  # BGR magenta


def palette(n: int) -> list:
    """``n`` distinct, saturated BGR colours (evenly spaced hues)."""
    hsv = np.stack([np.arange(n) * 180 // max(n, 1), np.full(n, 230), np.full(n, 255)], axis=1)
    bgr = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2BGR)[0]
    return [tuple(int(c) for c in col) for col in bgr]


def draw_boxes(image: np.ndarray, boxes, labels, colours, scale: float) -> np.ndarray:
    """Boxes ``[N, 4]`` xyxy absolute pixels of ``image`` (HxWx3 BGR uint8) with a text label each, drawn on
    a copy enlarged by ``scale`` (so that the labels keep their size)."""
    out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) if scale != 1 else image.copy()
    scaled = [[float(c) * scale for c in box] for box in boxes]
    for box, colour in zip(scaled, colours):  # every box first, so that no outline crosses a tag
        label_box(out, box, "", colour, 2)
    taken: list = []  # tags drawn so far: a tag that would cover one moves (see label_box)
    for box, label, colour in zip(scaled, labels, colours):
        # the label on a tag of the box's colour, above the box (inside it at the image's top edge)
        label_box(out, box, label, colour, 2, 0.45, taken=taken, draw_box=False)
    return out


def render(image: np.ndarray, title: str, gt, detections, class_names, min_height: int = 320,
           gt_class_names=()) -> np.ndarray:
    """Canvas: caption, then [ground truth |] detections.

    Args:
        image: HxWx3 BGR uint8, original size.
        gt: None (no annotations) or (boxes [G, 4] xyxy absolute, classes [G]).
        detections: (boxes [D, 4] xyxy absolute, scores [D], classes [D]) already thresholded.
        class_names: the model's class names (the detections' labels).
        gt_class_names: the dataset's class names (the ground truth's labels; ``class i`` past them).
    """
    colours = palette(max(len(class_names), 1))

    def name(c, names=class_names):
        return names[c] if 0 <= c < len(names) else f"class {c}"

    scale = max(1.0, min_height / image.shape[0])
    boxes, scores, classes = detections
    panels = [("detections", draw_boxes(image, boxes, [f"{name(c)} {s:.2f}" for c, s in zip(classes, scores)],
                                        [colours[c % len(colours)] for c in classes], scale))]
    if gt is not None:
        panels.insert(0, ("ground truth", draw_boxes(image, gt[0], [name(c, gt_class_names) for c in gt[1]],
                                                     [GT_COLOUR] * len(gt[0]), scale)))
    height = CAPTION + 18 + max(p.shape[0] for _, p in panels) + GAP
    width = max(GAP + sum(p.shape[1] + GAP for _, p in panels), 8 * len(title) + 2 * GAP)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    cv2.putText(canvas, title, (GAP, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    x = GAP
    for label, panel in panels:
        cv2.putText(canvas, label, (x, CAPTION + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        canvas[CAPTION + 18:CAPTION + 18 + panel.shape[0], x:x + panel.shape[1]] = panel
        x += panel.shape[1] + GAP
    return canvas


def ground_truth(dataset_dict: dict):
    """(boxes [G, 4] xyxy absolute, contiguous class ids [G]) of the non-crowd annotations, or None when the
    dataset has no annotations (detectron2 dicts already hold contiguous ``category_id``)."""
    if "annotations" not in dataset_dict:
        return None
    annos = [a for a in dataset_dict["annotations"] if not a.get("iscrowd", 0)]
    boxes = np.array([BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
                     dtype=np.float32).reshape(-1, 4)
    return boxes, [int(a["category_id"]) for a in annos]


def class_names_for(cfg, dataset_names, num_classes: int) -> list:
    """Class names of the first dataset (test, then train) whose metadata has ``num_classes`` of them; else
    ``["object"]`` for one class, ``class 0`` ... ``class K-1`` for more (contiguous indices: the training json's
    categories sorted by id)."""
    train = cfg.dataloader.train.dataset.get("names", None) if "train" in cfg.dataloader else None
    candidates = list(dataset_names)
    for names in (train,):
        if isinstance(names, str):
            candidates.append(names)
        elif names is not None and all(isinstance(n, str) for n in names):
            candidates.extend(names)
    for name in candidates:
        if name in DatasetCatalog.list():
            classes = MetadataCatalog.get(name).get("thing_classes", None)
            if classes is not None and len(classes) == num_classes:
                return list(classes)
    return ["object"] if num_classes == 1 else [f"class {i}" for i in range(num_classes)]


def dataset_class_names(name: str) -> list:
    """A registered dataset's own class names (its metadata's ``thing_classes``; ``[]`` when it has none):
    the ground truth's contiguous ``category_id`` index them, whatever classes the model has."""
    return list(MetadataCatalog.get(name).get("thing_classes", None) or [])


def partly_random_error(checkpointer: SafeDetectionCheckpointer, path: str, config_file: str) -> str:
    """The ``error:`` line for a load that left parameters of the model as initialised (the ones
    :func:`~siamese_detr.engine.load_refusals.refuse_partly_random_model` refuses for ``--eval-only``)."""
    missing = checkpointer.parameters_not_loaded()
    total = sum(1 for _ in checkpointer.model.parameters())
    return (f"error: {len(missing)} of the model's {total} parameters are not in {path} (by name and shape; "
            f"modules: {module_prefixes(missing)}; e.g. {missing[:3]}), so the detections would be those of a "
            f"partly random model. The checkpoint was not trained with {config_file}: give the --config-file "
            "(and key=value overrides) it was trained with (a backbone-only or pretraining checkpoint that lacks "
            "this model's modules must be finetuned first), or add train.eval_allow_random=True to draw it anyway")


def checkpoint_class_rows(path: str):
    """Rows of a checkpoint's DETR class head (the last one when there is one per decoder layer), or None."""
    try:  # tensors only: a file that needs unpickling is left to the checkpointer's own rules
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    model = checkpoint.get("model", {}) if isinstance(checkpoint, dict) else {}
    # one head ("class_embed.weight") or one per decoder layer ("class_embed.<i>.weight")
    heads = [v for k, v in model.items() if re.fullmatch(r"class_embed(\.\d+)*\.weight", str(k))]
    return int(heads[-1].shape[0]) if heads else None


def no_object_logits(cfg) -> int:
    """Class-head rows beyond the ``K`` classes for the config's criterion: 1 (softmax CE, the last row is
    "no object") or 0 (sigmoid focal loss)."""
    criterion = instantiate(cfg.model.criterion)
    return int(criterion.num_class_logits) - int(criterion.num_classes)


def checkpoint_num_classes(path: str, extra_rows: int):
    """Foreground classes ``K`` of a checkpoint whose class head has ``K + extra_rows`` rows, or None."""
    rows = checkpoint_class_rows(path)
    return None if rows is None else rows - extra_rows


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and each option's default where it has one (not "(default: None)" for
    a required option, nor for one whose help says what leaving it out does)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--config-file", required=True, help="the LazyConfig the model was trained with")
    p.add_argument("--checkpoint", required=True, help="model .pth (e.g. OUTPUT/model_final.pth)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="registered dataset name or spec (coco:ANN.json:IMAGES, folder:DIR); "
                        "default: the config's dataloader.test.dataset.names")
    source.add_argument("--image-dir", help="a folder of images (recursive), drawn without ground truth")
    p.add_argument("--num-images", type=at_least_one("the number of images to draw"), default=8,
                   help="the first N images of the dataset (N >= 1)")
    p.add_argument("--score-threshold", type=probability("detection scores are probabilities"), default=0.5,
                   help="draw detections with score >= this (in [0, 1])")
    p.add_argument("--output", default="output/predictions",
                   help="folder for the PNG files (default: output/predictions)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a .pkl checkpoint (or a .pth holding python objects): unpickling runs code from it")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="key=value config overrides")
    return p


class _Refused(Exception):
    """A mistake in the arguments; its message is the whole ``error: ...`` line, and the tool exits with 2."""


def check_input_files(args) -> None:
    """``--config-file`` and ``--checkpoint`` are files, ``--image-dir`` a folder; else ``_Refused``."""
    for path, what in ((args.config_file, "--config-file"), (args.checkpoint, "--checkpoint")):
        if os.path.isdir(path):
            raise _Refused(f"error: {what} {path!r} is a folder, not a file: give the file itself"
                           + (" (e.g. OUTPUT/model_final.pth)" if what == "--checkpoint" else ""))
        if not os.path.isfile(path):
            raise _Refused(f"error: {what} {path!r} does not exist")
    if args.image_dir and not os.path.isdir(args.image_dir):
        raise _Refused(f"error: --image-dir {args.image_dir!r} is not a folder")


def check_dataset_names(names) -> None:
    """Each of ``names`` is registered (with a "did you mean" for a misspelled name, as the other tools) and its
    files are on disk; else ``_Refused``."""
    try:
        check_datasets_on_disk(names)
    except KeyError as err:
        raise _Refused(f"error: {user_message(err)} A dataset can also be given by path: "
                       "coco:ANNOTATIONS.json:IMAGE_ROOT or folder:IMAGE_DIR") from None
    except (FileNotFoundError, ValueError) as err:
        raise _Refused(f"error: {user_message(err)}") from None


def load_config(args):
    """``(cfg, names)``: the config with the image source and the ``key=value`` overrides applied, and the
    dataset names to draw from (each registered). Raises ``_Refused`` for a missing file, a file that is not a
    model's config or an unknown dataset."""
    check_input_files(args)
    try:
        cfg = LazyConfig.load(args.config_file)
    except ValueError as err:  # a file that is not .py / .yaml
        raise _Refused(f"error: {err} Give the config the model was trained with (e.g. configs/demo/detr_demo.py)"
                       ) from None
    try:
        check_config_sections(cfg, args.config_file, eval_only=True)  # e.g. a part under configs/common
    except ValueError as err:
        raise _Refused(f"error: {err}") from None
    dataset = f"folder:{args.image_dir}" if args.image_dir else args.dataset
    if dataset:
        cfg.dataloader.test.dataset.names = dataset
    try:
        cfg = apply_checked_overrides(cfg, args.opts)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as err:
        raise _Refused(f"error: {err.args[0] if err.args else err}") from None
    names = cfg.dataloader.test.dataset.names
    names = [names] if isinstance(names, str) else list(names)
    check_dataset_names(names)
    return cfg, names


def dataset_records(names) -> list:
    """``[(dataset name, dataset dict)]`` of every image of ``names``; a dataset that cannot be loaded as
    given (e.g. ``--image-dir`` of a folder without images) is ``_Refused``."""
    try:
        return [(name, d) for name in names for d in DatasetCatalog.get(name)]
    except UserError as err:
        raise _Refused(f"error: {user_message(err)}") from None


def classes_from_checkpoint(cfg, checkpoint: str, names) -> "int | None":
    """Set ``cfg.model.num_classes`` to the checkpoint's class head's ``K`` where it differs from the config's,
    and return that ``K`` (None when the config's count stands). A head without a foreground class (a
    pretraining's) and a head that disagrees with a ``coco:`` dataset's json are ``_Refused``."""
    model_cfg_classes = cfg.model.get("num_classes", None)
    ckpt_classes = None
    if model_cfg_classes is not None and "criterion" in cfg.model:
        ckpt_classes = checkpoint_num_classes(checkpoint, no_object_logits(cfg))
    if ckpt_classes is not None and ckpt_classes < 1:
        raise _Refused(f"error: the class head of {checkpoint} has {ckpt_classes + no_object_logits(cfg)} row(s), "
                       f"no foreground class for this config's class loss: a pretraining checkpoint? Draw a "
                       "finetuned detector (its model_final.pth)")
    if model_cfg_classes is None or ckpt_classes is None or ckpt_classes == model_cfg_classes:
        return None
    if any(str(n).startswith("coco:") for n in names):
        specs = ", ".join(n for n in names if str(n).startswith("coco:"))
        raise _Refused(f"error: the checkpoint {checkpoint} has {ckpt_classes} classes, the dataset {specs} "
                       f"has {model_cfg_classes}: draw the checkpoint on a dataset with the categories it was "
                       "trained on, or give the checkpoint finetuned on this one")
    cfg.model.num_classes = ckpt_classes
    return ckpt_classes


def load_model(cfg, args, from_head):
    """The config's model in eval mode, loaded from ``--checkpoint`` by the rules of ``--eval-only`` (a
    checkpoint that leaves parameters random is ``_Refused`` unless ``train.eval_allow_random=True``)."""
    device = str(cfg.train.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    model = instantiate(cfg.model).to(device).eval()
    checkpointer = SafeDetectionCheckpointer(model, trust_pickle=args.trust_pickle)
    try:
        checkpointer.load(args.checkpoint)
    except CheckpointLoadError as err:
        raise _Refused(f"error: {err}") from None
    try:  # never draw a partly random model's boxes as the checkpoint's: the rule of --eval-only
        refuse_partly_random_model(checkpointer, args.checkpoint)
    except CheckpointLoadError:
        if not cfg.train.get("eval_allow_random", False):  # --eval-only's escape hatch, the same key
            mismatch = architecture_mismatch(checkpointer, args.checkpoint)  # another variant or norm placement
            if mismatch:
                raise _Refused(f"error: {mismatch.replace('finetune it with', 'draw it with')}; or add "
                               "train.eval_allow_random=True to draw it anyway") from None
            raise _Refused(partly_random_error(checkpointer, args.checkpoint, args.config_file)) from None
        logger.warning("train.eval_allow_random=True: %d parameters of the model are not in %s and are drawn "
                       "as randomly initialised", len(checkpointer.parameters_not_loaded()), args.checkpoint)
    if from_head is not None:  # logged once the load is known to be complete
        logger.info("model.num_classes = %d (from the checkpoint's class head)", from_head)
    return model


def draw_images(cfg, model, names, every, args) -> int:
    """One PNG per image of ``names`` (the first ``--num-images`` of ``every``, their ``(dataset, dataset dict)``
    pairs) in ``--output``; returns the exit status (1 with an ``error:`` line when no image was drawn). A PNG
    that cannot be written raises ``UserOSError``."""
    mapper = instantiate(cfg.dataloader.test.mapper)
    dicts = every[: args.num_images]
    class_names = class_names_for(cfg, names, getattr(model, "num_classes", 1))
    if class_names == ["object"]:
        logger.info("the detections are class-agnostic: the checkpoint's class head has one foreground class "
                    "(object vs no object, as a pretraining's), drawn as 'object'")
    if len(class_names) > 1 and class_names[0] == "class 0":
        logger.info("class names unknown: detections are labelled 'class i' (i = 0, 1, ...: the training "
                    "json's categories sorted by id); add dataloader.train.dataset.names=coco:TRAIN.json:IMAGES "
                    "to name them")

    os.makedirs(args.output, exist_ok=True)
    written = unreadable = 0
    for index, (source, record) in enumerate(dicts):
        try:
            image = read_image_or_none(record["file_name"], "BGR", "visualize_predictions")
        except NoReadableImagesError:  # the reader's limit of unreadable images in a row
            image = None
        if image is None:
            unreadable += 1
            continue
        record = dict(record, height=image.shape[0], width=image.shape[1])
        inputs = mapper(record)
        if inputs is None:
            continue
        with torch.no_grad():
            instances = model([inputs])[0]["instances"].to("cpu")
        keep = instances.scores >= args.score_threshold
        detections = (instances.pred_boxes.tensor[keep].numpy(), instances.scores[keep].tolist(),
                      instances.pred_classes[keep].tolist())
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        image_id = str(record.get("image_id", stem))
        shown = (f"image {image_id}" if os.path.splitext(os.path.basename(image_id))[0] == stem
                 else f"image id {image_id} (file {os.path.basename(record['file_name'])})")
        title = f"{shown}: {len(detections[1])} detections with score >= {args.score_threshold:g}"
        canvas = render(image, title, ground_truth(record), detections, class_names,
                        gt_class_names=dataset_class_names(source))
        path = os.path.join(args.output, f"{index:03d}_{stem}.png")
        write_image(path, canvas)
        logger.info("wrote %s (%s)", path, title)
        written += 1
    more = (f" (the first {len(dicts)} of {len(every)}; --num-images {len(every)} draws all)"
            if len(every) > len(dicts) else "")
    logger.info("%d image(s) drawn in %s%s", written, args.output, more)
    if written:
        return 0
    if dicts and unreadable == len(dicts):
        print(f"error: no image could be read: the {len(dicts)} image(s) tried from {', '.join(names)} are all "
              "unreadable (see the warnings above); check the files and the paths", file=sys.stderr)
    else:
        print(f"error: no image was drawn from {', '.join(names)} ({len(dicts)} tried, {unreadable} unreadable)",
              file=sys.stderr)
    return 1


def main(argv=None) -> int:
    """The command line: load the config (:func:`load_config`), check ``--output``, list the images, take the class
    count from the checkpoint (:func:`classes_from_checkpoint`), load the model (:func:`load_model`) and draw
    (:func:`draw_images`). Returns the exit status of :func:`draw_images`, or ``USER_ERROR_EXIT`` (2) after an
    ``error:`` line for a refused argument, file, dataset or PNG."""
    args = build_parser().parse_args(argv)
    setup_logger(name="visualize_predictions")
    try:
        cfg, names = load_config(args)
        check_output_folder(args.output)  # before the model is loaded
        every = dataset_records(names)
        from_head = classes_from_checkpoint(cfg, args.checkpoint, names)
        model = load_model(cfg, args, from_head)
        return draw_images(cfg, model, names, every, args)
    except _Refused as refusal:
        print(refusal, file=sys.stderr)
    except UserError as err:  # an --output or a PNG that cannot be written
        print(f"error: {user_message(err)}", file=sys.stderr)
    return USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
