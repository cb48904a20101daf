"""Pretraining -> finetuning handoff: a SiameseDETRPretrain checkpoint loads into DETR through Detectron2's
checkpointer with no conversion; exact lists of loaded / skipped (shape mismatch) / unused keys."""
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

from pretext_test_utils import load_and_report, tiny_transformer
from siamese_detr.modeling import DETR, HungarianMatcher, PositionEmbeddingSine, SetCriterion
from test_siamese_detr_model import tiny_backbone, tiny_model

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")

# pretext-only parameters / buffers of tiny_model(): f_sem (2-layer MLP), proj(z), SimSiam projector
# (Linear-BN-ReLU-Linear-BN-ReLU-Linear-BN) and predictor (Linear-BN-ReLU-Linear)
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
EXPECTED_UNUSED = sorted(
    [f"sem_embed.layers.{i}.{k}" for i in (0, 1) for k in ("weight", "bias")]
    + ["region_proj.weight", "region_proj.bias"]
    + ["projector.0.weight", "projector.3.weight", "projector.6.weight"]
    + [f"projector.{i}.{k}" for i in (1, 4, 7) for k in _BN]
    + ["predictor.0.weight", "predictor.3.weight", "predictor.3.bias"]
    + [f"predictor.1.{k}" for k in _BN]
)


