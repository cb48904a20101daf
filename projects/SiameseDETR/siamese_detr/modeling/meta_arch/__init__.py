"""Meta-architectures: the finetune DETR and the pretext-task pretraining models."""

from .detr import DETR
from .detreg import DETRegPretrain
from .pretext_detr import PretextDETR
from .siamese_detr import SiameseDETRPretrain
from .up_detr import UPDETRPretrain

__all__ = ["DETR", "DETRegPretrain", "PretextDETR", "SiameseDETRPretrain", "UPDETRPretrain"]
