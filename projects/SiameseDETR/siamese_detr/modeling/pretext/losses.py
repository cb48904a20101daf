"""Multi-View Semantic Discrimination losses of Siamese DETR as pure functions (paper §3.3).

* L_g (Eq. 11, in the SimSiam form of the official head): symmetric negative cosine of predictions and
  stop-gradient projections.
* L_r (Eq. 12): normalised L2 distance between ``f_sem`` of the matched queries and the crop-level
  features p of the query's own view.
"""

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "negative_cosine_similarity",
    "global_discrimination_loss",
    "normalized_l2_distance",
    "region_discrimination_loss",
]


def negative_cosine_similarity(prediction: Tensor, target: Tensor) -> Tensor:
    """``C(p, z) = -cos(p, sg(z))`` (the C of Eq. 11) averaged over the batch; ``[N, D], [N, D] -> scalar``.

    The target is detached here (stop-gradient), whatever the caller passes.
    """
    return -F.cosine_similarity(prediction, target.detach(), dim=-1).mean()


def global_discrimination_loss(
    prediction_1: Tensor, projection_1: Tensor, prediction_2: Tensor, projection_2: Tensor
) -> Tensor:
    """L_g = C[pred(proj(c1)), sg(proj(c2))] + C[pred(proj(c2)), sg(proj(c1))]: Eq. 11 in the SimSiam form of
    the official global head (projector on both views, predictor on one side, stop-gradient on the other's
    projection). The paper writes it compactly as C[MLP(c1), detach(c2)] + C[MLP(c2), detach(c1)], "following"
    SimSiam.

    Args:
        prediction_v, projection_v: ``[B, D]`` predictor / projector outputs of the averaged
            encoder memory c of view v.

    Returns:
        scalar in [-2, 2]. The official code minimises ``0.5 (2 - 2cos) + 0.5 (2 - 2cos)``, which is
        this value plus the constant 2: identical gradients.
    """
    return negative_cosine_similarity(prediction_1, projection_2) + negative_cosine_similarity(
        prediction_2, projection_1
    )


def normalized_l2_distance(prediction: Tensor, target: Tensor) -> Tensor:
    """D(a, b) = || a/|a| - b/|b| ||_2^2 per row (the D of Eq. 12); ``[N, D], [N, D] -> [N]``.

    Squared L2 distance of the L2-normalised vectors (= 2 - 2 cos), the "feature reconstruction" loss
    of the official code (and UP-DETR's L_rec, UP-DETR Eq. 2).
    """
    return (F.normalize(prediction, dim=-1) - F.normalize(target, dim=-1)).pow(2).sum(dim=-1)


def region_discrimination_loss(
    semantic_predictions: Tensor,
    crop_features: Tensor,
    indices: Sequence[Tuple[Tensor, Tensor]],
    num_boxes: float,
) -> Tensor:
    """One direction-batched term of L_r (Eq. 12): ``sum_matched D(f_sem(q_hat)[i], p[j]) / num_boxes``.

    Row ``b`` of the batch holds the queries built from ONE view (say view 1) that decoded the OTHER
    view's memory; ``crop_features[b]`` are the crop features of the queries' own view (p_1), so the
    pair (p_hat_2, p_1) of Eq. 12 is ``(semantic_predictions[b], crop_features[b])``. Only matched
    queries contribute; query ``i`` matched to region ``j`` is compared with crop ``j``. With patch features
    instead of crop features it is UP-DETR's ``sum_matched L_rec / num_boxes`` (UP-DETR Eq. 1-2).

    Args:
        semantic_predictions: ``[B, Q, C']`` = f_sem(q_hat) of one decoder layer.
        crop_features: ``[B, n, C']`` crop-level region features p (no gradient is taken through them).
        indices: per batch row ``(query_idx Long[K], region_idx Long[K])`` from the Hungarian matcher.
        num_boxes: normaliser (number of target regions, averaged across processes like the box losses).

    Returns:
        scalar.
    """
    if len(indices) != semantic_predictions.shape[0]:
        raise ValueError(f"{len(indices)} index pairs for a batch of {semantic_predictions.shape[0]}")
    batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
    query_idx = torch.cat([src for src, _ in indices])
    region_idx = torch.cat([tgt for _, tgt in indices])
    device = semantic_predictions.device
    batch_idx, query_idx, region_idx = batch_idx.to(device), query_idx.to(device), region_idx.to(device)
    predicted = semantic_predictions[batch_idx, query_idx]  # [K_total, C']
    target = crop_features.detach()[batch_idx, region_idx]  # [K_total, C']
    return normalized_l2_distance(predicted, target).sum() / num_boxes
