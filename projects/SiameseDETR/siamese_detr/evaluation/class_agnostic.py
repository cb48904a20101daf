"""Class-agnostic detection metrics of a pretrained model (Siamese DETR appendix B "Downstream initialization",
Table 5 of the paper text = supplementary §B, Table 1: AR@1 / AR@10 / AR@100 of a pretrained Vanilla DETR
whose backbone, encoder and decoder stay frozen while only the box and class heads are finetuned on PASCAL VOC).

Every prediction counts as "an object" and every non-crowd ground-truth box as a target, whatever their
classes: pycocotools' ``COCOeval`` with ``params.useCats = 0`` (one pooled category), IoU thresholds
.50:.05:.95 and ``params.maxDets = max_dets``. COCO definitions:

* AR@k: recall over all ground-truth boxes of the evaluated images when each image keeps its k
  highest-scoring predictions, averaged over the 10 IoU thresholds (area range "all");
* AP: 101-point interpolated precision averaged over recall and the 10 IoU thresholds, with
  ``max(max_dets)`` predictions per image; AP50 / AP75 at a single threshold.

Boxes: predictions are ``Instances.pred_boxes`` in xyxy ABSOLUTE pixels of the original image (as
Detectron2 models return them after ``detector_postprocess``); ground truth is the dataset's COCO json
(``MetadataCatalog.get(name).json_file``) or, when there is none, the dataset dicts converted in memory.
"""

import contextlib
import copy
import io
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["ClassAgnosticEvaluator", "class_agnostic_metrics", "load_coco_ground_truth"]

logger = logging.getLogger(__name__)


def load_coco_ground_truth(dataset_name: str) -> COCO:
    """COCO api of a registered dataset: its ``json_file`` if the metadata has one, otherwise the
    Detectron2 dataset dicts converted with ``convert_to_coco_dict`` (kept in memory, no file written)."""
    metadata = MetadataCatalog.get(dataset_name)
    json_file = metadata.get("json_file", None)
    with contextlib.redirect_stdout(io.StringIO()):
        if json_file:
            return COCO(PathManager.get_local_path(json_file))
        coco = COCO()
        coco.dataset = convert_to_coco_dict(dataset_name)
        coco.createIndex()
    return coco


def _empty_results(coco_gt: COCO) -> COCO:
    """A detection COCO api with no detections (``COCO.loadRes`` refuses an empty list)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": copy.deepcopy(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
            "annotations": [],
        }
        coco_dt.createIndex()
    return coco_dt


def _with_categories(coco_gt: COCO) -> COCO:
    """``coco_gt``, or for a json without ``categories`` (which pycocotools reads in ``getCatIds``, ``loadRes``
    and ``COCOeval``) a shallow copy with an empty list: the same images and index, the caller's left as is."""
    if "categories" in coco_gt.dataset:
        return coco_gt
    coco_gt = copy.copy(coco_gt)
    coco_gt.dataset = dict(coco_gt.dataset, categories=[])
    return coco_gt


def pooled_category_ids(coco_gt: COCO) -> List[int]:
    """Every category id of the ground truth: the listed ``categories`` and those its annotations use.

    With ``useCats = 0`` pycocotools pools only the annotations whose ``category_id`` is in
    ``params.catIds`` (by default the listed categories), so an annotation of an unlisted category, or every
    annotation of a json without ``categories``, would silently stop counting as a target. ``[1]`` when there
    is neither (no annotation to pool).
    """
    used = {a["category_id"] for a in coco_gt.dataset.get("annotations", []) if "category_id" in a}
    return sorted(set(coco_gt.getCatIds()) | used) or [1]


def class_agnostic_metrics(
    coco_gt: COCO, detections: List[Dict], img_ids: Sequence[int], max_dets: Sequence[int] = (1, 10, 100)
) -> "OrderedDict[str, float]":
    """Class-agnostic AR@k and AP (percent) of COCO-json detections.

    Args:
        coco_gt: ground truth.
        detections: COCO result dicts ``{"image_id", "bbox": [x, y, w, h] absolute pixels of the original
            image (the frame of ``coco_gt``), "score", "category_id"}``; ``category_id`` is ignored.
        img_ids: the images evaluated (images among them without detections count as misses).
        max_dets: detections kept per image for each AR@k; AP uses ``max(max_dets)``.

    Returns:
        ``{"AR@k" for k in max_dets, "AP", "AP50", "AP75"}``; NaN where the images hold no ground truth.
    """
    max_dets = sorted(int(k) for k in max_dets)
    if not max_dets or max_dets[0] < 1:
        raise ValueError(f"max_dets must be positive integers, got {max_dets}")
    unknown = ({d["image_id"] for d in detections} | set(img_ids)) - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(
            f"{len(unknown)} evaluated image ids are not in the ground truth (e.g. {sorted(unknown)[:3]}): "
            f"the evaluator's dataset_name must be the dataset of the test loader"
        )
    coco_gt = _with_categories(coco_gt)
    cat_ids = pooled_category_ids(coco_gt)
    # any id of the pool: useCats = 0 pools all of them
    detections = [dict(d, category_id=cat_ids[0]) for d in detections]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(detections) if detections else _empty_results(coco_gt)
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.params.useCats = 0
        coco_eval.params.catIds = cat_ids
        coco_eval.params.maxDets = max_dets
        coco_eval.params.imgIds = sorted(set(img_ids))
        coco_eval.evaluate()
        coco_eval.accumulate()
    params = coco_eval.params
    area_all = params.areaRngLbl.index("all")
    recall = coco_eval.eval["recall"]  # [T, K=1, A, M]
    precision = coco_eval.eval["precision"]  # [T, R, K=1, A, M]

    def mean_valid(values: np.ndarray) -> float:
        values = values[values > -1]
        return float(values.mean() * 100) if values.size else float("nan")

    results = OrderedDict()
    for m, k in enumerate(max_dets):
        results[f"AR@{k}"] = mean_valid(recall[:, :, area_all, m])
    results["AP"] = mean_valid(precision[:, :, :, area_all, -1])
    for name, thr in (("AP50", 0.5), ("AP75", 0.75)):
        t = int(np.argmin(np.abs(params.iouThrs - thr)))
        results[name] = mean_valid(precision[t, :, :, area_all, -1])
    return results


