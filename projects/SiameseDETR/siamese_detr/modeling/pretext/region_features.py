"""Region features and region-conditioned object queries of Siamese DETR (paper §3.3, Eq. 4-7).

Coordinate conventions: every box here is ``xyxy`` in ABSOLUTE pixels of the (resized, augmented)
view it belongs to — the same frame as the view tensor fed to the backbone, before padding.
"""

from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align

from ...utils.user_errors import UserValueError

if TYPE_CHECKING:  # annotation only
    from ..transformers.base import EncoderMemory

__all__ = [
    "fold_mean_region_embedding",
    "average_pooled_roi_features",
    "concatenated_average_pool",
    "masked_average_pool",
    "per_level_average_pool",
    "region_conditioned_queries",
]


def average_pooled_roi_features(
    features: Sequence[Tensor],
    boxes: Sequence[Tensor],
    strides: Sequence[int],
    output_size: int = 7,
    aligned: bool = False,
) -> Tensor:
    """Object-level region features z = avgpool(RoIAlign(h, b)) (paper Eq. 4, "global average pooling").

    With several backbone levels (multi-scale Deformable DETR) each level is pooled and the results are
    concatenated along channels, as the official Deform-MS (``align_and_proj``: C3-C5 of an R50 give
    512 + 1024 + 2048 = 3584 channels).

    Args:
        features: backbone levels of the padded batch, ``[B, C_l, H/s_l, W/s_l]`` each.
        boxes: ``B`` tensors ``[n_b, 4]``, xyxy absolute in input-image pixels (the jittered
            query boxes of each image).
        strides: ``s_l`` of each level; RoIAlign uses ``spatial_scale = 1 / s_l``.
        output_size: RoIAlign grid (7x7 as in the official code).
        aligned: torchvision's ``aligned``. False (default) as the official code's ``RoIAlign``; True: pixel
            ``u`` is feature coordinate ``u / s_l - 0.5``, the half-pixel-correct sampling.

    Returns:
        ``[sum_b n_b, sum_l C_l]`` average-pooled region features, rows in the order of ``boxes``.
    """
    if len(features) != len(strides):
        raise ValueError(f"got {len(features)} feature levels and {len(strides)} strides")
    pooled = []
    for level, stride in zip(features, strides):
        if len(boxes) != level.shape[0]:
            raise ValueError(f"got {len(boxes)} box tensors for a batch of {level.shape[0]} feature maps")
        # boxes in at least float32 (float16 rounds pixel coordinates of a 1000-px image to 0.5-1 px), the
        # features with them (roi_align wants one dtype; autocast runs it in float32 anyway)
        dtype = torch.promote_types(level.dtype, torch.float32)
        level_boxes = [b.to(device=level.device, dtype=dtype) for b in boxes]
        pooled.append(
            roi_align(
                level.to(dtype), level_boxes, output_size=output_size, spatial_scale=1.0 / stride,
                sampling_ratio=-1, aligned=aligned,
            ).mean(dim=(2, 3)).to(level.dtype)
        )  # [N, C_l]
    return torch.cat(pooled, dim=1)


def concatenated_average_pool(features: Sequence[Tensor]) -> Tensor:
    """Global average of each level ``[N, C_l, H_l, W_l]`` concatenated: ``[N, sum_l C_l]`` (crop features p,
    Eq. 5; multi-level as the official Deform-MS ``extract_patch_feature``)."""
    return torch.cat([f.mean(dim=(2, 3)) for f in features], dim=1)


def masked_average_pool(memory: Tensor, padding_mask: Tensor) -> Tensor:
    """Average of encoder tokens over the non-padded ones (one level of the global context c, Eq. 11; see
    :func:`per_level_average_pool`).

    Args:
        memory: ``[B, S, C]`` encoder tokens (e.g. one level of ``EncoderMemory``).
        padding_mask: ``[B, S]`` bool, True where the token comes from padding.

    Returns:
        ``[B, C]``.
    """
    valid = (~padding_mask).to(memory.dtype).unsqueeze(-1)  # [B, S, 1]
    count = valid.sum(dim=1)
    if bool((count == 0).any()):
        raise ValueError("an image has no valid (non-padded) token in the encoder memory")
    return (memory * valid).sum(dim=1) / count


