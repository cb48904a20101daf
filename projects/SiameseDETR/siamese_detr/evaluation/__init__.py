"""Evaluation helpers: class-agnostic proposal recall (AR@K)."""

from .class_agnostic import ClassAgnosticEvaluator
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
    "evaluate_proposal_recall",
    "format_recall_table",
    "max_iou_per_gt",
    "recall_curve",
]
