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

__all__ = ["architecture_mismatch", "refuse_other_variant", "refuse_partly_random_model", "refuse_shape_mismatches",
           "require_eval_checkpoint"]

# the finetuning configs of each variant (configs/detr/ and the demo's)
_VARIANT_CONFIGS = {"Vanilla": ("configs/detr/detr_*.py", "configs/demo/detr_demo.py"),
                    "Conditional": ("configs/detr/conditional_detr_*.py", "configs/demo/conditional_detr_demo.py"),
                    "Deformable": ("configs/detr/deformable_detr_*.py", "configs/demo/deformable_detr_demo.py")}

# which detector configs each family of pretraining configs finetunes with (the demo's own chain, the demo twins
# of the R50 configs, the R50 configs)
_PRETRAIN_PAIRS = ("configs/demo/demo_{siamese,up_detr,detreg}_pretrain.py with configs/demo/demo_detector.py; "
                   "configs/demo/<method>_pretrain_demo.py with configs/demo/detr_demo.py and "
                   "<method>_{conditional,deformable}_pretrain_demo.py with configs/demo/{conditional,deformable}"
                   "_detr_demo.py; the R50 pretrainings with configs/detr/ of their variant")


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
            f"it, {use}")


def _other_norm_message(checkpointer: SafeDetectionCheckpointer, path: str) -> Optional[str]:
    """Why the last load put a pre-norm Vanilla DETR transformer (``transformer.encoder_norm``: the official
    UP-DETR release, ``configs/up_detr/up_detr_r50_imagenet_60ep.py``) into a post-norm model, or the other way
    round; ``None`` when both are of one kind or either is not a Vanilla DETR transformer. Every tensor but the
    encoder's final LayerNorm fits, so nothing else would tell: the layers would compute another function of the
    loaded weights."""
    checkpoint_keys = [k[len("module."):] if k.startswith("module.") else k for k in checkpointer.checkpoint_keys]
    model_keys = list(checkpointer.model.state_dict())
    if transformer_variant(checkpoint_keys) != "Vanilla" or transformer_variant(model_keys) != "Vanilla":
        return None
    theirs, ours = (any(k.startswith("transformer.encoder_norm.") for k in keys)
                    for keys in (checkpoint_keys, model_keys))
    if theirs == ours:
        return None
    kind = {True: "pre-norm", False: "post-norm"}
    norm = ("the checkpoint's final encoder LayerNorm would be left unused" if theirs
            else "the model's final encoder LayerNorm would start from scratch")
    return (f"{path} holds a {kind[theirs]} Vanilla DETR transformer, and this config's model is {kind[ours]}: "
            f"each layer would apply the loaded weights in another order (its LayerNorms "
            f"{'after' if theirs else 'before'} each block instead of {'before' if theirs else 'after'}) and "
            f"{norm}. Set model.transformer.normalize_before={theirs}, as it was trained")


def architecture_mismatch(checkpointer: SafeDetectionCheckpointer, path: str) -> Optional[str]:
    """Why the last load put a checkpoint of another transformer into the model than the one it was trained
    as: another DETR variant (:func:`~.load_summary.transformer_variant`), or a Vanilla DETR transformer of the
    other LayerNorm placement (``model.transformer.normalize_before``); ``None`` when neither."""
    return _other_variant_message(checkpointer, path) or _other_norm_message(checkpointer, path)


def refuse_other_variant(checkpointer: SafeDetectionCheckpointer, path: str) -> None:
    """Training from ``train.init_checkpoint``: raise :class:`CheckpointLoadError` when the checkpoint holds
    another transformer than the model (:func:`architecture_mismatch`). Vanilla and Conditional DETR share
    their encoder's names, so a Vanilla pretraining finetuned as Conditional DETR loads the encoder and trains
    the decoder from scratch with only a log line to say so; a pre-norm UP-DETR pretraining loads whole into a
    post-norm DETR."""
    message = architecture_mismatch(checkpointer, path)
    if message:
        raise CheckpointLoadError(f"{message}. (train.allow_shape_mismatch=True loads what fits on purpose.)")


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
    mismatch = architecture_mismatch(checkpointer, path)  # a pre-norm transformer in post-norm DETR: all loads
    if mismatch:
        raise CheckpointLoadError(f"--eval-only: {mismatch.replace('finetune it with', 'evaluate it with')}.")
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
    backbone = [k for k, _, _ in wrong if k.startswith("backbone.")]
    if backbone:  # no override of this config fits: the checkpoint is of another model config
        raise CheckpointLoadError(
            f"{path}: {len(wrong)} tensors do not fit the model's shapes and would start from scratch ({shown}), "
            f"{len(backbone)} of them in the backbone: a checkpoint of another model config (backbone depth or "
            f"width). A pretraining finetunes with the detector config of its family: {_PRETRAIN_PAIRS}. Or add "
            "train.allow_shape_mismatch=True to train them from scratch on purpose."
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
