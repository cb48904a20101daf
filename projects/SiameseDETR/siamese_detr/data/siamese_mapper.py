"""Detectron2 dataset mapper producing the two views of Siamese DETR pretraining (paper §3.2).

The geometry (resize, flip, IoU-constrained views, regions, jitter) is :class:`~.views.ViewPolicy`;
this module adds the pixels, in the order of the official ``SiameseDETRDataset.__getitem__``
(``openselfsup/datasets/siamese_detr.py``): decode, base resize and shared flip, cut each view and resize
it to the outer box's size (``TwoViewRandomResizedCrop``; flip, cut and resize are one bilinear warp per
view, from the image itself when the base resize enlarges it), cut the ``crop_size x crop_size`` crops of every
region from the resized, NOT yet colour-augmented view, give every crop its own SimSiam augmentation
(``crop_pipeline``), then augment each view (``view_pipeline``). Both pipelines are SimSiam's (Chen & He
2021): ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2, Gaussian blur sigma 0.1–2.0 p=0.5.
All pixel work is done with OpenCV on ``uint8`` HWC arrays (cheaper than float tensors).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.utils import comm
from torch.utils.data import get_worker_info

from .image_io import read_image_or_none
from .mapper_checks import at_least_one, checked_image_format, size_range
from .views import TwoViewSample, ViewPolicy
from ..utils.user_errors import UserValueError

__all__ = ["SiameseViewMapper", "simsiam_augment", "crop_regions", "augment_crops"]

logger = logging.getLogger(__name__)


_GRAY_CODE = {"BGR": cv2.COLOR_BGR2GRAY, "RGB": cv2.COLOR_RGB2GRAY}
_HSV_CODES = {"BGR": (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR), "RGB": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)}
_RAMP = np.arange(256, dtype=np.float64)


def _lut(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(image, np.clip(np.rint(table), 0, 255).astype(np.uint8))


def _gray3(image: np.ndarray, image_format: str) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(image, _GRAY_CODE[image_format]), cv2.COLOR_GRAY2BGR)


def _color_jitter(
    rng: np.random.Generator, image: np.ndarray, strength: Sequence[float], image_format: str
) -> np.ndarray:
    """torchvision ``ColorJitter(b, c, s, h)`` semantics on ``uint8 [H, W, 3]``: factors
    ``U[1-b, 1+b]`` etc., hue shift ``U[-h, h]`` of a full turn, the four ops in random order."""
    b, c, s, h = strength
    for op in rng.permutation(4):
        if op == 0 and b > 0:  # brightness: x * f
            image = _lut(image, _RAMP * rng.uniform(max(0.0, 1 - b), 1 + b))
        elif op == 1 and c > 0:  # contrast: blend with the mean grey level
            f = rng.uniform(max(0.0, 1 - c), 1 + c)
            mean = float(cv2.cvtColor(image, _GRAY_CODE[image_format]).mean())
            image = _lut(image, f * _RAMP + (1 - f) * mean)
        elif op == 2 and s > 0:  # saturation: blend with the grey image
            f = rng.uniform(max(0.0, 1 - s), 1 + s)
            image = cv2.addWeighted(image, f, _gray3(image, image_format), 1 - f, 0.0)
        elif op == 3 and h > 0:  # hue: rotate H (OpenCV uint8 H is in [0, 180))
            to_hsv, from_hsv = _HSV_CODES[image_format]
            shift = int(round(rng.uniform(-h, h) * 180))
            table = np.empty((256, 1, 3), dtype=np.uint8)  # H rotated, S and V unchanged, in one LUT pass
            table[:, 0, 0] = (np.arange(256) + shift) % 180
            table[:, 0, 1] = table[:, 0, 2] = np.arange(256)
            image = cv2.cvtColor(cv2.LUT(cv2.cvtColor(image, to_hsv), table), from_hsv)
    return image


def simsiam_augment(
    rng: np.random.Generator,
    image: np.ndarray,
    image_format: str = "BGR",
    color_jitter: Optional[Sequence[float]] = (0.4, 0.4, 0.4, 0.1),
    color_jitter_prob: float = 0.8,
    grayscale_prob: float = 0.2,
    blur_prob: float = 0.5,
    blur_sigma: Tuple[float, float] = (0.1, 2.0),
) -> np.ndarray:
    """SimSiam photometric augmentation of one view, ``uint8 [H, W, 3]`` -> ``uint8 [H, W, 3]``
    (same channel order, no geometric change, so boxes are unaffected). ``color_jitter=None`` or a zero
    probability disables a step. Paper §3.2: "augmentation pipeline in [8]" (SimSiam)."""
    if color_jitter is not None and rng.uniform() < color_jitter_prob:
        image = _color_jitter(rng, image, color_jitter, image_format)
    if rng.uniform() < grayscale_prob:
        image = _gray3(image, image_format)
    if rng.uniform() < blur_prob:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(blur_sigma[0], blur_sigma[1]))
    return image


def crop_regions(image: np.ndarray, boxes: np.ndarray, size: int, channels_last: bool = False) -> np.ndarray:
    """Crops of ``boxes [n, 4]`` (xyxy absolute pixels of ``image [H, W, 3]``) resized to ``size x size``:
    the ``Crop(x, b)`` of paper §3.3, Eq. 5.

    The box is rounded outwards to whole pixels (at least 1 px) and resized bilinearly (small images /
    small regions are upsampled); area interpolation only when shrinking by more than 2x in both axes,
    where bilinear would alias (profiled: area costs ~9x bilinear per 128 px crop, the mapper's main
    cost when used always). Returns ``uint8 [n, 3, S, S]`` (a transposed view of a contiguous
    ``[n, S, S, 3]`` buffer), or that contiguous ``[n, S, S, 3]`` buffer with ``channels_last=True``.
    """
    h, w = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        x0 = min(max(int(np.floor(x0)), 0), w - 1)
        y0 = min(max(int(np.floor(y0)), 0), h - 1)
        x1 = max(min(int(np.ceil(x1)), w), x0 + 1)
        y1 = max(min(int(np.ceil(y1)), h), y0 + 1)
        patch = image[y0:y1, x0:x1]
        strong_shrink = patch.shape[0] > 2 * size and patch.shape[1] > 2 * size
        interp = cv2.INTER_AREA if strong_shrink else cv2.INTER_LINEAR
        out[k] = cv2.resize(patch, (size, size), interpolation=interp)
    return out if channels_last else out.transpose(0, 3, 1, 2)


def augment_crops(rng: np.random.Generator, crops: np.ndarray, image_format: str = "BGR", **augment_kwargs):
    """Each crop of ``uint8 [n, S, S, 3]`` (channels last, contiguous) through its own
    :func:`simsiam_augment` (official ``crop_pipeline``, one draw per crop), in place. Returns ``crops``."""
    for k in range(len(crops)):
        crops[k] = simsiam_augment(rng, crops[k], image_format, **augment_kwargs)
    return crops


class SiameseViewMapper:
    """Dataset dict -> two augmented views with corresponding regions (Siamese DETR pretraining).

    Every knob is a constructor argument (LazyConfig: ``L(SiameseViewMapper)(...)``); the geometric ones
    are those of :class:`~.views.ViewPolicy`.

    Args:
        is_train: when False the flip, the swap and the photometric augmentation are turned off.
        image_format: channel order of the decoded image and of every output image ("BGR" or "RGB").
        proposal_source: callable ``(dataset_dict, image uint8 [H, W, 3]) -> (boxes float [K, 4] xyxy absolute
            original-image pixels in score order, scores [K])`` such as ``StoreProposals``/``OnlineProposals``/
            ``RandomProposals``; ``None`` = the official "random boxes" ablation: ``num_random_proposals``
            fresh boxes inside the views' overlap per sample, aspect <= ``random_max_aspect``, area >=
            ``min_region_area_frac`` of the overlap, the first ``num_regions - 1`` valid ones
            (:func:`~siamese_detr.data.proposals.methods.intersection_random_boxes`).
        color_jitter: ``(brightness, contrast, saturation, hue)`` strengths, or None for no colour jitter.
        resize_views: resize both views to the outer box's size (official); False = plain pixel cuts.
        crop_augment: give every crop its own SimSiam augmentation (official ``crop_pipeline``; off when
            ``is_train`` is False).
        seed: base seed; the generator of the i-th call of this mapper copy is seeded with
            ``(seed, rank, dataloader worker id, i)``, so the same seed gives the same samples and different
            workers/ranks give different ones. ``None`` uses ``torch.initial_seed()`` (which Detectron2 and
            the DataLoader set differently per worker) instead of ``seed``.

    Returns (``__call__``): ``None`` when the image cannot be read (logged, counted in
    ``num_unreadable``) or when no proposal lies in the views' overlap (counted in ``num_no_proposals``,
    logged at the 1st, 10th, 100th, ... such sample; the official dataset raises and takes another image);
    Detectron2's ``MapDataset`` then draws another image. Else a dict::

        image_id, file_name, height, width   (original image)
        num_proposals: int                  regions from proposals before padding (region 0 not counted)
        resized_height, resized_width, flip  base resize output size and shared flip (for mapping back)
        views: [view1, view2], each
            image:        uint8 Tensor[3, Hv, Wv] (image_format order); with resize_views=True (default)
                          Hv x Wv = the outer box's size, the same for both views (each view's cut resized
                          to it); with resize_views=False each view keeps its cut's own size
            region_boxes: float32 Tensor[n, 4] xyxy absolute in this view's pixels (targets b_v of Eq. 9;
                          the model makes them cxcywh normalised by Hv x Wv); row k of both
                          views is the same image region, row 0 the intersection of the views
            query_boxes:  float32 Tensor[n, 4] region_boxes with ±query_jitter, clipped to the view, same
                          frame (the RoIAlign boxes of Eq. 4)
            crops:        uint8 Tensor[n, 3, S, S] (S = crop_size) crops of region_boxes from this view before
                          its colour augmentation, each with its own augmentation (Crop of Eq. 5)
            view_box:     float32 Tensor[4] xyxy of the pixels cut for this view in the resized (and
                          flipped) image
            view_scale:   float32 Tensor[2] (sx, sy): view pixels = (resized-image pixels - view_box[:2]) *
                          view_scale; (1, 1) with resize_views=False
    """

    def __init__(
        self,
        is_train: bool = True,
        image_format: str = "BGR",
        proposal_source: Optional[Callable] = None,
        tau: float = 0.5,
        outer_area: Tuple[float, float] = (0.5, 1.0),
        outer_aspect: Tuple[float, float] = (3 / 4, 4 / 3),
        short_side_range: Tuple[int, int] = (320, 480),
        max_size: int = 600,
        num_regions: int = 10,
        min_region_area_frac: float = 0.05,
        pad_jitter: float = 0.1,
        query_jitter: float = 0.1,
        crop_size: int = 128,
        shrink_outer: bool = True,
        swap_prob: float = 0.5,
        flip_prob: float = 0.5,
        color_jitter: Optional[Sequence[float]] = (0.4, 0.4, 0.4, 0.1),
        seed: Optional[int] = None,
        color_jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.5,
        blur_sigma: Tuple[float, float] = (0.1, 2.0),
        num_random_proposals: int = 100,
        random_max_aspect: float = 8.0,
        resize_views: bool = True,
        crop_augment: bool = True,
        jitter_noise: str = "sigmoid_normal",
    ):
        mapper = "SiameseViewMapper"
        self.image_format = checked_image_format(mapper, image_format)
        if not 0.0 <= float(tau) <= 1.0:  # checked here, not at the first sample
            raise UserValueError(f"SiameseViewMapper: tau (the IoU of the two views, dataloader.train.mapper.tau) must "
                                 f"lie in [0, 1], got {tau}")
        self.is_train = is_train
        self.proposal_source = proposal_source
        self.crop_size = at_least_one(mapper, "crop_size", crop_size, "the side of the region crops, in pixels")
        self.seed = seed
        self.policy = ViewPolicy(
            short_side_range=size_range(mapper, "short_side_range", short_side_range,
                                        "the short side of the resized image, in pixels, drawn in it"),
            max_size=at_least_one(mapper, "max_size", max_size, "the longest side allowed, in pixels"),
            tau=tau,
            outer_area=tuple(outer_area),
            outer_aspect=tuple(outer_aspect),
            num_regions=num_regions,
            min_region_area_frac=min_region_area_frac,
            pad_jitter=pad_jitter,
            query_jitter=query_jitter,
            shrink_outer=shrink_outer,
            swap_prob=swap_prob if is_train else 0.0,
            flip_prob=flip_prob if is_train else 0.0,
            resize_views=resize_views,
            random_num_boxes=num_random_proposals,
            random_max_aspect=random_max_aspect,
            jitter_noise=jitter_noise,
        )
        self.augment_kwargs = dict(
            color_jitter=color_jitter,
            color_jitter_prob=color_jitter_prob if is_train else 0.0,
            grayscale_prob=grayscale_prob if is_train else 0.0,
            blur_prob=blur_prob if is_train else 0.0,
            blur_sigma=tuple(blur_sigma),
        )
        self.crop_augment = bool(crop_augment) and is_train
        self.num_unreadable = 0
        self.num_no_proposals = 0
        self._num_calls = 0

    def _next_rng(self) -> np.random.Generator:
        """Generator for the next sample: ``(base seed, rank, worker id, call index)``."""
        info = get_worker_info()
        worker_id = info.id if info is not None else 0
        base = self.seed if self.seed is not None else torch.initial_seed()
        entropy = [int(base) % (1 << 64), comm.get_rank(), worker_id, self._num_calls]
        self._num_calls += 1
        return np.random.default_rng(np.random.SeedSequence(entropy))

    def _read(self, dataset_dict: dict) -> Optional[np.ndarray]:
        image = read_image_or_none(dataset_dict.get("file_name"), self.image_format, "SiameseViewMapper")
        self.num_unreadable += image is None
        return image

    def _proposals(self, rng: np.random.Generator, dataset_dict: dict, image: np.ndarray) -> Optional[np.ndarray]:
        """Proposals ``[K, 4]`` xyxy original pixels, or None for the per-sample random regions."""
        if self.proposal_source is None:
            return None
        boxes, _scores = self.proposal_source(dataset_dict, image)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return boxes[np.isfinite(boxes).all(axis=1)]

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        image = self._read(dataset_dict)
        if image is None:
            return None
        rng = self._next_rng()
        proposals = self._proposals(rng, dataset_dict, image)
        geometry = self.policy.sample(rng, image.shape[:2], proposals)
        if geometry is None:
            self._count_no_proposals(dataset_dict)
            return None
        source = self._resize(image, geometry)
        views = [self._make_view(rng, source, geometry, v) for v in range(2)]
        return {
            "image_id": dataset_dict.get("image_id"),
            "file_name": dataset_dict.get("file_name"),
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "num_proposals": int(geometry.num_proposals),
            "resized_height": int(geometry.resized_hw[0]),
            "resized_width": int(geometry.resized_hw[1]),
            "flip": bool(geometry.flip),
            "views": views,
        }

    def _count_no_proposals(self, dataset_dict: dict) -> None:
        self.num_no_proposals += 1
        n = self.num_no_proposals
        if n == 10 ** (len(str(n)) - 1):  # 1, 10, 100, ...
            logger.warning(
                "SiameseViewMapper: %d sample(s) skipped in this worker because no proposal lies in the views' "
                "overlap (last: image_id %r, %d mapped); the loader takes another image, as the official code.",
                n,
                dataset_dict.get("image_id"),
                self._num_calls,
            )

    @staticmethod
    def _resize(image: np.ndarray, geometry: TwoViewSample) -> np.ndarray:
        """Source of the views: the image itself when the base resize enlarges it (the views are then
        resampled from it in one pass), else the base resize with area interpolation (anti-aliasing), from
        which the views are enlarged. The flip is applied by :meth:`_warp_view`."""
        (h, w), (rh, rw) = image.shape[:2], geometry.resized_hw
        if rh >= h and rw >= w:
            return image
        interp = cv2.INTER_AREA if rh < h and rw < w else cv2.INTER_LINEAR
        return cv2.resize(image, (rw, rh), interpolation=interp)

    @staticmethod
    def _warp_view(source: np.ndarray, geometry: TwoViewSample, v: int) -> np.ndarray:
        """View ``v``: base resize, flip, cut ``view_boxes[v]`` and resize to ``view_hw[v]`` as ONE bilinear
        warp of ``source`` (``uint8 [Hs, Ws, 3]``, the image at any scale; :meth:`_resize`).

        With pixel centres at half-integers (OpenCV's resize convention), view pixel ``u`` lies at resized
        coordinate ``X = (u + 0.5) / sx + x0`` (``X -> rw - X`` when flipped), i.e. at source pixel
        ``X * Ws / rw - 0.5``; likewise for ``y`` (never flipped). Returns ``uint8 [H_v, W_v, 3]``.
        """
        (rh, rw), (sh, sw) = geometry.resized_hw, source.shape[:2]
        kx, ky = sw / rw, sh / rh
        sx, sy = (float(c) for c in geometry.view_scales[v])
        x0, y0 = (float(c) for c in geometry.view_boxes[v][:2])
        out_h, out_w = (int(c) for c in geometry.view_hw[v])
        if geometry.flip:
            ax, bx = -kx / sx, (rw - x0 - 0.5 / sx) * kx - 0.5
        else:
            ax, bx = kx / sx, (x0 + 0.5 / sx) * kx - 0.5
        matrix = np.array([[ax, 0.0, bx], [0.0, ky / sy, (y0 + 0.5 / sy) * ky - 0.5]], dtype=np.float64)
        return cv2.warpAffine(
            source, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )

    def _make_view(
        self, rng: np.random.Generator, source: np.ndarray, geometry: TwoViewSample, v: int
    ) -> dict:
        view = self._warp_view(source, geometry, v)
        crops = crop_regions(view, geometry.region_boxes[v], self.crop_size, channels_last=True)
        if self.crop_augment:
            crops = augment_crops(rng, crops, self.image_format, **self.augment_kwargs)
        view = simsiam_augment(rng, view, self.image_format, **self.augment_kwargs)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(view.transpose(2, 0, 1))),
            "region_boxes": torch.as_tensor(geometry.region_boxes[v], dtype=torch.float32),
            "query_boxes": torch.as_tensor(geometry.query_boxes[v], dtype=torch.float32),
            "crops": torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2))),
            "view_box": torch.as_tensor(geometry.view_boxes[v], dtype=torch.float32),
            "view_scale": torch.as_tensor(geometry.view_scales[v], dtype=torch.float32),
        }
