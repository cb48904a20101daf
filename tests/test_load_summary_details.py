"""Details of the partial-load summary and of the official-layout hints, on hand-written key lists: each module
that tells a release apart on its own, the modules a summary names, the converter command for a pretraining
model, and hints that must not appear (no pretraining hint without a reason, no normalisation hint for a
checkpoint without a transformer)."""
import pytest
import torch

from siamese_detr.engine.load_summary import (checkpoint_file_keys, module_prefixes, official_layout,
                                              official_layout_hint, partial_load_summary, transformer_variant)

BODY = "backbone.0.body.conv1.weight"  # the official DETR code's ResNet


@pytest.mark.parametrize("marker, fmt", [
    ("feature_align.weight", "up_detr"),  # UP-DETR's feature alignment head without its patch2query
    ("transformer.encoder.layers.0.self_attn.sampling_offsets.weight", "deformable_detr"),  # no level_embed
    ("transformer.decoder.ref_point_head.layers.0.weight", "conditional_detr"),  # no sa_qcontent_proj
])
def test_each_module_a_detr_release_adds_tells_it_apart_on_its_own(marker, fmt):
    assert official_layout([BODY, marker]) == fmt


@pytest.mark.parametrize("head", ["enc_head.0.weight", "pred_head.class_embed.weight", "patch2query.weight"])
def test_each_siamese_detr_head_tells_its_openselfsup_layout_apart(head):
    assert official_layout(["backbone.layer1.0.conv1.weight", head]) == "siamese_detr"


def test_a_conv1_without_resnet_stages_is_no_torchvision_resnet():
    assert official_layout(["conv1.weight", "conv2.weight", "fc.weight"]) is None
    assert official_layout(["conv1.weight", "layer1.0.conv1.weight", "fc.weight"]) == "torchvision"


def test_the_hint_shows_the_first_conv_as_its_example_and_adds_for_pretraining_only_where_the_converter_has_it():
    keys = ["transformer.encoder.layers.0.linear1.weight", BODY, "class_embed.weight"]
    hint = official_layout_hint(keys, "detr.pth", for_pretraining=True)
    assert f"(e.g. '{BODY}')" in hint
    assert "--format detr --input detr.pth --output OUT.pth" in hint and "--for-pretraining" not in hint
    hint = official_layout_hint([BODY, "patch2query.weight"], "up.pth", for_pretraining=True)
    assert "--format up_detr --for-pretraining --input up.pth --output OUT.pth" in hint


def test_a_pretraining_model_given_an_official_release_gets_the_for_pretraining_command():
    summary = partial_load_summary([], ["region_proj.weight"], [BODY, "patch2query.weight"],
                                   checkpoint_keys=[BODY, "patch2query.weight"],
                                   model_keys=["backbone.body.conv1.weight", "region_proj.weight"], source="up.pth")
    assert "--format up_detr --for-pretraining --input up.pth --output OUT.pth" in summary


def test_a_single_level_deformable_transformer_is_told_by_its_layers():
    assert transformer_variant(["transformer.encoder.layers.0.linear1.weight"]) == "Deformable"
    assert transformer_variant(["transformer.decoder.layers.0.linear1.weight"]) == "Deformable"


def test_a_legacy_format_checkpoint_file_is_read_without_memory_mapping(tmp_path):
    """``torch.save`` files of torch < 1.6 are no zip archives: ``mmap=True`` cannot read them."""
    path = tmp_path / "old.pth"
    torch.save({"model": {"a.weight": torch.zeros(2)}}, path, _use_new_zipfile_serialization=False)
    assert checkpoint_file_keys(str(path)) == ["a.weight"]


def test_module_prefixes_keep_two_components_under_the_wrappers_and_cut_the_list():
    assert module_prefixes(["transformer.level_embed", "transformer.enc_output.weight",
                            "module.backbone.res2.weight", "class_embed.0.weight"]) == \
        "transformer, transformer.enc_output, module.backbone, class_embed"
    assert module_prefixes([f"m{i}.weight" for i in range(8)], limit=6) == "m0, m1, m2, m3, m4, m5, ..."
    assert module_prefixes([f"m{i}.weight" for i in range(6)], limit=6) == "m0, m1, m2, m3, m4, m5"


def test_an_unused_encoder_norm_is_named_once():
    """Only as the final norm of a pre-norm transformer, not again as a module this model lacks."""
    summary = partial_load_summary([], [], ["transformer.encoder_norm.weight", "transformer.encoder_norm.bias"],
                                   model_keys=["transformer.encoder_layers.0.linear1.weight"])
    assert "2 checkpoint tensors unused (transformer.encoder_norm): the final encoder LayerNorm" in summary
    assert "modules this model does not have" not in summary


def test_a_backbone_checkpoint_into_a_pre_norm_model_gets_no_normalisation_hint():
    """The missing final encoder norm is named as post-norm only when the checkpoint has a transformer."""
    model = ["backbone.body.conv1.weight", "transformer.encoder_layers.0.linear1.weight",
             "transformer.encoder_norm.weight"]
    summary = partial_load_summary([], model[1:], [], checkpoint_keys=model[:1], model_keys=model)
    assert summary is not None and "normalize_before" not in summary


def test_a_pretraining_model_lacking_only_other_tensors_gets_no_pretraining_hint():
    model = ["transformer.encoder_layers.0.linear1.weight", "region_proj.weight", "class_embed.weight",
             "extra.weight"]
    summary = partial_load_summary([], ["extra.weight"], [], checkpoint_keys=model[:3], model_keys=model)
    assert summary is not None and "This is a pretraining model" not in summary


def test_the_siamese_detr_format_is_named_by_either_simsiam_head():
    model = ["transformer.encoder_layers.0.linear1.weight", "predictor.0.weight"]
    summary = partial_load_summary([], ["predictor.0.weight"], [], checkpoint_keys=model[:1] + ["class_embed.w"],
                                   model_keys=model)
    assert "--format siamese_detr --for-pretraining" in summary
