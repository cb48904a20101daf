"""Detectron2 dataset mapper for DETR finetuning, with DETR's "RandomSelect" of two augmentation lists.

DETR (Carion et al. 2020, facebookresearch/detr ``datasets/coco.py``) trains with, at probability 0.5 each:

* plain branch: horizontal flip, resize short side to one of (480, 512, ..., 800), long side <= 1333;
* crop branch: horizontal flip, resize short side to one of (400, 500, 600), random crop with height and
  width each uniform in [384, 600] (detectron2 ``RandomCrop("absolute_range", (384, 600))``), then the
  plain resize (480..800, max 1333).

Test: resize short side 800, long side <= 1333. :func:`detr_train_augmentation`,
:func:`detr_crop_augmentation` and :func:`detr_test_augmentation` build these lists; configs can use
them through ``L(detr_train_augmentation)()`` or spell the lists out with ``L(T.ResizeShortestEdge)(...)``.
"""
import copy
import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .image_io import UnreadableImageError, num_unreadable_images, read_image_checked  # noqa: F401
from .image_io import read_image_or_none
from .mapper_checks import checked_image_format

logger = logging.getLogger(__name__)

DETR_TRAIN_MIN_SIZES = tuple(range(480, 801, 32))  # (480, 512, ..., 800)
DETR_CROP_RESIZE_SIZES = (400, 500, 600)
DETR_CROP_SIZE_RANGE = (384, 600)
DETR_MAX_SIZE = 1333
DETR_TEST_MIN_SIZE = 800


def detr_train_augmentation(min_sizes: Sequence[int] = DETR_TRAIN_MIN_SIZES, max_size: int = DETR_MAX_SIZE,
                            flip: bool = True) -> List[T.Augmentation]:
    """DETR's plain training branch: [flip,] resize short side to a choice of ``min_sizes``."""
    augs = [T.RandomFlip(prob=0.5, horizontal=True)] if flip else []
    return augs + [T.ResizeShortestEdge(list(min_sizes), max_size=max_size, sample_style="choice")]


def detr_crop_augmentation(min_sizes: Sequence[int] = DETR_TRAIN_MIN_SIZES, max_size: int = DETR_MAX_SIZE,
                           crop_resize_sizes: Sequence[int] = DETR_CROP_RESIZE_SIZES,
                           crop_size_range: Sequence[int] = DETR_CROP_SIZE_RANGE,
                           flip: bool = True) -> List[T.Augmentation]:
    """DETR's crop training branch: [flip,] resize to ``crop_resize_sizes``, random crop with sides
    in ``crop_size_range`` (absolute pixels), resize short side to a choice of ``min_sizes``."""
    augs = [T.RandomFlip(prob=0.5, horizontal=True)] if flip else []
    return augs + [
        T.ResizeShortestEdge(list(crop_resize_sizes), sample_style="choice"),
        T.RandomCrop("absolute_range", tuple(crop_size_range)),
        T.ResizeShortestEdge(list(min_sizes), max_size=max_size, sample_style="choice"),
    ]


def detr_test_augmentation(min_size: int = DETR_TEST_MIN_SIZE, max_size: int = DETR_MAX_SIZE
                           ) -> List[T.Augmentation]:
    """DETR's test resize: short side ``min_size``, long side at most ``max_size``."""
    return [T.ResizeShortestEdge(min_size, max_size=max_size)]


class DetrDatasetMapper:
    """Maps a Detectron2 dataset dict to DETR's training / inference input.

    Args:
        is_train: keep (transformed) annotations as ``instances``; otherwise drop annotations.
        augmentation: list of ``T.Augmentation`` (or transforms) — the plain branch / test resize.
        augmentation_with_crop: optional second list; when training, each sample uses it with probability
            0.5 (DETR's ``RandomSelect``), else ``augmentation``. Drawn from ``np.random`` like Detectron2's
            augmentations (seeded per dataloader worker).
        image_format: ``read_image`` format, "BGR" (Detectron2 ResNet) or "RGB"; another value raises
            ``UserValueError`` here, naming ``dataloader.train.mapper.image_format`` (``.test.`` when not
            ``is_train``).

    Returns (``__call__``): when training, ``None`` if the image file cannot be read (a counted warning;
    Detectron2's ``MapDataset`` then draws another sample); at inference an unreadable image raises
    :class:`~.image_io.UnreadableImageError` naming the file (drawing another image would evaluate one image
    twice and another not at all). Otherwise the dataset dict plus
    ``"image"``: uint8 Tensor[3, H, W] of the augmented image in ``image_format`` channel order, and when
    training ``"instances"``: ``Instances`` with ``gt_boxes`` (``Boxes``, xyxy absolute pixels of the
    augmented image, clipped to it, empty boxes removed) and ``gt_classes`` (Long[N], contiguous ids).
    Crowd annotations are dropped; masks and keypoints are not used by DETR and are removed.
    """

    def __init__(self, is_train: bool, augmentation: Sequence,
                 augmentation_with_crop: Optional[Sequence] = None, image_format: str = "BGR"):
        self.is_train = is_train
        self.augmentation = T.AugmentationList(list(augmentation))
        self.augmentation_with_crop = (
            None if augmentation_with_crop is None else T.AugmentationList(list(augmentation_with_crop)))
        self.image_format = checked_image_format("DetrDatasetMapper", image_format, "train" if is_train else "test")
        self.num_unreadable = 0
        mode = "training" if is_train else "inference"
        logger.info(f"DetrDatasetMapper ({mode}): augmentation {self.augmentation}, "
                    f"with crop {self.augmentation_with_crop}")

    def _read(self, dataset_dict: Dict) -> Optional[np.ndarray]:
        if not self.is_train:
            image, reason = read_image_checked(dataset_dict["file_name"], self.image_format)
            if image is None:
                raise UnreadableImageError(
                    f"DetrDatasetMapper (inference): cannot read test image {dataset_dict['file_name']!r} "
                    f"({reason}); evaluation never skips or replaces an image: fix or remove it (with its "
                    "annotations) from the test set"
                )
            return image
        image = read_image_or_none(dataset_dict["file_name"], self.image_format, "DetrDatasetMapper")
        self.num_unreadable += image is None
        return image

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read(dataset_dict)
        if image is None:
            return None
        utils.check_image_size(dataset_dict, image)

        augmentation = self.augmentation
        if self.is_train and self.augmentation_with_crop is not None and np.random.rand() < 0.5:
            augmentation = self.augmentation_with_crop
        aug_input = T.AugInput(image)
        transforms = augmentation(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]  # (H, W)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            annos = []
            for obj in dataset_dict.pop("annotations"):
                if obj.get("iscrowd", 0) != 0:
                    continue
                obj.pop("segmentation", None)
                obj.pop("keypoints", None)
                annos.append(utils.transform_instance_annotations(obj, transforms, image_shape))
            instances = utils.annotations_to_instances(annos, image_shape)
            dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict
