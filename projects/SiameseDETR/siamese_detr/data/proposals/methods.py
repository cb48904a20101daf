"""Unsupervised object-proposal methods: EdgeBoxes, Selective Search and random boxes.

Every method takes one image (``np.ndarray`` HxWx3 uint8, **BGR**, as OpenCV and Detectron2's default
``image_format`` use) and returns ``(boxes, scores)``:

* ``boxes``: float32 ``[K, 4]`` **xyxy in absolute pixels of the given image** (x1 <= x2 <= W, y1 <= y2 <= H),
* ``scores``: float32 ``[K]``, non-increasing; row order = the method's ranking (best first).

EdgeBoxes (Zitnick & Dollar, ECCV 2014) is what Siamese DETR uses (paper §3.2, "offline object proposals ...
using unsupervised EdgeBoxes"; §4.1 "Pretraining"); Selective Search fast mode is DETReg's source (DETReg §3,
§6 "Pretraining stage": OpenCV's "fast" version). Both come from ``cv2.ximgproc`` (opencv-contrib).
:func:`intersection_random_boxes` is the exception to the conventions above (float64, a view's pixels).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import math
import os
from typing import Optional, Tuple

import cv2
import numpy as np

from ...utils.user_errors import UserFileNotFoundError, UserValueError

__all__ = [
    "METHODS",
    "DEFAULT_MAX_BOXES",
    "compute_proposals",
    "edgeboxes",
    "edgeboxes_value_problem",
    "selective_search",
    "random_boxes",
    "intersection_random_boxes",
    "sharpen_for_edgeboxes",
    "fallback_box",
    "note_gradient_fallback",
    "GRADIENT_FALLBACK_WARN_AT",
    "gradient_edge_map",
    "structured_edge_map",
    "stable_seed",
    "seed_c_rand",
    "image_seed",
]

METHODS = ("edgeboxes", "selective_search", "random")
# 512 EdgeBoxes per image as the official Siamese DETR code; Selective Search keeps all its boxes
# unless asked (fast mode gives ~1-3k per image); random: a round number.
DEFAULT_MAX_BOXES = {"edgeboxes": 512, "selective_search": None, "random": 512}
# after this many images computed with the gradient edge map in one process, warn loudly: a real-scale run
# should use the Structured Edge model (``--sed-model``) as the official generator does
GRADIENT_FALLBACK_WARN_AT = 1000

logger = logging.getLogger(__name__)
_gradient_fallback_count = 0

# what OpenCV's EdgeBoxes (opencv_contrib ximgproc/src/edgeboxes.cpp) can use; createEdgeBoxes checks none of it
_EDGEBOXES_RANGES = {
    "alpha": (lambda v: 0 < v < 1, "in (0, 1): the step size of the sliding-window search (neighbouring windows "
              "overlap by IoU alpha); 1 or more gives no window at all, so no box"),
    "beta": (lambda v: 0 < v <= 1, "in (0, 1]: the NMS IoU threshold; above 0.99 OpenCV skips the NMS, so 1 keeps "
             "every box (then the max_boxes best) and larger values change nothing"),
    "min_score": (lambda v: v >= 0, "0 or more: boxes scoring below it are dropped"),
}


def note_gradient_fallback(num_images: int = 1) -> int:
    """Count images whose EdgeBoxes ran on the gradient edge map (no SED model) in this process.

    Logs an INFO line on the first image (fine for the demo and tests) and a loud WARNING when the count
    reaches :data:`GRADIENT_FALLBACK_WARN_AT` and at every tenfold after it: the gradient map is a
    stand-in for the Structured Edge model of the official generator and gives different proposals.
    Returns the count so far.
    """
    global _gradient_fallback_count
    before = _gradient_fallback_count
    _gradient_fallback_count += int(num_images)
    after = _gradient_fallback_count
    if before == 0 and after > 0:
        logger.info("EdgeBoxes on the gradient edge map (no --sed-model): fine for the demo, not a real run")
    mark = GRADIENT_FALLBACK_WARN_AT
    while mark <= after:
        if before < mark:
            logger.warning(
                "!!! EdgeBoxes has now run on %d images with the GRADIENT edge map because no Structured Edge "
                "model was given. The official proposals (tools/hpcplayers/box_generator.py) use the SED "
                "model: for a real run pass --sed-model model.yml.gz (opencv_extra testdata/cv/ximgproc/"
                "model.yml.gz) to tools/generate_proposals.py, or sed_model=... to OnlineProposals. !!!",
                after,
            )
        mark *= 10
    return after


def stable_seed(image_id, seed: int = 0) -> int:
    """A 63-bit seed from ``(str(image_id), seed)``, identical in every process and Python run.

    Python's ``hash()`` of a str is salted per process (PYTHONHASHSEED), so it must not be used for
    per-image seeds that have to agree across the workers and machines of a sharded run.
    """
    digest = hashlib.blake2b(f"{seed}:{image_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


_C_LIBRARY = None  # ctypes handle of the C library whose rand() OpenCV uses; False once it cannot be loaded


def seed_c_rand(seed: int) -> bool:
    """``srand(seed)`` in the C library (``seed`` taken modulo 2**32). Returns False where it cannot be done.

    OpenCV's Selective Search ranks its boxes as Uijlings et al. (IJCV 2013) combine their hierarchies:
    a box's position in its hierarchy times a random number, drawn with the C library's ``rand()``. That
    generator is global to the process, so without a seed the ranking of an image depends on how many
    images the process ranked before it.
    Where the C library cannot be loaded (e.g. Windows' CRT keeps rand() state per thread), a warning is
    logged once and the ranking stays unseeded.
    """
    global _C_LIBRARY
    if _C_LIBRARY is None:
        try:
            _C_LIBRARY = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _C_LIBRARY.srand.argtypes = [ctypes.c_uint]
        except (OSError, AttributeError) as e:
            _C_LIBRARY = False
            logger.warning(
                "cannot seed the C library's rand() (%s): Selective Search rankings will depend on the order "
                "in which a process sees its images", e
            )
    if not _C_LIBRARY:
        return False
    _C_LIBRARY.srand(int(seed) % (1 << 32))
    return True


def image_seed(image: np.ndarray, seed: int = 0) -> int:
    """A 31-bit seed from the pixels, shape and dtype of ``image`` and ``seed``, the same in every process."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{seed}:{image.shape}:{image.dtype}".encode("utf-8"))
    h.update(np.ascontiguousarray(image).tobytes())
    return int.from_bytes(h.digest(), "little") >> 33


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
    # not cv2.magnitude: for the same input its output varied between processes (measured: a different
    # edge map for the same image in most fresh processes once torch was imported; presumably its SIMD and
    # scalar paths round differently and the buffer's alignment picks one). Separate float32 ufuncs round
    # each step the same everywhere (tested in fresh processes).
    magnitude = np.sqrt(gx * gx + gy * gy)
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
            raise UserFileNotFoundError(
                f"Structured Edge Detection model {path!r} does not exist. Download opencv_extra's "
                "'model.yml.gz' (testdata/cv/ximgproc/model.yml.gz) and pass its path with --sed-model, "
                "or leave --sed-model out to use the gradient edge map."
            )
        try:
            _SED_CACHE[path] = cv2.ximgproc.createStructuredEdgeDetection(path)
        except cv2.error as e:
            raise UserValueError(
                f"Structured Edge Detection model {path!r} could not be read by OpenCV (corrupt or not a "
                f"'model.yml.gz' random-forest file): {str(e).strip().splitlines()[-1]}. Re-download it or "
                "leave --sed-model out to use the gradient edge map."
            ) from e
    return _SED_CACHE[path]


