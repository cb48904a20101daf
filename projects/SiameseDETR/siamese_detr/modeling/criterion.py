"""Set prediction losses of DETR (§3.1, Eq. 2) after Hungarian matching, with auxiliary decoder-layer losses.

The criterion returns UNWEIGHTED losses; the meta-architecture multiplies them by its ``weight_dict`` through
:func:`weight_losses`, which resolves the weight of an auxiliary copy ``loss_x_{i}`` from the base key
``loss_x`` at run time, so a config's ``weight_dict`` stays correct whatever the number of decoder layers.
"""

import re
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.distributed as dist
from detectron2.utils import comm
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["SetCriterion", "weight_losses"]

Indices = List[Tuple[torch.Tensor, torch.Tensor]]
_AUX_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<layer>\d+)$")


def weight_losses(losses: Dict[str, torch.Tensor], weight_dict: Dict[str, float]) -> Dict[str, torch.Tensor]:
    """Multiply every loss by its weight.

    The weight of ``name`` is ``weight_dict[name]`` if present, else ``weight_dict[base]`` for an auxiliary
    copy ``name = base + "_" + digits``. A loss with neither raises ``KeyError`` (a config error must not
    make a loss silently disappear or count with weight 1).
    """
    weighted = {}
    for name, value in losses.items():
        if name in weight_dict:
            weight = weight_dict[name]
        else:
            match = _AUX_SUFFIX.match(name)
            if match is None or match.group("base") not in weight_dict:
                raise KeyError(
                    f"No weight for loss {name!r}; add it to weight_dict (keys: {sorted(weight_dict)})"
                )
            weight = weight_dict[match.group("base")]
        weighted[name] = value * weight
    return weighted


