"""DETReg pretraining: selection policies, mapper geometry, embedding loss, training, handoff."""
import math
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import transforms as T
from detectron2.modeling.backbone import ResNet
from detectron2.utils.events import EventStorage

from siamese_detr.data.detreg_mapper import DETRegMapper
from siamese_detr.data.proposals.selection import importance_probabilities, select_proposals
from siamese_detr.modeling import HungarianMatcher, PositionEmbeddingSine, SetCriterion
from siamese_detr.modeling.meta_arch.detreg import DETRegPretrain
from siamese_detr.modeling.pretext.embedding_loss import object_embedding_loss
from test_siamese_detr_model import tiny_backbone
from test_siamese_handoff import tiny_detr
from pretext_test_utils import fake_query_batch, load_and_report, losses_over_steps, tiny_transformer

WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_object_embedding": 1.0}


def tiny_detreg(num_queries=6, d_model=32, layers=2, seed=0):
    torch.manual_seed(seed)
    base = tiny_backbone()
    backbone = ResNet(base.stem, [getattr(base, f"res{i}") for i in (2, 3, 4, 5)], out_features=["res3", "res5"])
    return DETRegPretrain(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(num_pos_feats=d_model // 2),
        transformer=tiny_transformer(d_model, layers),
        criterion=SetCriterion(1, HungarianMatcher(1.0, 5.0, 2.0), eos_coef=0.1),
        weight_dict=dict(WEIGHTS),
        num_queries=num_queries,
        embedding_feature="res3",
    )


def fake_batch(counts=(2, 4), size=32, seed=0):
    return fake_query_batch(counts, "crops", "proposal_boxes", size=size, seed=seed)


# ----------------------------------------------------------------------------------------------- policies
def test_topk_keeps_the_first_k_in_rank_order():
    rng = np.random.default_rng(0)
    assert select_proposals(rng, 100, 30, "topk").tolist() == list(range(30))
    assert select_proposals(rng, 7, 30, "topk").tolist() == list(range(7))


def test_random_k_draws_without_replacement_and_uniformly():
    rng = np.random.default_rng(0)
    counts = np.zeros(50)
    for _ in range(2000):
        idx = select_proposals(rng, 50, 10, "random")
        assert len(idx) == 10 and len(set(idx.tolist())) == 10 and idx.min() >= 0 and idx.max() < 50
        counts[idx] += 1
    assert np.abs(counts / 2000 - 0.2).max() < 0.05  # every proposal chosen with probability K / N
    assert sorted(select_proposals(rng, 5, 10, "random").tolist()) == [0, 1, 2, 3, 4]


def test_importance_probabilities_follow_the_paper_formula():
    # paper §4: Pr(X_i = 1) ∝ -log(i / n); the official mc branch: -log(arange(1, 301) / 301) / 10
    probs = importance_probabilities(300, 30)
    official = -np.log(np.arange(1, 301) / 301) / 10
    assert np.allclose(probs, np.minimum(1, official))
    ratio = probs[:-1] / probs[1:]  # proportional to -log(i / (N + 1)) where uncapped
    expected = np.array([math.log((i + 1) / 301) / math.log((i + 2) / 301) for i in range(299)])
    uncapped = probs[:-1] < 1
    assert np.allclose(ratio[uncapped], expected[uncapped])
    assert np.all(np.diff(probs) <= 0) and probs[-1] > 0
    assert abs(probs.sum() - 30) < 2  # about K kept on average


def _official_importance(num_ranks, k, total):
    """DETReg's ``mc`` probabilities written out independently of the module: ``min(1, -log(i / (N + 1)) K / N)``
    for ranks ``i = 1..num_ranks`` (official: ``-log(arange(1, 301) / 301) / 10``, i.e. N = 300, K / N = 0.1)."""
    return [min(1.0, -math.log(i / (total + 1)) * k / total) for i in range(1, num_ranks + 1)]


def _assert_binomial_counts(hits, draws, probs, band):
    """Rank ``r`` kept independently with probability ``probs[r]`` in each of ``draws`` draws: its count is
    Binomial(draws, p_r), and a band of ranks is a sum of independent binomials. Each count, and each band of
    ``band`` consecutive ranks, must lie within 5 standard deviations (+1 for p in {0, 1}) of its mean; a
    5-sigma miss has probability < 1e-6 per check (the seeds are fixed anyway)."""
    p = np.asarray(probs, dtype=np.float64)
    hits = np.asarray(hits[: len(p)], dtype=np.float64)
    mean, var = draws * p, draws * p * (1 - p)
    off = np.abs(hits - mean) - (5 * np.sqrt(var) + 1)
    assert off.max() <= 0, f"rank index {off.argmax()}: {hits[off.argmax()]} hits, {mean[off.argmax()]:.1f} expected"
    for lo in range(0, len(p), band):
        sl = slice(lo, lo + band)
        dev = abs(hits[sl].sum() - mean[sl].sum())
        assert dev <= 5 * math.sqrt(var[sl].sum()) + 1, (lo, hits[sl].sum(), mean[sl].sum())
    total_dev = abs(hits.sum() - mean.sum())
    assert total_dev <= 5 * math.sqrt(var.sum()) + 1, (hits.sum(), mean.sum())


def test_importance_sampling_empirical_frequencies():
    """40 candidates, K = 8, N = 40 (the default): per-rank counts over 20000 draws against the DETReg formula
    computed here (not the module's ``importance_probabilities``). 7.64 kept per draw on average; the total's
    5-sigma band (1.0 % of it, 1580 of 152900) rejects e.g. ``-log(i / N)`` for ``-log(i / (N + 1))`` (0.2
    fewer per draw: 3950 fewer in all)."""
    rng = np.random.default_rng(0)
    draws = 20000
    hits = np.zeros(40)
    for _ in range(draws):
        idx = select_proposals(rng, 40, 8, "importance")
        assert np.all(np.diff(idx) > 0) and (len(idx) == 0 or (idx.min() >= 0 and idx.max() < 40))
        hits[idx] += 1
    official = _official_importance(40, 8, 40)
    assert official[0] == pytest.approx(-math.log(1 / 41) / 5) and official[-1] == pytest.approx(math.log(41 / 40) / 5)
    _assert_binomial_counts(hits, draws, official, band=10)


def test_importance_draws_only_the_first_total_ranks_of_more_candidates():
    """Official ``mc``: ``binomial(1, p=dist2[:len(boxes)])`` with ``len(dist2) = 300``: of 2000 Selective
    Search boxes only the first 300 ranks can be drawn, each with its official probability. Checked rank by
    rank and in bands of 25 ranks against Binomial(20000, p): every tail band is constrained too (ranks 276-300
    together: 2223 hits expected, 5 sigma = 235), so never drawing a band of late ranks fails."""
    rng = np.random.default_rng(3)
    official = -np.log(np.arange(1, 301) / 301) / 10
    assert np.allclose(official, _official_importance(300, 30, 300))
    draws = 20000
    hits = np.zeros(2000)
    for _ in range(draws):
        idx = select_proposals(rng, 2000, 30, "importance", importance_total=300)
        assert np.all(np.diff(idx) > 0)
        hits[idx] += 1
    assert hits[300:].sum() == 0 and hits[:250].min() > 0  # rank 250: p = 0.019, 370 hits expected
    _assert_binomial_counts(hits[:300], draws, official, band=25)
    # fewer candidates than N: their probabilities stay the official ones for their ranks (not N = 5's)
    hits = np.zeros(5)
    for _ in range(draws):
        idx = select_proposals(rng, 5, 30, "importance", importance_total=300)
        assert np.all(np.diff(idx) > 0) and len(idx) <= 5
        hits[idx] += 1
    _assert_binomial_counts(hits, draws, official[:5], band=5)


def test_unknown_policy_rejected():
    with pytest.raises(ValueError, match="policy"):
        select_proposals(np.random.default_rng(0), 10, 3, "best")


# ------------------------------------------------------------------------------------------------- mapper
def _write_image(tmp_path, h=60, w=90):
    path = str(tmp_path / "x.png")
    cv2.imwrite(path, np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8))
    return path


