"""Siamese DETR pretraining of single-scale Deformable DETR ("Deform-SS", R50 C5, frozen SwAV backbone) on
ImageNet, 40/60 epochs: mirrors the official Zx55/SiameseDETR
``configs/selfsup/siamese_detr/main/r50_deformtr_ss_300q_syncbn_imgnet_edgebox_rdiscr_gdiscr_gpu64_step30w.py``
(``num_feature_levels = 1``, C5 only, 2048-d region features); everything else as
``siamese_detr_deformable_ms_r50_imagenet_60ep.py``. Finetune with ``configs/detr/deformable_detr_ss_r50_*``.
"""
from ..common.models.deformable_detr_ss_r50 import model as _detr
from ..common.models.siamese_detr import siamese_detr_from
from .siamese_detr_deformable_ms_r50_imagenet_60ep import (
    NUM_REGIONS,
    dataloader,
    lr_multiplier,
    model as _ms_model,
    optimizer,
    train,
)

model = siamese_detr_from(_detr, num_regions=NUM_REGIONS, loss_region=3.0, loss_global=10.0)
model.criterion = _ms_model.criterion
model.postprocess = _ms_model.postprocess  # softmax objectness, as the criterion
model.weight_dict = dict(_ms_model.weight_dict)

train.output_dir = "./output/siamese_detr_deformable_ss_r50_imagenet_60ep"
