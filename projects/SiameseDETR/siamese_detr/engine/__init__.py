from .gradient_clipping import add_gradient_clipping
from .launch import launch
from .overrides import apply_checked_overrides

__all__ = ["add_gradient_clipping", "launch", "apply_checked_overrides"]
