"""Siamese DETR pretraining of Vanilla DETR (R50, frozen backbone) on COCO train2017 images, 40/60 epochs.

Paper §4.1: total batch 64, AdamW lr 1e-4, wd 1e-4, 60 epochs with a x0.1 drop at epoch 40 (118287
images -> 110895 iterations, drop at 73930; the official COCO configs use 120k / 80k steps at batch 64,
i.e. ~65 / 43 epochs). Gradient clipping 0.1 comes from the official config
(``configs/selfsup/siamese_detr/coco_edgebox_crop_bs4.py``); the paper does not give it.

Loss weights: λ0 = loss_region = 3, λ1 = loss_global = 0.3, as in the official COCO configs
(feature 3, global 0.3). The supplementary §B text gives λ0 / λ1 = 0.3 / 3 for COCO; we follow the
released code. Override with ``model.weight_dict.loss_region=0.3 model.weight_dict.loss_global=3``.
"""
from ..common.data.pretrain_coco import dataloader
from ..common.schedules import NUM_IMAGES, step_schedule
from .siamese_detr_r50_imagenet_60ep import NUM_REGIONS, model, optimizer, train

BATCH_SIZE = 64

model.weight_dict = {
    "loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_region": 3.0, "loss_global": 0.3,
}

dataloader.train.mapper.num_regions = NUM_REGIONS
dataloader.train.total_batch_size = BATCH_SIZE

lr_multiplier, max_iter = step_schedule(60, (40,), NUM_IMAGES["coco_2017_train"], BATCH_SIZE)
train.max_iter = max_iter
train.output_dir = "./output/siamese_detr_r50_coco_60ep"
