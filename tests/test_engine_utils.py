"""Gradient clipping hook, epoch->iteration schedules, parameter groups, resume and evaluation bookkeeping."""
import math

import pytest
import torch
from detectron2.config import instantiate

from siamese_detr.engine import add_gradient_clipping
from siamese_detr.solver import detr_param_groups


def _load_schedules():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "common" / "schedules.py"
    spec = importlib.util.spec_from_file_location("schedules", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _two_group_optimizer():
    """``w`` in the backbone group (lr 0.1) and ``v`` in the other group (lr 1.0), built by detr_param_groups."""
    model = torch.nn.Module()
    model.backbone = torch.nn.Module()
    model.backbone.w = torch.nn.Parameter(torch.zeros(3))
    model.v = torch.nn.Parameter(torch.zeros(4))
    groups = detr_param_groups(model, base_lr=1.0, weight_decay=0.0, backbone_lr_factor=0.1)
    assert [g["params"] for g in groups] == [[model.v], [model.backbone.w]]
    return model.backbone.w, model.v, torch.optim.SGD(groups, lr=1.0)


def test_clipping_hook_limits_the_total_norm_before_the_step():
    """DETR clips the norm of ALL gradients together (clip_grad_norm_ over every parameter of every group):
    ||g_w|| = 5 and ||g_v|| = 12 in two param groups give a total norm of 13, so both gradients are scaled by
    0.1 / 13 (a per-parameter or per-group clip would scale w by 0.1 / 5 and v by 0.1 / 12, a clip of the
    first group alone would leave w untouched)."""
    w, v, opt = _two_group_optimizer()
    add_gradient_clipping(opt, max_norm=0.1)
    w.grad = torch.tensor([3.0, 0.0, 4.0])
    v.grad = torch.tensor([0.0, 0.0, 0.0, 12.0])
    opt.step()
    scale = 0.1 / 13.0
    torch.testing.assert_close(w.grad, torch.tensor([3.0, 0.0, 4.0]) * scale, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(v.grad, torch.tensor([0.0, 0.0, 0.0, 12.0]) * scale, rtol=1e-6, atol=1e-9)
    # SGD step with each group's own lr: backbone 0.1, rest 1.0
    torch.testing.assert_close(w.detach(), -0.1 * torch.tensor([3.0, 0.0, 4.0]) * scale, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(v.detach(), -1.0 * torch.tensor([0.0, 0.0, 0.0, 12.0]) * scale, rtol=1e-6,
                               atol=1e-9)
    assert math.isclose(math.hypot(float(w.grad.norm()), float(v.grad.norm())), 0.1, rel_tol=1e-6)


def test_small_gradients_are_not_changed_and_zero_disables():
    """A total norm under the limit (1.3 = hypot(0.5, 1.2) over two groups, limit 1.31) leaves every gradient
    as it is; with the limit 1.25 both are scaled by 1.25 / 1.3 although each parameter's own norm (0.5, 1.2) is
    under it; 0 registers nothing."""
    w, v, opt = _two_group_optimizer()
    assert add_gradient_clipping(opt, max_norm=0) is None
    handle = add_gradient_clipping(opt, max_norm=1.31)
    w.grad = torch.tensor([0.3, 0.4, 0.0])
    v.grad = torch.tensor([0.0, 0.0, 1.2, 0.0])
    opt.step()
    assert torch.equal(w.grad, torch.tensor([0.3, 0.4, 0.0]))
    assert torch.equal(v.grad, torch.tensor([0.0, 0.0, 1.2, 0.0]))
    torch.testing.assert_close(w.detach(), -0.1 * torch.tensor([0.3, 0.4, 0.0]), rtol=1e-6, atol=1e-9)
    assert torch.equal(v.detach(), torch.tensor([0.0, 0.0, -1.2, 0.0]))
    handle.remove()
    add_gradient_clipping(opt, max_norm=1.25)
    opt.step()  # same gradients, total norm 1.3 > 1.25
    scale = 1.25 / 1.3
    torch.testing.assert_close(w.grad, torch.tensor([0.3, 0.4, 0.0]) * scale, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(v.grad, torch.tensor([0.0, 0.0, 1.2, 0.0]) * scale, rtol=1e-6, atol=1e-9)


def test_clipping_uses_the_configured_norm_type():
    """train.clip_grad.norm_type=inf: the largest absolute gradient entry (12) is the norm, not the L2 (13)."""
    w, v, opt = _two_group_optimizer()
    add_gradient_clipping(opt, max_norm=0.1, norm_type=float("inf"))
    w.grad = torch.tensor([3.0, 0.0, 4.0])
    v.grad = torch.tensor([0.0, 0.0, 0.0, 12.0])
    opt.step()
    torch.testing.assert_close(v.grad, torch.tensor([0.0, 0.0, 0.0, 0.1]), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(w.grad, torch.tensor([3.0, 0.0, 4.0]) * (0.1 / 12.0), rtol=1e-6, atol=1e-9)


def test_epoch_schedule_iterations_and_drop():
    sched = _load_schedules()
    assert sched.epochs_to_iters(150, 118287, 32) == math.ceil(150 * 118287 / 32)
    lr_cfg, max_iter = sched.step_schedule(50, (40,), 16551, 32)
    assert max_iter == math.ceil(50 * 16551 / 32)
    drop = math.ceil(40 * 16551 / 32)
    scheduler = instantiate(lr_cfg)
    assert scheduler((drop - 1) / max_iter) == 1.0
    assert scheduler((drop + 1) / max_iter) == pytest.approx(0.1)


def test_param_groups_scale_the_backbone_lr_and_skip_frozen():
    model = torch.nn.Module()
    model.backbone = torch.nn.Linear(2, 2)
    model.head = torch.nn.Linear(2, 2)
    model.backbone.bias.requires_grad_(False)
    groups = detr_param_groups(model, base_lr=1e-4, weight_decay=1e-4, backbone_lr_factor=0.5)
    by_lr = {g["lr"]: g["params"] for g in groups}
    assert by_lr[1e-4] == [model.head.weight, model.head.bias]
    assert by_lr[5e-5] == [model.backbone.weight]


def test_the_lr_schedule_is_described_in_iterations_and_a_scaled_one_is_flagged():
    """Detectron2 trains iteration i at multiplier(i / max_iter) and a MultiStep scheduler counts milestones in
    its num_updates: drops at 800 of 1000 land at 400 when train.max_iter=500 with num_updates 1000."""
    from omegaconf import OmegaConf

    from siamese_detr.engine.schedule_checks import describe_lr_schedule, lr_drop_iterations

    sched = _load_schedules()
    for warmup in (0, 50):  # a warm-up's rise is no drop
        lr_cfg = sched.step_schedule_iters(1000, [800, 900], warmup_iters=warmup)
        multiplier = instantiate(lr_cfg)
        drops = lr_drop_iterations(multiplier, 1000)
        assert [i for i, _ in drops] == [800, 900]
        assert [v for _, v in drops] == pytest.approx([0.1, 0.01])
        cfg = OmegaConf.create({"train": {"max_iter": 1000}, "lr_multiplier": lr_cfg})
        text, suspect = describe_lr_schedule(cfg, multiplier)
        assert not suspect and "x0.1 from iteration 800, x0.01 from iteration 900" in text
        cfg.train.max_iter = 500  # the milestones scale with train.max_iter: 400 and 450
        text, suspect = describe_lr_schedule(cfg, multiplier)
        assert suspect and "from iteration 400" in text and "from iteration 450" in text
        assert ("num_updates=1000 differs from train.max_iter" in text) and "num_updates=500" in text
        cfg.train.max_iter = 2000  # longer: the drops come later (1600, 1800), flagged too
        text, suspect = describe_lr_schedule(cfg, multiplier)
        assert suspect and "from iteration 1600" in text and "num_updates=2000" in text
    constant = instantiate(sched.step_schedule_iters(10, []))
    assert lr_drop_iterations(constant, 10) == []


def test_only_step_falls_larger_than_min_drop_are_lr_drops():
    """A 5% step is below min_drop (10%); a cosine to 0 falls by more than 10% per iteration in its last 2%
    (0.25 of its value at the very end) but is no step: listing those 18 iterations said nothing."""
    from fvcore.common.param_scheduler import CosineParamScheduler, LinearParamScheduler, MultiStepParamScheduler

    from siamese_detr.engine.schedule_checks import lr_drop_iterations

    small_then_large = MultiStepParamScheduler([1.0, 0.95, 0.5], milestones=[500, 700], num_updates=1000)
    assert lr_drop_iterations(small_then_large, 1000) == [(700, 0.5)]
    assert [i for i, _ in lr_drop_iterations(small_then_large, 1000, min_drop=0.01)] == [500, 700]
    cosine = CosineParamScheduler(1.0, 0.0)
    assert 1 - cosine(999 / 1000) / cosine(998 / 1000) > 0.5  # it does fall fast at the end
    assert lr_drop_iterations(cosine, 1000) == [] and lr_drop_iterations(LinearParamScheduler(1.0, 0.0), 1000) == []


def test_lr_drops_of_a_long_run_found_by_bisection_match_a_scan_of_every_iteration():
    from siamese_detr.engine.schedule_checks import lr_drop_iterations

    sched = _load_schedules()
    max_iter = 20011  # sampled every 4 iterations: the drops are located by bisection
    for milestones, num_updates, warmup in (([15000, 15001, 19000], 20011, 100), ([7, 16003], 30000, 0)):
        multiplier = instantiate(sched.step_schedule_iters(num_updates, milestones, warmup_iters=warmup))
        values = [float(multiplier(i / max_iter)) for i in range(max_iter)]
        scanned = [(i, values[i]) for i in range(1, max_iter) if values[i] < 0.9 * values[i - 1]]
        assert len(scanned) == len(milestones)
        assert lr_drop_iterations(multiplier, max_iter) == scanned


def test_a_resume_reapplies_the_configs_lr_and_weight_decay_to_the_groups():
    """The checkpoint's optimizer state brings its own lr / weight decay; the config's must win, and the
    returned lines must say what was changed (a message alone, without the value set, was not caught)."""
    from siamese_detr.engine.resume_checks import optimizer_settings, reapply_optimizer_settings

    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    wanted = optimizer_settings(torch.optim.AdamW([{"params": [params[0]], "lr": 2e-4, "weight_decay": 5e-4},
                                                   {"params": [params[1]], "lr": 2e-5, "weight_decay": 0.0}]))
    resumed = torch.optim.AdamW([{"params": [params[0]], "lr": 1e-4, "weight_decay": 1e-4},
                                 {"params": [params[1]], "lr": 1e-5, "weight_decay": 0.0}])
    for group in resumed.param_groups:
        group["initial_lr"] = group["lr"]  # as the lr scheduler keeps it
    changed = reapply_optimizer_settings(resumed, wanted)
    assert changed == ["group 0: lr 0.0001 -> 0.0002", "group 0: weight_decay 0.0001 -> 0.0005",
                       "group 1: lr 1e-05 -> 2e-05"]
    assert [(g["initial_lr"], g["weight_decay"]) for g in resumed.param_groups] == [(2e-4, 5e-4), (2e-5, 0.0)]
    assert reapply_optimizer_settings(resumed, wanted) == []  # applied: nothing left to change
    assert reapply_optimizer_settings(resumed, wanted[:1]) == []  # another number of groups: not ours to map


def test_the_resume_check_compares_lists_of_another_length():
    """--resume after dataloader.train.dataset.names [a] -> [a, b] would otherwise train on other data."""
    from siamese_detr.engine.resume_checks import differing_keys

    old = {"names": ["a"], "mapper": {"sizes": [1, 2]}}
    assert differing_keys(old, {"names": ["a", "b"], "mapper": {"sizes": [1, 2]}}, "d") == ["d.names"]
    assert differing_keys(old, {"names": ["a"], "mapper": {"sizes": [1, 3]}}, "d") == ["d.mapper.sizes.1"]
    assert differing_keys(old, {"names": ["a"], "mapper": {"sizes": [1, 2], "new": 0}}, "d") == ["d.mapper.new"]
    assert differing_keys(old, old, "d") == []


@pytest.mark.parametrize("raises", [False, True])
def test_eval_only_keeps_the_training_config_also_when_its_setup_raises(tmp_path, raises):
    from siamese_detr.engine.resume_checks import EVAL_ONLY_CONFIG, keep_training_config

    (tmp_path / "config.yaml").write_text("trained: 1\n")

    def setup_that_writes_its_config():
        with keep_training_config(str(tmp_path)):
            (tmp_path / "config.yaml").write_text("evaluated: 1\n")
            if raises:
                raise RuntimeError("failed after writing config.yaml")

    if raises:
        with pytest.raises(RuntimeError, match="failed after writing"):
            setup_that_writes_its_config()
    else:
        setup_that_writes_its_config()
    assert (tmp_path / "config.yaml").read_text() == "trained: 1\n"
    assert (tmp_path / EVAL_ONLY_CONFIG).read_text() == "evaluated: 1\n"
    assert not (tmp_path / "config.yaml.tmp").exists()


def test_keep_training_config_inactive_or_without_a_config_leaves_the_block_s_file(tmp_path):
    from siamese_detr.engine.resume_checks import EVAL_ONLY_CONFIG, keep_training_config

    with keep_training_config(str(tmp_path)):  # no config.yaml before: the block's stays
        (tmp_path / "config.yaml").write_text("evaluated: 1\n")
    (tmp_path / "config.yaml").write_text("trained: 1\n")
    with keep_training_config(str(tmp_path), active=False):  # not the writing process, or not --eval-only
        (tmp_path / "config.yaml").write_text("evaluated: 2\n")
    assert (tmp_path / "config.yaml").read_text() == "evaluated: 2\n"
    assert not (tmp_path / EVAL_ONLY_CONFIG).exists()


def test_evaluation_results_count_the_iterations_finished_when_they_ran():
    """Periodic evaluations run in after_step (iter: the step that just ran, 0-based), the last one in
    after_train (iter == max_iter): both count finished iterations, the x of the AP curves."""
    from types import SimpleNamespace

    from siamese_detr.engine.eval_outputs import finished_iterations

    assert [finished_iterations(SimpleNamespace(iter=i, max_iter=10)) for i in (0, 1, 4, 9, 10)] == [1, 2, 5, 10, 10]
