"""One line that says what a partial checkpoint load means, after fvcore's per-tensor warnings.

Finetuning from a pretraining checkpoint is a partial load by design: the class head has another number of
rows (the pretext's "object" / "no object" logits against the dataset's classes) and the pretext heads
(:data:`PRETEXT_HEADS`: Siamese DETR's ``region_proj`` / ``sem_embed`` / ``projector`` / ``predictor``, UP-DETR's
``region_proj`` / ``sem_embed``, DETReg's ``sem_embed``) have no place in a detector. fvcore logs each such
tensor as a warning ("You might want to double check if this is expected"); :func:`partial_load_summary` sums
them up in words, naming the modules, and says "as expected" only for that case. It names the fix instead where
the load looks like a mistake:

* the checkpoint is an official release in its own key layout (:func:`official_layout`: ``backbone.0.body.*``,
  Siamese DETR's OpenSelfSup ``backbone.layer1.*`` + ``enc_head.*``, a torchvision ResNet): the
  ``tools/convert_checkpoint.py`` command, with a ``--format`` guess (:func:`conversion_command`);
* the checkpoint has ``transformer.encoder_norm`` (a pre-norm transformer: the official UP-DETR and DETR-based
  DETReg releases) and the model is post-norm, or the other way round: ``model.transformer.normalize_before``;
* the model is a pretraining model (it has pretext heads) and the checkpoint, a whole model, lacks them or has a
  detector's class head: convert the release with ``--for-pretraining``.

A Deformable DETR checkpoint across one-stage and two-stage is named as such, with what each side loses: a
two-stage checkpoint's encoder proposals (the two-stage config keeps them), or a one-stage checkpoint's learned
queries (as DETReg's finetuning does).
"""
import os
from typing import Iterable, List, Optional, Sequence, Tuple

__all__ = [
    "PRETEXT_HEADS",
    "checkpoint_file_keys",
    "conversion_command",
    "is_pretraining_model",
    "module_prefixes",
    "official_layout",
    "official_layout_hint",
    "partial_load_summary",
    "transformer_variant",
]

_CLASS_HEAD = "class_embed"
# first name components of the project's pretext heads (SiameseDETRPretrain, UPDETRPretrain, DETRegPretrain)
PRETEXT_HEADS = ("region_proj", "sem_embed", "projector", "predictor")
_ENCODER_NORM = "transformer.encoder_norm."
# Deformable DETR's modules of one stage only: encoder proposals (two-stage) / learned queries (one-stage)
_TWO_STAGE = ("transformer.enc_output.", "transformer.enc_output_norm.", "transformer.pos_trans.",
              "transformer.pos_trans_norm.")
_ONE_STAGE = ("query_embed.", "transformer.reference_points.")
_CONVERTER = "python tools/convert_checkpoint.py"
_PRETRAINING_FORMATS = ("up_detr", "detreg", "siamese_detr")  # the converter's --for-pretraining formats
_NAMES = {"detr": "DETR", "conditional_detr": "Conditional DETR", "deformable_detr": "Deformable DETR",
          "up_detr": "UP-DETR", "detreg": "DETReg", "siamese_detr": "Siamese DETR (OpenSelfSup)",
          "torchvision": "torchvision / SwAV ResNet"}


def _count(n: int, noun: str) -> str:
    """``1 tensor`` / ``2 tensors``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _first(name: str) -> str:
    """A name's first component, past a ``module.`` prefix of a DDP-saved state dict."""
    name = name[len("module."):] if name.startswith("module.") else name
    return name.split(".", 1)[0]


def module_prefixes(names: Iterable[str], limit: int = 6) -> str:
    """The modules the tensor ``names`` belong to, in first-seen order: the first name component, two for
    names under ``transformer`` / ``backbone`` / ``module`` (``transformer.enc_output``); ``...`` past ``limit``."""
    prefixes: List[str] = []
    for name in names:
        parts = name.split(".")
        depth = 2 if parts[0] in ("transformer", "backbone", "module") and len(parts) > 2 else 1
        prefix = ".".join(parts[:depth])
        if prefix not in prefixes:
            prefixes.append(prefix)
    shown = ", ".join(prefixes[:limit])
    return shown + (", ..." if len(prefixes) > limit else "")


