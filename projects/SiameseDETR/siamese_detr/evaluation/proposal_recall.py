"""Class-agnostic proposal recall and average recall (AR@K), after Hosang et al. (TPAMI 2015).

For an IoU threshold t and a budget K, recall(t, K) is the fraction of ground-truth boxes (crowd boxes
excluded) whose maximum IoU with the first K proposals of their image is >= t. AR@K averages recall(t, K)
over t in {0.50, 0.55, ..., 0.95} (the COCO thresholds). Every gt box may be covered by the same proposal:
this is the "max IoU" definition of Hosang et al.; Detectron2's ``_evaluate_box_proposals`` instead assigns
proposals one-to-one greedily, which gives values lower than or equal to these.
"""

from __future__ import annotations

from typing import Dict, Iterable, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = [
    "IOU_THRESHOLDS",
    "max_iou_per_gt",
    "recall_curve",
    "evaluate_proposal_recall",
    "format_recall_table",
]

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)


def max_iou_per_gt(proposals: np.ndarray, gt_boxes: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """Best IoU of each gt box with the top-k proposals, for every k.

    Args:
        proposals: [P, 4] xyxy absolute, best first; gt_boxes: [G, 4] xyxy absolute, in the same image's
            pixels (the original image for stores); ks: budgets.
    Returns:
        float64 [len(ks), G], row i = max IoU over the first ks[i] proposals; 0 where there are no proposals
        (or ks[i] <= 0).
    """
    out = np.zeros((len(ks), len(gt_boxes)), np.float64)
    if len(gt_boxes) == 0 or len(proposals) == 0:
        return out
    iou = box_iou(
        torch.as_tensor(np.asarray(gt_boxes, np.float64)), torch.as_tensor(np.asarray(proposals, np.float64))
    ).numpy()  # [G, P]
    # running maximum over the proposal axis gives every budget at once
    running = np.maximum.accumulate(iou, axis=1)
    for i, k in enumerate(ks):
        if k > 0:
            out[i] = running[:, min(k, iou.shape[1]) - 1]
    return out


def recall_curve(best_iou: np.ndarray, thresholds: Iterable[float] = IOU_THRESHOLDS) -> np.ndarray:
    """recall[t] = mean(best_iou >= t) over gt boxes. best_iou: [G]; returns [T] (zeros if G = 0)."""
    best_iou = np.asarray(best_iou, np.float64)
    thresholds = np.asarray(list(thresholds), np.float64)
    if best_iou.size == 0:
        return np.zeros(len(thresholds))
    # a tiny epsilon keeps IoUs like 0.7 computed as 0.69999999 on the right side of the threshold
    return (best_iou[None, :] >= thresholds[:, None] - 1e-9).mean(axis=1)


def _gt_boxes(dataset_dict: dict) -> np.ndarray:
    from detectron2.structures import BoxMode

    boxes = [
        BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)
        for a in dataset_dict.get("annotations", [])
        if not a.get("iscrowd", 0)
    ]
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def evaluate_proposal_recall(
    store, dataset_dicts, ks: Sequence[int] = (10, 100, 1000), thresholds: Sequence[float] = IOU_THRESHOLDS
) -> Dict[str, float]:
    """AR@K and recall@0.5 of a proposal store (or any ``get(image_id) -> (boxes, scores)``) on a dataset.

    Args:
        store: object with ``get(image_id) -> (boxes [P, 4] xyxy absolute original-image pixels best first,
            scores [P])`` and ``__contains__``; images missing from it count as no proposals.
        dataset_dicts: Detectron2 dicts with "image_id" and "annotations" (bbox + bbox_mode, default
            XYWH_ABS, in original-image pixels; iscrowd), converted to xyxy.
    Returns:
        {"AR@K", "R@0.5@K", "R@0.75@K" for each K, "num_images", "num_gt", "num_missing", "mean_proposals"}.
    """
    ks = [int(k) for k in ks]
    best = [[] for _ in ks]
    num_missing, num_props, num_images = 0, 0, 0
    for d in dataset_dicts:
        num_images += 1
        gt = _gt_boxes(d)
        if d["image_id"] in store:
            proposals, _ = store.get(d["image_id"])
        else:
            num_missing += 1
            proposals = np.zeros((0, 4), np.float32)
        num_props += len(proposals)
        per_k = max_iou_per_gt(proposals, gt, ks)
        for i in range(len(ks)):
            best[i].append(per_k[i])
    result: Dict[str, float] = {}
    for i, k in enumerate(ks):
        ious = np.concatenate(best[i]) if best[i] else np.zeros(0)
        curve = recall_curve(ious, thresholds)
        result[f"AR@{k}"] = float(curve.mean())
        result[f"R@0.5@{k}"] = float(recall_curve(ious, [0.5])[0])
        result[f"R@0.75@{k}"] = float(recall_curve(ious, [0.75])[0])
    result["num_images"] = num_images
    result["num_gt"] = int(sum(len(x) for x in best[0])) if ks else 0
    result["num_missing"] = num_missing
    result["mean_proposals"] = num_props / max(num_images, 1)
    return result


def format_recall_table(rows: Dict[str, Dict[str, float]], ks: Sequence[int] = (10, 100, 1000)) -> str:
    """A fixed-width table: one row per name (e.g. method), columns AR@K and R@0.5@K (in %)."""
    cols = [f"AR@{k}" for k in ks] + [f"R@0.5@{k}" for k in ks]
    name_w = max([len("proposals")] + [len(n) for n in rows])
    lines = [f"{'proposals':<{name_w}}  " + "  ".join(f"{c:>9}" for c in cols) + f"  {'boxes/img':>9}"]
    for name, r in rows.items():
        vals = "  ".join(f"{100 * r[c]:9.1f}" for c in cols)
        lines.append(f"{name:<{name_w}}  {vals}  {r.get('mean_proposals', 0):9.1f}")
    return "\n".join(lines)
