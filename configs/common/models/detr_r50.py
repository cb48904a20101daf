"""DETR with a ResNet-50 backbone (Carion et al. 2020): the finetune model shared by all DETR configs.

Top-level configs import it with ``from ..common.models.detr_r50 import model`` and override fields, e.g.
``model.num_classes = 20`` or ``model.backbone.stages.depth = 18`` (stride_in_1x1 is dropped for depth < 50).

``weight_dict`` only lists the base losses: ``DETR`` weights every auxiliary copy ``loss_x_{i}`` with the
weight of ``loss_x`` at run time, so it stays correct when ``model.transformer.num_decoder_layers`` changes.
Add an explicit ``loss_x_{i}`` key only to give one decoder layer a different weight.
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from siamese_detr.modeling import (
    DETR,
    DetrTransformer,
    HungarianMatcher,
    PositionEmbeddingSine,
    SoftmaxArgmaxPostProcess,
    SetCriterion,
    make_resnet_stages,
)

model = L(DETR)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        # stride in the 3x3 conv (torchvision / SwAV / DETR weights); set True for detectron2's MSRA R-50.pkl
        stages=L(make_resnet_stages)(depth=50, norm="FrozenBN", stride_in_1x1=False),
        out_features=["res5"],
        freeze_at=2,  # stem and res2 frozen, as the official DETR (backbone.py: layer2-4 trainable)
    ),
    in_features=["res5"],
    position_embedding=L(PositionEmbeddingSine)(num_pos_feats=128, temperature=10000, normalize=True),
    transformer=L(DetrTransformer)(
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=2048,
        dropout=0.1,
        activation="relu",
        normalize_before=False,
        return_intermediate_dec=True,
    ),
    num_classes=80,
    num_queries=100,
    criterion=L(SetCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0),
        eos_coef=0.1,
        losses=["class", "boxes"],
    ),
    weight_dict={"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
    aux_loss=True,
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[57.375, 57.120, 58.395],
    input_format="BGR",
    # the official DETR PostProcess: each query gives its arg-max foreground class;
    # L(SoftmaxTopKPostProcess)(num_detections=100) ranks (query, class) pairs instead
    postprocess=L(SoftmaxArgmaxPostProcess)(),
)
