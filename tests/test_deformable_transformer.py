"""DeformableDetrTransformer on the variant interface: encoder reference points, query split, decoder
self-attention mask, iterative box refinement, two-stage proposals and the official head initialisation."""

import math

import pytest
import torch
from torch import nn

from siamese_detr.modeling.heads import MLP
from siamese_detr.modeling.transformers import DeformableDetrTransformer
from siamese_detr.modeling.transformers.deformable import encoder_reference_points

C = 16


def _logit(x):
    return torch.log(x / (1 - x))


def make(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(d_model=C, nhead=2, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=16, dropout=0.0,
                num_feature_levels=2, enc_n_points=2, dec_n_points=2)
    args.update(kw)
    t = DeformableDetrTransformer(**args).double()
    with torch.no_grad():  # move away from the degenerate official init (zero offsets / uniform attention)
        for p in t.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    heads = t.num_prediction_heads
    class_embed = nn.ModuleList(nn.Linear(C, 3) for _ in range(heads)).double()
    bbox_embed = nn.ModuleList(MLP(C, C, 4, 3) for _ in range(heads)).double()
    with torch.no_grad():
        for p in bbox_embed.parameters():
            p.mul_(0.5)
    return t.eval(), class_embed, bbox_embed


def inputs(seed=1, batch=2):
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 8), (3, 4)]
    srcs = [torch.randn(batch, C, h, w, generator=g, dtype=torch.float64) for h, w in shapes]
    pos = [torch.randn(batch, C, h, w, generator=g, dtype=torch.float64) for h, w in shapes]
    masks = [torch.zeros(batch, h, w, dtype=torch.bool) for h, w in shapes]
    masks[0][1, :, 6:] = True  # image 1: 6 of 8 columns valid at level 0
    masks[0][1, 4:, :] = True  # and 4 of 6 rows
    masks[1][1, :, 3:] = True
    masks[1][1, 2:, :] = True
    return srcs, masks, pos


def test_interface_attributes():
    t, _, _ = make()
    assert (t.d_model, t.query_dim, t.num_decoder_layers, t.num_feature_levels) == (C, 2 * C, 2, 2)
    assert (t.num_prediction_heads, t.shared_heads, t.learned_queries) == (2, True, True)
    t, _, _ = make(with_box_refine=True, two_stage=True, two_stage_num_proposals=5)
    assert (t.num_prediction_heads, t.shared_heads, t.learned_queries) == (3, False, False)


def test_encoder_reference_points_by_hand():
    shapes = torch.tensor([[2, 4], [1, 2]])
    ratios = torch.tensor([[[0.5, 1.0], [0.5, 1.0]]], dtype=torch.float64)  # (w, h): left half valid
    ref = encoder_reference_points(shapes, ratios)
    assert ref.shape == (1, 10, 2, 2)
    # level 0 token (row 1, col 1): centre (1.5, 1.5) over the valid (2 x 2) part -> (0.75, 0.75)
    tok = 1 * 4 + 1
    assert torch.allclose(ref[0, tok, 0].double(), torch.tensor([0.75 * 0.5, 0.75], dtype=torch.float64))
    assert torch.allclose(ref[0, tok, 1].double(), torch.tensor([0.75 * 0.5, 0.75], dtype=torch.float64))
    # level 1 token (0, 0): (0.5 / (0.5 * 2), 0.5 / 1) = (0.5, 0.5)
    assert torch.allclose(ref[0, 8, 0].double(), torch.tensor([0.25, 0.5], dtype=torch.float64))


def test_encode_adds_level_embedding_and_checks_levels():
    t, _, _ = make()
    srcs, masks, pos = inputs()
    mem = t.encode(srcs, masks, pos)
    assert mem.memory.shape == (2, 48 + 12, C)
    assert torch.allclose(mem.pos[:, 5], pos[0].flatten(2).transpose(1, 2)[:, 5] + t.level_embed[0])
    assert torch.allclose(mem.pos[:, 50], pos[1].flatten(2).transpose(1, 2)[:, 2] + t.level_embed[1])
    assert torch.allclose(mem.valid_ratios[1], torch.tensor([[0.75, 4 / 6], [0.75, 2 / 3]], dtype=torch.float64))
    with pytest.raises(ValueError):
        t.encode(srcs[:1], masks[:1], pos[:1])


