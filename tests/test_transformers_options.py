"""Transformer / DETR options off the parity fixtures' path (tiny, CPU, seeded): pre-norm layers and the
final encoder norm written out by hand, the gelu activation, argument checks naming the setting,
``EncoderMemory.select`` and ``.level`` of non-square levels, ``inverse_sigmoid`` above 1, Vanilla DETR's
Xavier initialisation, a Conditional DETR cast to bfloat16, DETR with two extra levels / a string
``in_features`` / a frozen backbone run under ``no_grad``, and the ResNet helpers (their norm in the stem)."""

import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone
from torch import nn
from torch.nn import functional as F

from siamese_detr.modeling import (
    DETR,
    HungarianMatcher,
    PositionEmbeddingSine,
    SetCriterion,
    build_resnet_backbone_for_detr,
)
from siamese_detr.modeling.backbone import make_resnet_stages
from siamese_detr.modeling.heads import MLP
from siamese_detr.modeling.hybrid_matching import repeat_targets
from siamese_detr.modeling.meta_arch.detr import build_input_proj, set_target
from siamese_detr.modeling.transformers import (
    ConditionalDetrTransformer,
    DeformableDetrTransformer,
    DetrTransformer,
)
from siamese_detr.modeling.transformers.base import EncoderMemory, flatten_levels, inverse_sigmoid
from siamese_detr.modeling.transformers.conditional import ConditionalDecoderLayer, ProjectedAttention
from siamese_detr.modeling.transformers.deformable import DeformableDecoderLayer, DeformableEncoderLayer
from siamese_detr.modeling.transformers.vanilla import DetrDecoderLayer, DetrEncoderLayer
from siamese_detr.utils.user_errors import UserError


