"""The interface every DETR-variant Transformer offers to the meta-architectures (batch-first).

The meta-architectures (finetune ``DETR`` and the pretext models) never branch on the variant: they call

* ``transformer.encode(srcs, masks, pos) -> EncoderMemory`` on the projected backbone levels, and
* ``transformer.decode(memory, queries, ...) -> DecoderOutput``,

then apply the per-layer class / box heads. A box is always predicted as
``sigmoid(bbox_embed[l](hs[l]) + pad(references[l]))`` (cxcywh normalised to ``[0, 1]`` by the unpadded
image): the variant decides what the reference is (none for Vanilla DETR, a 2-d point ``(x, y)`` for
Conditional DETR and for Deformable DETR without box refinement or two-stage, a 4-d cxcywh box with
iterative refinement or two-stage, where a 2-d first-layer point is padded with zero logits), and returns
it already in logit space (``inverse_sigmoid`` with the variant's own epsilon), so the head formula itself
is the same for every variant.

Attributes a transformer must have:

* ``d_model``: channels ``C`` of the memory and the decoder states;
* ``query_dim``: width of one learned object query (``C`` for Vanilla / Conditional; ``2C`` for
  Deformable DETR, whose query embedding holds a positional part and a content part);
* ``num_decoder_layers``;
* ``num_prediction_heads``: how many class / box head entries the meta-architecture builds (the decoder
  layers, plus one for the encoder proposals of two-stage Deformable DETR);
* ``shared_heads``: whether those entries are ONE module repeated (DETR, Conditional DETR, Deformable
  DETR without box refinement) or independent copies (iterative box refinement);
* ``learned_queries``: False when the decoder builds its own queries (two-stage Deformable DETR), so
  ``queries`` passed to ``decode`` are ignored.
"""

from dataclasses import dataclass, fields
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor
from torch.nn import functional as F

from ...utils.user_errors import UserValueError

__all__ = ["EncoderMemory", "DecoderOutput", "ffn_activation", "flatten_levels", "inverse_sigmoid"]

