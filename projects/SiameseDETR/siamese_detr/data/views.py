"""IoU-constrained two-view geometry of Siamese DETR (paper §3.2, Fig. 3; project card, "Choices
and where the sources disagree", *Views*).

Pure functions on numpy boxes, testable without images. Conventions used throughout:

* every box is ``xyxy`` in ABSOLUTE pixels, float64 ``ndarray`` of shape ``[4]`` or ``[K, 4]``;
* "image coordinates" are the pixels of the resized (and, when flipped, horizontally flipped) full
  image in which the views are sampled; "view coordinates" are the pixels of one view: the cut
  ``image[y0:y1, x0:x1]`` resized to the size of the OUTER box (official ``TwoViewRandomResizedCrop``:
  ``resized_crop(..., SIZE)`` with ``SIZE = (h, w)`` of the outer box), i.e. image coordinates minus the
  view's top-left corner, times the view's per-axis scale ``(sx, sy) = (W_outer / w_view, H_outer / h_view)``;
* view boxes and the intersection box have integer-valued corners so that a view is cut as an exact
  pixel crop before its resize;
* randomness only comes from a ``numpy.random.Generator`` passed in explicitly.

The policy (Fig. 3): (a) sample an outer box covering 50–100 % of the image, aspect 3/4–4/3;
(b) place a centred intersection box ``I`` inside it; view A spans outer top-left → ``I`` bottom-right,
view B spans ``I`` top-left → outer bottom-right, so ``A ∩ B = I`` and ``IoU(A, B) = tau`` exactly
(see :func:`inner_scale_for_iou`); (c) shrink each view's outer corner towards ``I`` ("expanding along
the diagonal" read backwards), which only raises the IoU (see :func:`shrink_outer_corners`);
(d) swap the two views with probability ``swap_prob``; (e) resize both views to the outer box's size, so
each is zoomed independently by ``2 / (1 + s)`` (no shrink) up to ``1 / s`` (full shrink), ×1.18–1.45 at
``tau = 0.5``. Proposals clamped to ``I`` become the regions (official ``SiameseDETRDataset`` in
``openselfsup/datasets/siamese_detr.py``: region 0 is ``I``, then the first ``n - 1`` proposals, padded by
jittered cyclic copies; no proposal at all -> the sample is skipped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .proposals.methods import intersection_random_boxes
from ..utils.user_errors import UserValueError

# distributions of the padding and query jitter: the official code's sigmoid of a normal, or uniform
JITTER_NOISES = ("sigmoid_normal", "uniform")

__all__ = [
    "JITTER_NOISES",
    "ViewPair",
    "sigmoid_normal_noise",
    "view_scales",
    "box_area",
    "box_iou",
    "inner_scale_for_iou",
    "sample_outer_box",
    "centred_intersection_box",
    "views_from_intersection",
    "shrink_outer_corners",
    "sample_view_pair",
    "resized_shape",
    "scale_boxes",
    "flip_boxes",
    "image_to_view",
    "view_to_image",
    "clip_boxes",
    "jitter_boxes",
    "select_regions",
    "original_to_view",
    "view_to_original",
    "TwoViewSample",
    "ViewPolicy",
]


@dataclass
class ViewPair:
    """Two views of one image.

    Attributes:
        view_boxes: ``[2, 4]`` xyxy image coordinates (integer-valued) of view 1 and view 2.
        intersection: ``[4]`` xyxy image coordinates of ``view1 ∩ view2`` (the centred box ``I``).
        swapped: True when view 1 is view B, the one that starts at ``I``'s top-left and extends towards
            the outer box's bottom-right corner (it ends exactly at that corner only with
            ``shrink_outer=False``; the shrink moves it towards ``I``).
        outer: ``[4]`` xyxy image coordinates (integer-valued) of the outer box; its size is the size both
            views are resized to.
    """

    view_boxes: np.ndarray
    intersection: np.ndarray
    swapped: bool
    outer: Optional[np.ndarray] = None


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of xyxy boxes ``[..., 4]`` -> ``[...]`` (zero for empty boxes)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU of xyxy boxes ``a [..., 4]`` and ``b [..., 4]`` (broadcast) -> ``[...]``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    lt = np.maximum(a[..., :2], b[..., :2])
    rb = np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    union = box_area(a) + box_area(b) - inter
    return inter / np.maximum(union, 1e-12)


def inner_scale_for_iou(tau: float) -> float:
    """Scale ``s`` of the centred intersection box for which the two views have IoU exactly ``tau``.

    Derivation. Let the outer box have size ``W x H`` and let the intersection ``I`` be centred in it
    with size ``sW x sH`` (``0 < s <= 1``). View A (outer top-left → ``I`` bottom-right) and view B
    (``I`` top-left → outer bottom-right) both measure ``W(1+s)/2 x H(1+s)/2`` and ``A ∩ B = I``, so::

        IoU(s) = s²WH / (2 · (1+s)²WH/4 − s²WH) = 2s² / (1 + 2s − s²).

    Setting ``IoU(s) = tau`` gives the quadratic ``(2 + tau) s² − 2 tau s − tau = 0`` whose positive
    root is::

        s = (tau + sqrt(2 tau (1 + tau))) / (2 + tau).

    Checks: ``tau = 0 → s = 0``; ``tau = 1 → s = 1``; ``tau = 0.5 → s ≈ 0.6899``. ``IoU(s)`` increases
    on ``[0, 1]`` and ``IoU(s) <= s`` (equivalent to ``s² <= 1``), hence ``s >= tau``; the ratio is
    independent of ``W``, ``H`` and of the outer box's aspect.
    """
    if not 0.0 <= tau <= 1.0:
        raise UserValueError(f"tau must lie in [0, 1], got {tau}")
    return (tau + math.sqrt(2.0 * tau * (1.0 + tau))) / (2.0 + tau)


def sample_outer_box(
    rng: np.random.Generator,
    image_hw: Tuple[int, int],
    area_range: Sequence[float] = (0.5, 1.0),
    aspect_range: Sequence[float] = (3 / 4, 4 / 3),
    max_tries: int = 10,
) -> np.ndarray:
    """Sample the outer box (Fig. 3a): area fraction ``U(area_range)``, aspect ``w/h`` log-uniform.

    Like ``RandomResizedCrop.get_params`` (official ``TwoViewRandomResizedCrop``): up to ``max_tries`` draws
    that fit the image, at a uniform position; if none fits, the central crop of the largest box whose aspect
    is clamped to ``aspect_range`` (the whole image when its aspect is inside the range).

    Returns:
        ``[4]`` xyxy integer-valued image coordinates, inside ``[0, W] x [0, H]``.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
    for _ in range(max_tries):
        area = rng.uniform(area_range[0], area_range[1]) * h * w
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        bw = int(round(math.sqrt(area * aspect)))
        bh = int(round(math.sqrt(area / aspect)))
        if 0 < bw <= w and 0 < bh <= h:
            x0 = int(rng.integers(0, w - bw + 1))
            y0 = int(rng.integers(0, h - bh + 1))
            return np.array([x0, y0, x0 + bw, y0 + bh], dtype=np.float64)
    in_ratio = w / h
    if in_ratio < min(aspect_range):
        bw, bh = w, int(round(w / min(aspect_range)))
    elif in_ratio > max(aspect_range):
        bw, bh = int(round(h * max(aspect_range))), h
    else:
        bw, bh = w, h
    bw, bh = min(max(bw, 1), w), min(max(bh, 1), h)
    x0, y0 = (w - bw) // 2, (h - bh) // 2
    return np.array([x0, y0, x0 + bw, y0 + bh], dtype=np.float64)


