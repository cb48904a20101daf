"""Siamese DETR pretraining data, COCO style: ``coco_2017_train`` images (labels unused), short side
480-800, max 1333. Proposal store written by ``tools/generate_proposals.py --dataset coco_2017_train
--method edgeboxes --output $DETECTRON2_DATASETS/proposals/coco_2017_train.edgeboxes.proposals``."""

import os

from .pretrain_imagenet import DATASETS_ROOT, dataloader

dataloader.train.dataset.names = "coco_2017_train"
dataloader.train.mapper.proposal_source.path = os.path.join(
    DATASETS_ROOT, "proposals", "coco_2017_train.edgeboxes.proposals"
)
dataloader.train.mapper.short_side_range = (480, 800)
dataloader.train.mapper.max_size = 1333
