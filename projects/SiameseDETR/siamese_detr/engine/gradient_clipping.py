"""Gradient-norm clipping as an optimizer step pre-hook (DETR clips the total L2 norm to 0.1)."""
from typing import Optional

import torch

from ..utils.user_errors import UserValueError


def add_gradient_clipping(
    optimizer: torch.optim.Optimizer, max_norm: float, norm_type: float = 2.0, amp: bool = False
) -> Optional[torch.utils.hooks.RemovableHandle]:
    """Clip the gradient norm of all parameters of ``optimizer`` right before each ``step()``.

    Registered as a step pre-hook, so it works unchanged with detectron2's ``SimpleTrainer``
    and ``AMPTrainer``: ``GradScaler.step`` unscales the gradients before it calls
    ``optimizer.step()``, so the hook sees true gradients in both cases — except for optimizers that unscale
    inside their own step (``_step_supports_amp_scaling``, e.g. ``AdamW(fused=True)``): their hook would clip
    the SCALED gradients (x 2^16), shrinking the real ones to nothing, so with ``amp`` they are refused.

    Args:
        optimizer: any torch optimizer.
        max_norm: clip threshold of the total norm over all parameters; ``<= 0`` disables.
        norm_type: p of the p-norm (2.0 as DETR).
        amp: the run trains with ``AMPTrainer`` (a ``GradScaler``).

    Returns:
        the hook handle (``handle.remove()`` undoes it), or None when disabled.
    """
    if max_norm is None or max_norm <= 0:
        return None
    if amp and getattr(optimizer, "_step_supports_amp_scaling", False):
        raise UserValueError(
            f"{type(optimizer).__name__} unscales the AMP gradients inside its own step (e.g. fused=True), after "
            f"the gradient clipping (train.clip_grad.max_norm={max_norm}) would see them scaled: use the "
            "optimizer without fused=True (the configs' default), or train.amp.enabled=False, or "
            "train.clip_grad.max_norm=0"
        )

    def _clip(opt, args, kwargs):
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)

    return optimizer.register_step_pre_hook(_clip)
