"""A narrow detectron2 ResNet for the CPU demo: ResNet-18/34 layout with ``width`` channels in res2
(torchvision's is 64), doubling per stage, so ``width=32`` costs about a quarter of a ResNet-18.

Its state dict uses detectron2's ResNet names (``stem.conv1.*``, ``res2.0.conv1.*``, norm ``*.norm.*``),
so a checkpoint trained with ``norm="BN"`` loads into the same network with ``norm="FrozenBN"``.
"""
from typing import Sequence

from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.modeling.backbone.resnet import BasicBlock

__all__ = ["build_narrow_resnet"]

_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def build_narrow_resnet(
    depth: int = 18,
    width: int = 32,
    norm: str = "FrozenBN",
    out_features: Sequence[str] = ("res4",),
    freeze_at: int = 0,
) -> ResNet:
    """ResNet-``depth`` (18 or 34, basic blocks) with ``width * 2**i`` channels in stage ``res{i+2}``.

    Strides: stem 4, res2 4, res3 8, res4 16, res5 32. Stages after the last of ``out_features`` are not
    built (``ResNet`` drops them), so ``out_features=("res4",)`` has no res5. ``norm``: a detectron2 norm name
    ("FrozenBN", "BN", ...); ``freeze_at``: as detectron2's ``ResNet.freeze`` (0: nothing frozen).

    Returns:
        a detectron2 :class:`ResNet` whose forward gives ``{name: [N, C, ~H / stride, ~W / stride]}`` for
        ``out_features``, e.g. ``width=32``: ``res4`` with 128 channels at stride 16.
    """
    if depth not in _BLOCKS:
        raise ValueError(f"depth must be one of {sorted(_BLOCKS)}, got {depth}")
    stem = BasicStem(in_channels=3, out_channels=width, norm=norm)
    stages, in_channels = [], width
    for i, blocks in enumerate(_BLOCKS[depth]):
        out_channels = width * 2 ** i
        stages.append(
            ResNet.make_stage(
                block_class=BasicBlock,
                num_blocks=blocks,
                in_channels=in_channels,
                out_channels=out_channels,
                stride_per_block=[1 if i == 0 else 2] + [1] * (blocks - 1),
                norm=norm,
            )
        )
        in_channels = out_channels
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)
