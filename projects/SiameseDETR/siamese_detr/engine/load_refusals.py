"""Refusals after (or instead of) loading ``train.init_checkpoint``: what a load would leave wrong without a
word from Detectron2, which only warns. ``--eval-only`` of a model that the checkpoint leaves partly random (or
without any checkpoint), and training from a checkpoint whose tensors, other than the class heads, do not fit
the model's shapes. Reading and writing checkpoints is :mod:`.checkpointing`."""
from typing import Optional, Sequence

from .load_summary import official_layout, official_layout_hint
from ..utils.user_errors import UserValueError
from .checkpointing import CheckpointLoadError, SafeDetectionCheckpointer

__all__ = ["refuse_partly_random_model", "refuse_shape_mismatches", "require_eval_checkpoint"]


def _official_eval_checkpoint_message(checkpointer: SafeDetectionCheckpointer, path: str, n_missing: int,
                                      total: int) -> Optional[str]:
    """``--eval-only`` of a whole-model checkpoint in an official layout (the last load's keys): the refusal
    that names the conversion command first; ``None`` for any other checkpoint (a torchvision ResNet is a
    backbone alone: converting it would not give a model to evaluate)."""
    keys = checkpointer.checkpoint_keys
    fmt = official_layout(keys)
    if fmt is None or fmt == "torchvision":
        return None
    return (
        f"--eval-only: {official_layout_hint(keys, path, then='evaluate train.init_checkpoint=OUT.pth')}. As it "
        f"is, {n_missing} of the model's {total} parameters are not in {path} (by name and shape), so they would "
        "be evaluated as randomly initialised."
    )


def refuse_partly_random_model(checkpointer: SafeDetectionCheckpointer, path: str) -> None:
    """``--eval-only``: raise :class:`CheckpointLoadError` when the load left parameters of the model as
    initialised (its AP would be that of random weights, recorded as the checkpoint's)."""
    missing = checkpointer.parameters_not_loaded()
    if missing:
        total = sum(1 for _ in checkpointer.model.parameters())
        official = _official_eval_checkpoint_message(checkpointer, path, len(missing), total)
        if official:
            raise CheckpointLoadError(official)
        raise CheckpointLoadError(
            f"--eval-only: {len(missing)} of the model's {total} parameters are not in {path} (by name and shape; "
            f"e.g. {missing[:4]}), so they would be evaluated as randomly initialised. Evaluate a checkpoint of "
            "this config's model (a pretraining checkpoint has no class head of the finetuning model: finetune "
            "it first), or give the config it was trained with. To evaluate a random initialisation on purpose, "
            "add train.eval_allow_random=True."
        )


def refuse_shape_mismatches(checkpointer: SafeDetectionCheckpointer, path: str,
                            allowed: Sequence[str] = ("class_embed",)) -> None:
    """Training from ``train.init_checkpoint``: raise :class:`CheckpointLoadError` when tensors of the
    checkpoint were skipped because their shape differs from the model's, other than the class heads
    (``allowed``: a pretraining's objectness head never fits the finetuning's K classes). Detectron2 only
    warns, and the run would train those parameters from scratch, e.g. every object query when
    ``model.num_queries`` differs from the pretraining's."""
    wrong = [(k, a, b) for k, a, b in checkpointer.incorrect_shapes if not any(part in k for part in allowed)]
    if not wrong:
        return
    shown = "; ".join(f"{k}: {list(a)} in the checkpoint, {list(b)} in the model" for k, a, b in wrong[:4])
    shown = f"{shown}{'; ...' if len(wrong) > 4 else ''}"
    ours, theirs = next(((a, b) for k, a, b in wrong if k == "query_embed.weight"), ((), ()))
    if len(ours) == len(theirs) == 2 and ours[1] != theirs[1]:
        raise CheckpointLoadError(
            f"{path}: its object queries are {ours[1]} wide, the model's {theirs[1]}: a checkpoint of another DETR "
            "variant or model width (Deformable DETR's queries hold position and content, 2 x d_model wide; Vanilla "
            f"and Conditional DETR's are d_model wide). {len(wrong)} tensors do not fit ({shown}). Finetune it "
            "with a config of the variant and width it was trained with."
        )
    hint = ""
    if ours and ours[0] != theirs[0]:
        hint = f" (the checkpoint has {ours[0]} object queries: model.num_queries={ours[0]})"
    raise CheckpointLoadError(
        f"{path}: {len(wrong)} tensors do not fit the model's shapes and would start from scratch ({shown}). Use "
        f"the model settings the checkpoint was trained with{hint}, or add train.allow_shape_mismatch=True to "
        "train them from scratch on purpose."
    )


def require_eval_checkpoint(init_checkpoint) -> None:
    """``--eval-only`` evaluates ``train.init_checkpoint``: refuse to evaluate a randomly initialised model."""
    if not init_checkpoint:
        raise UserValueError(
            "--eval-only needs the model to evaluate: add train.init_checkpoint=PATH/model_final.pth "
            "(without it a randomly initialised model would be evaluated)"
        )
