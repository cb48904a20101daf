"""Set prediction losses of DETR (§3.1, Eq. 2) after Hungarian matching, with auxiliary decoder-layer losses.

The criterion returns UNWEIGHTED losses; the meta-architecture multiplies them by its ``weight_dict`` through
:func:`weight_losses`, which resolves the weight of an auxiliary copy ``loss_x_{i}`` (decoder layer ``i``) or
``loss_x_enc`` (two-stage encoder proposals) from the base key ``loss_x`` at run time, so a config's
``weight_dict`` stays correct whatever the number of decoder layers.

Two classification losses: DETR's softmax cross-entropy over ``K + 1`` classes (``class_loss="ce"``) and the
sigmoid focal loss over ``K`` classes of Conditional / Deformable DETR (``class_loss="focal"``).
"""

import math
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from detectron2.utils import comm
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_convert, generalized_box_iou

from ..utils.user_errors import UserKeyError, UserValueError

__all__ = [
    "SetCriterion",
    "check_target_labels",
    "process_mean",
    "sigmoid_focal_loss",
    "weight_losses",
    "weighted_cross_entropy",
]

Indices = List[Tuple[torch.Tensor, torch.Tensor]]
_AUX_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<layer>\d+|enc)$")
_FOCAL_PRIOR = 0.01  # prior foreground probability of the focal class head (RetinaNet §4.1; official init)


def weight_losses(losses: Dict[str, torch.Tensor], weight_dict: Dict[str, float]) -> Dict[str, torch.Tensor]:
    """Multiply every loss by its weight (``{name: scalar tensor}`` -> same keys, weighted scalars).

    The weight of ``name`` is ``weight_dict[name]`` if present, else ``weight_dict[base]`` for an auxiliary
    copy ``name = base + "_" + digits`` or an encoder-proposal copy ``name = base + "_enc"``. A loss with
    neither raises ``KeyError`` (a config error must not make a loss silently disappear or count with
    weight 1).
    """
    weighted = {}
    for name, value in losses.items():
        if name in weight_dict:
            weight = weight_dict[name]
        else:
            match = _AUX_SUFFIX.match(name)
            if match is None or match.group("base") not in weight_dict:
                raise UserKeyError(
                    f"No weight for loss {name!r}; add it to weight_dict (keys: {sorted(weight_dict)})"
                )
            weight = weight_dict[match.group("base")]
        weighted[name] = value * weight
    return weighted


def check_target_labels(targets: List[Dict[str, torch.Tensor]], num_classes: int) -> None:
    """Raise ``ValueError`` unless every ``targets[b]["labels"]`` (Long ``[N_b]``) lies in ``[0, num_classes)``.

    Out-of-range labels do not always fail by themselves: with the softmax loss label ``K`` indexes the
    no-object column (the object is silently trained as background), with the focal loss label ``-1``
    indexes the last class; other values give an IndexError deep in the matcher.
    """
    labels = [t["labels"].reshape(-1) for t in targets if len(t["labels"])]
    if not labels:
        return
    low, high = (int(v) for v in torch.aminmax(torch.cat([x.to(labels[0].device) for x in labels])))
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise UserValueError(
            f"target label {bad} is outside [0, {num_classes}) of a criterion with num_classes={num_classes}: "
            f"set model.num_classes to the number of classes of the dataset (contiguous ids 0..K-1, "
            f"as Detectron2's dataset mappers produce)"
        )


