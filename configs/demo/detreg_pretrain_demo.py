"""DETReg pretraining demo on the built-in ``synthetic_shapes_train`` (CPU, a few minutes).

A tiny version of ``configs/detreg/detreg_detr_r50_imagenet_60ep.py`` with the shape of
``siamese_detr_pretrain_demo.py`` (random frozen ResNet-18, d_model 128, 2 + 2 layers, 20 queries; the
embedding level res3 has 128 channels), post-norm so the checkpoint loads into ``configs/demo/detr_demo.py``:
top-10 proposals of online Selective Search on the image's short side resized to 128 (as the official
``topk``), 32 px crops, flip + short side 128-160 (max 224) or a scaled-down crop branch, batch 4, 150
iterations.
"""
from detectron2.config import LazyCall as L

from siamese_detr.data.detr_mapper import detr_crop_augmentation, detr_train_augmentation
from siamese_detr.data.proposals.sources import OnlineProposals

from ..common.data.pretrain_builtin import dataloader
from ..common.models.demo_shape import apply_demo_shape
from ..common.schedules import step_schedule_iters
from ..detreg.detreg_detr_r50_imagenet_60ep import detreg_mapper, model, optimizer, train

DEMO_PROPOSALS = 10  # K <= the 20 queries

apply_demo_shape(model)
model.transformer.normalize_before = False
model.allow_random_backbone = True

dataloader.train.mapper = detreg_mapper
dataloader.train.mapper.proposal_source = L(OnlineProposals)(method="selective_search", resize=128)
dataloader.train.mapper.num_proposals = DEMO_PROPOSALS
dataloader.train.mapper.crop_size = 32
# DETR's two branches at the demo's scale (official: 320..480 max 600; crop branch 400/500/600, crop 384-600)
dataloader.train.mapper.augmentation = L(detr_train_augmentation)(min_sizes=(128, 144, 160), max_size=224)
dataloader.train.mapper.augmentation_with_crop = L(detr_crop_augmentation)(
    min_sizes=(128, 144, 160), max_size=224, crop_resize_sizes=(128, 160, 192), crop_size_range=(96, 160)
)
dataloader.train.total_batch_size = 4

optimizer.lr = 1e-4
train.max_iter = 150
lr_multiplier = step_schedule_iters(train.max_iter, [100])
train.output_dir = "./output/detreg_pretrain_demo"
train.checkpointer.period = 50
train.log_period = 10
train.eval_period = 0
train.seed = 0
