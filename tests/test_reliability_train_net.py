"""Issue 11 through tools/lazyconfig_train_net.py: a resumed run at max_iter leaves a valid model_final.pth,
--eval-only refuses a missing / pickled / unmatched checkpoint and a test split with an unreadable image,
and a config value of the wrong type fails at start-up naming the key."""
import pickle
import re
from pathlib import Path

import pytest
import torch

from siamese_detr.data.image_io import UnreadableImageError
from siamese_detr.engine.checkpointing import CheckpointLoadError, load_checkpoint_file
from siamese_detr.utils.user_errors import UserOSError

# the training tool loaded once, and its tiny demo settings (tests/train_net_tool.py), without evaluation
from train_net_tool import ROOT, TINY as _TINY, train_net
from pickle_payload import Payload

TINY = _TINY + ["train.eval_period=0"]


def _run(out, *extra, eval_only=False, resume=False):
    argv = ["--config-file", str(ROOT / "configs/demo/detr_demo.py")]
    argv += ["--eval-only"] if eval_only else []
    argv += ["--resume"] if resume else []
    return train_net.main(train_net.parse_args(argv + TINY + [f"train.output_dir={out}", *extra]))


def test_wrong_type_fails_at_start_up_naming_the_key(tmp_path, tiny_synthetic_shapes):
    with pytest.raises(TypeError, match="'train.max_iter'.*'abc'"):
        _run(tmp_path / "out", "train.max_iter=abc")
    assert not (tmp_path / "out").exists()


def test_eval_only_refuses_a_missing_or_pickled_checkpoint(tmp_path, tiny_synthetic_shapes):
    with pytest.raises(ValueError, match="--eval-only needs .*train.init_checkpoint"):
        _run(tmp_path / "out", eval_only=True)
    marker, pkl = tmp_path / "pwned", tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"x": Payload(str(marker))}}, protocol=2))
    with pytest.raises(CheckpointLoadError, match="--trust-pickle"):
        _run(tmp_path / "out", f"train.init_checkpoint={pkl}", eval_only=True)
    assert not marker.exists()


def test_resume_at_max_iter_and_evaluation_checks(tmp_path, tiny_synthetic_shapes, caplog, monkeypatch):
    out = tmp_path / "out"
    _run(out, "train.max_iter=2", "train.checkpointer.period=1")
    final = out / "model_final.pth"
    assert load_checkpoint_file(str(final))["iteration"] == 1
    final.write_bytes(b"")  # what a kill during a non-atomic write used to leave

    events = sorted(out.glob("events.out.tfevents.*"))
    assert len(events) == 1
    _run(out, "train.max_iter=2", "train.checkpointer.period=1", resume=True)
    # nothing left to train: no writer opened, so no second (empty) TensorBoard file
    assert sorted(out.glob("events.out.tfevents.*")) == events
    data = load_checkpoint_file(str(final))  # loads again: rewritten from the newest loadable checkpoint
    assert data["iteration"] == 1
    resumed_from = load_checkpoint_file(str(out / "model_0000001.pth"))
    assert all(torch.equal(data["model"][k], v) for k, v in resumed_from["model"].items())
    assert "model_final.pth" in caplog.text and "empty" in caplog.text

    # an init_checkpoint that matches no parameter of the model is refused
    other = tmp_path / "resnet_like.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(64, 3, 7, 7)}}, other)
    with pytest.raises(CheckpointLoadError, match="matches no parameter.*convert_checkpoint"):
        _run(out, f"train.init_checkpoint={other}", eval_only=True)

    # a test split with an unreadable image is refused at start-up, naming it
    from detectron2.data import DatasetCatalog

    victim = DatasetCatalog.get("synthetic_shapes_val")[1]["file_name"]
    Path(victim).write_bytes(b"not an image any more")
    # the built-in dataset would regenerate the damaged image (its json records each image's digest): skip that
    # check, as for any other dataset, whose images carry no digest
    from siamese_detr.data.datasets import builtin_shapes

    monkeypatch.setattr(builtin_shapes, "_first_damaged_image", lambda image_root, images: None)
    with pytest.raises(UnreadableImageError, match=f"1 of 3 images.*{Path(victim).name}"):
        _run(out, f"train.init_checkpoint={final}", eval_only=True)


