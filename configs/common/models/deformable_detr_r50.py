"""Deformable DETR (Zhu et al., ICLR 2021) with a ResNet-50 backbone, multi-scale: the finetune model of the
Deformable DETR configs (Siamese DETR paper's "Deform-MS").

Every number follows the official fundamentalvision/Deformable-DETR ``main.py`` defaults and
``configs/r50_deformable_detr.sh`` (commit 11169a6): C3-C5 + one stride-64 level (``num_feature_levels 4``),
input projections with GroupNorm(32), 6 + 6 layers of d_model 256, 8 heads, ``dim_feedforward 1024``,
``dropout 0.1``, ``enc_n_points = dec_n_points = 4``, 300 queries, sigmoid focal loss (alpha 0.25, gamma 2)
with class / L1 / GIoU costs and weights 2 / 5 / 2, sine positions with the -0.5 offset
(``models/position_encoding.py``), top-100 sigmoid post-processing (``PostProcess``). Iterative box
refinement and two-stage are off, as in the official Siamese DETR Deformable configs
(Zx55/SiameseDETR ``configs/selfsup/siamese_detr/main/r50_deformtr_{ss,ms}_300q_*.py``: ``two_stage=False``
and no ``bbox_embed`` in the decoder); ``deformable_detr_refine*_r50_coco_50ep.py`` switch them on.

Optimiser (official ``main.py``): lr 2e-4, backbone 2e-5, ``sampling_offsets`` / ``reference_points`` at
0.1 x lr (``lr_linear_proj_mult``): finetune configs set ``optimizer.params.lr_factors_by_keyword =
LINEAR_PROJ_LR_FACTORS`` and ``backbone_lr_factor = 0.1``.
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from siamese_detr.modeling import (
    DETR,
    DeformableDetrTransformer,
    FocalHungarianMatcher,
    PositionEmbeddingSine,
    SetCriterion,
    SigmoidTopKPostProcess,
    make_resnet_stages,
)

# official main.py: lr_linear_proj_names = ['reference_points', 'sampling_offsets'], lr_linear_proj_mult 0.1
LINEAR_PROJ_LR_FACTORS = {"sampling_offsets": 0.1, "reference_points": 0.1}

model = L(DETR)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(make_resnet_stages)(depth=50, norm="FrozenBN", stride_in_1x1=False),
        out_features=["res3", "res4", "res5"],
        freeze_at=2,  # official backbone.py trains layer2-4 only (stem and res2 frozen)
    ),
    in_features=["res3", "res4", "res5"],
    num_extra_levels=1,  # stride 64 from a 3x3 stride-2 conv on C5
    input_proj_norm=True,
    position_embedding=L(PositionEmbeddingSine)(num_pos_feats=128, temperature=10000, normalize=True, offset=-0.5),
    transformer=L(DeformableDetrTransformer)(
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=1024,
        dropout=0.1,
        activation="relu",
        num_feature_levels=4,
        enc_n_points=4,
        dec_n_points=4,
        with_box_refine=False,
        two_stage=False,
        two_stage_num_proposals="${..num_queries}",
    ),
    num_classes=80,
    num_queries=300,
    criterion=L(SetCriterion)(
        num_classes="${..num_classes}",
        matcher=L(FocalHungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2.0),
        losses=["class", "boxes"],
        class_loss="focal",
        focal_alpha=0.25,
        focal_gamma=2.0,
    ),
    weight_dict={"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
    aux_loss=True,
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[57.375, 57.120, 58.395],
    input_format="BGR",
    postprocess=L(SigmoidTopKPostProcess)(num_detections=100),
)