# ------------------------------------------------------------------------------------ official layouts
def _detr_family_format(keys: Sequence[str]) -> str:
    """The ``--format`` of a checkpoint in the official DETR code's layout (``backbone.0.body.*``), told apart
    by the modules each release adds (tests/fixtures/pretrain_layouts, siamese_detr/checkpoint/official_*)."""
    firsts = {k.split(".", 1)[0] for k in keys}
    if firsts & {"patch2query", "feature_align"}:
        return "up_detr"
    if "feature_embed" in firsts:
        return "detreg"
    if any(k.startswith("transformer.level_embed") or ".sampling_offsets." in k for k in keys):
        return "deformable_detr"
    if any(".sa_qcontent_proj." in k or k.startswith("transformer.decoder.ref_point_head.") for k in keys):
        return "conditional_detr"
    return "detr"


def official_layout(keys: Iterable[str]) -> Optional[str]:
    """The ``tools/convert_checkpoint.py --format`` whose official key layout the checkpoint names ``keys``
    follow, or ``None`` for any other layout (this project's own, a Detectron2 model-zoo file, ...).

    ``backbone.0.body.*`` (a torchvision ResNet inside the official DETR code): ``detr``, ``conditional_detr``,
    ``deformable_detr``, ``up_detr`` or ``detreg`` by the modules the release adds; torchvision names under
    ``backbone.`` with ``enc_head`` / ``pred_head`` / ``patch2query``: ``siamese_detr`` (OpenSelfSup); a bare
    torchvision ResNet (``conv1.weight``, ``layer1.*``, also under SwAV's ``module.``): ``torchvision``.
    """
    keys = [k[len("module."):] if k.startswith("module.") else k for k in keys]
    if any(k.startswith("backbone.0.body.") for k in keys):
        return _detr_family_format(keys)
    firsts = {k.split(".", 1)[0] for k in keys}
    if any(k.startswith(("backbone.conv1.", "backbone.layer1.")) for k in keys) \
            and firsts & {"enc_head", "pred_head", "patch2query"}:
        return "siamese_detr"
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        return "torchvision"
    return None


def conversion_command(fmt: str, source: str = "FILE", for_pretraining: bool = False) -> str:
    """``python tools/convert_checkpoint.py --format FMT [--for-pretraining] --input SOURCE --output OUT.pth``
    (``--for-pretraining`` only for the formats that have it)."""
    extra = " --for-pretraining" if for_pretraining and fmt in _PRETRAINING_FORMATS else ""
    return f"{_CONVERTER} --format {fmt}{extra} --input {source} --output OUT.pth"


def official_layout_hint(keys: Sequence[str], source: str = "FILE", for_pretraining: bool = False,
                         then: str = "pass train.init_checkpoint=OUT.pth") -> Optional[str]:
    """What to do with a checkpoint in an official layout (:func:`official_layout`): the conversion command,
    then ``then``; ``None`` when ``keys`` follow no official layout."""
    fmt = official_layout(keys)
    if fmt is None:
        return None
    example = next((k for k in keys if k.endswith("conv1.weight")), keys[0])
    return (f"{source} looks like an official {_NAMES[fmt]} checkpoint in its own key layout (e.g. {example!r}), "
            f"which this project's models do not load: convert it first with\n    "
            f"{conversion_command(fmt, source, for_pretraining)}\nand {then} (the converter refuses a wrong --format "
            "guess, naming the one that fits)")


def checkpoint_file_keys(path: str) -> List[str]:
    """The tensor names of the checkpoint file ``path`` (its ``model`` / ``state_dict`` entry, or the file's
    top level), read memory-mapped where possible; ``[]`` when it cannot be read safely (not a file, a URL, a
    pickle that ``weights_only`` refuses). For messages only: never raises."""
    import torch

    path = (path or "").split("?", 1)[0]
    if not os.path.isfile(path):
        return []
    loaded = None
    for mmap in (True, False):  # mmap: zip files only (torch >= 1.6 saves)
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            break
        except Exception:  # noqa: BLE001 (any unreadable file: no hint, the caller's message stands)
            continue
    if not isinstance(loaded, dict):
        return []
    state = loaded.get("model", loaded.get("state_dict", loaded))
    return [str(k) for k in state] if isinstance(state, dict) else []


