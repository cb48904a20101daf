"""``detr_param_groups``: which learning rate each parameter gets (backbone factor, keyword factors, DDP prefix,
default factor), checked against the rules written out in its docstring and DETR's recipe."""

import pytest
from torch import nn

from siamese_detr.solver import detr_param_groups


class _Model(nn.Module):
    """``backbone.body.weight``, ``backbone.sampling_offsets.weight`` (a backbone parameter whose name contains a
    keyword), ``head.sampling_offsets.weight``, ``head.reference_points.weight`` and ``head.proj.weight``."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.body = nn.Linear(2, 2, bias=False)
        self.backbone.sampling_offsets = nn.Linear(2, 2, bias=False)
        self.head = nn.Module()
        self.head.sampling_offsets = nn.Linear(2, 2, bias=False)
        self.head.reference_points = nn.Linear(2, 2, bias=False)
        self.head.proj = nn.Linear(2, 2, bias=False)


def _lr_of(groups):
    """id(param) -> lr of its group; every parameter must be in exactly one group."""
    lrs = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in lrs
            lrs[id(p)] = g["lr"]
    return lrs


def test_default_backbone_factor_is_detrs_0_1():
    """DETR trains the backbone at 1e-5 against 1e-4 for the rest: the default factor is 0.1."""
    model = _Model()
    lrs = _lr_of(detr_param_groups(model, base_lr=1e-4, weight_decay=1e-4))
    assert lrs[id(model.backbone.body.weight)] == pytest.approx(1e-5)
    assert lrs[id(model.head.proj.weight)] == pytest.approx(1e-4)


def test_keyword_factors_apply_outside_the_backbone_only():
    """A keyword factor is for NON-backbone parameters (Deformable DETR's linear_proj names): a backbone parameter
    whose name contains the keyword keeps the backbone lr (base * 0.1 = 1e-5), the head's gets base * its keyword
    factor (0.5 for ``sampling_offsets``, 0.25 for ``reference_points``, so that no two lrs coincide)."""
    model = _Model()
    groups = detr_param_groups(model, base_lr=1e-4, weight_decay=1e-4, backbone_lr_factor=0.1,
                               lr_factors_by_keyword={"sampling_offsets": 0.5, "reference_points": 0.25})
    lrs = _lr_of(groups)
    assert lrs[id(model.backbone.sampling_offsets.weight)] == pytest.approx(1e-5)
    assert lrs[id(model.backbone.body.weight)] == pytest.approx(1e-5)
    assert lrs[id(model.head.sampling_offsets.weight)] == pytest.approx(5e-5)
    assert lrs[id(model.head.reference_points.weight)] == pytest.approx(2.5e-5)
    assert lrs[id(model.head.proj.weight)] == pytest.approx(1e-4)
    assert len(lrs) == 5


def test_the_first_matching_keyword_wins():
    """A name containing two keywords gets the factor of the first one listed (dict order)."""
    model = _Model()
    lrs = _lr_of(detr_param_groups(model, base_lr=1.0, weight_decay=0.0,
                                   lr_factors_by_keyword={"head.": 0.5, "sampling_offsets": 0.1}))
    assert lrs[id(model.head.sampling_offsets.weight)] == pytest.approx(0.5)
    lrs = _lr_of(detr_param_groups(model, base_lr=1.0, weight_decay=0.0,
                                   lr_factors_by_keyword={"sampling_offsets": 0.1, "head.": 0.5}))
    assert lrs[id(model.head.sampling_offsets.weight)] == pytest.approx(0.1)
    assert lrs[id(model.head.proj.weight)] == pytest.approx(0.5)


def test_a_ddp_wrapped_model_gets_the_same_groups():
    """Under DDP the names start with ``module.``: the backbone is still recognised (lr base * factor)."""
    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    model = _Model()
    kwargs = dict(base_lr=1e-4, weight_decay=1e-4, backbone_lr_factor=0.1,
                  lr_factors_by_keyword={"reference_points": 0.1})
    plain = _lr_of(detr_param_groups(model, **kwargs))
    wrapped = _lr_of(detr_param_groups(Wrapper(model), **kwargs))
    assert wrapped == plain
    assert wrapped[id(model.backbone.body.weight)] == pytest.approx(1e-5)
    assert wrapped[id(model.head.reference_points.weight)] == pytest.approx(1e-5)


def test_a_keyword_that_matches_no_parameter_adds_no_group():
    """A Deformable-DETR keyword given to a model without such parameters creates no (empty) group: the groups are
    the rest at base lr and the backbone, in this order."""
    model = _Model()
    groups = detr_param_groups(model, base_lr=1.0, weight_decay=0.0, lr_factors_by_keyword={"value_proj": 0.1})
    assert [g["lr"] for g in groups] == pytest.approx([1.0, 0.1])
    assert all(g["params"] for g in groups)
