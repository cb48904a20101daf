"""The CPU demo on the built-in dataset (``make demo``, ``tools/run_demo.py``): a narrow ResNet trained on
the built-in world, cached pipeline steps that notice changed inputs, and the demo's plots."""
from .narrow_resnet import build_narrow_resnet
from .steps import Step, file_digest

__all__ = ["Step", "build_narrow_resnet", "file_digest"]
