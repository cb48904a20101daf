"""Siamese DETR pretraining data, COCO style: ``coco_2017_train`` images (labels unused), short side
480-800, max 1333. Proposal store written by ``tools/generate_proposals.py --dataset coco_2017_train
--method edgeboxes --output $DETECTRON2_DATASETS/proposals/coco_2017_train.edgeboxes.proposals``.

``dataloader.test`` / ``dataloader.evaluator``: class-agnostic AR@1/10/100 and AP of the pretrained model
itself, no finetuning (supplementary Table 1 / paper Table 5 protocol, DETReg Table 6 on val2017) on
``coco_2017_val`` at DETR's test size (short side 800, max 1333). ``--eval-only
train.init_checkpoint=<pretraining model_final.pth>`` prints it; ``train.eval_period`` runs it during
pretraining. The same config evaluates an ImageNet-pretrained checkpoint (identical model).
"""

import os

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader

from siamese_detr.data.dataset_checks import get_checked_dataset_dicts
from siamese_detr.data.detr_mapper import DetrDatasetMapper
from siamese_detr.evaluation.class_agnostic import ClassAgnosticEvaluator

from .pretrain_imagenet import DATASETS_ROOT, dataloader

dataloader.train.dataset.names = "coco_2017_train"
dataloader.train.mapper.proposal_source.path = os.path.join(
    DATASETS_ROOT, "proposals", "coco_2017_train.edgeboxes.proposals"
)
dataloader.train.mapper.short_side_range = (480, 800)
dataloader.train.mapper.max_size = 1333

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_checked_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        is_train=False,
        augmentation=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(ClassAgnosticEvaluator)(
    dataset_name="${..test.dataset.names}", max_dets=(1, 10, 100)
)