def test_reference_points_come_from_the_positional_half():
    t, ce, be = make()
    mem = t.encode(*inputs())
    queries = torch.randn(2, 4, 2 * C, dtype=torch.float64)
    out = t.decode(mem, queries)
    assert out.hidden_states.shape == (2, 2, 4, C) and out.references.shape == (2, 2, 4, 2)
    expected = _logit(torch.sigmoid(t.reference_points(queries[..., :C])))
    assert torch.allclose(out.references[0], expected, atol=1e-10)
    assert torch.allclose(out.references[1], expected, atol=1e-10)  # no refinement: same reference
    # the content half changes the states, not the references
    other = queries.clone()
    other[..., C:] += 1.0
    out2 = t.decode(mem, other)
    assert torch.equal(out2.references, out.references)
    assert not torch.allclose(out2.hidden_states, out.hidden_states)


def test_self_attention_mask_separates_query_groups():
    t, _, _ = make()
    mem = t.encode(*inputs())
    queries = torch.randn(2, 4, 2 * C, dtype=torch.float64)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[:2, :2] = False
    mask[2:, 2:] = False  # two groups of two queries that must not see each other
    changed = queries.clone()
    changed[:, 2:] = torch.randn(2, 2, 2 * C, dtype=torch.float64)
    a = t.decode(mem, queries, self_attn_mask=mask).hidden_states
    b = t.decode(mem, changed, self_attn_mask=mask).hidden_states
    assert torch.allclose(a[:, :, :2], b[:, :, :2], atol=1e-12)
    unmasked = t.decode(mem, changed).hidden_states
    assert not torch.allclose(a[:, :, :2], unmasked[:, :, :2], atol=1e-6)


