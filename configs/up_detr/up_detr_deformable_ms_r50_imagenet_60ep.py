"""UP-DETR pretraining of multi-scale Deformable DETR (R50, frozen SwAV backbone, 300 queries) on ImageNet.

As the Siamese DETR authors' ``configs/selfsup/updetr/main/r50_deformtr_ms_300q_imgnet_gpu32_step30w.py``:
C3-C5 + one extra level, d_model 256, FFN 1024, 4 points, no refinement / two-stage, 300 queries for 10
patches (patch features of C3-C5 concatenated, 3584-d), softmax objectness (eos 0.1, class cost 1), weights
1 / 5 / 2 / feature 1, mask ratio 0.1, AdamW lr 1e-4 / wd 1e-4, 300k / 200k steps (60 / 40 epochs) at batch
256 (inferred: that config's base ``../imagenet_bs8.py`` is not in the release, whose ``imgnet_bs8.py`` gives
8 per GPU, and its name says 32 GPUs), sine positions without offset (the authors'
``openselfsup/models/utils/position_encoding.py``; Deformable DETR's finetuning keeps its -0.5). Finetune with
``configs/detr/deformable_detr_r50_{coco,voc}_50ep.py``.
"""
from detectron2.config import LazyCall as L

from siamese_detr.modeling import HungarianMatcher, SetCriterion, SoftmaxArgmaxPostProcess

from ..common.models.deformable_detr_r50 import model as _detr
from ..common.models.up_detr import up_detr_from
from .up_detr_r50_imagenet_60ep import NUM_PATCHES, dataloader, lr_multiplier, optimizer, train  # noqa: F401

model = up_detr_from(_detr, num_patches=NUM_PATCHES, mask_ratio=0.1, loss_feature=1.0)
model.criterion = L(SetCriterion)(
    num_classes=1, matcher=L(HungarianMatcher)(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0), eos_coef=0.1,
    losses=["class", "boxes"], class_loss="ce",
)
model.postprocess = L(SoftmaxArgmaxPostProcess)()  # softmax objectness: one detection per query, no-object excluded
model.weight_dict = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_feature": 1.0}
train.output_dir = "./output/up_detr_deformable_ms_r50_imagenet_60ep"
