"""DETReg pretraining of multi-scale Deformable DETR on COCO train2017 images — the official run.

Official ``configs/DETReg_top30_coco.sh``: as ``detreg_deformable_ms_r50_imagenet_5ep.py`` (``coco_pretrain``
uses the same ImageNet-size transform) with the default 50 epochs and the lr divided by 10 at epoch 40, batch
192. Proposal store: ``coco_2017_train.selective_search.proposals``.
"""
import os

from ..common.data.pretrain_coco import DATASETS_ROOT, dataloader
from ..common.schedules import NUM_IMAGES, step_schedule
from .detreg_deformable_ms_r50_imagenet_5ep import BATCH_SIZE, detreg_mapper, model, optimizer, train

dataloader.train.mapper = detreg_mapper
dataloader.train.mapper.proposal_source.path = os.path.join(
    DATASETS_ROOT, "proposals", "coco_2017_train.selective_search.proposals"
)
dataloader.train.total_batch_size = BATCH_SIZE

lr_multiplier, max_iter = step_schedule(50, (40,), NUM_IMAGES["coco_2017_train"], BATCH_SIZE)
train.max_iter = max_iter
train.output_dir = "./output/detreg_deformable_ms_r50_coco_50ep"