def structured_edge_map(image_bgr: np.ndarray, model_path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Structured-forest edges as the official code: detectEdges(RGB / 255) -> computeOrientation -> edgesNms.

    Returns:
        edges float32 [H, W], orientation float32 [H, W] (pixel grid of ``image_bgr``).
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


def sharpen_for_edgeboxes(image_bgr: np.ndarray) -> Tuple[np.ndarray, int]:
    """The official retry input for images on which EdgeBoxes finds nothing (smooth images).

    As ``BoxGenerator.sharpen``: 3x3 sharpening kernel ``[[0,-1,0],[-1,5,-1],[0,-1,0]]``, contrast x1.5
    (``convertScaleAbs``, saturating), then an integer upscale by ``factor = ceil(1000 / min(H, W))``
    (bilinear). Returns ``(image uint8 [H*factor, W*factor, 3], factor)``; boxes found on it are divided by
    ``factor``.
    """
    kernel = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float32)
    sharp = cv2.filter2D(image_bgr, -1, kernel)
    sharp = cv2.convertScaleAbs(sharp, alpha=1.5, beta=0)
    factor = int(math.ceil(1000.0 / min(image_bgr.shape[:2])))
    h, w = image_bgr.shape[:2]
    return cv2.resize(sharp, (w * factor, h * factor), interpolation=cv2.INTER_LINEAR), factor


