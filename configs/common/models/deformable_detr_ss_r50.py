"""Single-scale Deformable DETR R50 (C5 only, ``num_feature_levels 1``): official
``configs/r50_deformable_detr_single_scale.sh`` of fundamentalvision/Deformable-DETR; the Siamese DETR
paper's "Deform-SS" (Zx55/SiameseDETR ``r50_deformtr_ss_300q_*.py``: ``num_feature_levels = 1``).
Everything else as ``deformable_detr_r50.py``."""

from .deformable_detr_r50 import LINEAR_PROJ_LR_FACTORS, model

model.backbone.out_features = ["res5"]
model.in_features = ["res5"]
model.num_extra_levels = 0
model.transformer.num_feature_levels = 1
