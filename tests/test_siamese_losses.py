"""Siamese DETR pretext losses and feature helpers vs independent computations (paper Eq. 4, 7, 11, 12)."""
import math

import pytest
import torch

from siamese_detr.modeling.pretext import (
    SimSiamPredictor,
    SimSiamProjector,
    SyncBatchNorm1d,
    average_pooled_roi_features,
    global_discrimination_loss,
    masked_average_pool,
    negative_cosine_similarity,
    normalized_l2_distance,
    region_conditioned_queries,
    region_discrimination_loss,
)
from siamese_detr.modeling.pretext.region_features import per_level_average_pool
from siamese_detr.modeling.transformers.base import EncoderMemory


def _cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _normalized_l2(a, b):
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return sum((x / na - y / nb) ** 2 for x, y in zip(a, b))


def test_normalized_l2_hand_values():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0], [2.0, 2.0]])
    b = torch.tensor([[6.0, 8.0], [0.0, 5.0], [-1.0, -1.0]])
    # same direction -> 0; orthogonal -> 2; opposite -> 4
    assert torch.allclose(normalized_l2_distance(a, b), torch.tensor([0.0, 2.0, 4.0]), atol=1e-6)


def test_normalized_l2_random_matches_explicit_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    expected = torch.tensor([_normalized_l2(x.tolist(), y.tolist()) for x, y in zip(a, b)])
    assert torch.allclose(normalized_l2_distance(a, b), expected, atol=1e-5)
    cos = torch.tensor([_cos(x.tolist(), y.tolist()) for x, y in zip(a, b)])
    assert torch.allclose(normalized_l2_distance(a, b), 2 - 2 * cos, atol=1e-5)


def test_global_loss_matches_explicit_cosines_and_stops_gradient():
    g = torch.Generator().manual_seed(1)
    p1, z1, p2, z2 = (torch.randn(3, 4, generator=g, requires_grad=True) for _ in range(4))
    loss = global_discrimination_loss(p1, z1, p2, z2)
    expected = 0.0
    for i in range(3):
        expected -= _cos(p1[i].tolist(), z2[i].tolist()) / 3
        expected -= _cos(p2[i].tolist(), z1[i].tolist()) / 3
    assert abs(loss.item() - expected) < 1e-5
    loss.backward()
    assert z1.grad is None and z2.grad is None  # stop-gradient branch receives nothing
    assert p1.grad is not None and p1.grad.abs().sum() > 0
    assert p2.grad is not None and p2.grad.abs().sum() > 0
    # single term, identical vectors: -1
    v = torch.tensor([[1.0, 2.0, 3.0]])
    assert abs(negative_cosine_similarity(v, 2 * v).item() + 1.0) < 1e-6


def test_region_loss_is_the_mean_normalised_l2_of_the_matched_pairs_only():
    """Eq. 12 over the matches the criterion hands over (here given by hand: queries 4, 0, 2 -> regions 0, 1,
    2 in image 0, queries 1, 3 -> regions 2, 0 in image 1), by hand; unmatched queries get no gradient."""
    g = torch.Generator().manual_seed(2)
    batch, num_queries, num_regions, dim = 2, 5, 3, 6
    sem = torch.randn(batch, num_queries, dim, generator=g, requires_grad=True)
    crops = torch.randn(batch, num_regions, dim, generator=g, requires_grad=True)
    matches = [[(4, 0), (0, 1), (2, 2)], [(1, 2), (3, 0)]]
    indices = [(torch.tensor([q for q, _ in pairs]), torch.tensor([r for _, r in pairs])) for pairs in matches]
    expected = sum(_normalized_l2(sem[b, q].tolist(), crops[b, r].tolist())
                   for b, pairs in enumerate(matches) for q, r in pairs)
    num_boxes = 5.0
    loss = region_discrimination_loss(sem, crops, indices, num_boxes)
    assert abs(loss.item() - expected / num_boxes) < 1e-5

    loss.backward()
    assert crops.grad is None  # targets (frozen-backbone crop features) get no gradient
    for b, (queries, _) in enumerate(indices):
        matched = set(queries.tolist())
        for q in range(num_queries):
            has_grad = bool(sem.grad[b, q].abs().sum() > 0)
            assert has_grad == (q in matched), (b, q)