def test_a_missing_test_set_stops_training_before_the_first_iteration(tmp_path, tiny_synthetic_shapes,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)  # coco_2017_val is registered under ./datasets, absent here
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="coco_2017_val.*instances_val2017.json.*train.eval_period=0"):
        _run(out, "train.eval_period=5", "dataloader.test.dataset.names=coco_2017_val")
    assert not list(out.glob("*.pth")) and not (out / "metrics.json").exists()
    # without evaluation the same test set is not needed
    _run(out, "train.eval_period=0", "train.max_iter=1", "dataloader.test.dataset.names=coco_2017_val")
    assert (out / "model_final.pth").exists()


def test_eval_only_refuses_a_partly_random_model_and_resume_past_max_iter(tmp_path, tiny_synthetic_shapes):
    out = tmp_path / "out"
    _run(out, "train.max_iter=2")
    final = load_checkpoint_file(str(out / "model_final.pth"))
    headless = tmp_path / "headless.pth"
    torch.save({"model": {k: v for k, v in final["model"].items() if not k.startswith("class_embed")}}, headless)
    with pytest.raises(CheckpointLoadError, match=r"--eval-only: 2 of the model's \d+ parameters are not in"):
        _run(tmp_path / "eval", f"train.init_checkpoint={headless}", eval_only=True)
    assert not (tmp_path / "eval" / "metrics.json").exists()
    # asked for on purpose (a random-initialisation baseline): evaluated
    _run(tmp_path / "eval", f"train.init_checkpoint={headless}", "train.eval_allow_random=True", eval_only=True)
    assert (tmp_path / "eval" / "metrics.json").exists()

    # the run finished iteration 1; resuming it with max_iter=1 has nothing it could do
    with pytest.raises(ValueError, match=r"finished iteration 1, beyond train.max_iter=1.*train.max_iter=2"):
        _run(out, "train.max_iter=1", resume=True)


