"""Command-line overrides: existing keys update, unknown keys fail naming the key, '+key' adds."""
import re
from pathlib import Path

import pytest
from detectron2.config import LazyConfig
from omegaconf import OmegaConf

from siamese_detr.engine import apply_checked_overrides

ROOT = Path(__file__).resolve().parents[1]


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


def test_plus_prefix_adds_a_new_key(caplog):
    with caplog.at_level("WARNING"):
        cfg = apply_checked_overrides(_cfg(), ["+model.extra=3"])
    assert cfg.model.extra == 3
    assert "adds the new key" not in caplog.text  # not close to any existing key


def test_a_plus_key_that_looks_like_a_typo_is_added_with_a_warning(caplog):
    """'+' turns the unknown-key error off, so a typo behind it would silently do nothing."""
    with caplog.at_level("WARNING"):
        cfg = apply_checked_overrides(_cfg(), ["+train.max_iterr=10", "+train.max_iter=20"])
    assert cfg.train.max_iterr == 10 and cfg.train.max_iter == 20  # both applied; '+' on an existing key: no warning
    assert [r.getMessage() for r in caplog.records] == [
        "Override '+train.max_iterr=10' adds the new key 'train.max_iterr', close to the existing 'train.max_iter': "
        "if you meant to change that one, write 'train.max_iter=...' without '+'"
    ]


def test_malformed_override_is_rejected():
    with pytest.raises(ValueError, match="key=value"):
        apply_checked_overrides(_cfg(), ["train.max_iter"])


def test_an_override_the_grammar_cannot_read_is_named_with_how_to_quote_it():
    """hydra's parse error does not say which override it is, and OmegaConf's (an unquoted comma in a path)
    names a Python type: 40 lines of traceback for a missing pair of quotes."""
    from siamese_detr.engine.overrides import OverrideSyntaxError

    cfg = _cfg()
    cfg.model.path = "x"
    with pytest.raises(OverrideSyntaxError) as err:
        apply_checked_overrides(cfg, ["train.max_iter=10", "model.path=/data/d,x/val.json"])
    assert str(err.value) == (
        "Override 'model.path=/data/d,x/val.json' cannot be read: its value does not parse to one a config "
        "can hold. In the override grammar , [ ] ( ) = ' \" and spaces have a meaning (a comma makes a list); quote "
        "a value holding them: \"model.path='/data/d,x/val.json'\" (in the shell, as written here, with the "
        "double quotes).")
    with pytest.raises(OverrideSyntaxError, match=r"^Override 'train.max_iter=\[1' cannot be read: no viable "
                                                  r"alternative at input '\[1'\. In the override grammar"):
        apply_checked_overrides(_cfg(), ["train.max_iter=[1"])
    # named as typed: the '+' of a new key is kept in the suggestion (without it, the key would not exist)
    with pytest.raises(OverrideSyntaxError, match=re.escape("quote a value holding them: \"+model.new='a,b'\"")):
        apply_checked_overrides(_cfg(), ["+model.new=a,b"])
    assert apply_checked_overrides(_cfg(), ["+model.new='a,b'"]).model.new == "a,b"
    # read fine but not storable there (a list where a section is): OmegaConf's reason, no quoting advice
    with pytest.raises(OverrideSyntaxError, match=r"^Override 'train.amp=\[1,2\]' cannot be applied: Cannot merge "
                                                  r"DictConfig with ListConfig$"):
        apply_checked_overrides(_cfg(), ["train.amp=[1,2]"])
    # the quoted form the message gives is read as one string
    assert apply_checked_overrides(cfg, ["model.path='/data/d,x/val.json'"]).model.path == \
        "/data/d,x/val.json"


def test_lazy_call_value_can_be_replaced_by_a_dataset_spec(tmp_path):
    """The ImageNet pretraining config names its data with L(register_image_folder)(...): a plain string
    (here a folder: spec) replaces it without a type error, and the spec is registered."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    (tmp_path / "imgs").mkdir()
    spec = f"folder:{tmp_path / 'imgs'}"
    cfg = LazyConfig.load(str(ROOT / "configs/siamese_detr/siamese_detr_r50_imagenet_60ep.py"))
    try:
        cfg = apply_checked_overrides(cfg, [f"dataloader.train.dataset.names={spec}"])
        assert cfg.dataloader.train.dataset.names == spec and spec in DatasetCatalog.list()
    finally:
        if spec in DatasetCatalog.list():
            DatasetCatalog.remove(spec)
            MetadataCatalog.remove(spec)
    with pytest.raises(Exception, match="train.max_iter"):
        apply_checked_overrides(cfg, ["train.max_iter=abc"])


def test_a_plus_key_the_built_object_does_not_take_is_refused_naming_the_closest(caplog):
    """'+model.num_querys_one2many=60' used to end in a TypeError from DETR.__init__ when the model was built."""
    import inspect

    cfg = LazyConfig.load(str(ROOT / "configs/demo/detr_demo.py"))
    with pytest.raises(KeyError) as err:
        apply_checked_overrides(cfg, ["+model.num_querys_one2many=60"])
    message = str(err.value)
    assert "'+model.num_querys_one2many=60'" in message and "which builds DETR" in message
    assert "Did you mean: model.num_queries_one2many" in message and "Its arguments: backbone," in message
    with pytest.raises(KeyError, match="which builds DetrTransformer: it has no argument 'normalise_before'"):
        apply_checked_overrides(cfg, ["+model.transformer.normalise_before=True"])
    # an argument the config leaves at its default may be added, without a warning about its own section
    signature = inspect.signature(cfg.model._target_)
    free = [n for n in signature.parameters if n not in cfg.model]
    assert free, "DETR has arguments the demo config leaves at their defaults"
    with caplog.at_level("WARNING"):
        assert apply_checked_overrides(cfg, [f"+model.{free[0]}=null"]).model[free[0]] is None
    assert "adds the new key" not in caplog.text
    # a new key is compared with its siblings: 'strict' is not a typo of the dataset section's '_target_'
    with caplog.at_level("WARNING"):
        assert apply_checked_overrides(cfg, ["+dataloader.train.dataset.strict=True"]).dataloader.train.dataset.strict
    assert "adds the new key" not in caplog.text
    # a target taking **kwargs, or one that cannot be inspected: any name may be meant for it
    plain = OmegaConf.create({"log": {"_target_": "logging.basicConfig"}, "d": {"_target_": "builtins.dict"}})
    assert apply_checked_overrides(plain, ["+log.anything=1", "+d.anything=2"]).d.anything == 2
