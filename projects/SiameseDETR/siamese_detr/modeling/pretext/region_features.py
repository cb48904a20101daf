"""Region features and region-conditioned object queries of Siamese DETR (paper §3.3, Eq. 4-7).

Coordinate conventions: every box here is ``xyxy`` in ABSOLUTE pixels of the (resized, augmented)
view it belongs to — the same frame as the view tensor fed to the backbone, before padding.
"""

from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align

__all__ = [
    "average_pooled_roi_features",
    "masked_average_pool",
    "query_to_region_index",
    "region_conditioned_queries",
]


def average_pooled_roi_features(
    features: Tensor, boxes: Sequence[Tensor], stride: int, output_size: int = 7
) -> Tensor:
    """Object-level region features z = avgpool(RoIAlign(h, b)) (paper Eq. 4, "global average pooling").

    Args:
        features: backbone feature map h of the padded batch, ``[B, C, H/stride, W/stride]``.
        boxes: ``B`` tensors ``[n_b, 4]``, xyxy absolute in input-image pixels (the jittered
            query boxes of each image).
        stride: the feature map's stride; RoIAlign uses ``spatial_scale = 1 / stride``.
        output_size: RoIAlign grid (7x7 as in the official code).

    Returns:
        ``[sum_b n_b, C]`` average-pooled region features, rows in the order of ``boxes``.
    """
    if len(boxes) != features.shape[0]:
        raise ValueError(f"got {len(boxes)} box tensors for a batch of {features.shape[0]} feature maps")
    boxes = [b.to(device=features.device, dtype=features.dtype) for b in boxes]
    pooled = roi_align(
        features, boxes, output_size=output_size, spatial_scale=1.0 / stride, sampling_ratio=-1, aligned=True
    )  # [N, C, 7, 7]
    return pooled.mean(dim=(2, 3))


def masked_average_pool(memory: Tensor, padding_mask: Tensor) -> Tensor:
    """Average of the encoder memory over the non-padded tokens (the global context c, Eq. 11).

    Args:
        memory: ``[B, HW, C]`` encoder output.
        padding_mask: ``[B, HW]`` bool, True where the token comes from padding.

    Returns:
        ``[B, C]``.
    """
    valid = (~padding_mask).to(memory.dtype).unsqueeze(-1)  # [B, HW, 1]
    count = valid.sum(dim=1)
    if bool((count == 0).any()):
        raise ValueError("an image has no valid (non-padded) token in the encoder memory")
    return (memory * valid).sum(dim=1) / count


def region_conditioned_queries(region_embeddings: Tensor, object_queries: Tensor) -> Tensor:
    """Query positional input of Multi-View Cross-Attention: ``proj(z) + phi_q`` (Eq. 7).

    Each of the ``n`` region embeddings is repeated ``Q / n`` times consecutively, so query ``j``
    is built from region ``j // (Q / n)`` (as UP-DETR groups its patches), then the learned object
    queries ``phi_q`` are added.

    Args:
        region_embeddings: ``[B, n, D]`` region features projected to the transformer width.
        object_queries: ``[Q, D]`` learned object queries (``query_embed.weight``).

    Returns:
        ``[B, Q, D]``.
    """
    num_regions = region_embeddings.shape[1]
    num_queries = object_queries.shape[0]
    if num_regions == 0 or num_queries % num_regions != 0:
        raise ValueError(
            f"num_queries ({num_queries}) must be a positive multiple of "
            f"the number of regions ({num_regions})"
        )
    repeated = region_embeddings.repeat_interleave(num_queries // num_regions, dim=1)
    return repeated + object_queries.unsqueeze(0)


def query_to_region_index(num_queries: int, num_regions: int, device=None) -> Tensor:
    """Region index each query is built from (``[Q]`` long), see :func:`region_conditioned_queries`."""
    return torch.arange(num_queries, device=device) // (num_queries // num_regions)
