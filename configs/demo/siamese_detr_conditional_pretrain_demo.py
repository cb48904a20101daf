"""Siamese DETR pretraining demo of Conditional DETR on the built-in ``synthetic_shapes_train`` (CPU, minutes).

The Vanilla pretraining demo ``siamese_detr_pretrain_demo.py`` (same data, proposals, backbone, shape, loss
weights and schedule; objectness with softmax cross-entropy as the official Siamese DETR pretext head for every
variant) with Conditional DETR's transformer: the region queries enter as ``query_pos`` and so move the
reference points (official ``necks/conditional_tr.py``). ``conditional_detr_demo.py`` finetunes its
``model_final.pth`` through ``train.init_checkpoint``.
"""
from ..common.models.conditional_detr_r50 import conditional_transformer_like
from .siamese_detr_pretrain_demo import dataloader, lr_multiplier, model, optimizer, train

model.transformer = conditional_transformer_like(model.transformer)
train.output_dir = "./output/siamese_detr_conditional_pretrain_demo"
