"""Trains the demo's backbone on the built-in world, once, and measures its features by k-NN.

Two methods (``cfg.train.method``):

* ``"simsiam"`` (label-free): SimSiam (Chen & He 2021: symmetric negative cosine,
  stop-gradient, projector + predictor) on pairs of views of object-sized regions cut at random from the
  UNLABELLED training images (only the PNG files of the ``cfg.data.image_split`` split's image folder are
  trained on; the split's json is read only to check that its images are complete, its annotations unused).
  The two views of a pair are independent jitters (scale, shift, flip, brightness / contrast / saturation) of
  the same random region.
* ``"supervised"``: cross-entropy on a separate built-in classification set: objects cut (with context)
  from scenes rendered by the same generator with seeds ``cfg.data.classification_seed + i``, disjoint
  from every detection split. The demo's choice (configs/demo/demo_backbone.py says why).

Evaluation (labels used only here): leave-one-out cosine k-NN accuracy on the objects of
``synthetic_shapes_val`` (each object cut with 20% context, resized to ``crop_size``), for the trained
backbone and for the same network at its random initialisation.

The checkpoint ``model_final.pth`` holds ``{"model": {"backbone.<detectron2 ResNet name>": tensor},
"__author__": "siamese_detr.demo.backbone_pretrain"}`` (e.g. ``backbone.res2.0.conv1.norm.running_mean``; no
``num_batches_tracked``), the names of ``DETR.backbone``, so ``train.init_checkpoint`` loads it into the demo
detector (batch-norm statistics become FrozenBN buffers). Beside it in ``cfg.train.output_dir``:
``metrics.json`` (one JSON object, see :func:`train_backbone`) and ``loss.json`` (the list of every
iteration's loss).
"""
import json
import logging
import math
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from detectron2.config import instantiate
from torch import nn
from torch.nn import functional as F

from ..data.datasets.builtin_shapes import ensure_synthetic_shapes
from ..data.datasets.shapes_render import render_scene
from ..engine.checkpointing import atomic_torch_save
from ..utils.user_errors import UserValueError

__all__ = ["knn_accuracy", "object_crops", "train_backbone"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- data
def _read_images(image_root: str, limit: Optional[int] = None) -> List[np.ndarray]:
    names = sorted(n for n in os.listdir(image_root) if n.endswith(".png"))[:limit]
    return [cv2.imread(os.path.join(image_root, n), cv2.IMREAD_COLOR) for n in names]


def _cut(image: np.ndarray, box: np.ndarray, size: int, flip: bool = False) -> np.ndarray:
    """Crop ``box`` (xyxy float, may leave the image: zero padding) and resize to ``size`` x ``size``."""
    x0, y0, x1, y1 = box
    scale_x, scale_y = size / max(x1 - x0, 1e-3), size / max(y1 - y0, 1e-3)
    matrix = np.array([[scale_x, 0, -x0 * scale_x], [0, scale_y, -y0 * scale_y]], np.float32)
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return crop[:, ::-1] if flip else crop


def _photometric(rng: np.random.Generator, crop: np.ndarray, strength: float) -> np.ndarray:
    """Brightness / contrast / saturation jitter by factors in ``1 +- strength`` (BGR uint8)."""
    img = crop.astype(np.float32)
    img = img * rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - strength, 1 + strength) + mean  # contrast
    grey = img.mean(axis=2, keepdims=True)
    img = (img - grey) * rng.uniform(1 - strength, 1 + strength) + grey  # saturation
    return np.clip(img, 0, 255).astype(np.uint8)


def simsiam_pairs(rng: np.random.Generator, images: List[np.ndarray], batch: int, size: int,
                  region_scale: Tuple[float, float], jitter: float, colour: float) -> Tuple[np.ndarray, np.ndarray]:
    """Two uint8 ``[batch, size, size, 3]`` views (channel order of ``images``: BGR as ``cv2`` reads them):
    random square regions (side a log-uniform fraction in ``region_scale`` of the image's short side,
    centred so that the region lies inside the image), each view independently shifted by up to ``jitter``
    of the side, its side scaled by ``exp(+-jitter)``, flipped with p 0.5 and colour-jittered by factors in
    ``1 +- colour``; the square crop is resized to ``size`` x ``size`` (zero padding outside the image)."""
    views = ([], [])
    for _ in range(batch):
        image = images[int(rng.integers(len(images)))]
        h, w = image.shape[:2]
        side = min(h, w) * math.exp(rng.uniform(*np.log(region_scale)))
        cx, cy = rng.uniform(side / 2, w - side / 2), rng.uniform(side / 2, h - side / 2)
        for v in range(2):
            s = side * math.exp(rng.uniform(-jitter, jitter))
            x = cx + rng.uniform(-jitter, jitter) * side
            y = cy + rng.uniform(-jitter, jitter) * side
            box = np.array([x - s / 2, y - s / 2, x + s / 2, y + s / 2])
            crop = _cut(image, box, size, flip=bool(rng.random() < 0.5))
            views[v].append(_photometric(rng, crop, colour))
    return np.stack(views[0]), np.stack(views[1])


