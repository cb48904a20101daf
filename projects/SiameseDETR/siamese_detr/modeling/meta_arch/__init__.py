"""Meta-architectures: the finetune DETR and the pretext-task pretraining models."""

from .detr import DETR

__all__ = ["DETR"]
