"""Convert official DETR (facebookresearch/detr) and Conditional DETR (Atten4Vis/ConditionalDETR) checkpoints.

Both ``main.py`` save ``{"model": model.state_dict(), "optimizer": ..., ...}``. Key mapping:

=================================================  ============================================================
official key                                       project key
=================================================  ============================================================
``backbone.0.body.*`` (torchvision ResNet, RGB)    ``backbone.*`` (detectron2 ResNet, via
                                                   :func:`map_torchvision_resnet`, BGR by default)
``input_proj.{weight,bias}``                       ``input_proj.0.0.{weight,bias}``
``query_embed.weight``                             same
``class_embed.{weight,bias}``                      ``class_embed.{l}.*`` for every decoder layer ``l`` (one
                                                   head shared by all layers: every alias is written)
``bbox_embed.layers.{k}.*``                        ``bbox_embed.{l}.layers.{k}.*`` (likewise)
``transformer.encoder.layers.{i}.*``               ``transformer.encoder_layers.{i}.*``
``transformer.encoder.norm.*`` (pre-norm DETR)     ``transformer.encoder_norm.*``
``transformer.decoder.layers.{i}.*``               ``transformer.decoder_layers.{i}.*`` (DETR:
                                                   ``multihead_attn`` -> ``cross_attn``; Conditional DETR: the
                                                   ``sa_*`` / ``ca_*`` projections keep their names)
``transformer.decoder.norm.*``                     ``transformer.decoder_norm.*``
``transformer.decoder.{query_scale,ref_point_head}.*``  ``transformer.{query_scale,ref_point_head}.*``
                                                   (Conditional DETR)
=================================================  ============================================================

Any other key (e.g. the panoptic heads ``detr.*`` / ``bbox_attention.*`` / ``mask_head.*``) is returned in
``unmapped``, so ``tools/convert_checkpoint.py`` refuses to write a checkpoint that would lose it.

Class rows: the official COCO models index their class logits by COCO category id (DETR: 91 ids + the
no-object row = 92 rows; Conditional DETR: 91 rows, sigmoid). The project's COCO datasets use detectron2's
contiguous ids 0..79, so with ``class_rows="auto"`` a head of exactly that COCO width keeps the 80 rows of the
thing category ids (in detectron2's order; DETR also the last, no-object row) and lists the removed rows in
``dropped``; any other width is kept as is (e.g. models trained on VOC with 20 / 21 rows).
"""

import re
from typing import Dict, List, Optional, Sequence, Union

import torch

from .registry import ConversionResult, convert_detr_backbone, model_state, register_converter, rename_by_rules

__all__ = [
    "convert_official_detr", "convert_official_conditional_detr", "coco_thing_category_ids", "select_class_rows",
]

_BACKBONE = "backbone.0.body."
_P = r"(weight|bias)"
_COCO_ID_ROWS = 91  # official num_classes for COCO (max category id 90, plus 1)

# (official pattern, project name builder) shared by both layouts
_COMMON_RULES = [
    (re.compile(rf"^input_proj\.{_P}$"), lambda m: f"input_proj.0.0.{m[1]}"),
    (re.compile(r"^query_embed\.weight$"), lambda m: "query_embed.weight"),
    (re.compile(r"^transformer\.encoder\.layers\.(\d+)\.(.+)$"), lambda m: f"transformer.encoder_layers.{m[1]}.{m[2]}"),
    (re.compile(rf"^transformer\.encoder\.norm\.{_P}$"), lambda m: f"transformer.encoder_norm.{m[1]}"),
    (re.compile(rf"^transformer\.decoder\.norm\.{_P}$"), lambda m: f"transformer.decoder_norm.{m[1]}"),
]
_DETR_DECODER_LAYER = re.compile(
    rf"^transformer\.decoder\.layers\.(\d+)\.((self_attn|multihead_attn)\.(in_proj_weight|in_proj_bias|out_proj\.{_P})"
    rf"|(linear[12]|norm[123])\.{_P})$"
)
_CONDITIONAL_DECODER_LAYER = re.compile(
    rf"^transformer\.decoder\.layers\.(\d+)\.(((sa|ca)_\w+_proj|linear[12]|norm[123])\.{_P}"
    rf"|(self_attn|cross_attn)\.out_proj\.{_P})$"
)
_CONDITIONAL_DECODER_MLP = re.compile(rf"^transformer\.decoder\.(query_scale|ref_point_head)\.layers\.(\d+)\.{_P}$")
_CLASS_HEAD = re.compile(rf"^class_embed\.{_P}$")
_BOX_HEAD = re.compile(rf"^bbox_embed\.layers\.(\d+)\.{_P}$")


