"""Multi-scale deformable attention (Deformable DETR, Zhu et al. ICLR 2021, §4.1 Eq. 3).

For a query ``q`` with reference point ``p_q`` (normalised ``[0, 1]`` coordinates, shared by all levels)::

    MSDeformAttn(z_q, p_q, {x_l}) = sum_m W_m [ sum_l sum_k A_mlqk * W'_m x_l(phi_l(p_q) + dp_mlqk) ]

``A_mlqk`` (softmax over the ``L * K`` points of a head) and ``dp_mlqk`` (sampling offsets) are linear
projections of the query; ``x_l(.)`` is bilinear interpolation of level ``l`` with zero padding outside the
map. The interpolation uses ``F.grid_sample(align_corners=False)``: location ``(0, 0)`` is the top-left
corner of the map, ``(1, 1)`` its bottom-right corner, so pixel ``(i, j)`` has its centre at
``((j + 0.5) / W, (i + 0.5) / H)``.

:func:`multi_scale_deformable_attention` runs on any device in pure PyTorch. When the compiled extension of
the official repository (fundamentalvision/Deformable-DETR ``models/ops``, Python module
``MultiScaleDeformableAttention``) is importable and the tensors are CUDA, it is used instead unless
``use_compiled=False`` (same result, less memory; float16 / bfloat16 values are computed in float32).
"""

import math
from typing import Optional

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = ["MSDeformAttn", "multi_scale_deformable_attention", "compiled_op_available"]

_COMPILED = None  # the extension module, False when not importable, None before the first look-up


def _compiled_extension():
    global _COMPILED
    if _COMPILED is None:
        try:
            import MultiScaleDeformableAttention as ext  # noqa: N813  (official CUDA extension, optional)

            _COMPILED = ext
        except ImportError:
            _COMPILED = False
    return _COMPILED or None


def compiled_op_available() -> bool:
    """Whether the official compiled ``MultiScaleDeformableAttention`` extension can be imported."""
    return _compiled_extension() is not None


class _CompiledMSDeformAttn(torch.autograd.Function):
    """Autograd wrapper of the compiled extension's forward / backward kernels."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
        """Shapes as :func:`multi_scale_deformable_attention_pytorch` (contiguous float32 / float64 CUDA
        tensors): ``value [B, S, M, D]`` -> ``[B, Q, M * D]``."""
        ext = _compiled_extension()
        ctx.im2col_step = im2col_step
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return ext.ms_deform_attn_forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_loc, grad_weights = _compiled_extension().ms_deform_attn_backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
            grad_output.contiguous(), ctx.im2col_step,
        )
        return grad_value, None, None, grad_loc, grad_weights, None


def multi_scale_deformable_attention_pytorch(
    value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Pure-PyTorch multi-scale deformable attention core (bilinear sampling + weighted sum).

    Args:
        value: ``[B, S, M, D]`` per-head values of all levels, ``S = sum_l H_l * W_l`` (level-major,
            row-major inside a level); ``M`` heads of ``D`` channels.
        spatial_shapes: Long ``[L, 2]``, ``(H_l, W_l)``.
        level_start_index: Long ``[L]``, first token of each level in ``S``.
        sampling_locations: ``[B, Q, M, L, P, 2]`` as ``(x, y)`` in ``[0, 1]`` of each level (grid_sample
            convention with ``align_corners=False``; outside the map samples zeros).
        attention_weights: ``[B, Q, M, L, P]`` (already normalised by the caller).

    Returns:
        ``[B, Q, M * D]``, heads concatenated.
    """
    batch, _, heads, channels = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    # The points go on grid_sample's rows and the queries on its columns: [B, Q, M, L, P, 2] -> [B*M, L, P, Q, 2]
    # (grid_sample wants [-1, 1]) and weights [B, Q, M, L, P] -> [B*M, L, 1, P, Q]. With the long query axis
    # innermost, grid_sample, the weighting and their backward run over long contiguous rows. The [.., Q, P]
    # layout (inner loops P = 4 long) costs 1.2x in this function and 1.1x per training step of the demo
    # detector on CPU (``benchmarks/bench_ms_deform_attn.py``); the forward sums are the same.
    # sampled in the wider of the two dtypes (grid_sample wants one): float32 locations with float16 /
    # bfloat16 values (a model cast with .half() / .to(torch.bfloat16)) sample float32 values, as autocast's
    # promotion does, and the result is returned in the values' dtype
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    grids = (2 * sampling_locations.to(dtype) - 1).permute(0, 2, 3, 4, 1, 5).reshape(
        batch * heads, num_levels, num_points, num_queries, 2
    )
    weights = attention_weights.permute(0, 2, 3, 4, 1).reshape(batch * heads, num_levels, 1, num_points, num_queries)
    out = None
    for lvl in range(num_levels):
        h, w = int(spatial_shapes[lvl, 0]), int(spatial_shapes[lvl, 1])
        start = int(level_start_index[lvl])
        # [B, HW, M, D] -> [B, M, D, HW] -> [B*M, D, H, W]
        value_l = value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(batch * heads, channels, h, w).to(dtype)
        # [B*M, D, P, Q]
        sampled = F.grid_sample(value_l, grids[:, lvl], mode="bilinear", padding_mode="zeros", align_corners=False)
        # weighted sum over the level's points, accumulated over levels: [B*M, D, Q]
        term = (sampled * weights[:, lvl]).sum(2)
        out = term if out is None else out + term
    return out.view(batch, heads * channels, num_queries).transpose(1, 2).contiguous().to(value.dtype)


