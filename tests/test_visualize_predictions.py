"""tools/visualize_predictions.py: the class count of softmax and focal heads, and the checkpoint rules of
train.init_checkpoint (no random model drawn, no pickle run unasked)."""
import importlib.util
import pickle
import re
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("visualize_predictions_tool", ROOT / "tools" / "visualize_predictions.py")
tool = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tool)

SMALL = ["model.transformer.num_encoder_layers=1", "model.transformer.num_decoder_layers=2"]


def _config(name: str):
    from siamese_detr.engine import apply_checked_overrides

    return apply_checked_overrides(LazyConfig.load(str(ROOT / "configs" / "demo" / name)), SMALL)


def _save_model(cfg, path: Path) -> dict:
    torch.manual_seed(0)
    state = instantiate(cfg.model).state_dict()
    torch.save({"model": state}, path)
    return state


@pytest.mark.parametrize("config, extra_rows", [("detr_demo.py", 1), ("deformable_detr_demo.py", 0),
                                                ("conditional_detr_demo.py", 0)])
def test_class_count_follows_the_class_loss(tmp_path, config, extra_rows):
    cfg = _config(config)
    assert tool.no_object_logits(cfg) == extra_rows
    _save_model(cfg, tmp_path / "model.pth")
    assert tool.checkpoint_num_classes(str(tmp_path / "model.pth"), extra_rows) == 8  # the 8 shape classes


def test_a_focal_detector_is_drawn_with_its_own_class_head(tmp_path, tiny_synthetic_shapes, caplog, monkeypatch):
    cfg = _config("deformable_detr_demo.py")
    state = _save_model(cfg, tmp_path / "model.pth")
    loaded = {}
    original = tool.SafeDetectionCheckpointer.load

    def spy(self, path, *args, **kwargs):
        result = original(self, path, *args, **kwargs)
        loaded.update({k: v.clone() for k, v in self.model.state_dict().items()})
        return result

    monkeypatch.setattr(tool.SafeDetectionCheckpointer, "load", spy)
    argv = ["--config-file", str(ROOT / "configs/demo/deformable_detr_demo.py"), "--checkpoint",
            str(tmp_path / "model.pth"), "--dataset", "synthetic_shapes_val", "--num-images", "1",
            "--output", str(tmp_path / "png"), *SMALL]
    assert tool.main(argv) == 0
    heads = [k for k in state if re.fullmatch(r"class_embed(\.\d+)*\.weight", k)]
    assert heads and all(torch.equal(loaded[k], state[k]) for k in heads)
    assert "from the checkpoint's class head" not in caplog.text
    assert len(list((tmp_path / "png").glob("*.png"))) == 1


def test_a_pretraining_checkpoint_is_refused(tmp_path, capsys):
    # a pretext head (object vs no object: one row besides "no object") has no foreground class for softmax
    torch.save({"model": {"class_embed.weight": torch.zeros(1, 8)}}, tmp_path / "pretext_head.pth")
    argv = ["--config-file", str(ROOT / "configs/demo/detr_demo.py"), "--checkpoint",
            str(tmp_path / "pretext_head.pth"), "--output", str(tmp_path / "png"), *SMALL]
    assert tool.main(argv) == 2
    assert "no foreground class" in capsys.readouterr().err


def test_a_checkpoint_that_matches_nothing_is_refused(tmp_path, tiny_synthetic_shapes, capsys):
    torch.save({"model": {"a.weight": torch.zeros(3)}}, tmp_path / "junk.pth")
    argv = ["--config-file", str(ROOT / "configs/demo/detr_demo.py"), "--checkpoint", str(tmp_path / "junk.pth"),
            "--dataset", "synthetic_shapes_val", "--output", str(tmp_path / "png"), *SMALL]
    assert tool.main(argv) == 2
    assert "matches no parameter" in capsys.readouterr().err
    assert not (tmp_path / "png").exists()


class Payload:
    """Unpickling this creates the file ``marker`` (stands for arbitrary code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_is_not_run_without_trust_pickle(tmp_path, tiny_synthetic_shapes, capsys):
    marker, pkl = tmp_path / "pwned", tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"x": Payload(str(marker))}}, protocol=2))
    argv = ["--config-file", str(ROOT / "configs/demo/detr_demo.py"), "--checkpoint", str(pkl),
            "--dataset", "synthetic_shapes_val", "--output", str(tmp_path / "png"), *SMALL]
    assert tool.main(argv) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert not marker.exists()
