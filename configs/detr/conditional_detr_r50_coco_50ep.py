"""Conditional DETR R50 finetuning on COCO, 40/50 epochs, batch 32, 100 queries.

Siamese DETR paper §4.1: Conditional DETR is finetuned with the 40/50 schedule, transformer lr 1e-4, backbone
5e-5, batch 32 (also Zx55/SiameseDETR ``downstream_finetune/conditionaldetr/train_coco.sh``: ``--lr 1e-4
--lr_backbone 5e-5 --num_queries 100``, 50 epochs / ``lr_drop 40`` from its ``main.py``); weight decay 1e-4
and gradient clipping 0.1 from the official Atten4Vis/ConditionalDETR ``main.py``. To train from an ImageNet
backbone as the official Conditional DETR (backbone lr 1e-5, batch 16: 8 GPUs x 2 in its
``scripts/conddetr_r50_epoch50.sh``), set ``optimizer.params.backbone_lr_factor=0.1
dataloader.train.total_batch_size=16`` and double ``train.max_iter``, ``lr_multiplier.num_updates`` and
``lr_multiplier.milestones`` (the same epochs; the milestones count in units of ``num_updates``, so doubling
only the first two would move the lr drop to epoch 20).

Initialise from a pretraining checkpoint with
``train.init_checkpoint=output/siamese_detr_conditional_r50_imagenet_60ep/model_final.pth``, or evaluate an
official checkpoint converted by ``tools/convert_checkpoint.py --format conditional_detr`` (the 300-query
releases with ``conditional_detr_r50_coco_300q_50ep.py``).
"""
from ..common.data.detr_coco import dataloader
from ..common.models.conditional_detr_r50 import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import NUM_IMAGES, step_schedule
from ..common.train import train

BATCH_SIZE = 32
dataloader.train.total_batch_size = BATCH_SIZE
lr_multiplier, train.max_iter = step_schedule(50, (40,), NUM_IMAGES["coco_2017_train"], BATCH_SIZE)

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
optimizer.params.backbone_lr_factor = 0.5  # 5e-5
train.clip_grad.max_norm = 0.1

model.num_classes = 80
model.num_queries = 100
train.output_dir = "./output/conditional_detr_r50_coco_50ep"
train.checkpointer.period = 10000
train.eval_period = 20000
