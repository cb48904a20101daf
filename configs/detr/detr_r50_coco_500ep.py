"""Vanilla DETR R50 on COCO as in Carion et al.: 400/500 epochs, batch 64, backbone lr 1e-5."""
from ..common.schedules import NUM_IMAGES, step_schedule
from .detr_r50_coco_150ep import dataloader, model, optimizer, train  # noqa: F401

BATCH_SIZE = 64
dataloader.train.total_batch_size = BATCH_SIZE
lr_multiplier, train.max_iter = step_schedule(500, (400,), NUM_IMAGES["coco_2017_train"], BATCH_SIZE)
optimizer.params.backbone_lr_factor = 0.1
train.output_dir = "./output/detr_r50_coco_500ep"
