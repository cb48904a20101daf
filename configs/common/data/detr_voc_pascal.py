"""PASCAL VOC finetuning data with Detectron2's own VOC datasets and ``PascalVOCDetectionEvaluator``
(VOC2007 11-point AP averaged over IoU 0.5:0.95, AP50, AP75; difficult objects ignored) instead of the
paper's COCO-style evaluation of ``detr_voc.py``. Reads the VOC XML directly (``voc_2007_trainval``,
``voc_2012_trainval``, ``voc_2007_test``; boxes ``[xmin - 1, ymin - 1, xmax, ymax]``). Use it by importing
this file's ``dataloader`` in place of ``detr_voc``'s.
"""
from detectron2.config import LazyCall as L
from detectron2.evaluation import PascalVOCDetectionEvaluator

from .detr_voc import dataloader

dataloader.train.dataset.names = ["voc_2007_trainval", "voc_2012_trainval"]
dataloader.test.dataset.names = "voc_2007_test"
dataloader.evaluator = L(PascalVOCDetectionEvaluator)(dataset_name="${..test.dataset.names}")
