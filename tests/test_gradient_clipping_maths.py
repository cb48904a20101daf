"""``add_gradient_clipping`` with a small positive limit: every ``max_norm > 0`` clips (only ``<= 0`` disables)."""

import math

import pytest
import torch

from siamese_detr.engine import add_gradient_clipping


@pytest.mark.parametrize("max_norm", [1e-3, 0.005])
def test_a_small_positive_limit_still_clips(max_norm):
    """Gradient (3, 4) (L2 norm 5) clipped to ``max_norm``: scaled by max_norm / 5 before the SGD step (lr 1)."""
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=1.0)
    assert add_gradient_clipping(opt, max_norm=max_norm) is not None
    w.grad = torch.tensor([3.0, 4.0])
    opt.step()
    expected = torch.tensor([3.0, 4.0]) * (max_norm / 5.0)
    torch.testing.assert_close(w.grad, expected, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(w.detach(), -expected, rtol=1e-5, atol=1e-9)
    assert math.isclose(float(w.grad.norm()), max_norm, rel_tol=1e-5)
