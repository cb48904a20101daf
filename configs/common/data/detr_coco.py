"""COCO detection data for DETR finetuning (DETR's augmentation: flip + multi-scale + random-crop branch).

Low-data finetuning (DETReg's image subsets): ``dataloader.train.dataset.names=coco_2017_train_1pct_seed42`` (also
2 / 5 / 10 %), after writing the split once with ``datasets/prepare_low_data_splits.py``. The schedules of the
finetuning configs are in ITERATIONS computed for all 118287 images: with a 1 % split they would run 100x as
many epochs of it. Set the split's own schedule too (datasets/README.md, "Low-data splits", lists the
iterations), e.g. 40/50 epochs of the 10 % split (11829 images) at batch 32: ``train.max_iter=18483
lr_multiplier.milestones=[14787] lr_multiplier.num_updates=18483`` (DETReg's paper: 100 epochs with the drop
at 40 for 5 / 10 %, 200 with the drop at 150 for 1 / 2 %; its released scripts
``configs/DETReg_fine_tune_{1,2,5,10}pct_coco.sh``: 2000 / 1000 / 500 / 400 epochs without a drop, launched
by its README on 8 GPUs with ``--batch_size 3``, a total batch of 24; its argparse default is 4 per GPU).
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.evaluation import COCOEvaluator
from omegaconf import OmegaConf

from siamese_detr.data.dataset_checks import get_checked_dataset_dicts
from siamese_detr.data.detr_mapper import DetrDatasetMapper
from siamese_detr.utils import detectron2_has_compiled_ops

# DETR: train short side 480..800 (step 32), max 1333; crop branch: resize to 400/500/600,
# random crop 384..600 (absolute), then the multi-scale resize; test short side 800.
TRAIN_SCALES = [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    # images without annotations are kept, as the official DETR / Conditional DETR CocoDetection (every id of
    # the json); the set criterion then trains them as all "no object". A set with no box at all is refused.
    dataset=L(get_checked_dataset_dicts)(names="coco_2017_train", filter_empty=False, require_boxes=True),
    mapper=L(DetrDatasetMapper)(
        is_train=True,
        augmentation=[
            L(T.RandomFlip)(),
            L(T.ResizeShortestEdge)(short_edge_length=TRAIN_SCALES, max_size=1333, sample_style="choice"),
        ],
        augmentation_with_crop=[
            L(T.RandomFlip)(),
            L(T.ResizeShortestEdge)(short_edge_length=[400, 500, 600], sample_style="choice"),
            L(T.RandomCrop)(crop_type="absolute_range", crop_size=(384, 600)),
            L(T.ResizeShortestEdge)(short_edge_length=TRAIN_SCALES, max_size=1333, sample_style="choice"),
        ],
        image_format="BGR",
    ),
    total_batch_size=32,
    # random batches, as the official DETR / Conditional / Deformable DETR samplers (detectron2's default
    # groups images of like aspect ratio, which changes each batch's padding and composition)
    aspect_ratio_grouping=False,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_checked_dataset_dicts)(names="coco_2017_val", filter_empty=False, require_boxes=True),
    mapper=L(DetrDatasetMapper)(
        is_train=False,
        augmentation=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    # the fast evaluation needs detectron2's C++ ops (absent from the PyPI build)
    use_fast_impl=detectron2_has_compiled_ops(),
)
