"""A frozen backbone without train.init_checkpoint is refused (unless the model allows it)."""
import pytest
from torch import nn

from siamese_detr.engine.pretrain_checks import RandomBackboneError, check_backbone_initialised, has_frozen_backbone


class _Model(nn.Module):
    def __init__(self, frozen_modules=(), allow_random_backbone=False, freeze_params=False):
        super().__init__()
        self.backbone = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)
        self.frozen_modules = tuple(frozen_modules)
        self.allow_random_backbone = allow_random_backbone
        if freeze_params:
            self.backbone.requires_grad_(False)


class _Wrapper(nn.Module):  # stands in for DistributedDataParallel: the model is in .module
    def __init__(self, module):
        super().__init__()
        self.module = module


def test_frozen_backbone_detection():
    assert has_frozen_backbone(_Model(frozen_modules=("backbone",)))
    assert has_frozen_backbone(_Model(freeze_params=True))
    assert has_frozen_backbone(_Wrapper(_Model(freeze_params=True)))
    assert not has_frozen_backbone(_Model())
    assert not has_frozen_backbone(_Model(frozen_modules=("head",)))
    assert not has_frozen_backbone(nn.Linear(2, 2))  # no backbone at all


@pytest.mark.parametrize("init", ["", None, "   "])
def test_refused_without_checkpoint_with_a_message_naming_the_fix(init):
    for model in (_Model(frozen_modules=("backbone",)), _Wrapper(_Model(freeze_params=True))):
        with pytest.raises(RandomBackboneError) as e:
            check_backbone_initialised(model, init)
        msg = str(e.value)
        assert "tools/convert_checkpoint.py" in msg and "train.init_checkpoint" in msg
        assert "allow_random_backbone" in msg
        # the demo configs' fix (their backbone is no ResNet-50) comes before the conversion of one
        assert msg.index("train.init_checkpoint=output/demo/backbone/model_final.pth") \
            < msg.index("tools/convert_checkpoint.py")


def test_allowed_cases():
    frozen = _Model(frozen_modules=("backbone",))
    check_backbone_initialised(frozen, "swav_r50_d2.pth")  # a checkpoint initialises it
    check_backbone_initialised(frozen, "", resuming=True)  # the run's own last checkpoint holds it
    check_backbone_initialised(_Model(frozen_modules=("backbone",), allow_random_backbone=True), "")
    check_backbone_initialised(_Model(), "")  # a trainable backbone may start random


def test_real_pretraining_model_is_refused_and_the_flag_lets_it_start():
    from test_siamese_detr_model import tiny_model

    model = tiny_model()
    assert has_frozen_backbone(model)
    with pytest.raises(RandomBackboneError, match="SiameseDETRPretrain"):
        check_backbone_initialised(model, "")
    model.allow_random_backbone = True
    check_backbone_initialised(model, "")


def _loaded_names(model, checkpoint_state, tmp_path):
    """The model tensors a SafeDetectionCheckpointer load of ``checkpoint_state`` gives."""
    import torch

    from siamese_detr.engine.checkpointing import SafeDetectionCheckpointer

    path = tmp_path / "ckpt.pth"
    torch.save({"model": checkpoint_state}, path)
    checkpointer = SafeDetectionCheckpointer(model)
    checkpointer.load(str(path))
    return checkpointer.loaded_names


def test_a_checkpoint_without_the_frozen_backbone_is_refused_after_the_load(tmp_path):
    import torch

    from siamese_detr.engine.pretrain_checks import check_backbone_loaded

    frozen = _Model(frozen_modules=("backbone",))
    head_only = {"head.weight": torch.zeros(2, 4), "head.bias": torch.zeros(2)}
    with pytest.raises(RandomBackboneError,
                       match=r"2 of its 2 frozen parameters are not in train.init_checkpoint=x.pth"):
        check_backbone_loaded(frozen, _loaded_names(frozen, head_only, tmp_path), "x.pth")
    # another backbone width: names match, shapes do not
    narrow = dict(head_only, **{"backbone.weight": torch.zeros(3, 3), "backbone.bias": torch.zeros(3)})
    with pytest.raises(RandomBackboneError, match="2 of its 2"):
        check_backbone_loaded(frozen, _loaded_names(frozen, narrow, tmp_path), "x.pth")
    half = dict(head_only, **{"backbone.weight": torch.zeros(4, 3)})
    with pytest.raises(RandomBackboneError, match=r"1 of its 2 .*'backbone.bias'"):
        check_backbone_loaded(_Wrapper(frozen), _loaded_names(frozen, half, tmp_path), "x.pth")

    full = dict(half, **{"backbone.bias": torch.zeros(4)})
    check_backbone_loaded(frozen, _loaded_names(frozen, full, tmp_path), "x.pth")
    check_backbone_loaded(_Model(), _loaded_names(_Model(), head_only, tmp_path), "x.pth")  # trainable: fine
    allowed = _Model(frozen_modules=("backbone",), allow_random_backbone=True)
    check_backbone_loaded(allowed, _loaded_names(allowed, head_only, tmp_path), "x.pth")


def test_a_finetuning_resnet_with_frozen_stages_is_refused_without_weights(tmp_path):
    """DETR's R50 (freeze_at=2: stem and res2 frozen) without train.init_checkpoint would keep those stages
    random for the whole run: refused, naming freeze_at and the converter; freeze_at=0 (the whole backbone
    trains) or a checkpoint with the frozen stages passes; one without them is refused after the load."""
    from detectron2.config import LazyConfig, instantiate

    from siamese_detr.engine.pretrain_checks import check_backbone_loaded, frozen_backbone_parameters

    cfg = LazyConfig.load("configs/demo/detr_demo.py")
    cfg.model.backbone.freeze_at = 2
    model = instantiate(cfg.model)
    frozen = frozen_backbone_parameters(model)
    stem_res2 = [n for n, p in model.backbone.named_parameters() if n.startswith(("stem.", "res2."))]
    assert frozen == [f"backbone.{n}" for n in stem_res2] and not has_frozen_backbone(model)
    with pytest.raises(RandomBackboneError, match=r"freezes \d+ of its backbone's \d+ parameters .*freeze_at"):
        check_backbone_initialised(model, "")
    check_backbone_initialised(model, "r50.pth")
    state = model.state_dict()
    check_backbone_loaded(model, _loaded_names(model, state, tmp_path), "r50.pth")
    without = {k: v for k, v in state.items() if not k.startswith("backbone.stem.")}
    with pytest.raises(RandomBackboneError, match=r"frozen backbone stages \(model.backbone.freeze_at\)"):
        check_backbone_loaded(model, _loaded_names(model, without, tmp_path), "r50.pth")
    cfg.model.backbone.freeze_at = 0
    trainable = instantiate(cfg.model)
    assert frozen_backbone_parameters(trainable) == []
    check_backbone_initialised(trainable, "")
