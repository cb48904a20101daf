"""Issue 11 items 8 (config value types) and 9 (a torn metrics.json stays readable)."""
import importlib.util
import json
import os

import pytest
from omegaconf import OmegaConf

from siamese_detr.engine import apply_checked_overrides
from siamese_detr.engine.config_checks import OverrideTypeError
from siamese_detr.engine.metrics_file import terminate_torn_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("plot_metrics_rel", os.path.join(ROOT, "tools", "plot_metrics.py"))
plot_metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_metrics)


def _cfg():
    return OmegaConf.create({"train": {"max_iter": 100, "base_lr": 0.1, "amp": {"enabled": False}, "device": "cpu",
                                       "init_checkpoint": "", "sizes": [1, 2], "clip": None}})


@pytest.mark.parametrize("item,expected", [
    ("train.max_iter=abc", "a number"), ("train.base_lr=fast", "a number"), ("train.amp.enabled=1", "True or False"),
    ("train.sizes=3", "a list"), ("train.amp=3", "a dict"),
])
def test_a_value_of_the_wrong_type_names_the_key(item, expected):
    with pytest.raises(OverrideTypeError) as err:
        apply_checked_overrides(_cfg(), [item])
    key = item.split("=")[0]
    assert f"'{key}' expects {expected}" in str(err.value) and f"override '{item}'" in str(err.value)


def test_values_of_the_right_kind_pass():
    cfg = apply_checked_overrides(_cfg(), ["train.max_iter=10", "train.base_lr=1e-4", "train.max_iter=2.5",
                                           "train.amp.enabled=True", "train.sizes=[3]", "train.device=cuda",
                                           "train.init_checkpoint=x.pth", "train.clip=3", "train.sizes=null"])
    assert cfg.train.base_lr == 1e-4 and cfg.train.sizes is None and cfg.train.clip == 3


def _write(path, lines, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + tail)


def test_plot_metrics_skips_a_torn_last_line(tmp_path, capsys):
    path = tmp_path / "metrics.json"
    _write(path, [{"iteration": 0, "loss_ce": 1.0}, {"iteration": 1, "loss_ce": 0.5}], tail='{"iteration": 2, "lo')
    records = plot_metrics.read_metrics(path)
    assert [r["iteration"] for r in records] == [0, 1]
    assert "metrics.json:3: skipping a line cut short" in capsys.readouterr().err
    out = tmp_path / "curves.png"
    assert plot_metrics.main([str(path), "--output", str(out)]) == 0 and out.stat().st_size > 0


def test_a_resumed_run_keeps_the_torn_line_apart(tmp_path, capsys):
    path = tmp_path / "metrics.json"
    _write(path, [{"iteration": 0, "loss_ce": 1.0}], tail='{"iteration": 1, "lo')
    assert terminate_torn_line(str(path)) is True
    assert terminate_torn_line(str(path)) is False  # idempotent
    with open(path, "a") as f:  # what the resumed run's JSONWriter appends
        f.write(json.dumps({"iteration": 1, "loss_ce": 0.7}) + "\n")
    records = plot_metrics.read_metrics(path)
    assert [(r["iteration"], r["loss_ce"]) for r in records] == [(0, 1.0), (1, 0.7)]
    assert "metrics.json:2: skipping" in capsys.readouterr().err
    assert terminate_torn_line(str(tmp_path / "absent.json")) is False


def test_the_training_tools_writers_start_a_torn_file_on_a_new_line(tmp_path):
    """safe_default_writers (what tools/lazyconfig_train_net.py writes metrics.json with) ends a torn last
    line before the resumed run appends: the first new record is not glued to it."""
    from siamese_detr.engine.metrics_file import safe_default_writers

    path = tmp_path / "metrics.json"
    _write(path, [{"iteration": 0, "loss_ce": 1.0}], tail='{"iteration": 1, "lo')
    writers = safe_default_writers(str(tmp_path), 10)
    try:
        assert path.read_text().endswith('{"iteration": 1, "lo\n')
    finally:
        for writer in writers:
            writer.close()