def process_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a 0-dim float tensor over the processes (``detectron2.utils.comm``): all-reduced and divided
    by the world size when distributed, ``value`` (detached) otherwise. No gradient flows through it (it is meant
    for normalisers: target counts, class-weight sums); every process must call it the same number of times.
    """
    world = comm.get_world_size()
    if world == 1:
        return value.detach()
    total = value.detach().clone().to(torch.promote_types(value.dtype, torch.float32)).reshape(1)
    dist.all_reduce(total)
    return (total / world).reshape(()).to(value.dtype)


def weighted_cross_entropy(logits: torch.Tensor, target_classes: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Class-weighted softmax cross-entropy of ``logits [B, Q, K+1]`` against ``target_classes`` Long ``[B, Q]``
    with ``weight [K+1]``: the scalar ``sum(w_t * CE) / sum(w_t)``, ``w_t`` the weight of each query's target
    class.

    In one process this is ``F.cross_entropy(..., weight=weight)`` (the official DETR ``loss_labels``). Under
    DDP the denominator is the MEAN of ``sum(w_t)`` over the processes, like ``num_boxes`` of the box losses:
    with the gradients averaged by DDP, N processes of batch b then give the loss and gradients of one process
    with batch N b. (The official per-process weighted mean does not: the number of matched queries, weight 1
    against ``eos_coef``, differs between processes, so each process's loss has another denominator.)
    """
    if comm.get_world_size() == 1:
        return F.cross_entropy(logits.transpose(1, 2), target_classes, weight=weight)
    per_query = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=weight, reduction="none")
    local_weight = weight[target_classes].sum()
    return per_query.sum() / process_mean(local_weight).clamp(min=torch.finfo(per_query.dtype).tiny)


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, num_boxes: float, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017, Eq. 5) of ``[B, Q, K]`` logits against 0/1 targets of the same shape,
    reduced as the official Conditional / Deformable DETR ``sigmoid_focal_loss``: mean over queries, sum over
    batch and classes, divided by ``num_boxes``: a scalar.

    ``FL = alpha_t * (1 - p_t)^gamma * BCE(logit, target)`` with ``p_t = p`` for positives and ``1 - p`` for
    negatives, ``alpha_t = alpha`` / ``1 - alpha`` (``alpha < 0`` disables the weighting). Computed in at least
    float32 (under autocast the logits come in float16).
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    targets = targets.to(logits.dtype)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_boxes


