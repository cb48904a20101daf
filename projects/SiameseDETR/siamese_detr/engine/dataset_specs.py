"""Datasets given by path in a config (``coco:ANNOTATIONS.json:IMAGE_ROOT``, ``folder:IMAGE_DIR``; see
:mod:`siamese_detr.data.datasets.from_path`): registered once the command-line overrides are applied
(:func:`~.overrides.apply_checked_overrides`, right after the config is loaded), and ``model.num_classes``
taken from the json when the command line does not set it."""
import logging
from typing import Iterable, List

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..data.datasets.from_path import is_dataset_spec, register_dataset_spec, spec_thing_classes
from ..utils.user_errors import UserValueError

__all__ = ["register_config_datasets"]

logger = logging.getLogger(__name__)


def _spec_strings(node) -> List[str]:
    """Every string value under ``node`` (a config, or the dicts/lists of ``OmegaConf.to_container``) that is
    a dataset spec; interpolations are not resolved (the value they point to is visited where it is written)."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    values = node.values() if isinstance(node, dict) else node if isinstance(node, (list, tuple)) else [node]
    found = []
    for value in values:
        if isinstance(value, (dict, list, tuple)):
            found.extend(_spec_strings(value))
        elif is_dataset_spec(value):
            found.append(value)
    return found


def _names(cfg, key: str) -> List[str]:
    value = OmegaConf.select(cfg, key, default=None)
    if isinstance(value, str):
        return [value]
    if isinstance(value, ListConfig) and all(isinstance(v, str) for v in value):
        return list(value)
    return []


def register_config_datasets(cfg, overridden_keys: Iterable[str] = ()) -> List[str]:
    """Register every dataset spec found in ``cfg``; set ``model.num_classes`` from their categories.

    ``model.num_classes`` (when the model config has that key) becomes the number of categories of the
    ``coco:`` specs of ``dataloader.train.dataset.names`` and ``dataloader.test.dataset.names``, unless
    ``model.num_classes`` is in ``overridden_keys`` (the user set it: then it must be at least that number).

    Returns:
        the specs registered.
    Raises:
        FileNotFoundError / ValueError: a spec names a missing path, a malformed json, or train and test
        specs with different categories.
    """
    specs = sorted(set(_spec_strings(cfg)))
    for spec in specs:
        register_dataset_spec(spec)
    classes = spec_thing_classes(_names(cfg, "dataloader.train.dataset.names")
                                 + _names(cfg, "dataloader.test.dataset.names"))
    model = cfg.get("model", None)
    if classes is None or not isinstance(model, DictConfig) or "num_classes" not in model:
        return specs
    if "model.num_classes" in set(overridden_keys):
        if model.num_classes < len(classes):
            raise UserValueError(
                f"model.num_classes={model.num_classes} but the dataset has {len(classes)} categories "
                f"{classes}; leave model.num_classes out to take it from the json"
            )
        return specs
    if model.num_classes != len(classes):
        logger.warning("model.num_classes = %d: the categories of the dataset %s (the config said %s)",
                       len(classes), classes, model.num_classes)
        model.num_classes = len(classes)
    return specs
