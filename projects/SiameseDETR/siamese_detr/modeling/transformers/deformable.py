"""Deformable DETR transformer (Zhu et al., ICLR 2021), batch-first, on the variant interface of :mod:`.base`.

Follows the official fundamentalvision/Deformable-DETR ``models/deformable_transformer.py`` (module and
parameter names included, so official checkpoints map one to one):

* encoder: multi-scale deformable self-attention (§4.1) over all levels, each token's reference point being
  its own cell centre (normalised by the valid part of its level, then rescaled to every level with the
  valid ratios); level embeddings are added to the sine positional encodings;
* decoder: query self-attention (``nn.MultiheadAttention``) then deformable cross-attention around a
  reference point ``sigmoid(Linear(query_pos))`` (§4.1 "Deformable Transformer decoder");
* iterative bounding box refinement (App. A.4): decoder layer ``l`` refines the (detached) reference box
  with ``bbox_embed[l]``; the prediction heads are then independent per layer;
* two-stage (App. A.4): the encoder output proposes one box per token (class / box heads entry ``L``),
  the top-k proposals give the decoder's reference boxes and, through ``pos_trans``, its queries.

Conventions: ``B`` batch, ``C = d_model``, ``S = sum_l H_l W_l`` memory tokens, ``Q`` queries, ``L`` decoder
layers. Points / boxes are ``(x, y)`` / ``(cx, cy, w, h)`` normalised to ``[0, 1]`` by the unpadded image.
The query embedding has ``2C`` channels, ``[query_pos | tgt]`` (positional half FIRST, as the official
``torch.split(query_embed, C, dim=1)``).
"""

import copy
import math
from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..ops import MSDeformAttn
from .base import DecoderOutput, EncoderMemory, ffn_activation, flatten_levels, inverse_sigmoid
from ...utils.user_errors import UserValueError

__all__ = ["DeformableDetrTransformer", "DeformableEncoderLayer", "DeformableDecoderLayer"]

