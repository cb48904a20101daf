"""Siamese DETR pretraining data, COCO style: ``coco_2017_train`` images (labels unused), short side
480-800, max 1333. Proposal store written by ``tools/generate_proposals.py --dataset coco_2017_train
--method edgeboxes --sed-model model.yml.gz --output
$DETECTRON2_DATASETS/proposals/coco_2017_train.edgeboxes.proposals`` (``--sed-model``: OpenCV's Structured Edge
model, opencv_extra ``testdata/cv/ximgproc/model.yml.gz``, as the official generator; without it the gradient
edge map of the demo is used, with a loud warning at this scale).

``dataloader.test`` / ``dataloader.evaluator``: class-agnostic AR@1/10/100 and AP of the pretrained model
itself, no finetuning (supplementary Table 1, "supplementary Table 5" in the issue tracker; DETReg Table 6
on val2017) on ``coco_2017_val`` at DETR's test size (short side 800, max 1333). ``--eval-only
train.init_checkpoint=<pretraining model_final.pth>`` prints it; ``train.eval_period`` runs it during
pretraining. The same config evaluates an ImageNet-pretrained checkpoint (identical model).
"""

import os

from detectron2.config import LazyCall as L

from siamese_detr.evaluation.class_agnostic import ClassAgnosticEvaluator

from .detr_coco import dataloader as detection
from .pretrain_imagenet import DATASETS_ROOT, dataloader

dataloader.train.dataset.names = "coco_2017_train"
dataloader.train.mapper.proposal_source.path = os.path.join(
    DATASETS_ROOT, "proposals", "coco_2017_train.edgeboxes.proposals"
)
dataloader.train.mapper.short_side_range = (480, 800)
dataloader.train.mapper.max_size = 1333

# the detection test loader of DETR finetuning (coco_2017_val, DETR's test size)
dataloader.test = detection.test

dataloader.evaluator = L(ClassAgnosticEvaluator)(
    dataset_name="${..test.dataset.names}", max_dets=(1, 10, 100)
)
