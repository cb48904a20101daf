"""Meta-architectures: the finetune DETR and the pretext-task pretraining models."""

from .detr import DETR
from .detreg import DETRegPretrain
from .siamese_detr import SiameseDETRPretrain
from .up_detr import UPDETRPretrain

__all__ = ["DETR", "DETRegPretrain", "SiameseDETRPretrain", "UPDETRPretrain"]
