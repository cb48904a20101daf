"""PASCAL VOC detection data for DETR finetuning: VOC 2007+2012 trainval -> VOC 2007 test, evaluated
COCO-style as the paper does (§4.1: AP, AP50, AP75, APs/m/l on VOC test2007) with ``COCOEvaluator``.

The images are read through COCO-format json converted from the VOC XML (as the official code does;
``difficult`` objects are ordinary ground truth): write it once with ``python datasets/prepare_voc_coco.py``
(``$DETECTRON2_DATASETS/voc_coco/``). Augmentation as COCO (DETR's). Low-data finetuning (the paper's VOC
10 / 30 / 50 / 70 % of Fig. 8, Table 6's 10 %): ``dataloader.train.dataset.names=voc_2007_2012_trainval_10pct_seed42``
(or ``_30pct``, ``_50pct``, ``_70pct``) after ``python datasets/prepare_low_data_splits.py``. The finetuning
schedules are in ITERATIONS computed for all 16551 images, so naming a split alone trains 10x (10 %) as many
epochs of it; give the split's iterations too (datasets/README.md, "Low-data splits", lists them), e.g. the
40/50 epochs of ``detr_r50_voc_50ep.py`` on the 10 % split (1655 images, batch 32)::

    dataloader.train.dataset.names=voc_2007_2012_trainval_10pct_seed42 train.max_iter=2586
    lr_multiplier.milestones=[2069] lr_multiplier.num_updates=2586

Detectron2's PASCAL VOC metric (VOC2007 11-point AP averaged over IoU 0.5:0.95, AP50, AP75; difficult objects
ignored) stays available: ``common/data/detr_voc_pascal.py``.
"""
from detectron2.config import LazyCall as L
from detectron2.evaluation import COCOEvaluator

import siamese_detr.data  # noqa: F401  (registers voc_*_coco and the low-data splits)
from siamese_detr.utils import detectron2_has_compiled_ops

from .detr_coco import dataloader

dataloader.train.dataset.names = "voc_2007_2012_trainval_coco"
dataloader.test.dataset.names = "voc_2007_test_coco"
dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    use_fast_impl=detectron2_has_compiled_ops(),
)
