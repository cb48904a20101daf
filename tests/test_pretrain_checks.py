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