def _randomise_norms(module, seed=0):
    """LayerNorms with random affine parameters, so that swapping one norm for another changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1.0 + 0.5 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=g))


def _mha(attn, q, k, v, **kw):
    return attn(q, k, v, need_weights=False, **kw)[0]


# ------------------------------------------------------------------------------------------ pre-norm layers
def test_pre_norm_encoder_layer_follows_the_pre_norm_formula():
    """``normalize_before=True``: ``x1 = x + SA(n1(x) + pos, n1(x) + pos, n1(x))``, ``out = x1 + FFN(n2(x1))``
    (official DETR ``forward_pre``); the parity fixtures only cover the post-norm layer."""
    torch.manual_seed(0)
    layer = DetrEncoderLayer(8, 2, 16, dropout=0.0, normalize_before=True).eval()
    _randomise_norms(layer)
    x, pos = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, 3:] = True
    n = layer.norm1(x)
    x1 = x + _mha(layer.self_attn, n + pos, n + pos, n, key_padding_mask=mask)
    expected = x1 + layer.linear2(F.relu(layer.linear1(layer.norm2(x1))))
    torch.testing.assert_close(layer(x, key_padding_mask=mask, pos=pos), expected)


def test_pre_norm_decoder_layer_follows_the_pre_norm_formula():
    """Pre-norm decoder layer: self-attention on ``n1(t)`` (positions on q / k), cross-attention from
    ``n2(t1) + query_pos`` to ``memory + pos`` (values: memory), FFN on ``n3(t2)``, each added residually."""
    torch.manual_seed(0)
    layer = DetrDecoderLayer(8, 2, 16, dropout=0.0, normalize_before=True).eval()
    _randomise_norms(layer)
    t, qp = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    mem, pos = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    kpm[0, 4:] = True
    n1 = layer.norm1(t)
    t1 = t + _mha(layer.self_attn, n1 + qp, n1 + qp, n1)
    t2 = t1 + _mha(layer.cross_attn, layer.norm2(t1) + qp, mem + pos, mem, key_padding_mask=kpm)
    expected = t2 + layer.linear2(F.relu(layer.linear1(layer.norm3(t2))))
    out = layer(t, mem, memory_key_padding_mask=kpm, pos=pos, query_pos=qp)
    torch.testing.assert_close(out, expected)


def test_pre_norm_transformer_applies_a_final_encoder_norm():
    """``normalize_before=True`` adds a final LayerNorm after the encoder layers (official DETR
    ``encoder_norm``); the memory is that norm (with its affine parameters) of the last layer's output."""
    torch.manual_seed(0)
    tr = DetrTransformer(8, 2, 1, 1, 16, dropout=0.0, normalize_before=True).eval()
    assert isinstance(tr.encoder_norm, nn.LayerNorm)
    _randomise_norms(tr)
    src, pos = torch.randn(2, 8, 2, 3), torch.randn(2, 8, 2, 3)
    mask = torch.zeros(2, 2, 3, dtype=torch.bool)
    mask[1, :, 2:] = True
    tokens, pos_flat, mask_flat = src.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2), mask.flatten(1)
    x = tr.encoder_layers[0](tokens, key_padding_mask=mask_flat, pos=pos_flat)
    norm = tr.encoder_norm
    expected = F.layer_norm(x, (8,), norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(tr.encode([src], [mask], [pos]).memory, expected)
    # post-norm: no final encoder norm (its layers end with a norm already)
    assert isinstance(DetrTransformer(8, 2, 1, 1, 16, normalize_before=False).encoder_norm, nn.Identity)


# ------------------------------------------------------------------------------------------ activation
def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


@pytest.mark.parametrize("make", [
    lambda: DetrEncoderLayer(8, 2, 16, activation="gelu"),
    lambda: DetrDecoderLayer(8, 2, 16, activation="gelu"),
    lambda: ConditionalDecoderLayer(8, 2, 16, activation="gelu"),
    lambda: DeformableEncoderLayer(8, 16, activation="gelu", n_levels=1, n_heads=2, n_points=1),
    lambda: DeformableDecoderLayer(8, 16, activation="gelu", n_levels=1, n_heads=2, n_points=1),
], ids=["detr-encoder", "detr-decoder", "conditional-decoder", "deformable-encoder", "deformable-decoder"])
def test_gelu_activation_is_the_erf_gelu(make):
    """``activation="gelu"`` gives ``0.5 x (1 + erf(x / sqrt 2))`` in the FFN (negative inputs do not vanish
    as with relu)."""
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(make().activation(x), _gelu(x))


@pytest.mark.parametrize("make", [
    lambda a: DetrEncoderLayer(8, 2, 16, activation=a),
    lambda a: DetrDecoderLayer(8, 2, 16, activation=a),
    lambda a: ConditionalDecoderLayer(8, 2, 16, activation=a),
    lambda a: DeformableEncoderLayer(8, 16, activation=a, n_levels=1, n_heads=2, n_points=1),
    lambda a: DeformableDecoderLayer(8, 16, activation=a, n_levels=1, n_heads=2, n_points=1),
    lambda a: DetrTransformer(8, 2, 1, 1, 16, activation=a),
    lambda a: ConditionalDetrTransformer(8, 2, 1, 1, 16, activation=a),
    lambda a: DeformableDetrTransformer(8, 2, 1, 1, 16, activation=a, num_feature_levels=1),
], ids=["detr-encoder", "detr-decoder", "conditional-decoder", "deformable-encoder", "deformable-decoder",
        "detr", "conditional", "deformable"])
def test_activation_relu_by_default_and_other_names_refused_naming_the_key(make):
    """Every variant's FFN activation is relu unless asked (negative inputs vanish, positive ones pass), and
    a name other than relu / gelu is a user error (one line, exit status 2 from the training tool) that
    names the config key and the two choices."""
    layers = [m for m in make("relu").modules() if hasattr(m, "activation")]
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    assert layers and all(torch.equal(m.activation(x), torch.tensor([0.0, 0.0, 0.0, 0.5, 2.0])) for m in layers)
    with pytest.raises(UserError) as err:
        make("silu")
    assert isinstance(err.value, ValueError)
    assert str(err.value) == "model.transformer.activation must be one of ['gelu', 'relu'], got 'silu'"


# ------------------------------------------------------------------------------------------ argument checks
def test_vanilla_and_conditional_take_one_feature_level():
    src, mask = torch.zeros(1, 8, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool)
    for tr in (DetrTransformer(8, 2, 1, 1, 16), ConditionalDetrTransformer(8, 2, 1, 1, 16)):
        with pytest.raises(ValueError, match=r"takes one feature level, got 2: set model.in_features to one level"):
            tr.encode([src, src], [mask, mask], [src, src])


def test_flatten_levels_checks_the_number_of_position_maps():
    src, mask = torch.zeros(1, 8, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="2 feature levels, 2 masks, 1 position maps"):
        flatten_levels([src, src], [mask, mask], [src])


def test_conditional_d_model_must_be_even():
    """The spatial query embeds x and y with ``d_model / 2`` channels each: an odd width is refused with the
    config keys (nhead 1 divides it, so only the evenness check can catch it)."""
    with pytest.raises(ValueError, match=r"d_model 7 must be even.*model\.transformer\.d_model"):
        ConditionalDetrTransformer(d_model=7, nhead=1, num_encoder_layers=1, num_decoder_layers=1)


def test_projected_attention_checks_the_value_width():
    with pytest.raises(ValueError, match="v_dim 6 must be divisible by num_heads 4"):
        ProjectedAttention(8, 4, 6)


def test_deformable_queries_must_have_the_query_width():
    """Queries of ``3C`` channels (not ``[query_pos | tgt]`` = ``2C``) are refused with the expected shape."""
    torch.manual_seed(0)
    tr = DeformableDetrTransformer(8, 2, 1, 1, 16, dropout=0.0, num_feature_levels=1, enc_n_points=1,
                                   dec_n_points=1, use_compiled_op=False).eval()
    src, mask = torch.randn(1, 8, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool)
    memory = tr.encode([src], [mask], [src])
    with pytest.raises(ValueError, match=r"queries must be \[B, Q, 16\], got \(1, 3, 24\)"):
        tr.decode(memory, torch.randn(1, 3, 24))


# ------------------------------------------------------------------------------------------ base helpers
def test_inverse_sigmoid_clamps_inputs_outside_zero_one():
    """Inputs above 1 / below 0 (e.g. a box rounded past the border) count as 1 / 0:
    ``log(1 / eps)`` and ``log(eps / 1)``."""
    x = torch.tensor([1.5, 1.0, -0.5, 0.0], dtype=torch.float64)
    expected = torch.tensor([math.log(1e5), math.log(1e5), math.log(1e-5), math.log(1e-5)], dtype=torch.float64)
    torch.testing.assert_close(inverse_sigmoid(x), expected)


def test_memory_select_takes_the_rows_of_every_per_image_field():
    """``EncoderMemory.select`` (Siamese DETR's other-view memory) swaps the images' memory, padding mask,
    positions AND valid ratios; the level geometry is shared."""
    torch.manual_seed(0)
    tr = DeformableDetrTransformer(8, 2, 1, 1, 16, dropout=0.0, num_feature_levels=1, enc_n_points=1,
                                   dec_n_points=1, use_compiled_op=False).eval()
    src = torch.randn(2, 8, 3, 4)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, :, 2:] = True  # image 0: 2 of 4 columns
    mask[1, 1:, :] = True  # image 1: 1 of 3 rows
    memory = tr.encode([src], [mask], [src])
    swapped = memory.select(torch.tensor([1, 0]))
    torch.testing.assert_close(swapped.valid_ratios, torch.tensor([[[1.0, 1 / 3]], [[0.5, 1.0]]]))
    assert torch.equal(swapped.padding_mask, mask[[1, 0]].flatten(1))
    assert torch.equal(swapped.memory, memory.memory[[1, 0]])
    assert torch.equal(swapped.spatial_shapes, memory.spatial_shapes)


