"""Build the test loader only after checking that every test image can be read (issue 11, item 3).

Evaluation never skips or replaces an image: Detectron2's ``MapDataset`` replaces a sample its mapper
returns ``None`` for by a random other one, which for a test set counts one image twice and another not at
all (and COCO AP still finishes with exit 0). So at start-up every test image is decoded once per process
(:func:`siamese_detr.data.dataset_checks.check_images_readable`, 4 threads, cached across periodic
evaluations) and a test set with unreadable images is refused, listing them all; should a file become
unreadable afterwards, ``DetrDatasetMapper`` at inference stops the evaluation naming it.

A training run that evaluates checks its test set's files before its first iteration
(:func:`check_test_set_on_disk`), not when the first evaluation builds the loader, possibly hours later.
"""
from detectron2.config import instantiate
from omegaconf import DictConfig

from siamese_detr.data.dataset_checks import check_datasets_on_disk, check_images_readable

__all__ = ["build_checked_test_loader", "check_test_set_on_disk"]


def _target(cfg):
    target = cfg["_target_"]
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        target = locate(target)
    return target


def build_checked_test_loader(test_cfg):
    """``instantiate(test_cfg)`` (a LazyCall of a test-loader builder with a ``dataset`` argument),
    instantiating the dataset once and checking its images first."""
    dataset_cfg = test_cfg.get("dataset", None) if isinstance(test_cfg, (dict, DictConfig)) else None
    if dataset_cfg is None or "_target_" not in test_cfg:
        return instantiate(test_cfg)
    dataset = instantiate(dataset_cfg)
    if isinstance(dataset, list) and all(isinstance(d, dict) and "file_name" in d for d in dataset):
        names = dataset_cfg.get("names", "test set") if isinstance(dataset_cfg, (dict, DictConfig)) else "test set"
        check_images_readable(dataset, name=f"{names}")
    kwargs = {k: instantiate(v) for k, v in test_cfg.items() if k not in ("_target_", "dataset")}
    return _target(test_cfg)(dataset=dataset, **kwargs)


def check_test_set_on_disk(cfg) -> None:
    """Before training: when the run evaluates (``train.eval_period > 0`` and ``dataloader.evaluator`` set; a
    positive period also evaluates after the last iteration), its test set
    ``dataloader.test.dataset.names`` must be registered and on disk. Raises the error of
    :func:`check_datasets_on_disk` (``FileNotFoundError`` / ``KeyError``) with the two ways out added."""
    if (cfg.train.get("eval_period", 0) or 0) <= 0 or cfg.dataloader.get("evaluator", None) is None:
        return
    test_cfg = cfg.dataloader.get("test", None)
    dataset_cfg = test_cfg.get("dataset", None) if isinstance(test_cfg, (dict, DictConfig)) else None
    names = dataset_cfg.get("names", None) if isinstance(dataset_cfg, (dict, DictConfig)) else None
    if names is None:
        return
    names = [names] if isinstance(names, str) else list(names)
    try:
        check_datasets_on_disk(names)
    except (FileNotFoundError, KeyError) as e:
        raise type(e)(
            f"{e.args[0]} This run evaluates on it every train.eval_period={cfg.train.eval_period} iterations "
            "and after the last one: point dataloader.test.dataset.names at a test set you have (e.g. "
            "coco:VAL.json:IMAGES), or set train.eval_period=0 to train without evaluation."
        ) from e
