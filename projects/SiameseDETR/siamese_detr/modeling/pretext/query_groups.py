"""Grouped patch queries of UP-DETR (Dai et al., arXiv 2011.09094 extended version, §3.1 "Multi-query Patches").

``n`` query patches, each repeated ``Q / n`` times consecutively (query ``j`` belongs to group
``j // (Q / n)``, the order of :func:`~.region_features.region_conditioned_queries`). The decoder
self-attention is restricted to queries of the same group (the paper's "Attention Mask", §3.1.2, Eq. 3),
and the patch feature of a query is dropped at random (official ``models/updetr.py`` ``mask_ratio``; not
described in the paper).
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from ...utils.user_errors import UserValueError

__all__ = ["group_attention_mask", "query_feature_dropout"]


def group_attention_mask(num_queries: int, num_groups: int, device=None) -> Tensor:
    """Block-diagonal decoder self-attention mask between query groups (UP-DETR Eq. 3, True where
    ``X_ij = -inf``).

    Args:
        num_queries: ``Q``; num_groups: ``n``, must divide ``Q``.

    Returns:
        bool ``[Q, Q]``: True (attention NOT allowed) exactly where queries ``i`` and ``j`` belong to different
        groups (``i // (Q / n) != j // (Q / n)``). The official ``UPDETR.__init__`` loops over
        ``range(Q / n)`` instead of ``range(n)``: equal to this mask when ``n <= Q / n`` (10 x 10; the extra
        blocks fall outside the matrix), but for ``n > Q / n`` the queries after the first ``(Q / n)^2``
        attend to nothing (NaN). This mask is right for every ``n`` dividing ``Q``.
    """
    if num_groups < 1 or num_queries % num_groups != 0:
        raise UserValueError(f"num_groups ({num_groups}) must be a positive divisor of num_queries ({num_queries})")
    group = torch.arange(num_queries, device=device) // (num_queries // num_groups)
    return group[:, None] != group[None, :]


def query_feature_dropout(
    features: Tensor, drop_ratio: float, generator: Optional[torch.Generator] = None
) -> Tuple[Tensor, Tensor]:
    """Zero each query's patch feature with probability ``drop_ratio`` (UP-DETR ``mask_ratio`` = 0.1).

    As the official ``features * (rand(Q, B, 1) > mask_ratio)``: an independent draw per query and image,
    no rescaling of the kept ones (unlike ``nn.Dropout``); the learned object query is added afterwards, so a
    dropped query keeps only its object-query embedding. The draw is ``[B, Q]`` here (official ``[Q, B]``):
    the same distribution, but one seed drops other queries than in the official code.

    Args:
        features: ``[B, Q, D]`` patch features already repeated per query.
        drop_ratio: probability in ``[0, 1)``.
        generator: optional generator on ``features``' device.

    Returns:
        ``(features * keep, keep)`` with ``keep`` float ``[B, Q, 1]`` of 0 / 1.
    """
    if not 0.0 <= drop_ratio < 1.0:
        raise UserValueError(f"drop_ratio must be in [0, 1), got {drop_ratio}")
    batch, queries = features.shape[:2]
    draw = torch.rand(batch, queries, 1, generator=generator, device=features.device)
    keep = (draw > drop_ratio).to(features.dtype)
    return features * keep, keep
