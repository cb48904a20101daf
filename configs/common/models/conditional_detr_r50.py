"""Conditional DETR (Meng et al., ICCV 2021) with a ResNet-50 backbone: the finetune model of the Conditional
DETR configs. Built from ``detr_r50.py`` (same backbone, ``res5`` input, sine positions, input projection)
by :func:`as_conditional_detr`, which swaps the transformer, the class loss / matcher, the loss weights and
the post-processing.

Every number follows the official Atten4Vis/ConditionalDETR ``main.py`` defaults (commit 8ea7c3f):
``hidden_dim 256``, ``nheads 8``, ``enc_layers = dec_layers = 6``, ``dim_feedforward 2048``,
``dropout 0.1``, post-norm (``pre_norm`` off; the official pre-norm decoder raises NotImplementedError),
``focal_alpha 0.25`` (gamma 2 in ``models/conditional_detr.py`` ``loss_labels``), ``set_cost_class 2``,
``set_cost_bbox 5``, ``set_cost_giou 2``, ``cls_loss_coef 2``, ``bbox_loss_coef 5``, ``giou_loss_coef 2``,
aux losses on, class-bias prior 0.01 (``ConditionalDETR.__init__``), sigmoid top-100 ``PostProcess``.
Backbone: official ``backbone.py`` trains layer2-4 (``freeze_at=2``), FrozenBN.

Queries: 100, as the Siamese DETR paper §4.1 ("the number of object queries is 100 in Vanilla DETR and
Conditional DETR") and its finetuning scripts (Zx55/SiameseDETR ``downstream_finetune/conditionaldetr/
train_{coco,voc}.sh``: ``--num_queries 100``); the official Conditional DETR default is 300
(``main.py --num_queries 300``), used by the ``*_300q_*`` configs.

Optimiser (set by the finetune configs): official ``main.py`` lr 1e-4, backbone 1e-5, weight decay 1e-4,
gradient clipping 0.1, 50 epochs with the lr divided by 10 at epoch 40 (``lr_drop 40``); the Siamese DETR
finetuning uses backbone 5e-5 (paper §4.1, ``train_{coco,voc}.sh --lr_backbone 5e-5``).
"""

from detectron2.config import LazyCall as L

from siamese_detr.modeling import (
    ConditionalDetrTransformer,
    FocalHungarianMatcher,
    SetCriterion,
    SigmoidTopKPostProcess,
)

from .detr_r50 import model as _detr_model

_SHARED_TRANSFORMER_ARGS = (
    "d_model", "nhead", "num_encoder_layers", "num_decoder_layers", "dim_feedforward", "dropout", "activation",
)


def conditional_transformer_like(transformer):
    """A ``ConditionalDetrTransformer`` config with the shape of a ``DetrTransformer`` config (d_model, heads,
    depth, FFN, dropout, activation), e.g. to turn a Vanilla DETR demo or pretraining config into a
    Conditional DETR one with the same shape."""
    return L(ConditionalDetrTransformer)(**{k: transformer[k] for k in _SHARED_TRANSFORMER_ARGS})


def as_conditional_detr(model):
    """Turn a ``DETR`` model config built from ``detr_r50.py`` into Conditional DETR (in place; returned)."""
    model.transformer = conditional_transformer_like(model.transformer)
    model.criterion = L(SetCriterion)(
        num_classes="${..num_classes}",
        matcher=L(FocalHungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2.0),
        losses=["class", "boxes"],
        class_loss="focal",
        focal_alpha=0.25,
        focal_gamma=2.0,
    )
    model.weight_dict = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    model.postprocess = L(SigmoidTopKPostProcess)(num_detections=100)
    return model


model = as_conditional_detr(_detr_model)
model.num_queries = 100
