"""Checkpoint converters, by hand on tiny state dicts: class-head rows kept (COCO ids -> detectron2's 80
classes for the sigmoid Deformable DETR head too; explicit rows in the given order, out-of-range rows refused),
heads without a decoder, the decoder's head aliases, the objectness rows of the pretraining heads and the
wrapper prefixes of torchvision-layout ResNets."""
import pytest
import torch

from siamese_detr.checkpoint import map_torchvision_resnet
from siamese_detr.checkpoint.official_deformable_detr import convert_official_deformable_detr
from siamese_detr.checkpoint.official_detr import convert_official_conditional_detr, convert_official_detr
from siamese_detr.checkpoint.official_pretrain import objectness_rows
from siamese_detr.checkpoint.registry import register_converter

# COCO's 80 thing category ids (1..90 without the 10 ids that have no category), written out by hand
COCO_THING_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
HIDDEN = 4


def _rows(num_rows: int):
    """A class head whose row ``r`` holds ``r`` (weight) and ``r + 0.5`` (bias)."""
    rows = torch.arange(num_rows, dtype=torch.float32)
    return rows[:, None].repeat(1, HIDDEN), rows + 0.5


def _deformable_state(num_rows: int, layers: int = 2, aliases: bool = False) -> dict:
    """Official Deformable DETR layout (no backbone): ``layers`` decoder layers, one class head per layer
    (box refinement style); with ``aliases`` the decoder holds the same head tensors again."""
    state = {"transformer.level_embed": torch.zeros(4, HIDDEN), "query_embed.weight": torch.zeros(3, 2 * HIDDEN)}
    for layer in range(layers):
        state[f"transformer.decoder.layers.{layer}.linear1.weight"] = torch.ones(2 * HIDDEN, HIDDEN)
        weight, bias = _rows(num_rows)
        state[f"class_embed.{layer}.weight"], state[f"class_embed.{layer}.bias"] = weight + layer, bias + layer
        state[f"bbox_embed.{layer}.layers.0.weight"] = torch.full((HIDDEN, HIDDEN), float(layer))
        if aliases:
            state[f"transformer.decoder.class_embed.{layer}.weight"] = state[f"class_embed.{layer}.weight"].clone()
            state[f"transformer.decoder.bbox_embed.{layer}.layers.0.weight"] = (
                state[f"bbox_embed.{layer}.layers.0.weight"].clone())
    return state


@pytest.mark.parametrize("num_rows, kept", [(91, COCO_THING_IDS), (92, list(range(92))), (20, list(range(20)))])
def test_deformable_detr_auto_class_rows_map_the_91_coco_id_rows_to_the_80_classes(num_rows, kept):
    """The official Deformable DETR head is sigmoid with ``num_classes = 91`` (COCO category ids, no
    no-object row): "auto" keeps rows 1, 2, ..., 90 without the 10 unused ids, in detectron2's order, for every
    layer's head; other widths are kept whole."""
    result = convert_official_deformable_detr(_deformable_state(num_rows))
    assert not result.unmapped
    expected = torch.tensor(kept, dtype=torch.float32)
    for layer in range(2):
        assert torch.equal(result.converted[f"class_embed.{layer}.bias"], expected + 0.5 + layer)
        assert torch.equal(result.converted[f"class_embed.{layer}.weight"][:, 0], expected + layer)
        assert torch.equal(result.converted[f"bbox_embed.{layer}.layers.0.weight"],
                           torch.full((HIDDEN, HIDDEN), float(layer)))
    removed = [d for d in result.dropped if "[rows " in d]
    if num_rows == 91:
        unused = [0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83]  # id 0 and the 10 ids without a category
        assert f"class_embed.0.bias[rows {','.join(map(str, unused))}]" in removed
        assert "class_embed.*" in result.notes and "no-object" not in result.notes["class_embed.*"]
    else:
        assert removed == [] and "class_embed.*" not in result.notes
    assert "transformer.*" not in result.notes  # no decoder head aliases in this checkpoint


def test_deformable_detr_decoder_head_aliases_are_dropped_with_their_note():
    result = convert_official_deformable_detr(_deformable_state(20, aliases=True))
    assert not result.unmapped
    assert "transformer.decoder.class_embed.1.weight" in result.dropped
    assert not any(k.startswith(("transformer.decoder.class_embed", "transformer.decoder.bbox_embed"))
                   for k in result.converted)
    assert "transformer.*" in result.notes