class SetCriterion(nn.Module):
    """Hungarian-matched DETR losses (DETR Eq. 2 and Eq. 3 / §3.1 "Bounding box loss").

    With ``num_classes=1`` (objectness) it is the localisation loss of every pretext task: Siamese DETR's L_loc
    (Eq. 9, objectness + ``l_box`` after the matching of its supplementary §A.2, Eq. 5), UP-DETR's
    ``L_cls + L_box`` (UP-DETR Eq. 1) and DETReg's ``L_focal + L_box`` (DETReg Eq. 3).

    * ``"class"`` -> ``loss_ce``: with ``class_loss="ce"``, softmax cross-entropy over ``K+1`` classes for
      every query, unmatched queries target the no-object class ``K`` whose weight is ``eos_coef`` (weighted
      mean over queries, its denominator averaged over processes: :func:`weighted_cross_entropy`); with
      ``class_loss="focal"``, the sigmoid focal loss over ``K`` one-hot channels (unmatched queries: all
      zeros) as the official Conditional / Deformable DETR ``loss_labels``:
      :func:`sigmoid_focal_loss` times the number of queries (i.e. the sum over queries and classes divided
      by ``num_boxes``).
    * ``"boxes"`` -> ``loss_bbox``: L1 between matched cxcywh boxes, summed and divided by ``num_boxes``;
      ``loss_giou``: ``sum(1 - GIoU)`` over matched pairs divided by ``num_boxes``.

    ``num_boxes`` is the number of target boxes averaged over processes (``detectron2.utils.comm``),
    clamped to at least 1. Every entry of ``outputs["aux_outputs"]`` (decoder layer ``i``) gets its own
    matching and copies of the losses suffixed ``_{i}``. ``outputs["enc_outputs"]`` (two-stage Deformable
    DETR's encoder proposals) is matched against the targets with every label set to 0 (class-agnostic, as
    the official ``bin_targets``) and gives losses suffixed ``_enc``.

    Extension: subclasses register more loss functions in ``self.loss_map`` (name -> callable with signature
    ``(outputs, targets, indices, num_boxes) -> dict``) and list the name in ``losses``.

    Args:
        num_classes: ``K`` foreground classes (logits have :attr:`num_class_logits` channels: ``K+1`` with the
            last one no-object for "ce", ``K`` for "focal").
        matcher: callable ``(outputs, targets) -> indices`` (:class:`HungarianMatcher`; use
            :class:`FocalHungarianMatcher` with the focal loss).
        eos_coef: relative classification weight of the no-object class ("ce" only).
        losses: names of loss functions in ``loss_map`` to compute.
        class_loss: "ce" (DETR) or "focal" (Conditional / Deformable DETR).
        focal_alpha, focal_gamma: focal loss parameters (official 0.25 and 2).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        eos_coef: float = 0.1,
        losses: Sequence[str] = ("class", "boxes"),
        class_loss: str = "ce",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        if class_loss not in ("ce", "focal"):
            raise UserValueError(f"model.criterion.class_loss must be 'ce' or 'focal', got {class_loss!r}")
        self.class_loss = class_loss
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
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
        """Width of the class head: ``K + 1`` (last = no-object) for softmax cross-entropy, ``K`` for focal."""
        return self.num_classes + 1 if self.class_loss == "ce" else self.num_classes

    @property
    def initial_class_bias(self) -> Optional[float]:
        """Initial bias of the class head: ``-log((1 - 0.01) / 0.01)`` for the focal loss (prior probability
        0.01, official Conditional / Deformable DETR), None (keep the default) for cross-entropy."""
        if self.class_loss == "ce":
            return None
        return -math.log((1 - _FOCAL_PRIOR) / _FOCAL_PRIOR)

    # ----------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def matched_query_index(indices: Indices) -> Tuple[torch.Tensor, torch.Tensor]:
        """Flatten per-image matches ``(query_idx Long[K_b], target_idx Long[K_b])`` into ``(batch_idx,
        query_idx)`` Long tensors of length ``sum_b K_b`` (the matched pairs)."""
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
        query_idx = torch.cat([src for src, _ in indices])
        return batch_idx, query_idx

    @staticmethod
    def matched_targets(targets: List[Dict[str, torch.Tensor]], indices: Indices, key: str) -> torch.Tensor:
        """``targets[b][key][index_j]`` concatenated over the batch (order of :meth:`matched_query_index`):
        ``[M, ...]`` with ``M = sum_b K_b`` (``key="boxes"``: ``[M, 4]`` cxcywh normalised)."""
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
        """``loss_ce``: weighted softmax CE (``pred_logits [B, Q, K+1]``) or focal loss (``[B, Q, K]``);
        ``labels`` in ``[0, K)``."""
        if self.class_loss == "focal":
            return self.loss_labels_focal(outputs, targets, indices, num_boxes)
        logits = outputs["pred_logits"]
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        if sum(len(j) for _, j in indices) > 0:
            idx = tuple(i.to(logits.device) for i in self.matched_query_index(indices))
            target_classes[idx] = self.matched_targets(targets, indices, "labels").to(logits.device)
        weight = self.empty_weight.to(logits)
        return {"loss_ce": weighted_cross_entropy(logits, target_classes, weight)}

    def loss_labels_focal(self, outputs, targets, indices, num_boxes) -> Dict[str, torch.Tensor]:
        """``loss_ce`` = :func:`sigmoid_focal_loss` of ``pred_logits [B, Q, K]`` against one-hot matched labels,
        times ``Q`` (official ``loss_labels`` of Conditional / Deformable DETR)."""
        logits = outputs["pred_logits"]
        onehot = torch.zeros_like(logits)
        if sum(len(j) for _, j in indices) > 0:
            batch_idx, query_idx = (i.to(logits.device) for i in self.matched_query_index(indices))
            labels = self.matched_targets(targets, indices, "labels").to(logits.device)
            onehot[batch_idx, query_idx, labels] = 1.0
        loss = sigmoid_focal_loss(logits, onehot, num_boxes, alpha=self.focal_alpha, gamma=self.focal_gamma)
        return {"loss_ce": loss * logits.shape[1]}

    def loss_boxes(self, outputs, targets, indices, num_boxes) -> Dict[str, torch.Tensor]:
        """``loss_bbox`` (L1, cxcywh normalised) and ``loss_giou`` (1 - GIoU, xyxy), sums / ``num_boxes``;
        computed in float32 at least (half-precision predictions are upcast, targets are never rounded).

        The ``M`` matched rows of ``pred_boxes [B, Q, 4]`` against the target ``boxes [N_b, 4]``, both cxcywh
        normalised to ``[0, 1]`` (GIoU on their xyxy conversion, still normalised): ``l_box`` of Siamese DETR
        Eq. 9 / DETR's ``L_box`` (§3.1) without the weights."""
        idx = tuple(i.to(outputs["pred_boxes"].device) for i in self.matched_query_index(indices))
        pred = outputs["pred_boxes"][idx]  # [M, 4]
        tgt = self.matched_targets(targets, indices, "boxes").to(pred.device)  # [M, 4]
        # the predictions' dtype but at least float32: under autocast the predictions are half precision
        # and the targets must not be rounded to it (bf16 moves a corner of a 600 px image by up to ~1 px)
        dtype = torch.promote_types(pred.dtype, torch.float32)
        pred, tgt = pred.to(dtype), tgt.to(dtype)
        loss_bbox = F.l1_loss(pred, tgt, reduction="sum") / num_boxes
        giou = torch.diag(
            generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
        )
        loss_giou = (1 - giou).sum() / num_boxes
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}

    # ------------------------------------------------------------------------------------------------ forward
    def compute_losses(self, outputs, targets, indices, num_boxes) -> Dict[str, torch.Tensor]:
        """All losses in ``self.losses`` for one decoder layer's outputs and matching: ``{name: scalar}``."""
        losses = {}
        for name in self.losses:
            if name not in self.loss_map:
                raise UserKeyError(f"model.criterion.losses: unknown loss {name!r}; available: {sorted(self.loss_map)}")
            losses.update(self.loss_map[name](outputs, targets, indices, num_boxes))
        return losses

    def forward(self, outputs, targets, return_indices: bool = False):
        """
        Args:
            outputs: ``{"pred_logits": [B, Q, K'], "pred_boxes": [B, Q, 4] cxcywh normalised,
                "aux_outputs" (optional): list of dicts with the same keys, one per earlier decoder layer,
                "enc_outputs" (optional, two-stage): a dict with the same keys for the encoder proposals}``
                (``K' = num_class_logits``; extra keys are passed through to loss functions).
            targets: B dicts ``{"labels": Long[N_b], "boxes": [N_b, 4] cxcywh normalised}``.
            return_indices: also return the matchings.

        Raises:
            ValueError: a target label outside ``[0, num_classes)`` (:func:`check_target_labels`).

        Returns:
            losses dict (``loss_ce``, ``loss_bbox``, ``loss_giou``, ``*_{i}`` for aux layer ``i`` and ``*_enc``
            for the encoder proposals); with ``return_indices`` also a list of matchings where ``indices[i]``
            is aux layer ``i`` and ``indices[-1]`` the final layer (the encoder matching is not returned).
        """
        check_target_labels(targets, self.num_classes)
        device = outputs["pred_logits"].device
        num_boxes = self.get_num_boxes(targets, device)
        aux_outputs = outputs.get("aux_outputs", [])
        final = {k: v for k, v in outputs.items() if k not in ("aux_outputs", "enc_outputs")}

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
        if "enc_outputs" in outputs:
            enc = outputs["enc_outputs"]
            bin_targets = [dict(t, labels=torch.zeros_like(t["labels"])) for t in targets]
            enc_indices = self.matcher(enc, bin_targets)
            losses.update(
                {f"{k}_enc": v for k, v in self.compute_losses(enc, bin_targets, enc_indices, num_boxes).items()}
            )
        if return_indices:
            return losses, all_indices
        return losses
