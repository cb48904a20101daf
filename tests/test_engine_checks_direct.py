"""Start-up checks, hints and evaluation outputs of the training tool, called directly (no training run)."""
import json
from types import SimpleNamespace

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from omegaconf import OmegaConf
from torch import nn

from siamese_detr.engine.eval_outputs import append_eval_metrics, eval_hook, set_evaluator_output_dir
from siamese_detr.engine.evaluation_checks import check_test_classes
from siamese_detr.engine.load_summary import checkpoint_file_keys, is_pretraining_model, partial_load_summary
from siamese_detr.engine.override_syntax import tuples_to_lists
from siamese_detr.engine.overrides import _config_has_key
from siamese_detr.engine.pretrain_checks import RandomBackboneError, check_backbone_loaded, has_frozen_backbone
from siamese_detr.engine.schedule_checks import lr_drop_iterations


# --------------------------------------------------------------------------------------- load hints
def test_a_ddp_wrapped_pretraining_model_is_still_a_pretraining_model():
    """With several processes the model's state dict names start with ``module.``: its pretext heads count."""
    assert is_pretraining_model(["module.backbone.body.conv1.weight", "module.region_proj.weight"])
    assert not is_pretraining_model(["module.backbone.body.conv1.weight", "module.class_embed.weight"])


def test_checkpoint_file_keys_reads_a_query_path_and_a_state_dict_layout(tmp_path):
    """The names come from the file also when the path carries ``?matching_heuristics=True`` and when the
    tensors are under ``state_dict`` (another training code's layout)."""
    torch.save({"model": {"backbone.0.body.conv1.weight": torch.zeros(1)}}, tmp_path / "a.pth")
    assert checkpoint_file_keys(f"{tmp_path / 'a.pth'}?matching_heuristics=True") == ["backbone.0.body.conv1.weight"]
    torch.save({"state_dict": {"layer1.0.weight": torch.zeros(1)}, "epoch": 3}, tmp_path / "b.pth")
    assert checkpoint_file_keys(str(tmp_path / "b.pth")) == ["layer1.0.weight"]


def test_a_conditional_detr_is_not_told_to_set_normalize_before():
    """``normalize_before`` is an argument of the Vanilla DETR transformer only: a Conditional DETR model
    (``transformer.ref_point_head``) given a pre-norm checkpoint is told the checkpoint is of another model."""
    conditional = ["transformer.encoder_layers.0.linear1.weight", "transformer.ref_point_head.layers.0.weight"]
    unexpected = ["transformer.encoder_norm.weight", "transformer.encoder_norm.bias"]
    summary = partial_load_summary([], [], unexpected, model_keys=conditional)
    assert "normalize_before" not in summary and "pre-norm Vanilla DETR" in summary
    vanilla = partial_load_summary([], [], unexpected, model_keys=conditional[:1])
    assert "set model.transformer.normalize_before=True" in vanilla


# --------------------------------------------------------------------------------------- overrides
def test_negative_list_indices_are_keys_of_the_config():
    """``key.-1`` is the last element of a list (as Python and OmegaConf index); out of range is not a key."""
    cfg = OmegaConf.create({"a": {"sizes": [480, 512, 800]}})
    assert _config_has_key(cfg, "a.sizes.-1") and _config_has_key(cfg, "a.sizes.-3")
    assert not _config_has_key(cfg, "a.sizes.-4") and not _config_has_key(cfg, "a.sizes.3")


def test_parentheses_inside_a_path_are_left_alone():
    """Only a ``(`` where a value starts is a tuple; those inside a path, also nested, stay."""
    assert tuples_to_lists("names=coco:data/((v2))/a.json") == "names=coco:data/((v2))/a.json"
    assert tuples_to_lists("sizes=((1,2),(3,4))") == "sizes=[[1,2],[3,4]]"


# --------------------------------------------------------------------------------------- lr schedule
def test_a_fall_of_exactly_min_drop_is_not_a_drop():
    """A drop must be larger than ``min_drop`` (10%) of the value before: 1 -> 0.9 is not, 1 -> 0.89 is."""
    assert lr_drop_iterations(lambda t: 1.0 if t < 0.5 else 0.9, 10) == []
    assert lr_drop_iterations(lambda t: 1.0 if t < 0.5 else 0.89, 10) == [(5, 0.89)]