def test_region_conditioned_queries_repeats_each_region_consecutively():
    regions = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    phi = torch.full((6, 2), 100.0) + torch.arange(6, dtype=torch.float32)[:, None]
    queries = region_conditioned_queries(regions, phi)
    assert queries.shape == (2, 6, 2)
    for b in range(2):
        for j in range(6):
            assert torch.equal(queries[b, j], regions[b, j // 2] + phi[j])
    with pytest.raises(ValueError, match="7.*3"):
        region_conditioned_queries(regions, torch.zeros(7, 2))


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_features_of_a_linear_feature_map_equal_value_at_box_centre(aligned):
    # f(x, y) = 2 x + 3 y + 1 on the feature grid; bilinear sampling of a linear map is exact and the
    # mean over RoIAlign's symmetric grid is the value at the box centre. An input pixel coordinate u maps
    # to feature coordinate u / stride (aligned=False, the official code's and the default) or
    # u / stride - 0.5 (aligned=True).
    stride, h, w = 8, 10, 12
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    feat = torch.stack([2 * xs + 3 * ys + 1, -xs + 0.5 * ys])[None]  # [1, 2, H, W]
    boxes = torch.tensor([[16.0, 24.0, 48.0, 40.0], [20.0, 12.0, 60.0, 70.0]])
    z = average_pooled_roi_features([feat], [boxes], strides=[stride], aligned=aligned)
    assert z.shape == (2, 2)
    offset = 0.5 if aligned else 0.0
    for k, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        cx, cy = (x0 + x1) / 2 / stride - offset, (y0 + y1) / 2 / stride - offset
        assert abs(z[k, 0].item() - (2 * cx + 3 * cy + 1)) < 1e-4
        assert abs(z[k, 1].item() - (-cx + 0.5 * cy)) < 1e-4

    # several levels (multi-scale Deformable DETR): each level pooled at its own stride, concatenated
    coarse = feat[:, :, ::2, ::2] * 0 + 7.0  # a constant level at twice the stride
    z2 = average_pooled_roi_features([feat, coarse], [boxes], strides=[stride, 2 * stride], aligned=aligned)
    assert z2.shape == (2, 4)
    assert torch.equal(z2[:, :2], z)
    assert torch.allclose(z2[:, 2:], torch.full((2, 2), 7.0))


def test_masked_average_pool_excludes_padding():
    memory = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[False, False, True, True], [False, False, False, False]])
    pooled = masked_average_pool(memory, mask)
    assert torch.allclose(pooled[0], (memory[0, 0] + memory[0, 1]) / 2)
    assert torch.allclose(pooled[1], memory[1].sum(0) / 4)
    with pytest.raises(ValueError, match="no valid"):
        masked_average_pool(memory, torch.ones(2, 4, dtype=torch.bool))


def _hand_built_memory():
    """4 levels of 4 x 4, 2 x 2, 1 x 2, 1 x 1 cells (C = 2), 2 images; cell ``(y, x)`` of level ``l`` of image
    ``b`` holds ``(100 l + 10 y + x + b, -(l + 1))``; image 1 pads its right column on levels 0-2."""
    shapes = [(4, 4), (2, 2), (1, 2), (1, 1)]
    tokens, masks = [], []
    for level, (h, w) in enumerate(shapes):
        y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        base = (100 * level + 10 * y + x).flatten().double()
        tokens.append(torch.stack([torch.stack([base + b, torch.full_like(base, -(level + 1.0))], -1)
                                   for b in range(2)]))  # [2, h w, 2]
        pad = torch.zeros(2, h, w, dtype=torch.bool)
        if w > 1:
            pad[1, :, -1] = True
        masks.append(pad.flatten(1))
    sizes = torch.tensor(shapes)
    start = torch.cat([torch.zeros(1, dtype=torch.long), sizes.prod(1).cumsum(0)[:-1]])
    memory = torch.cat(tokens, 1)
    return EncoderMemory(memory=memory, padding_mask=torch.cat(masks, 1), pos=torch.zeros_like(memory),
                         spatial_shapes=sizes, level_start_index=start, valid_ratios=torch.ones(2, 4, 2)), shapes