def centred_intersection_box(outer: np.ndarray, tau: float) -> np.ndarray:
    """Centred intersection box ``I`` of the outer box (Fig. 3b), scale from :func:`inner_scale_for_iou`.

    Corners are rounded OUTWARDS to integers (and kept inside ``outer``). Growing ``I`` inside a fixed
    outer box never lowers the IoU below ``tau``: extending ``I`` by ``d`` along x adds ``d·h_I`` to
    the intersection and ``d·h_A`` to one view; ``IoU >= tau ⇔ (1+tau)|I| >= tau(|A|+|B|)`` and
    ``(1+tau) h_I >= tau h_A`` holds because ``h_I / h_A = 2s/(1+s) >= 2tau/(1+tau)`` (``s >= tau``).

    Args:
        outer: ``[4]`` xyxy integer-valued image coordinates.
    Returns:
        ``[4]`` xyxy integer-valued, non-empty (at least 1 px) when the outer box is.
    """
    outer = np.asarray(outer, dtype=np.float64)
    s = inner_scale_for_iou(tau)
    cx, cy = (outer[0] + outer[2]) / 2.0, (outer[1] + outer[3]) / 2.0
    hw, hh = s * (outer[2] - outer[0]) / 2.0, s * (outer[3] - outer[1]) / 2.0
    inner = np.array([math.floor(cx - hw), math.floor(cy - hh), math.ceil(cx + hw), math.ceil(cy + hh)])
    inner[:2] = np.maximum(inner[:2], outer[:2])
    inner[2:] = np.minimum(inner[2:], outer[2:])
    inner[2:] = np.maximum(inner[2:], np.minimum(inner[:2] + 1, outer[2:]))
    return inner.astype(np.float64)


