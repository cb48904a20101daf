"""DETR components shared by finetuning and the pretext tasks (Siamese DETR, UP-DETR, DETReg)."""

from .backbone import build_resnet_backbone_for_detr, feature_padding_mask, make_resnet_stages
from .criterion import SetCriterion, weight_losses
from .heads import MLP
from .matcher import FocalHungarianMatcher, HungarianMatcher
from .meta_arch import DETR, DETRegPretrain, SiameseDETRPretrain, UPDETRPretrain
from .position_encoding import PositionEmbeddingSine
from .postprocess import SigmoidTopKPostProcess, SoftmaxArgmaxPostProcess, SoftmaxTopKPostProcess
from .transformers import DetrTransformer
from .transformers import DeformableDetrTransformer
from .transformers import ConditionalDetrTransformer

__all__ = [
    "ConditionalDetrTransformer",
    "FocalHungarianMatcher",
    "SiameseDETRPretrain",
    "DETRegPretrain",
    "UPDETRPretrain",
    "DETR",
    "DeformableDetrTransformer",
    "DetrTransformer",
    "HungarianMatcher",
    "MLP",
    "PositionEmbeddingSine",
    "SetCriterion",
    "SigmoidTopKPostProcess",
    "SoftmaxArgmaxPostProcess",
    "SoftmaxTopKPostProcess",
    "build_resnet_backbone_for_detr",
    "feature_padding_mask",
    "make_resnet_stages",
    "weight_losses",
]
