"""DETReg pretraining of Vanilla DETR (R50, frozen SwAV backbone) on ImageNet, top-30 Selective Search.

Official DETR-based run (github amirbar/DETReg ``configs/DETReg_top30_in_detr.sh`` + README): ``--model detr
--strategy topk --max_prop 30 --object_embedding_loss --object_embedding_coef 1 --lr_backbone 0 --pre_norm
--epochs 60``, 8 GPUs x 24 = batch 192, DETR defaults lr 1e-4 (``util/default_args.py``), weight decay 1e-4,
clip 0.1, ``lr_drop`` 200 epochs (i.e. never within 60; the released code's StepLR) — here the drop at 40 of
60 epochs of the other pretraining configs so the three methods share a schedule (override
``lr_multiplier`` for the official constant lr). Loss weights CE 1 (eos 0.1), L1 5, GIoU 2, embedding 1.

Proposals: a Selective Search store of ImageNet train (``tools/generate_proposals.py --image-dir
$DETECTRON2_DATASETS/imagenet/train --method selective_search --ss-resize 128 --output
$DETECTRON2_DATASETS/proposals/imagenet_train.selective_search.proposals``; ``--ss-resize 128``: on a copy of
short side 128, as DETReg's 128 x 128).
Policy: ``dataloader.train.mapper.policy=random`` or ``importance`` for the paper's other two (§4).
Finetuning from this checkpoint: pre-norm (``model.transformer.normalize_before=True``). The sine positions
keep the official -0.5 offset (DETReg's ``position_encoding.py`` is Deformable DETR's); our DETR finetuning
configs use DETR's 0 (no weights depend on it; ``+model.position_embedding.offset=-0.5`` there to match).
"""
from ..common.data.pretrain_imagenet import dataloader
from ..common.data.pretrain_peers import detreg_mapper
from ..common.models.detr_r50 import model as _detr
from ..common.models.detreg import detreg_from
from ..common.optim import AdamW as optimizer
from ..common.schedules import NUM_IMAGES, step_schedule
from ..common.train import train

BATCH_SIZE = 192

model = detreg_from(_detr, embedding_feature="res3", loss_object_embedding=1.0)
model.transformer.normalize_before = True  # official --pre_norm
# the official DETReg positions are Deformable DETR's (models/position_encoding.py: cumsum - 0.5), for --model detr too
model.position_embedding.offset = -0.5

dataloader.train.mapper = detreg_mapper
dataloader.train.total_batch_size = BATCH_SIZE

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
lr_multiplier, max_iter = step_schedule(60, (40,), NUM_IMAGES["imagenet_train"], BATCH_SIZE)

train.max_iter = max_iter
train.clip_grad.max_norm = 0.1
train.output_dir = "./output/detreg_detr_r50_imagenet_60ep"
train.checkpointer.period = 10000
