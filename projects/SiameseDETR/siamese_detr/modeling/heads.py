"""Small prediction heads shared by the finetune and pretraining meta-architectures."""

from typing import List

import torch
from torch import nn
from torch.nn import functional as F

from ..utils.user_errors import UserValueError

__all__ = ["MLP"]


class MLP(nn.Module):
    """Feed-forward network: ``num_layers`` Linear layers with ReLU between them (none after the last).

    DETR's box head ``f_box`` is ``MLP(d_model, d_model, 4, 3)`` followed by a sigmoid; Siamese DETR's
    semantic head ``f_sem`` (Siamese DETR Eq. 10, which gives no depth) is a 2-layer MLP, as the official
    ``SiameseDETRPredictHead.feature_align``.

    Shapes: ``[..., input_dim] -> [..., output_dim]``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise UserValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        dims: List[int] = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.num_layers = num_layers
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., input_dim]`` (e.g. decoder states ``[L, B, Q, d_model]``) -> ``[..., output_dim]``
        (raw outputs: for ``f_box`` the caller adds the reference logits and applies the sigmoid)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x
