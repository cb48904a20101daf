"""Every top-level config under configs/ loads and instantiates; data on disk is checked with a clear error."""
import os
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from siamese_detr.data.dataset_checks import expected_paths
from siamese_detr.engine import apply_checked_overrides

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.py")
    if "common" not in p.parts and p.name != "__init__.py"
)
# configs whose data is generated on demand (the built-in dataset): their loaders are built here
BUILTIN_DATA = ("configs/demo/",)


def _tiny_model_overrides(cfg):
    """Shrink an R50 model so that instantiating and running it stays cheap on CPU (backbones built from
    ``stages`` go to depth 18; the demo's narrow ResNet is small already)."""
    overrides = ["model.transformer.num_encoder_layers=1", "model.transformer.num_decoder_layers=1",
                 "model.transformer.dim_feedforward=64"]
    if "stages" in cfg.model.backbone:
        overrides.append("model.backbone.stages.depth=18")
    return apply_checked_overrides(cfg, overrides)


def test_there_are_configs_for_every_family():
    families = {Path(c).parts[1] for c in CONFIGS}
    assert {"detr", "demo", "siamese_detr"} <= families


def test_every_config_writes_to_its_own_folder_outside_the_demos():
    """Each training config's default ``train.output_dir`` is ``./output/<its file name>``: no two configs share
    a folder (a run of one would meet the other's checkpoints), and none writes into ``output/demo``, which
    ``tools/run_demo.py --fresh`` deletes only when it holds nothing but the demo's own files."""
    folders = {}
    for config_file in CONFIGS:
        train = LazyConfig.load(str(ROOT / config_file)).get("train", {})
        if "output_dir" in train:
            folders[config_file] = os.path.normpath(train.output_dir)
    assert len(folders) >= 30
    shared = {f for f in folders.values() if list(folders.values()).count(f) > 1}
    assert not shared, {c: f for c, f in folders.items() if f in shared}
    assert not [c for c, f in folders.items() if Path(f).parts[:2] == ("output", "demo")]
    assert {c: f for c, f in folders.items() if f != os.path.join("output", Path(c).stem)} == {}


def test_every_proposal_store_a_config_reads_is_checked_for_its_method():
    """A store made with another method (random boxes for Siamese DETR, EdgeBoxes for DETReg) is refused only when
    the config names the method its path promises (``<dataset>.<method>.proposals``): every config that reads a
    store must set ``proposal_source.method`` to that method."""
    stores = {}
    for config_file in CONFIGS:
        cfg = LazyConfig.load(str(ROOT / config_file))
        source = cfg.get("dataloader", {}).get("train", {}).get("mapper", {}).get("proposal_source")
        if source is not None and "path" in source:
            stores[config_file] = (Path(source.path).name.split(".")[-2], source.get("method"))
    assert len(stores) >= 8, stores  # the ImageNet / COCO pretrainings of the three methods and the store demo
    assert {c: m for c, m in stores.items() if m[0] != m[1]} == {}
    assert {m[0] for m in stores.values()} == {"edgeboxes", "selective_search"}


@pytest.mark.parametrize("config_file", CONFIGS)
def test_config_instantiates(config_file, tiny_edgeboxes_store, restore_dataset_catalog):
    cfg = LazyConfig.load(str(ROOT / config_file))
    if "model" not in cfg:
        # the demo's backbone stage (configs/demo/demo_backbone.py) is read by tools/train_demo_backbone.py
        assert {"backbone", "data", "train"} <= set(cfg), f"{config_file} is neither a training nor a backbone config"
        return
    for key in ("model", "optimizer", "lr_multiplier", "train", "dataloader"):
        assert key in cfg, f"{config_file} has no '{key}'"
    assert cfg.train.max_iter > 0
    cfg = _tiny_model_overrides(cfg)
    model = instantiate(cfg.model)
    assert isinstance(model, torch.nn.Module)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(
        1 for p in model.parameters() if p.requires_grad)
    scheduler = instantiate(cfg.lr_multiplier)
    assert scheduler(0.0) == 1.0 and scheduler(0.999) < 1.0

    if config_file.startswith(BUILTIN_DATA):
        cfg.dataloader.train.num_workers = 0
        batch = next(iter(instantiate(cfg.dataloader.train)))
        assert len(batch) == cfg.dataloader.train.total_batch_size
    else:
        # COCO / VOC / ImageNet: the loader builds only if the data is on disk, else names what is missing
        try:
            instantiate(cfg.dataloader.train)
        except FileNotFoundError as err:
            assert "datasets/README.md" in str(err) and "does not exist" in str(err)
        else:
            names = cfg.dataloader.train.dataset.names
            names = [names] if isinstance(names, str) else list(names)
            assert all(os.path.exists(p) for n in names for p in expected_paths(n))


def test_voc_config_uses_voc_datasets_and_evaluator():
    """VOC is evaluated COCO-style (paper §4.1): COCO-json views of VOC, COCOEvaluator; Detectron2's
    PASCAL VOC datasets and evaluator stay available in detr_voc_pascal.py."""
    cfg = LazyConfig.load(str(ROOT / "configs/detr/detr_r50_voc_50ep.py"))
    assert cfg.dataloader.train.dataset.names == "voc_2007_2012_trainval_coco"
    assert cfg.dataloader.test.dataset.names == "voc_2007_test_coco"
    assert cfg.dataloader.evaluator._target_.__name__ == "COCOEvaluator"
    assert cfg.model.num_classes == 20
    pascal = LazyConfig.load(str(ROOT / "configs/common/data/detr_voc_pascal.py"))
    assert list(pascal.dataloader.train.dataset.names) == ["voc_2007_trainval", "voc_2012_trainval"]
    assert pascal.dataloader.evaluator._target_.__name__ == "PascalVOCDetectionEvaluator"
