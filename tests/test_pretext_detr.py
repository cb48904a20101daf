"""PretextDETR, the base of the three pretraining models: set-up checks, objectness targets, per-layer losses."""
import types

import pytest
import torch

from siamese_detr.modeling import DetrTransformer, HungarianMatcher, PositionEmbeddingSine, SetCriterion
from siamese_detr.modeling.heads import MLP
from siamese_detr.modeling.meta_arch.detr import set_target
from siamese_detr.modeling.meta_arch.pretext_detr import PretextDETR
from test_siamese_detr_model import tiny_backbone

REQUIRED = ("loss_ce", "loss_bbox", "loss_giou")
WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def build(criterion_classes=1, weights=WEIGHTS, transformer=None, **kwargs):
    transformer = transformer or DetrTransformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=2,
                                                 dim_feedforward=32, dropout=0.0)
    return PretextDETR(
        backbone=tiny_backbone(),
        position_embedding=PositionEmbeddingSine(num_pos_feats=8),
        transformer=transformer,
        criterion=SetCriterion(criterion_classes, HungarianMatcher()),
        weight_dict=dict(weights),
        num_queries=4,
        required_losses=REQUIRED,
        **kwargs,
    )


def test_one_objectness_class_and_a_frozen_backbone():
    model = build()
    assert model.num_classes == 1 and model.frozen_modules == ("backbone",)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.class_embed[0].out_features == 2  # objectness + no-object (softmax CE)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(criterion_classes=3), "num_classes=1"),
        (dict(criterion_classes=0), "num_classes=1"),  # one objectness class, not zero
        (dict(weights={"loss_ce": 1.0, "loss_bbox": 5.0}), r"model.weight_dict lacks \['loss_giou'\]"),
        (dict(transformer=types.SimpleNamespace(learned_queries=False)), "learned object queries"),
        (dict(num_classes=1), "num_classes"),
        (dict(frozen_modules=()), "frozen_modules"),
    ],
)
def test_bad_set_up_is_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        build(**kwargs)
    assert "PretextDETR" in str(err.value)


def test_objectness_targets_are_label_zero_normalised_cxcywh():
    model = build()
    boxes = [torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 80.0, 40.0]]), torch.zeros(0, 4)]
    targets = model.objectness_targets(boxes, [(80, 80), (40, 50)])
    # hand-computed: centre (20, 40) / (80, 80), size (20, 40) / (80, 80); whole-width box on a 40 x 80 image
    expected = torch.tensor([[0.25, 0.5, 0.25, 0.5], [0.5, 0.25, 1.0, 0.5]])
    assert torch.allclose(targets[0]["boxes"], expected)
    assert targets[0]["labels"].tolist() == [0, 0] and targets[0]["labels"].dtype == torch.int64
    assert targets[1]["boxes"].shape == (0, 4) and targets[1]["labels"].shape == (0,)


def test_set_target_divides_x_by_width_and_y_by_height():
    target = set_target(torch.tensor([3]), torch.tensor([[0.0, 0.0, 10.0, 30.0]]), (60, 20))
    assert torch.allclose(target["boxes"], torch.tensor([[0.25, 0.25, 0.5, 0.5]]))
    assert target["labels"].tolist() == [3]


@pytest.mark.parametrize("aux_loss", [True, False])
def test_layerwise_feature_losses_name_and_pair_every_matched_layer(aux_loss):
    torch.manual_seed(0)
    model = build(aux_loss=aux_loss)
    model.sem_embed = MLP(16, 16, 5, 2)
    hidden = torch.randn(3, 2, 4, 16)  # [L, B, Q, D]
    features = torch.randn(2, 2, 5)
    indices = [[(torch.tensor([layer]), torch.tensor([0]))] * 2 for layer in range(3 if aux_loss else 1)]
    seen = []

    def loss_fn(pred, feats, layer_indices, num_boxes):
        seen.append((pred, layer_indices))
        return pred[0, layer_indices[0][0]].sum() * num_boxes

    losses = model.layerwise_feature_losses("loss_x", loss_fn, hidden, features, indices, 2.0)
    names = ["loss_x_0", "loss_x_1", "loss_x"] if aux_loss else ["loss_x"]
    assert sorted(losses) == sorted(names)
    used_layers = [0, 1, 2] if aux_loss else [2]  # without aux_loss only the last layer's states are used
    assert len(seen) == len(used_layers) == len(indices)
    for k, ((pred, layer_indices), layer) in enumerate(zip(seen, used_layers)):
        assert layer_indices is indices[k]  # the k-th matched layer's matches go with the k-th layer's states
        assert torch.allclose(pred, model.sem_embed(hidden[layer]))
        # each layer's matches pick query ``k``: a loss built from another layer's states or matches differs
        expected = model.sem_embed(hidden[layer])[0, k].sum() * 2.0
        assert torch.allclose(losses[names[k]], expected)
