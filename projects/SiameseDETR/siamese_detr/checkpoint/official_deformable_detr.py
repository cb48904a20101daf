"""Convert an official Deformable DETR checkpoint (fundamentalvision/Deformable-DETR ``main.py`` output).

Official layout (``torch.save({"model": model.state_dict(), "optimizer": ..., ...})``):

========================================================  ===============================================
official key                                              project key
========================================================  ===============================================
``backbone.0.body.*`` (torchvision ResNet, RGB)           ``backbone.*`` (detectron2 ResNet, via
                                                          :func:`map_torchvision_resnet`, BGR by default)
``input_proj.{l}.{0,1}.{weight,bias}``                    same (conv, GroupNorm)
``transformer.level_embed``                               same
``transformer.encoder.layers.{i}.*``                      same (:class:`DeformableDetrTransformer`)
``transformer.decoder.layers.{i}.*``                      same
``transformer.reference_points.*``                        same (not two-stage)
``transformer.enc_output{,_norm}.*``,
``transformer.pos_trans{,_norm}.*``                       same (two-stage)
``query_embed.weight`` ``[Q, 2C]``                        same (``[query_pos | tgt]``; not two-stage)
``class_embed.{l}.*``, ``bbox_embed.{l}.layers.{k}.*``    same (every alias when the heads are shared);
                                                          a COCO head's 91 rows (by COCO category id)
                                                          -> detectron2's 80 thing classes, as
                                                          :func:`.official_detr.convert_official_detr`
``transformer.decoder.{class,bbox}_embed.*``              dropped: the official decoder holds the same
                                                          head modules for refinement / two-stage, so
                                                          these keys alias ``class_embed`` / ``bbox_embed``
========================================================  ===============================================

Every other key (e.g. the segmentation heads ``bbox_attention.*`` / ``mask_head.*``) is reported in
``unmapped``; so is an aliased decoder head key whose tensor differs from the top-level head it should
repeat.
"""

import re
from typing import Dict, List, Sequence, Union

import torch

from .official_detr import class_rows_note, select_class_rows
from .registry import ConversionResult, convert_detr_backbone, model_state, register_converter

__all__ = ["convert_official_deformable_detr"]

_P = r"(weight|bias)"
_MSDA = r"(sampling_offsets|attention_weights|value_proj|output_proj)"
_TOP = r"(reference_points|enc_output|enc_output_norm|pos_trans|pos_trans_norm)"
_KEPT = [
    re.compile(rf"^transformer\.(level_embed|{_TOP}\.{_P})$"),
    re.compile(rf"^transformer\.encoder\.layers\.\d+\.(self_attn\.{_MSDA}\.{_P}|(linear[12]|norm[12])\.{_P})$"),
    re.compile(
        rf"^transformer\.decoder\.layers\.\d+\.(cross_attn\.{_MSDA}\.{_P}"
        rf"|self_attn\.(in_proj_weight|in_proj_bias|out_proj\.{_P})|(linear[12]|norm[123])\.{_P})$"
    ),
    re.compile(rf"^input_proj\.\d+\.[01]\.{_P}$"),
    re.compile(r"^query_embed\.weight$"),
    re.compile(rf"^class_embed\.\d+\.{_P}$"),
    re.compile(rf"^bbox_embed\.\d+\.layers\.\d+\.{_P}$"),
]
_DECODER_HEAD_ALIAS = re.compile(r"^transformer\.decoder\.((class|bbox)_embed\..+)$")
_CLASS_HEAD = re.compile(r"^class_embed\.\d+\.(weight|bias)$")
_BACKBONE = "backbone.0.body."


@register_converter("deformable_detr")
def convert_official_deformable_detr(
    state_dict, input_format: str = "BGR", class_rows: Union[str, Sequence[int], None] = "auto"
) -> ConversionResult:
    """Official Deformable DETR (single-/multi-scale, box refinement, two-stage) -> project keys.

    Args:
        state_dict: the official checkpoint (``{"model": ...}``) or its model state dict.
        input_format: channel order the project model feeds the backbone ("BGR" flips ``conv1``'s inputs).
        class_rows: "auto" (a 91-row COCO head, indexed by COCO category id as the official ``num_classes =
            91``, -> detectron2's 80 contiguous classes), "none" (keep every row), or the official row of each
            project class (sigmoid head: no no-object row).

    Returns:
        :class:`ConversionResult` with ``converted`` (project name -> tensor), ``unmapped`` (official keys
        with no project counterpart: the CLI refuses to write when non-empty), ``dropped`` (keys left out
        on purpose: the decoder's head aliases, torchvision's ``num_batches_tracked`` / ``fc``, and the
        class rows removed by ``class_rows`` as ``"class_embed.0.weight[rows 0,12,...]"``) and ``notes``.
    """
    state = model_state(state_dict)
    converted: Dict[str, torch.Tensor] = {}
    unmapped: List[str] = []
    dropped: List[str] = []

    mapped, backbone_dropped = convert_detr_backbone(state, input_format, _BACKBONE)
    converted.update(mapped)
    dropped.extend(backbone_dropped)

    for key, value in state.items():
        if key.startswith(_BACKBONE):
            continue
        if any(p.match(key) for p in _KEPT):
            if _CLASS_HEAD.match(key):
                value = select_class_rows(key, value, False, class_rows, dropped)
            converted[key] = value
            continue
        alias = _DECODER_HEAD_ALIAS.match(key)
        if alias is not None:
            head = state.get(alias.group(1))
            if head is not None and head.shape == value.shape and torch.equal(head, value):
                dropped.append(key)
                continue
        unmapped.append(key)
    notes = {}
    if any("[rows " in d for d in dropped):
        notes["class_embed.*"] = class_rows_note(class_rows, no_object=False)
    if any(_DECODER_HEAD_ALIAS.match(d) for d in dropped):
        notes["transformer.*"] = "the decoder's copies of the shared class_embed / bbox_embed (the same tensors)"
    return ConversionResult(converted=converted, unmapped=unmapped, dropped=dropped, notes=notes)
