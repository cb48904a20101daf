"""Command-line overrides: existing keys update, unknown keys fail naming the key, '+key' adds."""
import pytest
from omegaconf import OmegaConf

from siamese_detr.engine import apply_checked_overrides


def _cfg():
    return OmegaConf.create({
        "train": {"max_iter": 100, "amp": {"enabled": False}, "output_dir": "out"},
        "model": {"_target_": "builtins.dict", "num_queries": 100, "sizes": [1, 2, 3]},
    })


def test_existing_keys_are_overridden_with_parsed_types():
    cfg = apply_checked_overrides(_cfg(), ["train.max_iter=10", "train.amp.enabled=True", "model.sizes.1=7"])
    assert cfg.train.max_iter == 10 and isinstance(cfg.train.max_iter, int)
    assert cfg.train.amp.enabled is True
    assert list(cfg.model.sizes) == [1, 7, 3]


def test_unknown_key_names_the_key_and_suggests_the_closest():
    with pytest.raises(KeyError) as err:
        apply_checked_overrides(_cfg(), ["train.max_iterr=10"])
    message = str(err.value)
    assert "'train.max_iterr'" in message and "train.max_iter" in message and "+train.max_iterr=10" in message


def test_unknown_intermediate_key_fails_too():
    with pytest.raises(KeyError, match="'trian.max_iter'"):
        apply_checked_overrides(_cfg(), ["trian.max_iter=10"])


def test_plus_prefix_adds_a_new_key():
    cfg = apply_checked_overrides(_cfg(), ["+model.extra=3"])
    assert cfg.model.extra == 3


def test_malformed_override_is_rejected():
    with pytest.raises(ValueError, match="key=value"):
        apply_checked_overrides(_cfg(), ["train.max_iter"])
