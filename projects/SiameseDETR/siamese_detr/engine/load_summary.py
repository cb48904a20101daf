"""One line that says what a partial checkpoint load means, after fvcore's per-tensor warnings.

Finetuning from a pretraining checkpoint is a partial load by design: the class head has another number of
rows (the pretext's "object" / "no object" logits against the dataset's classes) and the pretext heads
(Siamese DETR's ``region_proj`` / ``sem_embed`` / ``projector`` / ``predictor``, DETReg's embedding head)
have no place in a detector. fvcore logs each such tensor as a warning ("You might want to double check if
this is expected"); :func:`partial_load_summary` sums them up in words, naming the modules, so a user can
tell that load from a wrong checkpoint (tensors of other modules with another shape).
"""
from typing import Iterable, List, Optional, Sequence, Tuple

__all__ = ["module_prefixes", "partial_load_summary"]

_CLASS_HEAD = "class_embed"


def _count(n: int, noun: str) -> str:
    """``1 tensor`` / ``2 tensors``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def module_prefixes(names: Iterable[str], limit: int = 6) -> str:
    """The modules the tensor ``names`` belong to, in first-seen order: the first name component, two for
    names under ``transformer`` / ``backbone`` (``transformer.enc_output``); ``...`` past ``limit``."""
    prefixes: List[str] = []
    for name in names:
        parts = name.split(".")
        depth = 2 if parts[0] in ("transformer", "backbone", "module") and len(parts) > 2 else 1
        prefix = ".".join(parts[:depth])
        if prefix not in prefixes:
            prefixes.append(prefix)
    shown = ", ".join(prefixes[:limit])
    return shown + (", ..." if len(prefixes) > limit else "")


def partial_load_summary(incorrect_shapes: Sequence[Tuple[str, tuple, tuple]], missing: Sequence[str],
                         unexpected: Sequence[str]) -> Optional[str]:
    """The summary of a partial load, or ``None`` when everything loaded.

    Args:
        incorrect_shapes: ``(name, shape in the checkpoint, shape in the model)`` of the tensors skipped for
            their shape (fvcore's ``incorrect_shapes``).
        missing: model tensors the checkpoint does not give (after fvcore's filter of tied / reused ones; the
            ones in ``incorrect_shapes`` are counted there, not here).
        unexpected: checkpoint tensors the model does not have.
    """
    parts = []
    skipped = {k for k, _, _ in incorrect_shapes}
    missing = [k for k in missing if k not in skipped]  # fvcore lists the skipped ones as missing too
    heads = [(k, a, b) for k, a, b in incorrect_shapes if _CLASS_HEAD in k]
    others = [k for k, _, _ in incorrect_shapes if _CLASS_HEAD not in k]
    if heads:
        _, in_checkpoint, in_model = heads[0]
        rows = f"{_count(in_checkpoint[0], 'class logit')} in the checkpoint, {in_model[0]} in the model" \
            if in_checkpoint and in_model else "another shape"
        parts.append(f"the class head ({_count(len(heads), 'tensor')}: {rows}) is initialised anew, as expected "
                     "when finetuning on another set of classes or from a pretraining")
    if others:
        parts.append(f"{_count(len(others), 'other tensor')} with another shape in the checkpoint, initialised anew "
                     f"({module_prefixes(others)}): check that the checkpoint is of this "
                     "architecture (widths, number of queries, feature levels)")
    if missing:
        parts.append(f"{_count(len(missing), 'model tensor')} not in the checkpoint, initialised anew "
                     f"({module_prefixes(missing)})")
    if unexpected:
        parts.append(f"{_count(len(unexpected), 'checkpoint tensor')} unused ({module_prefixes(unexpected)}): modules "
                     "this model does not have, e.g. a pretraining's pretext heads, as expected when finetuning "
                     "from a pretraining")
    if not parts:
        return None
    return "Partial load, in short: " + "; ".join(parts) + "."
