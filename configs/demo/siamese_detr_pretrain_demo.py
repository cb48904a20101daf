"""Siamese DETR pretraining demo on the built-in ``synthetic_shapes_train`` (CPU, a few minutes).

A tiny version of ``configs/siamese_detr/siamese_detr_r50_imagenet_60ep.py``: ResNet-18 backbone
(random, frozen — no pretrained weights offline), d_model 128, 2 encoder / 2 decoder layers, 20 queries
for 5 regions per view, 32 px crops, short side 128-160 (max 224), batch 4, 150 iterations. Loss weights of
COCO-like (multi-object) data: λ0 = 3, λ1 = 0.3.

Proposals come from the EdgeBoxes store of the built-in dataset (``make demo`` computes its proposals online
instead; write the store once with ``tools/generate_proposals.py``, README "Proposals")::

    python tools/generate_proposals.py --dataset synthetic_shapes_train --method edgeboxes \
        --output $DETECTRON2_DATASETS/proposals/synthetic_shapes_train.edgeboxes.proposals

(``dataloader.train.mapper.proposal_source = L(OnlineProposals)(method="edgeboxes")`` computes them on the fly.)

The finetune demo that loads ``output/siamese_detr_pretrain_demo/model_final.pth`` through
``train.init_checkpoint`` has the same shape: both apply ``configs/common/models/demo_shape.py``.
"""
import os

from detectron2.config import LazyCall as L

from siamese_detr.data.proposals.sources import StoreProposals

from ..common.data.pretrain_builtin import dataloader
from ..common.models.demo_shape import DEMO_D_MODEL, apply_demo_shape
from ..common.schedules import step_schedule_iters
from ..siamese_detr.siamese_detr_r50_imagenet_60ep import model, optimizer, train

DEMO_REGIONS = 5  # regions per view: 4 learned queries per region

apply_demo_shape(model)
# no pretrained weights can be downloaded here: the demo's frozen backbone is random on purpose (a real
# run must initialise it, e.g. from SwAV weights converted by tools/convert_checkpoint.py)
model.allow_random_backbone = True
model.num_regions = DEMO_REGIONS
model.projection_dim = DEMO_D_MODEL
model.predictor_hidden_dim = DEMO_D_MODEL // 2
model.weight_dict = {
    "loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_region": 3.0, "loss_global": 0.3,
}

dataloader.train.mapper.num_regions = DEMO_REGIONS
dataloader.train.mapper.proposal_source = L(StoreProposals)(
    path=os.path.join(
        os.getenv("DETECTRON2_DATASETS", "datasets"), "proposals", "synthetic_shapes_train.edgeboxes.proposals"
    ),
    dataset="synthetic_shapes_train",
    method="edgeboxes",  # a store of another method (random boxes, Selective Search) is refused
)
# smaller than pretrain_builtin's defaults: the frozen backbone on views + crops dominates a CPU step
dataloader.train.mapper.short_side_range = (128, 160)
dataloader.train.mapper.max_size = 224
dataloader.train.mapper.crop_size = 32
dataloader.train.total_batch_size = 4

optimizer.lr = 1e-4
train.max_iter = 150
lr_multiplier = step_schedule_iters(train.max_iter, [100])  # x0.1 after 2/3, as 40/60
train.output_dir = "./output/siamese_detr_pretrain_demo"
train.checkpointer.period = 50
train.log_period = 10
train.eval_period = train.max_iter  # evaluate the pretrained model (learned queries alone) once, at the end
train.seed = 0
