"""Detectron2 dataset mapper for DETReg pretraining (Bar et al., CVPR 2022; section numbers of the arXiv
2106.04550v1 text in shared/papers: §3 Selective Search proposals, §4 their selection, §6 "Pretraining stage":
M = 30 proposals, flip / crop / resize to one of 10 sizes in 320..480, the same augmentations on the patches;
official ``datasets/selfdet.py`` of github amirbar/DETReg, commit a4b63635).

Per image, as the official ``SelfDet.__getitem__``:

1. proposals of the ORIGINAL image from ``proposal_source`` (a store, or online Selective Search — the
   official ``topk`` runs it on the image squashed to 128 x 128: ``OnlineProposals("selective_search",
   resize=128, square=True)``; ``resize=128`` alone, as the demo configs, keeps the aspect ratio with a short
   side of 128; the official ``mc`` policy's cache holds full-resolution proposals), in the method's ranking
   order;
2. K of them chosen by the policy (:func:`~.proposals.selection.select_proposals`: top-k, random-k,
   importance sampling);
3. the crop of each chosen box from the ORIGINAL image, resized to 128 x 128 with its own SimCLR
   augmentation (the official ``query_transform``) — the embedding targets z;
4. the image through DETR's augmentation (flip; resize short side to one of 320..480, max 600, or resize to
   400/500/600, random crop 384-600, resize again), the boxes moved with it, clipped, and boxes with no area
   left removed WITH their crops (official ``transforms.crop`` filters ``patches`` with the boxes);
5. fewer than ``min_proposals`` (official 2) boxes before or after the augmentation: ``None``
   (Detectron2's ``MapDataset`` draws another image; the official draws a random one).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import transforms as T

from .detr_mapper import detr_crop_augmentation, detr_train_augmentation
from .image_io import read_image_or_none
from .proposals.selection import select_proposals
from .siamese_mapper import augment_crops, crop_regions
from .mapper_checks import at_least_one, checked_image_format
from .up_detr_mapper import UP_DETR_SCALES, sample_rng, transform_boxes
from ..utils.user_errors import UserValueError

__all__ = ["DETRegMapper", "detreg_augmentations"]


def detreg_augmentations(min_sizes: Sequence[int] = UP_DETR_SCALES, max_size: int = 600):
    """The official DETReg ``make_self_det_transforms('train')`` as two Detectron2 lists for
    ``RandomSelect``: ``(plain, with_crop)``, both starting with a horizontal flip."""
    return detr_train_augmentation(min_sizes, max_size), detr_crop_augmentation(min_sizes, max_size)


def _check_min_proposals(min_proposals: int, num_proposals: int, policy: str) -> None:
    """Refuse at construction a ``min_proposals`` that would fail later: below 1, an image with no proposal
    reaches ``DETRegPretrain`` (which raises mid-run); above ``num_proposals`` with the "topk" / "random"
    policies (at most K chosen), every image is skipped and Detectron2's loader retries forever."""
    if min_proposals < 1:
        raise UserValueError(f"DETRegMapper: min_proposals (dataloader.train.mapper.min_proposals) must be >= 1, got "
                             f"{min_proposals}: DETRegPretrain needs at least one proposal per image (official 2)")
    if policy in ("topk", "random") and min_proposals > num_proposals:
        raise UserValueError(f"DETRegMapper: min_proposals={min_proposals} > num_proposals={num_proposals} with policy "
                             f"{policy!r} skips every image; lower dataloader.train.mapper.min_proposals or raise "
                             f"num_proposals")


