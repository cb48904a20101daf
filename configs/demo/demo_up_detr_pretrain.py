"""UP-DETR pretraining of the demo's fast detector (``demo_detector.py``), for
``tools/compare_pretraining.py``: same frozen backbone (``train.init_checkpoint`` = the backbone stage's
``model_final.pth``), transformer, queries, unlabelled images (``synthetic_shapes_train_large``, image
fields only), batch, schedule and evaluation as ``demo_siamese_pretrain.py``; UP-DETR's random query
patches (6 patches, 5 queries each, 32 px, views short side 128-160, max 256, as the Siamese demo's views),
feature-mask ratio 0.1, loss_feature 1 (official defaults, ``configs/common/models/up_detr.py``).
"""
from detectron2.config import LazyCall as L

from siamese_detr.data.up_detr_mapper import up_detr_augmentation
from siamese_detr.demo.data import unlabelled_dicts

from ..common.data.pretrain_peers import up_detr_mapper
from ..common.models.up_detr import up_detr_from
from .demo_detector import model as _detector
from .demo_siamese_pretrain import DEMO_REGIONS, dataloader, lr_multiplier, optimizer, train

model = up_detr_from(_detector, num_patches=DEMO_REGIONS)

dataloader.train.dataset = L(unlabelled_dicts)(names="synthetic_shapes_train_large")
dataloader.train.mapper = up_detr_mapper
dataloader.train.mapper.num_patches = DEMO_REGIONS
dataloader.train.mapper.patch_size = 32
dataloader.train.mapper.augmentation = L(up_detr_augmentation)(min_sizes=(128, 144, 160), max_size=256)
train.output_dir = "./output/demo_up_detr_pretrain"
