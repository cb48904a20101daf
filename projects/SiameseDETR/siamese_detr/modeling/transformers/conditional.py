"""Conditional DETR's Transformer (Meng et al., ICCV 2021, §3.3-3.4, Fig. 3), batch-first.

The encoder is DETR's. The decoder differs from DETR's in how a query finds its object:

* a 2-d reference point ``s = sigmoid(ref_point_head(p_q))`` per object query ``p_q`` (paper Eq. 4 / §3.4
  "reference points"; official ``TransformerDecoder.ref_point_head``, a 2-layer MLP), the same for every layer;
* the conditional spatial query ``p_s = T * PE(s)`` (Eq. 5): a sine embedding of the point (``C/2`` channels
  per axis, y first) scaled element-wise by ``T = query_scale(f)`` of the previous layer's output ``f``
  (``T = 1`` in the first layer);
* cross-attention on the CONCATENATION of content and spatial parts (§3.3, Eq. 3): per head, the query is
  ``[c_q W | p_s W_s]`` and the key ``[c_k W | p_k W]``, so a head of width ``2C/M`` computes
  ``c_q . c_k + p_s . p_k``; in the first layer ``p_q`` is also added to the query content and ``p_k`` to
  the key content (official ``is_first`` branch, the only layer with ``ca_qpos_proj``);
* boxes are predicted relative to the reference point: ``sigmoid(FFN(f) + [inverse_sigmoid(s), 0, 0])``
  (Eq. 1 / §3.4), i.e. ``DecoderOutput.references`` holds ``inverse_sigmoid(s)`` for every layer.

Every attention takes separately projected content / positional queries, keys and values (official
``models/transformer.py`` and ``models/attention.py`` of github.com/Atten4Vis/ConditionalDETR, whose module
names ``sa_*_proj`` / ``ca_*_proj`` are kept so official checkpoints map one to one). Only the post-norm
decoder exists (the official pre-norm decoder raises ``NotImplementedError``).

Conventions: ``B`` batch, ``C == d_model``, ``M`` heads, ``S`` memory tokens, ``Q`` queries, ``L`` decoder
layers; padding masks are bool, True at padded positions; points are ``(x, y)`` normalised by the unpadded
image size.
"""

import copy
import math
from typing import List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..heads import MLP
from .base import DecoderOutput, EncoderMemory, ffn_activation, inverse_sigmoid
from .vanilla import DetrEncoderLayer, encode_one_level
from ...utils.user_errors import UserValueError

__all__ = ["ConditionalDetrTransformer", "ConditionalDecoderLayer", "ProjectedAttention", "sine_embed_points"]

# ``inverse_sigmoid`` epsilon of the box reference (official ``util/misc.py`` default, used by
# ``ConditionalDETR.forward``)
REFERENCE_EPS = 1e-5


