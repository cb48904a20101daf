from .env import default_device, detectron2_has_compiled_ops

__all__ = ["default_device", "detectron2_has_compiled_ops"]