def test_mapper_moves_boxes_with_flip_and_resize_and_keeps_crops_aligned(tmp_path):
    path = _write_image(tmp_path)
    proposals = np.array([[0, 0, 30, 20], [10, 5, 80, 55], [40, 30, 90, 60], [5, 5, 6, 40]], dtype=np.float32)
    mapper = DETRegMapper(
        proposal_source=lambda d, im: (proposals, np.arange(4, 0, -1, dtype=np.float32)),
        num_proposals=3, policy="topk", crop_size=16, is_train=False, seed=0,
        augmentation=[T.HFlipTransform(90), T.ResizeTransform(60, 90, 120, 180)], augmentation_with_crop=None,
    )
    out = mapper({"file_name": path, "image_id": 1})
    assert out["image"].shape == (3, 120, 180) and out["crops"].shape == (3, 3, 16, 16)
    expected = np.stack([90 - proposals[:3, 2], proposals[:3, 1], 90 - proposals[:3, 0], proposals[:3, 3]], 1) * 2
    assert torch.allclose(out["proposal_boxes"], torch.as_tensor(expected))
    assert out["proposal_rank"].tolist() == [0, 1, 2]


def test_mapper_random_crop_drops_boxes_and_their_crops_together(tmp_path):
    path = _write_image(tmp_path)
    proposals = np.array([[0, 0, 20, 20], [50, 30, 90, 60], [60, 40, 80, 55], [2, 2, 10, 10]], dtype=np.float32)
    mapper = DETRegMapper(
        proposal_source=lambda d, im: (proposals, np.ones(4, dtype=np.float32)), num_proposals=4,
        crop_size=8, is_train=False, augmentation=[T.CropTransform(40, 20, 50, 40)], augmentation_with_crop=None,
    )
    out = mapper({"file_name": path, "image_id": 1})
    assert out["proposal_rank"].tolist() == [1, 2]  # boxes 0 and 3 lie outside the crop
    assert torch.allclose(out["proposal_boxes"], torch.tensor([[10.0, 10, 50, 40], [20, 20, 40, 35]]))
    image = cv2.imread(path)
    full = DETRegMapper(proposal_source=lambda d, im: (proposals, np.ones(4)), num_proposals=4, crop_size=8,
                        is_train=False, augmentation=[], augmentation_with_crop=None)
    full = full({"file_name": path, "image_id": 1})
    assert torch.equal(out["crops"], full["crops"][[1, 2]])  # crops come from the ORIGINAL image
    assert full["crops"].shape[0] == 4 and image is not None
    few = DETRegMapper(proposal_source=lambda d, im: (proposals[:1], np.ones(1)), num_proposals=4, is_train=False)
    assert few({"file_name": path, "image_id": 1}) is None  # fewer than 2 proposals


