"""Hybrid matching (Jia et al., "DETRs with Hybrid Matching", CVPR 2023, §3.2, the "hybrid branch scheme").

Training adds a second group of ``Q2`` learned queries next to the ``Q1`` ordinary ones. The ordinary group
keeps DETR's one-to-one Hungarian loss; the extra group is matched one-to-one against every ground-truth box
repeated ``K`` times, so each object gets ``K`` positive queries there (the "one-to-many" branch). The two
groups share the encoder, decoder and heads but cannot see each other in the decoder's self-attention, and
inference uses the ordinary group alone: the detector stays NMS-free and its test-time output is exactly that
of the ``Q1`` queries. The extra positives speed up training of the shared weights (the paper's Eq. 4:
``L = L_one2one(Q1) + lambda * L_one2many(Q2, K x targets)``).

Helpers for :class:`~siamese_detr.modeling.meta_arch.detr.DETR` (``num_queries_one2many > 0``).
"""

from typing import Dict, List, Tuple

import torch

from ..utils.user_errors import UserValueError

__all__ = ["group_self_attn_mask", "split_query_groups", "repeat_targets"]


def group_self_attn_mask(num_one2one: int, num_one2many: int, device=None) -> torch.Tensor:
    """Bool ``[Q1 + Q2, Q1 + Q2]`` self-attention mask, True = blocked: a query attends only to the queries
    of its own group (the first ``Q1`` rows / columns are the one-to-one group)."""
    total = num_one2one + num_one2many
    group = torch.arange(total, device=device) >= num_one2one
    return group[:, None] != group[None, :]


def _split(outputs: Dict, num_one2one: int) -> Tuple[Dict, Dict]:
    first = {k: outputs[k][:, :num_one2one] for k in ("pred_logits", "pred_boxes")}
    second = {k: outputs[k][:, num_one2one:] for k in ("pred_logits", "pred_boxes")}
    return first, second


def split_query_groups(outputs: Dict, num_one2one: int) -> Tuple[Dict, Dict]:
    """Split the head outputs of the concatenated queries into the two groups.

    Args:
        outputs: ``{"pred_logits": [B, Q1 + Q2, K'], "pred_boxes": [B, Q1 + Q2, 4] cxcywh normalised,
            "aux_outputs" (optional): [...]}`` (:meth:`DETR.head_outputs`).
        num_one2one: ``Q1``.

    Returns:
        ``(one2one, one2many)``, each in the same format with ``Q1`` / ``Q2`` queries.
    """
    one2one, one2many = _split(outputs, num_one2one)
    if "aux_outputs" in outputs:
        pairs = [_split(aux, num_one2one) for aux in outputs["aux_outputs"]]
        one2one["aux_outputs"] = [a for a, _ in pairs]
        one2many["aux_outputs"] = [b for _, b in pairs]
    unsupported = set(outputs) - {"pred_logits", "pred_boxes", "aux_outputs"}
    if unsupported:
        raise UserValueError(f"hybrid matching cannot split outputs {sorted(unsupported)} (e.g. two-stage proposals)")
    return one2one, one2many


def repeat_targets(targets: List[Dict[str, torch.Tensor]], repeat: int) -> List[Dict[str, torch.Tensor]]:
    """Every target box and label repeated ``repeat`` times (``boxes [N, 4] -> [repeat * N, 4]``, the copies
    in blocks: ``[t_0..t_{N-1}, t_0..t_{N-1}, ...]``); other keys are kept as they are."""
    if repeat < 1:
        raise UserValueError(f"model.k_one2many must be >= 1, got {repeat}")
    out = []
    for t in targets:
        rep = dict(t)
        rep["labels"] = t["labels"].repeat(repeat)
        rep["boxes"] = t["boxes"].repeat(repeat, 1)
        out.append(rep)
    return out