def test_the_schedule_is_read_only_at_iterations_of_the_run():
    """The multiplier is evaluated at ``i / max_iter`` for iterations 0..max_iter-1 only (never before 0)."""
    seen = []

    def multiplier(t):
        assert 0.0 <= t < 1.0, t
        seen.append(t)
        return 1.0 if t < 0.1 else 0.09 * (1.0 - t)  # a fall at 1, then a smooth decay (flat nowhere)

    assert lr_drop_iterations(multiplier, 10) == []
    assert seen


def test_a_drop_at_the_very_last_iteration_of_a_long_run_is_found():
    """Long runs are sampled on a grid; the last iteration is always on it (8194 iterations: grid step 2)."""
    max_iter = 8194
    assert lr_drop_iterations(lambda t: 1.0 if t < (max_iter - 1) / max_iter else 0.1, max_iter) == [(8193, 0.1)]


# --------------------------------------------------------------------------------------- frozen backbones
class _Pretext(nn.Module):
    def __init__(self, allow_random: bool):
        super().__init__()
        self.backbone = nn.Linear(3, 4)
        self.backbone.requires_grad_(False)
        self.allow_random_backbone = allow_random


class _Wrapper(nn.Module):
    """Stands for ``DistributedDataParallel``: the model is its ``module``."""

    def __init__(self, model):
        super().__init__()
        self.module = model


def test_a_backbone_without_parameters_is_not_frozen():
    model = nn.Module()
    model.backbone = nn.Identity()
    assert not has_frozen_backbone(model)


def test_the_load_check_looks_through_a_ddp_wrapper():
    """The inner model's ``allow_random_backbone`` counts through the wrapper; without it a frozen backbone
    missing from the checkpoint is refused."""
    check_backbone_loaded(_Wrapper(_Pretext(allow_random=True)), [], "other.pth")
    with pytest.raises(RandomBackboneError, match="2 of its 2 frozen parameters"):
        check_backbone_loaded(_Wrapper(_Pretext(allow_random=False)), [], "other.pth")
    check_backbone_loaded(_Wrapper(_Pretext(allow_random=False)), ["backbone.weight", "backbone.bias"], "ok.pth")


# --------------------------------------------------------------------------------------- test classes
@pytest.fixture
def two_class_sets():
    names = {"mutc_train_ab": ["a", "b"], "mutc_test_ba": ["b", "a"], "mutc_test_ab": ["a", "b"]}
    for name, classes in names.items():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(thing_classes=classes)
    yield
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _eval_cfg(test: str, evaluator: str):
    return OmegaConf.create({"train": {"eval_period": 10}, "dataloader": {
        "train": {"dataset": {"names": "mutc_train_ab"}}, "test": {"dataset": {"names": test}},
        "evaluator": {"_target_": evaluator}}})


def test_the_test_classes_must_be_in_the_training_order(two_class_sets):
    """A test set with the same classes in another order would score every class under another's name;
    a class-agnostic evaluation does not compare class names."""
    check_test_classes(_eval_cfg("mutc_test_ab", "detectron2.evaluation.COCOEvaluator"))
    with pytest.raises(ValueError, match="mutc_test_ba"):
        check_test_classes(_eval_cfg("mutc_test_ba", "detectron2.evaluation.COCOEvaluator"))
    check_test_classes(_eval_cfg("mutc_test_ba", "siamese_detr.evaluation.class_agnostic.ClassAgnosticEvaluator"))


# --------------------------------------------------------------------------------------- eval outputs
def test_empty_evaluation_results_write_nothing(tmp_path):
    """An evaluation without results (e.g. a process other than the main one) adds no counter and no line."""
    hook = eval_hook(5, lambda: {}, trainer=SimpleNamespace(iter=4, max_iter=10))
    assert hook._func() == {}
    hook = eval_hook(5, lambda: {"bbox": {"AP": 1.5}}, trainer=SimpleNamespace(iter=4, max_iter=10))
    assert hook._func() == {"bbox": {"AP": 1.5}, "eval": {"finished_iterations": 5}}
    assert append_eval_metrics(str(tmp_path), {}, iteration=3) is None
    assert not (tmp_path / "metrics.json").exists()
    append_eval_metrics(str(tmp_path), {"bbox": {"AP": 2.0}}, iteration=3)
    assert [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()] == [
        {"bbox/AP": 2.0, "iteration": 3}]