def unique_per_image(predictions: List[Dict]) -> List[Dict]:
    """``predictions`` (``{"image_id", "detections"}`` per processed image) with one entry per image id, the
    first one, and a warning when an image came more than once.

    A sampler that repeats images (e.g. ``DistributedSampler`` padding its last batch) would otherwise enter
    an image's detections twice: the copies are false positives in AP and take places in its top-k.
    """
    seen, unique = set(), []
    for prediction in predictions:
        if prediction["image_id"] not in seen:
            seen.add(prediction["image_id"])
            unique.append(prediction)
    if len(unique) < len(predictions):
        logger.warning(
            "ClassAgnosticEvaluator: %d of %d processed images were repeats of an image id already seen; each "
            "image is evaluated once (its first predictions)", len(predictions) - len(unique), len(predictions),
        )
    return unique


class ClassAgnosticEvaluator(DatasetEvaluator):
    """Detectron2 evaluator of class-agnostic AR@k / AP (see the module docstring).

    Use it as ``dataloader.evaluator`` of a pretraining config with a plain detection test loader; the
    model's eval-mode outputs ``[{"instances": Instances}]`` need ``pred_boxes`` (xyxy absolute, original
    image) and ``scores``; ``pred_classes`` is ignored. Predictions are gathered from all processes
    (``comm.gather``) and evaluated on the main process; other processes return ``{}``. An image processed
    more than once (e.g. by a sampler that pads the shards) is evaluated once, with its first predictions.

    Args:
        dataset_name: registered COCO-format dataset (the test loader's), for the ground truth.
        max_dets: the k of AR@k (``COCOeval.params.maxDets``); AP uses the largest.
        output_dir: if given, the main process writes ``class_agnostic_predictions.json`` (COCO results)
            and ``class_agnostic_results.json`` (a NaN metric written as ``null``) there.
        distributed: gather across processes (True) or evaluate each process's own predictions.

    Returns of :meth:`evaluate`: ``{"class_agnostic": {"AR@1", "AR@10", "AR@100", "AP", "AP50", "AP75"}}``
    in percent.
    """

    def __init__(
        self,
        dataset_name: str,
        max_dets: Sequence[int] = (1, 10, 100),
        output_dir: Optional[str] = None,
        distributed: bool = True,
    ):
        self._dataset_name = dataset_name
        self._max_dets = tuple(int(k) for k in max_dets)
        self._output_dir = output_dir
        self._distributed = distributed
        self._coco_gt = None  # loaded lazily, on the main process only
        self.reset()

    def reset(self):
        self._predictions: List[Dict] = []  # per image: {"image_id", "detections": [...]}

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            if "instances" not in output:
                raise KeyError(
                    f"image {input.get('image_id')!r}: the model output has no 'instances' "
                    f"(keys {sorted(output)}); ClassAgnosticEvaluator evaluates detections"
                )
            instances = output["instances"].to("cpu")
            if not instances.has("pred_classes"):  # classes are ignored; instances_to_coco_json needs them
                instances.pred_classes = torch.zeros(len(instances), dtype=torch.int64)
            image_id = input["image_id"]
            self._predictions.append(
                {"image_id": image_id, "detections": instances_to_coco_json(instances, image_id)}
            )

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if len(predictions) == 0:
            logger.warning("ClassAgnosticEvaluator did not receive any image.")
            return {}
        if self._coco_gt is None:
            self._coco_gt = load_coco_ground_truth(self._dataset_name)
        predictions = unique_per_image(predictions)
        detections = [d for p in predictions for d in p["detections"]]
        img_ids = [p["image_id"] for p in predictions]
        results = class_agnostic_metrics(self._coco_gt, detections, img_ids, self._max_dets)
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            # NaN (no ground truth among the images) is not JSON: written as null
            finite = {k: (None if np.isnan(v) else v) for k, v in results.items()}
            for name, content in (("predictions", detections), ("results", finite)):
                path = os.path.join(self._output_dir, f"class_agnostic_{name}.json")
                with PathManager.open(path, "w") as f:
                    json.dump(content, f, allow_nan=False)
        logger.info(
            "Class-agnostic evaluation on %s (%d images, %d detections): %s",
            self._dataset_name, len(img_ids), len(detections),
            ", ".join(f"{k} {v:.2f}" for k, v in results.items()),
        )
        return {"class_agnostic": results}