def object_crops(images: List[np.ndarray], annotations: List[List[dict]], size: int,
                 context: float = 0.2) -> Tuple[np.ndarray, np.ndarray]:
    """Every annotated object cut with ``context`` margin on each side: uint8 ``[N, size, size, 3]`` (a
    square of side ``max(w, h) * (1 + 2 * context)`` around the box centre, zero padding outside the image,
    channels as ``images``) and int64 labels ``[N]`` (``category_id - 1``). ``annotations[i]``: COCO dicts
    of ``images[i]`` (``bbox`` xywh absolute pixels)."""
    crops, labels = [], []
    for image, anns in zip(images, annotations):
        for ann in anns:
            x, y, w, h = ann["bbox"]
            side = max(w, h) * (1 + 2 * context)
            cx, cy = x + w / 2, y + h / 2
            crops.append(_cut(image, np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]), size))
            labels.append(int(ann["category_id"]) - 1)
    return np.stack(crops), np.asarray(labels, np.int64)


def classification_set(num_scenes: int, seed: int, size: int, height: int = 224,
                       width: int = 224) -> Tuple[np.ndarray, np.ndarray]:
    """The built-in classification set: objects of ``num_scenes`` scenes of ``height`` x ``width`` pixels
    rendered with seeds ``seed + i`` (disjoint from the detection splits for ``seed >= 5e6``), as
    :func:`object_crops` returns them (BGR uint8 ``[N, size, size, 3]``, labels ``[N]``, 20% context)."""
    images, anns = [], []
    for i in range(num_scenes):
        image, objects = render_scene(np.random.default_rng(seed + i), height, width)
        images.append(image)
        anns.append([{"bbox": o["bbox"], "category_id": o["category"] + 1} for o in objects])
    return object_crops(images, anns, size)


