"""DETR-variant Transformers; each variant lives in one file and shares the batch-first encode/decode API."""

from .vanilla import DetrDecoderLayer, DetrEncoderLayer, DetrTransformer

__all__ = ["DetrTransformer", "DetrEncoderLayer", "DetrDecoderLayer"]
