"""Bipartite matching of predictions to ground truth (DETR §3.1, Eq. 1), Hungarian algorithm via scipy."""

from typing import Dict, List, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from ..utils.user_errors import UserValueError

__all__ = ["HungarianMatcher", "FocalHungarianMatcher"]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimising the DETR matching cost.

    For query ``i`` and target ``j`` (DETR Eq. 1 / Eq. 2 terms, probabilities instead of log-probabilities)::

        C[i, j] = - cost_class * p_i(c_j)
                  + cost_bbox  * || b_i - b_j ||_1          (cxcywh, normalised)
                  - cost_giou  * GIoU(b_i, b_j)             (xyxy, normalised)

    One cost matrix is computed for the whole batch (all queries x all targets) and split per image before
    :func:`scipy.optimize.linear_sum_assignment`. Subclasses override :meth:`class_cost` (e.g. a focal
    cost). With one objectness class it is the matching of the pretext tasks (Siamese DETR supplementary
    §A.2, Eq. 5 = Eq. 18 of the appendix of the arXiv text, coefficients class 1 / L1 5 / GIoU 2 as here;
    UP-DETR §3.1 "Matching"; DETReg Eq. 2).
    Non-finite costs (degenerate boxes) are replaced by a large constant so the assignment never fails.
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise UserValueError("HungarianMatcher: all costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    def class_cost(self, pred_logits: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        """``pred_logits [N_pred, K+1]``, ``tgt_ids Long[N_tgt]`` -> ``[N_pred, N_tgt]``,
        ``-softmax(logits)[:, c_j]``."""
        return -pred_logits.softmax(-1)[:, tgt_ids]

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            outputs: ``{"pred_logits": [B, Q, K+1], "pred_boxes": [B, Q, 4] cxcywh normalised}``.
            targets: B dicts ``{"labels": Long[N_b], "boxes": [N_b, 4] cxcywh normalised}``.

        Returns:
            B pairs ``(index_i, index_j)`` of int64 CPU tensors of equal length ``min(Q, N_b)``:
            query ``index_i[k]`` is matched to target ``index_j[k]`` (``index_i`` ascending).
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        bs, num_queries = logits.shape[:2]
        sizes = [len(t["boxes"]) for t in targets]
        if sum(sizes) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty.clone()) for _ in range(bs)]

        dtype = torch.promote_types(logits.dtype, torch.float32)  # half -> float32; float64 stays (official)
        out_logits = logits.flatten(0, 1).to(dtype)  # [B*Q, K+1]
        out_boxes = boxes.flatten(0, 1).to(dtype)  # [B*Q, 4]
        tgt_ids = torch.cat([t["labels"] for t in targets]).to(out_logits.device)
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(out_boxes)

        cost = self.cost_bbox * torch.cdist(out_boxes, tgt_boxes, p=1)
        cost = cost + self.cost_class * self.class_cost(out_logits, tgt_ids)
        giou = generalized_box_iou(
            box_convert(out_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
        )
        cost = cost - self.cost_giou * giou
        cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)
        cost = cost.view(bs, num_queries, -1).cpu()

        indices = []
        for b, c in enumerate(cost.split(sizes, dim=-1)):
            rows, cols = linear_sum_assignment(c[b].numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices


class FocalHungarianMatcher(HungarianMatcher):
    """:class:`HungarianMatcher` with the focal-loss class cost of Conditional / Deformable DETR (official
    ``models/matcher.py`` of Atten4Vis/ConditionalDETR and fundamentalvision/Deformable-DETR).

    With ``p = sigmoid(logit)`` of the target's class (logits ``[N_pred, K]``, no no-object column)::

        cost_pos = alpha * (1 - p)^gamma * -log(p + 1e-8)
        cost_neg = (1 - alpha) * p^gamma * -log(1 - p + 1e-8)
        C_class[i, j] = cost_pos - cost_neg

    i.e. the focal loss of calling query ``i`` positive for class ``c_j`` minus that of calling it negative.
    Official defaults: ``cost_class=2, cost_bbox=5, cost_giou=2, alpha=0.25, gamma=2``.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
    ):
        super().__init__(cost_class=cost_class, cost_bbox=cost_bbox, cost_giou=cost_giou)
        self.alpha = alpha
        self.gamma = gamma

    def class_cost(self, pred_logits: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        """``pred_logits [N_pred, K]``, ``tgt_ids Long[N_tgt]`` -> ``[N_pred, N_tgt]`` focal cost above."""
        prob = pred_logits.sigmoid()[:, tgt_ids]
        pos = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
        neg = (1 - self.alpha) * prob ** self.gamma * -(1 - prob + 1e-8).log()
        return pos - neg
