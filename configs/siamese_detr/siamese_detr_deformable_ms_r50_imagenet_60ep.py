"""Siamese DETR pretraining of multi-scale Deformable DETR ("Deform-MS", R50, frozen SwAV backbone) on
ImageNet, 40/60 epochs.

Mirrors the official Zx55/SiameseDETR
``configs/selfsup/siamese_detr/main/r50_deformtr_ms_300q_syncbn_imgnet_edgebox_rdiscr_gdiscr_gpu64_step30w.py``:
C3-C5 (strides 8/16/32, 512/1024/2048 channels; region and crop features concatenated, 3584-d) + one extra
level (``num_feature_levels=4``), d_model 256, 8 heads, 6 + 6 layers, ``dim_feedforward=1024``, dropout 0.1,
4 sampling points, ``two_stage=False`` and no box refinement, 300 queries for 10 regions per view, frozen
ResNet-50 (FrozenBN), AdamW lr 1e-4 / weight decay 1e-4 (no per-parameter lr factors), 300k steps at batch
256 (64 GPUs x 4) with the lr divided by 10 at 200k (= 60 / 40 epochs of ImageNet). Matching and losses as
its ``SiameseDETRPredictHead``: softmax cross-entropy objectness with no-object weight 0.1 and class cost 1
(not the focal loss of finetuning), ``loss_ce 1``, ``loss_bbox 5``, ``loss_giou 2``, ``loss_feature 3``
(λ0, ``loss_region``), ``loss_enc_global_contra 10`` (λ1, ``loss_global``).

Finetune with ``configs/detr/deformable_detr_r50_{coco,voc}_50ep.py`` and
``train.init_checkpoint=output/siamese_detr_deformable_ms_r50_imagenet_60ep/model_final.pth``.
"""
from detectron2.config import LazyCall as L

from siamese_detr.modeling import HungarianMatcher, SetCriterion, SoftmaxArgmaxPostProcess

from ..common.data.pretrain_imagenet import dataloader
from ..common.models.deformable_detr_r50 import model as _detr
from ..common.models.siamese_detr import siamese_detr_from
from ..common.optim import AdamW as optimizer
from ..common.schedules import NUM_IMAGES, step_schedule
from ..common.train import train

NUM_REGIONS = 10  # num_patches = 10: 30 queries per region
BATCH_SIZE = 256

model = siamese_detr_from(_detr, num_regions=NUM_REGIONS, loss_region=3.0, loss_global=10.0)
model.criterion = L(SetCriterion)(
    num_classes=1,
    matcher=L(HungarianMatcher)(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0),
    eos_coef=0.1,
    losses=["class", "boxes"],
    class_loss="ce",
)
model.postprocess = L(SoftmaxArgmaxPostProcess)()  # softmax objectness: one detection per query, no-object excluded
model.weight_dict = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_region": 3.0, "loss_global": 10.0}

dataloader.train.mapper.num_regions = NUM_REGIONS
dataloader.train.total_batch_size = BATCH_SIZE

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
lr_multiplier, max_iter = step_schedule(60, (40,), NUM_IMAGES["imagenet_train"], BATCH_SIZE)

train.max_iter = max_iter
train.clip_grad.max_norm = 0.1
train.output_dir = "./output/siamese_detr_deformable_ms_r50_imagenet_60ep"
train.checkpointer.period = 10000
