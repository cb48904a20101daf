"""UP-DETR pretraining of Conditional DETR (R50, frozen backbone, 100 queries) on COCO train2017 images.

As the Siamese DETR authors' ``configs/selfsup/updetr/main/r50_condtr_100q_coco_gpu16_step12w.py`` (batch 64,
short side 480..800, softmax objectness, weights 1 / 5 / 2 / feature 1; 120k / 80k steps ~ 65 / 43 epochs,
here the 60 / 40 epochs of the other COCO configs): ``up_detr_r50_coco_60ep.py`` with the Conditional DETR
transformer of ``up_detr_conditional_r50_imagenet_60ep.py``.
"""
from detectron2.config import LazyCall as L

from siamese_detr.modeling import HungarianMatcher, SetCriterion

from ..common.models.conditional_detr_r50 import conditional_transformer_like
from .up_detr_r50_coco_60ep import NUM_PATCHES, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.transformer = conditional_transformer_like(model.transformer)
model.num_queries = 100
model.criterion = L(SetCriterion)(
    num_classes=1, matcher=L(HungarianMatcher)(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0), eos_coef=0.1,
    losses=["class", "boxes"], class_loss="ce",
)
model.weight_dict = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_feature": 1.0}
train.output_dir = "./output/up_detr_conditional_r50_coco_60ep"
