"""PASCAL VOC detection data for DETR finetuning: VOC 2007+2012 trainval -> VOC 2007 test.

Uses detectron2's builtin ``voc_*`` datasets (``$DETECTRON2_DATASETS/VOC2007``, ``VOC2012``) and
``PascalVOCDetectionEvaluator`` (AP, AP50, AP75). Augmentation as COCO (DETR's).
"""
from detectron2.config import LazyCall as L
from detectron2.evaluation import PascalVOCDetectionEvaluator

from .detr_coco import dataloader

dataloader.train.dataset.names = ["voc_2007_trainval", "voc_2012_trainval"]
dataloader.test.dataset.names = "voc_2007_test"
dataloader.evaluator = L(PascalVOCDetectionEvaluator)(dataset_name="${..test.dataset.names}")