def fallback_box(height: int, width: int) -> np.ndarray:
    """The official last-resort box when even the sharpened image gives no EdgeBoxes, float32 ``[1, 4]`` xyxy.

    ``BoxGenerator.edgebox`` writes ``[w//4, h//4, w//4*3, h//4*3]`` and then converts every box from xywh
    to xyxy, so the box it actually stores is ``[w//4, h//4, w//4 + 3*(w//4), h//4 + 3*(h//4)]`` (the lower
    right 3/4 x 3/4 of the image, not the centred half its numbers suggest). We store that box, as the code
    does.
    """
    qw, qh = width // 4, height // 4
    return np.array([[qw, qh, qw + 3 * qw, qh + 3 * qh]], dtype=np.float32)


def edgeboxes_value_problem(name: str, value) -> Optional[str]:
    """Why ``value`` cannot be the EdgeBoxes parameter ``name`` ("alpha", "beta" or "min_score"), or None.

    The reason starts with "must be" so that callers can put the parameter's name (or flag) before it.
    """
    test, rule = _EDGEBOXES_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not test(value):
        return f"must be a number {rule}; got {value!r}"
    return None


def _check_edgeboxes_values(alpha, beta, min_score) -> None:
    """Raise :class:`UserValueError` naming the first EdgeBoxes parameter out of its range."""
    for name, value in (("alpha", alpha), ("beta", beta), ("min_score", min_score)):
        problem = edgeboxes_value_problem(name, value)
        if problem:
            raise UserValueError(f"edgeboxes {name} {problem}")


def _keep_best(boxes: np.ndarray, scores: np.ndarray, max_boxes: Optional[int]):
    """The ``max_boxes`` best-scored rows, best first (ties in their given order); all rows when ``max_boxes``
    is 0 / None. OpenCV's EdgeBoxes applies its ``maxBoxes`` inside the NMS, which it skips for beta > 0.99."""
    order = np.argsort(-scores, kind="stable")
    if max_boxes:
        order = order[: int(max_boxes)]
    return boxes[order], scores[order]


def _run_edgeboxes(image_bgr, max_boxes, alpha, beta, min_score, sed_model, edge_sigma):
    """One EdgeBoxes pass: ``(boxes xywh float32 [K, 4], scores float32 [K])`` (K may be 0)."""
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
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32).reshape(-1)


def edgeboxes(
    image_bgr: np.ndarray,
    max_boxes: Optional[int] = 512,
    alpha: float = 0.65,
    beta: float = 0.75,
    min_score: float = 0.01,
    sed_model: Optional[str] = None,
    edge_sigma: float = 2.0,
    fallback: bool = True,
) -> Tuple[np.ndarray, np.ndarray]:
    """EdgeBoxes proposals (``cv2.ximgproc.createEdgeBoxes``), best score first.

    Follows ``BoxGenerator.edgebox`` of the official code: if the image gives no box, run again on
    :func:`sharpen_for_edgeboxes` (boxes divided by its upscale factor); if that gives none either, return
    the single :func:`fallback_box` with score 0. So with ``fallback=True`` at least one box is returned.

    Args:
        alpha, beta, min_score: EdgeBoxes step size, NMS threshold and score floor (OpenCV defaults, as the
            official generator, which only sets ``maxBoxes``).
        sed_model: path of a Structured Edge Detection ``model.yml.gz`` (real runs); None = the gradient edge
            map :func:`gradient_edge_map` (demo; counted by :func:`note_gradient_fallback`).
        edge_sigma: smoothing of the gradient edge map (ignored with ``sed_model``).
        fallback: False = no sharpen/fixed-box retries (K may be 0).

    Returns:
        boxes float32 [K, 4] xyxy absolute, scores float32 [K] non-increasing (EdgeBoxes box scores), K <= max_boxes
        (with beta > 0.99, where OpenCV neither suppresses nor caps, the ``max_boxes`` best-scored).

    Raises:
        UserValueError: alpha, beta or min_score out of its range (see :func:`edgeboxes_value_problem`).
    """
    _check_edgeboxes_values(alpha, beta, min_score)
    height, width = image_bgr.shape[:2]
    if not sed_model:
        note_gradient_fallback(1)
    args = (max_boxes, alpha, beta, min_score, sed_model, edge_sigma)
    boxes, scores = _run_edgeboxes(image_bgr, *args)
    if len(boxes) == 0 and fallback:
        sharp, factor = sharpen_for_edgeboxes(image_bgr)
        boxes, scores = _run_edgeboxes(sharp, *args)
        boxes = boxes / np.float32(factor)
    if len(boxes) == 0:
        if not fallback:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        return fallback_box(height, width), np.zeros((1,), np.float32)
    # already sorted by OpenCV (make it a guarantee), and at most max_boxes (not so from OpenCV for beta > 0.99)
    return _keep_best(_xywh_to_xyxy_clipped(boxes, height, width), scores, max_boxes)