def test_the_configs_own_evaluator_output_dir_is_kept(tmp_path):
    target = "detectron2.evaluation.COCOEvaluator"
    cfg = OmegaConf.create({"train": {"output_dir": str(tmp_path)},
                            "dataloader": {"evaluator": {"_target_": target, "output_dir": "/elsewhere"}}})
    assert set_evaluator_output_dir(cfg) == "/elsewhere" and cfg.dataloader.evaluator.output_dir == "/elsewhere"
    cfg.dataloader.evaluator.output_dir = None
    assert set_evaluator_output_dir(cfg) == str(tmp_path / "inference")


# --------------------------------------------------------------------------------------- metrics.json, datasets
def test_an_empty_metrics_file_is_not_a_torn_one(tmp_path):
    """A 0-byte ``metrics.json`` (a run killed before its first line) needs no newline; a torn line gets one."""
    from siamese_detr.engine.metrics_file import terminate_torn_line

    path = tmp_path / "metrics.json"
    path.write_bytes(b"")
    assert terminate_torn_line(str(path)) is False and path.read_bytes() == b""
    path.write_bytes(b'{"a": 1}\n{"b"')
    assert terminate_torn_line(str(path)) is True and path.read_bytes() == b'{"a": 1}\n{"b"\n'


def test_num_classes_set_to_exactly_the_jsons_categories_is_accepted(tmp_path):
    """``model.num_classes`` given on the command line may equal the coco json's number of categories (2 here)
    or exceed it; fewer is refused."""
    from siamese_detr.engine.dataset_specs import register_config_datasets

    (tmp_path / "images").mkdir()
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 4,
                             "iscrowd": 0}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    (tmp_path / "train.json").write_text(json.dumps(coco))
    spec = f"coco:{tmp_path / 'train.json'}:{tmp_path / 'images'}"
    for num_classes in (2, 3):
        cfg = OmegaConf.create({"model": {"num_classes": num_classes},
                                "dataloader": {"train": {"dataset": {"names": spec}}}})
        register_config_datasets(cfg, ["model.num_classes"])
        assert cfg.model.num_classes == num_classes
    cfg = OmegaConf.create({"model": {"num_classes": 1}, "dataloader": {"train": {"dataset": {"names": spec}}}})
    with pytest.raises(ValueError, match="model.num_classes=1 but the dataset has 2 categories"):
        register_config_datasets(cfg, ["model.num_classes"])


# ------------------------------------------------------------------------------- device and AMP on CPU
def _train_net():
    from pathlib import Path

    from script_modules import load_script

    return load_script(Path(__file__).resolve().parents[1] / "tools" / "lazyconfig_train_net.py",
                       "train_net_device_checks")


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1"])
def test_amp_is_switched_off_without_cuda_and_the_device_falls_back_to_cpu(device, monkeypatch):
    """AMP needs CUDA: without it ``train.amp.enabled=True`` trains in float32 (detectron2's ``AMPTrainer``
    asserts CUDA), and a CUDA device falls back to ``cpu``; the rest of ``train`` is left as it was."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = OmegaConf.create({"train": {"device": device, "amp": {"enabled": True}, "max_iter": 7}})
    _train_net()._resolve_device(cfg)
    assert cfg.train.device == "cpu"
    assert cfg.train.amp.enabled is False
    assert cfg.train.max_iter == 7


def test_amp_and_a_cuda_device_are_kept_when_cuda_is_there(monkeypatch):
    """With CUDA (faked here) the same settings are left alone."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = OmegaConf.create({"train": {"device": "cuda", "amp": {"enabled": True}}})
    _train_net()._resolve_device(cfg)
    assert cfg.train.device == "cuda"
    assert cfg.train.amp.enabled is True


def test_a_device_that_is_not_a_torch_device_names_the_key():
    cfg = OmegaConf.create({"train": {"device": "gpu0", "amp": {"enabled": False}}})
    with pytest.raises(ValueError, match=r"train\.device.*'gpu0'"):
        _train_net()._resolve_device(cfg)