# -------------------------------------------------------------------------------------------------- model
def test_embedding_loss_against_explicit_computation():
    torch.manual_seed(0)
    pred = torch.randn(2, 5, 7)
    emb = [torch.randn(3, 7), torch.randn(2, 7)]
    indices = [(torch.tensor([4, 0]), torch.tensor([2, 0])), (torch.tensor([1]), torch.tensor([1]))]
    pairs = [(pred[0, 4], emb[0][2]), (pred[0, 0], emb[0][0]), (pred[1, 1], emb[1][1])]
    expected = sum((a - b).abs().sum() for a, b in pairs) / (3 * 7)
    assert torch.allclose(object_embedding_loss(pred, emb, indices), expected)


def test_embedding_loss_with_nothing_matched_is_a_zero_with_a_graph():
    """No pair matched in any image (an image may have no proposal at all): the loss is exactly 0 but still
    depends on the predictions, so backward() runs (DDP's all-reduce of every gradient would hang on a rank
    whose loss had no graph) and gives all-zero gradients, not None."""
    g = torch.Generator().manual_seed(0)
    predictions = torch.randn(2, 4, 3, generator=g, requires_grad=True)
    embeddings = [torch.randn(2, 3, generator=g), torch.zeros(0, 3)]
    empty = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    loss = object_embedding_loss(predictions, embeddings, [empty, empty])
    assert loss.shape == () and loss.item() == 0.0
    assert loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    assert predictions.grad is not None and torch.equal(predictions.grad, torch.zeros(2, 4, 3))


def test_model_losses_and_embedding_targets():
    model = tiny_detreg().train()
    seen = {}
    decode, criterion_forward = model.decode, model.criterion.forward

    def record_decode(*args, **kwargs):
        seen["decoded"] = decode(*args, **kwargs)
        return seen["decoded"]

    def record_criterion(outputs, targets, return_indices=False):
        losses, indices = criterion_forward(outputs, targets, return_indices=True)
        seen["indices"] = indices
        return losses, indices

    model.decode, model.criterion.forward = record_decode, record_criterion
    batch = fake_batch()
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_bbox_0", "loss_giou_0",
                           "loss_object_embedding"}
    with torch.no_grad():
        total, count = 0.0, 0
        for b, (src, tgt) in enumerate(seen["indices"][-1]):
            crops = (batch[b]["crops"].float() - model.pixel_mean) / model.pixel_std
            z = model.backbone(crops)["res3"].mean(dim=(2, 3))  # C3 average of each crop
            assert z.shape[1] == model.sem_embed.layers[-1].out_features
            pred = model.sem_embed(seen["decoded"].hidden_states[-1, b])
            total += (pred[src] - z[tgt]).abs().sum()
            count += len(src) * z.shape[1]
    assert torch.allclose(losses["loss_object_embedding"], total / count, atol=1e-6)


