"""Conditional DETR finetuning demo on the built-in synthetic dataset (CPU, minutes).

The Vanilla demo ``detr_demo.py`` (same data, backbone, shape, optimiser and schedule) with Conditional DETR's
transformer, sigmoid focal class loss / focal matching cost and top-100 sigmoid post-processing
(``configs/common/models/conditional_detr_r50.py``). Its shape equals the Conditional pretraining demo's,
so ``train.init_checkpoint=output/siamese_detr_conditional_pretrain_demo/model_final.pth`` loads the pretrained
transformer, query embedding, input projection and box head.
"""
from ..common.models.conditional_detr_r50 import as_conditional_detr
from .detr_demo import dataloader, lr_multiplier, model, optimizer, train

as_conditional_detr(model)
train.output_dir = "./output/conditional_detr_demo"
