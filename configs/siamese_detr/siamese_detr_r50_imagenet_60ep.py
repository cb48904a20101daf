"""Siamese DETR pretraining of Vanilla DETR (R50, frozen SwAV backbone) on ImageNet, 40/60 epochs.

Paper §4.1: AdamW lr 1e-4, weight decay 1e-4, total batch 256, 60 epochs with the lr divided by 10 at
epoch 40; 1281167 images -> 5005 iterations per epoch, 300274 in total (the official code: 300k steps,
drop at 200k, 32 GPUs x 8). Gradient clipping 0.1 comes from the official config
(``configs/selfsup/siamese_detr/imgnet_edgebox_crop_bs8.py``); the paper does not give it.

Loss weights (Eq. 13): λ0 = loss_region = 3, λ1 = loss_global = 10, λ2 = 1 (CE 1, L1 5, GIoU 2): supplementary
§B for ImageNet and the official Vanilla and Deformable ImageNet configs agree (the official Conditional ones
use λ0 = 5, which ``siamese_detr_conditional_r50_imagenet_60ep.py`` follows).

Regions (``dataloader.train.mapper.num_regions = 10``): the overlap of the two views, then the first 9
proposals inside it in score order, as the official ``pick_boxes``; the paper (§3.2) says the n = 10 proposals
are selected at random.

The model shares backbone / position encoding / transformer sub-configs with ``configs/common/models/
detr_r50.py``, so ``train.init_checkpoint=output/siamese_detr_r50_imagenet_60ep/model_final.pth`` in any
``configs/detr/detr_r50_*.py`` loads transformer, query_embed, input_proj and bbox_embed with no conversion.
Initialise the frozen backbone from SwAV weights converted by ``tools/convert_checkpoint.py``
(``train.init_checkpoint=...``) — with random backbone weights the pretext targets are meaningless.
"""
from ..common.data.pretrain_imagenet import dataloader
from ..common.models.detr_r50 import model as _detr
from ..common.models.siamese_detr import siamese_detr_from
from ..common.optim import AdamW as optimizer
from ..common.schedules import NUM_IMAGES, step_schedule
from ..common.train import train

NUM_REGIONS = 10  # n regions per view (paper §3.2); the mapper and the model must agree
BATCH_SIZE = 256

# 100 queries: each region repeated 10 times
model = siamese_detr_from(_detr, num_regions=NUM_REGIONS, loss_region=3.0, loss_global=10.0)

dataloader.train.mapper.num_regions = NUM_REGIONS
dataloader.train.total_batch_size = BATCH_SIZE

# the backbone is frozen (requires_grad=False), so detr_param_groups leaves it out
optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
lr_multiplier, max_iter = step_schedule(60, (40,), NUM_IMAGES["imagenet_train"], BATCH_SIZE)

train.max_iter = max_iter
train.clip_grad.max_norm = 0.1
train.output_dir = "./output/siamese_detr_r50_imagenet_60ep"
train.checkpointer.period = 10000
