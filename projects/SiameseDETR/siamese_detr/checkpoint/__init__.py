"""Checkpoint converters: torchvision / SwAV / DETReg-style ResNet backbones -> detectron2 names
(:mod:`.torchvision_resnet`, exported here), and the official DETR, Conditional DETR, Deformable DETR, UP-DETR,
DETReg and Siamese DETR checkpoints -> this project's names (:mod:`.registry`: ``get_converter(name)``; the
``official_*`` modules).

The command-line front end is ``tools/convert_checkpoint.py``.
"""

from .torchvision_resnet import convert_torchvision_resnet, map_torchvision_resnet, unwrap_state_dict

__all__ = ["convert_torchvision_resnet", "map_torchvision_resnet", "unwrap_state_dict"]