_INVERSE_SIGMOID_EPS = 1e-5  # official util/misc.py inverse_sigmoid


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention + FFN, post-norm (official ``DeformableTransformerEncoderLayer``)."""

    def __init__(self, d_model=256, d_ffn=1024, dropout=0.1, activation="relu", n_levels=4, n_heads=8,
                 n_points=4, use_compiled=True):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, use_compiled=use_compiled)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = ffn_activation(activation)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask=None):
        """src, pos: ``[B, S, C]``; reference_points ``[B, S, n_levels, 2]`` ``(x, y)`` in ``[0, 1]`` of each
        level (:func:`encoder_reference_points`); spatial_shapes Long ``[n_levels, 2]``; level_start_index Long
        ``[n_levels]``; padding_mask bool ``[B, S]``. Returns ``[B, S, C]``."""
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout2(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class DeformableDecoderLayer(nn.Module):
    """Self-attention, deformable cross-attention, FFN; post-norm (official
    ``DeformableTransformerDecoderLayer``: ``norm2`` after self-attention, ``norm1`` after cross-attention)."""

    def __init__(self, d_model=256, d_ffn=1024, dropout=0.1, activation="relu", n_levels=4, n_heads=8,
                 n_points=4, use_compiled=True):
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, use_compiled=use_compiled)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = ffn_activation(activation)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt, query_pos, reference_points, memory, spatial_shapes, level_start_index,
                memory_padding_mask=None, self_attn_mask=None):
        """tgt, query_pos: ``[B, Q, C]``; reference_points ``[B, Q, n_levels, 2 or 4]``, points ``(x, y)`` or
        boxes cxcywh in ``[0, 1]`` (NOT logits), valid-ratio scaled; memory ``[B, S, C]``; memory_padding_mask
        bool ``[B, S]``; self_attn_mask ``[Q, Q]`` (bool True = blocked, or additive float). Returns ``[B, Q, C]``."""
        q = k = tgt + query_pos
        attn = self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attn))
        attn = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes, level_start_index,
                               memory_padding_mask)
        tgt = self.norm1(tgt + self.dropout1(attn))
        ffn = self.linear2(self.dropout3(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(ffn))


class _LayerStack(nn.Module):
    """Holds ``layers`` so state_dict keys read ``encoder.layers.{i}.*`` / ``decoder.layers.{i}.*``."""

    def __init__(self, layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers


def encoder_reference_points(spatial_shapes: Tensor, valid_ratios: Tensor) -> Tensor:
    """Reference point of every encoder token on every level (official ``get_reference_points``).

    Token ``(i, j)`` of level ``l`` has centre ``((j + 0.5) / (r^w_l W_l), (i + 0.5) / (r^h_l H_l))`` in
    coordinates of the unpadded image, then rescaled to each level ``l'`` by its valid ratios.
    Computed in float32 whatever the model dtype, exactly as the official code.

    Args:
        spatial_shapes: Long ``[L, 2]``; valid_ratios: ``[B, L, 2]`` as ``(w, h)``.

    Returns:
        float32 ``[B, S, L, 2]`` as ``(x, y)``.
    """
    ratios = valid_ratios.float()
    device = spatial_shapes.device
    refs = []
    for lvl in range(spatial_shapes.shape[0]):
        h, w = int(spatial_shapes[lvl, 0]), int(spatial_shapes[lvl, 1])
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        ref_y = ref_y.reshape(-1)[None] / (ratios[:, None, lvl, 1] * h)
        ref_x = ref_x.reshape(-1)[None] / (ratios[:, None, lvl, 0] * w)
        refs.append(torch.stack((ref_x, ref_y), -1))
    return torch.cat(refs, 1)[:, :, None] * ratios[:, None]


def check_enough_proposals(num_proposals: int, memory: EncoderMemory) -> None:
    """Two-stage mode keeps the top ``num_proposals`` of the ``S`` encoder tokens (one proposal each); raise a
    ``ValueError`` naming the setting when the padded batch has fewer tokens (``torch.topk`` would fail with
    "selected index k out of range")."""
    num_tokens = memory.memory.shape[1]
    if num_proposals > num_tokens:
        raise UserValueError(
            f"two-stage Deformable DETR keeps two_stage_num_proposals={num_proposals} encoder proposals but the "
            f"batch has only {num_tokens} tokens (levels {memory.spatial_shapes.tolist()}): feed larger images "
            f"(e.g. the test resize) or set model.transformer.two_stage_num_proposals <= {num_tokens}"
        )


class DeformableDetrTransformer(nn.Module):
    """Deformable DETR encoder-decoder on the variant interface (``encode`` / ``decode``).

    Args:
        d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout, activation: as the
            official ``DeformableTransformer`` (R50 defaults: 256, 8, 6, 6, 1024, 0.1, relu).
        num_feature_levels: 1 (single-scale, C5) or 4 (C3-C5 + one stride-64 level).
        enc_n_points, dec_n_points: sampling points per head and level (4).
        with_box_refine: iterative bounding box refinement (``bbox_embed[l]`` refines layer ``l``'s
            reference; heads not shared).
        two_stage: encoder proposals give the decoder's reference boxes and queries (no learned queries).
        two_stage_num_proposals: top-k proposals kept (the official code uses ``num_queries``).
        use_compiled_op: use the official compiled CUDA kernel when importable and on CUDA (see
            :mod:`siamese_detr.modeling.ops.ms_deform_attn`); False forces the PyTorch ``grid_sample`` path.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
        dec_n_points: int = 4,
        with_box_refine: bool = False,
        two_stage: bool = False,
        two_stage_num_proposals: int = 300,
        use_compiled_op: bool = True,
    ):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.query_dim = 2 * d_model
        self.num_decoder_layers = num_decoder_layers
        self.num_feature_levels = num_feature_levels
        self.with_box_refine = with_box_refine
        self.two_stage = two_stage
        self.two_stage_num_proposals = two_stage_num_proposals
        self.num_prediction_heads = num_decoder_layers + (1 if two_stage else 0)
        self.shared_heads = not with_box_refine
        self.learned_queries = not two_stage

        enc_layer = DeformableEncoderLayer(d_model, dim_feedforward, dropout, activation, num_feature_levels,
                                           nhead, enc_n_points, use_compiled_op)
        dec_layer = DeformableDecoderLayer(d_model, dim_feedforward, dropout, activation, num_feature_levels,
                                           nhead, dec_n_points, use_compiled_op)
        self.encoder = _LayerStack(enc_layer, num_encoder_layers)
        self.decoder = _LayerStack(dec_layer, num_decoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        if two_stage:
            self.enc_output = nn.Linear(d_model, d_model)
            self.enc_output_norm = nn.LayerNorm(d_model)
            self.pos_trans = nn.Linear(2 * d_model, 2 * d_model)
            self.pos_trans_norm = nn.LayerNorm(2 * d_model)
        else:
            self.reference_points = nn.Linear(d_model, 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official ``_reset_parameters``: Xavier on every matrix, then the deformable attention's own init,
        Xavier / zero for ``reference_points``, N(0, 1) level embeddings."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        if not self.two_stage:
            nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
            nn.init.zeros_(self.reference_points.bias)
        nn.init.normal_(self.level_embed)

    def init_prediction_heads(self, class_embed: nn.ModuleList, bbox_embed: nn.ModuleList) -> None:
        """Official head init (``models/deformable_detr.py``): last box layer zero, its size bias ``-2`` for
        the first head (the shared head without refinement; only ``bbox_embed[0]`` with refinement), and
        ``0`` on every head in two-stage mode. ``class_embed`` keeps its default init (the focal prior bias
        is set by the meta-architecture)."""
        del class_embed
        with torch.no_grad():
            for head in bbox_embed:
                head.layers[-1].weight.zero_()
                head.layers[-1].bias.zero_()
            if not self.two_stage:
                bbox_embed[0].layers[-1].bias[2:] = -2.0

    # ------------------------------------------------------------------ encoder
    def encode(self, srcs: List[Tensor], masks: List[Tensor], pos: List[Tensor]) -> EncoderMemory:
        """srcs, pos: per level ``[B, C, H_l, W_l]``; masks bool ``[B, H_l, W_l]`` (True = padding).
        ``pos`` of level ``l`` gets ``level_embed[l]`` added (returned in ``EncoderMemory.pos``).
        Returns :class:`EncoderMemory` with ``memory [B, S, C]`` (level-major, row-major inside a level)."""
        if len(srcs) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(srcs)}")
        tokens, padding_mask, pos_flat, shapes, level_start, valid_ratios = flatten_levels(srcs, masks, pos)
        sizes = shapes.prod(1).tolist()
        level_pos = torch.repeat_interleave(
            self.level_embed, torch.as_tensor(sizes, device=tokens.device), dim=0
        )  # [S, C]
        pos_flat = pos_flat + level_pos[None]
        reference_points = encoder_reference_points(shapes, valid_ratios)
        memory = tokens
        for layer in self.encoder.layers:
            memory = layer(memory, pos_flat, reference_points, shapes, level_start, padding_mask)
        return EncoderMemory(memory, padding_mask, pos_flat, shapes, level_start, valid_ratios)

    # ------------------------------------------------------------------ two-stage helpers
    def encoder_proposals(self, memory: EncoderMemory):
        """One proposal per encoder token (official ``gen_encoder_output_proposals``).

        The proposal of token ``(i, j)`` of level ``l`` is the box centred on the cell, of size
        ``0.05 * 2^l``, normalised by the unpadded level; proposals touching the image border (outside
        ``(0.01, 0.99)``) and padded tokens are invalid (``+inf`` logits, zeroed memory).

        Returns:
            ``(output_memory [B, S, C], proposals [B, S, 4] float32 cxcywh in LOGIT space)``.
        """
        batch = memory.memory.shape[0]
        device = memory.memory.device
        proposals = []
        for lvl in range(memory.spatial_shapes.shape[0]):
            h, w = int(memory.spatial_shapes[lvl, 0]), int(memory.spatial_shapes[lvl, 1])
            start = int(memory.level_start_index[lvl])
            mask = memory.padding_mask[:, start:start + h * w].view(batch, h, w)
            valid_h = (~mask[:, :, 0]).sum(1)
            valid_w = (~mask[:, 0, :]).sum(1)
            grid_y, grid_x = torch.meshgrid(
                torch.linspace(0, h - 1, h, dtype=torch.float32, device=device),
                torch.linspace(0, w - 1, w, dtype=torch.float32, device=device),
                indexing="ij",
            )
            grid = torch.stack([grid_x, grid_y], -1)  # [H, W, 2]
            scale = torch.stack([valid_w, valid_h], 1).view(batch, 1, 1, 2)
            centre = (grid[None].expand(batch, -1, -1, -1) + 0.5) / scale
            size = torch.ones_like(centre) * 0.05 * (2.0 ** lvl)
            proposals.append(torch.cat((centre, size), -1).view(batch, -1, 4))
        proposals = torch.cat(proposals, 1)
        valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
        proposals = torch.log(proposals / (1 - proposals))
        proposals = proposals.masked_fill(memory.padding_mask[..., None], float("inf"))
        proposals = proposals.masked_fill(~valid, float("inf"))
        out = memory.memory.masked_fill(memory.padding_mask[..., None], 0.0).masked_fill(~valid, 0.0)
        return self.enc_output_norm(self.enc_output(out)), proposals

    def proposal_pos_embed(self, proposals: Tensor) -> Tensor:
        """Sine encoding of logit-space boxes ``[B, K, 4]`` -> ``[B, K, 4 * d_model / 2]`` (official
        ``get_proposal_pos_embed``; the official code fixes 128 features per coordinate, i.e. d_model 256)."""
        num_feats = self.d_model // 2
        dim_t = torch.arange(num_feats, dtype=torch.float32, device=proposals.device)
        dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
        pos = proposals.sigmoid()[..., None] * (2 * math.pi) / dim_t  # [B, K, 4, F]
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=4).flatten(2)

    # ------------------------------------------------------------------ decoder
    def decode(
        self,
        memory: EncoderMemory,
        queries: Optional[Tensor],
        self_attn_mask: Optional[Tensor] = None,
        class_embed: Optional[nn.ModuleList] = None,
        bbox_embed: Optional[nn.ModuleList] = None,
    ) -> DecoderOutput:
        """Decode ``queries [B, Q, 2C]`` (``[query_pos | tgt]``; ignored in two-stage mode).

        ``bbox_embed[l]`` is used for iterative refinement, ``class_embed[-1]`` / ``bbox_embed[-1]`` for the
        two-stage proposals. Returns ``hidden_states [L, B, Q, C]``, ``references [L, B, Q, 2 or 4]`` in
        logit space (layer 0: the initial reference; layer ``l``: the reference refined by layer ``l - 1``,
        as official) and, in two-stage mode, the encoder proposals' ``pred_logits [B, S, K']`` (``K'`` the
        width of ``class_embed[-1]``; the top-k ranks channel 0) / ``pred_boxes [B, S, 4]`` (cxcywh
        normalised; invalid proposals give 1.0).

        The references are 2-d points ``(x, y)`` without refinement or two-stage, otherwise 4-d cxcywh (with
        refinement alone, layer 0's point is padded with zero logits for ``w, h``); in two-stage mode
        ``Q = two_stage_num_proposals``. The initial point ``sigmoid(reference_points(query_pos))`` comes
        from the positional half, where pretext tasks add their region / patch features.
        """
        c = self.d_model
        encoder_outputs = None
        if self.two_stage:
            if class_embed is None or bbox_embed is None:
                raise ValueError("two-stage Deformable DETR needs class_embed and bbox_embed in decode()")
            check_enough_proposals(self.two_stage_num_proposals, memory)
            out_memory, proposals = self.encoder_proposals(memory)
            enc_logits = class_embed[-1](out_memory)
            enc_coords = bbox_embed[-1](out_memory) + proposals
            encoder_outputs = {"pred_logits": enc_logits, "pred_boxes": enc_coords.sigmoid()}
            topk = torch.topk(enc_logits[..., 0], self.two_stage_num_proposals, dim=1)[1]
            topk_coords = torch.gather(enc_coords, 1, topk[..., None].expand(-1, -1, 4)).detach()
            reference = topk_coords.sigmoid()
            # the float32 encoding in the layer's dtype: a model cast with .half() / .to(bfloat16) has low-precision
            # weights (under autocast they stay float32 and autocast casts the input)
            pos_embed = self.proposal_pos_embed(topk_coords).to(self.pos_trans.weight.dtype)
            query_pos, tgt = torch.split(self.pos_trans_norm(self.pos_trans(pos_embed)), c, dim=2)
        else:
            if queries is None or queries.shape[-1] != self.query_dim:
                raise ValueError(f"queries must be [B, Q, {self.query_dim}], got "
                                 f"{None if queries is None else tuple(queries.shape)}")
            query_pos, tgt = torch.split(queries, c, dim=2)
            reference = self.reference_points(query_pos).sigmoid()
        if self.with_box_refine and bbox_embed is None:
            raise ValueError("iterative box refinement needs bbox_embed in decode()")

        ratios = memory.valid_ratios
        hidden, references = [], []
        out = tgt
        for lid, layer in enumerate(self.decoder.layers):
            references.append(reference)
            if reference.shape[-1] == 4:
                ref_input = reference[:, :, None] * torch.cat([ratios, ratios], -1)[:, None]
            else:
                ref_input = reference[:, :, None] * ratios[:, None]
            out = layer(out, query_pos, ref_input, memory.memory, memory.spatial_shapes, memory.level_start_index,
                        memory.padding_mask, self_attn_mask)
            hidden.append(out)
            if self.with_box_refine:
                delta = bbox_embed[lid](out)
                logit = inverse_sigmoid(reference, _INVERSE_SIGMOID_EPS)
                if reference.shape[-1] == 4:
                    refined = delta + logit
                else:
                    refined = torch.cat([delta[..., :2] + logit, delta[..., 2:]], -1)
                reference = refined.sigmoid().detach()

        width = max(r.shape[-1] for r in references)
        refs = [inverse_sigmoid(r, _INVERSE_SIGMOID_EPS) for r in references]
        # a 2-d reference padded with zero logits adds nothing to the box channels (w, h)
        refs = torch.stack([F.pad(r, (0, width - r.shape[-1])) for r in refs])
        return DecoderOutput(hidden_states=torch.stack(hidden), references=refs, encoder_outputs=encoder_outputs)