# ------------------------------------------------------------------------------------ the model's kind
def is_pretraining_model(model_keys: Iterable[str]) -> bool:
    """Whether the model whose state dict names are ``model_keys`` is one of the project's pretraining models:
    it has a pretext head (:data:`PRETEXT_HEADS`), which no detector has."""
    return any(_first(k) in PRETEXT_HEADS for k in model_keys)


def _pretraining_format(model_keys: Iterable[str]) -> str:
    """The release ``--format`` of a pretraining model, by its pretext heads: SimSiam heads (Siamese DETR),
    ``region_proj`` alone (UP-DETR), ``sem_embed`` alone (DETReg)."""
    heads = {_first(k) for k in model_keys} & set(PRETEXT_HEADS)
    if heads & {"projector", "predictor"}:
        return "siamese_detr"
    return "up_detr" if "region_proj" in heads else "detreg"


def transformer_variant(keys: Iterable[str]) -> Optional[str]:
    """Which DETR variant's transformer the project-layout state dict names ``keys`` hold: ``"Deformable"``
    (``transformer.encoder.layers`` / ``transformer.level_embed``), ``"Conditional"`` (``transformer.ref_point_head``)
    or ``"Vanilla"`` (``transformer.encoder_layers`` / ``decoder_layers`` without it); ``None`` without a
    transformer (a backbone) or for an official release's layout (:func:`official_layout`, named by its own hint).
    A ``module.`` prefix (a DDP-saved file) is looked through."""
    keys = [k[len("module."):] if k.startswith("module.") else k for k in keys]
    if official_layout(keys) is not None:
        return None
    if any(k.startswith(("transformer.encoder.layers.", "transformer.decoder.layers.", "transformer.level_embed"))
           for k in keys):
        return "Deformable"
    if any(k.startswith("transformer.ref_point_head.") for k in keys):
        return "Conditional"
    if any(k.startswith(("transformer.encoder_layers.", "transformer.decoder_layers.")) for k in keys):
        return "Vanilla"
    return None


def _is_vanilla_transformer(model_keys: Sequence[str]) -> bool:
    """Whether the model's transformer is the Vanilla DETR one (the one with ``normalize_before``):
    ``encoder_layers`` without Conditional DETR's ``ref_point_head``."""
    return any(k.startswith("transformer.encoder_layers.") for k in model_keys) \
        and not any(k.startswith("transformer.ref_point_head.") for k in model_keys)


# ------------------------------------------------------------------------------------ the summary parts
def _class_head_part(heads: Sequence[Tuple[str, tuple, tuple]], pretraining: bool) -> str:
    _, in_checkpoint, in_model = heads[0]
    rows = f"{_count(in_checkpoint[0], 'class logit')} in the checkpoint, {in_model[0]} in the model" \
        if in_checkpoint and in_model else "another shape"
    what = f"the class head ({_count(len(heads), 'tensor')}: {rows}) is initialised anew"
    if pretraining:
        return what + ", NOT expected when continuing a pretraining (this model's head is its objectness head)"
    return what + ", as expected when finetuning on another set of classes or from a pretraining"


def _unused_parts(unexpected: Sequence[str], model_keys: Sequence[str], pretraining: bool,
                  official: bool) -> List[str]:
    """The summary parts of the checkpoint tensors the model does not have: an official layout's names, a
    pre-norm encoder's final norm, pretext heads (expected in a detector), anything else."""
    unused = f"{_count(len(unexpected), 'checkpoint tensor')} unused ({module_prefixes(unexpected)})"
    if official:
        return [unused + ": names of an official layout, not of this project (see below)"]
    norm = [k for k in unexpected if k.startswith(_ENCODER_NORM)]
    pretext = [k for k in unexpected if _first(k) in PRETEXT_HEADS]
    others = [k for k in unexpected if k not in norm and k not in pretext]
    parts = []
    if pretext and not pretraining:
        parts.append(f"{_count(len(pretext), 'checkpoint tensor')} of pretext heads unused "
                     f"({module_prefixes(pretext)}): a pretraining's heads, which a detector does not have, as "
                     "expected when finetuning from a pretraining")
    elif pretext:
        parts.append(f"{_count(len(pretext), 'checkpoint tensor')} of pretext heads unused "
                     f"({module_prefixes(pretext)}): heads this pretraining model does not have, so the checkpoint "
                     "is of another pretraining method or variant")
    if norm:
        parts.append(_encoder_norm_unused(norm, model_keys))
    if others:
        parts.append(f"{_count(len(others), 'checkpoint tensor')} unused ({module_prefixes(others)}): modules "
                     "this model does not have: check that the checkpoint is of this architecture")
    return parts


