"""Facts about the running environment that configs and tools need."""
import functools

import torch


def default_device() -> str:
    """``"cuda"`` when a GPU is visible to torch, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=None)
def detectron2_has_compiled_ops() -> bool:
    """Whether detectron2 was built with its C++ ops (``detectron2._C``).

    The PyPI republication of detectron2 v0.6 has no C++ sources (see
    ``tools/install_detectron2.py``); an official build from source has them. Configs use
    this to enable ``COCOEvaluator(use_fast_impl=...)`` only where it can work.
    """
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True
