"""Siamese DETR pretraining of Conditional DETR with 300 queries on ImageNet (official Zx55/SiameseDETR
``configs/selfsup/siamese_detr/main/r50_condtr_300q_syncbn_imgnet_edgebox_rdiscr_gdiscr_gpu32_step30w.py``:
identical to the 100-query config but ``num_queries=300``, i.e. each of the 10 regions repeated 30 times).
Finetune with ``configs/detr/conditional_detr_r50_coco_300q_50ep.py``.
"""
from .siamese_detr_conditional_r50_imagenet_60ep import NUM_REGIONS, dataloader, lr_multiplier, model, optimizer, train

model.num_queries = 300
train.output_dir = "./output/siamese_detr_conditional_r50_imagenet_300q_60ep"