class DETRegMapper:
    """Dataset dict -> one augmented image with K proposal boxes and their crops (DETReg pretraining).

    Args:
        proposal_source: ``(dataset_dict, image uint8 [H, W, 3]) -> (boxes [M, 4] xyxy absolute original-image
            pixels in rank order, scores [M])`` (``StoreProposals`` / ``OnlineProposals`` / ``RandomProposals``).
        num_proposals: K (30; the paper's M of §5-6, its K of §4).
        policy: "topk" (official default), "random" or "importance".
        importance_total, max_sampled: see :func:`~.proposals.selection.select_proposals`.
        augmentation, augmentation_with_crop: the two branches of DETR's ``RandomSelect`` (probability 0.5
            each in training); default :func:`detreg_augmentations`. ``augmentation_with_crop=None`` with an
            explicit ``augmentation`` uses the latter only.
        crop_size: side of the crops (128); min_proposals: see the module docstring; at least 1 and, with the
            "topk" / "random" policies, at most ``num_proposals`` (checked here).
        color_jitter, ...: SimCLR crop augmentation (training only).
        seed: see :func:`~.up_detr_mapper.sample_rng` (policy draws, crop augmentation, branch choice).

    Returns (``__call__``)::

        image_id, file_name, height, width  (original image)
        image:          uint8 Tensor[3, H, W] augmented image
        proposal_boxes: float32 Tensor[K', 4] xyxy absolute pixels of ``image`` (targets, clipped to it; the
                        model makes them cxcywh normalised by ``image``'s size); K' <= K with "topk" /
                        "random", with "importance" up to ``max_sampled`` (uncapped by default)
        crops:          uint8 Tensor[K', 3, S, S] (S = crop_size) crops of the same proposals (row k <-> box
                        k), cut from the ORIGINAL image before its augmentation
        proposal_rank:  int64 Tensor[K'] rank of each proposal in the source's order (0 = first), counted
                        after dropping the source's non-finite boxes
    """

    def __init__(
        self,
        proposal_source: Callable,
        is_train: bool = True,
        image_format: str = "BGR",
        num_proposals: int = 30,
        policy: str = "topk",
        importance_total: Optional[int] = None,
        max_sampled: Optional[int] = None,
        augmentation: Optional[Sequence] = None,
        augmentation_with_crop: Optional[Sequence] = None,
        crop_size: int = 128,
        min_proposals: int = 2,
        color_jitter: Optional[Sequence[float]] = (0.4, 0.4, 0.4, 0.1),
        color_jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.5,
        blur_sigma: Tuple[float, float] = (0.1, 2.0),
        seed: Optional[int] = None,
    ):
        if proposal_source is None:
            raise UserValueError("DETRegMapper needs a proposal_source (StoreProposals / OnlineProposals / ...)")
        at_least_one("DETRegMapper", "num_proposals", num_proposals, "K, the proposals each image keeps")
        select_proposals(np.random.default_rng(0), 1, num_proposals, policy)  # validates policy and K
        _check_min_proposals(int(min_proposals), int(num_proposals), policy)
        self.proposal_source = proposal_source
        self.is_train = is_train
        self.image_format = checked_image_format("DETRegMapper", image_format)
        self.num_proposals = int(num_proposals)
        self.policy = policy
        self.importance_total = importance_total
        self.max_sampled = max_sampled
        if augmentation is None:
            augmentation, default_crop = detreg_augmentations()
            augmentation_with_crop = default_crop if augmentation_with_crop is None else augmentation_with_crop
        self.augmentation = T.AugmentationList(list(augmentation))
        self.augmentation_with_crop = (
            None if augmentation_with_crop is None else T.AugmentationList(list(augmentation_with_crop)))
        self.crop_size = at_least_one("DETRegMapper", "crop_size", crop_size, "the side of the box crops, in pixels")
        self.min_proposals = int(min_proposals)
        self.augment_kwargs = dict(color_jitter=color_jitter, color_jitter_prob=color_jitter_prob,
                                   grayscale_prob=grayscale_prob, blur_prob=blur_prob, blur_sigma=tuple(blur_sigma))
        self.seed = seed
        self.num_unreadable = 0
        self.num_few_proposals = 0
        self._num_calls = 0

    def _proposals(self, dataset_dict: dict, image: np.ndarray) -> np.ndarray:
        """Source proposals clipped to the image, degenerate / non-finite ones removed, rank order kept."""
        boxes, _ = self.proposal_source(dataset_dict, image)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        h, w = image.shape[:2]
        boxes = boxes[np.isfinite(boxes).all(axis=1)]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        return boxes

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        image = read_image_or_none(dataset_dict.get("file_name"), self.image_format, "DETRegMapper")
        if image is None:
            self.num_unreadable += 1
            return None
        rng = sample_rng(self.seed, self._num_calls)
        self._num_calls += 1
        candidates = self._proposals(dataset_dict, image)
        valid = np.flatnonzero((candidates[:, 2] > candidates[:, 0]) & (candidates[:, 3] > candidates[:, 1]))
        chosen = valid[select_proposals(rng, len(valid), self.num_proposals, self.policy,
                                        self.importance_total, self.max_sampled)] if len(valid) else valid
        if len(chosen) < self.min_proposals:
            self.num_few_proposals += 1
            return None
        boxes = candidates[chosen]
        crops = crop_regions(image, boxes, self.crop_size, channels_last=True)  # [K, S, S, 3]
        if self.is_train:
            augment_crops(rng, crops, self.image_format, **self.augment_kwargs)  # in place
        crops = crops.transpose(0, 3, 1, 2)

        augmentation = self.augmentation
        if self.is_train and self.augmentation_with_crop is not None and rng.uniform() < 0.5:
            augmentation = self.augmentation_with_crop
        aug_input = T.AugInput(image)
        transforms = augmentation(aug_input)
        out_image = aug_input.image
        out_boxes, keep = transform_boxes(transforms, boxes, out_image.shape[:2])
        if keep.sum() < self.min_proposals:
            self.num_few_proposals += 1
            return None
        return {
            "image_id": dataset_dict.get("image_id"),
            "file_name": dataset_dict.get("file_name"),
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "image": torch.from_numpy(np.ascontiguousarray(out_image.transpose(2, 0, 1))),
            "proposal_boxes": torch.as_tensor(out_boxes[keep]),
            "crops": torch.from_numpy(np.ascontiguousarray(crops[keep])),
            "proposal_rank": torch.as_tensor(chosen[keep], dtype=torch.int64),
        }
