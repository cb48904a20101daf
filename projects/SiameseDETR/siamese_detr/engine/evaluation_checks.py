"""Build the test loader only after checking that every test image can be read (issue 11, item 3).

Evaluation never skips or replaces an image: Detectron2's ``MapDataset`` replaces a sample its mapper
returns ``None`` for by a random other one, which for a test set counts one image twice and another not at
all (and COCO AP still finishes with exit 0). So at start-up every test image is decoded once per process
(:func:`siamese_detr.data.dataset_checks.check_images_readable`, 4 threads, cached across periodic
evaluations) and a test set with unreadable images is refused, listing them all; should a file become
unreadable afterwards, ``DetrDatasetMapper`` at inference stops the evaluation naming it.
"""
from detectron2.config import instantiate
from omegaconf import DictConfig

from siamese_detr.data.dataset_checks import check_images_readable

__all__ = ["build_checked_test_loader"]


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
