"""Unsupervised object-proposal methods: EdgeBoxes, Selective Search and random boxes.

Every method takes one image (``np.ndarray`` HxWx3 uint8, **BGR**, as OpenCV and Detectron2's default
``image_format`` use) and returns ``(boxes, scores)``:

* ``boxes``: float32 ``[K, 4]`` **xyxy in absolute pixels of the given image** (x1 <= x2 <= W, y1 <= y2 <= H),
* ``scores``: float32 ``[K]``, non-increasing; row order = the method's ranking (best first).

EdgeBoxes (Zitnick & Dollar, ECCV 2014) is what Siamese DETR uses (paper §3.2, "offline object proposals ...
using unsupervised EdgeBoxes"); Selective Search fast mode is DETReg's source (DETReg §3, §6). Both come
from ``cv2.ximgproc`` (opencv-contrib).
"""

from __future__ import annotations

import hashlib
import os
from typing import Optional, Tuple

import cv2
import numpy as np

__all__ = [
    "METHODS",
    "DEFAULT_MAX_BOXES",
    "compute_proposals",
    "edgeboxes",
    "selective_search",
    "random_boxes",
    "gradient_edge_map",
    "structured_edge_map",
    "stable_seed",
]

METHODS = ("edgeboxes", "selective_search", "random")
# 512 EdgeBoxes per image as the official Siamese DETR code; Selective Search keeps all its boxes
# unless asked (fast mode gives ~1-3k per image); random: a round number.
DEFAULT_MAX_BOXES = {"edgeboxes": 512, "selective_search": None, "random": 512}


def stable_seed(image_id, seed: int = 0) -> int:
    """A 63-bit seed from ``(str(image_id), seed)``, identical in every process and Python run.

    Python's ``hash()`` of a str is salted per process (PYTHONHASHSEED), so it must not be used for
    per-image seeds that have to agree across the workers and machines of a sharded run.
    """
    digest = hashlib.blake2b(f"{seed}:{image_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# --------------------------------------------------------------------------------------------- edges
def _edge_nms(magnitude: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """Thin an edge-magnitude map: keep a pixel only where it is a maximum across the edge.

    ``orientation`` is the gradient (edge-normal) direction in [0, pi), quantised to 4 directions; a pixel
    survives when its magnitude is >= both neighbours along that direction (Canny-style NMS). This plays the
    role of ``StructuredEdgeDetection.edgesNms``, which opencv only exposes on a loaded SED model.
    """
    h, w = magnitude.shape
    padded = np.pad(magnitude, 1)
    direction = np.round(orientation / (np.pi / 4)).astype(np.int64) % 4
    keep = np.zeros((h, w), dtype=bool)
    # (dy, dx) of the neighbour along the gradient for directions 0, 45, 90 and 135 degrees
    for k, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        ahead = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        behind = padded[1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        keep |= (direction == k) & (magnitude >= ahead) & (magnitude >= behind)
    return np.where(keep, magnitude, 0.0).astype(np.float32)


def gradient_edge_map(
    image_bgr: np.ndarray, sigma: float = 1.0, nms: bool = True
) -> Tuple[np.ndarray, np.ndarray]:
    """Edge map from image gradients, used by EdgeBoxes when no SED model file is given.

    gray = GaussianBlur(gray(image) / 255, sigma); (gx, gy) = Scharr(gray);
    edges = |(gx, gy)| / max |(gx, gy)| in [0, 1]; orientation = atan2(gy, gx) mod pi (the edge normal, the
    convention of ``StructuredEdgeDetection.computeOrientation``); optionally thinned by :func:`_edge_nms`.

    Returns:
        edges float32 [H, W] in [0, 1], orientation float32 [H, W] in [0, pi).
    """
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    if sigma > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), sigma)
    gx = cv2.Scharr(gray, cv2.CV_32F, 1, 0)
    gy = cv2.Scharr(gray, cv2.CV_32F, 0, 1)
    magnitude = cv2.magnitude(gx, gy)
    peak = float(magnitude.max())
    magnitude = magnitude / peak if peak > 0 else magnitude
    orientation = np.mod(np.arctan2(gy, gx), np.pi).astype(np.float32)
    if nms:
        magnitude = _edge_nms(magnitude, orientation)
    return magnitude.astype(np.float32), orientation


_SED_CACHE: dict = {}


def _load_sed_model(path: str):
    if path not in _SED_CACHE:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Structured Edge Detection model {path!r} does not exist. Download opencv_extra's "
                "'model.yml.gz' (testdata/cv/ximgproc/model.yml.gz) and pass its path with --sed-model, "
                "or leave --sed-model out to use the gradient edge map."
            )
        try:
            _SED_CACHE[path] = cv2.ximgproc.createStructuredEdgeDetection(path)
        except cv2.error as e:
            raise ValueError(
                f"Structured Edge Detection model {path!r} could not be read by OpenCV (corrupt or not a "
                f"'model.yml.gz' random-forest file): {str(e).strip().splitlines()[-1]}. Re-download it or "
                "leave --sed-model out to use the gradient edge map."
            ) from e
    return _SED_CACHE[path]


