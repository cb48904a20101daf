"""The built-in synthetic dataset (generated on first use; no download) at small image sizes for CPU runs."""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from .detr_coco import dataloader

TRAIN_SCALES = [160, 176, 192, 208, 224, 240, 256]

dataloader.train.dataset.names = "synthetic_shapes_train"
dataloader.train.mapper.augmentation = [
    L(T.RandomFlip)(),
    L(T.ResizeShortestEdge)(short_edge_length=TRAIN_SCALES, max_size=384, sample_style="choice"),
]
dataloader.train.mapper.augmentation_with_crop = [
    L(T.RandomFlip)(),
    L(T.ResizeShortestEdge)(short_edge_length=[160, 192, 224], sample_style="choice"),
    L(T.RandomCrop)(crop_type="absolute_range", crop_size=(128, 224)),
    L(T.ResizeShortestEdge)(short_edge_length=TRAIN_SCALES, max_size=384, sample_style="choice"),
]
dataloader.train.total_batch_size = 4
# the demo's batching as chosen with its schedule (detectron2's default: images of like aspect ratio batched
# together); the COCO / VOC configs draw random batches as the official code (aspect_ratio_grouping=False)
dataloader.train.aspect_ratio_grouping = True
dataloader.train.num_workers = 2
dataloader.test.dataset.names = "synthetic_shapes_val"
dataloader.test.mapper.augmentation = [L(T.ResizeShortestEdge)(short_edge_length=224, max_size=384)]
dataloader.test.num_workers = 1
