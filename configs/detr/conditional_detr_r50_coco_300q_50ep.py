"""Conditional DETR R50 finetuning on COCO with 300 queries (Siamese DETR paper §4.1 "We also use 300 queries
in Conditional DETR"; the official Atten4Vis/ConditionalDETR ``main.py`` default ``--num_queries 300``);
otherwise as ``conditional_detr_r50_coco_50ep.py``. Pretrain with
``configs/siamese_detr/siamese_detr_conditional_r50_imagenet_300q_60ep.py`` for the handoff.
"""
from .conditional_detr_r50_coco_50ep import dataloader, lr_multiplier, model, optimizer, train

model.num_queries = 300
train.output_dir = "./output/conditional_detr_r50_coco_300q_50ep"