def selective_search(
    image_bgr: np.ndarray,
    max_boxes: Optional[int] = None,
    resize: Optional[int] = None,
    mode: str = "fast",
    seed: int = 0,
    square: bool = False,
) -> Tuple[np.ndarray, np.ndarray]:
    """Selective Search (``cv2.ximgproc.segmentation``), boxes in OpenCV's output order.

    OpenCV ranks the boxes with a random factor (see :func:`seed_c_rand`); the generator is seeded from
    the image that is searched and ``seed`` (:func:`image_seed`), so the boxes and their order are a
    function of the image, whatever the process computed before (DETReg's official proposals are
    computed once per image and stored, so its top-K of an image is fixed too).

    Args:
        resize: if given, run on a copy whose **short side** is ``resize`` px (DETReg runs on small images,
            e.g. 128) and scale the boxes back to the input size; None = full resolution.
        square: with ``resize``, run on a ``resize x resize`` copy instead (the aspect ratio is not kept;
            ``cv2.resize``'s default bilinear interpolation), as the official DETReg ``selective_search(img,
            h, w, res_size=128)`` of its ``topk`` policy.
        mode: "fast" (``switchToSelectiveSearchFast``, DETReg's choice) or "quality".
        seed: changes the random ranking of every image.

    Returns:
        boxes float32 [K, 4] xyxy absolute in the *input* image; scores float32 [K] = (K - rank) / K, i.e. the
        descending rank (Selective Search has no score; earlier-grouped regions rank higher, DETReg §4).
    """
    height, width = image_bgr.shape[:2]
    work = image_bgr
    if resize and square and (height, width) != (resize, resize):
        work = cv2.resize(image_bgr, (int(resize), int(resize)), interpolation=cv2.INTER_LINEAR)
    elif resize and min(height, width) != resize:
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
        raise UserValueError(f"selective_search mode must be 'fast' or 'quality', got {mode!r}")
    seed_c_rand(image_seed(work, seed))
    rects = search.process()
    if rects is None or len(rects) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    if max_boxes:
        rects = rects[: int(max_boxes)]
    if work is not image_bgr:
        # scale x by the exact width ratio and y by the exact height ratio of the resized copy
        sx, sy = width / work.shape[1], height / work.shape[0]
        rects = rects * np.array([sx, sy, sx, sy], dtype=np.float32)
    k = len(rects)
    scores = (k - np.arange(k, dtype=np.float32)) / np.float32(k)
    return _xywh_to_xyxy_clipped(rects, height, width), scores.astype(np.float32)