@pytest.mark.parametrize("override, message", [
    ("train.max_iter=1e1", r"'train.max_iter' .* whole number, got 10.0 \(write 10, not 10.0\)"),
    ("train.max_iter=0", r"'train.max_iter' .* at least 1, got 0"),
    ("train.max_iter=-1", r"'train.max_iter' .* at least 1, got -1"),
    ("train.log_period=0", r"'train.log_period' .* at least 1"),
    ("train.checkpointer.period=0", r"'train.checkpointer.period' .* at least 1"),
    ("dataloader.train.total_batch_size=2.5", r"'dataloader.train.total_batch_size' .* whole number, got 2.5\."),
    ("model.num_queries=7.5", r"'model.num_queries' .* whole number"),
    ("train.eval_period=2.5", r"'train.eval_period' .* whole number"),
    ("optimizer.lr=-1", r"'optimizer.lr' \(the base learning rate\) must be a finite number above 0, got -1"),
    ("optimizer.lr=0", r"'optimizer.lr' .* above 0, got 0"),
    ("optimizer.weight_decay=-0.1", r"'optimizer.weight_decay' .* at least 0, got -0.1"),
    ("optimizer.weight_decay=nan", r"'optimizer.weight_decay' .* at least 0, got nan"),
])
def test_counts_are_checked_at_start_up(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        _run(tmp_path / "out", override)
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_eval_only_into_the_training_folder_keeps_its_config(tmp_path, tiny_synthetic_shapes):
    out = tmp_path / "out"
    _run(out, "train.max_iter=1")
    trained = (out / "config.yaml").read_text()
    _run(out, f"train.init_checkpoint={out / 'model_final.pth'}", "train.eval_allow_random=True",
         "model.transformer.num_encoder_layers=2", eval_only=True)
    assert (out / "config.yaml").read_text() == trained
    assert "num_encoder_layers: 2" in (out / "config_eval_only.yaml").read_text()
    # so --resume still compares against the trained model, and refuses a changed one
    from siamese_detr.engine.resume_checks import ResumeMismatchError

    with pytest.raises(ResumeMismatchError, match="num_encoder_layers"):
        _run(out, "train.max_iter=2", "model.transformer.num_encoder_layers=2", resume=True)


def test_a_test_set_of_other_classes_is_refused_before_training(tmp_path, tiny_synthetic_shapes):
    import json

    from detectron2.data import DatasetCatalog

    records = DatasetCatalog.get("synthetic_shapes_train")[:2]
    images = [{"id": i + 1, "file_name": Path(r["file_name"]).name, "height": r["height"], "width": r["width"]}
              for i, r in enumerate(records)]
    annotations = [{"id": i + 1, "image_id": i + 1, "category_id": i + 1, "bbox": [4, 4, 20, 20], "area": 400,
                    "iscrowd": 0} for i in range(2)]
    ann = tmp_path / "pets.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    own = f"dataloader.train.dataset.names=coco:{ann}:{Path(records[0]['file_name']).parent}"
    with pytest.raises(ValueError, match=r"\['cat', 'dog'\].*'synthetic_shapes_val'.*wrong class names"):
        _run(tmp_path / "out", own, "train.eval_period=1")
    assert not (tmp_path / "out" / "metrics.json").exists()
    _run(tmp_path / "out", own, "train.eval_period=0", "train.max_iter=1")  # no evaluation: nothing to compare
    # logged while the overrides are applied, before log.txt exists: held and written there once it does
    assert ("model.num_classes = 2: the categories of the dataset ['cat', 'dog'] (the config said 8)"
            in (tmp_path / "out" / "log.txt").read_text())


def test_starting_over_in_a_used_folder_is_warned_about(tmp_path, tiny_synthetic_shapes):
    out = tmp_path / "out"
    _run(out, "train.max_iter=1")
    assert "checkpoints of an earlier run" not in (out / "log.txt").read_text()
    _run(out, "train.max_iter=1")
    assert "checkpoints of an earlier run: starting over without --resume" in (out / "log.txt").read_text()


def test_a_resume_with_another_lr_uses_it(tmp_path, tiny_synthetic_shapes):
    import json

    out = tmp_path / "out"
    _run(out, "train.max_iter=2", "optimizer.lr=0.001", "train.log_period=1")
    _run(out, "train.max_iter=4", "optimizer.lr=0.002", "train.log_period=1", resume=True)
    lrs = {}
    for line in (out / "metrics.json").read_text().splitlines():
        record = json.loads(line)
        if "lr" in record:
            lrs[record["iteration"]] = record["lr"]
    # detr_demo's lr steps at 80% of the run: no drop before iteration 3 of 4
    assert lrs[1] == pytest.approx(0.001) and lrs[2] == pytest.approx(0.002)
    assert "lr 0.001 -> 0.002" in (out / "log.txt").read_text()


def test_an_output_dir_that_cannot_be_written_is_named(tmp_path):
    import os

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(UserOSError, match=f"train.output_dir={a_file} is a file"):
        _run(a_file)
    with pytest.raises(ValueError, match="'train.output_dir' must be a folder path, got 42"):
        _run(42)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserOSError, match=f"train.output_dir={locked}: cannot write there"):
            _run(locked)


