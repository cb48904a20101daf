"""The vanilla DETR encoder-decoder Transformer (Carion et al. 2020, §3.2 and Fig. 10), batch-first.

It implements the variant interface of :mod:`.base` (``encode`` / ``decode``), so that pretext tasks can
decode queries against another view's memory (Siamese DETR multi-view cross-attention, §3.3, Eq. 6-7) or
with a decoder self-attention mask (UP-DETR's grouped patch queries, §3.1.2 "Attention Mask", Eq. 3).

Conventions: ``B`` batch, ``C == d_model`` channels, ``H x W`` feature map, ``HW = H * W`` memory tokens,
``Q`` queries, ``L`` decoder layers. Padding masks are bool, True at padded positions.
"""

import copy
from typing import List, Optional

import torch
from torch import nn

from .base import DecoderOutput, EncoderMemory, ffn_activation, flatten_levels
from ...utils.user_errors import UserValueError

__all__ = ["DetrTransformer", "DetrEncoderLayer", "DetrDecoderLayer", "encode_one_level"]


def _with_pos(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return x if pos is None else x + pos


class DetrEncoderLayer(nn.Module):
    """Self-attention + FFN; positional encodings are added to queries and keys only (not values).

    ``normalize_before=False`` is the post-norm layer of the original Transformer (DETR default),
    True is the pre-norm variant.
    """

    def __init__(
        self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu", normalize_before=False
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = ffn_activation(activation)
        self.normalize_before = normalize_before

    def _attn(self, x, pos, key_padding_mask):
        q = k = _with_pos(x, pos)
        return self.self_attn(q, k, x, key_padding_mask=key_padding_mask, need_weights=False)[0]

    def _ffn(self, x):
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(self, src, key_padding_mask=None, pos=None):
        """src, pos: ``[B, HW, C]``; key_padding_mask: bool ``[B, HW]``. Returns ``[B, HW, C]``."""
        if self.normalize_before:
            src = src + self.dropout1(self._attn(self.norm1(src), pos, key_padding_mask))
            return src + self.dropout2(self._ffn(self.norm2(src)))
        src = self.norm1(src + self.dropout1(self._attn(src, pos, key_padding_mask)))
        return self.norm2(src + self.dropout2(self._ffn(src)))


class DetrDecoderLayer(nn.Module):
    """Query self-attention, cross-attention to the encoder memory, FFN (post- or pre-norm).

    The cross-attention is Siamese DETR Eq. 2-3 with positions (supplementary §A.1, Eq. 1-4 = Eq. 14-17 of
    the appendix of the arXiv text): ``q = f_q(tgt + query_pos)``, ``k = f_k(memory + pos)``,
    ``v = f_v(memory)``, then ``Softmax(q k^T / sqrt(d_k)) v`` per head, heads concatenated and projected.
    """

    def __init__(
        self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu", normalize_before=False
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = ffn_activation(activation)
        self.normalize_before = normalize_before

    def _self_attn(self, x, query_pos, attn_mask):
        q = k = _with_pos(x, query_pos)
        return self.self_attn(q, k, x, attn_mask=attn_mask, need_weights=False)[0]

    def _cross_attn(self, x, memory, memory_key_padding_mask, pos, query_pos):
        return self.cross_attn(
            _with_pos(x, query_pos),
            _with_pos(memory, pos),
            memory,
            key_padding_mask=memory_key_padding_mask,
            need_weights=False,
        )[0]

    def _ffn(self, x):
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(
        self, tgt, memory, memory_key_padding_mask=None, pos=None, query_pos=None, self_attn_mask=None
    ):
        """tgt, query_pos: ``[B, Q, C]``; memory, pos: ``[B, HW, C]``; memory_key_padding_mask ``[B, HW]``;
        self_attn_mask: ``[Q, Q]`` (bool True = blocked, or additive float) or None. Returns ``[B, Q, C]``."""
        if self.normalize_before:
            tgt = tgt + self.dropout1(self._self_attn(self.norm1(tgt), query_pos, self_attn_mask))
            tgt = tgt + self.dropout2(
                self._cross_attn(self.norm2(tgt), memory, memory_key_padding_mask, pos, query_pos)
            )
            return tgt + self.dropout3(self._ffn(self.norm3(tgt)))
        tgt = self.norm1(tgt + self.dropout1(self._self_attn(tgt, query_pos, self_attn_mask)))
        tgt = self.norm2(
            tgt + self.dropout2(self._cross_attn(tgt, memory, memory_key_padding_mask, pos, query_pos))
        )
        return self.norm3(tgt + self.dropout3(self._ffn(tgt)))


def encode_one_level(
    transformer: nn.Module, srcs: List[torch.Tensor], masks: List[torch.Tensor], pos: List[torch.Tensor], norm=None
) -> EncoderMemory:
    """DETR's encoder (``transformer.encoder_layers``, then ``norm`` if given) on ONE projected level, shared by
    Vanilla and Conditional DETR.

    Args:
        srcs: ``[[B, C, H, W]]``; masks: ``[bool [B, H, W]]`` (True = padding); pos: ``[[B, C, H, W]]``.

    Returns:
        :class:`EncoderMemory` with ``memory [B, HW, C]`` (token ``h * W + w``, row-major).
    """
    if len(srcs) != 1:
        raise UserValueError(
            f"{type(transformer).__name__} takes one feature level, got {len(srcs)}: set model.in_features to one "
            "level, e.g. ['res5'] (of the three variants, only Deformable DETR takes several)"
        )
    tokens, mask_flat, pos_flat, shapes, starts, ratios = flatten_levels(srcs, masks, pos)
    memory = tokens
    for layer in transformer.encoder_layers:
        memory = layer(memory, key_padding_mask=mask_flat, pos=pos_flat)
    if norm is not None:
        memory = norm(memory)
    return EncoderMemory(memory, mask_flat, pos_flat, shapes, starts, ratios)


class DetrTransformer(nn.Module):
    """DETR's Transformer: ``num_encoder_layers`` encoder layers over the flattened feature map and
    ``num_decoder_layers`` decoder layers over object queries, all batch-first.

    Args:
        d_model: channels ``C`` of memory and queries.
        nhead: attention heads.
        num_encoder_layers, num_decoder_layers: depth of encoder / decoder.
        dim_feedforward: hidden width of each FFN.
        dropout: dropout in attention and FFN.
        activation: "relu" (DETR) or "gelu".
        normalize_before: pre-norm layers (adds a final encoder LayerNorm); False = post-norm (DETR default).
        return_intermediate_dec: return every decoder layer's output (for auxiliary losses, DETR §3.2
            "Auxiliary decoding losses"); otherwise only the last one (still with a leading ``L = 1`` axis).
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
        return_intermediate_dec: bool = True,
    ):
        super().__init__()
        if d_model % nhead:  # torch's MultiheadAttention would assert, naming no config key
            raise UserValueError(f"d_model {d_model} must be divisible by nhead {nhead} (model.transformer.d_model / "
                                 "model.transformer.nhead: each head gets d_model / nhead channels)")
        enc = DetrEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, normalize_before)
        dec = DetrDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation, normalize_before)
        self.encoder_layers = nn.ModuleList(copy.deepcopy(enc) for _ in range(num_encoder_layers))
        self.decoder_layers = nn.ModuleList(copy.deepcopy(dec) for _ in range(num_decoder_layers))
        self.encoder_norm = nn.LayerNorm(d_model) if normalize_before else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d_model)

        self.d_model = d_model
        self.nhead = nhead
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.return_intermediate_dec = return_intermediate_dec
        self._reset_parameters()

    def _reset_parameters(self):
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    # ------------------------------------------------------------------------- variant interface (base.py)
    query_dim = property(lambda self: self.d_model)
    num_prediction_heads = property(lambda self: self.num_decoder_layers)
    shared_heads = True
    learned_queries = True
    num_feature_levels = 1

    def encode(self, srcs: List[torch.Tensor], masks: List[torch.Tensor], pos: List[torch.Tensor]) -> EncoderMemory:
        """Run the encoder on the projected feature map (a single level).

        Args:
            srcs: ``[B, C, H, W]`` projected backbone features (one level); masks: bool ``[B, H, W]``, True at
                padded cells; pos: ``[B, C, H, W]`` positional encoding.

        Returns:
            :class:`EncoderMemory` with ``memory [B, HW, C]`` (token ``h * W + w``, row-major).
        """
        return encode_one_level(self, srcs, masks, pos, self.encoder_norm)

    def decode(
        self,
        memory: EncoderMemory,
        queries: torch.Tensor,
        self_attn_mask: Optional[torch.Tensor] = None,
        class_embed=None,
        bbox_embed=None,
    ) -> DecoderOutput:
        """Run the decoder: ``tgt = 0`` and the object queries as query positional embeddings (DETR §3.2).

        With ``queries = proj(z_1) + phi_q`` and the memory ``c_2`` of the other view this is Siamese DETR's
        Multi-View Cross-Attention (Eq. 6-7): the cross-attention query is ``f_q(tgt + proj(z_1) + phi_q)``.

        Args:
            memory: encoder output (may come from another view than the queries).
            queries: ``[B, Q, C]`` object queries (learned ``query_embed``, plus region / patch features in
                pretext tasks).
            self_attn_mask: ``[Q, Q]`` mask for query self-attention (bool True = not allowed, or additive
                float), e.g. UP-DETR's block-diagonal patch-group mask; None = full attention.
            class_embed, bbox_embed: unused (boxes are predicted absolutely).

        Returns:
            :class:`DecoderOutput` with ``hidden_states [L, B, Q, C]`` (each layer's output after the shared
            final LayerNorm; ``L = 1`` when ``return_intermediate_dec=False``) and no references.
        """
        out = torch.zeros_like(queries)
        intermediate = []
        for layer in self.decoder_layers:
            out = layer(
                out,
                memory.memory,
                memory_key_padding_mask=memory.padding_mask,
                pos=memory.pos,
                query_pos=queries,
                self_attn_mask=self_attn_mask,
            )
            if self.return_intermediate_dec:
                intermediate.append(self.decoder_norm(out))
        if not self.return_intermediate_dec:
            return DecoderOutput(self.decoder_norm(out).unsqueeze(0))
        return DecoderOutput(torch.stack(intermediate))
