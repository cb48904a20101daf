"""The bounds of the training tool's start-up checks, key by key, from the values each key accepts (written here
by hand, not read from the check's own tables): the smallest count of each count key, a bool where a count or a
milestone is expected, a step schedule's values, a warm-up that rises and drops within one grid cell of the lr
listing, the kinds of value an override may give; the ``--resume`` check (long differences, a saved file that
is no YAML, objects in a config, a config saved as a pickle, an optimizer of another shape) and the checks of
the training and test sets (no evaluator, a lazily registered folder, classes from the first labelled set)."""
import json
import re

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf

from siamese_detr.engine.config_checks import OverrideTypeError, check_override_type, expand_home_paths
from siamese_detr.engine.schedule_checks import check_counts, check_milestones, check_output_dir, lr_drop_iterations
from siamese_detr.utils.user_errors import UserValueError

# key -> the smallest value a run can use (0 workers: load in the training process; none of these may be lower)
SMALLEST = {
    "train.max_iter": 1,
    "train.checkpointer.period": 1,
    "train.checkpointer.max_to_keep": 1,
    "train.log_period": 1,
    "dataloader.train.total_batch_size": 1,
    "dataloader.train.num_workers": 0,
    "dataloader.test.num_workers": 0,
    "model.num_queries": 1,
    "model.num_classes": 1,
}


def _config(key, value):
    cfg = OmegaConf.create({})
    OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


@pytest.mark.parametrize("key, smallest", sorted(SMALLEST.items()))
def test_each_count_accepts_its_smallest_value_and_refuses_one_less(key, smallest):
    check_counts(_config(key, smallest))
    with pytest.raises(UserValueError, match=rf"^Config key '{key}' \(.*\) must be at least {smallest}, "
                                             rf"got {smallest - 1}\.$"):
        check_counts(_config(key, smallest - 1))


@pytest.mark.parametrize("key", ["train.max_iter", "dataloader.train.total_batch_size", "train.seed"])
def test_a_bool_is_no_count(key):
    """``True`` is an int to Python; ``train.max_iter=True`` would train one iteration."""
    with pytest.raises(UserValueError, match=rf"^Config key '{key}' \(.*\) must be a whole number, got True\.$"):
        check_counts(_config(key, True))


def _steps(milestones, values, num_updates=300):
    return OmegaConf.create({"lr_multiplier": {"values": values, "milestones": milestones,
                                               "num_updates": num_updates}})


def test_a_bool_milestone_is_refused():
    with pytest.raises(UserValueError, match=r"'lr_multiplier.milestones' must be a list of numbers of updates, "
                                             r"got \[True, 200\] \(lr_multiplier.num_updates=300\)\.$"):
        check_milestones(_steps([True, 200], [1, 0.1, 0.01]))


def test_a_step_schedule_needs_exactly_one_value_more_than_drops():
    """fvcore refuses more values as well as fewer (its ValueError named no key)."""
    check_milestones(_steps([100, 200], [1, 0.1, 0.01]))
    for values in ([1, 0.1], [1, 0.1, 0.01, 0.001]):
        with pytest.raises(UserValueError, match=rf"got {len(values)} values for 2 drops"):
            check_milestones(_steps([100, 200], values))
        with pytest.raises(ValueError):  # what the check stands for
            MultiStepParamScheduler(values, milestones=[100, 200], num_updates=300)


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_output_dir_is_refused(blank, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserValueError, match=rf"^Config key 'train.output_dir' must be a folder path, got '{blank}'"):
        check_output_dir(blank)
    assert list(tmp_path.iterdir()) == []


def test_a_drop_right_after_a_warm_up_is_listed_in_a_long_run():
    """10000 iterations, a warm-up over the first 1000 and a drop at 1100: the warm-up's rise and the drop lie
    within 100 iterations, so a coarse grid would see no fall between two of its points."""
    steps = MultiStepParamScheduler([1.0, 0.1], milestones=[1100], num_updates=10000)
    multiplier = WarmupParamScheduler(steps, warmup_factor=0.001, warmup_length=0.1)
    assert lr_drop_iterations(multiplier, 10000) == [(1100, pytest.approx(0.1))]


# --------------------------------------------------------------------------------------- override kinds
@pytest.mark.parametrize("old, new", [(1e-4, 1), (0.5, 0), (3, 2.5), (True, False), ([1, 2], [3]),
                                      ({"a": 1}, {"b": 2})])
