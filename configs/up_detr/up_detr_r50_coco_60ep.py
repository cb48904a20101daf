"""UP-DETR pretraining of Vanilla DETR (R50, frozen SwAV backbone) on COCO train2017 images, 40/60 epochs.

UP-DETR itself only pretrains on ImageNet; this is the COCO setting of the Siamese DETR paper's comparison,
as the Siamese DETR authors' UP-DETR configs (github Zx55/SiameseDETR ``configs/selfsup/updetr/coco_bs4.py``
and ``main/r50_condtr_100q_coco_gpu16_step12w.py``): batch 64, short side 480..800 (max 1333), CE 1 / L1 5 /
GIoU 2 / feature 1, mask ratio 0.1; the schedule of ``configs/siamese_detr/siamese_detr_r50_coco_60ep.py``
(60 epochs, drop at 40; the official 120k / 80k iterations at batch 64 are ~65 / 43 epochs).
"""
from detectron2.config import LazyCall as L

from siamese_detr.data.detr_mapper import detr_train_augmentation

from ..common.data.pretrain_coco import dataloader
from ..common.schedules import NUM_IMAGES, step_schedule
from .up_detr_r50_imagenet_60ep import NUM_PATCHES, model, optimizer, train, up_detr_mapper

BATCH_SIZE = 64

model.transformer.normalize_before = False  # the Siamese DETR authors' UP-DETR runs are post-norm

dataloader.train.mapper = up_detr_mapper
dataloader.train.mapper.num_patches = NUM_PATCHES
dataloader.train.mapper.augmentation = L(detr_train_augmentation)(flip=False)  # 480..800, max 1333, no flip
dataloader.train.total_batch_size = BATCH_SIZE

lr_multiplier, max_iter = step_schedule(60, (40,), NUM_IMAGES["coco_2017_train"], BATCH_SIZE)
train.max_iter = max_iter
train.output_dir = "./output/up_detr_r50_coco_60ep"
