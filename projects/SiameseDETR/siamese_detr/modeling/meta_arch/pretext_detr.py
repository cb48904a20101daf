"""What the pretraining meta-architectures (Siamese DETR, UP-DETR, DETReg) share, on the finetune ``DETR``.

Each is a ``DETR`` with ONE class (objectness: every pretext target has label 0; softmax CE adds no-object,
focal loss has one logit) and a FROZEN backbone, trained on boxes that come from the pretext task (the other
view's regions, random query patches, unsupervised proposals). Their checkpoints therefore load into the
finetune ``DETR`` with only the class head skipped (see ``pretext_config.pretext_model_from``).
"""

from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from .detr import DETR, set_target
from ...utils.user_errors import UserValueError

__all__ = ["PretextDETR"]


class PretextDETR(DETR):
    """Base class of the pretraining models: checks the pretext set-up and builds the objectness targets and
    the per-decoder-layer feature losses.

    Args:
        criterion: ``SetCriterion`` with ``num_classes=1`` (objectness).
        weight_dict: must hold every name of ``required_losses``.
        required_losses: the loss names the subclass computes (``loss_ce``, ``loss_bbox``, ``loss_giou`` and
            its pretext losses).
        learned_queries_only: refuse a transformer without learned object queries (two-stage Deformable
            DETR), for methods that build their queries from the learned ones.
        detr_kwargs: the other ``DETR`` arguments (``backbone``, ``position_embedding``, ``transformer``,
            ``num_queries``, ``in_features``, ...); ``num_classes=1`` and ``frozen_modules=("backbone",)``
            are set here.
    """

    def __init__(
        self,
        *,
        criterion: nn.Module,
        weight_dict: Dict[str, float],
        required_losses: Sequence[str],
        learned_queries_only: bool = True,
        **detr_kwargs,
    ):
        name = type(self).__name__
        if learned_queries_only and not getattr(detr_kwargs.get("transformer"), "learned_queries", True):
            raise UserValueError(f"{name} needs learned object queries: turn two-stage off")
        if getattr(criterion, "num_classes", 1) != 1:
            raise UserValueError(f"{name}: the pretext criterion must have num_classes=1 (objectness), "
                                 f"got {criterion.num_classes}")
        missing = set(required_losses) - set(weight_dict)
        if missing:
            raise UserValueError(f"{name}: model.weight_dict lacks {sorted(missing)}")
        fixed = {"num_classes", "frozen_modules"} & set(detr_kwargs)
        if fixed:
            raise UserValueError(f"{name} sets {sorted(fixed)} itself (one objectness class, frozen backbone)")
        super().__init__(
            criterion=criterion, weight_dict=weight_dict, num_classes=1, frozen_modules=("backbone",), **detr_kwargs
        )

    def objectness_targets(self, boxes: Sequence[torch.Tensor], image_sizes: Sequence[Tuple[int, int]]) -> List[Dict]:
        """L_loc targets: every pretext box is an object (label 0; Siamese DETR Eq. 9 b_v, UP-DETR / DETReg
        ``c_i = 1``).

        Args:
            boxes: per image ``[n_b, 4]`` xyxy absolute pixels of its unpadded ``(h, w)`` in ``image_sizes``
                (any device / float dtype).

        Returns:
            ``[{"labels": zeros Long[n_b], "boxes": [n_b, 4] cxcywh normalised}]`` on the model's device.
        """
        targets = []
        for b, size in zip(boxes, image_sizes):
            b = torch.as_tensor(b, device=self.device)
            labels = torch.zeros(len(b), dtype=torch.int64, device=self.device)
            targets.append(set_target(labels, b, size))
        return targets

    def layerwise_feature_losses(
        self,
        name: str,
        loss_fn,
        hidden_states: torch.Tensor,
        features: torch.Tensor,
        indices: Sequence[Sequence[Tuple[torch.Tensor, torch.Tensor]]],
        num_boxes: float,
    ) -> Dict[str, torch.Tensor]:
        """A feature loss of the matched queries for every matched decoder layer (auxiliary copies ``name_i``
        for the earlier layers, ``name`` for the last), as the box losses.

        Args:
            name: loss key, e.g. ``"loss_region"``.
            loss_fn: ``(predictions [B, Q, C'], features [B, n, C'], indices of one layer, num_boxes) -> scalar``
                (e.g. :func:`~siamese_detr.modeling.pretext.losses.region_discrimination_loss`).
            hidden_states: ``[L, B, Q, D]`` decoder outputs; ``self.sem_embed`` maps them to ``C'``.
            features: ``[B, n, C']`` targets (crop or patch features of the regions).
            indices: the criterion's matches, one list per matched layer (all layers with ``aux_loss``,
                otherwise the last one).
            num_boxes: normaliser of the box losses.

        Returns:
            ``{name_i: scalar}`` for the earlier layers and ``{name: scalar}`` for the last, unweighted.
        """
        semantic = self.sem_embed(hidden_states if self.aux_loss else hidden_states[-1:])
        last = len(indices) - 1
        return {
            name if layer == last else f"{name}_{layer}": loss_fn(semantic[layer], features, layer_indices, num_boxes)
            for layer, layer_indices in enumerate(indices)
        }
