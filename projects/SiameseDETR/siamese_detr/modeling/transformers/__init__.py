"""DETR-variant Transformers; each variant lives in one file and shares the batch-first encode/decode API."""

from .base import DecoderOutput, EncoderMemory, inverse_sigmoid
from .conditional import ConditionalDetrTransformer
from .deformable import DeformableDetrTransformer
from .vanilla import DetrDecoderLayer, DetrEncoderLayer, DetrTransformer

__all__ = [
    "ConditionalDetrTransformer",
    "DecoderOutput",
    "DeformableDetrTransformer",
    "DetrDecoderLayer",
    "DetrEncoderLayer",
    "DetrTransformer",
    "EncoderMemory",
    "inverse_sigmoid",
]