def sine_embed_points(points: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sine embedding of normalised 2-d points (official ``gen_sineembed_for_position``, with ``num_feats``
    = 128 there, i.e. ``d_model = 256``).

    Args:
        points: ``[..., 2]`` as ``(x, y)`` in ``[0, 1]``.
        num_feats: channels per axis ``F`` (``d_model // 2``).

    Returns:
        ``[..., 2F]``: the y embedding then the x embedding; for coordinate ``a`` scaled by ``2*pi``,
        channel ``2i`` is ``sin(a / T^(2i/F))`` and ``2i+1`` is ``cos(a / T^(2i/F))``. The frequencies are
        computed in float32 whatever the input dtype, as the official code does.
    """
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=points.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    scaled = points * (2 * math.pi)
    embeds = []
    for axis in (1, 0):  # y first, then x
        a = scaled[..., axis, None] / dim_t  # [..., F]
        embeds.append(torch.stack((a[..., 0::2].sin(), a[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(embeds, dim=-1)


class ProjectedAttention(nn.Module):
    """Multi-head scaled dot-product attention on ALREADY projected queries / keys / values, followed by an
    output projection (official ``models/attention.py`` ``MultiheadAttention``: no in-projection).

    Queries and keys have ``qk_dim`` channels (``M`` heads of ``qk_dim / M``), values ``v_dim`` channels
    (``M`` heads of ``v_dim / M``); the output has ``v_dim`` channels. Logits are ``(q / sqrt(qk_dim / M)) . k``
    (the SHA / MHA of Siamese DETR supplementary Eq. 2-4, with ``d_k = qk_dim / M``).
    """

    def __init__(self, qk_dim: int, num_heads: int, v_dim: int, dropout: float = 0.0):
        super().__init__()
        if qk_dim % num_heads or v_dim % num_heads:
            raise UserValueError(f"qk_dim {qk_dim} and v_dim {v_dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qk_dim = qk_dim
        self.v_dim = v_dim
        self.dropout = dropout
        self.out_proj = nn.Linear(v_dim, v_dim)
        nn.init.constant_(self.out_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        attn_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            query: ``[B, Q, qk_dim]``; key: ``[B, S, qk_dim]``; value: ``[B, S, v_dim]``.
            key_padding_mask: bool ``[B, S]``, True = ignored key.
            attn_mask: ``[Q, S]``: bool (True = not allowed) or additive float; None = no mask.

        Returns:
            ``[B, Q, v_dim]``.
        """
        b, nq, _ = query.shape
        m = self.num_heads
        q = query.reshape(b, nq, m, -1).transpose(1, 2)  # [B, M, Q, qk_dim / M]
        k = key.reshape(b, key.shape[1], m, -1).transpose(1, 2)  # [B, M, S, qk_dim / M]
        v = value.reshape(b, value.shape[1], m, -1).transpose(1, 2)  # [B, M, S, v_dim / M]
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # [B, M, Q, S]
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                logits = logits.masked_fill(attn_mask, float("-inf"))
            else:
                logits = logits + attn_mask
        if key_padding_mask is not None:
            logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = F.dropout(logits.softmax(-1), p=self.dropout, training=self.training)
        out = (weights @ v).transpose(1, 2).reshape(b, nq, self.v_dim)
        return self.out_proj(out)


class ConditionalDecoderLayer(nn.Module):
    """One Conditional DETR decoder layer (post-norm): self-attention, conditional cross-attention, FFN.

    Args:
        first: whether this is the first decoder layer, the only one that adds the object query ``p_q``
            (projected by ``ca_qpos_proj``) to the cross-attention query and the key positions to the key
            content.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu", first=False):
        super().__init__()
        # self-attention: content and positional parts projected separately, then summed
        self.sa_qcontent_proj = nn.Linear(d_model, d_model)
        self.sa_qpos_proj = nn.Linear(d_model, d_model)
        self.sa_kcontent_proj = nn.Linear(d_model, d_model)
        self.sa_kpos_proj = nn.Linear(d_model, d_model)
        self.sa_v_proj = nn.Linear(d_model, d_model)
        self.self_attn = ProjectedAttention(d_model, nhead, d_model, dropout=dropout)
        # cross-attention: content and spatial parts concatenated per head (width 2C)
        self.ca_qcontent_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_proj = nn.Linear(d_model, d_model) if first else None
        self.ca_kcontent_proj = nn.Linear(d_model, d_model)
        self.ca_kpos_proj = nn.Linear(d_model, d_model)
        self.ca_v_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_sine_proj = nn.Linear(d_model, d_model)
        self.cross_attn = ProjectedAttention(2 * d_model, nhead, d_model, dropout=dropout)

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
        self.nhead = nhead
        self.first = first

    def _interleave(self, content: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` x2 -> ``[B, N, 2C]`` with head ``h`` = ``[content_h | position_h]``."""
        b, n, c = content.shape
        parts = (content.reshape(b, n, self.nhead, -1), position.reshape(b, n, self.nhead, -1))
        return torch.cat(parts, dim=3).reshape(b, n, 2 * c)

    def forward(self, tgt, memory, memory_key_padding_mask, pos, query_pos, query_sine_embed, self_attn_mask=None):
        """
        Args:
            tgt: ``[B, Q, C]`` decoder content (zeros before the first layer).
            memory, pos: ``[B, S, C]`` encoder memory and its positional encoding; memory_key_padding_mask
                bool ``[B, S]``.
            query_pos: ``[B, Q, C]`` object queries ``p_q``.
            query_sine_embed: ``[B, Q, C]`` conditional spatial query ``T * PE(s)`` (before
                ``ca_qpos_sine_proj``).
            self_attn_mask: ``[Q, Q]`` (bool True = blocked, or additive float) or None.

        Returns:
            ``[B, Q, C]``.
        """
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        tgt2 = self.self_attn(q, k, self.sa_v_proj(tgt), attn_mask=self_attn_mask)
        tgt = self.norm1(tgt + self.dropout1(tgt2))

        q_content = self.ca_qcontent_proj(tgt)
        k_content = self.ca_kcontent_proj(memory)
        k_pos = self.ca_kpos_proj(pos)
        if self.ca_qpos_proj is not None:
            q_content = q_content + self.ca_qpos_proj(query_pos)
            k_content = k_content + k_pos
        q = self._interleave(q_content, self.ca_qpos_sine_proj(query_sine_embed))
        k = self._interleave(k_content, k_pos)
        tgt2 = self.cross_attn(q, k, self.ca_v_proj(memory), key_padding_mask=memory_key_padding_mask)
        tgt = self.norm2(tgt + self.dropout2(tgt2))

        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(tgt2))


class ConditionalDetrTransformer(nn.Module):
    """Conditional DETR's encoder-decoder (single feature level), implementing the interface of :mod:`.base`.

    Args:
        d_model: channels ``C`` (even; the spatial query embeds each axis with ``C / 2`` channels).
        nhead: attention heads ``M``.
        num_encoder_layers, num_decoder_layers: depth.
        dim_feedforward: FFN hidden width.
        dropout: dropout in attention and FFN.
        activation: "relu" (official) or "gelu".

    Official defaults (``main.py``): d_model 256, 8 heads, 6 + 6 layers, FFN 2048, dropout 0.1, relu.
    """

    query_dim = property(lambda self: self.d_model)
    num_prediction_heads = property(lambda self: self.num_decoder_layers)
    shared_heads = True
    learned_queries = True
    num_feature_levels = 1

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
    ):
        super().__init__()
        if d_model % 2 or d_model % nhead:
            raise UserValueError(f"d_model {d_model} must be even and divisible by nhead {nhead} "
                                 "(model.transformer.d_model / model.transformer.nhead)")
        enc = DetrEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, False)
        self.encoder_layers = nn.ModuleList(copy.deepcopy(enc) for _ in range(num_encoder_layers))
        self.decoder_layers = nn.ModuleList(
            ConditionalDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation, first=(i == 0))
            for i in range(num_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(d_model)
        # T = query_scale(f) scales the positions of layers 1..L-1: none with a single decoder layer (an unused
        # module would get no gradient, which DistributedDataParallel refuses)
        self.query_scale = MLP(d_model, d_model, d_model, 2) if num_decoder_layers > 1 else None
        self.ref_point_head = MLP(d_model, d_model, 2, 2)

        self.d_model = d_model
        self.nhead = nhead
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        for p in self.parameters():  # official Transformer._reset_parameters
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def init_prediction_heads(self, class_embed: nn.ModuleList, bbox_embed: nn.ModuleList) -> None:
        """Zero the last box-head layer, so the first boxes sit on the reference points (official
        ``ConditionalDETR.__init__``). The focal class-bias prior is applied by the meta-architecture."""
        for head in bbox_embed:
            nn.init.constant_(head.layers[-1].weight, 0.0)
            nn.init.constant_(head.layers[-1].bias, 0.0)

    def encode(self, srcs: List[torch.Tensor], masks: List[torch.Tensor], pos: List[torch.Tensor]) -> EncoderMemory:
        """DETR's encoder on one projected level: srcs / pos ``[B, C, H, W]``, masks bool ``[B, H, W]``.

        Returns:
            :class:`EncoderMemory` with ``memory [B, HW, C]`` (row-major tokens).
        """
        return encode_one_level(self, srcs, masks, pos)

    def reference_points(self, queries: torch.Tensor) -> torch.Tensor:
        """``[B, Q, C]`` object queries -> ``[B, Q, 2]`` reference points ``(x, y)`` in ``(0, 1)``."""
        return self.ref_point_head(queries).sigmoid()

    def decode(
        self,
        memory: EncoderMemory,
        queries: torch.Tensor,
        self_attn_mask: Optional[torch.Tensor] = None,
        class_embed=None,
        bbox_embed=None,
    ) -> DecoderOutput:
        """Decode object queries (``tgt = 0``, queries as ``p_q``) against ``memory``.

        Args:
            memory: encoder output (possibly of another view: Siamese DETR's Multi-View Cross-Attention, Eq. 6-7).
            queries: ``[B, Q, C]`` object queries (learned, plus region / patch features in pretext tasks);
                they also give the reference points, so region-conditioned queries move them (official
                Siamese DETR ``necks/conditional_tr.py``).
            self_attn_mask: ``[Q, Q]`` (bool True = blocked, or additive float) for the query self-attention.
            class_embed, bbox_embed: unused.

        Returns:
            :class:`DecoderOutput`: ``hidden_states [L, B, Q, C]`` (each layer's output after the shared
            ``decoder_norm``) and ``references [L, B, Q, 2]`` = ``inverse_sigmoid(s, 1e-5)`` (same for all
            layers).
        """
        points = self.reference_points(queries)  # [B, Q, 2]
        point_embed = sine_embed_points(points, self.d_model // 2).to(queries.dtype)  # [B, Q, C]
        out = torch.zeros_like(queries)
        hidden = []
        for i, layer in enumerate(self.decoder_layers):
            sine = point_embed if i == 0 else point_embed * self.query_scale(out)
            out = layer(
                out,
                memory.memory,
                memory.padding_mask,
                memory.pos,
                queries,
                sine,
                self_attn_mask=self_attn_mask,
            )
            hidden.append(self.decoder_norm(out))
        references = inverse_sigmoid(points, eps=REFERENCE_EPS)
        return DecoderOutput(torch.stack(hidden), references.unsqueeze(0).expand(len(hidden), -1, -1, -1))
