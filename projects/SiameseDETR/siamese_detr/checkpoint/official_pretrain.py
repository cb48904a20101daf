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
    ``enc_head.*`` (SimSiam projector / predictor)  -> dropped: pretext-only, and their Linear layers carry
                                                       biases the project's SimSiam heads do not have
    the transformer by variant (``transformer.level_embed`` -> Deformable, ``sa_qcontent_proj`` -> Conditional,
    else Vanilla), with the official converters.

Anything else is returned in ``unmapped`` (the CLI then writes nothing). Converted checkpoints are meant for
``train.init_checkpoint`` of a finetune ``DETR`` of the matching variant (e.g. pre-norm for UP-DETR); the class
heads keep the official widths and are skipped there for their shape.
"""

import re
from collections.abc import Mapping
from typing import Dict, List, Sequence

import torch

from .official_deformable_detr import convert_official_deformable_detr
from .official_detr import convert_official_conditional_detr, convert_official_detr
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


def _merge(base: ConversionResult, converted: Dict[str, torch.Tensor], dropped: List[str] = ()) -> ConversionResult:
    clash = sorted(set(base.converted) & set(converted))
    if clash:
        raise ValueError(f"keys converted twice: {clash}")
    return ConversionResult(converted={**base.converted, **converted}, unmapped=list(base.unmapped),
                            dropped=list(base.dropped) + list(dropped))


def _is_deformable(state: Mapping) -> bool:
    return "transformer.level_embed" in state or any(".sampling_offsets." in k for k in state)


@register_converter("up_detr")
def convert_official_up_detr(state_dict, input_format: str = "BGR") -> ConversionResult:
    """Official UP-DETR pretraining checkpoint -> project ``UPDETRPretrain`` / ``DETR`` (Vanilla) keys."""
    state = model_state(state_dict)
    pretext, rest = _split(state, [_REGION_PROJ, _sem_embed_rule("feature_align")])
    return _merge(convert_official_detr(rest, input_format=input_format, class_rows="none"), pretext)


@register_converter("detreg")
def convert_official_detreg(state_dict, input_format: str = "BGR") -> ConversionResult:
    """Official DETReg pretraining checkpoint (Deformable DETR, or ``--model detr``) -> project keys."""
    state = model_state(state_dict)
    pretext, rest = _split(state, [_sem_embed_rule("feature_embed")])
    if _is_deformable(rest):
        base = convert_official_deformable_detr(rest, input_format=input_format, class_rows="none")
    else:
        base = convert_official_detr(rest, input_format=input_format, class_rows="none")
    return _merge(base, pretext)


def _num_decoder_layers(state: Mapping) -> int:
    layers = {int(m[1]) for m in (re.match(r"^transformer\.decoder\.layers\.(\d+)\.", k) for k in state) if m}
    return max(layers) + 1 if layers else 0


@register_converter("siamese_detr")
def convert_official_siamese_detr(state_dict, input_format: str = "BGR") -> ConversionResult:
    """Official Siamese DETR (OpenSelfSup) pretraining checkpoint -> project ``SiameseDETRPretrain`` / ``DETR``
    keys of the matching variant (Vanilla, Conditional, single- / multi-scale Deformable)."""
    state = model_state(state_dict)
    pretext, rest = _split(state, [_REGION_PROJ, _sem_embed_rule("pred_head.feature_align")])
    dropped = sorted(k for k in rest if k.startswith("enc_head.") or k == "pred_head.criterion.empty_weight")
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
    return _merge(base, pretext, dropped)
