"""Multi-scale deformable attention (Deformable DETR Eq. 3) against a direct loop with explicit bilinear
interpolation, its gradients (gradcheck), the module's official initialisation and reference formulas."""

import math

import pytest
import torch

from siamese_detr.modeling.ops import MSDeformAttn, compiled_op_available, multi_scale_deformable_attention
from siamese_detr.modeling.ops import ms_deform_attn as msda_module


def _bilinear(value_map, x, y):
    """Value ``[H, W, D]`` at normalised ``(x, y)`` (pixel centres at (j + 0.5) / W), zeros outside."""
    h, w, d = value_map.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=value_map.dtype)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * value_map[yy, xx]
    return out


def _loop_attention(value, shapes, starts, locations, weights):
    """Direct evaluation of ``sum_l sum_k A_mlqk * x_l(loc)`` for every (b, q, m)."""
    batch, _, heads, d = value.shape
    _, queries, _, levels, points, _ = locations.shape
    out = torch.zeros(batch, queries, heads * d, dtype=value.dtype)
    for b in range(batch):
        for q in range(queries):
            for m in range(heads):
                acc = torch.zeros(d, dtype=value.dtype)
                for lvl in range(levels):
                    h, w = (int(v) for v in shapes[lvl])
                    s = int(starts[lvl])
                    vmap = value[b, s:s + h * w, m].reshape(h, w, d)
                    for k in range(points):
                        x, y = locations[b, q, m, lvl, k].tolist()
                        acc += weights[b, q, m, lvl, k] * _bilinear(vmap, x, y)
                out[b, q, m * d:(m + 1) * d] = acc
    return out


def _problem(seed=0, batch=2, queries=3, heads=2, d=3, points=2, shapes=((4, 5), (2, 3))):
    g = torch.Generator().manual_seed(seed)
    shapes_t = torch.as_tensor(shapes, dtype=torch.long)
    sizes = shapes_t.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(batch, int(sizes.sum()), heads, d, generator=g, dtype=torch.float64)
    # locations in [-0.3, 1.3]: some fall outside the map, some between border pixels and the edge
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=g, dtype=torch.float64)
    locations = locations * 1.6 - 0.3
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=g, dtype=torch.float64)
    return value, shapes_t, starts, locations, weights


def test_matches_loop_with_outside_points():
    value, shapes, starts, loc, w = _problem()
    assert ((loc < 0) | (loc > 1)).any()  # the case of points outside the map is exercised
    out = multi_scale_deformable_attention(value, shapes, starts, loc, w)
    assert out.shape == (2, 3, 6)
    assert torch.allclose(out, _loop_attention(value, shapes, starts, loc, w), atol=1e-12)


def test_hand_values():
    # one level 2x2, one head, D=1, values 1 2 / 3 4 (row-major); one point each
    value = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 4, 1, 1)
    shapes = torch.tensor([[2, 2]])
    starts = torch.tensor([0])
    cases = [
        ((0.5, 0.5), 2.5),  # centre of the map: mean of the four cells
        ((0.25, 0.25), 1.0),  # exactly the centre of cell (0, 0)
        ((0.0, 0.25), 0.5),  # left edge: half way to the zero padding
        ((1.5, 0.5), 0.0),  # far outside
        ((0.75, 0.5), 3.0),  # between cells (0, 1) and (1, 1)
    ]
    for (x, y), expected in cases:
        loc = torch.tensor([x, y], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
        weight = torch.ones(1, 1, 1, 1, 1, dtype=torch.float64)
        out = multi_scale_deformable_attention(value, shapes, starts, loc, weight)
        assert torch.allclose(out, torch.tensor([[[expected]]], dtype=torch.float64), atol=1e-12), (x, y)


def test_gradcheck():
    value, shapes, starts, loc, w = _problem(seed=1, batch=1, queries=2, heads=2, d=2, points=2,
                                             shapes=((3, 4), (2, 2)))
    value.requires_grad_(True)
    loc.requires_grad_(True)
    w.requires_grad_(True)

    def fn(v, l_, a):
        return multi_scale_deformable_attention(v, shapes, starts, l_, a)

    assert torch.autograd.gradcheck(fn, (value, loc, w), eps=1e-6, atol=1e-5)


def test_module_padding_mask_zeroes_padded_values():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=4, n_levels=2, n_heads=2, n_points=2).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    shapes = torch.tensor([[3, 4], [2, 2]])
    starts = torch.tensor([0, 12])
    src = torch.randn(1, 16, 4, dtype=torch.float64)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, [3, 7, 11, 13, 15]] = True  # last column of both levels is padding
    query = torch.randn(1, 5, 4, dtype=torch.float64)
    ref = torch.rand(1, 5, 2, 2, dtype=torch.float64)
    out = attn(query, ref, src, shapes, starts, mask)
    # changing the padded tokens' content must not change the output
    src2 = src.clone()
    src2[mask] = 100.0
    assert torch.allclose(out, attn(query, ref, src2, shapes, starts, mask), atol=1e-12)
    # and the output is the loop computation over values with padded tokens zeroed
    value = attn.value_proj(src).masked_fill(mask[..., None], 0).view(1, 16, 2, 2)
    off = attn.sampling_offsets(query).view(1, 5, 2, 2, 2, 2)
    normalizer = torch.tensor([[4.0, 3.0], [2.0, 2.0]], dtype=torch.float64)  # (W, H) per level
    loc = ref[:, :, None, :, None, :] + off / normalizer[None, None, None, :, None, :]
    w = attn.attention_weights(query).view(1, 5, 2, 4).softmax(-1).view(1, 5, 2, 2, 2)
    expected = attn.output_proj(_loop_attention(value, shapes, starts, loc, w))
    assert torch.allclose(out, expected, atol=1e-12)


