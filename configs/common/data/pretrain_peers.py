"""Mappers of the peer pretraining methods, to put on the Siamese DETR pretraining loaders
(``pretrain_imagenet`` / ``pretrain_coco`` / ``pretrain_builtin``: same images, batch size and evaluation)::

    from ..common.data.pretrain_imagenet import dataloader
    from ..common.data.pretrain_peers import up_detr_mapper
    dataloader.train.mapper = up_detr_mapper

UP-DETR (github dddzg/up-detr ``datasets/selfdet.py``): 10 random patches of the original image, 128 px
with SimCLR augmentation; the image resized to a short side of 320..480 (max 600), no flip.

DETReg (github amirbar/DETReg ``datasets/selfdet.py``, ``configs/DETReg_top30_*.sh``): the top 30 Selective
Search proposals of the original image (the official computes them online on the image squashed to 128 x 128;
here from a store written by ``tools/generate_proposals.py --method selective_search --ss-resize 128`` (short
side 128); for the official online
computation: ``proposal_source = L(OnlineProposals)(method="selective_search", resize=128, square=True)``;
``resize=128`` alone keeps the aspect ratio, short side 128, as the demo configs), crops 128 px with
SimCLR augmentation; the image flipped and resized 320..480 (max 600) or cropped (DETR's RandomSelect), for
ImageNet and COCO alike (``coco_pretrain`` uses the same transform).
"""
import os

from detectron2.config import LazyCall as L

from siamese_detr.data.detreg_mapper import DETRegMapper
from siamese_detr.data.proposals.sources import StoreProposals
from siamese_detr.data.up_detr_mapper import UPDETRMapper

DATASETS_ROOT = os.getenv("DETECTRON2_DATASETS", "datasets")

up_detr_mapper = L(UPDETRMapper)(
    is_train=True,
    image_format="BGR",
    num_patches=10,
    min_patch_size=8,
    patch_size=128,
    augmentation=None,  # official: ResizeShortestEdge((320, ..., 480), max_size=600), no flip
    seed=None,
)

detreg_mapper = L(DETRegMapper)(
    proposal_source=L(StoreProposals)(
        path=os.path.join(DATASETS_ROOT, "proposals", "imagenet_train.selective_search.proposals"),
        method="selective_search",  # a store of another method is refused (DETReg's pseudo labels are SS boxes)
    ),
    is_train=True,
    image_format="BGR",
    num_proposals=30,
    policy="topk",  # "random" / "importance": paper §4
    importance_total=None,  # "importance": the official 300 (only the first 300 ranks can be drawn)
    max_sampled=None,  # "importance" draws a random count: cap it at model.num_queries
    augmentation=None,  # official: flip + RandomSelect(resize 320..480 max 600, crop branch)
    augmentation_with_crop=None,
    crop_size=128,
    min_proposals=2,
    seed=None,
)
