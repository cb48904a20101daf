"""DETReg pretraining of Conditional DETR (R50, frozen SwAV backbone, 100 queries) on ImageNet, 40/60 epochs —
the comparison setting of the Siamese DETR paper (same variant, queries and schedule as
``configs/siamese_detr/siamese_detr_conditional_r50_imagenet_60ep.py``).

DETReg's own settings: top-30 Selective Search, embedding loss 1 on C3, the variant's class loss (Conditional
DETR: sigmoid focal, class cost / weight 2, L1 5, GIoU 2), lr 1e-4 (the DETR-model default of
``util/default_args.py``), batch 192 (8 x 24). Post-norm (Conditional DETR has no pre-norm decoder).
"""
from ..common.models.conditional_detr_r50 import model as _detr
from ..common.models.detreg import detreg_from
from .detreg_detr_r50_imagenet_60ep import dataloader, lr_multiplier, optimizer, train  # noqa: F401

model = detreg_from(_detr, embedding_feature="res3", loss_object_embedding=1.0)
train.output_dir = "./output/detreg_conditional_r50_imagenet_60ep"
