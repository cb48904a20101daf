"""DETR(frozen_modules=...): frozen parts get no update and stay in eval mode; the heads-only probe config."""
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig
from detectron2.utils.events import EventStorage

from siamese_detr.modeling import DETR
from siamese_detr.solver import detr_param_groups
from test_detr_model import NUM_CLASSES, NUM_QUERIES, WEIGHTS, make_input, make_model

ROOT = Path(__file__).resolve().parents[1]
FROZEN = ("backbone", "input_proj", "transformer", "query_embed")


def _heads_only(seed=0):
    model = make_model(seed=seed, dropout=0.1)
    return DETR(
        backbone=model.backbone, position_embedding=model.position_embedding, transformer=model.transformer,
        num_classes=NUM_CLASSES, num_queries=NUM_QUERIES, criterion=model.criterion, weight_dict=WEIGHTS,
        frozen_modules=FROZEN,
    )


def test_only_the_heads_change_and_frozen_modules_stay_in_eval_mode():
    model = _heads_only()
    model.train()
    assert all(not getattr(model, name).training for name in FROZEN)
    assert model.class_embed.training and model.bbox_embed.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(detr_param_groups(model, 1e-2, 0.0), lr=1e-2)
    inputs = [make_input(64, 80), make_input(48, 64, boxes=((0, 0, 20, 20),), classes=(2,))]
    for _ in range(2):
        with EventStorage():
            loss = sum(model(inputs).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"class_embed", "bbox_embed"}
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"class_embed", "bbox_embed"}


def test_unknown_frozen_module_is_rejected():
    model = make_model()
    with pytest.raises(ValueError, match="no submodule 'encoder'"):
        DETR(backbone=model.backbone, position_embedding=model.position_embedding, transformer=model.transformer,
             num_classes=NUM_CLASSES, num_queries=NUM_QUERIES, criterion=model.criterion, weight_dict=WEIGHTS,
             frozen_modules=["encoder"])


def test_heads_only_demo_config_freezes_the_transformer():
    cfg = LazyConfig.load(str(ROOT / "configs/demo/detr_heads_only_demo.py"))
    assert set(cfg.model.frozen_modules) == set(FROZEN)
    assert cfg.dataloader.evaluator._target_.__name__ == "ClassAgnosticEvaluator"
