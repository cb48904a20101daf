"""Optimizer parameter groups for DETR-style training."""
from typing import Dict, List, Optional

import torch.nn as nn


def detr_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    backbone_lr_factor: float = 0.1,
    backbone_prefix: str = "backbone.",
    lr_factors_by_keyword: Optional[Dict[str, float]] = None,
) -> List[Dict]:
    """Parameter groups for ``torch.optim``: the backbone at ``base_lr * backbone_lr_factor``, the rest at
    ``base_lr``, plus one group per keyword of ``lr_factors_by_keyword`` (below).

    DETR trains the backbone at 1e-5 and the transformer at 1e-4 (factor 0.1); Siamese DETR's
    finetuning uses 5e-5 / 1e-4 for Vanilla DETR (factor 0.5, paper §4.1). Frozen parameters
    (``requires_grad=False``) are left out. Works through DDP wrappers (``module.`` prefix).

    ``lr_factors_by_keyword`` gives non-backbone parameters whose name CONTAINS a keyword their own group at
    ``base_lr * factor`` (first matching keyword wins), e.g. Deformable DETR's
    ``{"sampling_offsets": 0.1, "reference_points": 0.1}`` (official ``main.py``: ``lr_linear_proj_names``,
    ``lr_linear_proj_mult``).

    Returns:
        ``[{"params": [...], "lr": float, "weight_decay": weight_decay}, ...]`` in this order: the rest (always
        present, possibly with no params), each keyword group that has parameters (in the dict's order), then
        the backbone (parameters whose name, without ``module.``, starts with ``backbone_prefix``; left out
        when there are none).
    """
    keyword_groups: Dict[str, List] = {k: [] for k in (lr_factors_by_keyword or {})}
    backbone, rest = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        name = name[len("module."):] if name.startswith("module.") else name
        keyword = next((k for k in keyword_groups if k in name), None)
        if keyword is not None and not name.startswith(backbone_prefix):
            keyword_groups[keyword].append(param)
            continue
        (backbone if name.startswith(backbone_prefix) else rest).append(param)
    groups = [{"params": rest, "lr": base_lr, "weight_decay": weight_decay}]
    for keyword, params in keyword_groups.items():
        if params:
            factor = lr_factors_by_keyword[keyword]
            groups.append({"params": params, "lr": base_lr * factor, "weight_decay": weight_decay})
    if backbone:
        groups.append({"params": backbone, "lr": base_lr * backbone_lr_factor, "weight_decay": weight_decay})
    return groups
