"""Sine positional encoding of a padded feature map (DETR, Carion et al. 2020, §3.2 / App. A.4)."""

import math

import torch
from torch import nn

from ..utils.user_errors import UserValueError

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """2-D sine/cosine encoding of (y, x) feature-map positions ("Attention is all you need", per axis).

    Positions are counted over the *unpadded* cells only (cumulative sum of ``~mask``), so a feature cell
    of an image gets the same encoding whether the image is batched with larger images or run alone.

    For each axis ``a`` in (y, x) and channel ``2i`` / ``2i+1`` (``i < num_pos_feats / 2``)::

        PE(a, 2i)   = sin(a / T^(2i / F))        PE(a, 2i+1) = cos(a / T^(2i / F))

    with ``T = temperature``, ``F = num_pos_feats`` and, when ``normalize``, ``a`` rescaled to
    ``(a + offset) / (a_max + eps) * scale`` where ``a_max`` is the image's valid extent along that axis.

    Args:
        num_pos_feats: channels per axis ``F``; the output has ``2F`` channels (y first, then x), so use
            ``d_model // 2``.
        temperature: ``T`` above.
        normalize: rescale positions to ``[0, scale]`` of each image's valid extent.
        scale: range of normalised positions (default ``2*pi``).
        offset: added to the 1-based positions before normalising (0.0 in DETR, -0.5 in Deformable DETR).
        eps: guards the division for fully padded rows / columns.
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000,
        normalize: bool = True,
        scale: float = 2 * math.pi,
        offset: float = 0.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        if num_pos_feats % 2 != 0:
            raise UserValueError(f"model.position_embedding.num_pos_feats must be even, got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.offset = offset
        self.eps = eps

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            mask: bool ``[B, H, W]``, True at padded cells.

        Returns:
            float32 ``[B, 2*num_pos_feats, H, W]``: y-encoding channels then x-encoding channels
            (padded cells get finite but meaningless values; they are masked out by attention).
        """
        not_mask = (~mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)  # [B, H, W], 1-based row index among valid rows
        x_embed = not_mask.cumsum(2)  # [B, H, W], 1-based column index among valid columns
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale

        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)

        pos_x = x_embed[..., None] / dim_t  # [B, H, W, F]
        pos_y = y_embed[..., None] / dim_t
        # interleave: channel 2i = sin, channel 2i+1 = cos (both of frequency i)
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).contiguous()
