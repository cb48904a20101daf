"""Small helpers shared by the package and the tools: environment facts (:mod:`.env`), argparse types,
output-path checks, user-facing errors, progress lines, metrics.json reading and figure text."""
from .env import default_device, detectron2_has_compiled_ops

__all__ = ["default_device", "detectron2_has_compiled_ops"]
