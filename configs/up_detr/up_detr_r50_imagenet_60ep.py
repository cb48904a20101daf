"""UP-DETR pretraining of Vanilla DETR (R50, frozen SwAV backbone) on ImageNet, 40/60 epochs.

Official (github dddzg/up-detr README "Pre-training" and ``main.py``): 8 GPUs x 32 = batch 256, AdamW lr 1e-4,
weight decay 1e-4, clip 0.1, 60 epochs with the lr divided by 10 at epoch 40, ``--pre_norm``,
``--num_patches 10``, ``--feature_recon``, ``--fre_cnn`` (frozen backbone: ``lr_backbone = 0``).

Backbone learning rate: in pretraining the backbone is frozen (``--fre_cnn``), so no backbone lr applies here.
The README's FINETUNING ``--lr_backbone`` was ``5e-4`` by mistake; the author corrected it to ``5e-5`` in
up-detr issue 8 (the README now shows 5e-5). A finetune config starting from this checkpoint should use
backbone lr 5e-5 with lr 1e-4 (``optimizer.params.backbone_lr_factor=0.5``) AND pre-norm
(``model.transformer.normalize_before=True``), otherwise the encoder's final norm is not loaded.

Loss weights: CE 1 (2 logits: objectness + no-object, eos 0.1), L1 5, GIoU 2, feature reconstruction 1, all
with auxiliary decoder layers (official ``models/__init__.py``).
"""
from ..common.data.pretrain_imagenet import dataloader
from ..common.data.pretrain_peers import up_detr_mapper
from ..common.models.detr_r50 import model as _detr
from ..common.models.up_detr import up_detr_from
from ..common.optim import AdamW as optimizer
from ..common.schedules import NUM_IMAGES, step_schedule
from ..common.train import train

NUM_PATCHES = 10  # the mapper and the model must agree
BATCH_SIZE = 256

model = up_detr_from(_detr, num_patches=NUM_PATCHES, mask_ratio=0.1, loss_feature=1.0)
model.transformer.normalize_before = True  # official --pre_norm

dataloader.train.mapper = up_detr_mapper
dataloader.train.mapper.num_patches = NUM_PATCHES
dataloader.train.total_batch_size = BATCH_SIZE

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
lr_multiplier, max_iter = step_schedule(60, (40,), NUM_IMAGES["imagenet_train"], BATCH_SIZE)

train.max_iter = max_iter
train.clip_grad.max_norm = 0.1
train.output_dir = "./output/up_detr_r50_imagenet_60ep"
train.checkpointer.period = 10000
