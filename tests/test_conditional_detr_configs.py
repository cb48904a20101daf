"""Conditional DETR configs: the official settings they cite and the official head initialisation (the
pretraining -> finetuning handoff of every variant's config pairs is tested in test_siamese_handoff.py)."""

import math
import os

import torch
from detectron2.config import LazyConfig, instantiate

from siamese_detr.modeling import ConditionalDetrTransformer, SigmoidTopKPostProcess

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


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


def test_finetune_heads_are_initialised_as_official():
    fine = instantiate(_tiny(_load("detr", "conditional_detr_r50_coco_50ep.py")).model)
    assert isinstance(fine.transformer, ConditionalDetrTransformer)
    assert isinstance(fine.postprocess, SigmoidTopKPostProcess)
    assert fine.postprocess.num_detections == 100  # official PostProcess: the top 100 (query, class) scores
    # focal prior on the class head, zero last box layer (official ConditionalDETR.__init__)
    assert torch.allclose(fine.class_embed[0].bias, torch.full_like(fine.class_embed[0].bias, -math.log(99.0)))
    assert not fine.bbox_embed[0].layers[-1].weight.any()
