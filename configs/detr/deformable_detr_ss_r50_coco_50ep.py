"""Single-scale Deformable DETR R50 (C5, official ``configs/r50_deformable_detr_single_scale.sh``) finetuning on
COCO, 40/50 epochs, batch 32; optimiser as ``deformable_detr_r50_coco_50ep.py``. Pretraining checkpoint:
``output/siamese_detr_deformable_ss_r50_imagenet_60ep/model_final.pth``."""
from ..common.data.detr_coco import dataloader
from ..common.models.deformable_detr_ss_r50 import model
from ..common.schedules import NUM_IMAGES, step_schedule
from .deformable_detr_r50_coco_50ep import optimizer, train

BATCH_SIZE = 32
dataloader.train.total_batch_size = BATCH_SIZE
lr_multiplier, train.max_iter = step_schedule(50, (40,), NUM_IMAGES["coco_2017_train"], BATCH_SIZE)

model.num_classes = 80
train.output_dir = "./output/deformable_detr_ss_r50_coco_50ep"
