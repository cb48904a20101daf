"""Multi-scale Deformable DETR R50 finetuning on COCO, 40/50 epochs, batch 32.

Official fundamentalvision/Deformable-DETR ``main.py`` / README (commit 11169a6): AdamW lr 2e-4, backbone
2e-5, ``sampling_offsets`` / ``reference_points`` at 0.1 x lr, weight decay 1e-4, gradient clipping 0.1,
50 epochs with the lr divided by 10 at epoch 40, total batch 32; Siamese DETR paper §4.1 finetunes
Deformable DETR with the same 40/50 schedule, 2e-4 / 2e-5 and batch 32. Initialise from a pretraining
checkpoint with ``train.init_checkpoint=output/siamese_detr_deformable_ms_r50_imagenet_60ep/model_final.pth``,
or evaluate an official checkpoint converted by ``tools/convert_checkpoint.py --format deformable_detr``.
"""
from ..common.data.detr_coco import dataloader
from ..common.models.deformable_detr_r50 import LINEAR_PROJ_LR_FACTORS, model
from ..common.optim import AdamW as optimizer
from ..common.schedules import NUM_IMAGES, step_schedule
from ..common.train import train

BATCH_SIZE = 32
dataloader.train.total_batch_size = BATCH_SIZE
lr_multiplier, train.max_iter = step_schedule(50, (40,), NUM_IMAGES["coco_2017_train"], BATCH_SIZE)

optimizer.lr = 2e-4
optimizer.weight_decay = 1e-4
optimizer.params.backbone_lr_factor = 0.1
optimizer.params.lr_factors_by_keyword = dict(LINEAR_PROJ_LR_FACTORS)
train.clip_grad.max_norm = 0.1

model.num_classes = 80
train.output_dir = "./output/deformable_detr_r50_coco_50ep"
train.checkpointer.period = 10000
train.eval_period = 20000