def test_global_context_is_the_per_level_masked_average_of_the_first_levels():
    """L_g context (Eq. 11, official Deform-MS ``NonLinearNeckV3`` on ``x[:3]``): level l's average over its
    non-padded cells in channels ``l C .. (l + 1) C - 1``; the fourth (stride-64) level is left out."""
    memory, shapes = _hand_built_memory()
    context = per_level_average_pool(memory, 3)
    assert context.shape == (2, 3 * 2)
    for b in range(2):
        expected = []
        for level, (h, w) in enumerate(shapes[:3]):
            cols = range(w - 1) if b == 1 and w > 1 else range(w)  # image 1: right column padded
            values = [100 * level + 10 * y + x + b for y in range(h) for x in cols]
            expected += [sum(values) / len(values), -(level + 1.0)]
        assert context[b].tolist() == expected
    # k = 1 is the single-level rule (one masked average); all 4 levels would add the stride-64 cell
    assert torch.equal(per_level_average_pool(memory, 1), context[:, :2])
    assert per_level_average_pool(memory, 4)[:, 6:].tolist() == [[300.0, -4.0], [301.0, -4.0]]
    # the official padded pooling, as a pool argument: every cell of each level
    padded = per_level_average_pool(memory, 3, pool=lambda tokens, mask: tokens.mean(1))
    assert padded[1, 0].item() == sum(10 * y + x + 1 for y in range(4) for x in range(4)) / 16
    for k in (0, 5):
        with pytest.raises(ValueError, match="num_levels"):
            per_level_average_pool(memory, k)


def test_sync_bn_1d_single_process_equals_batchnorm1d():
    torch.manual_seed(3)
    x = torch.randn(6, 5)
    ours, ref = SyncBatchNorm1d(5), torch.nn.BatchNorm1d(5)
    ours.train(), ref.train()
    y_ours, y_ref = ours(x), ref(x)
    assert torch.allclose(y_ours, y_ref, atol=1e-5)
    assert torch.allclose(ours.running_mean, ref.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, ref.running_var, atol=1e-5)
    with pytest.raises(ValueError, match="N, C"):
        ours(torch.randn(2, 5, 3))


def test_simsiam_heads_layouts():
    proj, pred = SimSiamProjector(8, 16, 12), SimSiamPredictor(12, 4, 12)
    kinds = [type(m).__name__ for m in proj]
    assert kinds == ["Linear", "SyncBatchNorm1d", "ReLU"] * 2 + ["Linear", "SyncBatchNorm1d"]
    assert [type(m).__name__ for m in pred] == ["Linear", "SyncBatchNorm1d", "ReLU", "Linear"]
    out = pred(proj(torch.randn(4, 8)))
    assert out.shape == (4, 12)


def test_region_loss_divides_by_the_given_num_boxes_not_the_match_count():
    """The normaliser is ``num_boxes`` as handed over (under DDP the process-averaged target count, which
    differs from this process's number of matches): 2 matched pairs, ``num_boxes = 8`` -> sum / 8 (by hand).
    A batch whose matchings do not cover every image is refused."""
    g = torch.Generator().manual_seed(3)
    sem = torch.randn(2, 4, 5, generator=g)
    crops = torch.randn(2, 2, 5, generator=g)
    indices = [(torch.tensor([3]), torch.tensor([1])), (torch.tensor([0]), torch.tensor([0]))]
    expected = _normalized_l2(sem[0, 3].tolist(), crops[0, 1].tolist()) + _normalized_l2(
        sem[1, 0].tolist(), crops[1, 0].tolist()
    )
    assert region_discrimination_loss(sem, crops, indices, 8.0).item() == pytest.approx(expected / 8.0, rel=1e-5)
    with pytest.raises(ValueError, match="1 index pairs for a batch of 2"):
        region_discrimination_loss(sem, crops, indices[:1], 8.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_roi_features_of_half_precision_maps_sample_at_float32_box_coordinates(dtype):
    """Low-precision feature maps are pooled with the boxes (and the map) in float32, the result cast back:
    on the map ``f(x) = x - 1500`` (stride 1, whole numbers, exact in both formats) the box x 1500.3 .. 1501.3
    averages to 0.8. Boxes rounded to float16 (1500 .. 1501) would give 0.5, to bfloat16 (1504 .. 1504) 4; CPU
    RoIAlign has no bfloat16 kernel at all."""
    row = torch.arange(2048, dtype=torch.float32) - 1500
    feature = row.view(1, 1, 1, 2048).expand(1, 1, 4, 2048).to(dtype)
    boxes = [torch.tensor([[1500.3, 0.0, 1501.3, 3.0]])]
    got = average_pooled_roi_features([feature], boxes, [1], output_size=2)
    assert got.dtype == dtype and got.shape == (1, 1)
    assert abs(got.float().item() - 0.8) < 0.01


def test_region_embeddings_wider_than_the_queries_are_refused():
    """Queries of width D' take region embeddings of width D <= D'; one channel too wide is an error, not a
    silent truncation."""
    with pytest.raises(ValueError, match="wider than the queries"):
        region_conditioned_queries(torch.zeros(1, 2, 9), torch.zeros(4, 8))
    assert region_conditioned_queries(torch.ones(1, 2, 8), torch.zeros(4, 8)).shape == (1, 4, 8)
