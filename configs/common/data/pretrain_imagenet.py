"""Siamese DETR pretraining data, ImageNet style: an unlabeled image folder, two IoU-constrained views.

Short side 320-480, max 600 (as UP-DETR's and DETReg's ``datasets/selfdet.py``); offline EdgeBoxes from a
proposal store written by ``tools/generate_proposals.py --image-dir $DETECTRON2_DATASETS/imagenet/train --method
edgeboxes --sed-model model.yml.gz --output $DETECTRON2_DATASETS/proposals/imagenet_train.edgeboxes.proposals``
(image_id = relative path; ``--sed-model``: OpenCV's Structured Edge model, opencv_extra
``testdata/cv/ximgproc/model.yml.gz``, as the official generator ``tools/hpcplayers/box_generator.py``;
without it the demo's gradient edge map is used, with a loud warning at this scale). Other proposal sources::

    dataloader.train.mapper.proposal_source = L(OnlineProposals)(method="edgeboxes", sed_model="model.yml.gz")
    dataloader.train.mapper.proposal_source = L(RandomProposals)(num_boxes=512)
    dataloader.train.mapper.proposal_source = None   # official "random boxes" ablation: 100 fresh boxes
                                                     # inside the views' overlap per sample

Views: both resized to the outer box's size (official ``TwoViewRandomResizedCrop``); region crops cut from
the view before its colour augmentation, each with its own augmentation (official ``crop_pipeline``).
"""

import os

from detectron2.config import LazyCall as L
from detectron2.data import build_detection_train_loader
from omegaconf import OmegaConf

from siamese_detr.data.dataset_checks import get_checked_dataset_dicts
from siamese_detr.data.datasets.from_path import register_unlabeled_folder
from siamese_detr.data.proposals.sources import StoreProposals
from siamese_detr.data.siamese_mapper import SiameseViewMapper

DATASETS_ROOT = os.getenv("DETECTRON2_DATASETS", "datasets")

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_checked_dataset_dicts)(
        # registration is lazy: the folder is listed when the loader is instantiated
        # (a folder without images, e.g. the class tars not yet extracted, stops with the folder named)
        names=L(register_unlabeled_folder)(
            name="imagenet_train_unlabeled", image_root=os.path.join(DATASETS_ROOT, "imagenet", "train")
        ),
        filter_empty=False,
    ),
    mapper=L(SiameseViewMapper)(
        is_train=True,
        image_format="BGR",
        proposal_source=L(StoreProposals)(
            path=os.path.join(DATASETS_ROOT, "proposals", "imagenet_train.edgeboxes.proposals"),
            method="edgeboxes",  # a store of another method is refused (the paper's regions are EdgeBoxes)
        ),
        tau=0.5,
        outer_area=(0.5, 1.0),
        outer_aspect=(3 / 4, 4 / 3),
        short_side_range=(320, 480),
        max_size=600,
        num_regions=10,
        min_region_area_frac=0.05,
        pad_jitter=0.1,
        query_jitter=0.1,
        crop_size=128,
        shrink_outer=True,
        swap_prob=0.5,
        flip_prob=0.5,
        color_jitter=(0.4, 0.4, 0.4, 0.1),
        color_jitter_prob=0.8,
        grayscale_prob=0.2,
        blur_prob=0.5,
        blur_sigma=(0.1, 2.0),
        resize_views=True,  # both views resized to the outer box's size (x1.18-1.45 at tau 0.5)
        crop_augment=True,  # each region crop gets its own SimSiam augmentation
        num_random_proposals=100,  # only used with proposal_source=None (official random-box rule)
        random_max_aspect=8.0,
        jitter_noise="sigmoid_normal",  # padding / query jitter (sigmoid(randn) * 2 - 1) * 0.1 of the size
        seed=None,
    ),
    total_batch_size=64,
    num_workers=8,
    aspect_ratio_grouping=False,
)