def test_explicit_class_rows_are_kept_in_the_given_order_and_checked_against_the_width():
    """class_rows=[5, 2] of a 21-row DETR head (20 classes + no-object) -> rows 5, 2, then the no-object row
    20; a row index equal to the width (21) is out of range: ValueError, not an IndexError or a wrong row."""
    weight, bias = _rows(21)
    state = {"transformer.decoder.layers.0.linear1.weight": torch.ones(8, HIDDEN),
             "class_embed.weight": weight, "class_embed.bias": bias}
    result = convert_official_detr(state, class_rows=[5, 2])
    assert result.converted["class_embed.0.bias"].tolist() == [5.5, 2.5, 20.5]
    assert "class_embed.bias[rows 0,1,3,4,6,7,8,9,10,11,12,13,14,15,16,17,18,19]" in result.dropped
    for bad in ([0, 21], [-1]):
        with pytest.raises(ValueError, match="out of range for a class head of 21 rows"):
            convert_official_detr(state, class_rows=bad)
    with pytest.raises(ValueError, match="out of range for a class head of 21 rows"):
        convert_official_conditional_detr(state, class_rows=[21])  # sigmoid: no no-object row appended


def test_heads_without_decoder_layers_are_unmapped_not_dropped():
    """A DETR checkpoint with class / box heads but no decoder layer has no layer to write the shared head
    to: the heads are reported as unmapped (the CLI then writes nothing), not silently left out."""
    weight, bias = _rows(3)
    state = {"query_embed.weight": torch.zeros(3, HIDDEN), "class_embed.weight": weight,
             "class_embed.bias": bias, "bbox_embed.layers.0.weight": torch.ones(HIDDEN, HIDDEN)}
    result = convert_official_detr(state)
    assert sorted(result.unmapped) == ["bbox_embed.layers.0.weight", "class_embed.bias", "class_embed.weight"]
    assert list(result.converted) == ["query_embed.weight"]


@pytest.mark.parametrize("num_rows, softmax, rows", [(3, True, [1, 2]), (92, True, [1, 91]), (91, False, [1]),
                                                     (2, False, [1])])
def test_objectness_rows_by_hand(num_rows, softmax, rows):
    """The object row is label 1; a softmax head also keeps its no-object row, the last."""
    assert objectness_rows(num_rows, softmax) == rows


@pytest.mark.parametrize("num_rows, softmax", [(2, True), (1, True), (1, False)])
def test_a_head_too_narrow_for_the_object_row_is_refused(num_rows, softmax):
    """2 softmax rows are row 0 and the no-object row 1: there is no object row 1 before the no-object row."""
    with pytest.raises(ValueError, match=f"a class head of {num_rows} rows has no object row 1"):
        objectness_rows(num_rows, softmax)


def _tiny_resnet_keys():
    return {"conv1.weight": torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).reshape(2, 3, 1, 1),
            "bn1.weight": torch.ones(2), "layer1.0.conv1.weight": torch.ones(2, 2, 1, 1)}


def test_repeated_wrapper_prefixes_are_all_removed():
    """A model wrapped twice in DDP saves ``module.module.*``; DETR's backbone under DDP saves
    ``module.backbone.0.body.*``: every leading wrapper prefix is removed."""
    sd = _tiny_resnet_keys()
    for prefix in ("module.module.", "module.backbone.0.body.", "backbone.0.body.module."):
        converted, _ = map_torchvision_resnet({prefix + k: v for k, v in sd.items()}, input_format="RGB")
        assert sorted(converted) == ["backbone.res2.0.conv1.weight", "backbone.stem.conv1.norm.weight",
                                     "backbone.stem.conv1.weight"], prefix


def test_keys_that_collide_once_unwrapped_are_refused():
    """``conv1.weight`` and ``module.conv1.weight`` would both become ``stem.conv1.weight``: one would be lost."""
    sd = _tiny_resnet_keys()
    sd["module.conv1.weight"] = torch.zeros(2, 3, 1, 1)
    with pytest.raises(ValueError, match="'module.conv1.weight' collides with another key"):
        map_torchvision_resnet(sd)


@pytest.mark.parametrize("extra", ["head.fc.weight", "encoder_q.fc.0.weight", "neck.prototypes.weight"])
def test_only_the_top_level_classifier_and_pretext_heads_are_dropped(extra):
    """``fc.*`` / ``projection_head.*`` / ``prototypes.*`` are dropped at the top level only: the same names
    inside another module (e.g. MoCo's ``encoder_q.fc``) mean a different layout, named in the error."""
    sd = _tiny_resnet_keys()
    sd["fc.weight"], sd["prototypes.weight"], sd["layer1.0.bn1.num_batches_tracked"] = (
        torch.ones(1), torch.ones(1), torch.tensor(3))
    _, dropped = map_torchvision_resnet(dict(sd))
    assert sorted(dropped) == ["fc.weight", "layer1.0.bn1.num_batches_tracked", "prototypes.weight"]
    sd[extra] = torch.ones(1)
    with pytest.raises(ValueError, match=f"unexpected keys for a torchvision-layout ResNet: {extra}"):
        map_torchvision_resnet(sd)


def test_a_converter_name_cannot_be_registered_twice():
    with pytest.raises(KeyError, match="'detr' is registered twice"):
        register_converter("detr")(lambda state_dict, input_format="BGR": None)
