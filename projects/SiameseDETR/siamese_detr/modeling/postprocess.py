"""Detections from DETR outputs: the official post-processing rules of each DETR variant.

All rules take ``pred_logits [B, Q, K']`` and ``pred_boxes [B, Q, 4]`` (cxcywh normalised by each unpadded
image) and return detectron2 ``Instances`` with ``pred_boxes`` xyxy ABSOLUTE in the (resized) input image,
``scores`` and ``pred_classes``, so the AP protocol is that of the official code of the variant:

* :class:`SoftmaxArgmaxPostProcess`: DETR (facebookresearch/detr ``models/detr.py`` ``PostProcess``):
  softmax over ``K + 1`` classes, each query gives ONE detection, its arg-max foreground class scored by
  that probability (the no-object column excluded), i.e. all ``Q`` queries are kept.
* :class:`SoftmaxTopKPostProcess`: detrex's DETR inference: the ``k`` best (query, class) pairs of the
  softmax probabilities without the no-object column (one query may give several classes).
* :class:`SigmoidTopKPostProcess`: Conditional DETR and Deformable DETR (official ``PostProcess``): the
  ``k`` best (query, class) pairs of the SIGMOID scores over ``K`` classes (k = 100).
"""

from typing import List, Tuple

import torch
from detectron2.structures import Boxes, Instances
from torch import nn
from torchvision.ops import box_convert

__all__ = ["SoftmaxArgmaxPostProcess", "SoftmaxTopKPostProcess", "SigmoidTopKPostProcess"]


def _instances(boxes_cxcywh, scores, classes, image_size: Tuple[int, int]) -> Instances:
    """``boxes_cxcywh [N, 4]`` normalised to ``[0, 1]`` by the unpadded ``image_size = (h, w)``, ``scores [N]``,
    ``classes`` Long ``[N]`` -> ``Instances`` of size ``(h, w)`` with ``pred_boxes`` xyxy absolute pixels."""
    h, w = image_size
    scale = torch.as_tensor([w, h, w, h], dtype=boxes_cxcywh.dtype, device=boxes_cxcywh.device)
    res = Instances((h, w))
    res.pred_boxes = Boxes(box_convert(boxes_cxcywh, "cxcywh", "xyxy") * scale)
    res.scores = scores
    res.pred_classes = classes
    return res


class _PostProcess(nn.Module):
    """Batch wrapper: subclasses implement ``select`` for one image."""

    def forward(
        self, pred_logits: torch.Tensor, pred_boxes: torch.Tensor, image_sizes: List[Tuple[int, int]]
    ) -> List[Instances]:
        """``pred_logits [B, Q, K']``, ``pred_boxes [B, Q, 4]`` cxcywh normalised, unpadded ``(h, w)`` per
        image -> B ``Instances`` (boxes xyxy absolute in the input image)."""
        return [self.select(lg, bx, size) for lg, bx, size in zip(pred_logits, pred_boxes, image_sizes)]


class SoftmaxArgmaxPostProcess(_PostProcess):
    """One detection per query: arg-max foreground class of the softmax (no-object column last, excluded)."""

    class_loss = "ce"  # the criterion's class loss whose logits it reads: [Q, K + 1]

    def select(self, logits, boxes, image_size) -> Instances:
        """One image: ``logits [Q, K + 1]``, ``boxes [Q, 4]`` cxcywh normalised, unpadded ``(h, w)`` -> ``Q``
        detections, boxes xyxy absolute."""
        scores, classes = logits.softmax(-1)[:, :-1].max(-1)
        return _instances(boxes, scores, classes, image_size)


class _TopK(_PostProcess):
    """Top-``num_detections`` (query, class) pairs of ``scores(logits) [Q, K]`` (flattened index
    ``query * K + class``). Among EQUAL scores the order and, at the cut, the choice is ``torch.topk``'s,
    which is not stable (it does not keep the lower index), as in the official code."""

    def __init__(self, num_detections: int = 100):
        super().__init__()
        self.num_detections = num_detections

    def select(self, logits, boxes, image_size) -> Instances:
        """One image: ``logits [Q, K']``, ``boxes [Q, 4]`` cxcywh normalised, unpadded ``(h, w)`` ->
        ``min(num_detections, Q * K)`` detections, boxes xyxy absolute."""
        prob = self.class_scores(logits)  # [Q, K]
        num_classes = prob.shape[-1]
        k = min(self.num_detections, prob.numel())
        scores, flat = prob.flatten().topk(k)
        query = torch.div(flat, num_classes, rounding_mode="floor")
        return _instances(boxes[query], scores, flat % num_classes, image_size)


class SoftmaxTopKPostProcess(_TopK):
    """Top-k over the softmax probabilities of the ``K`` foreground classes (logits ``[Q, K + 1]``)."""

    class_loss = "ce"

    @staticmethod
    def class_scores(logits):
        """``[Q, K + 1]`` logits -> ``[Q, K]`` softmax probabilities without the no-object column."""
        return logits.softmax(-1)[:, :-1]


class SigmoidTopKPostProcess(_TopK):
    """Top-k over the sigmoid scores of ``K`` classes (logits ``[Q, K]``, focal-loss heads)."""

    class_loss = "focal"

    @staticmethod
    def class_scores(logits):
        """``[Q, K]`` logits -> ``[Q, K]`` sigmoid scores."""
        return logits.sigmoid()
