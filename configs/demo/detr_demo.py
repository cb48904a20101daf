"""DETR finetuning demo on the built-in synthetic dataset: trains and evaluates (COCO AP) on CPU in minutes.

The model has the same shape as the Siamese DETR pretraining demo ``siamese_detr_pretrain_demo.py`` (both
apply ``configs/common/models/demo_shape.py``), so its checkpoint
(``train.init_checkpoint=output/siamese_detr_pretrain_demo/model_final.pth``) loads the pretrained
transformer, query embedding, input projection and box head. (``make demo`` runs another pair: the
Deformable DETR of ``demo_detector.py`` and its pretraining ``demo_siamese_pretrain.py``.)
There are no pretrained backbone weights offline: the ResNet-18 starts from random weights and is
trained (``freeze_at=0``, backbone at the full learning rate).
"""
from siamese_detr.data.datasets import SYNTHETIC_SHAPES_CLASSES

from ..common.data.detr_builtin import dataloader
from ..common.models.demo_shape import apply_demo_shape
from ..common.models.detr_r50 import model
from ..common.optim import AdamW as optimizer
from ..common.schedules import step_schedule_iters
from ..common.train import train

apply_demo_shape(model)
model.backbone.freeze_at = 0  # random weights: train the whole backbone
model.num_classes = len(SYNTHETIC_SHAPES_CLASSES)

optimizer.lr = 2e-4
optimizer.params.backbone_lr_factor = 1.0

train.max_iter = 300
lr_multiplier = step_schedule_iters(train.max_iter, [240])  # x0.1 after 4/5, as 40/50
train.output_dir = "./output/detr_demo"
train.checkpointer.period = 100
train.eval_period = 300
train.log_period = 20
train.seed = 0
