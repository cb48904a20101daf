"""Checkpoint converters: torchvision / SwAV / DETReg-style ResNet backbones -> detectron2 names.

The command-line front end is ``tools/convert_checkpoint.py``.
"""

from .torchvision_resnet import convert_torchvision_resnet, map_torchvision_resnet, unwrap_state_dict

__all__ = ["convert_torchvision_resnet", "map_torchvision_resnet", "unwrap_state_dict"]
