"""DETReg pretraining of the demo's fast detector (``demo_detector.py``), for
``tools/compare_pretraining.py``: same frozen backbone, transformer, queries, unlabelled images, batch,
schedule and evaluation as ``demo_siamese_pretrain.py``; DETReg's top-K online Selective Search proposals
(K = 10 on the image resized to 128, as the official ``topk`` policy), embedding target = the average of the
frozen backbone's res3 (64 channels), 32 px crops, flip + short side 128-160 (max 256) or DETR's crop branch
at that scale (``configs/common/models/detreg.py``).
"""
from detectron2.config import LazyCall as L

from siamese_detr.data.detr_mapper import detr_crop_augmentation, detr_train_augmentation
from siamese_detr.data.proposals.sources import OnlineProposals
from siamese_detr.demo.data import unlabelled_dicts

from ..common.data.pretrain_peers import detreg_mapper
from ..common.models.detreg import detreg_from
from .demo_detector import model as _detector
from .demo_siamese_pretrain import dataloader, lr_multiplier, optimizer, train

DEMO_PROPOSALS = 10

model = detreg_from(_detector, embedding_feature="res3")

dataloader.train.dataset = L(unlabelled_dicts)(names="synthetic_shapes_train_large")
dataloader.train.mapper = detreg_mapper
dataloader.train.mapper.proposal_source = L(OnlineProposals)(method="selective_search", resize=128)
dataloader.train.mapper.num_proposals = DEMO_PROPOSALS
dataloader.train.mapper.crop_size = 32
dataloader.train.mapper.augmentation = L(detr_train_augmentation)(min_sizes=(128, 144, 160), max_size=256)
dataloader.train.mapper.augmentation_with_crop = L(detr_crop_augmentation)(
    min_sizes=(128, 144, 160), max_size=256, crop_resize_sizes=(128, 160, 192), crop_size_range=(96, 160)
)
train.output_dir = "./output/demo_detreg_pretrain"
