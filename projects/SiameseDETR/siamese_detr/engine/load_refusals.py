"""Refusals after (or instead of) loading ``train.init_checkpoint``: what a load would leave wrong without a
word from Detectron2, which only warns. ``--eval-only`` of a model that the checkpoint leaves partly random (or
without any checkpoint), a checkpoint of another DETR variant's transformer (Vanilla, Conditional, Deformable:
their tensors share some names, so part of it would load and the rest start from scratch), and training from a
checkpoint whose tensors, other than the class heads, do not fit the model's shapes. Reading and writing
checkpoints is :mod:`.checkpointing`."""
from typing import Optional, Sequence

from .load_summary import is_pretraining_model, official_layout, official_layout_hint, transformer_variant
from ..utils.user_errors import UserValueError
from .checkpointing import CheckpointLoadError, SafeDetectionCheckpointer

__all__ = ["refuse_other_variant", "refuse_partly_random_model", "refuse_shape_mismatches", "require_eval_checkpoint"]

# the finetuning configs of each variant (configs/detr/ and the demo's)
_VARIANT_CONFIGS = {"Vanilla": ("configs/detr/detr_*.py", "configs/demo/detr_demo.py"),
                    "Conditional": ("configs/detr/conditional_detr_*.py", "configs/demo/conditional_detr_demo.py"),
                    "Deformable": ("configs/detr/deformable_detr_*.py", "configs/demo/deformable_detr_demo.py")}


def _other_variant_message(checkpointer: SafeDetectionCheckpointer, path: str) -> Optional[str]:
    """Why the last load put a checkpoint of one DETR variant's transformer into a model of another (what of the
    model's transformer it leaves as initialised, and the configs of the checkpoint's variant); ``None`` when
    both are of one variant, or either has no transformer (a backbone checkpoint) or an official layout."""
    model_keys = list(checkpointer.model.state_dict())
    theirs, ours = transformer_variant(checkpointer.checkpoint_keys), transformer_variant(model_keys)
    if theirs is None or ours is None or theirs == ours:
        return None
    loaded = set(checkpointer.loaded_names or ())
    transformer = [k for k in model_keys if k.startswith("transformer.")]
    fresh = [k for k in transformer if k not in loaded]
    if is_pretraining_model(model_keys):
        use = (f"continue it with a pretraining config of {theirs} DETR (the variant is in the config's name; "
               "Vanilla's names none)")
    else:
        use = f"finetune it with a config of {theirs} DETR ({' or '.join(_VARIANT_CONFIGS[theirs])})"
    if len(fresh) == len(transformer):
        lost = f"none of the model's {len(transformer)} transformer tensors is in it (by name and shape)"
    else:
        lost = (f"{len(fresh)} of the model's {len(transformer)} transformer tensors are not in it (by name and "
                f"shape; e.g. {fresh[:2]})")
    return (f"{path} holds a {theirs} DETR transformer, and this config's model is {ours} DETR: {lost}, so they "
            f"would start from scratch and the checkpoint's transformer would carry over in part at most. To use "
            f"it, {use}.")


def refuse_other_variant(checkpointer: SafeDetectionCheckpointer, path: str) -> None:
    """Training from ``train.init_checkpoint``: raise :class:`CheckpointLoadError` when the checkpoint holds
    another DETR variant's transformer than the model (:func:`~.load_summary.transformer_variant`). Vanilla and
    Conditional DETR share their encoder's names, so a Vanilla pretraining finetuned as Conditional DETR loads
    the encoder and trains the decoder from scratch with only a log line to say so."""
    message = _other_variant_message(checkpointer, path)
    if message:
        raise CheckpointLoadError(message)


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
        other_variant = _other_variant_message(checkpointer, path)
        if other_variant:
            raise CheckpointLoadError(f"--eval-only: {other_variant.replace('finetune it with', 'evaluate it with')}")
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