def test_embedding_feature_must_be_a_backbone_output():
    with pytest.raises(ValueError, match=r"model.embedding_feature 'res3' is not a backbone output \[.*\]: add it "
                                         r"to model.backbone.out_features"):
        DETRegPretrain(backbone=tiny_backbone(), position_embedding=PositionEmbeddingSine(16),
                       transformer=tiny_transformer(layers=1),
                       criterion=SetCriterion(1, HungarianMatcher()), weight_dict=WEIGHTS, num_queries=6)


def test_a_few_steps_on_builtin_dataset_lower_the_loss(tiny_synthetic_shapes):
    from detectron2.data import DatasetCatalog

    from siamese_detr.data.proposals.sources import RandomProposals

    dicts = DatasetCatalog.get("synthetic_shapes_train")[:2]
    mapper = DETRegMapper(proposal_source=RandomProposals(num_boxes=50), num_proposals=4, crop_size=32, seed=0,
                          augmentation=[T.ResizeShortestEdge(96, max_size=128)], augmentation_with_crop=None)
    batch = [mapper(d) for d in dicts]
    totals = losses_over_steps(tiny_detreg().train(), batch)
    assert totals[-1] < totals[0], totals


def test_checkpoint_hands_off_to_detr(tmp_path):
    DetectionCheckpointer(tiny_detreg(), save_dir=str(tmp_path)).save("model_final")
    incompatible = load_and_report(tiny_detr(), os.path.join(str(tmp_path), "model_final.pth"))
    assert sorted(k for k, _, _ in incompatible.incorrect_shapes) == [
        f"class_embed.{i}.{k}" for i in (0, 1) for k in ("bias", "weight")]
    assert sorted(incompatible.unexpected_keys) == [f"sem_embed.layers.{i}.{k}" for i in (0, 1)
                                                    for k in ("bias", "weight")]


@pytest.mark.parametrize("config", ["detreg_detr_r50_imagenet_60ep.py", "detreg_detr_r50_coco_60ep.py"])
def test_detr_variant_configs_use_the_official_position_offset(config):
    """The official DETReg positions are Deformable DETR's (``cumsum - 0.5``) for its DETR variant too
    (tests/test_parity_detreg_pretrain.py builds ours so and matches the official forward)."""
    from pathlib import Path

    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(str(Path(__file__).resolve().parents[1] / "configs" / "detreg" / config))
    assert cfg.model.position_embedding.offset == -0.5
    # official --pre_norm on ImageNet; the COCO twin (no official counterpart) is post-norm like our COCO configs
    assert cfg.model.transformer.normalize_before is ("imagenet" in config)


