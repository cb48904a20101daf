"""Convert the released checkpoints of the pretraining methods: UP-DETR, DETReg and Siamese DETR.

The transformer, input projection, queries and heads of each go through the finetune converters
(:mod:`.official_detr`, :mod:`.official_deformable_detr`), so the transformer mapping exists once; this module
only handles what the pretraining layouts add or name differently. Layouts (key names and shapes recorded from
the official model definitions: ``tests/fixtures/pretrain_layouts/README.md``):

UP-DETR (github dddzg/up-detr ``models/updetr.py``; official DETR layout, pre-norm):
    ``patch2query.*`` -> ``region_proj.*``; ``feature_align.layers.{k}.*`` -> ``sem_embed.layers.{k}.*``;
    the rest as official DETR (``class_embed`` keeps its 3 rows: ``num_classes=2`` + no-object).
DETReg (github amirbar/DETReg; Deformable DETR layout, or DETR layout for ``--model detr``):
    ``feature_embed.layers.{k}.*`` -> ``sem_embed.layers.{k}.*``; the rest as official Deformable DETR / DETR
    (class rows kept: the pretraining labels are not COCO categories).
Siamese DETR (github Zx55/SiameseDETR, OpenSelfSup / mmcv: ``{"state_dict": ...}``):
    ``backbone.{name}`` (torchvision names)         -> as official ``backbone.0.body.{name}``
    ``pred_head.{class,bbox}_embed.*``              -> as official ``{class,bbox}_embed.*`` (one head for every
                                                       decoder layer, written to every alias)
    ``pred_head.feature_align.*``                   -> ``sem_embed.*``;  ``patch2query.*`` -> ``region_proj.*``
    ``input_proj.{weight,bias}`` (single scale)     -> ``input_proj.0.0.*``; multi-scale ``input_proj.{l}.*`` same
    Deformable: ``query_embed.weight [Q, C]`` (query_pos) and ``transformer.tgt_embed.weight [Q, C]``
                                                    -> ``query_embed.weight [Q, 2C]`` = ``[query_pos | tgt]``
    ``pred_head.criterion.empty_weight``            -> dropped (the loss's class weights)
    ``enc_head.*`` (SimSiam projector / predictor)  -> dropped: not used by finetuning (``for_pretraining``:
                                                       the project's ``projector`` / ``predictor``, below)
    the transformer by variant (``transformer.level_embed`` -> Deformable, ``sa_qcontent_proj`` -> Conditional,
    else Vanilla), with the official converters.

Anything else is returned in ``unmapped`` (the CLI then writes nothing). By default converted checkpoints are
meant for ``train.init_checkpoint`` of a finetune ``DETR`` of the matching variant (e.g. pre-norm for UP-DETR);
the class heads keep the official widths and are skipped there for their shape.

``for_pretraining=True`` (CLI ``--for-pretraining``) converts for the project's pretraining model of the same
method and variant instead, so that a pretraining config can continue from an official release (weights only:
the official optimizer state is not converted). Two things change:

* the class heads keep only what the project's objectness head has (see :func:`objectness_rows`): the
  official object row (label 1) and, for a softmax head, the no-object row. 3 -> 2 rows (UP-DETR, Siamese
  DETR), 92 -> 2 (DETReg DETR), 91 -> 1 (DETReg Deformable, sigmoid). The removed rows are listed in
  ``dropped``. The official never-used rows still enter its softmax / focal loss; the two heads give the same
  objectness only while their logits are -inf (the project card, "Choices and where the sources disagree").
* Siamese DETR: the SimSiam heads ``enc_head.0.{projector,predictor}.mlp.{i}.*`` map to the project's
  ``{projector,predictor}.{i}.*`` (same module positions). The official Linear layers in front of a
  BatchNorm have a bias, the project's none: a constant before a BatchNorm in training mode cancels exactly,
  so the bias is dropped (listed) and, where the checkpoint has the BatchNorm's ``running_mean``, subtracted
  from it, which keeps the evaluation-mode output equal too.
"""

import re
from collections.abc import Mapping
from typing import Dict, List, Sequence, Tuple

import torch

