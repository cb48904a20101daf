"""DETReg's object-embedding loss (Bar et al., CVPR 2022; Eq. 3-4 and §5 "Object Embedding Task" of the
arXiv 2106.04550v1 text; official ``models/deformable_detr.py`` ``SetCriterion.loss_object_embedding``)."""

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import Tensor

from ..criterion import process_mean

__all__ = ["object_embedding_loss"]


def object_embedding_loss(
    predictions: Tensor, embeddings: Sequence[Tensor], indices: Sequence[Tuple[Tensor, Tensor]]
) -> Tensor:
    """L_emb = L1 between f_emb of the matched queries and the frozen embeddings of their proposals.

    As the official code: ``F.l1_loss(..., reduction="mean")``, i.e. the mean absolute difference over
    every channel of every matched pair (not divided by ``num_boxes``). The paper's Eq. 4 is the per-pair
    L1 norm and Eq. 3 sums it over the ``K`` matched pairs: this value is that sum divided by ``K * C``, i.e.
    the mean over pairs of Eq. 4 divided by the constant ``C`` (absorbed in the weight, 1).

    Under DDP ``K`` is the number of matched pairs averaged over the processes (like ``num_boxes``), so that
    N processes of batch b give the loss and (DDP-averaged) gradients of one process with batch N b; in one
    process this is exactly the official value. Every process must call it (it all-reduces ``K``).

    Args:
        predictions: ``[B, Q, C]`` f_emb(hidden states) of one decoder layer.
        embeddings: ``B`` tensors ``[n_b, C]``: the frozen-backbone embedding of each target proposal
            (no gradient is taken through them).
        indices: per image ``(query_idx Long[K_b], proposal_idx Long[K_b])`` from the Hungarian matcher.

    Returns:
        scalar; zero (with a graph) when nothing is matched.
    """
    if len(indices) != predictions.shape[0] or len(embeddings) != predictions.shape[0]:
        raise ValueError(
            f"{len(indices)} matchings and {len(embeddings)} embedding sets for a batch of {predictions.shape[0]}"
        )
    device = predictions.device
    batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)]).to(device)
    query_idx = torch.cat([src for src, _ in indices]).to(device)
    # before any early return: the all-reduce of the pair count must run on every process
    mean_pairs = _mean_matched_pairs(query_idx.numel(), device)
    if query_idx.numel() == 0 or mean_pairs == 0:
        return predictions.sum() * 0.0
    target = torch.cat([e.detach()[j.to(e.device)] for e, (_, j) in zip(embeddings, indices)]).to(predictions)
    if comm.get_world_size() == 1:
        return F.l1_loss(predictions[batch_idx, query_idx], target, reduction="mean")
    total = F.l1_loss(predictions[batch_idx, query_idx], target, reduction="sum")
    return total / (mean_pairs * predictions.shape[-1])


def _mean_matched_pairs(count: int, device) -> float:
    """The number of matched pairs averaged over the processes (``count`` itself in one process)."""
    if comm.get_world_size() == 1:
        return float(count)
    return float(process_mean(torch.tensor(float(count), device=device)))
