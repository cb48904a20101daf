"""Siamese DETR pretraining demo of multi-scale Deformable DETR on the built-in ``synthetic_shapes_train``
(CPU, a few minutes).

A tiny version of ``configs/siamese_detr/siamese_detr_deformable_ms_r50_imagenet_60ep.py`` with the settings
of ``siamese_detr_pretrain_demo.py`` (random frozen ResNet-18, demo model shape, 20 queries for 5 regions
per view, 32 px crops, short side 128-160, batch 4, 150 iterations, λ0 = 3, λ1 = 0.3); the region and crop
features concatenate C3-C5 of the ResNet-18 (128 + 256 + 512 = 896-d). The proposals store is the one of
``siamese_detr_pretrain_demo.py`` (written by ``tools/generate_proposals.py``, see that config). Finetune with
``configs/demo/deformable_detr_demo.py`` and
``train.init_checkpoint=output/siamese_detr_deformable_pretrain_demo/model_final.pth``.
"""
from ..common.models.demo_shape import DEMO_D_MODEL, apply_demo_shape
from .siamese_detr_pretrain_demo import DEMO_REGIONS, dataloader, lr_multiplier, optimizer, train
from ..siamese_detr.siamese_detr_deformable_ms_r50_imagenet_60ep import model

apply_demo_shape(model)
model.allow_random_backbone = True  # no pretrained weights offline (see siamese_detr_pretrain_demo.py)
model.num_regions = DEMO_REGIONS
model.projection_dim = DEMO_D_MODEL
model.predictor_hidden_dim = DEMO_D_MODEL // 2
model.weight_dict = {
    "loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_region": 3.0, "loss_global": 0.3,
}

train.output_dir = "./output/siamese_detr_deformable_pretrain_demo"