class SetCriterion(nn.Module):
    """Hungarian-matched DETR losses (DETR Eq. 2 and Eq. 3 / §3.1 "Bounding box loss").

    * ``"class"`` -> ``loss_ce``: softmax cross-entropy over ``K+1`` classes for every query, unmatched
      queries target the no-object class ``K`` whose weight is ``eos_coef`` (weighted mean over queries).
    * ``"boxes"`` -> ``loss_bbox``: L1 between matched cxcywh boxes, summed and divided by ``num_boxes``;
      ``loss_giou``: ``sum(1 - GIoU)`` over matched pairs divided by ``num_boxes``.

    ``num_boxes`` is the number of target boxes averaged over processes (``detectron2.utils.comm``),
    clamped to at least 1. Every entry of ``outputs["aux_outputs"]`` (decoder layer ``i``) gets its own
    matching and copies of the losses suffixed ``_{i}``.

    Extension: subclasses register more loss functions in ``self.loss_map`` (name -> callable with signature
    ``(outputs, targets, indices, num_boxes) -> dict``) and list the name in ``losses``.

    Args:
        num_classes: ``K`` foreground classes (logits have ``K+1`` channels, the last one is no-object).
        matcher: callable ``(outputs, targets) -> indices`` (e.g. :class:`HungarianMatcher`).
        eos_coef: relative classification weight of the no-object class.
        losses: names of loss functions in ``loss_map`` to compute.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        eos_coef: float = 0.1,
        losses: Sequence[str] = ("class", "boxes"),
    ):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.eos_coef = eos_coef
        self.losses = tuple(losses)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)
        self.loss_map: Dict[str, Callable[..., Dict[str, torch.Tensor]]] = {
            "class": self.loss_labels,
            "boxes": self.loss_boxes,
        }

    @property
    def num_class_logits(self) -> int:
        """Width of the class head: ``K + 1`` (last = no-object) for softmax cross-entropy."""
        return self.num_classes + 1

    @property
    def initial_class_bias(self):
        """Initial bias of the class head (a prior probability for focal loss), or None to keep the default."""
        return None

    # ----------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def matched_query_index(indices: Indices) -> Tuple[torch.Tensor, torch.Tensor]:
        """Flatten per-image matches into ``(batch_idx, query_idx)`` Long tensors of length ``sum(N_b)``."""
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
        query_idx = torch.cat([src for src, _ in indices])
        return batch_idx, query_idx

    @staticmethod
    def matched_targets(targets: List[Dict[str, torch.Tensor]], indices: Indices, key: str) -> torch.Tensor:
        """``targets[b][key][index_j]`` concatenated over the batch (order of :meth:`matched_query_index`)."""
        return torch.cat([t[key][j] for t, (_, j) in zip(targets, indices)], dim=0)

    def get_num_boxes(self, targets: List[Dict[str, torch.Tensor]], device: torch.device) -> float:
        """Average number of target boxes per process, clamped to >= 1 (all-reduced when distributed)."""
        n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world = comm.get_world_size()
        if world > 1:
            dist.all_reduce(n)
        return torch.clamp(n / world, min=1).item()

    # ------------------------------------------------------------------------------------------------ losses
    def loss_labels(self, outputs, targets, indices, num_boxes) -> Dict[str, torch.Tensor]:
        """``loss_ce``: weighted softmax CE; ``pred_logits [B, Q, K+1]``, ``labels`` in ``[0, K)``."""
        logits = outputs["pred_logits"]
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        if sum(len(j) for _, j in indices) > 0:
            idx = tuple(i.to(logits.device) for i in self.matched_query_index(indices))
            target_classes[idx] = self.matched_targets(targets, indices, "labels").to(logits.device)
        weight = self.empty_weight.to(logits)
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=weight)
        return {"loss_ce": loss_ce}

    def loss_boxes(self, outputs, targets, indices, num_boxes) -> Dict[str, torch.Tensor]:
        """``loss_bbox`` (L1, cxcywh normalised) and ``loss_giou`` (1 - GIoU, xyxy), sums / ``num_boxes``."""
        idx = tuple(i.to(outputs["pred_boxes"].device) for i in self.matched_query_index(indices))
        pred = outputs["pred_boxes"][idx]  # [M, 4]
        tgt = self.matched_targets(targets, indices, "boxes").to(pred)  # [M, 4]
        loss_bbox = F.l1_loss(pred, tgt, reduction="sum") / num_boxes
        giou = torch.diag(
            generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
        )
        loss_giou = (1 - giou).sum() / num_boxes
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}

    # ------------------------------------------------------------------------------------------------ forward
    def compute_losses(self, outputs, targets, indices, num_boxes) -> Dict[str, torch.Tensor]:
        """All losses in ``self.losses`` for one decoder layer's outputs and matching."""
        losses = {}
        for name in self.losses:
            if name not in self.loss_map:
                raise KeyError(f"Unknown loss {name!r}; available: {sorted(self.loss_map)}")
            losses.update(self.loss_map[name](outputs, targets, indices, num_boxes))
        return losses

    def forward(self, outputs, targets, return_indices: bool = False):
        """
        Args:
            outputs: ``{"pred_logits": [B, Q, K+1], "pred_boxes": [B, Q, 4] cxcywh normalised,
                "aux_outputs" (optional): list of dicts with the same keys, one per earlier decoder layer}``
                (extra keys are passed through to loss functions).
            targets: B dicts ``{"labels": Long[N_b], "boxes": [N_b, 4] cxcywh normalised}``.
            return_indices: also return the matchings.

        Returns:
            losses dict (``loss_ce``, ``loss_bbox``, ``loss_giou`` and ``*_{i}`` for aux layer ``i``); with
            ``return_indices`` also a list of matchings where ``indices[i]`` is aux layer ``i`` and
            ``indices[-1]`` the final layer.
        """
        device = outputs["pred_logits"].device
        num_boxes = self.get_num_boxes(targets, device)
        aux_outputs = outputs.get("aux_outputs", [])
        final = {k: v for k, v in outputs.items() if k != "aux_outputs"}

        all_indices = []
        losses = {}
        for i, aux in enumerate(aux_outputs):
            indices = self.matcher(aux, targets)
            all_indices.append(indices)
            losses.update(
                {f"{k}_{i}": v for k, v in self.compute_losses(aux, targets, indices, num_boxes).items()}
            )
        indices = self.matcher(final, targets)
        all_indices.append(indices)
        losses.update(self.compute_losses(final, targets, indices, num_boxes))
        if return_indices:
            return losses, all_indices
        return losses
