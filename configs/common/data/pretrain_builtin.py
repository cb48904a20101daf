"""Siamese DETR pretraining data on the built-in ``synthetic_shapes_train`` (generated on first use),
small sizes for a CPU demo: short side 160-224, max 320, 64 px region crops, EdgeBoxes computed online
(no store needed; ~30 ms per image at this size). To use a store instead::

    dataloader.train.mapper.proposal_source = L(StoreProposals)(
        path="datasets/proposals/synthetic_shapes_train.edgeboxes.proposals", method="edgeboxes"
    )

Evaluation (from ``pretrain_coco``): class-agnostic AR@1/10/100 and AP of the pretrained model on
``synthetic_shapes_val``, images resized to short side 144, max 224 — about the scale of the demo's views
(``configs/demo/siamese_detr_pretrain_demo.py``: short side 128-160, max 224; each view is cut from the
resized image and zoomed x1.18-1.45 to the outer box's size, as the official pipeline).
"""

from detectron2.config import LazyCall as L

import siamese_detr.data  # noqa: F401  (registers synthetic_shapes_train / _val)
from siamese_detr.data.proposals.sources import OnlineProposals

from .pretrain_coco import dataloader

dataloader.train.dataset.names = "synthetic_shapes_train"
dataloader.train.mapper.proposal_source = L(OnlineProposals)(
    method="edgeboxes", max_boxes=64, image_format="${..image_format}"
)
dataloader.train.mapper.short_side_range = (160, 224)
dataloader.train.mapper.max_size = 320
dataloader.train.mapper.crop_size = 64
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 2

dataloader.test.dataset.names = "synthetic_shapes_val"
dataloader.test.mapper.augmentation[0].short_edge_length = 144
dataloader.test.mapper.augmentation[0].max_size = 224
dataloader.test.num_workers = 1
