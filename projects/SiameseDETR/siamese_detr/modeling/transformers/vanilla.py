"""The vanilla DETR encoder-decoder Transformer (Carion et al. 2020, §3.2 and Fig. 10), batch-first.

The public API is split into :meth:`DetrTransformer.encode` and :meth:`DetrTransformer.decode` so that
pretext tasks can decode queries against another view's memory (Siamese DETR multi-view cross-attention,
§3.2) or with a decoder self-attention mask (UP-DETR's grouped patch queries, §3.2 "attention mask").

Conventions: ``B`` batch, ``C == d_model`` channels, ``H x W`` feature map, ``HW = H * W`` memory tokens,
``Q`` queries, ``L`` decoder layers. Padding masks are bool, True at padded positions.
"""

import copy
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DetrTransformer", "DetrEncoderLayer", "DetrDecoderLayer"]


def _activation(name: str):
    table = {"relu": F.relu, "gelu": F.gelu}
    if name not in table:
        raise ValueError(f"activation must be one of {sorted(table)}, got {name!r}")
    return table[name]


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
        self.activation = _activation(activation)
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
    """Query self-attention, cross-attention to the encoder memory, FFN (post- or pre-norm)."""

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
        self.activation = _activation(activation)
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

    def encode(
        self, src: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the encoder on a projected feature map.

        Args:
            src: ``[B, C, H, W]`` projected backbone features.
            mask: bool ``[B, H, W]``, True at padded cells.
            pos: ``[B, C, H, W]`` positional encoding.

        Returns:
            memory ``[B, HW, C]``, mask_flat bool ``[B, HW]``, pos_flat ``[B, HW, C]``
            (token index ``h * W + w``, row-major).
        """
        memory = src.flatten(2).transpose(1, 2)
        pos_flat = pos.flatten(2).transpose(1, 2).to(memory.dtype)
        mask_flat = mask.flatten(1)
        for layer in self.encoder_layers:
            memory = layer(memory, key_padding_mask=mask_flat, pos=pos_flat)
        return self.encoder_norm(memory), mask_flat, pos_flat

    def decode(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_key_padding_mask: Optional[torch.Tensor],
        pos: Optional[torch.Tensor],
        query_pos: Optional[torch.Tensor],
        self_attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Run the decoder.

        Args:
            tgt: ``[B, Q, C]`` decoder input (zeros in DETR; region features in pretext tasks).
            memory: ``[B, HW, C]`` encoder output (may come from another view than the queries).
            memory_key_padding_mask: bool ``[B, HW]`` True at padded memory tokens, or None.
            pos: ``[B, HW, C]`` positional encoding of the memory, or None.
            query_pos: ``[B, Q, C]`` query positional embedding (learned object queries), or None.
            self_attn_mask: ``[Q, Q]`` mask for query self-attention (bool True = not allowed, or additive
                float), e.g. UP-DETR's block-diagonal patch-group mask; None = full attention.

        Returns:
            hs ``[L, B, Q, C]``: each decoder layer's output after the shared final LayerNorm
            (``L = num_decoder_layers``, or 1 when ``return_intermediate_dec=False``).
        """
        out = tgt
        intermediate = []
        for layer in self.decoder_layers:
            out = layer(
                out,
                memory,
                memory_key_padding_mask=memory_key_padding_mask,
                pos=pos,
                query_pos=query_pos,
                self_attn_mask=self_attn_mask,
            )
            if self.return_intermediate_dec:
                intermediate.append(self.decoder_norm(out))
        if not self.return_intermediate_dec:
            return self.decoder_norm(out).unsqueeze(0)
        return torch.stack(intermediate)

    def forward(
        self, src: torch.Tensor, mask: torch.Tensor, query_embed: torch.Tensor, pos: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """DETR forward: encode, then decode ``Q`` learned queries starting from ``tgt = 0``.

        Args:
            src: ``[B, C, H, W]``; mask: bool ``[B, H, W]``; pos: ``[B, C, H, W]``;
            query_embed: ``[Q, C]`` learned object queries (used as ``query_pos``).

        Returns:
            hs ``[L, B, Q, C]`` and memory ``[B, HW, C]``.
        """
        memory, mask_flat, pos_flat = self.encode(src, mask, pos)
        query_pos = query_embed.unsqueeze(0).expand(src.shape[0], -1, -1)
        tgt = torch.zeros_like(query_pos)
        hs = self.decode(tgt, memory, mask_flat, pos_flat, query_pos)
        return hs, memory
