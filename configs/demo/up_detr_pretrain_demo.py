"""UP-DETR pretraining demo on the built-in ``synthetic_shapes_train`` (CPU, a few minutes).

A tiny version of ``configs/up_detr/up_detr_r50_imagenet_60ep.py`` with the shape of
``siamese_detr_pretrain_demo.py`` (``configs/common/models/demo_shape.py``: random frozen ResNet-18, d_model
128, 2 + 2 layers, 20 queries), post-norm so the checkpoint loads into ``configs/demo/detr_demo.py`` through
``train.init_checkpoint``: 5 patches (4 queries each), 32 px patches, short side 128-160 (max 224), batch 4,
150 iterations.
"""
from detectron2.config import LazyCall as L

from siamese_detr.data.up_detr_mapper import up_detr_augmentation

from ..common.data.pretrain_builtin import dataloader
from ..common.models.demo_shape import apply_demo_shape
from ..common.schedules import step_schedule_iters
from ..up_detr.up_detr_r50_imagenet_60ep import model, optimizer, train, up_detr_mapper

DEMO_PATCHES = 5

apply_demo_shape(model)
model.transformer.normalize_before = False  # as the finetune demo
# no pretrained weights offline: the frozen backbone is random on purpose (a real run initialises it)
model.allow_random_backbone = True
model.num_patches = DEMO_PATCHES

dataloader.train.mapper = up_detr_mapper
dataloader.train.mapper.num_patches = DEMO_PATCHES
dataloader.train.mapper.patch_size = 32
dataloader.train.mapper.augmentation = L(up_detr_augmentation)(min_sizes=(128, 144, 160), max_size=224)
dataloader.train.total_batch_size = 4

optimizer.lr = 1e-4
train.max_iter = 150
lr_multiplier = step_schedule_iters(train.max_iter, [100])
train.output_dir = "./output/up_detr_pretrain_demo"
train.checkpointer.period = 50
train.log_period = 10
train.eval_period = 0
train.seed = 0