def per_level_average_pool(
    memory: "EncoderMemory", num_levels: int, pool: Callable[[Tensor, Tensor], Tensor] = masked_average_pool
) -> Tensor:
    """Global context c of L_g (Eq. 11): the average of each of the first ``num_levels`` feature levels of
    the encoder memory, concatenated (official Deform-MS: ``NonLinearNeckV3`` pools C3-C5 of the memory,
    ``x[:3]``, and concatenates them; one level for the single-scale variants).

    Args:
        memory: the encoder output (``EncoderMemory``: ``memory [B, S, C]``, ``padding_mask [B, S]``, and the
            level geometry ``spatial_shapes [L, 2]`` / ``level_start_index [L]``, level-major tokens).
        num_levels: k, how many levels from the first (the finest); ``1 <= k <= L``.
        pool: ``(tokens [B, S_l, C], padding_mask [B, S_l]) -> [B, C]`` applied to each level; default the
            average over the non-padded tokens (:func:`masked_average_pool`).

    Returns:
        ``[B, k * C]``: level 0's average in channels ``0 .. C - 1``, level 1's next, ...
    """
    levels = len(memory.spatial_shapes)
    if not 1 <= num_levels <= levels:
        raise UserValueError(f"num_levels must be in 1..{levels} (the memory's levels), got {num_levels}")
    pooled = []
    for level in range(num_levels):
        start = int(memory.level_start_index[level])
        h, w = (int(v) for v in memory.spatial_shapes[level])
        pooled.append(pool(memory.level(level), memory.padding_mask[:, start:start + h * w]))
    return torch.cat(pooled, dim=1)


def region_conditioned_queries(region_embeddings: Tensor, object_queries: Tensor) -> Tensor:
    """Object queries of Multi-View Cross-Attention: ``proj(z) + phi_q`` (Eq. 7).

    Each of the ``n`` region embeddings is repeated ``Q / n`` times consecutively, so query ``j``
    is built from region ``j // (Q / n)`` (as UP-DETR groups its patches), then the learned object
    queries ``phi_q`` are added. When a query is wider than the embedding (Deformable DETR's
    ``[query_pos | tgt]`` of ``2 D`` channels) the embedding is added to its first ``D`` channels, the
    positional part, as the official Siamese Deformable DETR does (its ``tgt`` stays a learned embedding).

    Args:
        region_embeddings: ``[B, n, D]`` region features projected to the transformer width.
        object_queries: ``[Q, D']`` learned object queries (``query_embed.weight``), ``D' >= D``.

    Returns:
        ``[B, Q, D']``.
    """
    num_regions = region_embeddings.shape[1]
    num_queries = object_queries.shape[0]
    if num_regions == 0 or num_queries % num_regions != 0:
        raise UserValueError(
            f"num_queries ({num_queries}) must be a positive multiple of "
            f"the number of regions ({num_regions})"
        )
    repeated = region_embeddings.repeat_interleave(num_queries // num_regions, dim=1)
    extra = object_queries.shape[1] - repeated.shape[2]
    if extra < 0:
        raise UserValueError(
            f"region embeddings ({repeated.shape[2]}) are wider than the queries ({object_queries.shape[1]})"
        )
    if extra:
        repeated = torch.nn.functional.pad(repeated, (0, extra))
    return repeated + object_queries.unsqueeze(0)


def fold_mean_region_embedding(object_queries: Tensor, region_embeddings: Tensor) -> Tensor:
    """The learned object queries plus the mean region embedding of their region slot: the average over views
    of the Multi-View Cross-Attention queries of Eq. 7 (:func:`region_conditioned_queries` is linear in the
    embeddings), for a finetuning that has no region to condition on (a handoff option, not in the paper).

    Query ``i`` belongs to region slot ``j = i // (Q / n)``; its first ``D`` channels get
    ``mean_v proj(z_{v, j})``, the rest (Deformable's ``tgt`` half) stays.

    Args:
        object_queries: ``[Q, D']`` learned object queries (``query_embed.weight``), ``D' >= D``.
        region_embeddings: ``[N, n, D]`` ``proj(z)`` of N views' n regions.

    Returns:
        ``[Q, D']``.
    """
    if region_embeddings.dim() != 3 or region_embeddings.shape[0] == 0:
        raise ValueError(f"region_embeddings must be [N >= 1, n, D], got {tuple(region_embeddings.shape)}")
    mean = region_embeddings.mean(dim=0, keepdim=True).to(object_queries.dtype)
    return region_conditioned_queries(mean, object_queries)[0]
