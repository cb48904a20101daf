"""AdamW as in DETR: lr 1e-4, weight decay 1e-4, backbone at a fraction of the lr."""
import torch
from detectron2.config import LazyCall as L

from siamese_detr.solver import detr_param_groups

AdamW = L(torch.optim.AdamW)(
    params=L(detr_param_groups)(
        # model is filled in by the training script
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        backbone_lr_factor=0.1,
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=1e-4,
)