def structured_edge_map(image_bgr: np.ndarray, model_path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Structured-forest edges as the official code: detectEdges(RGB / 255) -> computeOrientation -> edgesNms.

    Returns:
        edges float32 [H, W], orientation float32 [H, W].
    """
    sed = _load_sed_model(model_path)
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    edges = sed.detectEdges(rgb)
    orientation = sed.computeOrientation(edges)
    edges = sed.edgesNms(edges, orientation)
    return edges, orientation


# ------------------------------------------------------------------------------------------ methods
def _xywh_to_xyxy_clipped(boxes_xywh: np.ndarray, height: int, width: int) -> np.ndarray:
    boxes = np.asarray(boxes_xywh, dtype=np.float32).reshape(-1, 4)
    xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, width)
    xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, height)
    return xyxy


def edgeboxes(
    image_bgr: np.ndarray,
    max_boxes: Optional[int] = 512,
    alpha: float = 0.65,
    beta: float = 0.75,
    min_score: float = 0.01,
    sed_model: Optional[str] = None,
    edge_sigma: float = 2.0,
) -> Tuple[np.ndarray, np.ndarray]:
    """EdgeBoxes proposals (``cv2.ximgproc.createEdgeBoxes``), best score first.

    Args:
        alpha, beta, min_score: EdgeBoxes step size, NMS threshold and score floor (OpenCV defaults).
        sed_model: path of a Structured Edge Detection ``model.yml.gz``; None = :func:`gradient_edge_map`.
        edge_sigma: smoothing of the gradient edge map (ignored with ``sed_model``).

    Returns:
        boxes float32 [K, 4] xyxy absolute, scores float32 [K] non-increasing (EdgeBoxes box scores), K <= max_boxes.
    """
    height, width = image_bgr.shape[:2]
    if sed_model:
        edges, orientation = structured_edge_map(image_bgr, sed_model)
    else:
        edges, orientation = gradient_edge_map(image_bgr, sigma=edge_sigma)
    detector = cv2.ximgproc.createEdgeBoxes(
        alpha=alpha, beta=beta, minScore=min_score, maxBoxes=int(max_boxes) if max_boxes else 10000
    )
    boxes, scores = detector.getBoundingBoxes(edges, orientation)
    if boxes is None or len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")  # already sorted by OpenCV; make it a guarantee
    return _xywh_to_xyxy_clipped(boxes, height, width)[order], scores[order]


def selective_search(
    image_bgr: np.ndarray,
    max_boxes: Optional[int] = None,
    resize: Optional[int] = None,
    mode: str = "fast",
) -> Tuple[np.ndarray, np.ndarray]:
    """Selective Search (``cv2.ximgproc.segmentation``), boxes in OpenCV's output order.

    Args:
        resize: if given, run on a copy whose **short side** is ``resize`` px (DETReg runs on small images,
            e.g. 128) and scale the boxes back to the input size; None = full resolution.
        mode: "fast" (``switchToSelectiveSearchFast``, DETReg's choice) or "quality".

    Returns:
        boxes float32 [K, 4] xyxy absolute in the *input* image; scores float32 [K] = (K - rank) / K, i.e. the
        descending rank (Selective Search has no score; earlier-grouped regions rank higher, DETReg §4).
    """
    height, width = image_bgr.shape[:2]
    work = image_bgr
    scale = 1.0
    if resize and min(height, width) != resize:
        scale = resize / float(min(height, width))
        new_size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
        work = cv2.resize(
            image_bgr, new_size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        )
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(work))
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    elif mode == "quality":
        search.switchToSelectiveSearchQuality()
    else:
        raise ValueError(f"selective_search mode must be 'fast' or 'quality', got {mode!r}")
    rects = search.process()
    if rects is None or len(rects) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    if max_boxes:
        rects = rects[: int(max_boxes)]
    if scale != 1.0:
        # scale x by the exact width ratio and y by the exact height ratio of the resized copy
        sx, sy = width / work.shape[1], height / work.shape[0]
        rects = rects * np.array([sx, sy, sx, sy], dtype=np.float32)
    k = len(rects)
    scores = (k - np.arange(k, dtype=np.float32)) / np.float32(k)
    return _xywh_to_xyxy_clipped(rects, height, width), scores.astype(np.float32)


def random_boxes(
    height: int, width: int, num_boxes: int = 512, seed: int = 0, min_size: int = 8
) -> Tuple[np.ndarray, np.ndarray]:
    """Uniformly random boxes with UP-DETR-like sizes (UP-DETR §3.1 random query patches).

    width ~ U{min(min_size, W) .. W}, height ~ U{min(min_size, H) .. H}, then the top-left corner is uniform over
    the positions that keep the box inside the image. ``seed`` fully determines the result
    (use :func:`stable_seed` to derive it from an image id).

    Returns:
        boxes float32 [num_boxes, 4] xyxy absolute; scores float32 = (K - rank) / K (no meaning but the order).
    """
    rng = np.random.default_rng(seed)
    k = int(num_boxes)
    bw = rng.integers(min(min_size, width), width, size=k, endpoint=True).astype(np.float32)
    bh = rng.integers(min(min_size, height), height, size=k, endpoint=True).astype(np.float32)
    x1 = np.floor(rng.random(k) * (width - bw + 1)).astype(np.float32)
    y1 = np.floor(rng.random(k) * (height - bh + 1)).astype(np.float32)
    boxes = np.stack([x1, y1, np.minimum(x1 + bw, width), np.minimum(y1 + bh, height)], axis=1)
    scores = (k - np.arange(k, dtype=np.float32)) / np.float32(max(k, 1))
    return boxes.astype(np.float32), scores.astype(np.float32)


def compute_proposals(
    image_bgr: np.ndarray, method: str, max_boxes: Optional[int] = None, seed: int = 0, image_id=None, **kw
) -> Tuple[np.ndarray, np.ndarray]:
    """Run one proposal method on one BGR uint8 image [H, W, 3].

    Args:
        method: "edgeboxes", "selective_search" or "random".
        max_boxes: keep at most this many (None = the method's default in :data:`DEFAULT_MAX_BOXES`).
        seed, image_id: random boxes use ``stable_seed(image_id, seed)`` when ``image_id`` is given, else ``seed``.
        **kw: passed to :func:`edgeboxes` / :func:`selective_search` / :func:`random_boxes`.

    Returns:
        boxes float32 [K, 4] xyxy absolute pixels of ``image_bgr``, scores float32 [K] best first.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"compute_proposals expects an HxWx3 image, got shape {image_bgr.shape}")
    image_bgr = np.ascontiguousarray(image_bgr, dtype=np.uint8)
    if max_boxes is None:
        max_boxes = DEFAULT_MAX_BOXES.get(method)
    if method == "edgeboxes":
        return edgeboxes(image_bgr, max_boxes=max_boxes, **kw)
    if method == "selective_search":
        return selective_search(image_bgr, max_boxes=max_boxes, **kw)
    if method == "random":
        s = stable_seed(image_id, seed) if image_id is not None else seed
        return random_boxes(image_bgr.shape[0], image_bgr.shape[1], num_boxes=max_boxes or 512, seed=s, **kw)
    raise ValueError(f"Unknown proposal method {method!r}; choose one of {METHODS}")
