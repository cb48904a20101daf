"""DETReg pretraining of Conditional DETR (R50, frozen SwAV backbone, 100 queries) on ImageNet, 40/60 epochs —
the comparison setting of the Siamese DETR paper (same variant, queries and epochs as
``configs/siamese_detr/siamese_detr_conditional_r50_imagenet_60ep.py``).

DETReg's own settings: top-30 Selective Search, embedding loss 1 on C3, the variant's class loss (Conditional
DETR: sigmoid focal, class cost / weight 2, L1 5, GIoU 2), lr 1e-4 (the DETR-model default of
``util/default_args.py``), batch 192 (8 x 24), so 400k iterations where the Siamese DETR config's batch 256
takes 300k (``dataloader.train.total_batch_size=256`` with ``train.max_iter`` / ``lr_multiplier`` of that
config compares at equal steps). Post-norm (Conditional DETR has no pre-norm decoder). Sine positions with
DETReg's -0.5 offset, as ``detreg_detr_r50_imagenet_60ep.py`` (DETReg's ``models/position_encoding.py``
applies it to every model; there is no official Conditional DETReg).
"""
from ..common.models.conditional_detr_r50 import model as _detr
from ..common.models.detreg import detreg_from
from .detreg_detr_r50_imagenet_60ep import dataloader, lr_multiplier, optimizer, train  # noqa: F401

model = detreg_from(_detr, embedding_feature="res3", loss_object_embedding=1.0)
model.position_embedding.offset = -0.5
train.output_dir = "./output/detreg_conditional_r50_imagenet_60ep"