def tiny_detr(num_classes=3, num_queries=6, d_model=32, layers=2):
    torch.manual_seed(123)
    return DETR(
        backbone=tiny_backbone(),
        position_embedding=PositionEmbeddingSine(num_pos_feats=d_model // 2),
        transformer=tiny_transformer(d_model, layers),
        num_classes=num_classes,
        num_queries=num_queries,
        criterion=SetCriterion(num_classes, HungarianMatcher()),
        weight_dict={"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
    )


def test_pretraining_checkpoint_loads_into_detr(tmp_path):
    pretrained = tiny_model(num_queries=6, num_regions=3)
    DetectionCheckpointer(pretrained, save_dir=str(tmp_path)).save("model_final")
    path = os.path.join(str(tmp_path), "model_final.pth")

    detr = tiny_detr()
    incompatible = load_and_report(detr, path)

    # the class head of every decoder layer (one shared module, two aliases) is skipped for its shape
    assert sorted(incompatible.incorrect_shapes) == [
        (f"class_embed.{i}.{k}", shape_pre, shape_fine)
        for i in (0, 1)
        for k, shape_pre, shape_fine in (("bias", (2,), (4,)), ("weight", (2, 32), (4, 32)))
    ]
    assert sorted(incompatible.missing_keys) == [f"class_embed.{i}.{k}" for i in (0, 1) for k in ("bias", "weight")]
    assert sorted(incompatible.unexpected_keys) == EXPECTED_UNUSED

    source = pretrained.state_dict()
    loaded = sorted(set(detr.state_dict()) - set(incompatible.missing_keys))
    expected_modules = {"backbone", "input_proj", "transformer", "query_embed", "bbox_embed"}
    assert {k.split(".")[0] for k in loaded} == expected_modules
    for key in loaded:
        assert torch.equal(detr.state_dict()[key], source[key]), key
    # the public entry point (what train.init_checkpoint uses) also goes through without error
    DetectionCheckpointer(tiny_detr()).load(path)


def test_r50_pretrain_and_finetune_configs_agree_on_shapes():
    pre_cfg = LazyConfig.load(os.path.join(CONFIGS, "siamese_detr", "siamese_detr_r50_imagenet_60ep.py"))
    fine_cfg = LazyConfig.load(os.path.join(CONFIGS, "detr", "detr_r50_coco_150ep.py"))
    pre, fine = instantiate(pre_cfg.model), instantiate(fine_cfg.model)
    pre_sd, fine_sd = pre.state_dict(), fine.state_dict()
    mismatched = sorted(k for k in fine_sd if k in pre_sd and pre_sd[k].shape != fine_sd[k].shape)
    assert mismatched == sorted(f"class_embed.{i}.{k}" for i in range(6) for k in ("bias", "weight"))
    assert sorted(k for k in fine_sd if k not in pre_sd) == []
    unused_prefixes = {k.split(".")[0] for k in pre_sd if k not in fine_sd}
    assert unused_prefixes == {"sem_embed", "region_proj", "projector", "predictor"}


# (pretraining config, finetuning config) of every transformer variant, R50 and demo
VARIANT_PAIRS = [
    ("siamese_detr/siamese_detr_r50_imagenet_60ep.py", "detr/detr_r50_voc_50ep.py"),
    ("demo/siamese_detr_pretrain_demo.py", "demo/detr_demo.py"),
    ("siamese_detr/siamese_detr_conditional_r50_imagenet_60ep.py", "detr/conditional_detr_r50_coco_50ep.py"),
    ("siamese_detr/siamese_detr_conditional_r50_imagenet_300q_60ep.py",
     "detr/conditional_detr_r50_coco_300q_50ep.py"),
    ("siamese_detr/siamese_detr_conditional_r50_coco_60ep.py", "detr/conditional_detr_r50_voc_50ep.py"),
    ("demo/siamese_detr_conditional_pretrain_demo.py", "demo/conditional_detr_demo.py"),
    ("siamese_detr/siamese_detr_deformable_ss_r50_imagenet_60ep.py", "detr/deformable_detr_ss_r50_coco_50ep.py"),
    ("siamese_detr/siamese_detr_deformable_ms_r50_imagenet_60ep.py", "detr/deformable_detr_r50_voc_50ep.py"),
    ("demo/siamese_detr_deformable_pretrain_demo.py", "demo/deformable_detr_demo.py"),
]


def _tiny_config(path):
    cfg = LazyConfig.load(os.path.join(CONFIGS, path))
    cfg.model.backbone.stages.depth = 18
    cfg.model.transformer.num_encoder_layers = 1
    cfg.model.transformer.num_decoder_layers = 2
    cfg.model.transformer.dim_feedforward = 64
    return cfg


@pytest.mark.parametrize("pretrain, finetune", VARIANT_PAIRS)
def test_every_variant_hands_off_with_init_checkpoint(pretrain, finetune, tmp_path):
    """Only the class head of every decoder layer is skipped (objectness vs K classes); everything else the
    finetune model has loads unchanged, and exactly the pretext heads are unused."""
    torch.manual_seed(0)
    pre, fine = instantiate(_tiny_config(pretrain).model), instantiate(_tiny_config(finetune).model)
    assert type(pre.transformer) is type(fine.transformer)
    DetectionCheckpointer(pre, save_dir=str(tmp_path)).save("model_final")
    incompatible = load_and_report(fine, str(tmp_path / "model_final.pth"))
    class_keys = sorted(f"class_embed.{i}.{k}" for i in range(len(fine.class_embed)) for k in ("bias", "weight"))
    assert sorted(k for k, *_ in incompatible.incorrect_shapes) == class_keys
    assert sorted(incompatible.missing_keys) == class_keys
    assert {k.split(".")[0] for k in incompatible.unexpected_keys} == {
        "sem_embed", "region_proj", "projector", "predictor"
    }
    source = pre.state_dict()
    loaded = [k for k in fine.state_dict() if k not in class_keys]
    assert {k.split(".")[0] for k in loaded} == {"backbone", "input_proj", "transformer", "query_embed", "bbox_embed"}
    for key in loaded:
        assert torch.equal(fine.state_dict()[key], source[key]), key


def test_pretext_model_config_takes_the_finetune_models_parts_and_leaves_it_untouched():
    """``pretext_model_from``: backbone, levels, positions, transformer, queries, pixel statistics, input
    format, post-processing and L_loc weights are the finetune config's (here changed from the defaults so a
    fall-back to a default shows); auxiliary decoder losses are always on (L_loc and L_r per layer, even
    when the finetune model has them off); the criterion is a COPY with one objectness class: the finetune
    config's own criterion still follows its ``num_classes``."""
    from detectron2.config import LazyCall as L

    from siamese_detr.modeling import SoftmaxTopKPostProcess
    from siamese_detr.modeling.meta_arch.pretext_config import pretext_model_from
    from siamese_detr.modeling.meta_arch.siamese_detr import SiameseDETRPretrain

    detr = LazyConfig.load(os.path.join(CONFIGS, "common", "models", "detr_r50.py")).model
    detr.aux_loss = False
    detr.pixel_std = [1.0, 2.0, 3.0]
    detr.pixel_mean = [4.0, 5.0, 6.0]
    detr.input_format = "RGB"
    detr.num_queries = 30
    detr.postprocess = L(SoftmaxTopKPostProcess)(num_detections=7)
    detr.weight_dict = {"loss_ce": 2.0, "loss_bbox": 4.0, "loss_giou": 1.5, "loss_other": 9.0}
    criterion_before = LazyConfig.to_py(detr.criterion)
    cfg = pretext_model_from(SiameseDETRPretrain, detr, {"loss_region": 3.0, "loss_global": 10.0}, num_regions=10)
    assert cfg.aux_loss is True
    assert cfg.pixel_std == [1.0, 2.0, 3.0] and cfg.pixel_mean == [4.0, 5.0, 6.0] and cfg.input_format == "RGB"
    assert cfg.num_queries == 30 and cfg.num_regions == 10 and cfg.in_features == ["res5"]
    assert cfg.postprocess == detr.postprocess and cfg.postprocess.num_detections == 7
    for part in ("backbone", "position_embedding", "transformer"):
        assert cfg[part] == detr[part], part
    assert dict(cfg.weight_dict) == {"loss_ce": 2.0, "loss_bbox": 4.0, "loss_giou": 1.5, "loss_region": 3.0,
                                     "loss_global": 10.0}
    assert cfg.criterion.num_classes == 1 and cfg.criterion.eos_coef == detr.criterion.eos_coef
    assert cfg.criterion is not detr.criterion
    assert LazyConfig.to_py(detr.criterion) == criterion_before
    assert instantiate(detr.criterion).num_classes == 80