def random_boxes(
    height: int, width: int, num_boxes: int = 512, seed: int = 0, min_size: int = 8
) -> Tuple[np.ndarray, np.ndarray]:
    """Uniformly random boxes with UP-DETR-like sizes (UP-DETR §3.1 "Decoder": randomly cropped query
    patches; section of the extended arXiv 2011.09094 text).

    width ~ U{min(min_size, W) .. W}, height ~ U{min(min_size, H) .. H}, then the top-left corner is uniform over
    the positions that keep the box inside the image. ``seed`` fully determines the result
    (use :func:`stable_seed` to derive it from an image id).

    Returns:
        boxes float32 [num_boxes, 4] xyxy absolute pixels of the ``height x width`` image, integer-valued;
        scores float32 [num_boxes] = (K - rank) / K (no meaning but the order).
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


def intersection_random_boxes(
    rng: np.random.Generator,
    intersection: np.ndarray,
    num_boxes: int = 100,
    min_area_frac: float = 0.05,
    max_aspect: float = 8.0,
    other_scale: Tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Fresh random regions inside the views' overlap, the rule of the official "random boxes" ablation
    (``SiameseDETRDataset.gen_random_boxes`` in ``openselfsup/datasets/siamese_detr.py``; config
    ``coco_randbox_crop_bs4.py``: ``dice_num=100``, ``ratio_max=8``, ``area_min_ratio=0.05``).

    In the pixel coordinates of view 1, where ``intersection = (rx0, ry0, rx1, ry1)``:
    top-left ``x0 ~ U{floor(rx0) .. floor(rx1) - 1}``, ``y0`` likewise; height ``h = U[0, 1) * (ry1 - y0)``;
    with ``a_min = min_area_frac * area(intersection)``, width ``w = a_min / h + U[0, 1) * (rx1 - x0 - a_min / h)``
    (so ``w * h >= a_min``). A box is valid when ``x0 + w < rx1``, its aspect ``w / h`` lies in
    ``[1 / max_aspect, max_aspect]`` in both views, and its area in view 2's pixels is ``>= a_min`` (the
    official code compares view 2's area with view 1's threshold; ``other_scale = (kx, ky)`` converts view-1
    pixels to view-2 pixels). ``y0 + h <= ry1`` holds by construction.

    Args:
        intersection: ``[4]`` xyxy of the overlap in view 1's pixels.
    Returns:
        float64 ``[K, 4]`` xyxy (view 1's pixels) of the valid boxes in draw order, ``K <= num_boxes``; the caller
        takes the first ``num_regions - 1`` (official ``pick_boxes``).
    """
    rx0, ry0, rx1, ry1 = (float(c) for c in intersection)
    min_area = min_area_frac * (rx1 - rx0) * (ry1 - ry0)
    n = int(num_boxes)
    x_lo, y_lo = int(math.floor(rx0)), int(math.floor(ry0))
    x0 = rng.integers(x_lo, max(int(math.floor(rx1)), x_lo + 1), size=n).astype(np.float64)
    y0 = rng.integers(y_lo, max(int(math.floor(ry1)), y_lo + 1), size=n).astype(np.float64)
    heights = rng.random(n) * (ry1 - y0) + 1e-10
    width_min = min_area / heights
    widths = width_min + rng.random(n) * ((rx1 - x0) - width_min)
    boxes = np.stack([x0, y0, x0 + widths, y0 + heights], axis=1)
    kx, ky = float(other_scale[0]), float(other_scale[1])
    aspect_1 = widths / heights
    aspect_2 = (widths * kx) / (heights * ky)
    valid = (
        (boxes[:, 2] < rx1)
        & (boxes[:, 3] <= ry1)
        & (aspect_1 >= 1.0 / max_aspect)
        & (aspect_1 <= max_aspect)
        & (aspect_2 >= 1.0 / max_aspect)
        & (aspect_2 <= max_aspect)
        & (widths * kx * heights * ky >= min_area)
    )
    return boxes[valid]


def compute_proposals(
    image_bgr: np.ndarray, method: str, max_boxes: Optional[int] = None, seed: int = 0, image_id=None, **kw
) -> Tuple[np.ndarray, np.ndarray]:
    """Run one proposal method on one BGR uint8 image [H, W, 3] (the original image when the result is stored).

    Args:
        method: "edgeboxes", "selective_search" or "random".
        max_boxes: keep at most this many (None = the method's default in :data:`DEFAULT_MAX_BOXES`; 0 = all:
            EdgeBoxes up to OpenCV's cap of 10000, every Selective Search box; refused for random boxes).
        seed, image_id: random boxes use ``stable_seed(image_id, seed)`` when ``image_id`` is given, else ``seed``;
            Selective Search seeds its ranking with ``seed`` and the image's pixels.
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
        return selective_search(image_bgr, max_boxes=max_boxes, seed=seed, **kw)
    if method == "random":
        if not max_boxes:  # 0 ("all") has no meaning for drawn boxes; it gave 512 while 0 was recorded
            raise UserValueError("max_boxes=0 (all boxes) has no meaning for method 'random', whose boxes are drawn "
                                 f"as many as asked: give a count of 1 or more (default {DEFAULT_MAX_BOXES['random']})")
        s = stable_seed(image_id, seed) if image_id is not None else seed
        return random_boxes(image_bgr.shape[0], image_bgr.shape[1], num_boxes=max_boxes, seed=s, **kw)
    raise UserValueError(f"Unknown proposal method {method!r}; choose one of {METHODS}")
