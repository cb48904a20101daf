"""Vanilla DETR R50 finetuning on COCO, 120/150-epoch schedule, batch 32 (Siamese DETR paper §4.1).

Transformer lr 1e-4, backbone 5e-5. Initialise from a pretraining checkpoint with
``train.init_checkpoint=output/siamese_detr_r50_imagenet_60ep/model_final.pth`` (or an ImageNet
backbone converted with tools/convert_checkpoint.py).
"""
from ..common.data.detr_coco import dataloader
from ..common.models.detr_r50 import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import NUM_IMAGES, step_schedule
from ..common.train import train

BATCH_SIZE = 32
dataloader.train.total_batch_size = BATCH_SIZE
lr_multiplier, train.max_iter = step_schedule(150, (120,), NUM_IMAGES["coco_2017_train"], BATCH_SIZE)

optimizer.lr = 1e-4
optimizer.params.backbone_lr_factor = 0.5

model.num_classes = 80
train.output_dir = "./output/detr_r50_coco_150ep"
train.checkpointer.period = 10000
train.eval_period = 20000
