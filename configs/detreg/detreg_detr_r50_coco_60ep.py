"""DETReg pretraining of Vanilla DETR (R50, frozen SwAV backbone) on COCO train2017 images, top-30 Selective
Search, 40/60 epochs at batch 64 (the Siamese DETR COCO setting, ``configs/siamese_detr/
siamese_detr_r50_coco_60ep.py``; official ``configs/DETReg_top30_coco.sh`` is the Deformable DETR run).

The official ``coco_pretrain`` dataset uses the ImageNet transform (short side 320..480, max 600, flip, crop
branch), kept here. Proposal store: ``tools/generate_proposals.py --dataset coco_2017_train --method
selective_search --ss-resize 128 --output $DETECTRON2_DATASETS/proposals/coco_2017_train.selective_search.proposals``
(``--ss-resize 128``: on a copy of short side 128, as DETReg's 128 x 128).
"""
import os

from ..common.data.pretrain_coco import DATASETS_ROOT, dataloader
from ..common.schedules import NUM_IMAGES, step_schedule
from .detreg_detr_r50_imagenet_60ep import detreg_mapper, model, optimizer, train

BATCH_SIZE = 64

model.transformer.normalize_before = False  # post-norm, as the project's COCO DETR finetune configs

dataloader.train.mapper = detreg_mapper
dataloader.train.mapper.proposal_source.path = os.path.join(
    DATASETS_ROOT, "proposals", "coco_2017_train.selective_search.proposals"
)
dataloader.train.total_batch_size = BATCH_SIZE

lr_multiplier, max_iter = step_schedule(60, (40,), NUM_IMAGES["coco_2017_train"], BATCH_SIZE)
train.max_iter = max_iter
train.output_dir = "./output/detreg_detr_r50_coco_60ep"