def multi_scale_deformable_attention(
    value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, sampling_locations: Tensor,
    attention_weights: Tensor, use_compiled: bool = True, im2col_step: int = 64,
) -> Tensor:
    """Multi-scale deformable attention core; shapes as :func:`multi_scale_deformable_attention_pytorch`.

    Dispatches to the official compiled extension when ``use_compiled``, the extension imports, and the
    tensors are CUDA; it computes in float32 / float64, so float16 / bfloat16 inputs (autocast, whose linear
    projections give float16 values) run it in float32 and get the result back in the values' dtype.
    Otherwise runs the pure-PyTorch ``grid_sample`` path.
    """
    if use_compiled and value.is_cuda and _compiled_extension() is not None:
        compute = value.dtype if value.dtype in (torch.float32, torch.float64) else torch.float32
        out = _CompiledMSDeformAttn.apply(
            value.to(compute).contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
            sampling_locations.to(compute).contiguous(), attention_weights.to(compute).contiguous(), im2col_step,
        )
        return out.to(value.dtype)
    return multi_scale_deformable_attention_pytorch(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (Deformable DETR Eq. 3), batch-first.

    Parameter names and initialisation follow the official ``models/ops/modules/ms_deform_attn.py``
    (``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``), so official weights load
    unchanged: offsets start at zero weight with a bias placing head ``m``'s point ``k`` (0-based) at
    ``(k + 1) * d_m`` cells, ``d_m`` the direction ``2*pi*m / M`` scaled so that its larger coordinate is
    ``+-1`` (the same on every level); attention weights
    start uniform; value / output projections are Xavier-uniform with zero bias.

    Args:
        d_model: channels ``C``; ``n_levels``: ``L``; ``n_heads``: ``M`` (``C % M == 0``);
        n_points: sampling points ``P`` per head and level; use_compiled: allow the compiled CUDA kernel.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 use_compiled: bool = True):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}) "
                             "(model.transformer.d_model / model.transformer.nhead)")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.use_compiled = use_compiled
        self.im2col_step = 64
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation (see the class docstring): ``sampling_offsets.bias`` viewed as
        ``[M, L, P, 2]`` ``(x, y)`` holds ``(k + 1) * d_m``; zero attention logits; Xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        direction = torch.stack([angles.cos(), angles.sin()], -1)
        direction = direction / direction.abs().max(-1, keepdim=True)[0]  # [M, 2], max |coord| = 1
        radius = torch.arange(1, self.n_points + 1, dtype=torch.float32)  # point k at distance k + 1
        bias = direction[:, None, None, :] * radius[None, None, :, None]  # [M, 1, P, 2]
        bias = bias.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self, query: Tensor, reference_points: Tensor, value_input: Tensor, spatial_shapes: Tensor,
        level_start_index: Tensor, padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            query: ``[B, Q, C]`` (content + positional encoding).
            reference_points: ``[B, Q, L, 2]`` points ``(x, y)`` or ``[B, Q, L, 4]`` boxes
                ``(cx, cy, w, h)``, in ``[0, 1]`` of each level INCLUDING its padding (i.e. already scaled
                by the valid ratios). With boxes, offsets are relative to the box size:
                ``loc = c + offset / P * wh / 2`` (official); with points, to the level size in cells.
            value_input: ``[B, S, C]`` flattened levels; ``spatial_shapes`` Long ``[L, 2]`` ``(H, W)``;
            level_start_index: Long ``[L]``.
            padding_mask: bool ``[B, S]``, True at padding (their values are zeroed before sampling).

        Returns:
            ``[B, Q, C]``.
        """
        batch, num_queries, _ = query.shape
        _, num_tokens, _ = value_input.shape
        if int(spatial_shapes.prod(1).sum()) != num_tokens:
            raise ValueError(f"spatial_shapes {spatial_shapes.tolist()} do not cover {num_tokens} tokens")
        heads, levels, points = self.n_heads, self.n_levels, self.n_points

        value = self.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(batch, num_tokens, heads, self.d_model // heads)

        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)

        if reference_points.shape[-1] == 2:
            # offsets are in cells of each level: divide by (W_l, H_l)
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            locations = (
                reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
            )
        elif reference_points.shape[-1] == 4:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(f"reference_points must end in 2 or 4 values, got {tuple(reference_points.shape)}")

        out = multi_scale_deformable_attention(
            value, spatial_shapes, level_start_index, locations, weights,
            use_compiled=self.use_compiled, im2col_step=self.im2col_step,
        )
        return self.output_proj(out)