def coco_thing_category_ids() -> List[int]:
    """The 80 COCO thing category ids in detectron2's contiguous order (contiguous id ``i`` <-> entry ``i``):
    ``[1, 2, ..., 11, 13, ..., 90]`` (ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 have no thing class)."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return [c["id"] for c in COCO_CATEGORIES if c["isthing"]]


def _class_rows(
    num_rows: int, no_object: bool, class_rows: Union[str, Sequence[int], None]
) -> Optional[List[int]]:
    """Rows of the official class head to keep, in project order (None = all)."""
    if class_rows is None or class_rows == "none":
        return None
    if class_rows == "auto":
        if num_rows != _COCO_ID_ROWS + int(no_object):
            return None
        class_rows = coco_thing_category_ids()
    elif isinstance(class_rows, str):
        raise ValueError(f"class_rows must be 'auto', 'none' or a sequence of row indices, got {class_rows!r}")
    rows = [int(r) for r in class_rows]
    if no_object:
        rows.append(num_rows - 1)
    if any(not 0 <= r < num_rows for r in rows):
        raise ValueError(f"class_rows {rows} out of range for a class head of {num_rows} rows")
    return rows


def class_rows_note(class_rows: Union[str, Sequence[int], None], no_object: bool) -> str:
    """Why :func:`select_class_rows` removed rows, for ``ConversionResult.notes["class_embed.*"]``."""
    if class_rows == "auto":
        why, kept = "COCO ids without a class", "the 80 thing classes in Detectron2's contiguous order"
    else:
        why, kept = "not in class_rows", "the rows of class_rows"
    return f"removed: {why}; kept: {kept}" + (", then the no-object row" if no_object else "")


def select_class_rows(
    key: str, value: torch.Tensor, no_object: bool, class_rows: Union[str, Sequence[int], None], dropped: List[str]
) -> torch.Tensor:
    """The rows of class-head tensor ``key`` (``value``: weight ``[R, C]`` or bias ``[R]``) that
    :func:`_class_rows` keeps, in project order: ``class_rows`` "auto" (COCO id rows -> the 80 thing classes,
    only for a head of 91 rows, + 1 with ``no_object``), "none" / None (every row) or a sequence of official
    row indices; with ``no_object`` the last row is appended. Returns ``value`` itself when every row is kept;
    otherwise the removed rows are appended to ``dropped`` as ``"key[rows 0,12,...]"``. Raises ``ValueError``
    for another string or a row out of range."""
    rows = _class_rows(len(value), no_object, class_rows)
    if rows is None:
        return value
    removed = sorted(set(range(len(value))) - set(rows))
    dropped.append(f"{key}[rows {','.join(map(str, removed))}]")
    return value[rows]


def _convert(
    state_dict,
    input_format: str,
    decoder_rules: List,
    no_object: bool,
    class_rows: Union[str, Sequence[int], None],
) -> ConversionResult:
    state = model_state(state_dict)
    converted: Dict[str, torch.Tensor] = {}
    unmapped: List[str] = []
    dropped: List[str] = []

    mapped, backbone_dropped = convert_detr_backbone(state, input_format, _BACKBONE)
    converted.update(mapped)
    dropped.extend(backbone_dropped)

    decoder_layers = {
        int(m[1]) for m in (re.match(r"^transformer\.decoder\.layers\.(\d+)\.", k) for k in state) if m is not None
    }
    num_heads = max(decoder_layers) + 1 if decoder_layers else 0
    rules = _COMMON_RULES + decoder_rules
    heads: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(_BACKBONE):
            continue
        if _CLASS_HEAD.match(key) or _BOX_HEAD.match(key):
            heads[key] = value
            continue
        name = rename_by_rules(key, rules)
        if name is None:
            unmapped.append(key)
        else:
            converted[name] = value

    if heads and num_heads == 0:
        unmapped.extend(heads)  # heads without a decoder: nowhere to put them
        heads = {}
    for key, value in heads.items():
        m = _CLASS_HEAD.match(key)
        if m is not None:
            value = select_class_rows(key, value, no_object, class_rows, dropped)
            names = [f"class_embed.{layer}.{m[1]}" for layer in range(num_heads)]
        else:
            m = _BOX_HEAD.match(key)
            names = [f"bbox_embed.{layer}.layers.{m[1]}.{m[2]}" for layer in range(num_heads)]
        for name in names:
            converted[name] = value
    notes = {"class_embed.*": class_rows_note(class_rows, no_object)} if any("[rows " in d for d in dropped) else {}
    return ConversionResult(converted=converted, unmapped=unmapped, dropped=dropped, notes=notes)


def _detr_decoder_name(m) -> str:
    return f"transformer.decoder_layers.{m[1]}.{m[2].replace('multihead_attn.', 'cross_attn.', 1)}"


_DETR_RULES = [(_DETR_DECODER_LAYER, _detr_decoder_name)]
_CONDITIONAL_RULES = [
    (_CONDITIONAL_DECODER_LAYER, lambda m: f"transformer.decoder_layers.{m[1]}.{m[2]}"),
    (_CONDITIONAL_DECODER_MLP, lambda m: f"transformer.{m[1]}.layers.{m[2]}.{m[3]}"),
]


@register_converter("detr")
def convert_official_detr(
    state_dict, input_format: str = "BGR", class_rows: Union[str, Sequence[int], None] = "auto"
) -> ConversionResult:
    """Official DETR (``models/detr.py`` ``DETR``) -> project :class:`DETR` with :class:`DetrTransformer`.

    Args:
        state_dict: the official checkpoint (``{"model": ...}``) or its model state dict.
        input_format: channel order the project model feeds the backbone ("BGR" flips ``conv1``'s inputs).
        class_rows: "auto" (COCO id rows -> detectron2's 80 contiguous classes when the head has 92 rows),
            "none" (keep every row), or the official row of each project class (the no-object row, last, is
            always appended).

    Returns:
        :class:`ConversionResult`: ``converted`` (project name -> tensor, the one class / box head written to
        every decoder layer's alias ``class_embed.{l}.*`` / ``bbox_embed.{l}.*``), ``unmapped`` (non-empty =
        keys with no project counterpart), ``dropped`` (the backbone's ``num_batches_tracked`` / ``fc``, and
        the removed class rows as ``"class_embed.weight[rows 0,12,...]"``) and ``notes``.
    """
    return _convert(state_dict, input_format, _DETR_RULES, no_object=True, class_rows=class_rows)


@register_converter("conditional_detr")
def convert_official_conditional_detr(
    state_dict, input_format: str = "BGR", class_rows: Union[str, Sequence[int], None] = "auto"
) -> ConversionResult:
    """Official Conditional DETR (``models/conditional_detr.py``) -> project :class:`DETR` with
    :class:`ConditionalDetrTransformer` (arguments and result as :func:`convert_official_detr`; the sigmoid
    class head has no no-object row, "auto" maps a 91-row COCO head to 80 rows)."""
    return _convert(state_dict, input_format, _CONDITIONAL_RULES, no_object=False, class_rows=class_rows)
