"""Multi-scale Deformable DETR finetuning demo on the built-in synthetic dataset (CPU, minutes).

The demo model shape (``configs/common/models/demo_shape.py``: random ResNet-18, d_model 128, 4 heads,
FFN 256, 2 + 2 layers, 20 queries) with Deformable DETR's multi-scale input: C3-C5 of the ResNet-18
(128 / 256 / 512 channels) + one stride-64 level, 4 sampling points, focal loss, top-100 sigmoid
post-processing. The optimiser follows the official recipe (lr 2e-4, ``sampling_offsets`` /
``reference_points`` at 0.1 x lr) except that the random backbone trains at the full lr (``freeze_at=0``).
``train.init_checkpoint=output/siamese_detr_deformable_pretrain_demo/model_final.pth`` loads the
pretraining demo (``configs/demo/siamese_detr_deformable_pretrain_demo.py``), which has the same shape.
"""
from siamese_detr.data.datasets import SYNTHETIC_SHAPES_CLASSES

from ..common.data.detr_builtin import dataloader
from ..common.models.deformable_detr_r50 import LINEAR_PROJ_LR_FACTORS, model
from ..common.models.demo_shape import apply_demo_shape
from ..common.optim import AdamW as optimizer
from ..common.schedules import step_schedule_iters
from ..common.train import train

apply_demo_shape(model)
model.backbone.freeze_at = 0  # random weights: train the whole backbone
model.num_classes = len(SYNTHETIC_SHAPES_CLASSES)

optimizer.lr = 2e-4
optimizer.params.backbone_lr_factor = 1.0
optimizer.params.lr_factors_by_keyword = dict(LINEAR_PROJ_LR_FACTORS)

train.max_iter = 300
lr_multiplier = step_schedule_iters(train.max_iter, [240])  # x0.1 after 4/5, as 40/50
train.output_dir = "./output/deformable_detr_demo"
train.checkpointer.period = 100
train.eval_period = 300
train.log_period = 20
train.seed = 0