def test_an_override_of_the_same_kind_of_value_is_accepted(old, new):
    """A float key takes an int (``optimizer.lr=1``, as configs write ``0`` for a float) and an int key a float
    (the count checks refuse the float where a whole number is needed, naming the key)."""
    check_override_type("k", old, new, f"k={new}")


@pytest.mark.parametrize("old, new, expects", [(1e-4, "abc", "a number"), (3, True, "a number"),
                                               (True, 1, "True or False"), ([1], 1, "a list [...]"),
                                               ({"a": 1}, [1], "a dict {...}")])
def test_an_override_of_another_kind_names_the_key_and_what_it_expects(old, new, expects):
    expected = f"Config key 'k' expects {expects} (the config has {old!r})"
    with pytest.raises(OverrideTypeError, match="^" + re.escape(expected)):
        check_override_type("k", old, new, f"k={new}")


def test_the_test_loader_may_be_switched_off_like_the_evaluator():
    """No test loader is built without an evaluation: null is accepted for ``dataloader.test`` and
    ``dataloader.evaluator``, not for the sections every run builds."""
    section = OmegaConf.create({"_target_": "builtins.dict", "num_workers": 0})
    for key in ("dataloader.test", "dataloader.evaluator"):
        check_override_type(key, section, None, f"{key}=null")
    for key in ("model", "optimizer", "lr_multiplier", "dataloader.train"):
        with pytest.raises(OverrideTypeError, match=rf"^Config key '{key}' holds the config of .* by null\."):
            check_override_type(key, section, None, f"{key}=null")


def test_a_replaced_section_names_at_most_six_of_its_fields_and_not_its_target():
    section = OmegaConf.create({"_target_": "builtins.dict", **{f"f{i}": i for i in range(8)}})
    with pytest.raises(OverrideTypeError) as err:
        check_override_type("model", section, 3, "model=3")
    fields = ", ".join(f"model.f{i}" for i in range(6))
    assert f"Set its fields instead ({fields}, ...), or give another --config-file." in str(err.value)
    assert "model._target_" not in str(err.value)


