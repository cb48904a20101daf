"""Conditional DETR configs: the official settings they cite, and the pretraining -> finetuning handoff of the
R50 and demo config pairs (the Siamese DETR checkpoint loads into the finetune model with no conversion)."""

import math
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

from siamese_detr.modeling import ConditionalDetrTransformer, SigmoidTopKPostProcess

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
PRETEXT_ONLY = {"sem_embed", "region_proj", "projector", "predictor"}


def _load(*parts):
    return LazyConfig.load(os.path.join(CONFIGS, *parts))


def test_finetune_config_follows_the_official_settings():
    cfg = _load("detr", "conditional_detr_r50_coco_50ep.py")
    m = cfg.model
    assert m.num_queries == 100 and m.num_classes == 80
    assert (m.transformer.d_model, m.transformer.nhead, m.transformer.dim_feedforward) == (256, 8, 2048)
    assert m.criterion.class_loss == "focal" and m.criterion.focal_alpha == 0.25
    assert (m.criterion.matcher.cost_class, m.criterion.matcher.cost_bbox, m.criterion.matcher.cost_giou) == (2, 5, 2)
    assert dict(m.weight_dict) == {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.params.backbone_lr_factor == 0.5
    assert cfg.train.clip_grad.max_norm == 0.1
    assert _load("detr", "conditional_detr_r50_coco_300q_50ep.py").model.num_queries == 300
    assert _load("detr", "conditional_detr_r50_voc_50ep.py").model.num_classes == 20


def _tiny(cfg):
    cfg.model.backbone.stages.depth = 18
    cfg.model.transformer.num_encoder_layers = 1
    cfg.model.transformer.num_decoder_layers = 2
    cfg.model.transformer.dim_feedforward = 64
    return cfg


@pytest.mark.parametrize(
    "pretrain, finetune",
    [
        (
            ("siamese_detr", "siamese_detr_conditional_r50_imagenet_60ep.py"),
            ("detr", "conditional_detr_r50_coco_50ep.py"),
        ),
        (
            ("siamese_detr", "siamese_detr_conditional_r50_imagenet_300q_60ep.py"),
            ("detr", "conditional_detr_r50_coco_300q_50ep.py"),
        ),
        (("siamese_detr", "siamese_detr_conditional_r50_coco_60ep.py"), ("detr", "conditional_detr_r50_voc_50ep.py")),
        (("demo", "siamese_detr_conditional_pretrain_demo.py"), ("demo", "conditional_detr_demo.py")),
    ],
)
def test_pretraining_checkpoint_hands_off(pretrain, finetune, tmp_path):
    pre_cfg, fine_cfg = _tiny(_load(*pretrain)), _tiny(_load(*finetune))
    torch.manual_seed(0)
    pre, fine = instantiate(pre_cfg.model), instantiate(fine_cfg.model)
    assert isinstance(pre.transformer, ConditionalDetrTransformer)
    assert isinstance(fine.transformer, ConditionalDetrTransformer)
    assert isinstance(fine.postprocess, SigmoidTopKPostProcess)
    # focal prior on the class head, zero last box layer (official ConditionalDETR.__init__)
    assert torch.allclose(fine.class_embed[0].bias, torch.full_like(fine.class_embed[0].bias, -math.log(99.0)))
    assert not fine.bbox_embed[0].layers[-1].weight.any()

    DetectionCheckpointer(pre, save_dir=str(tmp_path)).save("model_final")
    checkpointer = DetectionCheckpointer(fine)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(tmp_path / "model_final.pth")))
    heads = fine_cfg.model.transformer.num_decoder_layers
    class_keys = sorted(f"class_embed.{i}.{k}" for i in range(heads) for k in ("bias", "weight"))
    assert sorted(k for k, *_ in incompatible.incorrect_shapes) == class_keys  # objectness vs K classes
    assert sorted(incompatible.missing_keys) == class_keys
    assert {k.split(".")[0] for k in incompatible.unexpected_keys} == PRETEXT_ONLY
    source = pre.state_dict()
    loaded = [k for k in fine.state_dict() if k not in class_keys]
    assert {k.split(".")[0] for k in loaded} == {"backbone", "input_proj", "transformer", "query_embed", "bbox_embed"}
    for key in loaded:
        assert torch.equal(fine.state_dict()[key], source[key]), key
