"""UP-DETR pretraining of Conditional DETR (R50, frozen SwAV backbone, 100 queries) on ImageNet, 40/60 epochs.

As the Siamese DETR authors' UP-DETR runs (github Zx55/SiameseDETR ``configs/selfsup/updetr/main/
r50_condtr_100q_imgnet_gpu16_step30w.py`` + ``imgnet_bs16.py``): ``ConditionalTR`` 256 / 8 heads / 6 + 6 /
FFN 2048 / dropout 0.1, post-norm, 100 queries for 10 patches, frozen SwAV R50, mask ratio 0.1, objectness
with SOFTMAX cross-entropy (their ``DETRHead``: eos 0.1, class cost 1), ``loss_ce 1, loss_bbox 5, loss_giou 2,
loss_feature 1``, AdamW lr 1e-4 / wd 1e-4, batch 256 (16 GPUs x 16), 300k steps with the drop at 200k
(= 60 / 40 epochs), images short side 320..480 (max 600). Data and schedule: ``up_detr_r50_imagenet_60ep.py``.
Finetune with ``configs/detr/conditional_detr_r50_{coco,voc}_50ep.py``.
"""
from detectron2.config import LazyCall as L

from siamese_detr.modeling import HungarianMatcher, SetCriterion

from ..common.models.conditional_detr_r50 import conditional_transformer_like
from .up_detr_r50_imagenet_60ep import NUM_PATCHES, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.transformer = conditional_transformer_like(model.transformer)  # post-norm
model.num_queries = 100
model.criterion = L(SetCriterion)(
    num_classes=1, matcher=L(HungarianMatcher)(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0), eos_coef=0.1,
    losses=["class", "boxes"], class_loss="ce",
)
model.weight_dict = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_feature": 1.0}
train.output_dir = "./output/up_detr_conditional_r50_imagenet_60ep"