def test_a_home_folder_alone_is_expanded(monkeypatch, tmp_path):
    """``~`` alone is the home folder, as ``~/run`` is a folder in it; ``~user`` is that user's home."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = OmegaConf.create({"train": {"output_dir": "~", "init_checkpoint": "~/x.pth"}})
    expand_home_paths(cfg)
    assert cfg.train.output_dir == str(tmp_path) and cfg.train.init_checkpoint == str(tmp_path / "x.pth")


# --------------------------------------------------------------------------------------- --resume
def _saved_config(folder, model):
    import yaml

    (folder / "config.yaml").write_text(yaml.safe_dump({"model": model, "train": {"max_iter": 5}}))


def test_a_resume_into_another_model_names_eight_differing_keys_and_counts_the_rest(tmp_path):
    from siamese_detr.engine.resume_checks import ResumeMismatchError, check_resume_matches

    _saved_config(tmp_path, {f"k{i}": i for i in range(10)})
    cfg = OmegaConf.create({"model": {f"k{i}": i + 1 for i in range(10)}, "train": {"max_iter": 9}})
    shown = ", ".join(f"model.k{i}" for i in range(8))
    with pytest.raises(ResumeMismatchError, match=rf"differs in {shown} and 2 more\)\. Resuming would continue"):
        check_resume_matches(cfg, str(tmp_path))


def test_a_config_yaml_that_is_no_yaml_is_not_compared(tmp_path):
    """Not written by LazyConfig.save: nothing reliable to compare, so the resume goes on."""
    from siamese_detr.engine.resume_checks import check_resume_matches

    (tmp_path / "config.yaml").write_text("model: [unclosed\n")
    check_resume_matches(OmegaConf.create({"model": {"k": 1}}), str(tmp_path))


def test_a_resumed_optimizer_of_another_shape_keeps_its_settings():
    """Another number of parameter groups is another model (the resume check refuses it): nothing is changed."""
    import torch

    from siamese_detr.engine.resume_checks import reapply_optimizer_settings

    optimizer = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-4},
                                   {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-5}])
    assert reapply_optimizer_settings(optimizer, [{"lr": 2e-4, "weight_decay": 0.5}]) == []
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-5]
    assert all("initial_lr" not in g and g["weight_decay"] == 0.01 for g in optimizer.param_groups)


# --------------------------------------------------------------------------------------- the test set
def test_no_evaluator_means_no_test_set_to_look_for():
    """``train.eval_period > 0`` with ``dataloader.evaluator=null`` evaluates nothing: a test set that is not
    there is no reason to stop."""
    from siamese_detr.engine.evaluation_checks import check_test_set_on_disk

    cfg = OmegaConf.create({"train": {"eval_period": 5},
                            "dataloader": {"evaluator": None, "test": {"dataset": {"names": "no_such_test_set"}}}})
    check_test_set_on_disk(cfg)
    cfg.dataloader.evaluator = {"_target_": "builtins.dict"}
    with pytest.raises(KeyError, match="'no_such_test_set' is not registered"):
        check_test_set_on_disk(cfg)


def test_objects_in_a_config_are_compared_by_their_tags_and_no_object_is_built(tmp_path):
    """``LazyConfig.save`` writes an object with a Python tag, which ``yaml.safe_load`` refused: the resume
    check was skipped for such a saved config (and crashed on such a new config beside a plain saved one).
    Tags are compared as text, and a tag that would run code runs nothing."""
    from detectron2.config import LazyConfig

    from siamese_detr.engine.resume_checks import ResumeMismatchError, check_resume_matches

    def config(k):
        return OmegaConf.create({"model": {"k": k, "act": _Activation()}}, flags={"allow_objects": True})

    LazyConfig.save(config(1), str(tmp_path / "config.yaml"))
    assert "!!python/object:" in (tmp_path / "config.yaml").read_text()
    check_resume_matches(config(1), str(tmp_path))
    with pytest.raises(ResumeMismatchError, match=r"differs in model\.k\)"):
        check_resume_matches(config(2), str(tmp_path))

    canary = tmp_path / "canary"
    canary.write_text("x")
    (tmp_path / "config.yaml").write_text(f"model: !!python/object/apply:os.remove [{str(canary)!r}]\n")
    with pytest.raises(ResumeMismatchError):
        check_resume_matches(config(1), str(tmp_path))
    assert canary.exists()


def test_a_config_that_cannot_be_written_as_yaml_is_not_compared(tmp_path):
    """LazyConfig.save pickles such a config instead (a torch dtype in it): there is no YAML to compare with."""
    import torch

    from siamese_detr.engine.resume_checks import check_resume_matches

    _saved_config(tmp_path, {"k": 1})
    cfg = OmegaConf.create({"model": {"k": 2, "dtype": torch.float16}}, flags={"allow_objects": True})
    check_resume_matches(cfg, str(tmp_path))


class _Activation:
    """An object in a config, as a user may put one there."""


def test_a_lazily_registered_training_folder_that_is_a_file_is_refused(tmp_path):
    from siamese_detr.engine.evaluation_checks import check_train_set_on_disk

    (tmp_path / "images").write_text("not a folder")
    cfg = OmegaConf.create({"dataloader": {"train": {"dataset": {"names": {
        "_target_": "siamese_detr.data.datasets.register_unlabeled_folder", "name": "my_images",
        "image_root": str(tmp_path / "images")}}}}})
    with pytest.raises(FileNotFoundError, match=r"Dataset 'my_images' expects '.*images', which does not exist"):
        check_train_set_on_disk(cfg)


def test_the_classes_of_a_training_set_come_from_its_first_dataset_that_has_classes(tmp_path):
    """An unlabelled folder listed first has no classes: the training set's are the ``coco:`` json's."""
    from siamese_detr.engine.evaluation_checks import check_test_classes

    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((24, 24, 3), np.uint8))
    (tmp_path / "a.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": 24, "width": 24}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "disc"}]}))
    folder, coco = f"folder:{tmp_path / 'images'}", f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}"
    cfg = OmegaConf.create({"train": {"eval_period": 5}, "dataloader": {
        "evaluator": {"_target_": "detectron2.evaluation.COCOEvaluator"},
        "train": {"dataset": {"names": [folder, coco]}}, "test": {"dataset": {"names": coco}}}})
    try:
        check_test_classes(cfg)
    finally:
        for name in (folder, coco):
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