from .official_deformable_detr import convert_official_deformable_detr
from .official_detr import convert_official_conditional_detr, convert_official_detr, select_class_rows
from .registry import ConversionResult, RenameRule, model_state, register_converter, rename_by_rules

__all__ = ["convert_official_up_detr", "convert_official_detreg", "convert_official_siamese_detr"]

_P = r"(weight|bias)"
_REGION_PROJ: RenameRule = (re.compile(rf"^patch2query\.{_P}$"), lambda m: f"region_proj.{m[1]}")


def _sem_embed_rule(official: str) -> RenameRule:
    return re.compile(rf"^{re.escape(official)}\.layers\.(\d+)\.{_P}$"), lambda m: f"sem_embed.layers.{m[1]}.{m[2]}"


def _split(state: Dict[str, torch.Tensor], rules: Sequence[RenameRule]):
    """Keys matching a pretext ``rule`` (converted here) vs the rest (for a finetune converter)."""
    converted, rest = {}, {}
    for key, value in state.items():
        name = rename_by_rules(key, rules)
        if name is None:
            rest[key] = value
        else:
            converted[name] = value
    return converted, rest


def _merge(base: ConversionResult, converted: Dict[str, torch.Tensor], dropped: List[str] = (),
           notes: Dict[str, str] = None) -> ConversionResult:
    clash = sorted(set(base.converted) & set(converted))
    if clash:
        raise ValueError(f"keys converted twice: {clash}")
    return ConversionResult(converted={**base.converted, **converted}, unmapped=list(base.unmapped),
                            dropped=list(base.dropped) + list(dropped), notes={**base.notes, **(notes or {})})


def _is_deformable(state: Mapping) -> bool:
    return "transformer.level_embed" in state or any(".sampling_offsets." in k for k in state)


OBJECT_ROW = 1  # the label every official pretraining gives its pseudo / region targets


def objectness_rows(num_rows: int, softmax: bool) -> List[int]:
    """The official class-head rows the project's objectness head keeps, in its order: the object row
    (``OBJECT_ROW``) and, for a softmax head, the no-object row, which is the official head's last
    (``objectness_rows(3, softmax=True) == [1, 2]``, ``objectness_rows(91, softmax=False) == [1]``). Raises
    ``ValueError`` when the head has no such rows (``num_rows <= 1``, or ``<= 2`` for softmax)."""
    if num_rows <= OBJECT_ROW + int(softmax):
        raise ValueError(f"a class head of {num_rows} rows has no object row {OBJECT_ROW}"
                         + (" and no-object row after it" if softmax else ""))
    return [OBJECT_ROW, num_rows - 1] if softmax else [OBJECT_ROW]


def _keep_objectness_rows(result: ConversionResult, softmax: bool) -> ConversionResult:
    """``result`` with every ``class_embed.*`` tensor cut to :func:`objectness_rows` (removed rows listed in
    ``dropped``; the per-layer aliases of one shared head are cut alike)."""
    converted, dropped = dict(result.converted), list(result.dropped)
    for key in [k for k in converted if k.startswith("class_embed.")]:
        value = converted[key]
        rows = objectness_rows(len(value), softmax)
        converted[key] = select_class_rows(key, value, False, rows, dropped)
    kept = f"the object row {OBJECT_ROW}" + (", then the no-object row (the last)" if softmax else "")
    note = f"removed: the rows the pretraining model's objectness head has no place for; kept: {kept}"
    notes = dict(result.notes, **{"class_embed.*": note})
    return ConversionResult(converted=converted, unmapped=list(result.unmapped), dropped=dropped, notes=notes)


_SIMSIAM = re.compile(r"^enc_head\.0\.(projector|predictor)\.mlp\.(\d+)\.(.+)$")