def views_from_intersection(outer: np.ndarray, inner: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The two sub-rectangles of Fig. 3b: ``A = (outer.x0, outer.y0, I.x1, I.y1)``,
    ``B = (I.x0, I.y0, outer.x1, outer.y1)``; ``A ∩ B = I``. Returns two ``[4]`` xyxy arrays."""
    view_a = np.array([outer[0], outer[1], inner[2], inner[3]], dtype=np.float64)
    view_b = np.array([inner[0], inner[1], outer[2], outer[3]], dtype=np.float64)
    return view_a, view_b


def shrink_outer_corners(
    rng: np.random.Generator, view_a: np.ndarray, view_b: np.ndarray, inner: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Move each view's OUTER corner towards ``I`` by an independent fraction ``u ~ U[0, 1]`` of the gap,
    the same fraction on x and y (the corner slides along the view's diagonal, aspect kept).

    Why the IoU only grows: A keeps its inner corner ``(I.x1, I.y1)`` and its outer corner stays at or
    beyond ``(I.x0, I.y0)``, so ``A ⊇ I``; likewise ``B ⊇ I``; and ``A ∩ B`` is still exactly ``I``
    (A ends at ``I.x1``/``I.y1``, B starts at ``I.x0``/``I.y0``). The intersection is unchanged while
    both areas can only decrease, so the union decreases and ``IoU = |I| / (|A| + |B| − |I|)`` grows.

    Returns:
        shrunk ``(view_a, view_b)``, integer-valued (corners rounded towards the outer corner so they
        never cross ``I``).
    """
    u_a, u_b = rng.uniform(0.0, 1.0, size=2)
    new_a = view_a.copy()
    new_a[:2] = np.floor(view_a[:2] + u_a * (inner[:2] - view_a[:2]))
    new_b = view_b.copy()
    new_b[2:] = np.ceil(view_b[2:] + u_b * (inner[2:] - view_b[2:]))
    return new_a, new_b


def sample_view_pair(
    rng: np.random.Generator,
    image_hw: Tuple[int, int],
    tau: float = 0.5,
    outer_area: Sequence[float] = (0.5, 1.0),
    outer_aspect: Sequence[float] = (3 / 4, 4 / 3),
    shrink_outer: bool = True,
    swap_prob: float = 0.5,
) -> ViewPair:
    """The whole IoU-constrained policy (paper §3.2, Fig. 3a–b): outer box, centred ``I``, optional shrink,
    swap.

    Args:
        image_hw: ``(H, W)`` of the image the views are cut from (the resized, possibly flipped image).
    Returns:
        :class:`ViewPair` (``view_boxes [2, 4]``, ``intersection [4]``, ``outer [4]``: float64 xyxy image
        coordinates, integer-valued).

    Guarantees: both views lie inside ``[0, W] x [0, H]``; ``view1 ∩ view2 = intersection``;
    ``IoU(view1, view2) >= tau``.
    """
    outer = sample_outer_box(rng, image_hw, outer_area, outer_aspect)
    inner = centred_intersection_box(outer, tau)
    view_a, view_b = views_from_intersection(outer, inner)
    if shrink_outer:
        view_a, view_b = shrink_outer_corners(rng, view_a, view_b, inner)
    swapped = bool(rng.uniform() < swap_prob)
    views = np.stack([view_b, view_a] if swapped else [view_a, view_b])
    return ViewPair(view_boxes=views, intersection=inner, swapped=swapped, outer=outer)


def view_scales(view_boxes: np.ndarray, out_hw: Tuple[int, int]) -> np.ndarray:
    """Per-axis zoom of each view when resized to ``out_hw = (H, W)``: ``[V, 2]`` of ``(W / w_v, H / h_v)``,
    where ``view_boxes`` is ``[V, 4]`` (or ``[4]``) xyxy image coordinates of the cuts."""
    view_boxes = np.asarray(view_boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack(
        [out_hw[1] / (view_boxes[:, 2] - view_boxes[:, 0]), out_hw[0] / (view_boxes[:, 3] - view_boxes[:, 1])],
        axis=1,
    )


def resized_shape(height: int, width: int, short_side: int, max_size: int) -> Tuple[int, int]:
    """Output ``(h, w)`` (ints) of a resize of a ``height x width`` image that makes the short side
    ``short_side`` while the long side stays ``<= max_size`` (same rule as Detectron2's
    ``ResizeShortestEdge``)."""
    scale = short_side / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def scale_boxes(boxes: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """Multiply xyxy absolute boxes ``[K, 4]`` by per-axis factors (resize of the image: pixels of the input
    image -> pixels of the resized one). Returns float64 ``[K, 4]``."""
    return np.asarray(boxes, dtype=np.float64) * np.array([scale_x, scale_y, scale_x, scale_y])


def flip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """Horizontal flip of xyxy absolute boxes ``[K, 4]`` in an image of ``width`` pixels (its own inverse);
    float64 ``[K, 4]`` in the flipped image's pixels."""
    boxes = np.asarray(boxes, dtype=np.float64)
    out = boxes.copy()
    out[..., 0] = width - boxes[..., 2]
    out[..., 2] = width - boxes[..., 0]
    return out


def image_to_view(boxes: np.ndarray, view_box: np.ndarray, scale: Sequence[float] = (1.0, 1.0)) -> np.ndarray:
    """Image coordinates -> coordinates of the view ``view_box``: translate by its top-left, then multiply
    by the view's resize factors ``scale = (sx, sy)`` (see :func:`view_scales`).

    ``boxes``: ``[K, 4]`` or ``[4]`` xyxy image coordinates (resized, flipped image); ``view_box``: ``[4]``
    xyxy image coordinates of the cut. Returns float64, same shape, xyxy absolute pixels of the view."""
    offset = np.array([view_box[0], view_box[1], view_box[0], view_box[1]], dtype=np.float64)
    factor = np.array([scale[0], scale[1], scale[0], scale[1]], dtype=np.float64)
    return (np.asarray(boxes, dtype=np.float64) - offset) * factor


def view_to_image(boxes: np.ndarray, view_box: np.ndarray, scale: Sequence[float] = (1.0, 1.0)) -> np.ndarray:
    """Inverse of :func:`image_to_view`: ``[K, 4]`` / ``[4]`` xyxy view pixels -> float64 xyxy image
    coordinates (resized, flipped image)."""
    offset = np.array([view_box[0], view_box[1], view_box[0], view_box[1]], dtype=np.float64)
    factor = np.array([scale[0], scale[1], scale[0], scale[1]], dtype=np.float64)
    return np.asarray(boxes, dtype=np.float64) / factor + offset


def clip_boxes(boxes: np.ndarray, clip_box: np.ndarray) -> np.ndarray:
    """Clamp xyxy boxes ``[K, 4]`` to the xyxy box ``clip_box [4]`` of the same frame (may produce empty
    boxes). Returns float64 ``[K, 4]``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    lo = np.array([clip_box[0], clip_box[1], clip_box[0], clip_box[1]], dtype=np.float64)
    hi = np.array([clip_box[2], clip_box[3], clip_box[2], clip_box[3]], dtype=np.float64)
    return np.minimum(np.maximum(boxes, lo), hi)


def sigmoid_normal_noise(rng: np.random.Generator, shape, frac: float) -> np.ndarray:
    """``(sigmoid(N(0, 1)) * 2 - 1) * frac``: the official box noise (``add_randomness_on_multiview_box`` in
    ``openselfsup/models/siamese_detr.py``, ``pad_jitter_box`` in ``datasets/siamese_detr.py``), in
    ``(-frac, frac)``, concentrated around 0 (std ~ 0.41 frac). float64 array of ``shape``."""
    return (2.0 / (1.0 + np.exp(-rng.standard_normal(shape))) - 1.0) * frac


def jitter_boxes(
    rng: np.random.Generator,
    boxes: np.ndarray,
    frac: float,
    clip_box: Optional[np.ndarray] = None,
    noise: str = "sigmoid_normal",
) -> np.ndarray:
    """Move every side of each box by a random fraction in ``(-frac, frac)`` of the box's width (x sides)
    or height (y sides), then clamp to ``clip_box``. ``noise``: "sigmoid_normal" (official,
    :func:`sigmoid_normal_noise`) or "uniform" (``U(-frac, frac)``). A box that would become empty keeps its
    original side positions (so the result is never empty when the input is not).

    This is the "box jitter processing following [33]" of paper §3.2.

    Args:
        boxes: ``[K, 4]`` (or ``[4]``) xyxy absolute, any frame; ``clip_box``: ``[4]`` xyxy in the same
            frame. Returns float64 ``[K, 4]`` xyxy in that frame; ``|out - boxes| <= frac * size`` per side
            (for boxes inside ``clip_box``).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    if noise == "sigmoid_normal":
        delta = sigmoid_normal_noise(rng, boxes.shape, frac)
    elif noise == "uniform":
        delta = rng.uniform(-frac, frac, size=boxes.shape)
    else:
        raise UserValueError(f"noise must be one of {list(JITTER_NOISES)}, got {noise!r}")
    out = boxes + delta * size
    if clip_box is not None:
        out = clip_boxes(out, clip_box)
    empty = (out[:, 2] <= out[:, 0]) | (out[:, 3] <= out[:, 1])
    out[empty] = boxes[empty]
    return out


def select_regions(
    rng: np.random.Generator,
    proposals: np.ndarray,
    intersection: np.ndarray,
    num_regions: int = 10,
    min_area_frac: float = 0.05,
    pad_jitter: float = 0.1,
    noise: str = "sigmoid_normal",
) -> Tuple[np.ndarray, int]:
    """Pseudo-regions inside the overlap of the two views (paper §3.2, Fig. 3c; official
    ``clip_and_remove_out_box`` + ``pick_boxes`` + ``pad_jitter_box`` of ``openselfsup/datasets/siamese_detr.py``).

    Region 0 is the intersection itself; then the proposals clamped to the intersection whose clamped
    area is ``>= min_area_frac * area(intersection)``, in the given (score) order, the first
    ``num_regions - 1`` (the paper's ``n = 10`` proposals "in the overlapping area between the two views").
    When ``k`` with ``0 < k < num_regions - 1`` survive, the rest are cyclic copies of
    the ``k`` proposal regions (``p_0 .. p_{k-1}, p_0, ...``; region 0 is never copied) with every side moved
    by :func:`sigmoid_normal_noise` (``noise="uniform"``: ``U(-1, 1)``) ``* pad_jitter`` of the box size,
    clamped to the intersection. When none
    survives nothing is padded: the result is the intersection alone and the caller skips the sample (the
    official dataset raises and takes another image).

    Args:
        proposals: ``[K, 4]`` xyxy image coordinates (absolute pixels of the resized, flipped image), in
            score order (``K`` may be 0).
        intersection: ``[4]`` xyxy image coordinates.
    Returns:
        ``(regions`` float64 ``[num_regions, 4]`` (``[1, 4]`` when ``num_proposals == 0``) xyxy image coordinates, all
        inside ``intersection``, ``num_proposals)`` = number of proposal regions before padding (region 0 not
        counted).
    """
    intersection = np.asarray(intersection, dtype=np.float64)
    proposals = np.asarray(proposals, dtype=np.float64).reshape(-1, 4)
    clamped = clip_boxes(proposals, intersection)
    keep = box_area(clamped) >= max(min_area_frac * box_area(intersection), 1e-9)
    kept = clamped[keep][: max(num_regions - 1, 0)]
    regions = np.concatenate([intersection[None], kept], axis=0)[:num_regions]
    num_proposals = len(kept)
    num_pad = num_regions - len(regions)
    if num_pad > 0 and num_proposals > 0:
        source = kept[np.arange(num_pad) % num_proposals]
        regions = np.concatenate([regions, jitter_boxes(rng, source, pad_jitter, intersection, noise)], axis=0)
    return regions, num_proposals


def original_to_view(
    boxes: np.ndarray,
    view_box: np.ndarray,
    original_hw: Tuple[int, int],
    resized_hw: Tuple[int, int],
    flip: bool,
    view_scale: Sequence[float] = (1.0, 1.0),
) -> np.ndarray:
    """Original-image pixels -> one view's pixels: resize, optional horizontal flip, translate, view resize
    by ``view_scale = (sx, sy)``.

    ``boxes``: ``[K, 4]`` xyxy absolute pixels of the original image; ``view_box``: ``[4]`` xyxy of the cut in
    the resized (and, with ``flip``, flipped) image; ``original_hw`` / ``resized_hw``: ``(h, w)`` before /
    after the base resize. Returns float64 ``[K, 4]`` xyxy absolute pixels of the view."""
    sx, sy = resized_hw[1] / original_hw[1], resized_hw[0] / original_hw[0]
    boxes = scale_boxes(boxes, sx, sy)
    if flip:
        boxes = flip_boxes(boxes, resized_hw[1])
    return image_to_view(boxes, view_box, view_scale)


def view_to_original(
    boxes: np.ndarray,
    view_box: np.ndarray,
    original_hw: Tuple[int, int],
    resized_hw: Tuple[int, int],
    flip: bool,
    view_scale: Sequence[float] = (1.0, 1.0),
) -> np.ndarray:
    """Inverse of :func:`original_to_view`: ``[K, 4]`` xyxy one view's pixels -> float64 ``[K, 4]`` xyxy
    original-image pixels (same arguments)."""
    boxes = view_to_image(boxes, view_box, view_scale)
    if flip:
        boxes = flip_boxes(boxes, resized_hw[1])
    sx, sy = resized_hw[1] / original_hw[1], resized_hw[0] / original_hw[0]
    return scale_boxes(boxes, 1.0 / sx, 1.0 / sy)


@dataclass
class TwoViewSample:
    """Geometry of one pretraining sample (everything but pixels).

    Attributes:
        original_hw, resized_hw: ``(h, w)`` of the input image and of the resized image.
        flip: whether the resized image was flipped horizontally (before the views were cut).
        swapped: whether the views were swapped (see :class:`ViewPair`).
        view_boxes: ``[2, 4]`` xyxy of each view in the resized (and flipped) image, integer-valued (the
            pixels cut for the view).
        intersection: ``[4]`` xyxy of ``view1 ∩ view2`` in the same coordinates.
        regions: ``[n, 4]`` xyxy of the regions in the same coordinates (row 0 = intersection; the
            proposals ``b`` of paper §3.2).
        view_hw: ``[2, 2]`` int ``(H, W)`` of each view's image: the outer box's size for both (official), or
            each cut's own size when views are not resized.
        view_scales: ``[2, 2]`` per-view ``(sx, sy)`` from image to view pixels (:func:`view_scales`).
        region_boxes: ``[2, n, 4]`` xyxy of the regions in each (resized) view's pixels (targets; the
            ``{b_1, b_2}`` of paper §3.2 and Eq. 5, 9).
        query_boxes: ``[2, n, 4]`` ``region_boxes`` with ``±query_jitter`` per side (:func:`jitter_boxes`),
            clipped to the view; the boxes of the RoIAlign of Eq. 4.
        num_proposals: regions taken from proposals before padding (region 0 not counted).
    """

    original_hw: Tuple[int, int]
    resized_hw: Tuple[int, int]
    flip: bool
    swapped: bool
    view_boxes: np.ndarray
    intersection: np.ndarray
    regions: np.ndarray
    view_hw: np.ndarray
    view_scales: np.ndarray
    region_boxes: np.ndarray
    query_boxes: np.ndarray
    num_proposals: int


@dataclass
class ViewPolicy:
    """The complete view policy of the module docstring, steps (a)-(e), with its knobs (defaults = ImageNet style).

    ``sample(rng, original_hw, proposals)`` draws, in this order: the short side of the base resize
    (integer ``U[short_side_range]``, long side capped by ``max_size``), the shared horizontal flip, the
    view pair (:func:`sample_view_pair`), the random regions when ``proposals is None``
    (:func:`~siamese_detr.data.proposals.methods.intersection_random_boxes`), the padding of the regions
    (:func:`select_regions`) and, per view, the query jitter (:func:`jitter_boxes` clipped to the view).

    ``resize_views``: resize both views to the outer box's size (official); False keeps plain cuts.
    ``random_num_boxes`` / ``random_max_aspect``: the official random-box rule (100 draws, aspect <= 8).
    ``jitter_noise``: distribution of the padding and query jitter ("sigmoid_normal" official, "uniform").
    """

    short_side_range: Tuple[int, int] = (320, 480)
    max_size: int = 600
    tau: float = 0.5
    outer_area: Tuple[float, float] = (0.5, 1.0)
    outer_aspect: Tuple[float, float] = (3 / 4, 4 / 3)
    num_regions: int = 10
    min_region_area_frac: float = 0.05
    pad_jitter: float = 0.1
    query_jitter: float = 0.1
    shrink_outer: bool = True
    swap_prob: float = 0.5
    flip_prob: float = 0.5
    resize_views: bool = True
    random_num_boxes: int = 100
    random_max_aspect: float = 8.0
    jitter_noise: str = "sigmoid_normal"

    def __post_init__(self):
        if int(self.num_regions) < 2:  # with 1 there is no proposal region: every sample would be skipped
            raise UserValueError(f"dataloader.train.mapper.num_regions must be >= 2 (region 0 is the views' "
                                 f"overlap, the others come from proposals), got {self.num_regions}")
        if self.jitter_noise not in JITTER_NOISES:  # checked here, not at the first sample in a loader worker
            raise UserValueError(f"dataloader.train.mapper.jitter_noise must be one of {list(JITTER_NOISES)}, got "
                                 f"{self.jitter_noise!r}")

    def sample(
        self, rng: np.random.Generator, original_hw: Tuple[int, int], proposals: Optional[np.ndarray]
    ) -> Optional[TwoViewSample]:
        """Args: ``original_hw`` = ``(h, w)`` of the input image; ``proposals`` ``[K, 4]`` xyxy absolute
        original-image pixels, score order, or None for fresh random regions inside the overlap.
        Returns a :class:`TwoViewSample`, or None when no proposal region survives (skip the image)."""
        oh, ow = int(original_hw[0]), int(original_hw[1])
        short = int(rng.integers(self.short_side_range[0], self.short_side_range[1] + 1))
        resized_hw = resized_shape(oh, ow, short, self.max_size)
        flip = bool(rng.uniform() < self.flip_prob)
        pair = sample_view_pair(
            rng, resized_hw, self.tau, self.outer_area, self.outer_aspect, self.shrink_outer, self.swap_prob
        )
        vb = pair.view_boxes
        if self.resize_views:
            outer_hw = (int(pair.outer[3] - pair.outer[1]), int(pair.outer[2] - pair.outer[0]))
            view_hw = np.array([outer_hw, outer_hw], dtype=np.int64)
            scales = view_scales(vb, outer_hw)
        else:  # plain cuts, each of its own size
            view_hw = np.stack([vb[:, 3] - vb[:, 1], vb[:, 2] - vb[:, 0]], axis=1).astype(np.int64)
            scales = np.ones((2, 2))
        if proposals is None:
            boxes = self._random_regions(rng, pair, scales)
        else:
            boxes = scale_boxes(
                np.asarray(proposals, dtype=np.float64).reshape(-1, 4), resized_hw[1] / ow, resized_hw[0] / oh
            )
            if flip:
                boxes = flip_boxes(boxes, resized_hw[1])
        regions, num_proposals = select_regions(
            rng,
            boxes,
            pair.intersection,
            self.num_regions,
            self.min_region_area_frac,
            self.pad_jitter,
            self.jitter_noise,
        )
        if num_proposals == 0:
            return None
        region_boxes = np.stack([image_to_view(regions, vb[v], scales[v]) for v in range(2)])
        query_boxes = np.stack(
            [
                jitter_boxes(
                    rng,
                    region_boxes[v],
                    self.query_jitter,
                    np.array([0.0, 0.0, view_hw[v, 1], view_hw[v, 0]], dtype=np.float64),
                    self.jitter_noise,
                )
                for v in range(2)
            ]
        )
        return TwoViewSample(
            original_hw=(oh, ow),
            resized_hw=resized_hw,
            flip=flip,
            swapped=pair.swapped,
            view_boxes=vb,
            intersection=pair.intersection,
            regions=regions,
            view_hw=view_hw,
            view_scales=scales,
            region_boxes=region_boxes,
            query_boxes=query_boxes,
            num_proposals=num_proposals,
        )

    def _random_regions(self, rng: np.random.Generator, pair: ViewPair, scales: np.ndarray) -> np.ndarray:
        """Official random regions, drawn in view 1's pixels and returned in image coordinates ``[K, 4]``."""
        inter_v1 = image_to_view(pair.intersection, pair.view_boxes[0], scales[0])
        boxes_v1 = intersection_random_boxes(
            rng,
            inter_v1,
            num_boxes=self.random_num_boxes,
            min_area_frac=self.min_region_area_frac,
            max_aspect=self.random_max_aspect,
            other_scale=(scales[1, 0] / scales[0, 0], scales[1, 1] / scales[0, 1]),
        )
        return view_to_image(boxes_v1, pair.view_boxes[0], scales[0])
