"""The demo's backbone stage, part by part, against hand computations: the leave-one-out k-NN vote on tiny
sets, the context of object crops, SimSiam views, the photometric jitter, the embedding, the SimSiam loss and
the supervised batches (which crops, which labels, which network is trained)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from siamese_detr.demo import backbone_pretrain as bp
from siamese_detr.demo.backbone_pretrain import knn_accuracy, object_crops


def _unit(degrees):
    return torch.tensor([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees])


def test_knn_negative_similarities_vote_nothing():
    """q at 0 deg (label 0), a at 180 deg (label 0), b at 100 deg (label 1), k=2: every object votes over the
    other two. q's neighbours both have cos < 0, so each votes only 1e-6: a tie, won by the lowest label 0
    (correct); if the negative cosines counted, b (cos 100 = -0.17) would beat a (-1) and q would be wrong.
    a: b (cos 80 = +0.17, label 1) beats q -> wrong; b: a (+0.17, label 0) -> wrong. 1 of 3 = 33.3 %."""
    feats, labels = _unit([0, 180, 100]), torch.tensor([0, 0, 1])
    assert knn_accuracy(feats, labels, 2) == pytest.approx(100 / 3)


def test_knn_k_larger_than_the_set_never_votes_for_itself():
    """k=10 on 3 objects uses the 2 others only (the object itself never votes, not even 1e-6).
    p0 (0 deg, label 1) has p1, p2 (180 deg, labels 0 and 1) at cos -1: a tie of 1e-6 each, won by label 0
    -> wrong (a self vote would break the tie for label 1). p1 (label 0): p2 at cos 1 with label 1 -> wrong;
    p2 (label 1): p1 at cos 1 with label 0 -> wrong. 0 %."""
    feats, labels = _unit([0, 180, 180]), torch.tensor([1, 0, 1])
    assert knn_accuracy(feats, labels, 10) == 0.0
    # a clean split is 100 % for k=1 and for k clamped to N - 1 = 3: the same-label neighbour (cos 10 deg)
    # outweighs the two of the other label (cos 170 / 180 deg < 0: 1e-6 each)
    feats, labels = _unit([0, 10, 170, 180]), torch.tensor([0, 0, 1, 1])
    assert knn_accuracy(feats, labels, 1) == 100.0 and knn_accuracy(feats, labels, 10) == 100.0


def test_object_crops_context_on_each_side():
    """A 10 x 10 box with context 0.5 is cut as a centred square of side 10 * (1 + 2 * 0.5) = 20: at size 20
    the crop is the image window itself, the white box at rows/columns 5..14, zero padding where the window
    leaves the image."""
    image = np.zeros((30, 40, 3), np.uint8)
    image[4:14, 20:30] = 255  # box x=20, y=4, w=h=10, centre (25, 9): window x 15..35, y -1..19
    crops, labels = object_crops([image], [[{"bbox": [20, 4, 10, 10], "category_id": 1}]], 20, context=0.5)
    assert crops.shape == (1, 20, 20, 3) and labels.tolist() == [0]
    expected = np.zeros((20, 20, 3), np.uint8)
    expected[5:15, 5:15] = 255
    assert np.array_equal(crops[0], expected)


def test_simsiam_pairs_are_mirrored_copies_inside_the_image():
    """Without jitter (``jitter=0``, ``colour=0``) the two views of a pair are the same square region, each
    flipped left-right with p 0.5: view 2 equals view 1 or its horizontal mirror (never a vertical one). The
    region lies inside the image: on a wide 40 x 200 image whose pixels are all >= 50, no view shows the zero
    padding of a window leaving the image."""
    yy, xx = np.mgrid[0:40, 0:200]
    image = np.stack([50 + xx, 50 + 4 * yy, np.full_like(xx, 120)], axis=2).clip(0, 255).astype(np.uint8)
    v1, v2 = bp.simsiam_pairs(np.random.default_rng(0), [image], 16, 12, (0.3, 0.9), 0.0, 0.0)
    assert v1.shape == v2.shape == (16, 12, 12, 3) and v1.dtype == np.uint8
    assert v1.min() >= 45 and v2.min() >= 45
    mirrored = 0
    for a, b in zip(v1, v2):
        same, mirror = np.array_equal(a, b), np.array_equal(a, b[:, ::-1])
        assert same or mirror
        mirrored += mirror and not same
    assert 0 < mirrored < 16


class _Draws:
    """Stands in for the generator: ``uniform(lo, hi)`` returns the given factors in turn."""

    def __init__(self, *factors):
        self.factors = list(factors)

    def uniform(self, low, high):
        return self.factors.pop(0)


def test_photometric_jitter_written_out():
    """Brightness x f1, contrast about the crop's mean by f2, saturation about each pixel's channel mean by f3,
    in that order, then clipped and truncated to uint8. Two pixels (10, 20, 30) and (50, 60, 70), factors
    1.2, 0.5, 2: brightness (12, 24, 36), (60, 72, 84); mean 48, contrast (30, 36, 42), (54, 60, 66); grey 36
    and 60, saturation (24, 36, 48), (48, 60, 72)."""
    crop = np.array([[[10, 20, 30], [50, 60, 70]]], np.uint8)
    out = bp._photometric(_Draws(1.2, 0.5, 2.0), crop, 0.3)
    assert out.dtype == np.uint8
    assert out.tolist() == [[[24, 36, 48], [48, 60, 72]]]
    # values beyond 0..255 are clipped, not wrapped: (200, 100, 0) x 1.5 = (300, 150, 0) -> (255, 150, 0)
    out = bp._photometric(_Draws(1.5, 1.0, 1.0), np.array([[[200, 100, 0]]], np.uint8), 0.5)
    assert out.tolist() == [[[255, 150, 0]]]


class _Recorder(torch.nn.Module):
    """A "backbone" that returns its input as the feature and records it and its mode."""

    def __init__(self):
        super().__init__()
        self.inputs, self.modes = [], []

    def forward(self, x):
        self.inputs.append(x.clone())
        self.modes.append(self.training)
        return {"f": x}


def test_embed_normalises_pools_and_restores_the_mode():
    """``embed``: pixels [N, H, W, 3] -> [N, 3, H, W] as (pixel - mean) / std per channel, the network in eval
    mode (its training mode restored after), the global average of each channel, L2-normalised."""
    crops = np.zeros((2, 3, 4, 3), np.uint8)
    crops[0, :, :] = (10, 20, 30)
    crops[1, 1, 2] = (200, 0, 100)  # one pixel: row 1, column 2
    mean = torch.tensor([10.0, 20.0, 40.0]).view(1, 3, 1, 1)
    std = torch.tensor([2.0, 4.0, 5.0]).view(1, 3, 1, 1)
    net = _Recorder().train()
    out = bp.embed(net, "f", crops, mean, std)
    assert net.modes == [False] and net.training
    x = net.inputs[0]
    assert x.shape == (2, 3, 3, 4)
    assert x[1, :, 1, 2].tolist() == [(200 - 10) / 2, (0 - 20) / 4, (100 - 40) / 5]
    assert x[1, :, 0, 0].tolist() == [-5.0, -5.0, -8.0]
    pooled = torch.tensor([[0.0, 0.0, -2.0],  # crop 0: (10 - 10) / 2, (20 - 20) / 4, (30 - 40) / 5
                           [(95 - 5 * 11) / 12, (-5 - 5 * 11) / 12, (12 - 8 * 11) / 12]])
    assert torch.allclose(out, pooled / pooled.norm(dim=1, keepdim=True), atol=1e-6)


def test_simsiam_loss_symmetric_with_stop_gradient():
    """``-(cos(p1, sg(z2)) + cos(p2, sg(z1))) / 2``: the value, and the gradients equal those of the formula
    written with explicit ``detach`` (no gradient through the targets)."""
    torch.manual_seed(0)
    head = bp._SimSiamHead(6, 8, 4).train()
    f1, f2 = torch.randn(5, 6), torch.randn(5, 6)
    loss = head.loss(f1, f2)
    loss.backward()
    got = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    z1, z2 = head.projector(f1), head.projector(f2)
    p1, p2 = head.predictor(z1), head.predictor(z2)
    cos = torch.nn.functional.cosine_similarity
    ref = -(cos(p1, z2.detach()).mean() + cos(p2, z1.detach()).mean()) / 2
    ref.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), abs=1e-6)
    for g, p in zip(got, head.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)


def test_supervised_batches_pair_each_crop_with_its_label(tmp_path, monkeypatch):
    """Supervised training on a stand-in classification set of 12 crops, crop i with grey level 10 i in
    its left half (0 in the right) and label i % 3 (``colour_jitter=0`` keeps the levels): each batch holds
    ``batch_size`` distinct crops, each with its own label as the cross-entropy target over 3 classes, the
    batches differ between iterations, crops are flipped left-right at random, the backbone itself is trained
    (the checkpoint differs from the same seed's initialisation), the k-NN crops are cut at ``crop_size``, and
    the metrics record the loss of the first iteration, the mean of the last 10 and the number of k-NN
    objects."""
    from detectron2.config import LazyConfig, instantiate

    from siamese_detr.engine import apply_checked_overrides

    root = Path(__file__).resolve().parents[1]
    crops = np.zeros((12, 16, 16, 3), np.uint8)
    crops[:, :, :8] = np.arange(12, dtype=np.uint8)[:, None, None, None] * 10  # left half only
    labels = np.arange(12) % 3
    sizes = []
    monkeypatch.setattr(bp, "classification_set", lambda scenes, seed, size: (crops, labels))
    monkeypatch.setattr(bp, "val_objects", lambda size: sizes.append(size) or (crops[:5], labels[:5]))
    seen = []  # (grey levels of the batch, targets, number of logits)
    pooled = bp.pooled_features

    def recording_pooled(backbone, feature, x):
        if torch.is_grad_enabled():  # training steps, not the k-NN embedding
            rows = x[:, 0, 0] * 57.375 + 103.530  # the first row of channel 0, [batch, 16]
            seen.append([rows.max(dim=1).values, rows[:, 0] > rows[:, -1] + 1, rows[:, -1] > rows[:, 0] + 1])
        return pooled(backbone, feature, x)

    cross_entropy = torch.nn.functional.cross_entropy

    def recording_ce(logits, target):
        seen[-1] += [target.clone(), logits.shape[1]]
        return cross_entropy(logits, target)

    monkeypatch.setattr(bp, "pooled_features", recording_pooled)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", recording_ce)
    cfg = apply_checked_overrides(LazyConfig.load(str(root / "configs/demo/demo_backbone.py")), [
        f"train.output_dir={tmp_path}", "train.max_iter=12", "train.batch_size=4", "train.crop_size=16",
        "train.knn_k=2", "train.colour_jitter=0.0", "train.method=supervised"])
    losses = []
    metrics = bp.train_backbone(cfg, lambda it, total, loss: losses.append(loss))
    assert len(seen) == 12
    batches, orientations = [], set()
    for levels, left, right, target, classes in seen:
        orientations |= {"left" for i in range(4) if left[i]} | {"right" for i in range(4) if right[i]}
        index = torch.round(levels / 10).long()
        assert torch.allclose(levels, index.float() * 10, atol=1e-3)
        assert len(set(index.tolist())) == 4 and classes == 3
        assert target.tolist() == (index % 3).tolist()
        batches.append(tuple(sorted(index.tolist())))
    assert len(set(batches)) > 1 and orientations == {"left", "right"}  # flipped left-right with p 0.5
    assert sizes == [16]
    assert metrics["loss_first"] == losses[0] and metrics["loss_last"] == pytest.approx(np.mean(losses[2:]))
    assert metrics["knn_objects"] == 5 and metrics["labels_used"] is True
    torch.manual_seed(cfg.train.seed)
    init = instantiate(cfg.backbone).state_dict()
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert not torch.equal(final["backbone.stem.conv1.weight"], init["stem.conv1.weight"])
    assert not torch.equal(final["backbone.res4.1.conv2.weight"], init["res4.1.conv2.weight"])


def test_classification_set_draws_its_own_scenes_disjoint_from_the_detection_splits():
    """Scene i of the classification set is ``render_scene(default_rng(seed + i))``, each object cut with 20 %
    context and labelled by its category; the demo's seeds (``classification_seed`` onwards) lie after every
    detection split's seeds, ``seed + i`` for i below the split's default size."""
    from detectron2.config import LazyConfig

    from siamese_detr.data.datasets.builtin_shapes import DEFAULT_NUM_IMAGES, DEFAULT_SEEDS
    from siamese_detr.data.datasets.shapes_render import render_scene

    crops, labels = bp.classification_set(2, 123, 24)
    objects = [render_scene(np.random.default_rng(123 + i), 224, 224) for i in range(2)]
    assert labels.tolist() == [o["category"] for _, objs in objects for o in objs]
    assert crops.shape == (len(labels), 24, 24, 3)
    first_image, first_objects = objects[0]
    x, y, w, h = first_objects[0]["bbox"]
    side = max(w, h) * 1.4
    cx, cy = x + w / 2, y + h / 2
    ref = bp._cut(first_image, np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]), 24)
    assert np.array_equal(crops[0], ref)
    cfg = LazyConfig.load(str(Path(__file__).resolve().parents[1] / "configs/demo/demo_backbone.py"))
    seed = cfg.data.classification_seed
    for split, first in DEFAULT_SEEDS.items():
        assert first + DEFAULT_NUM_IMAGES[split] <= seed or first >= seed + cfg.data.classification_scenes


def test_read_images_reads_the_png_files_only_in_name_order(tmp_path):
    import cv2

    for name, level in (("b.png", 20), ("a.png", 10), ("c.png", 30)):
        cv2.imwrite(str(tmp_path / name), np.full((2, 3, 3), level, np.uint8))
    (tmp_path / "annotations.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("x")
    assert [int(im[0, 0, 0]) for im in bp._read_images(str(tmp_path))] == [10, 20, 30]
    assert [int(im[0, 0, 0]) for im in bp._read_images(str(tmp_path), 2)] == [10, 20]


def test_val_objects_group_annotations_by_image_id(tmp_path, monkeypatch):
    """Annotations are matched to images by ``image_id`` (not by their own ``id``), in the json's image order."""
    import cv2

    for name, level in (("x.png", 40), ("y.png", 200)):
        cv2.imwrite(str(tmp_path / name), np.full((20, 20, 3), level, np.uint8))
    coco = {"images": [{"id": 7, "file_name": "x.png"}, {"id": 3, "file_name": "y.png"}],
            "annotations": [{"id": 3, "image_id": 3, "bbox": [5, 5, 10, 10], "category_id": 2},
                            {"id": 7, "image_id": 7, "bbox": [5, 5, 10, 10], "category_id": 1},
                            {"id": 1, "image_id": 3, "bbox": [5, 5, 10, 10], "category_id": 3}]}
    (tmp_path / "val.json").write_text(__import__("json").dumps(coco))
    monkeypatch.setattr(bp, "ensure_synthetic_shapes", lambda split: (str(tmp_path), str(tmp_path / "val.json")))
    crops, labels = bp.val_objects(4)
    assert labels.tolist() == [0, 1, 2]
    assert crops[:, 2, 2, 0].tolist() == [40, 200, 200]


def test_simsiam_training_compares_the_two_views(tmp_path, monkeypatch):
    """SimSiam: the batch is view 1 then view 2 (stand-in views of grey 10 and 200), the loss compares the
    pooled features of the first half with those of the second, and the metrics say no label was used."""
    from detectron2.config import LazyConfig

    from siamese_detr.engine import apply_checked_overrides

    crops = np.zeros((4, 16, 16, 3), np.uint8)
    monkeypatch.setattr(bp, "val_objects", lambda size: (crops, np.array([0, 0, 1, 1])))
    monkeypatch.setattr(bp, "ensure_synthetic_shapes", lambda split: (str(tmp_path), None))
    monkeypatch.setattr(bp, "_read_images", lambda root, limit=None: [np.zeros((8, 8, 3), np.uint8)])
    monkeypatch.setattr(bp, "simsiam_pairs", lambda rng, images, batch, size, *a: (
        np.full((batch, size, size, 3), 10, np.uint8), np.full((batch, size, size, 3), 200, np.uint8)))
    pooled, loss = bp.pooled_features, bp._SimSiamHead.loss
    features, pairs = [], []
    monkeypatch.setattr(bp, "pooled_features", lambda *a: features.append((a[2], pooled(*a))) or features[-1][1])
    monkeypatch.setattr(bp._SimSiamHead, "loss", lambda self, f1, f2: pairs.append((f1, f2)) or loss(self, f1, f2))
    cfg = apply_checked_overrides(LazyConfig.load(str(Path(__file__).resolve().parents[1] /
                                                      "configs/demo/demo_backbone.py")), [
        f"train.output_dir={tmp_path}", "train.max_iter=1", "train.batch_size=3", "train.crop_size=16",
        "train.knn_k=2", "train.method=simsiam", "train.projection_dim=8", "train.predictor_dim=4"])
    metrics = bp.train_backbone(cfg)
    assert (metrics["method"], metrics["labels_used"]) == ("simsiam", False)
    [(f1, f2)] = pairs
    [(x, f)] = [(x, f) for x, f in features if len(x) == 6]
    levels = x[:, 0, 0, 0] * 57.375 + 103.530
    assert torch.allclose(levels, torch.tensor([10.0] * 3 + [200.0] * 3), atol=1e-3)
    assert torch.equal(f1, f[:3]) and torch.equal(f2, f[3:])


def test_narrow_resnet_layout_norm_and_freezing():
    """ResNet-34 layout (3, 4, 6, 3) basic blocks with ``width * 2**i`` channels and strides 4 / 8 / 16 / 32;
    ``norm`` applies to the stem as well; ``freeze_at=2`` freezes the stem and res2 only."""
    from detectron2.layers import FrozenBatchNorm2d

    from siamese_detr.demo import build_narrow_resnet

    net = build_narrow_resnet(depth=34, width=4, norm="BN", out_features=["res2", "res3", "res4", "res5"])
    assert [len(getattr(net, f"res{i}")) for i in range(2, 6)] == [3, 4, 6, 3]
    shapes = net.output_shape()
    assert [(shapes[f"res{i}"].channels, shapes[f"res{i}"].stride) for i in range(2, 6)] == [
        (4, 4), (8, 8), (16, 16), (32, 32)]
    assert isinstance(net.stem.conv1.norm, torch.nn.BatchNorm2d)
    frozen = build_narrow_resnet(depth=18, width=4, norm="FrozenBN", out_features=["res3"], freeze_at=2)
    assert isinstance(frozen.stem.conv1.norm, FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in frozen.stem.parameters())
    assert not any(p.requires_grad for p in frozen.res2.parameters())
    assert all(p.requires_grad for p in frozen.res3.parameters())


def _tool():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "train_demo_backbone.py"
    spec = importlib.util.spec_from_file_location("train_demo_backbone_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("key, value, ok", [
    ("batch_size", 0, False), ("batch_size", 1, True), ("crop_size", 0, False), ("crop_size", 1, True),
    ("max_iter", 0, True), ("max_iter", -1, False), ("knn_k", 0, False), ("knn_k", 2.0, False)])