_FFN_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def ffn_activation(name: str) -> Callable[[Tensor], Tensor]:
    """The feed-forward activation of every variant's layers: ``"relu"`` (all three official codes' default)
    or ``"gelu"`` (the exact, erf form). Any other name is a user error naming the config key."""
    if name not in _FFN_ACTIVATIONS:
        raise UserValueError(f"model.transformer.activation must be one of {sorted(_FFN_ACTIVATIONS)}, got {name!r}")
    return _FFN_ACTIVATIONS[name]


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Elementwise ``log(x / (1 - x))`` (output of ``x``'s shape) with ``x`` clamped to ``[0, 1]`` and both
    terms to ``>= eps``
    (the official Deformable DETR and Conditional DETR both use ``eps=1e-5``), computed in at least float32:
    in float16 (autocast) the ratio at ``x = 1`` is ``1 / eps``, beyond float16's 65504, which would give
    ``inf`` and a box pinned to the border with no gradient. float32 / float64 inputs are unchanged."""
    x = x.to(torch.promote_types(x.dtype, torch.float32)).clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


@dataclass
class EncoderMemory:
    """Encoder output of a padded batch, all feature levels flattened into one token axis.

    Attributes:
        memory: ``[B, S, C]`` encoder output; ``S = sum_l H_l * W_l``, level-major, row-major inside a level.
        padding_mask: bool ``[B, S]``, True at tokens that come from padding.
        pos: ``[B, S, C]`` positional encoding of each token (plus the level embedding where the variant
            has one).
        spatial_shapes: Long ``[num_levels, 2]``: ``(H_l, W_l)`` of each level.
        level_start_index: Long ``[num_levels]``: first token of each level.
        valid_ratios: ``[B, num_levels, 2]``: ``(w, h)`` fraction of each level that is not padding.
    """

    memory: Tensor
    padding_mask: Tensor
    pos: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor

    def select(self, index: Tensor) -> "EncoderMemory":
        """The same memory for batch rows ``index`` (Long ``[B']``), e.g. the other view of every image in
        Siamese DETR's multi-view cross-attention. Level geometry is shared by the batch and kept."""
        return EncoderMemory(
            memory=self.memory[index],
            padding_mask=self.padding_mask[index],
            pos=self.pos[index],
            spatial_shapes=self.spatial_shapes,
            level_start_index=self.level_start_index,
            valid_ratios=self.valid_ratios[index],
        )

    def level(self, i: int) -> Tensor:
        """Tokens of level ``i``: ``[B, H_i * W_i, C]``."""
        start = int(self.level_start_index[i])
        h, w = (int(v) for v in self.spatial_shapes[i])
        return self.memory[:, start:start + h * w]

    def as_dict(self) -> Dict[str, Tensor]:
        """The six fields by name (shapes as in the class docstring)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class DecoderOutput:
    """Decoder states of every layer and the references their boxes are predicted relative to.

    Attributes:
        hidden_states: ``[L, B, Q, C]``, each decoder layer's output (after the variant's final norm where it
            has one: Vanilla and Conditional DETR; Deformable DETR has none).
        references: ``[L, B, Q, 2 or 4]`` in LOGIT space (``inverse_sigmoid`` of a point / box in
            ``[0, 1]`` normalised by the unpadded image), added to the first 2 or 4 outputs of
            ``bbox_embed[l]`` before the sigmoid; None when boxes are predicted absolutely (Vanilla DETR).
        encoder_outputs: two-stage only: ``{"pred_logits": [B, S, K'], "pred_boxes": [B, S, 4]}`` of the
            encoder proposals (``K'`` = the class head's width; boxes cxcywh in ``[0, 1]``; for the encoder
            loss); otherwise None.
    """

    hidden_states: Tensor
    references: Optional[Tensor] = None
    encoder_outputs: Optional[Dict[str, Tensor]] = None


def flatten_levels(srcs: List[Tensor], masks: List[Tensor], pos: List[Tensor]):
    """Flatten per-level maps into token sequences.

    Args:
        srcs: ``num_levels`` tensors ``[B, C, H_l, W_l]``; masks: bool ``[B, H_l, W_l]`` (True = padding);
        pos: ``[B, C, H_l, W_l]``.

    Returns:
        ``(tokens [B, S, C], padding_mask [B, S], pos [B, S, C], spatial_shapes Long [num_levels, 2],
        level_start_index Long [num_levels], valid_ratios [B, num_levels, 2] as (w, h), in float32 or
        float64 whatever the tokens' dtype)``.
    """
    if not (len(srcs) == len(masks) == len(pos)) or not srcs:
        raise ValueError(f"got {len(srcs)} feature levels, {len(masks)} masks, {len(pos)} position maps")
    device = srcs[0].device
    shapes = torch.as_tensor([s.shape[-2:] for s in srcs], dtype=torch.long, device=device)
    sizes = shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    tokens = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], dim=1)
    padding_mask = torch.cat([m.flatten(1) for m in masks], dim=1)
    pos_flat = torch.cat([p.flatten(2).transpose(1, 2) for p in pos], dim=1).to(tokens.dtype)
    # at least float32 (as the official code, which keeps them float32 under AMP): bfloat16 would round a ratio
    # such as 40 / 53 columns by up to 0.4 %, which moves every reference point of the padded image
    ratio_dtype = torch.promote_types(tokens.dtype, torch.float32)
    valid_ratios = torch.stack([valid_ratio(m) for m in masks], dim=1).to(ratio_dtype)
    return tokens, padding_mask, pos_flat, shapes, level_start_index, valid_ratios


def valid_ratio(mask: Tensor) -> Tensor:
    """``[B, 2]`` (w, h) fraction of unpadded columns / rows of a bool padding mask ``[B, H, W]``
    (Deformable DETR's ``get_valid_ratio``: counted along the first row and the first column)."""
    _, h, w = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1).float()
    valid_w = (~mask[:, 0, :]).sum(1).float()
    return torch.stack([valid_w / w, valid_h / h], dim=-1)
