"""Evaluation helpers: class-agnostic metrics of detectors and proposals (AR@K, AP of the top-K)."""

from .class_agnostic import ClassAgnosticEvaluator
from .proposal_precision import evaluate_proposal_precision, format_precision_table, top_k_proposal_detections
from .proposal_recall import (
    IOU_THRESHOLDS,
    evaluate_proposal_recall,
    format_recall_table,
    max_iou_per_gt,
    recall_curve,
)

__all__ = [
    "ClassAgnosticEvaluator",
    "IOU_THRESHOLDS",
    "evaluate_proposal_precision",
    "evaluate_proposal_recall",
    "format_precision_table",
    "format_recall_table",
    "max_iou_per_gt",
    "recall_curve",
    "top_k_proposal_detections",
]