def test_a_missing_proposal_store_stops_the_pretraining_at_start_up(tmp_path, tiny_synthetic_shapes):
    from siamese_detr.data.proposals import ProposalStoreError

    argv = ["--config-file", str(ROOT / "configs/demo/siamese_detr_pretrain_demo.py"), "train.max_iter=1",
            "train.eval_period=0", "dataloader.train.num_workers=0", f"train.output_dir={tmp_path / 'out'}"]
    with pytest.raises(ProposalStoreError, match=r"proposal_source.path\) does not exist; create it with\n    python "
                       r"tools/generate_proposals.py --dataset synthetic_shapes_train --method edgeboxes --output "):
        train_net.main(train_net.parse_args(argv))
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize("config, missing, section", [
    ("configs/siamese_detr/siamese_detr_r50_imagenet_60ep.py", "imagenet/train", "ImageNet (unlabeled pretraining)"),
    ("configs/siamese_detr/siamese_detr_r50_coco_60ep.py", "coco/annotations/instances_train2017.json", "COCO"),
])
def test_a_missing_training_set_is_named_before_its_proposal_store(tmp_path, monkeypatch, config, missing, section):
    """Neither the dataset nor its proposal store on disk: the error names the dataset's missing path and the
    README section (the store would be made from it), not the store."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    argv = ["--config-file", str(ROOT / config), "train.init_checkpoint=none.pth",
            f"train.output_dir={tmp_path / 'out'}"]
    # (the built-in COCO names were registered with the root of the process's start: any prefix)
    expected = rf"expects '[^']*{re.escape(missing)}', which does not exist .*'{re.escape(section)}'"
    with pytest.raises(FileNotFoundError, match=expected):
        train_net.main(train_net.parse_args(argv))


def test_resuming_a_finished_run_does_not_evaluate_it_again(tmp_path, tiny_synthetic_shapes):
    out = tmp_path / "out"
    _run(out, "train.max_iter=1", "train.eval_period=1")
    before = (out / "metrics.json").read_text()
    assert "bbox/AP" in before
    _run(out, "train.max_iter=1", "train.eval_period=1", resume=True)
    assert (out / "metrics.json").read_text() == before
    assert "nothing left to train" in (out / "log.txt").read_text()


def test_ordinary_mistakes_name_the_fix(tmp_path, tiny_synthetic_shapes):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="'train.device' must be a torch device .* got 'gpu'"):
        _run(out, "train.device=gpu")
    with pytest.raises(ValueError, match="Flags .* go before the key=value overrides"):
        _run(out, "--eval-only")
    with pytest.raises(CheckpointLoadError, match=f"{tmp_path} is a folder: .*model_final.pth"):
        _run(out, f"train.init_checkpoint={tmp_path}", eval_only=True)
    with pytest.raises(KeyError, match="Did you mean 'synthetic_shapes_train'"):
        _run(out, "dataloader.train.dataset.names=synthetic_shapes_trian")


def test_a_resume_that_finds_no_checkpoint_says_so(tmp_path, tiny_synthetic_shapes):
    """--resume into an empty (or mistyped) train.output_dir trains from the start: said, not only fvcore's
    "No checkpoint found" INFO line."""
    out = tmp_path / "out"
    _run(out, "train.max_iter=1", resume=True)
    assert (f"--resume: no checkpoint in {out} (no last_checkpoint file): starting at iteration 0 from a random "
            "initialisation") in (out / "log.txt").read_text()
    _run(out, "train.max_iter=2", resume=True)  # now there is one: no such warning
    assert (out / "log.txt").read_text().count("--resume: no checkpoint") == 1


def test_the_cpu_fallback_warning_is_in_log_txt(tmp_path, tiny_synthetic_shapes):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: no fallback")
    out = tmp_path / "out"
    _run(out, "train.device=cuda", "train.max_iter=1")
    assert "train.device=cuda but CUDA is not available: using cpu" in (out / "log.txt").read_text()


def test_a_missing_store_of_an_image_folder_is_named_with_that_folder_in_its_command(tmp_path):
    """The ImageNet configs read a folder (no dataset name in the store source): the command to make the
    store gives that folder, not a placeholder."""
    from detectron2.config import LazyConfig

    from siamese_detr.data.proposals import ProposalStoreError
    from siamese_detr.engine.pretrain_checks import check_proposal_store

    cfg = LazyConfig.load(str(ROOT / "configs/siamese_detr/siamese_detr_r50_imagenet_60ep.py"))
    cfg.dataloader.train.mapper.proposal_source.path = str(tmp_path / "none.edgeboxes.proposals")
    root = cfg.dataloader.train.dataset.names.image_root
    with pytest.raises(ProposalStoreError) as err:
        check_proposal_store(cfg)
    assert (f"python tools/generate_proposals.py --image-dir {root} --method edgeboxes --output "
            f"{tmp_path / 'none.edgeboxes.proposals'}") in str(err.value)


def test_a_store_checked_against_other_images_than_the_training_set_says_which_key_to_set(
        tmp_path, tiny_edgeboxes_store):
    """The store of the training images, checked against another dataset (``proposal_source.dataset`` left
    at another value than ``dataloader.train.dataset.names``): the error names both keys and the fix; a
    file given as the store is named as a file."""
    from detectron2.config import LazyConfig

    from siamese_detr.data.proposals import ProposalStoreError
    from siamese_detr.engine.pretrain_checks import check_proposal_store

    cfg = LazyConfig.load(str(ROOT / "configs/demo/siamese_detr_pretrain_demo.py"))
    cfg.dataloader.train.mapper.proposal_source.path = str(tiny_edgeboxes_store)
    assert cfg.dataloader.train.dataset.names == "synthetic_shapes_train"
    check_proposal_store(cfg)  # the store of the training images: fine
    cfg.dataloader.train.mapper.proposal_source.dataset = "synthetic_shapes_val"
    with pytest.raises(ProposalStoreError, match=r"synthetic_shapes_val.*\(The store is checked against "
                       r"dataloader.train.mapper.proposal_source.dataset=synthetic_shapes_val, not the training "
                       r"images dataloader.train.dataset.names=synthetic_shapes_train: for a store of the training "
                       r"images, set dataloader.train.mapper.proposal_source.dataset=synthetic_shapes_train.\)"):
        check_proposal_store(cfg)
    cfg.dataloader.train.mapper.proposal_source.path = str(ROOT / "README.md")
    with pytest.raises(ProposalStoreError, match=r"README.md' \(dataloader.train.mapper.proposal_source.path\) is "
                                                 r"a file: a store is the folder that tools/generate_proposals.py"):
        check_proposal_store(cfg)


def test_training_images_the_store_lacks_are_refused_at_start_up_naming_both_keys(tmp_path, tiny_edgeboxes_store):
    """The training images changed (e.g. to one's own folder) and the proposal source left at the demo's store
    and dataset: the store passed its check against ``proposal_source.dataset`` and the first data-loader
    worker failed after the start, naming neither key. Now the start-up check refuses, naming both keys and the
    command that makes a store of the training images."""
    import cv2
    import numpy as np
    from detectron2.config import LazyConfig

    from siamese_detr.data.proposals import ProposalStoreError
    from siamese_detr.engine.pretrain_checks import check_proposal_store

    images = tmp_path / "own_images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((40, 50, 3), 128, np.uint8))
    cfg = LazyConfig.load(str(ROOT / "configs/demo/siamese_detr_pretrain_demo.py"))
    source = cfg.dataloader.train.mapper.proposal_source
    source.path = str(tiny_edgeboxes_store)
    assert source.dataset == "synthetic_shapes_train"
    check_proposal_store(cfg)  # training reads the store's dataset: fine
    cfg.dataloader.train.dataset.names = f"folder:{images}"
    with pytest.raises(ProposalStoreError) as err:
        check_proposal_store(cfg)
    message = str(err.value)
    assert (f"is the store of dataloader.train.mapper.proposal_source.dataset=synthetic_shapes_train, but training "
            f"reads dataloader.train.dataset.names=folder:{images}, and 1 of its images are not in the store "
            "(first: ['a.png'])") in message
    assert f"set dataloader.train.mapper.proposal_source.dataset=folder:{images}" in message
    assert f"python tools/generate_proposals.py --dataset folder:{images} --method edgeboxes --output NEW_STORE" \
        in message
    source.path = str(tmp_path / "none.edgeboxes.proposals")  # no store there yet: the command, and the key
    with pytest.raises(ProposalStoreError) as err:
        check_proposal_store(cfg)
    assert (f"--dataset folder:{images} --method edgeboxes --output {source.path}\n(EdgeBoxes" in str(err.value)
            and str(err.value).endswith(f"\nand set dataloader.train.mapper.proposal_source.dataset=folder:{images} "
                                        "(it is synthetic_shapes_train: the store is checked against it)"))


def test_a_checkpoint_of_another_query_count_is_refused_unless_allowed(tmp_path, tiny_synthetic_shapes):
    """detectron2 skips tensors of another shape with a warning: finetuning from a checkpoint with other
    num_queries started every object query from scratch. The class head may differ (pretraining -> K)."""
    from siamese_detr.engine.checkpointing import CheckpointLoadError

    first = tmp_path / "first"
    _run(first, "train.max_iter=1", "train.eval_period=0")
    ckpt = first / "model_final.pth"
    q = torch.load(ckpt, weights_only=True)["model"]["query_embed.weight"].shape[0]
    with pytest.raises(CheckpointLoadError, match=rf"query_embed.weight: \[{q}, .*\] in the checkpoint, "
                                                  rf"\[{q + 3}, .*model.num_queries={q}\)"):
        _run(tmp_path / "more_queries", "train.max_iter=1", "train.eval_period=0", f"train.init_checkpoint={ckpt}",
             f"model.num_queries={q + 3}")
    # refused before training: only the config and the log, no empty metrics.json or TensorBoard file
    assert sorted(p.name for p in (tmp_path / "more_queries").iterdir()) == ["config.yaml", "log.txt"]
    # another number of classes: only the class head differs, which a handoff always has
    _run(tmp_path / "classes", "train.max_iter=1", "train.eval_period=0", f"train.init_checkpoint={ckpt}",
         "model.num_classes=10", "model.criterion.num_classes=10")
    # on purpose
    _run(tmp_path / "allowed", "train.max_iter=1", "train.eval_period=0", f"train.init_checkpoint={ckpt}",
         f"model.num_queries={q + 3}", "train.allow_shape_mismatch=True")
    assert (tmp_path / "allowed" / "model_final.pth").exists()


def test_training_from_a_pickled_init_checkpoint_needs_trust_too(tmp_path, tiny_synthetic_shapes):
    """Training reads ``train.init_checkpoint`` as ``--eval-only`` does: a ``.pkl`` is unpickled only with
    ``--trust-pickle``; its payload never runs (the security rule: no pickle the user did not trust)."""
    marker, pkl = tmp_path / "pwned", tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"x": Payload(str(marker))}}, protocol=2))
    with pytest.raises(CheckpointLoadError, match="--trust-pickle"):
        _run(tmp_path / "out", f"train.init_checkpoint={pkl}", "train.max_iter=1")
    assert not marker.exists()
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_a_resume_without_a_checkpoint_still_refuses_frozen_random_stages(tmp_path, tiny_synthetic_shapes):
    """``--resume`` in a folder with no ``last_checkpoint`` starts from ``train.init_checkpoint``: frozen
    backbone stages (``freeze_at=2``) with no checkpoint would stay random, so it is refused as without
    ``--resume``."""
    from siamese_detr.engine.pretrain_checks import RandomBackboneError

    for resume in (False, True):
        with pytest.raises(RandomBackboneError, match="freeze_at"):
            _run(tmp_path / "out", "model.backbone.freeze_at=2", "train.max_iter=1", resume=resume)
    assert not (tmp_path / "out" / "model_final.pth").exists()