# ------------------------------------------------------------------------------- mapper: seeding, branches, ranks
def _grid_proposals(n=20, h=60, w=90):
    """``n`` distinct boxes with positive area inside an ``h x w`` image (rank = row index)."""
    rng = np.random.default_rng(5)
    x0, y0 = rng.integers(0, w // 2, n), rng.integers(0, h // 2, n)
    return np.stack([x0, y0, x0 + rng.integers(5, w // 2, n), y0 + rng.integers(5, h // 2, n)], 1).astype(np.float32)


def test_mapper_draws_a_fresh_stream_per_call_reproducible_from_the_seed(tmp_path):
    """Random-k: each call draws from its own generator, seeded with (seed, rank, worker id, call index), so two
    calls on the SAME image choose different proposals, the k-th call's choice is the policy's draw from
    ``SeedSequence([seed, 0, 0, k])`` (the policy draws first), and a new mapper with the same seed replays it."""
    path = _write_image(tmp_path)
    proposals = _grid_proposals()
    d = {"file_name": path, "image_id": 1}

    def run(seed, calls=3):
        mapper = DETRegMapper(proposal_source=lambda d, im: (proposals, np.ones(20)), num_proposals=5,
                              policy="random", crop_size=8, augmentation=[], augmentation_with_crop=None, seed=seed)
        return [mapper(d) for _ in range(calls)]

    first = run(0)
    ranks = [out["proposal_rank"].tolist() for out in first]
    assert ranks[0] != ranks[1] and ranks[1] != ranks[2]
    for k, got in enumerate(ranks):
        expected = select_proposals(np.random.default_rng(np.random.SeedSequence([0, 0, 0, k])), 20, 5, "random")
        assert got == expected.tolist(), k
        assert torch.equal(first[k]["proposal_boxes"], torch.as_tensor(proposals[got]))
    for a, b in zip(first, run(0)):
        assert torch.equal(a["proposal_rank"], b["proposal_rank"]) and torch.equal(a["crops"], b["crops"])
    assert run(1, calls=1)[0]["proposal_rank"].tolist() != ranks[0]


def test_mapper_chooses_each_augmentation_branch_about_half_the_time(tmp_path):
    """DETR's ``RandomSelect``: in training each sample takes the crop branch with probability 0.5, drawn from the
    sample's own seeded stream (a new mapper replays the choices); at inference only the plain branch. The two
    branches are told apart by the output size (x2 / x3 resize)."""
    path = _write_image(tmp_path, h=20, w=30)
    proposals = np.array([[0, 0, 10, 10], [5, 5, 25, 18]], dtype=np.float32)

    def mapper(is_train=True):
        return DETRegMapper(proposal_source=lambda d, im: (proposals, np.ones(2)), num_proposals=2, crop_size=4,
                            is_train=is_train, seed=0, augmentation=[T.ResizeTransform(20, 30, 40, 60)],
                            augmentation_with_crop=[T.ResizeTransform(20, 30, 60, 90)])

    def branches(m, calls):
        sizes = [tuple(m({"file_name": path, "image_id": i})["image"].shape[1:]) for i in range(calls)]
        assert set(sizes) <= {(40, 60), (60, 90)}
        return [size == (60, 90) for size in sizes]

    chosen = branches(mapper(), 200)
    assert 0.35 <= np.mean(chosen) <= 0.65  # Binomial(200, 0.5): 5 sigma = 0.18
    assert branches(mapper(), 20) == chosen[:20]
    assert not any(branches(mapper(is_train=False), 10))


def test_default_augmentations_are_the_official_detreg_ones():
    """Official DETReg ``make_self_det_transforms('train')``: RandomHorizontalFlip, then RandomSelect(
    RandomResize(scales, max_size=600), [RandomResize([400, 500, 600]), RandomSizeCrop(384, 600),
    RandomResize(scales, max_size=600)]) with scales 320..480 without 384; here the flip starts each branch."""
    from siamese_detr.data.detreg_mapper import detreg_augmentations

    scales = [320, 336, 352, 368, 400, 416, 432, 448, 464, 480]
    default = DETRegMapper(proposal_source=lambda d, im: (np.zeros((0, 4)), np.zeros(0)))
    for plain, crop in (detreg_augmentations(), (default.augmentation.augs, default.augmentation_with_crop.augs)):
        for branch in (plain, crop):
            flip = branch[0]
            assert isinstance(flip, T.RandomFlip) and flip.prob == 0.5 and flip.horizontal and not flip.vertical
            assert sum(isinstance(a, T.RandomFlip) for a in branch) == 1
            last = branch[-1]
            assert isinstance(last, T.ResizeShortestEdge) and not last.is_range
            assert list(last.short_edge_length) == scales and last.max_size == 600
        assert len(plain) == 2 and len(crop) == 4
        first_resize, random_crop = crop[1], crop[2]
        assert isinstance(first_resize, T.ResizeShortestEdge) and not first_resize.is_range
        assert list(first_resize.short_edge_length) == [400, 500, 600] and first_resize.max_size >= 10 ** 6
        assert isinstance(random_crop, T.RandomCrop) and random_crop.crop_type == "absolute_range"
        assert tuple(random_crop.crop_size) == (384, 600)


def test_proposal_rank_is_the_source_rank_of_each_kept_box(tmp_path):
    """Random-k with a crop that drops some chosen boxes, after a zero-area and a non-finite proposal: each kept
    box's ``proposal_rank`` is its index in the source's list less the non-finite rows before it, and the box
    is that source proposal moved by the crop; the ranks cover every chosen box that overlaps the crop."""
    path = _write_image(tmp_path)
    source = np.concatenate([
        [[10, 10, 10, 30], [np.nan, 0, 5, 5]],  # rank 0: zero width (never chosen); non-finite row: not ranked
        _grid_proposals(12),
    ]).astype(np.float32)
    ranked = np.delete(source, 1, axis=0)  # ranks count after dropping non-finite rows
    crop = (40, 20, 50, 40)  # x0, y0, w, h
    inside = (ranked[:, 2] > crop[0]) & (ranked[:, 0] < crop[0] + crop[2]) & \
             (ranked[:, 3] > crop[1]) & (ranked[:, 1] < crop[1] + crop[3]) & (ranked[:, 2] > ranked[:, 0])
    assert 3 <= inside.sum() <= 10  # the crop keeps some proposals and drops others
    mapper = DETRegMapper(proposal_source=lambda d, im: (source, np.ones(len(source))), num_proposals=6,
                          policy="random", crop_size=8, min_proposals=1, seed=0, is_train=False,
                          augmentation=[T.CropTransform(*crop)], augmentation_with_crop=None)
    seen, dropped_some = set(), False
    for i in range(12):
        out = mapper({"file_name": path, "image_id": i})
        if out is None:
            continue
        ranks = out["proposal_rank"].tolist()
        assert len(set(ranks)) == len(ranks)
        assert all(inside[r] for r in ranks) and 0 not in ranks
        expected = ranked[ranks] - np.array([crop[0], crop[1], crop[0], crop[1]], dtype=np.float32)
        expected[:, 0::2] = expected[:, 0::2].clip(0, crop[2])
        expected[:, 1::2] = expected[:, 1::2].clip(0, crop[3])
        assert torch.allclose(out["proposal_boxes"], torch.as_tensor(expected)), (i, ranks)
        assert out["crops"].shape[0] == len(ranks)
        dropped_some |= len(ranks) < 6
        seen.update(ranks)
    assert dropped_some and len(seen) >= 4


def test_mapper_skips_samples_left_with_too_few_proposals_after_augmentation(tmp_path):
    """Enough proposals before the augmentation, fewer than ``min_proposals`` (but one) after it: the sample is
    skipped (``None``, counted in ``num_few_proposals``) as the official ``min_proposals`` check; with
    ``min_proposals=1`` the one surviving box is returned."""
    path = _write_image(tmp_path)
    proposals = np.array([[0, 0, 20, 20], [50, 30, 90, 60], [2, 2, 10, 10]], dtype=np.float32)

    def mapper(min_proposals):
        return DETRegMapper(proposal_source=lambda d, im: (proposals, np.ones(3)), num_proposals=3, crop_size=8,
                            min_proposals=min_proposals, is_train=False,
                            augmentation=[T.CropTransform(40, 20, 50, 40)], augmentation_with_crop=None)

    for min_proposals in (2, 3):
        m = mapper(min_proposals)
        assert m({"file_name": path, "image_id": 1}) is None
        assert m.num_few_proposals == 1
    m = mapper(1)
    out = m({"file_name": path, "image_id": 1})
    assert out["proposal_rank"].tolist() == [1] and m.num_few_proposals == 0
    assert torch.equal(out["proposal_boxes"], torch.tensor([[10.0, 10, 50, 40]]))


def test_proposals_that_cannot_be_targets_take_none_of_the_k_places(tmp_path):
    """Top-2 of a list whose first three proposals cannot be targets: one right of the 90 x 60 image, one below
    it (each empty once clipped to the image) and one of zero width. They are passed over before the choice,
    so the two places go to the next two, the second of which crosses the image border and comes back clipped
    to it."""
    path = _write_image(tmp_path)
    proposals = np.array([[95, 10, 120, 30], [10, 65, 30, 80], [10, 10, 10, 30],
                          [5, 5, 40, 30], [70, 40, 110, 75]], dtype=np.float32)
    mapper = DETRegMapper(proposal_source=lambda d, im: (proposals, np.ones(5)), num_proposals=2, policy="topk",
                          crop_size=8, min_proposals=2, is_train=False, augmentation=[T.NoOpTransform()],
                          augmentation_with_crop=None)
    out = mapper({"file_name": path, "image_id": 1})
    assert out is not None and mapper.num_few_proposals == 0
    assert out["proposal_rank"].tolist() == [3, 4]
    assert torch.equal(out["proposal_boxes"], torch.tensor([[5.0, 5, 40, 30], [70, 40, 90, 60]]))
    assert out["crops"].shape == (2, 3, 8, 8)