def test_tool_check_config_least_values(key, value, ok):
    from omegaconf import OmegaConf

    train = {"method": "supervised", "max_iter": 1, "batch_size": 1, "crop_size": 1, "knn_k": 1, key: value}
    problem = _tool().check_config(OmegaConf.create({"train": train}))
    assert (problem is None) == ok
    if not ok:
        assert problem.startswith(f"train.{key} must be an integer") and repr(value) in problem


def test_tool_progress_file_holds_this_run_every_5th_and_the_last_iteration(tmp_path, monkeypatch):
    """progress.json: a line every 5th iteration and at the last, 0-based ``iteration``; a previous run's lines
    are dropped."""
    tool = _tool()
    out = tmp_path / "bb"
    out.mkdir()
    (out / "progress.json").write_text('{"iteration": 99, "total_loss": 9.0}\n')

    def fake_train(cfg, progress):
        for it in range(1, 8):
            progress(it, 7, 0.5 * it)
        return {}

    monkeypatch.setattr(tool, "train_backbone", fake_train)
    root = Path(__file__).resolve().parents[1]
    assert tool.main(["--config-file", str(root / "configs/demo/demo_backbone.py"),
                      f"train.output_dir={out}", "train.max_iter=7"]) == 0
    lines = [json.loads(line) for line in (out / "progress.json").read_text().splitlines()]
    assert lines == [{"iteration": 4, "total_loss": 2.5}, {"iteration": 6, "total_loss": 3.5}]


