"""Step learning-rate schedules expressed in epochs, converted to iterations.

``step_schedule(total_epochs, drop_epochs, num_images, batch_size)`` returns the
``lr_multiplier`` config and the number of iterations; configs use it as
``lr_multiplier, max_iter = step_schedule(150, (120,), 118287, 32)``.
"""
import math
from typing import Sequence, Tuple

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

# Number of training images of the datasets the configs use.
NUM_IMAGES = {
    "imagenet_train": 1281167,
    "coco_2017_train": 118287,
    "voc_2007_2012_trainval": 16551,
}


def epochs_to_iters(epochs: float, num_images: int, batch_size: int) -> int:
    """Iterations that see ``epochs`` passes over ``num_images`` at ``batch_size`` images per iteration."""
    return int(math.ceil(epochs * num_images / batch_size))


def step_schedule(
    total_epochs: float,
    drop_epochs: Sequence[float],
    num_images: int,
    batch_size: int,
    gamma: float = 0.1,
    warmup_iters: int = 0,
) -> Tuple[object, int]:
    """LR multiplier ``1, gamma, gamma^2, ...`` dropping at ``drop_epochs`` (e.g. DETR's 120/150 schedule)."""
    max_iter = epochs_to_iters(total_epochs, num_images, batch_size)
    milestones = [epochs_to_iters(e, num_images, batch_size) for e in drop_epochs]
    return step_schedule_iters(max_iter, milestones, gamma, warmup_iters), max_iter


def step_schedule_iters(max_iter: int, milestones: Sequence[int], gamma: float = 0.1, warmup_iters: int = 0):
    """Same as :func:`step_schedule` with iterations given directly."""
    values = [gamma**i for i in range(len(milestones) + 1)]
    steps = L(MultiStepParamScheduler)(values=values, milestones=list(milestones), num_updates=max_iter)
    if warmup_iters <= 0:
        return steps
    return L(WarmupParamScheduler)(scheduler=steps, warmup_length=warmup_iters / max_iter, warmup_factor=0.001)
