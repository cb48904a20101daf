"""Optimizer parameter groups for DETR-style training."""
from typing import Dict, List

import torch.nn as nn


def detr_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    backbone_lr_factor: float = 0.1,
    backbone_prefix: str = "backbone.",
) -> List[Dict]:
    """Two parameter groups: the backbone at ``base_lr * backbone_lr_factor``, the rest at ``base_lr``.

    DETR trains the backbone at 1e-5 and the transformer at 1e-4 (factor 0.1); Siamese DETR's
    finetuning uses 5e-5 / 1e-4 for Vanilla DETR (factor 0.5, paper §4.1). Frozen parameters
    (``requires_grad=False``) are left out. Works through DDP wrappers (``module.`` prefix).
    """
    backbone, rest = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        name = name[len("module."):] if name.startswith("module.") else name
        (backbone if name.startswith(backbone_prefix) else rest).append(param)
    groups = [{"params": rest, "lr": base_lr, "weight_decay": weight_decay}]
    if backbone:
        groups.append({"params": backbone, "lr": base_lr * backbone_lr_factor, "weight_decay": weight_decay})
    return groups
