"""Edge contracts of the pretext building blocks shared by the pretraining methods: UP-DETR's query-feature
dropout range, DETReg's object-embedding loss stop-gradient."""
import pytest
import torch

from siamese_detr.modeling.pretext import object_embedding_loss, query_feature_dropout


def test_query_feature_dropout_ratio_must_leave_something():
    """``drop_ratio`` lies in [0, 1): 1 would drop every query's patch feature and is refused; 0 keeps all."""
    features = torch.ones(2, 6, 3)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="drop_ratio"):
            query_feature_dropout(features, bad)
    out, keep = query_feature_dropout(features, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, features) and torch.equal(keep, torch.ones(2, 6, 1))


def test_object_embedding_loss_takes_no_gradient_through_the_targets():
    """The frozen-backbone embeddings are targets only: even when they require grad, the loss (mean absolute
    difference of the matched pairs, by hand) sends gradient to the predictions alone."""
    predictions = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]], requires_grad=True)
    embeddings = [torch.tensor([[0.0, 0.0], [3.0, 1.0]], requires_grad=True)]
    indices = [(torch.tensor([0]), torch.tensor([1]))]
    loss = object_embedding_loss(predictions, embeddings, indices)
    assert loss.item() == pytest.approx((2.0 + 1.0) / 2)
    loss.backward()
    assert embeddings[0].grad is None
    assert predictions.grad[0, 0].tolist() == [-0.5, 0.5] and predictions.grad[0, 1].tolist() == [0.0, 0.0]
