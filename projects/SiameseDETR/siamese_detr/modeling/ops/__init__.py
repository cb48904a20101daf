"""Custom attention operators (pure PyTorch, with an optional compiled fast path)."""

from .ms_deform_attn import MSDeformAttn, compiled_op_available, multi_scale_deformable_attention

__all__ = ["MSDeformAttn", "compiled_op_available", "multi_scale_deformable_attention"]
