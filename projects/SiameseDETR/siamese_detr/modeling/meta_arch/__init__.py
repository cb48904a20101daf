"""Meta-architectures: the finetune DETR and the pretext-task pretraining models."""

from .detr import DETR
from .siamese_detr import SiameseDETRPretrain

__all__ = ["DETR", "SiameseDETRPretrain"]