def test_memory_level_cuts_each_non_square_level_by_its_height_and_width():
    """``EncoderMemory.level(i)`` is the ``H_i * W_i`` tokens from ``level_start_index[i]``: levels of 2 x 3 and
    1 x 2 cells hold tokens 0..5 and 6..7, row-major (token ``h * W + w`` is cell (h, w) of the level)."""
    srcs = [torch.arange(6.0).view(1, 1, 2, 3), torch.arange(6.0, 8.0).view(1, 1, 1, 2)]
    masks = [torch.zeros(1, 2, 3, dtype=torch.bool), torch.zeros(1, 1, 2, dtype=torch.bool)]
    memory = EncoderMemory(*flatten_levels(srcs, masks, srcs))
    assert memory.level(0)[0, :, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert memory.level(1)[0, :, 0].tolist() == [6, 7]


def test_vanilla_detr_initialises_its_matrices_xavier_uniform():
    """As the official DETR (``_reset_parameters``), every weight matrix of the Transformer is drawn from
    Xavier's uniform range ``+-sqrt(6 / (fan_in + fan_out))`` (not torch's default ``+-1 / sqrt(fan_in)`` for a
    Linear layer): the FFN's 256 -> 2048 matrix fills its range, bound 0.0510 against 0.0625 for the default,
    and the 2048 -> 256 one reaches 0.0510 where the default stops at 0.0221. Vectors (biases, norms) keep their
    defaults: LayerNorm weights 1."""
    torch.manual_seed(0)
    tr = DetrTransformer(256, 8, 1, 1, 2048)
    for linear in (tr.encoder_layers[0].linear1, tr.encoder_layers[0].linear2, tr.decoder_layers[0].linear2):
        weight = linear.weight.detach()
        fan_out, fan_in = weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert weight.abs().max() <= bound
        assert weight.abs().max() > 0.99 * bound
        assert float(weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert torch.equal(tr.encoder_layers[0].norm1.weight, torch.ones(256))


def test_conditional_detr_cast_to_bfloat16_decodes_in_bfloat16():
    """A model cast with ``.to(torch.bfloat16)``: the float32 sine embedding of the reference points is cast to
    the queries' dtype before the bfloat16 projections."""
    torch.manual_seed(0)
    tr = ConditionalDetrTransformer(8, 2, 1, 2, 16, dropout=0.0).eval().to(torch.bfloat16)
    src = torch.randn(1, 8, 2, 3, dtype=torch.bfloat16)
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    with torch.no_grad():
        out = tr.decode(tr.encode([src], [mask], [src]), torch.randn(1, 4, 8, dtype=torch.bfloat16))
    assert out.hidden_states.dtype == torch.bfloat16 and out.hidden_states.shape == (2, 1, 4, 8)
    assert torch.isfinite(out.hidden_states.float()).all()


def test_conditional_head_init_zeroes_the_last_box_layer():
    """Official Conditional DETR: last box-head layer weight AND bias 0, so the first boxes are
    ``sigmoid([inverse_sigmoid(s), 0, 0])``, centred on the reference point with size 0.5."""
    torch.manual_seed(0)
    tr = ConditionalDetrTransformer(8, 2, 1, 1, 16)
    heads = nn.ModuleList([MLP(8, 8, 4, 3)])
    tr.init_prediction_heads(nn.ModuleList([nn.Linear(8, 3)]), heads)
    assert torch.count_nonzero(heads[0].layers[-1].weight) == 0
    assert torch.count_nonzero(heads[0].layers[-1].bias) == 0


# ------------------------------------------------------------------------------------------ DETR options
class _Backbone(Backbone):
    """One 32x32 patch convolution (``res5``, 16 channels); records whether autograd was on."""

    def __init__(self, channels=16):
        super().__init__()
        self.proj = nn.Conv2d(3, channels, kernel_size=32, stride=32)
        self.channels = channels
        self.grad_enabled = []

    def forward(self, x):
        self.grad_enabled.append(torch.is_grad_enabled())
        return {"res5": torch.relu(self.proj(x))}

    def output_shape(self):
        return {"res5": ShapeSpec(channels=self.channels, stride=32)}


def _detr(transformer, **kw):
    torch.manual_seed(0)
    return DETR(
        backbone=kw.pop("backbone", _Backbone()),
        position_embedding=PositionEmbeddingSine(transformer.d_model // 2, normalize=True),
        transformer=transformer,
        num_classes=3,
        num_queries=4,
        criterion=SetCriterion(3, HungarianMatcher(1, 5, 2)),
        weight_dict={"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        **kw,
    )


def _deformable(levels):
    return DeformableDetrTransformer(32, 2, 1, 1, 32, dropout=0.0, num_feature_levels=levels, enc_n_points=1,
                                     dec_n_points=1, use_compiled_op=False)


def test_two_extra_levels_chain_from_the_previous_extra_level():
    """With ``num_extra_levels=2`` the first extra level convolves the last backbone level (16 channels) and
    the second the first extra level (``d_model`` = 32 channels), each halving the map; the padded size is a
    multiple of ``32 * 2^2``."""
    model = _detr(_deformable(3), num_extra_levels=2).eval()
    assert model.size_divisibility == 128
    images = model.pad_images([torch.randint(0, 256, (3, 100, 120), dtype=torch.uint8)])
    assert tuple(images.tensor.shape[-2:]) == (128, 128)
    with torch.no_grad():
        features = model.backbone_features(images.tensor)
        srcs, masks, pos = model.project_levels(features, images)
        assert [tuple(s.shape) for s in srcs] == [(1, 32, 4, 4), (1, 32, 2, 2), (1, 32, 1, 1)]
        torch.testing.assert_close(srcs[1], model.input_proj[1](features[0]))
        torch.testing.assert_close(srcs[2], model.input_proj[2](srcs[1]))


def test_level_count_must_match_the_transformer():
    with pytest.raises(UserError, match=r"1 in_features \+ 0 extra levels = 1 levels \(model.in_features, "
                       r"model.num_extra_levels\), but the transformer expects num_feature_levels=2: "):
        _detr(_deformable(2))


def test_in_features_that_the_backbone_does_not_give_are_named_with_its_outputs():
    with pytest.raises(UserError) as err:
        _detr(_deformable(1), in_features=["res4"])
    assert str(err.value).startswith("model.in_features ['res4'] are not outputs of the backbone, which gives [")
    assert str(err.value).endswith("add them to model.backbone.out_features")


def test_a_single_in_features_string_is_one_level():
    model = _detr(DetrTransformer(32, 2, 1, 1, 32), in_features="res5")
    assert model.in_features == ("res5",)


def test_k_one2many_must_be_positive():
    message = r"need model.num_queries_one2many >= 0 and model.k_one2many >= 1, got 2 and 0"
    with pytest.raises(ValueError, match=message):
        _detr(DetrTransformer(32, 2, 1, 1, 32), num_queries_one2many=2, k_one2many=0)


def test_a_frozen_backbone_runs_without_autograd():
    """``frozen_modules=("backbone",)``: the backbone runs under ``no_grad`` even in training (no graph is
    kept for it); a trainable backbone runs with autograd, except inside the caller's ``no_grad`` (inference),
    which must not be switched back on."""
    for frozen, expected in (((), True), (("backbone",), False)):
        backbone = _Backbone()
        model = _detr(DetrTransformer(32, 2, 1, 1, 32), backbone=backbone, frozen_modules=frozen).train()
        model.backbone_features(torch.zeros(1, 3, 64, 64))
        with torch.no_grad():
            model.backbone_features(torch.zeros(1, 3, 64, 64))
        assert backbone.grad_enabled == [expected, False], frozen


def test_frozen_modules_must_name_a_submodule():
    """An attribute that is not a module (``num_queries``, an int) is refused by name, not with an
    AttributeError from ``requires_grad_``."""
    with pytest.raises(ValueError, match="model.frozen_modules: DETR has no submodule 'num_queries'"):
        _detr(DetrTransformer(32, 2, 1, 1, 32), frozen_modules=("num_queries",))


def test_set_target_labels_are_int64():
    """int32 class labels (e.g. from a numpy pipeline) become int64, the index dtype of the criterion."""
    target = set_target(torch.tensor([1, 2], dtype=torch.int32), torch.tensor([[0.0, 0.0, 10.0, 20.0]] * 2), (40, 20))
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [1, 2]
    torch.testing.assert_close(target["boxes"][0], torch.tensor([0.25, 0.25, 0.5, 0.5]))


def test_deformable_level_embeddings_are_standard_normal():
    """Official ``normal_(self.level_embed)``: N(0, 1) entries (1024 of them here: mean ~0, std ~1), not
    zeros or the Xavier scale."""
    torch.manual_seed(0)
    t = DeformableDetrTransformer(256, 8, 1, 1, 16, num_feature_levels=4, enc_n_points=1, dec_n_points=1,
                                  use_compiled_op=False)
    emb = t.level_embed.detach()
    assert abs(float(emb.mean())) < 0.15 and 0.85 < float(emb.std()) < 1.15


def test_group_norm_input_projections_get_the_official_init():
    """``group_norm=True`` (Deformable DETR): Xavier-uniform conv weights (bound ``sqrt(6 / (fan_in +
    fan_out))`` = 0.25 for a 64 -> 32 1x1 conv, i.e. std 0.144, twice PyTorch's default 0.072) and zero bias."""
    torch.manual_seed(0)
    proj = build_input_proj([64], 32, group_norm=True)
    conv = proj[0][0]
    assert isinstance(proj[0][1], nn.GroupNorm)
    assert torch.count_nonzero(conv.bias) == 0
    assert conv.weight.abs().max() <= 0.25
    assert 0.12 < conv.weight.std() < 0.17


# ------------------------------------------------------------------------------------------ ResNet helpers
def test_resnet50_stages_put_the_stride_in_the_3x3_conv():
    """``stride_in_1x1=False`` (torchvision / DETR weights): the first res3 block strides in conv2 (3x3)."""
    block = make_resnet_stages(50)[1][0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    block = make_resnet_stages(50, stride_in_1x1=True)[1][0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)


def test_resnet_backbone_freezes_the_stem_by_default():
    bb = build_resnet_backbone_for_detr(depth=18)
    assert not any(p.requires_grad for p in bb.stem.parameters())
    assert all(p.requires_grad for p in bb.res2.parameters())


# ------------------------------------------------------------------------------ model errors name their config key
def test_an_odd_position_embedding_width_names_its_key():
    with pytest.raises(UserError, match=r"^model.position_embedding.num_pos_feats must be even, got 7$"):
        PositionEmbeddingSine(7)


def test_an_unknown_loss_name_names_model_criterion_losses_and_the_known_ones():
    criterion = SetCriterion(3, HungarianMatcher(1, 5, 2), losses=("class", "boxez"))
    outputs = {"pred_logits": torch.zeros(1, 2, 4), "pred_boxes": torch.full((1, 2, 4), 0.5)}
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    with pytest.raises(UserError) as err:
        criterion(outputs, targets)
    assert isinstance(err.value, KeyError)
    assert str(err.value) == "model.criterion.losses: unknown loss 'boxez'; available: ['boxes', 'class']"


def test_one_to_many_repeats_below_one_name_model_k_one2many():
    with pytest.raises(UserError, match=r"^model.k_one2many must be >= 1, got 0$"):
        repeat_targets([{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1, dtype=torch.long)}], 0)


def test_one_to_many_queries_without_learned_queries_name_the_key():
    two_stage = DeformableDetrTransformer(32, 2, 1, 1, 32, dropout=0.0, num_feature_levels=1, enc_n_points=1,
                                          dec_n_points=1, use_compiled_op=False, two_stage=True, with_box_refine=True)
    with pytest.raises(UserError, match=r"^model.num_queries_one2many needs learned object queries "):
        _detr(two_stage, num_queries_one2many=2)


def test_resnet_for_detr_uses_its_norm_in_the_stem_too():
    """``build_resnet_backbone_for_detr(norm=...)`` puts that norm in the stem as in every stage: a fully
    trainable "BN" backbone (``freeze_at=0``) has no frozen stem norm left over. The default is FrozenBN
    everywhere, as DETR's (``freeze_at=1`` also freezes the stem, turning a "BN" stem's norm into FrozenBN)."""
    from detectron2.layers import FrozenBatchNorm2d

    trainable = build_resnet_backbone_for_detr(depth=18, norm="BN", freeze_at=0)
    assert isinstance(trainable.stem.conv1.norm, nn.BatchNorm2d)
    assert isinstance(trainable.res5[0].conv1.norm, nn.BatchNorm2d)
    frozen = build_resnet_backbone_for_detr(depth=18)
    assert isinstance(frozen.stem.conv1.norm, FrozenBatchNorm2d)
    assert isinstance(frozen.res5[0].conv1.norm, FrozenBatchNorm2d)
    stem_frozen = build_resnet_backbone_for_detr(depth=18, norm="BN")
    assert isinstance(stem_frozen.stem.conv1.norm, FrozenBatchNorm2d)
    assert isinstance(stem_frozen.res5[0].conv1.norm, nn.BatchNorm2d)