def test_simsiam_region_sides_are_log_uniform_and_inside_the_image(monkeypatch):
    """The region's side is ``min(h, w) * exp(U(log a, log b))`` for ``region_scale = (a, b)``: with (0.1, 0.9)
    on a 100 x 100 image half the sides lie under the geometric mean 30 px (a uniform side would put a
    quarter there), a third under 0.1 * 9^(1/3) = 20.8 px, and every side is in [10, 90]. With no jitter each
    region lies inside the image and both views of a pair are the region itself."""
    boxes = []

    def cut(image, box, size, flip=False):
        boxes.append(np.asarray(box, np.float64))
        return np.zeros((size, size, 3), np.uint8)

    monkeypatch.setattr(bp, "_cut", cut)
    bp.simsiam_pairs(np.random.default_rng(0), [np.zeros((100, 100, 3), np.uint8)], 3000, 4, (0.1, 0.9), 0.0, 0.0)
    b = np.stack(boxes)
    assert np.array_equal(b[0::2], b[1::2])
    side = b[0::2, 2] - b[0::2, 0]
    assert side.min() >= 10 - 1e-9 and side.max() <= 90 + 1e-9
    assert abs(np.mean(side < 30) - 0.5) < 0.05
    assert abs(np.mean(side < 10 * 9 ** (1 / 3)) - 1 / 3) < 0.05
    assert b.min() >= -1e-9 and b.max() <= 100 + 1e-9


