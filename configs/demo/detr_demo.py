"""DETR finetuning demo on the built-in synthetic dataset: trains and evaluates (COCO AP) on CPU in minutes.

The model has the same shape as the Siamese DETR pretraining demo (``DEMO_*`` of
``siamese_detr_pretrain_demo.py``), so ``train.init_checkpoint=output/demo/siamese_detr_pretrain/model_final.pth``
loads the pretrained transformer, query embedding, input projection and box head (``make demo`` does that).
There are no pretrained backbone weights offline: the ResNet-18 starts from random weights and is
trained (``freeze_at=0``, backbone at the full learning rate).
"""
from ..common.data.detr_builtin import dataloader
from ..common.models.detr_r50 import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import step_schedule_iters
from ..common.train import train
from .siamese_detr_pretrain_demo import (
    DEMO_D_MODEL,
    DEMO_DEPTH,
    DEMO_FFN,
    DEMO_LAYERS,
    DEMO_NHEAD,
    DEMO_QUERIES,
)
from siamese_detr.data.datasets import SYNTHETIC_SHAPES_CLASSES

model.backbone.stages.depth = DEMO_DEPTH
model.backbone.freeze_at = 0
model.position_embedding.num_pos_feats = DEMO_D_MODEL // 2
model.transformer.d_model = DEMO_D_MODEL
model.transformer.nhead = DEMO_NHEAD
model.transformer.dim_feedforward = DEMO_FFN
model.transformer.num_encoder_layers = DEMO_LAYERS
model.transformer.num_decoder_layers = DEMO_LAYERS
model.num_queries = DEMO_QUERIES
model.num_classes = len(SYNTHETIC_SHAPES_CLASSES)

optimizer.lr = 2e-4
optimizer.params.backbone_lr_factor = 1.0

train.max_iter = 300
lr_multiplier = step_schedule_iters(train.max_iter, [240])  # x0.1 after 4/5, as 40/50
train.output_dir = "./output/demo/detr_finetune"
train.checkpointer.period = 100
train.eval_period = 300
train.log_period = 20
train.seed = 0
