"""The demo's backbone stage: k-NN metric, a checkpoint the detector loads, and the cache that is reused
by a second run and invalidated when the stage's config changes (issue 10)."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from siamese_detr.demo import build_narrow_resnet
from siamese_detr.demo.backbone_pretrain import knn_accuracy, object_crops
from siamese_detr.demo.runner import StepRunner

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/demo/demo_backbone.py"
TINY = ["train.max_iter=2", "train.batch_size=4", "train.crop_size=16", "data.classification_scenes=2", "train.knn_k=2"]


def test_knn_accuracy_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(30, 5, generator=g), dim=1)
    labels = torch.randint(0, 3, (30,), generator=g)
    k = 4
    correct = 0
    for i in range(30):
        sims = [(float(feats[i] @ feats[j]), j) for j in range(30) if j != i]
        top = sorted(sims, reverse=True)[:k]
        votes = np.zeros(3)
        for s, j in top:
            votes[int(labels[j])] += max(s, 0) + 1e-6
        correct += int(votes.argmax() == int(labels[i]))
    assert knn_accuracy(feats, labels, k) == pytest.approx(100 * correct / 30)


def test_object_crops_and_narrow_resnet():
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:20, 30:50] = 255
    crops, labels = object_crops([image], [[{"bbox": [30, 10, 20, 10], "category_id": 3}]], 8, context=0.0)
    assert crops.shape == (1, 8, 8, 3) and labels.tolist() == [2]
    assert crops[0, 3:5, :].min() == 255 and crops[0, 0].max() == 0  # square crop centred on the box
    net = build_narrow_resnet(depth=18, width=8, out_features=["res4"])
    out = net(torch.zeros(1, 3, 64, 64))
    assert set(out) == {"res4"} and out["res4"].shape == (1, 32, 4, 4)
    assert not hasattr(net, "res5")


def _run(runner, out, extra=()):
    over = [f"train.output_dir={out}"] + TINY + list(extra)
    return runner.step("backbone", out, [sys.executable, "tools/train_demo_backbone.py", "--config-file", CONFIG]
                       + over, CONFIG, over, {}, 2)


def test_backbone_cache_reused_and_invalidated(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("SYNTHETIC_SHAPES_NUM_IMAGES", "train_large=4,val=2,train=4")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runner = StepRunner(ROOT, tmp_path)
    out = tmp_path / "backbone"
    _run(runner, out)
    ckpt = out / "model_final.pth"
    state = torch.load(ckpt, weights_only=True)["model"]
    assert state and all(k.startswith("backbone.") for k in state)
    assert "backbone.stem.conv1.norm.running_mean" in state  # BN statistics become FrozenBN buffers
    stamp = os.stat(ckpt).st_mtime_ns
    _run(runner, out)
    assert runner.reused == {"backbone"} and os.stat(ckpt).st_mtime_ns == stamp  # reused, not retrained
    _run(runner, out, ["train.lr=0.01"])  # the config changed: trained again
    assert os.stat(ckpt).st_mtime_ns != stamp
    # and the checkpoint loads into the demo detector's (frozen) backbone
    from detectron2.checkpoint import DetectionCheckpointer

    net = torch.nn.Module()
    net.backbone = build_narrow_resnet(depth=18, width=32, norm="FrozenBN", out_features=["res4"])
    DetectionCheckpointer(net).load(str(ckpt))
    saved = torch.load(ckpt, weights_only=True)["model"]
    loaded = net.state_dict()
    assert set(loaded) == set(saved)  # every tensor of the file has a place, and every place a tensor
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key


def test_train_backbone_metrics_and_cosine_lr(tmp_path, monkeypatch):
    """metrics.json names each k-NN accuracy by its network: the random initialisation's is measured first
    (before any step), the trained one's after the last; the learning rate decays as
    ``lr * 0.5 * (1 + cos(pi * it / max_iter))``, no warmup: 0.05, 0.0375, 0.0125 over 3 iterations."""
    import json
    import math

    from detectron2.config import LazyConfig

    from siamese_detr.demo import backbone_pretrain
    from siamese_detr.engine import apply_checked_overrides

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("SYNTHETIC_SHAPES_NUM_IMAGES", "train_large=4,val=2,train=4")
    accuracies = iter([11.0, 22.0])  # in call order
    monkeypatch.setattr(backbone_pretrain, "knn_accuracy", lambda features, labels, k: next(accuracies))
    lrs = []

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            lrs.append([group["lr"] for group in self.param_groups])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
    out = tmp_path / "backbone"
    cfg = apply_checked_overrides(LazyConfig.load(str(ROOT / CONFIG)),
                                  [f"train.output_dir={out}", "train.lr=0.05"] + TINY + ["train.max_iter=3"])
    steps = []
    metrics = backbone_pretrain.train_backbone(cfg, lambda it, total, loss: steps.append((it, total)))
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert lrs == [[pytest.approx(0.05)], [pytest.approx(0.0375)], [pytest.approx(0.0125)]]
    assert [group[0] for group in lrs] == pytest.approx([0.05 * 0.5 * (1 + math.cos(math.pi * it / 3))
                                                         for it in range(3)])
    assert (metrics["knn_accuracy"], metrics["knn_accuracy_random_init"]) == (22.0, 11.0)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (metrics["method"], metrics["labels_used"], metrics["iterations"]) == ("supervised", True, 3)