def test_simsiam_views_get_their_own_colour_jitter():
    """Each view is colour-jittered by its own draw: on a flat two-colour image with no geometric jitter the
    two crops are the same pixels, so every difference between the views of a pair comes from the colour. With
    ``colour=0.3`` almost every pair differs; with ``colour=0`` none does."""
    image = np.zeros((60, 60, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 100, 150, 60
    rng = np.random.default_rng(0)
    v1, v2 = bp.simsiam_pairs(rng, [image], 50, 8, (0.5, 0.5), 0.0, 0.3)
    differs = (v1 != v2).any(axis=(1, 2, 3))
    assert differs.mean() > 0.9
    assert len(np.unique(v1[:, 0, 0, 1])) > 10  # the first view is jittered too, pair by pair
    v1, v2 = bp.simsiam_pairs(rng, [image], 50, 8, (0.5, 0.5), 0.0, 0.0)
    assert np.array_equal(v1, v2) and (v1[:, 4, 4] == [100, 150, 60]).all()


def test_backbone_training_is_seeded_by_its_config_and_trains_the_head_too(tmp_path, monkeypatch):
    """``train.seed`` alone fixes the run: two runs started from different global torch RNG states write the
    same checkpoint. The optimiser steps the task's head (here the linear classifier) with the backbone: every
    parameter of the head is in it, and the head's weights move."""
    from detectron2.config import LazyConfig

    from siamese_detr.engine import apply_checked_overrides

    crops = np.zeros((12, 16, 16, 3), np.uint8)
    crops[:, :, :8] = np.arange(12, dtype=np.uint8)[:, None, None, None] * 10
    labels = np.arange(12) % 3
    monkeypatch.setattr(bp, "classification_set", lambda scenes, seed, size: (crops, labels))
    monkeypatch.setattr(bp, "val_objects", lambda size: (crops[:5], labels[:5]))
    tasks, optimised = [], []

    class RecordingTask(bp._SupervisedTask):
        def __init__(self, cfg, channels):
            super().__init__(cfg, channels)
            self.initial_head = [p.detach().clone() for p in self.head.parameters()]
            tasks.append(self)

    class RecordingSGD(torch.optim.SGD):
        def __init__(self, params, **kw):
            params = list(params)
            optimised.append({id(p) for p in params})
            super().__init__(params, **kw)

    monkeypatch.setitem(bp._TASKS, "supervised", RecordingTask)
    monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
    root = Path(__file__).resolve().parents[1]
    finals = []
    for global_seed, out in ((123, tmp_path / "a"), (456, tmp_path / "b")):
        cfg = apply_checked_overrides(LazyConfig.load(str(root / "configs/demo/demo_backbone.py")), [
            f"train.output_dir={out}", "train.max_iter=2", "train.batch_size=4", "train.crop_size=16",
            "train.knn_k=2", "train.method=supervised"])
        torch.manual_seed(global_seed)
        bp.train_backbone(cfg)
        finals.append(torch.load(out / "model_final.pth", weights_only=True)["model"])
    assert finals[0].keys() == finals[1].keys()
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
    head = tasks[0].head
    assert {id(p) for p in head.parameters()} <= optimised[0]
    assert not torch.equal(head.weight.detach(), tasks[0].initial_head[0])
