"""UP-DETR / DETReg pretraining models: the contracts the mutation review found unchecked (the training-mode
feature-masking rate the model passes on, the official defaults, the input checks at their boundaries, and
which query sources each method accepts)."""
import inspect

import pytest
import torch
from detectron2.utils.events import EventStorage

from siamese_detr.modeling.meta_arch.detreg import DETRegPretrain
from siamese_detr.modeling.meta_arch.up_detr import UPDETRPretrain
from test_detreg import fake_batch as detreg_batch
from test_detreg import tiny_detreg
from test_up_detr import fake_batch as up_detr_batch
from test_up_detr import tiny_up_detr


def test_up_detr_masks_each_query_patch_feature_with_probability_mask_ratio():
    """In training, ``patch_queries`` zeroes a query's patch feature with probability ``mask_ratio`` (UP-DETR
    "feature masking"), not ``1 - mask_ratio``: with ``mask_ratio=0.25`` about a quarter of the 600 queries
    (100 images x Q=6) equal ``query_embed`` alone. Binomial std 0.018, so [0.15, 0.35] separates the two."""
    model = tiny_up_detr(num_queries=6, num_patches=3, mask_ratio=0.25).train()
    torch.manual_seed(0)
    features = torch.randn(100, 3, model.region_proj.in_features)
    with torch.no_grad():
        queries = model.patch_queries(features)  # [100, 6, d]
    masked = (queries - model.query_embed.weight).abs().sum(-1) < 1e-6
    assert queries.shape == (100, 6, model.transformer.d_model)
    assert 0.15 < masked.float().mean().item() < 0.35


def test_official_defaults_of_the_peers():
    """Official defaults: UP-DETR ``num_patches`` 10, ``mask_ratio`` 0.1, ``--feature_recon`` on, 100 queries;
    DETReg's embedding target is the C3 level (``res3``, ``build_swav_backbone_old`` returns ``['0']``)."""
    up = inspect.signature(UPDETRPretrain.__init__).parameters
    assert (up["num_queries"].default, up["num_patches"].default) == (100, 10)
    assert up["mask_ratio"].default == 0.1 and up["feature_recon"].default is True
    reg = inspect.signature(DETRegPretrain.__init__).parameters
    assert reg["embedding_feature"].default == "res3" and reg["num_queries"].default == 100


@pytest.mark.parametrize("num_patches", [0, -3])
def test_up_detr_refuses_a_non_positive_number_of_patches(num_patches):
    """``num_patches`` < 1 is a ValueError naming it (0 is not a ZeroDivisionError, -3 divides 6 but is no
    patch count)."""
    with pytest.raises(ValueError, match="positive multiple of model.num_patches"):
        UPDETRPretrain(num_queries=6, num_patches=num_patches)


def test_up_detr_refuses_patches_and_boxes_of_different_counts():
    """An input with ``num_patches`` patches but fewer ``patch_boxes`` (targets) is refused naming both counts,
    not matched against a shorter target set."""
    model = tiny_up_detr().train()
    batch = up_detr_batch()
    batch[1]["patch_boxes"] = batch[1]["patch_boxes"][:2]
    with pytest.raises(ValueError, match="3 patches and 2 boxes"):
        with EventStorage():
            model(batch)


def test_detreg_takes_as_many_proposals_as_queries_and_refuses_none_or_more():
    """``K == num_queries`` proposals is legal (every query matched); ``K > num_queries`` and an image with no
    proposal at all (0 boxes, 0 crops) are ValueErrors naming the problem."""
    model = tiny_detreg(num_queries=6).train()
    with EventStorage():
        losses = model(detreg_batch(counts=(6, 2)))
    assert torch.isfinite(losses["loss_object_embedding"])
    with pytest.raises(ValueError, match="7 proposals for 6 queries"):
        with EventStorage():
            model(detreg_batch(counts=(7, 2)))
    empty = detreg_batch(counts=(2, 2))
    empty[0]["proposal_boxes"], empty[0]["crops"] = empty[0]["proposal_boxes"][:0], empty[0]["crops"][:0]
    with pytest.raises(ValueError, match=r"0 proposal boxes and 0 crops \(need the same, > 0\)"):
        with EventStorage():
            model(empty)


def test_detreg_accepts_a_two_stage_decoder_and_up_detr_refuses_it():
    """DETReg's queries are the variant's own (two-stage Deformable DETR, the official DETReg run, has no
    learned queries), so it accepts a transformer with ``learned_queries = False``; UP-DETR builds its queries
    from the learned ones and refuses it."""
    from pretext_test_utils import tiny_transformer
    from siamese_detr.modeling import HungarianMatcher, PositionEmbeddingSine, SetCriterion
    from test_siamese_detr_model import tiny_backbone

    def kwargs():
        transformer = tiny_transformer(32, 1)
        transformer.learned_queries = False  # as DeformableTransformer(two_stage=True)
        return dict(backbone=tiny_backbone(), position_embedding=PositionEmbeddingSine(num_pos_feats=16),
                    transformer=transformer, criterion=SetCriterion(1, HungarianMatcher(1.0, 5.0, 2.0)),
                    num_queries=6)

    reg = DETRegPretrain(weight_dict={"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2, "loss_object_embedding": 1},
                         embedding_feature="res5", **kwargs())
    assert reg.query_embed is None
    with pytest.raises(ValueError, match="learned object queries"):
        UPDETRPretrain(weight_dict={"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2, "loss_feature": 1},
                       num_patches=3, **kwargs())
