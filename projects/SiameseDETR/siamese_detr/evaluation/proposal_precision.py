"""Class-agnostic average precision of the top-K proposals, scored as detections: how good a proposal
method's boxes are as pseudo ground truth (DETReg trains its queries to detect an image's top-K proposals).

AR@K (``proposal_recall.py``) asks whether some of the first K proposals cover each object; AP asks, in
addition, whether the boxes ranked first are objects. Each image keeps its first K proposals in the order
the method ranked them (best first, as stores and ``compute_proposals`` return them); the proposal of rank
r gets the score ``K - r``, so no method's raw scores are compared with another's. COCO AP with one pooled
category (``COCOeval``, ``useCats = 0``, IoU .50:.05:.95, 101-point interpolated precision), see
:func:`siamese_detr.evaluation.class_agnostic.class_agnostic_metrics`. Boxes are xyxy absolute pixels of the
images the ground truth describes.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

from .class_agnostic import class_agnostic_metrics

__all__ = ["top_k_proposal_detections", "evaluate_proposal_precision", "format_precision_table"]


def top_k_proposal_detections(store, img_ids: Iterable[int], k: int) -> List[dict]:
    """COCO result dicts of the first ``k`` proposals of each image (score ``k - rank``).

    Args:
        store: object with ``get(image_id) -> (boxes [P, 4] xyxy absolute best first, scores [P])`` and
            ``__contains__``; images it lacks contribute no detections (their objects count as missed).
    """
    if k < 1:
        raise ValueError(f"k must be a positive number of proposals, got {k}")
    detections = []
    for image_id in img_ids:
        if image_id not in store:
            continue
        boxes, _ = store.get(image_id)
        for rank, (x0, y0, x1, y1) in enumerate(boxes[:k]):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "score": float(k - rank),
                }
            )
    return detections


def evaluate_proposal_precision(store, coco_gt, ks: Sequence[int] = (10, 30)) -> Dict[str, float]:
    """``{"AP@top{k}", "AP50@top{k}"}`` in percent for each k, on every image of ``coco_gt`` (COCO api)."""
    img_ids = sorted(coco_gt.getImgIds())
    result: Dict[str, float] = {}
    for k in ks:
        metrics = class_agnostic_metrics(coco_gt, top_k_proposal_detections(store, img_ids, int(k)), img_ids, [k])
        result[f"AP@top{k}"] = metrics["AP"]
        result[f"AP50@top{k}"] = metrics["AP50"]
    return result


def format_precision_table(rows: Dict[str, Dict[str, float]], ks: Sequence[int] = (10, 30)) -> str:
    """A fixed-width table: one row per name, columns AP@topK and AP50@topK (already in percent)."""
    cols = [f"AP@top{k}" for k in ks] + [f"AP50@top{k}" for k in ks]
    name_w = max([len("proposals")] + [len(n) for n in rows])
    lines = [f"{'proposals':<{name_w}}  " + "  ".join(f"{c:>10}" for c in cols)]
    for name, r in rows.items():
        lines.append(f"{name:<{name_w}}  " + "  ".join(f"{r[c]:10.1f}" for c in cols))
    return "\n".join(lines)