def test_iterative_box_refinement():
    t, ce, be = make(with_box_refine=True)
    mem = t.encode(*inputs())
    queries = torch.randn(2, 4, 2 * C, dtype=torch.float64)
    out = t.decode(mem, queries, class_embed=ce, bbox_embed=be)
    assert out.references.shape == (2, 2, 4, 4)
    init = torch.sigmoid(t.reference_points(queries[..., :C]))
    # layer 0: the 2-d reference, zero-padded in logit space (adds nothing to w, h)
    assert torch.allclose(out.references[0, ..., :2], _logit(init), atol=1e-10)
    assert torch.count_nonzero(out.references[0, ..., 2:]) == 0
    # layer 1: layer 0's box prediction, i.e. sigmoid(bbox_embed[0](hs_0) + [ref_0, 0, 0])
    delta = be[0](out.hidden_states[0])
    box0 = torch.sigmoid(delta + out.references[0])
    assert torch.allclose(out.references[1], _logit(box0), atol=1e-8)
    # refined references are detached (official ``.detach()``); the initial one trains ``reference_points``
    params = list(be.parameters()) + list(t.parameters())
    grads = torch.autograd.grad(out.references[1].sum(), params, allow_unused=True, retain_graph=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
    assert torch.autograd.grad(out.references[0].sum(), t.reference_points.weight)[0].abs().sum() > 0
    with pytest.raises(ValueError):
        t.decode(mem, queries)  # refinement needs the box heads


def test_encoder_proposals_by_hand():
    t, ce, be = make(two_stage=True, with_box_refine=True, two_stage_num_proposals=5)
    srcs, masks, pos = inputs()
    mem = t.encode(srcs, masks, pos)
    _, proposals = t.encoder_proposals(mem)
    assert proposals.shape == (2, 60, 4)
    # image 1, level 0 (valid 4 rows x 6 cols): token (row 1, col 2) centre (2.5 / 6, 1.5 / 4), size 0.05
    box = torch.tensor([2.5 / 6, 1.5 / 4, 0.05, 0.05])
    assert torch.allclose(proposals[1, 1 * 8 + 2], _logit(box), atol=1e-6)
    # level 1 size 0.1; padded token -> inf; token at the image border (centre < 0.01 impossible here,
    # but w/h fine) -> image 0 level 1 token (0, 0): centre (0.5 / 4, 0.5 / 3)
    assert torch.allclose(proposals[0, 48], _logit(torch.tensor([0.125, 0.5 / 3, 0.1, 0.1])), atol=1e-6)
    assert torch.isinf(proposals[1, 7]).all()  # level 0 row 0 col 7 is padding
    assert torch.isfinite(proposals[0]).all()


def test_two_stage_decoder_uses_top_k_proposals():
    t, ce, be = make(two_stage=True, with_box_refine=True, two_stage_num_proposals=5)
    mem = t.encode(*inputs())
    out = t.decode(mem, None, class_embed=ce, bbox_embed=be)
    assert out.hidden_states.shape == (2, 2, 5, C)
    enc = out.encoder_outputs
    assert enc["pred_logits"].shape == (2, 60, 3) and enc["pred_boxes"].shape == (2, 60, 4)
    out_memory, proposals = t.encoder_proposals(mem)
    assert torch.allclose(enc["pred_logits"], ce[-1](out_memory))
    coords = be[-1](out_memory) + proposals
    for b in range(2):
        scores = enc["pred_logits"][b, :, 0].tolist()
        order = sorted(range(60), key=lambda i: -scores[i])[:5]
        # invalid proposals (+inf) may be selected, as in the official code: clamp like inverse_sigmoid
        ref = torch.sigmoid(coords[b, order])
        expected = torch.log(ref.clamp(min=1e-5) / (1 - ref).clamp(min=1e-5))
        assert torch.allclose(out.references[0, b], expected, atol=1e-8)
    with pytest.raises(ValueError):
        t.decode(mem, None)


def test_proposals_outside_the_border_band_are_invalid_in_every_coordinate():
    """Official ``gen_encoder_output_proposals``: a proposal is valid only if ALL four of its coordinates lie in
    ``(0.01, 0.99)``; an invalid one gets ``+inf`` logits and its memory zeroed before ``enc_output``. One
    unpadded level of 4 x 60 cells: the centres of columns 0 and 59 are ``0.5 / 60 < 0.01`` and
    ``59.5 / 60 > 0.99`` (their y, w, h are fine), column 1's ``1.5 / 60`` is inside."""
    t, _, _ = make(num_feature_levels=1, two_stage=True, with_box_refine=True, two_stage_num_proposals=5)
    g = torch.Generator().manual_seed(3)
    h, w = 4, 60
    src = torch.randn(1, C, h, w, generator=g, dtype=torch.float64)
    pos = torch.randn(1, C, h, w, generator=g, dtype=torch.float64)
    mem = t.encode([src], [torch.zeros(1, h, w, dtype=torch.bool)], [pos])
    out_memory, proposals = t.encoder_proposals(mem)
    assert proposals.shape == (1, h * w, 4) and out_memory.shape == (1, h * w, C)
    zeroed = t.enc_output_norm(t.enc_output(torch.zeros(C, dtype=torch.float64)))
    for row in range(h):
        for col in range(w):
            tok = row * w + col
            box = torch.tensor([(col + 0.5) / w, (row + 0.5) / h, 0.05, 0.05])
            if col in (0, w - 1):
                assert torch.isinf(proposals[0, tok]).all() and (proposals[0, tok] > 0).all(), (row, col)
                assert torch.allclose(out_memory[0, tok], zeroed, atol=1e-12), (row, col)
            else:
                assert torch.allclose(proposals[0, tok].float(), _logit(box), atol=1e-5), (row, col)
                expected = t.enc_output_norm(t.enc_output(mem.memory[0, tok]))
                assert torch.allclose(out_memory[0, tok], expected, atol=1e-12), (row, col)


def test_two_stage_decoder_boxes_send_no_gradient_to_the_proposal_box_head():
    """Official two-stage: ``topk_coords_unact.detach()``: the decoder starts from the top-k proposals as
    constants, so the proposal box head ``bbox_embed[-1]`` learns from the encoder loss alone; the decoder's
    final boxes (``sigmoid(bbox_embed[L - 1](hs) + reference)``) give it no gradient."""
    t, ce, be = make(two_stage=True, with_box_refine=True, two_stage_num_proposals=5)
    mem = t.encode(*inputs())
    out = t.decode(mem, None, class_embed=ce, bbox_embed=be)
    last = t.num_decoder_layers - 1
    boxes = torch.sigmoid(be[last](out.hidden_states[-1]) + out.references[-1])
    proposal_head = list(be[-1].parameters())
    grads = torch.autograd.grad(boxes.sum(), proposal_head + list(be[last].parameters()), allow_unused=True,
                                retain_graph=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads[:len(proposal_head)])
    assert all(g is not None and g.abs().sum() > 0 for g in grads[len(proposal_head):])  # the layer's own head
    # the encoder proposals do train it
    enc = torch.autograd.grad(out.encoder_outputs["pred_boxes"].sum(), proposal_head)
    assert all(g.abs().sum() > 0 for g in enc)


def test_official_head_initialisation():
    t, ce, be = make()
    t.init_prediction_heads(ce, be)
    assert torch.count_nonzero(be[0].layers[-1].weight) == 0
    assert torch.equal(be[0].layers[-1].bias, torch.tensor([0, 0, -2.0, -2.0], dtype=torch.float64))
    t, ce, be = make(with_box_refine=True)
    t.init_prediction_heads(ce, be)
    assert torch.equal(be[1].layers[-1].bias, torch.zeros(4, dtype=torch.float64))  # only head 0 gets -2
    assert be[0].layers[-1].bias[2] == -2.0
    t, ce, be = make(with_box_refine=True, two_stage=True, two_stage_num_proposals=5)
    t.init_prediction_heads(ce, be)
    assert all(torch.count_nonzero(h.layers[-1].bias) == 0 for h in be)


def test_fresh_transformer_uses_official_init():
    torch.manual_seed(0)
    t = DeformableDetrTransformer(d_model=C, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                  dim_feedforward=16, num_feature_levels=2, enc_n_points=2, dec_n_points=2)
    assert torch.count_nonzero(t.reference_points.bias) == 0
    attn = t.encoder.layers[0].self_attn
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0  # not overwritten by the Xavier pass
    assert math.isclose(float(attn.sampling_offsets.bias.detach()[0]), 1.0)
    assert set(dict(t.named_parameters())) >= {"level_embed", "decoder.layers.0.self_attn.in_proj_weight",
                                               "decoder.layers.0.cross_attn.sampling_offsets.weight"}


def test_linear_proj_parameters_get_their_own_learning_rate():
    from siamese_detr.solver import detr_param_groups

    t, _, _ = make()
    model = nn.ModuleDict({"backbone": nn.Linear(2, 2), "transformer": t})
    groups = detr_param_groups(model, base_lr=2e-4, weight_decay=1e-4, backbone_lr_factor=0.1,
                               lr_factors_by_keyword={"sampling_offsets": 0.1, "reference_points": 0.1})
    by_id = {id(p): g["lr"] for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        if name.startswith("backbone."):
            expected = 2e-5
        elif "sampling_offsets" in name or "reference_points" in name:
            expected = 2e-5  # official lr_linear_proj_mult 0.1
        else:
            expected = 2e-4
        assert math.isclose(by_id[id(p)], expected), name
    assert len(by_id) == sum(1 for _ in model.parameters())
    # official main.py: every group (backbone, linear projections, the rest) keeps args.weight_decay
    assert len(groups) == 4
    assert all(g["weight_decay"] == 1e-4 for g in groups), [(g["lr"], g["weight_decay"]) for g in groups]
