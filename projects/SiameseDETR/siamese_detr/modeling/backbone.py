"""Thin helpers around detectron2's :class:`~detectron2.modeling.backbone.ResNet` for DETR-style models.

DETR uses a single feature level (``res5``, stride 32) with frozen batch norm. ResNet-18/34 end with 512
channels (BasicBlock), ResNet-50/101 with 2048 (BottleneckBlock). ``stride_in_1x1=False`` puts the stride of
bottleneck blocks in the 3x3 conv, as in torchvision / SwAV / DETR weights (detectron2's own MSRA ``R-50.pkl``
weights need True).
"""

from typing import List, Sequence, Tuple

import torch
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.structures import ImageList
from torch.nn import functional as F

__all__ = ["make_resnet_stages", "build_resnet_backbone_for_detr", "feature_padding_mask"]


def make_resnet_stages(
    depth: int = 50, norm: str = "FrozenBN", stride_in_1x1: bool = False, **kwargs
) -> List:
    """``ResNet.make_default_stages`` for any depth: ``stride_in_1x1`` only exists for bottleneck blocks
    (depth >= 50) and is dropped otherwise, so a config switches depth with a single override."""
    if depth >= 50:
        kwargs["stride_in_1x1"] = stride_in_1x1
    return ResNet.make_default_stages(depth, norm=norm, **kwargs)


def build_resnet_backbone_for_detr(
    depth: int = 50,
    freeze_at: int = 1,
    norm: str = "FrozenBN",
    out_features: Sequence[str] = ("res5",),
    stride_in_1x1: bool = False,
) -> ResNet:
    """A detectron2 ``ResNet`` (stem + stages) returning ``out_features``; ``freeze_at=1`` freezes the
    stem.

    The model maps ``[B, 3, H, W]`` to ``{name: [B, C, ceil(H / s), ceil(W / s)]}``: ``res3`` / ``res4`` /
    ``res5`` have strides ``s`` 8 / 16 / 32 and ``C`` 512 / 1024 / 2048 for depth >= 50 (128 / 256 / 512 for
    ResNet-18/34)."""
    stem = BasicStem(in_channels=3, out_channels=64, norm=norm)  # the width the default stages read
    stages = make_resnet_stages(depth, norm=norm, stride_in_1x1=stride_in_1x1)
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)


def feature_padding_mask(images: ImageList, feature_hw: Tuple[int, int]) -> torch.Tensor:
    """Padding mask of a batch at feature resolution.

    Args:
        images: padded batch; ``images.tensor`` is ``[B, 3, Hp, Wp]`` and
            ``images.image_sizes[b] = (h_b, w_b)``
            the unpadded size of image ``b``.
        feature_hw: ``(H, W)`` of the feature map.

    Returns:
        bool ``[B, H, W]``, True where the feature cell is padding: the pixel mask (True outside
        ``[:h_b, :w_b]``) downsampled with nearest interpolation, i.e. cell ``(y, x)`` reads pixel
        ``(floor(y * Hp / H), floor(x * Wp / W))``. This is exact when ``Hp, Wp`` are multiples of the feature
        stride (``DETR.preprocess_image`` pads so); otherwise border cells may be misclassified.
    """
    tensor = images.tensor
    b, _, hp, wp = tensor.shape
    mask = torch.ones((b, hp, wp), dtype=torch.bool, device=tensor.device)
    for i, (h, w) in enumerate(images.image_sizes):
        mask[i, : int(h), : int(w)] = False
    mask = F.interpolate(mask[:, None].float(), size=tuple(feature_hw), mode="nearest")
    return mask[:, 0].to(torch.bool)
