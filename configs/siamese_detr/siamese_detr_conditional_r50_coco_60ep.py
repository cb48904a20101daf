"""Siamese DETR pretraining of Conditional DETR (R50, frozen backbone, 100 queries) on COCO train2017 images.

Mirrors the official Zx55/SiameseDETR ``configs/selfsup/siamese_detr/main/
r50_condtr_100q_syncbn_coco_edgebox_rdiscr_gdiscr_gpu16_step12w.py``: as the ImageNet Conditional config but
batch 64 (16 GPUs x 4), 120k steps with the drop at 80k (~65 / 43 epochs; we use the paper's 40/60 epochs as
the Vanilla COCO config does) and loss weights ``loss_feature 3`` (λ0) / ``loss_enc_global_contra 0.3`` (λ1),
``loss_ce 1, loss_bbox 5, loss_giou 2``.
"""
from ..common.models.conditional_detr_r50 import conditional_transformer_like
from .siamese_detr_r50_coco_60ep import NUM_REGIONS, dataloader, lr_multiplier, model, optimizer, train

model.transformer = conditional_transformer_like(model.transformer)
model.num_queries = 100
model.weight_dict = {
    "loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_region": 3.0, "loss_global": 0.3,
}
train.output_dir = "./output/siamese_detr_conditional_r50_coco_60ep"