def _head_index(key: str) -> Optional[int]:
    """``N`` of a per-layer prediction head's name ``class_embed.N.*`` / ``bbox_embed.N.*``, else None."""
    parts = key.split(".")
    if len(parts) > 2 and parts[0] in (_CLASS_HEAD, "bbox_embed") and parts[1].isdigit():
        return int(parts[1])
    return None


def _stage_keys(keys: Sequence[str], stage: Tuple[str, ...], other_heads: Iterable[str]) -> List[str]:
    """Of ``keys``, those of the modules ``stage`` (name prefixes) and the prediction heads whose index the
    other side (``other_heads``: its state dict names) does not have."""
    theirs = {_head_index(k) for k in other_heads} - {None}
    return [k for k in keys if k.startswith(stage) or (_head_index(k) is not None and _head_index(k) not in theirs)]


def _two_stage_handoff(missing: Sequence[str], unexpected: Sequence[str], checkpoint_keys: Sequence[str],
                       model_keys: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    """The summary part of a Deformable DETR checkpoint loaded across one-stage / two-stage (``two_stage``:
    encoder proposals give the decoder's queries), and the missing / unused names it accounts for; ``(None,
    [])`` otherwise. Two-stage into one-stage drops the encoder proposals and starts the learned queries anew;
    one-stage into two-stage (DETReg's finetuning, from a one-stage pretraining) drops the learned queries and
    starts the encoder proposals anew."""
    unused_two = [k for k in unexpected if k.startswith(_TWO_STAGE)]
    missing_two = [k for k in missing if k.startswith(_TWO_STAGE)]
    if unused_two and any(k.startswith(_ONE_STAGE) for k in missing):  # two-stage checkpoint, one-stage model
        dropped = _stage_keys(unexpected, _TWO_STAGE, model_keys)
        fresh = [k for k in missing if k.startswith(_ONE_STAGE)]
        return (f"a two-stage Deformable DETR checkpoint in a one-stage model: its encoder proposals are unused "
                f"({_count(len(dropped), 'tensor')}: {module_prefixes(dropped)}) and this model's learned queries "
                f"start anew ({_count(len(fresh), 'tensor')}: {module_prefixes(fresh)}); to keep the proposals, "
                "finetune with a two-stage config (configs/detr/deformable_detr_refine_two_stage_r50_coco_50ep.py)",
                dropped + fresh)
    if missing_two and any(k.startswith(_ONE_STAGE) for k in unexpected):  # one-stage checkpoint, two-stage model
        dropped = [k for k in unexpected if k.startswith(_ONE_STAGE)]
        fresh = _stage_keys(missing, _TWO_STAGE, checkpoint_keys)
        return (f"a one-stage Deformable DETR checkpoint in a two-stage model: its learned queries are unused "
                f"({_count(len(dropped), 'tensor')}: {module_prefixes(dropped)}) and this model's encoder "
                f"proposals start anew ({_count(len(fresh), 'tensor')}: {module_prefixes(fresh)}), as in DETReg's "
                "finetuning", dropped + fresh)
    return None, []


def _encoder_norm_unused(norm: Sequence[str], model_keys: Sequence[str]) -> str:
    what = (f"{_count(len(norm), 'checkpoint tensor')} unused (transformer.encoder_norm): the final encoder "
            "LayerNorm of a pre-norm transformer (e.g. an official UP-DETR or DETR-based DETReg release)")
    if _is_vanilla_transformer(model_keys):
        return what + ", which this post-norm model lacks: set model.transformer.normalize_before=True"
    return what + ", which this model's transformer does not have: the checkpoint is of a pre-norm Vanilla DETR"


def _missing_parts(missing: Sequence[str], checkpoint_keys: Sequence[str], model_keys: Sequence[str]) -> List[str]:
    """The summary part of the model tensors the checkpoint does not give, with the missing final encoder norm
    of a pre-norm model named when the checkpoint has a (post-norm) Vanilla transformer."""
    parts = [f"{_count(len(missing), 'model tensor')} not in the checkpoint, initialised anew "
             f"({module_prefixes(missing)})"]
    has_encoder = any(k.startswith("transformer.encoder_layers.") for k in checkpoint_keys)
    if has_encoder and _is_vanilla_transformer(model_keys) and any(k.startswith(_ENCODER_NORM) for k in missing):
        parts.append("the checkpoint's transformer is post-norm (no transformer.encoder_norm) and this model "
                     "pre-norm: set model.transformer.normalize_before=False, as it was trained")
    return parts


def _pretraining_hint(heads: Sequence, missing: Sequence[str], checkpoint_keys: Sequence[str],
                      model_keys: Sequence[str]) -> Optional[str]:
    """For a pretraining model loading a whole model (a transformer) that lacks its pretext heads or has a
    detector's class head: convert the release with ``--for-pretraining``. ``None`` otherwise (e.g. a
    backbone-only start)."""
    whole_model = any(k.startswith("transformer.") or k.startswith(_CLASS_HEAD) for k in checkpoint_keys)
    lacking = sorted({_first(k) for k in missing if _first(k) in PRETEXT_HEADS})
    if not whole_model or not (heads or lacking):
        return None
    what = []
    if lacking:
        what.append(f"lacks its pretext heads ({', '.join(lacking)})")
    if heads:
        what.append("has a class head of another width")
    return ("This is a pretraining model, and the checkpoint " + " and ".join(what) + ": a release converted "
            "for finetuning? To continue a pretraining from an official release, convert the release with "
            f"--for-pretraining:\n    {conversion_command(_pretraining_format(model_keys), 'RELEASE', True)}\n"
            "and pass train.init_checkpoint=OUT.pth")


def partial_load_summary(incorrect_shapes: Sequence[Tuple[str, tuple, tuple]], missing: Sequence[str],
                         unexpected: Sequence[str], *, checkpoint_keys: Sequence[str] = (),
                         model_keys: Sequence[str] = (), source: str = "FILE") -> Optional[str]:
    """The summary of a partial load, or ``None`` when everything loaded.

    Args:
        incorrect_shapes: ``(name, shape in the checkpoint, shape in the model)`` of the tensors skipped for
            their shape (fvcore's ``incorrect_shapes``).
        missing: model tensors the checkpoint does not give (after fvcore's filter of tied / reused ones; the
            ones in ``incorrect_shapes`` are counted there, not here).
        unexpected: checkpoint tensors the model does not have.
        checkpoint_keys: every tensor name of the checkpoint (to recognise an official layout); ``()``: unknown.
        model_keys: the model's state dict names (to tell a pretraining model from a detector); ``()``: a
            detector is assumed.
        source: the checkpoint's path, for the commands the summary names.
    """
    checkpoint_keys, model_keys = list(checkpoint_keys), list(model_keys)
    skipped = {k for k, _, _ in incorrect_shapes}
    missing = [k for k in missing if k not in skipped]  # fvcore lists the skipped ones as missing too
    heads = [(k, a, b) for k, a, b in incorrect_shapes if _CLASS_HEAD in k]
    others = [k for k, _, _ in incorrect_shapes if _CLASS_HEAD not in k]
    pretraining = is_pretraining_model(model_keys)
    official_hint = official_layout_hint(checkpoint_keys, source, pretraining) if checkpoint_keys else None
    parts = []
    stages, accounted = _two_stage_handoff(missing, unexpected, checkpoint_keys, model_keys)
    if stages:
        parts.append(stages)
        missing = [k for k in missing if k not in accounted]
        unexpected = [k for k in unexpected if k not in accounted]
    if heads:
        parts.append(_class_head_part(heads, pretraining))
    if others:
        parts.append(f"{_count(len(others), 'other tensor')} with another shape in the checkpoint, initialised anew "
                     f"({module_prefixes(others)}): check that the checkpoint is of this "
                     "architecture (widths, number of queries, feature levels)")
    if missing:
        parts += _missing_parts(missing, checkpoint_keys, model_keys)
    if unexpected:
        parts += _unused_parts(unexpected, model_keys, pretraining, official_hint is not None)
    if not parts:
        return None
    hint = official_hint or (_pretraining_hint(heads, missing, checkpoint_keys, model_keys) if pretraining else None)
    return "Partial load, in short: " + "; ".join(parts) + "." + (f" {hint}." if hint else "")
