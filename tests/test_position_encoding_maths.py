"""``PositionEmbeddingSine`` and ``MLP`` construction rules: the channel count only has to be even, an MLP of one
layer is a single Linear map."""

import math

import pytest
import torch

from siamese_detr.modeling import PositionEmbeddingSine
from siamese_detr.modeling.heads import MLP


def test_any_even_number_of_channels_is_accepted_and_odd_ones_are_refused():
    """F = 6 (even, not a multiple of 4) gives 3 sin/cos pairs per axis: 12 channels, values by hand at the cell
    (y = 1 of 1, x = 1 of 1) unnormalised (a = 1): sin/cos(1 / T^(2i/F)), T = 10000."""
    pe = PositionEmbeddingSine(num_pos_feats=6, normalize=False)
    out = pe(torch.zeros(1, 1, 1, dtype=torch.bool))
    assert out.shape == (1, 12, 1, 1)
    per_axis = []
    for i in range(3):
        freq = 10000 ** (2 * i / 6)
        per_axis += [math.sin(1 / freq), math.cos(1 / freq)]
    assert torch.allclose(out[0, :, 0, 0], torch.tensor(per_axis + per_axis), atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        PositionEmbeddingSine(num_pos_feats=5)


def test_one_layer_mlp_is_a_single_linear_map_and_zero_layers_are_refused():
    """``MLP(4, 8, 3, num_layers=1)`` is ``x W^T + b`` of its only Linear (no ReLU: negative outputs survive)."""
    torch.manual_seed(0)
    mlp = MLP(4, 8, 3, num_layers=1)
    assert len(mlp.layers) == 1 and mlp.layers[0].weight.shape == (3, 4)
    x = torch.randn(5, 4)
    expected = x @ mlp.layers[0].weight.T + mlp.layers[0].bias
    assert (expected < 0).any()
    assert torch.allclose(mlp(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="num_layers=0"):
        MLP(4, 8, 3, num_layers=0)
