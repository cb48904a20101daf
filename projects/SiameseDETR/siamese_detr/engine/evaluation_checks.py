"""Build the test loader only after checking that every test image can be read.

Evaluation never skips or replaces an image: Detectron2's ``MapDataset`` replaces a sample its mapper
returns ``None`` for by a random other one, which for a test set counts one image twice and another not at
all (and COCO AP still finishes with exit 0). So at start-up every test image is decoded once per process
(:func:`siamese_detr.data.dataset_checks.check_images_readable`, 4 threads, cached across periodic
evaluations) and a test set with unreadable images is refused, listing them all; should a file become
unreadable afterwards, ``DetrDatasetMapper`` at inference stops the evaluation naming it.

A training run that evaluates checks its test set's files before its first iteration
(:func:`check_test_set_on_disk`), not when the first evaluation builds the loader, possibly hours later, and
that the test set has the training set's classes (:func:`check_test_classes`): a model trained on your own
``coco:`` classes and evaluated on the config's default test set would report AP under the wrong class names.
"""
import os
from typing import List

from detectron2.config import instantiate
from omegaconf import DictConfig

from siamese_detr.data.dataset_checks import check_datasets_on_disk, check_images_readable, missing_path_error
from ..utils.user_errors import UserValueError

__all__ = ["build_checked_test_loader", "check_coco_test_fields", "check_test_classes", "check_test_set_on_disk",
           "check_train_set_on_disk", "test_dataset_names"]


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


def _evaluates(cfg) -> bool:
    """A training run evaluates when ``train.eval_period > 0`` and ``dataloader.evaluator`` is set."""
    return (cfg.train.get("eval_period", 0) or 0) > 0 and cfg.dataloader.get("evaluator", None) is not None


def _dataset_names(cfg, split: str) -> List[str]:
    """``dataloader.<split>.dataset.names`` as a list of strings ([] when absent or not names)."""
    loader = cfg.dataloader.get(split, None)
    dataset_cfg = loader.get("dataset", None) if isinstance(loader, (dict, DictConfig)) else None
    names = dataset_cfg.get("names", None) if isinstance(dataset_cfg, (dict, DictConfig)) else None
    if isinstance(names, (dict, DictConfig)):  # a lazy registration (e.g. register_unlabeled_folder), not names
        return []
    names = [names] if isinstance(names, str) else list(names or [])
    return [n for n in names if isinstance(n, str)]


def test_dataset_names(cfg) -> List[str]:
    """``dataloader.test.dataset.names`` as a list of strings ([] when absent or not names)."""
    return _dataset_names(cfg, "test")


def _thing_classes(names: List[str]):
    """(name, class names) of the first of ``names`` whose metadata has class names, else (None, None)."""
    from detectron2.data import MetadataCatalog

    from siamese_detr.data.datasets.from_path import ensure_dataset

    for name in names:
        name = ensure_dataset(name)
        classes = MetadataCatalog.get(name).get("thing_classes", None) if isinstance(name, str) else None
        if classes:
            return name, list(classes)
    return None, None


def check_test_classes(cfg) -> None:
    """Before training: when the run evaluates per class (not ``ClassAgnosticEvaluator``), the test set must
    have the training set's class names, in the same order (both taken from their metadata; a dataset without
    class names, e.g. ``folder:``, is not compared). Raises ``ValueError`` naming both sets."""
    if not _evaluates(cfg):
        return
    target = cfg.dataloader.evaluator.get("_target_", "")
    if "ClassAgnostic" in str(getattr(target, "__name__", target)):
        return
    train_name, train_classes = _thing_classes(_dataset_names(cfg, "train"))
    test_name, test_classes = _thing_classes(_dataset_names(cfg, "test"))
    if train_classes is None or test_classes is None or train_classes == test_classes:
        return
    raise UserValueError(
        f"the training set {train_name!r} has the classes {train_classes[:10]}"
        f"{' ...' if len(train_classes) > 10 else ''}, the test set {test_name!r} (dataloader.test.dataset.names) "
        f"{test_classes[:10]}{' ...' if len(test_classes) > 10 else ''}: its AP would be computed under the wrong "
        "class names. Point dataloader.test.dataset.names at a test set of your classes (e.g. "
        "coco:VAL.json:IMAGES), or set train.eval_period=0 to train without evaluation."
    )


def check_train_set_on_disk(cfg) -> None:
    """Before training: the training set ``dataloader.train.dataset.names`` must be registered and on disk
    (raises the error of :func:`check_datasets_on_disk`, naming the expected path and the README section), so
    that a missing dataset is reported as such before anything that derives from it (its proposal store, the
    test set's classes) is looked for."""
    names = _dataset_names(cfg, "train")
    if names:
        check_datasets_on_disk(names)
        return
    # a folder registered lazily by the config (``names=L(register_unlabeled_folder)(name=..., image_root=...)``)
    loader = cfg.dataloader.get("train", None)
    dataset_cfg = loader.get("dataset", None) if isinstance(loader, (dict, DictConfig)) else None
    lazy = dataset_cfg.get("names", None) if isinstance(dataset_cfg, (dict, DictConfig)) else None
    if isinstance(lazy, (dict, DictConfig)) and isinstance(lazy.get("image_root", None), str):
        if not os.path.isdir(lazy.image_root):
            raise missing_path_error(str(lazy.get("name", "training set")), lazy.image_root)


def check_test_set_on_disk(cfg) -> None:
    """Before training: when the run evaluates (``train.eval_period > 0`` and ``dataloader.evaluator`` set; a
    positive period also evaluates after the last iteration), its test set
    ``dataloader.test.dataset.names`` must be registered and on disk. Raises the error of
    :func:`check_datasets_on_disk` (``FileNotFoundError`` / ``KeyError``) with the two ways out added, or the
    ``ValueError`` of :func:`check_coco_test_fields`."""
    names = _dataset_names(cfg, "test") if _evaluates(cfg) else []
    if not names:
        return
    try:
        check_datasets_on_disk(names)
    except (FileNotFoundError, KeyError) as e:
        raise type(e)(
            f"{e.args[0]} This run evaluates on it every train.eval_period={cfg.train.eval_period} iterations "
            "and after the last one: point dataloader.test.dataset.names at a test set you have (e.g. "
            "coco:VAL.json:IMAGES), or set train.eval_period=0 to train without evaluation."
        ) from e
    check_coco_test_fields(names, "to train without evaluation, set train.eval_period=0")


def check_coco_test_fields(names: List[str], alternative: str = "") -> None:
    """Before a run evaluates on ``names`` (``dataloader.test.dataset.names``): a ``coco:`` json without the
    fields only COCO evaluation reads (``iscrowd``, ``area``; its loader does without them) is refused now,
    not when the evaluation fails after the training or the inference. Raises ``ValueError`` with the json's
    entry and field (found when it was registered, see ``read_coco_json``) and ``alternative``."""
    from detectron2.data import MetadataCatalog

    for name in names:
        problem = MetadataCatalog.get(name).get("coco_evaluation_problem", None)
        if problem:
            raise UserValueError(f"{problem} It is the test set (dataloader.test.dataset.names={name}) of this run"
                                 + (f"; {alternative}." if alternative else "."))