def _convert_simsiam_heads(state: Mapping[str, torch.Tensor]):
    """Official ``enc_head.0.{projector,predictor}.mlp.{i}.*`` -> project ``{projector,predictor}.{i}.*``.

    The bias of a Linear layer (2-D ``weight``) whose next module is a BatchNorm (1-D ``weight``) is dropped
    and, where the BatchNorm has a ``running_mean``, subtracted from it (module doc).

    Returns:
        ``(converted, dropped)``: ``{project name: tensor}`` and the official biases dropped.
    """
    modules: Dict[Tuple[str, int], Dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _SIMSIAM.match(key)
        if m is not None:
            modules.setdefault((m[1], int(m[2])), {})[m[3]] = value

    def weight_dims(module) -> int:  # 2: Linear, 1: BatchNorm, 0: absent (or ReLU)
        return modules.get(module, {}).get("weight", torch.zeros(())).dim()

    converted = {f"{head}.{i}.{name}": value
                 for (head, i), tensors in modules.items() for name, value in tensors.items()}
    dropped = []
    for (head, i), tensors in modules.items():
        if "bias" in tensors and weight_dims((head, i)) == 2 and weight_dims((head, i + 1)) == 1:
            del converted[f"{head}.{i}.bias"]
            dropped.append(f"enc_head.0.{head}.mlp.{i}.bias")
            running_mean = f"{head}.{i + 1}.running_mean"
            if running_mean in converted:
                converted[running_mean] = converted[running_mean] - tensors["bias"]
    return converted, dropped


@register_converter("up_detr")
def convert_official_up_detr(state_dict, input_format: str = "BGR", for_pretraining: bool = False) -> ConversionResult:
    """Official UP-DETR pretraining checkpoint -> project ``DETR`` (Vanilla) keys, or with ``for_pretraining``
    ``UPDETRPretrain`` keys (objectness rows 1 and 2 of the official 3; module doc).

    ``state_dict``: the checkpoint (``{"model": ...}``) or its model state dict; ``input_format`` as
    :func:`.official_detr.convert_official_detr`. Returns a :class:`ConversionResult`; its ``converted`` holds
    the pretext heads in either case (``patch2query.weight`` -> ``region_proj.weight``,
    ``feature_align.layers.0.weight`` -> ``sem_embed.layers.0.weight``), which a finetune ``DETR`` lacks."""
    state = model_state(state_dict)
    pretext, rest = _split(state, [_REGION_PROJ, _sem_embed_rule("feature_align")])
    result = _merge(convert_official_detr(rest, input_format=input_format, class_rows="none"), pretext)
    return _keep_objectness_rows(result, softmax=True) if for_pretraining else result


@register_converter("detreg")
def convert_official_detreg(state_dict, input_format: str = "BGR", for_pretraining: bool = False) -> ConversionResult:
    """Official DETReg pretraining checkpoint (Deformable DETR, or ``--model detr``) -> project ``DETR`` keys, or
    with ``for_pretraining`` ``DETRegPretrain`` keys (Deformable: sigmoid row 1 of 91; DETR: rows 1 and 91 of
    92; module doc).

    Arguments as :func:`convert_official_up_detr`; the variant is Deformable when the state has
    ``transformer.level_embed`` or ``sampling_offsets`` keys. ``converted`` always holds the pretext head
    (``feature_embed.layers.0.weight`` -> ``sem_embed.layers.0.weight``)."""
    state = model_state(state_dict)
    pretext, rest = _split(state, [_sem_embed_rule("feature_embed")])
    deformable = _is_deformable(rest)
    if deformable:
        base = convert_official_deformable_detr(rest, input_format=input_format, class_rows="none")
    else:
        base = convert_official_detr(rest, input_format=input_format, class_rows="none")
    result = _merge(base, pretext)
    return _keep_objectness_rows(result, softmax=not deformable) if for_pretraining else result


def _num_decoder_layers(state: Mapping) -> int:
    layers = {int(m[1]) for m in (re.match(r"^transformer\.decoder\.layers\.(\d+)\.", k) for k in state) if m}
    return max(layers) + 1 if layers else 0


@register_converter("siamese_detr")
def convert_official_siamese_detr(
    state_dict, input_format: str = "BGR", for_pretraining: bool = False
) -> ConversionResult:
    """Official Siamese DETR (OpenSelfSup) pretraining checkpoint -> project ``DETR`` keys of the matching variant
    (Vanilla, Conditional, single- / multi-scale Deformable), or with ``for_pretraining``
    ``SiameseDETRPretrain`` keys: softmax objectness rows 1 and 2 of the official 3 and the SimSiam heads
    (module doc).

    Arguments as :func:`convert_official_up_detr` (the OpenSelfSup checkpoint ``{"state_dict": ...}`` or
    its state dict). E.g. ``backbone.layer1.0.conv1.weight`` -> ``backbone.res2.0.conv1.weight``,
    ``pred_head.class_embed.weight`` -> ``class_embed.{l}.weight`` for every decoder layer ``l``,
    ``patch2query.weight`` -> ``region_proj.weight`` (in either case). Without ``for_pretraining``,
    ``enc_head.*`` and ``pred_head.criterion.empty_weight`` are listed in ``dropped``."""
    state = model_state(state_dict)
    pretext, rest = _split(state, [_REGION_PROJ, _sem_embed_rule("pred_head.feature_align")])
    if for_pretraining:
        simsiam, folded = _convert_simsiam_heads(rest)
        pretext.update(simsiam)
        rest = {k: v for k, v in rest.items() if not _SIMSIAM.match(k)}
    dropped = sorted(k for k in rest if (k.startswith("enc_head.") and not for_pretraining)
                     or k == "pred_head.criterion.empty_weight")
    deformable = _is_deformable(rest)
    renamed: Dict[str, torch.Tensor] = {}
    for key, value in rest.items():
        if key in dropped:
            continue
        if key.startswith("backbone."):
            key = "backbone.0.body." + key[len("backbone."):]
        elif key.startswith("pred_head."):
            key = key[len("pred_head."):]
        elif deformable and key in ("input_proj.weight", "input_proj.bias"):
            key = "input_proj.0.0." + key.rsplit(".", 1)[1]
        renamed[key] = value
    if deformable:
        if "transformer.tgt_embed.weight" in renamed and "query_embed.weight" in renamed:
            tgt = renamed.pop("transformer.tgt_embed.weight")
            renamed["query_embed.weight"] = torch.cat([renamed["query_embed.weight"], tgt], dim=1)
        heads = {}
        for key in [k for k in renamed if re.match(r"^(class_embed|bbox_embed)\.(weight|bias|layers\.)", k)]:
            value = renamed.pop(key)
            module, rest_name = key.split(".", 1)
            for layer in range(_num_decoder_layers(renamed)):
                heads[f"{module}.{layer}.{rest_name}"] = value
        renamed.update(heads)
        base = convert_official_deformable_detr(renamed, input_format=input_format, class_rows="none")
    elif any(".sa_qcontent_proj." in k for k in renamed):
        base = convert_official_conditional_detr(renamed, input_format=input_format, class_rows="none")
    else:
        base = convert_official_detr(renamed, input_format=input_format, class_rows="none")
    notes = ({"pred_head.*": "the loss's class weights, criterion.empty_weight"}
             if "pred_head.criterion.empty_weight" in dropped else {})
    if not for_pretraining:
        if any(k.startswith("enc_head.") for k in dropped):
            notes["enc_head.*"] = "the SimSiam heads, not used by finetuning (--for-pretraining converts them)"
        return _merge(base, pretext, dropped, notes)
    if folded:
        notes["enc_head.*"] = _folded_note(folded, pretext)
    return _keep_objectness_rows(_merge(base, pretext, dropped + folded, notes), softmax=True)


def _folded_note(folded: Sequence[str], converted: Mapping[str, torch.Tensor]) -> str:
    """Why the SimSiam biases in front of a BatchNorm were dropped, and whether each went into the BatchNorm's
    ``running_mean`` (where the checkpoint has one)."""
    into_mean = sum(f"{m[1]}.{int(m[2]) + 1}.running_mean" in converted
                    for m in (_SIMSIAM.match(k) for k in folded) if m)
    where = ("each subtracted from that BatchNorm's running_mean, so the output is unchanged"
             if into_mean == len(folded) else f"{into_mean} of them subtracted from that BatchNorm's running_mean "
             "(the other BatchNorms have none in the checkpoint)")
    return f"biases of Linear layers in front of a BatchNorm, which the project's layers lack: {where}"