def val_objects(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Objects of ``synthetic_shapes_val`` (for the k-NN evaluation only; the split is generated under
    ``$DETECTRON2_DATASETS`` if missing), as :func:`object_crops` returns them (20% context)."""
    image_root, json_file = ensure_synthetic_shapes("val")
    with open(json_file) as f:
        coco = json.load(f)
    per_image: Dict[int, List[dict]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]].append(ann)
    images = [cv2.imread(os.path.join(image_root, im["file_name"]), cv2.IMREAD_COLOR) for im in coco["images"]]
    return object_crops(images, [per_image[im["id"]] for im in coco["images"]], size)


# ------------------------------------------------------------------------------------------------ model
def _to_tensor(batch: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 BGR ``[N, H, W, 3]`` -> normalised float ``[N, 3, H, W]``."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
    return (x - mean) / std


def pooled_features(backbone: nn.Module, feature: str, x: torch.Tensor) -> torch.Tensor:
    """Global average of ``backbone(x)[feature]``: ``[N, C]``."""
    return backbone(x)[feature].mean(dim=(2, 3))


class _SimSiamHead(nn.Module):
    """Projector (2 x Linear+BN, ReLU between) and bottleneck predictor, as SimSiam at a small width."""

    def __init__(self, channels: int, dim: int, hidden: int):
        super().__init__()
        self.projector = nn.Sequential(
            nn.Linear(channels, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False),
        )
        self.predictor = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )

    def loss(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        z1, z2 = self.projector(f1), self.projector(f2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return -(F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean()) / 2


@torch.no_grad()
def embed(backbone: nn.Module, feature: str, crops: np.ndarray, mean, std, batch: int = 256) -> torch.Tensor:
    """L2-normalised pooled features of uint8 crops, ``[N, C]`` (backbone in eval mode)."""
    was_training = backbone.training
    backbone.eval()
    out = torch.cat([pooled_features(backbone, feature, _to_tensor(crops[i:i + batch], mean, std))
                     for i in range(0, len(crops), batch)])
    backbone.train(was_training)
    return F.normalize(out, dim=1)


def knn_accuracy(features: torch.Tensor, labels: torch.Tensor, k: int = 10) -> float:
    """Leave-one-out k-NN accuracy (cosine similarity, majority vote weighted by similarity) in percent
    (0-100).

    Args:
        features: ``[N, C]`` L2-normalised; labels: ``[N]`` long.
        k: neighbours per object (at most ``N - 1`` are used).
    """
    sim = features @ features.t()
    sim.fill_diagonal_(-float("inf"))
    k = min(k, len(labels) - 1)
    top_sim, top_idx = sim.topk(k, dim=1)
    votes = torch.zeros(len(labels), int(labels.max()) + 1)
    votes.scatter_add_(1, labels[top_idx], top_sim.clamp_min(0) + 1e-6)
    return float((votes.argmax(1) == labels).float().mean() * 100)


# --------------------------------------------------------------------------------------------- training
class _SimSiamTask:
    """Label-free: SimSiam on two views of the same object-sized region of an unlabelled ``data.image_split``
    image (its PNGs only; the split's json is read to check them, its annotations never used)."""

    def __init__(self, cfg, channels: int) -> None:
        t = cfg.train
        image_root, _ = ensure_synthetic_shapes(cfg.data.image_split)
        self.images = _read_images(image_root, cfg.data.get("max_images"))
        self.head = _SimSiamHead(channels, t.projection_dim, t.predictor_dim)

    def loss(self, t, rng: np.random.Generator, features: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
        v1, v2 = simsiam_pairs(rng, self.images, t.batch_size, t.crop_size, tuple(t.region_scale), t.view_jitter,
                               t.colour_jitter)
        f = features(np.concatenate([v1, v2]))
        return self.head.loss(f[: t.batch_size], f[t.batch_size:])


class _SupervisedTask:
    """Cross-entropy on the objects of a separate built-in classification set (``data.classification_scenes``
    scenes from ``data.classification_seed``, disjoint from every detection split); random flips and colour."""

    def __init__(self, cfg, channels: int) -> None:
        t = cfg.train
        self.crops, labels = classification_set(cfg.data.classification_scenes, cfg.data.classification_seed,
                                                t.crop_size)
        self.labels = torch.from_numpy(labels)
        self.head = nn.Linear(channels, int(self.labels.max()) + 1)

    def loss(self, t, rng: np.random.Generator, features: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
        idx = rng.choice(len(self.labels), size=t.batch_size, replace=False)
        batch = np.stack([c[:, ::-1] if rng.random() < 0.5 else c for c in self.crops[idx]])
        batch = np.stack([_photometric(rng, c, t.colour_jitter) for c in batch])
        return F.cross_entropy(self.head(features(batch)), self.labels[idx])


_TASKS = {"simsiam": _SimSiamTask, "supervised": _SupervisedTask}


def train_backbone(cfg, progress: Optional[Callable[[int, int, float], None]] = None) -> Dict:
    """Train ``cfg.backbone`` by ``cfg.train.method``; write ``model_final.pth``, ``metrics.json`` and
    ``loss.json`` to ``cfg.train.output_dir`` (module doc); return the metrics written to ``metrics.json``:
    ``{"method", "labels_used", "knn_accuracy", "knn_accuracy_random_init"`` (k-NN accuracies in percent,
    0-100), ``"knn_k", "knn_objects", "iterations", "seconds"`` (wall-clock seconds from the start of the
    call to the end of training: the val crops, the random-init k-NN and the training data included, the
    final k-NN and the writing not), ``"loss_first"`` (the first iteration's loss), ``"loss_last"`` (the
    mean of the last 10 iterations' losses)``}``.

    ``progress(iteration, max_iter, loss)`` is called after every iteration (``iteration`` 1-based).
    Raises ``UserValueError`` for a ``train.method`` other than "simsiam" / "supervised".
    """
    t = cfg.train
    torch.manual_seed(t.seed)
    rng = np.random.default_rng(t.seed)
    os.makedirs(t.output_dir, exist_ok=True)
    backbone = instantiate(cfg.backbone)
    feature = cfg.backbone.out_features[-1]
    channels = backbone.output_shape()[feature].channels
    mean = torch.tensor(cfg.data.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data.pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
    start = time.time()

    knn_crops, knn_labels = val_objects(t.crop_size)
    knn_labels = torch.from_numpy(knn_labels)
    knn_random = knn_accuracy(embed(backbone, feature, knn_crops, mean, std), knn_labels, t.knn_k)

    if t.method not in _TASKS:
        raise UserValueError(f"train.method must be 'simsiam' or 'supervised', got {t.method!r}")
    task = _TASKS[t.method](cfg, channels)
    params = list(backbone.parameters()) + list(task.head.parameters())
    optimizer = torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    backbone.train()
    task.head.train()
    history = []
    for it in range(t.max_iter):
        for group in optimizer.param_groups:  # cosine decay
            group["lr"] = t.lr * 0.5 * (1 + math.cos(math.pi * it / t.max_iter))
        loss = task.loss(t, rng, lambda batch: pooled_features(backbone, feature, _to_tensor(batch, mean, std)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        history.append(value)
        if progress is not None:
            progress(it + 1, t.max_iter, value)
    train_seconds = time.time() - start

    knn_trained = knn_accuracy(embed(backbone, feature, knn_crops, mean, std), knn_labels, t.knn_k)
    state = {f"backbone.{k}": v.detach().clone() for k, v in backbone.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    atomic_torch_save({"model": state, "__author__": "siamese_detr.demo.backbone_pretrain"},
                      os.path.join(t.output_dir, "model_final.pth"))
    metrics = {
        "method": t.method,
        "labels_used": t.method == "supervised",
        "knn_accuracy": knn_trained,
        "knn_accuracy_random_init": knn_random,
        "knn_k": t.knn_k,
        "knn_objects": int(len(knn_labels)),
        "iterations": t.max_iter,
        "seconds": train_seconds,
        "loss_first": history[0] if history else None,
        "loss_last": float(np.mean(history[-10:])) if history else None,
    }
    with open(os.path.join(t.output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    with open(os.path.join(t.output_dir, "loss.json"), "w") as f:
        json.dump(history, f)
    logger.info("backbone (%s): k-NN %.1f%% (random init %.1f%%) in %.0fs", t.method, knn_trained, knn_random,
                train_seconds)
    return metrics