def test_box_reference_sampling_locations(monkeypatch):
    captured = {}

    def capture(value, shapes, starts, loc, weights, **kwargs):
        captured["loc"] = loc
        return torch.zeros(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3], dtype=value.dtype)

    monkeypatch.setattr(msda_module, "multi_scale_deformable_attention", capture)
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=4, n_levels=1, n_heads=1, n_points=2).double()
    query = torch.randn(1, 1, 4, dtype=torch.float64)
    box = torch.tensor([0.5, 0.4, 0.2, 0.6], dtype=torch.float64).view(1, 1, 1, 4)
    attn(query, box, torch.randn(1, 6, 4, dtype=torch.float64), torch.tensor([[2, 3]]), torch.tensor([0]))
    off = attn.sampling_offsets(query).view(2, 2)  # [P, (x, y)]
    for k in range(2):
        # loc = centre + offset / P * (w, h) / 2
        expected = torch.stack([0.5 + off[k, 0] / 2 * 0.2 / 2, 0.4 + off[k, 1] / 2 * 0.6 / 2])
        assert torch.allclose(captured["loc"][0, 0, 0, 0, k], expected, atol=1e-12)


def test_official_initialisation():
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    bias = attn.sampling_offsets.bias.view(4, 3, 2, 2)  # [M, L, P, (x, y)]
    directions = [(1, 0), (0, 1), (-1, 0), (0, -1)]  # angle 2*pi*m / 4, largest coordinate scaled to 1
    for m, (dx, dy) in enumerate(directions):
        for k in range(2):
            expected = torch.tensor([dx, dy], dtype=torch.float32) * (k + 1)
            for lvl in range(3):
                assert torch.allclose(bias[m, lvl, k], expected, atol=1e-6)
    assert torch.count_nonzero(attn.attention_weights.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.bias) == 0
    assert torch.count_nonzero(attn.value_proj.bias) == 0 and torch.count_nonzero(attn.output_proj.bias) == 0
    # 8 heads: diagonal directions are scaled to (+-1, +-1)
    bias8 = MSDeformAttn(d_model=16, n_levels=1, n_heads=8, n_points=1).sampling_offsets.bias.view(8, 2)
    assert torch.allclose(bias8[1], torch.tensor([1.0, 1.0]), atol=1e-6)
    assert torch.allclose(bias8[3], torch.tensor([-1.0, 1.0]), atol=1e-6)


def test_invalid_shapes_raise():
    attn = MSDeformAttn(d_model=4, n_levels=1, n_heads=2, n_points=1)
    with pytest.raises(ValueError):
        attn(torch.randn(1, 2, 4), torch.rand(1, 2, 1, 2), torch.randn(1, 5, 4), torch.tensor([[2, 3]]),
             torch.tensor([0]))
    with pytest.raises(ValueError):
        MSDeformAttn(d_model=5, n_heads=2)


@pytest.mark.skipif(not (torch.cuda.is_available() and compiled_op_available()), reason="needs CUDA + compiled op")
def test_compiled_matches_pytorch_on_cuda():
    value, shapes, starts, loc, w = (t.cuda() for t in _problem(seed=2))
    fast = multi_scale_deformable_attention(value, shapes, starts, loc, w, use_compiled=True)
    slow = multi_scale_deformable_attention(value, shapes, starts, loc, w, use_compiled=False)
    assert torch.allclose(fast, slow, atol=1e-10)


@pytest.mark.parametrize("num_tokens", [5, 7])
def test_spatial_shapes_must_cover_exactly_the_tokens(num_tokens):
    """``spatial_shapes`` [[2, 3]] describe 6 tokens: 5 (too few) and 7 (one token that no level owns, which
    would silently be ignored) are both refused."""
    attn = MSDeformAttn(d_model=4, n_levels=1, n_heads=2, n_points=1)
    with pytest.raises(ValueError, match="do not cover"):
        attn(torch.randn(1, 2, 4), torch.rand(1, 2, 1, 2), torch.randn(1, num_tokens, 4), torch.tensor([[2, 3]]),
             torch.tensor([0]))
