"""Detectron2 dataset mapper for UP-DETR pretraining (Dai et al., CVPR 2021; section numbers of the extended
arXiv 2011.09094 text in shared/papers: §3.1 "Decoder", "we randomly crop patches as the query from the input
image and record the corresponding coordinates, width and height of the query as the ground truth"; official
``datasets/selfdet.py`` of github dddzg/up-detr, commit 44c0c6eb).

Per image, as the official ``SelfDet.__getitem__``:

1. ``n`` random query patches on the ORIGINAL image (``get_random_patch_from_img``): width / height uniform
   integers in ``[min_patch_size, W - min_patch_size]`` / ``[.., H - ..]``, top-left corner uniform in
   ``[0, W - w - 1]`` x ``[0, H - h - 1]`` (0 when the patch is as wide as the image); images with a side
   ``<= 2 * min_patch_size`` are skipped (the official takes the next image; here ``None`` lets Detectron2's
   ``MapDataset`` draw another);
2. each patch resized to ``patch_size`` (128) x 128 and given its own SimCLR augmentation (ColorJitter
   0.4/0.4/0.4/0.1 p=0.8, grayscale p=0.2, Gaussian blur sigma 0.1-2 p=0.5; no flip), via the Siamese mapper's
   :func:`~.siamese_mapper.crop_regions` / :func:`~.siamese_mapper.augment_crops`;
3. the image through the detection augmentation (official ImageNet: resize the short side to one of
   320..480, max 600, NO flip — "HorizontalFlip may cause the pretext too difficult"), the patch boxes moved
   with it (:func:`up_detr_augmentation`).
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.utils import comm
from torch.utils.data import get_worker_info

from .image_io import read_image_or_none
from .mapper_checks import at_least_one, checked_image_format
from .siamese_mapper import augment_crops, crop_regions
from ..utils.user_errors import UserValueError

__all__ = ["UPDETRMapper", "random_patch_boxes", "up_detr_augmentation", "UP_DETR_SCALES", "sample_rng",
           "transform_boxes"]

logger = logging.getLogger(__name__)

# official make_self_det_transforms: "The image of ImageNet is relatively small" (384 is not in the list)
UP_DETR_SCALES = (320, 336, 352, 368, 400, 416, 432, 448, 464, 480)


def up_detr_augmentation(min_sizes: Sequence[int] = UP_DETR_SCALES, max_size: int = 600) -> List[T.Augmentation]:
    """Official UP-DETR training transform: ``RandomResize(scales, max_size=600)``, no flip."""
    return [T.ResizeShortestEdge(list(min_sizes), max_size=max_size, sample_style="choice")]


def sample_rng(seed: Optional[int], call_index: int) -> np.random.Generator:
    """Generator of one sample, seeded with ``(seed, rank, dataloader worker id, call index)``; ``seed=None``
    uses ``torch.initial_seed()`` (different per worker) — the convention of ``SiameseViewMapper``."""
    info = get_worker_info()
    base = seed if seed is not None else torch.initial_seed()
    entropy = [int(base) % (1 << 64), comm.get_rank(), info.id if info is not None else 0, call_index]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def random_patch_boxes(rng: np.random.Generator, height: int, width: int, num: int, min_pixel: int = 8) -> np.ndarray:
    """``num`` boxes of the official ``get_random_patch_from_img``: float64 ``[num, 4]`` xyxy absolute pixels
    of the ``height x width`` image they are cut from (the original image), integer-valued.

    Requires ``height, width > 2 * min_pixel``. ``rng.integers(a, b)`` is numpy's ``randint(a, b)`` (b
    excluded), as the official calls."""
    if height <= 2 * min_pixel or width <= 2 * min_pixel:
        raise UserValueError(f"image {height}x{width} is too small for patches of at least {min_pixel} px")
    boxes = np.empty((num, 4), dtype=np.float64)
    for k in range(num):
        sw = int(rng.integers(min_pixel, width - min_pixel + 1))
        sh = int(rng.integers(min_pixel, height - min_pixel + 1))
        x = int(rng.integers(width - sw)) if sw != width else 0
        y = int(rng.integers(height - sh)) if sh != height else 0
        boxes[k] = (x, y, x + sw, y + sh)
    return boxes


def transform_boxes(transforms: T.TransformList, boxes: np.ndarray, image_hw: Tuple[int, int]):
    """Boxes (``[K, 4]`` xyxy absolute pixels of the input image) through ``transforms``, clipped to the output
    image of size ``image_hw = (H, W)``. Returns ``(boxes float32 [K, 4]`` xyxy absolute pixels of the output
    image, ``keep bool [K])`` where ``keep`` marks boxes with positive
    area after clipping (the official ``crop`` removes the others, with their patches)."""
    h, w = image_hw
    out = transforms.apply_box(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)) if len(boxes) else np.zeros((0, 4))
    out = np.asarray(out, dtype=np.float64).reshape(-1, 4)
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out.astype(np.float32), keep


class UPDETRMapper:
    """Dataset dict -> one augmented image with ``n`` random query patches (UP-DETR pretraining).

    Args:
        is_train: False turns the patch augmentation off (the official ``val`` query transform).
        image_format: channel order of the image and patches ("BGR" / "RGB").
        num_patches: ``n`` (official default 10); must equal the model's.
        min_patch_size: official ``min_pixel`` (8).
        patch_size: side of the resized patches (128).
        augmentation: detection transform of the image (default :func:`up_detr_augmentation`).
        color_jitter, color_jitter_prob, grayscale_prob, blur_prob, blur_sigma: SimCLR patch augmentation.
        seed: see :func:`sample_rng`; patch geometry and patch augmentation draw from it, the Detectron2
            augmentations from ``np.random`` (seeded per worker by Detectron2).

    Returns (``__call__``): ``None`` for an unreadable or too small image (counted in ``num_unreadable`` /
    ``num_too_small``) or when a custom augmentation with a crop leaves a patch's box empty (its target would
    have zero area and the model needs all ``n`` patches; counted in ``num_patch_cropped_out``; the official
    transform has no crop), else::

        image_id, file_name, height, width  (original image)
        image:       uint8 Tensor[3, H, W] augmented image (image_format order)
        patches:     uint8 Tensor[n, 3, S, S] the patches, cut from the ORIGINAL image, augmented
        patch_boxes: float32 Tensor[n, 4] xyxy absolute pixels of ``image`` (targets), clipped to it; the
                     model makes them cxcywh normalised by ``image``'s size (UP-DETR §3.1 "Loss")
    """

    def __init__(
        self,
        is_train: bool = True,
        image_format: str = "BGR",
        num_patches: int = 10,
        min_patch_size: int = 8,
        patch_size: int = 128,
        augmentation: Optional[Sequence] = None,
        color_jitter: Optional[Sequence[float]] = (0.4, 0.4, 0.4, 0.1),
        color_jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.5,
        blur_sigma: Tuple[float, float] = (0.1, 2.0),
        seed: Optional[int] = None,
    ):
        self.is_train = is_train
        self.image_format = checked_image_format("UPDETRMapper", image_format)
        self.num_patches = int(num_patches)
        self.min_patch_size = at_least_one("UPDETRMapper", "min_patch_size", min_patch_size,
                                           "the smallest side of a cut patch, in pixels")
        self.patch_size = at_least_one("UPDETRMapper", "patch_size", patch_size,
                                       "the side the patches are resized to, in pixels")
        augs = up_detr_augmentation() if augmentation is None else list(augmentation)
        self.augmentation = T.AugmentationList(augs)
        self.augment_kwargs = dict(color_jitter=color_jitter, color_jitter_prob=color_jitter_prob,
                                   grayscale_prob=grayscale_prob, blur_prob=blur_prob, blur_sigma=tuple(blur_sigma))
        self.seed = seed
        self.num_unreadable = 0
        self.num_too_small = 0
        self.num_patch_cropped_out = 0
        self._num_calls = 0

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        image = read_image_or_none(dataset_dict.get("file_name"), self.image_format, "UPDETRMapper")
        if image is None:
            self.num_unreadable += 1
            return None
        rng = sample_rng(self.seed, self._num_calls)
        self._num_calls += 1
        h, w = image.shape[:2]
        if h <= 2 * self.min_patch_size or w <= 2 * self.min_patch_size:
            self.num_too_small += 1
            return None
        boxes = random_patch_boxes(rng, h, w, self.num_patches, self.min_patch_size)
        patches = crop_regions(image, boxes, self.patch_size, channels_last=True)  # [n, S, S, 3]
        if self.is_train:
            augment_crops(rng, patches, self.image_format, **self.augment_kwargs)  # in place
        patches = patches.transpose(0, 3, 1, 2)
        aug_input = T.AugInput(image)
        transforms = self.augmentation(aug_input)
        out_image = aug_input.image
        out_boxes, keep = transform_boxes(transforms, boxes, out_image.shape[:2])
        if not keep.all():
            self._count_patch_cropped_out(dataset_dict)
            return None
        return {
            "image_id": dataset_dict.get("image_id"),
            "file_name": dataset_dict.get("file_name"),
            "height": int(h),
            "width": int(w),
            "image": torch.from_numpy(np.ascontiguousarray(out_image.transpose(2, 0, 1))),
            "patches": torch.from_numpy(np.ascontiguousarray(patches)),
            "patch_boxes": torch.as_tensor(out_boxes),
        }

    def _count_patch_cropped_out(self, dataset_dict: dict) -> None:
        """Count a sample skipped because the augmentation cut a patch's box away; warn at the 1st, 10th,
        100th, ... (detectron2's loader then draws another image, so a crop that cuts most patches away would
        otherwise only slow the training down)."""
        self.num_patch_cropped_out += 1
        n = self.num_patch_cropped_out
        if n == 10 ** (len(str(n)) - 1):  # 1, 10, 100, ...
            logger.warning(
                "UPDETRMapper: %d sample(s) skipped in this worker because the augmentation cropped a query "
                "patch's box out of the image (last: image_id %r, %d mapped); the loader takes another image. "
                "If this is frequent, give a crop that keeps more of the image (the official transform has none).",
                n, dataset_dict.get("image_id"), self._num_calls)
