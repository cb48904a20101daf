"""Command-line mistakes of tools/lazyconfig_train_net.py named at start-up, in one line, with the fix: malformed
overrides (no key, ``==``, ``++``, spaces around ``=``), a section replaced by a scalar, a leading ``~``, lr
milestones and counts fvcore / numpy / torch refused naming no key, a config file that does not parse or is no
config, machine counts; and a user error raised inside the training loop (no traceback on the terminal, no
evaluation after it)."""
import re

import pytest
import yaml
from detectron2.config import LazyConfig
from detectron2.engine import TrainerBase
from omegaconf import OmegaConf

from siamese_detr.engine import apply_checked_overrides, logging_utils
from siamese_detr.engine.checkpointing import CheckpointLoadError, check_checkpoint_path, load_checkpoint_file
from siamese_detr.engine.config_checks import OverrideTypeError
from siamese_detr.engine.eval_outputs import eval_hook
from siamese_detr.engine.schedule_checks import check_counts, check_milestones
from siamese_detr.engine.user_error_exit import user_errors_exit
from siamese_detr.utils.user_errors import TRACEBACK_ENV, UserError, UserValueError

from train_net_tool import ROOT, TINY, train_net

DEMO = str(ROOT / "configs/demo/detr_demo.py")
PROG = "lazyconfig_train_net.py"


@pytest.fixture(scope="module")
def demo_cfg():
    """A fresh copy of the demo config per call (loading it once: the overrides change it in place)."""
    cfg = LazyConfig.load(DEMO)
    return lambda: cfg.copy()


@pytest.fixture
def no_run_log(monkeypatch):
    """As before any run of this process set up its log.txt."""
    monkeypatch.setattr(logging_utils, "_active_log_file", None)
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)


def _args(tmp_path, *extra):
    return ["--config-file", DEMO, *TINY, f"train.output_dir={tmp_path / 'out'}", *extra]


def _tool_error(capsys, argv) -> str:
    """The one line the tool prints for ``argv``, checked to exit with status 2 and no traceback."""
    with pytest.raises(SystemExit) as stop:
        train_net.run(argv)
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and "Traceback" not in out + err, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"{PROG}: error: "), err
    return lines[-1][len(f"{PROG}: error: "):]


# ------------------------------------------------------------------------------ override form (F1, F7, F11)
def test_an_override_without_a_key_is_named_without_suggesting_plus(tmp_path, capsys, no_run_log):
    """'=5' suggested writing '+=5', which then trained with a key named ''."""
    message = _tool_error(capsys, _args(tmp_path, "=5"))
    assert message == "Override '=5' has no key: write KEY=VALUE, e.g. train.max_iter=5."
    with pytest.raises(UserValueError, match=r"^Override '\+=5' has no key: write KEY=VALUE"):
        apply_checked_overrides(OmegaConf.create({"a": 1}), ["+=5"])
    for override in ("train..max_iter=5", "+train.=5", ".max_iter=5"):
        with pytest.raises(UserValueError, match=rf"^Override '{re.escape(override)}': its key .* has an empty part"):
            apply_checked_overrides(OmegaConf.create({"train": {"max_iter": 1}}), [override])
    assert not (tmp_path / "out").exists()


def test_plus_on_an_existing_key_is_type_checked_and_double_plus_is_refused(demo_cfg):
    with pytest.raises(OverrideTypeError, match=r"^Config key 'optimizer.lr' expects a number .* override "
                                                r"'\+optimizer.lr=abc' gives 'abc'"):
        apply_checked_overrides(demo_cfg(), ["+optimizer.lr=abc"])
    assert apply_checked_overrides(demo_cfg(), ["+optimizer.lr=0.001"]).optimizer.lr == 0.001
    with pytest.raises(UserValueError, match=r"^Override '\+\+train.max_iter=2': '\+\+' .* is not understood "
                                             r"here: write train.max_iter=2 "):
        apply_checked_overrides(demo_cfg(), ["++train.max_iter=2"])
    with pytest.raises(UserValueError, match=r"write \+train.new_key=2 "):
        apply_checked_overrides(demo_cfg(), ["++train.new_key=2"])


def test_a_double_equals_sign_suggests_one():
    with pytest.raises(UserValueError) as err:
        apply_checked_overrides(OmegaConf.create({"train": {"max_iter": 1}}), ["train.max_iter==5"])
    assert str(err.value).startswith("Override 'train.max_iter==5' has '==': write train.max_iter=5 (one '=';")


@pytest.mark.parametrize("words", [["train.max_iter=", "5"], ["train.max_iter", "=5"], ["train.max_iter", "=", "5"]])
def test_spaces_around_the_equals_sign_are_named(words):
    """The shell splits 'train.max_iter= 5' in two: the error named '5' alone, without a word about spaces."""
    with pytest.raises(UserValueError) as err:
        apply_checked_overrides(OmegaConf.create({"train": {"max_iter": 1, "seed": 1}}), ["train.seed=0", *words])
    message = str(err.value)
    assert "write no spaces around '=', as train.max_iter=5 " in message, message
    assert message.startswith("Override '") and "is not of the form key=value" in message


# --------------------------------------------------------------------------------- sections replaced (F8)
@pytest.mark.parametrize("override, key, by", [("model=3", "model", "3"), ("optimizer=foo", "optimizer", "'foo'"),
                                               ("lr_multiplier=null", "lr_multiplier", "null"),
                                               ("+dataloader.train=null", "dataloader.train", "null")])
def test_a_built_section_replaced_by_a_value_is_refused_naming_it(demo_cfg, override, key, by):
    with pytest.raises(OverrideTypeError) as err:
        apply_checked_overrides(demo_cfg(), [override])
    message = str(err.value)
    assert message.startswith(f"Config key '{key}' holds the config of ") and f"replace it by {by}." in message
    assert f"Set its fields instead ({key}." in message


def test_switching_the_evaluator_off_is_still_accepted(demo_cfg):
    assert apply_checked_overrides(demo_cfg(), ["dataloader.evaluator=null"]).dataloader.evaluator is None


# ---------------------------------------------------------------------------------------- leading ~ (F4)
def test_a_leading_tilde_is_expanded_and_recorded_in_config_yaml(tmp_path, monkeypatch):
    """The quoted '~/run' made a folder named '~' in the working folder; '~/x.pth' did not exist."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    argv = ["--config-file", DEMO, *TINY, "train.output_dir='~/run'", "train.init_checkpoint='~/x.pth'"]
    cfg, _ = train_net.checked_config(train_net.parse_args(argv), 1)
    assert cfg.train.output_dir == str(home / "run") and cfg.train.init_checkpoint == str(home / "x.pth")
    train_net.setup(train_net.parse_args(argv))
    recorded = yaml.safe_load((home / "run" / "config.yaml").read_text())["train"]
    assert recorded["output_dir"] == str(home / "run")
    assert list(work.iterdir()) == []  # no folder named '~'


def test_the_hint_for_an_unquoted_tilde_says_the_quoted_form_is_expanded(monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")
    cfg = OmegaConf.create({"train": {"output_dir": "out"}, "path": "x"})
    with pytest.raises(UserError) as err:
        apply_checked_overrides(cfg, ["train.output_dir=~/run"])
    assert ("an unquoted ~ is not part of the override grammar" in str(err.value)
            and "\"train.output_dir='~/run'\" (in the shell, as written here, with the double quotes; quoted, "
                "its leading ~ is expanded to your home folder: /home/me/run)." in str(err.value))
    with pytest.raises(UserError, match="a ~ in path is not expanded: write the full path, /home/me/x"):
        apply_checked_overrides(cfg, ["path=~/x"])


# ------------------------------------------------------------------------------- milestones, counts (F5, F6)
@pytest.mark.parametrize("override, message", [
    ("lr_multiplier.milestones=[400]", r"^Config key 'lr_multiplier.milestones' must be strictly increasing numbers "
                                       r"between 1 and 299 \(lr_multiplier.num_updates=300: .*got \[400\]\.$"),
    ("lr_multiplier.milestones=[200,100]", r"'lr_multiplier.milestones' must be strictly increasing .*"
                                           r"got \[200, 100\]"),
    ("lr_multiplier.milestones=[0]", r"'lr_multiplier.milestones' must be strictly increasing .*got \[0\]"),
    ("lr_multiplier.milestones=[100,200]", r"^Config key 'lr_multiplier.values' must have one entry more than the "
                                           r"drops .*got 2 values for 2 drops: .*lr_multiplier.values=\[1,0.1,0.01\]"),
    ("train.checkpointer.max_to_keep=-1", r"'train.checkpointer.max_to_keep' \(periodic checkpoints kept\) must be "
                                          r"at least 1, got -1"),
    ("dataloader.train.num_workers=-1", r"'dataloader.train.num_workers' .* must be at least 0, got -1"),
    ("train.seed=1.5", r"'train.seed' \(the random seed; < 0: a random one per run\) must be a whole number"),
    ("train.seed=4294967296", r"'train.seed' must be below 4294967296 .* or negative for a random seed"),
    ("model.num_classes=0", r"'model.num_classes' \(object classes\) must be at least 1, got 0"),
])
def test_schedule_and_counts_are_checked_at_start_up(tmp_path, override, message):
    with pytest.raises(UserValueError, match=message):
        train_net.checked_config(train_net.parse_args(_args(tmp_path, override)), 1)


def test_what_the_schedule_and_count_checks_accept(tmp_path):
    args = train_net.parse_args(_args(tmp_path, "lr_multiplier.milestones=[100,200]", "lr_multiplier.values=[1,.1,.01]",
                                      "train.seed=-1", "dataloader.train.num_workers=0",
                                      "train.checkpointer.max_to_keep=null"))
    cfg, _ = train_net.checked_config(args, 1)
    assert list(cfg.lr_multiplier.milestones) == [100, 200]
    # a warm-up wraps the step schedule: its milestones are checked there; without num_updates, the last
    # milestone ends the schedule (fvcore's rule)
    warm = OmegaConf.create({"lr_multiplier": {"scheduler": {"values": [1, 0.1], "milestones": [5, 3]}}})
    with pytest.raises(UserValueError, match=r"'lr_multiplier.scheduler.milestones' .* between 1 and 2 \(the last "
                                             r"milestone, 3, ends the schedule"):
        check_milestones(warm)
    warm.lr_multiplier.scheduler.milestones = [2, 3]
    check_milestones(warm)
    # each of N processes seeds with train.seed + its rank
    with pytest.raises(UserValueError, match=r"below 4294967295 .* each of the 2 processes"):
        check_counts(OmegaConf.create({"train": {"seed": 2**32 - 1}}), world_size=2)
    check_counts(OmegaConf.create({"train": {"seed": 2**32 - 2}}), world_size=2)


# ------------------------------------------------------------------------------- the config file (F9, F11)
def test_a_config_with_a_syntax_error_is_one_line_naming_file_and_line(tmp_path, capsys, no_run_log):
    bad = tmp_path / "bad.py"
    bad.write_text("from detectron2.config import LazyCall as L\nx = = 3\n")
    message = _tool_error(capsys, ["--config-file", str(bad)])
    assert message == f"{bad}:2: invalid syntax: x = = 3"
    # in a config it imports: that file is named
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "part.py").write_text("y = (\n")
    top = tmp_path / "top.py"
    top.write_text("from .common.part import y\n")
    message = _tool_error(capsys, ["--config-file", str(top)])
    assert message == f"{tmp_path / 'common' / 'part.py'}:1: '(' was never closed: y = ("


@pytest.mark.parametrize("argv, message", [
    (["--config-file", "configs/demo/detr_dmo.py"],
     "error: --config-file 'configs/demo/detr_dmo.py' does not exist. Did you mean configs/demo/detr_demo.py"),
    (["--config-file", "README.md"],
     "error: --config-file 'README.md' is not a LazyConfig file: give a python config (.py, e.g. "
     "configs/demo/detr_demo.py) or the config.yaml of a run"),
    (["--config-file", DEMO, "--num-machines", "0"],
     "error: --num-machines 0: the number of machines must be at least 1"),
    (["--config-file", DEMO, "--num-machines", "2", "--machine-rank", "5"],
     "error: --machine-rank 5: the rank of this machine must be from 0 to 1 (--num-machines 2)"),
    (["--config-file", DEMO, "--machine-rank", "-1"],
     "error: --machine-rank -1: the rank of this machine must be from 0 to 0 (--num-machines 1)"),
])
def test_config_file_and_machine_mistakes_are_usage_errors(capsys, monkeypatch, argv, message):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as stop:
        train_net.parse_args(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err, err


# ------------------------------------------------------------------- datasets and checkpoints named (F11)
def test_an_unknown_dataset_names_the_projects_datasets_and_the_path_forms():
    from siamese_detr.data.dataset_checks import check_datasets_on_disk

    with pytest.raises(KeyError) as err:
        check_datasets_on_disk("no_such_set")
    message = str(err.value)
    assert "synthetic_shapes_train" in message and "coco_2017_train" in message and "ade20k" not in message
    assert "coco:ANNOTATIONS.json[:IMAGE_ROOT]" in message and "folder:IMAGE_DIR" in message


def test_a_last_checkpoint_pointer_names_the_checkpoint_it_points_to(tmp_path):
    pointer = tmp_path / "last_checkpoint"
    pointer.write_text("model_0000099.pth")
    expected = (f"{pointer} is detectron2's last_checkpoint file, which names the latest checkpoint of its run, not "
                f"a checkpoint: give the file it names, train.init_checkpoint={tmp_path / 'model_0000099.pth'}")
    with pytest.raises(CheckpointLoadError) as err:
        check_checkpoint_path(str(pointer))
    assert str(err.value) == f"{expected} (missing now), or continue that run with --resume train.output_dir={tmp_path}"
    (tmp_path / "model_0000099.pth").write_bytes(b"PK\x03\x04")
    with pytest.raises(CheckpointLoadError, match=f"^{expected}, or continue"):
        load_checkpoint_file(str(pointer))


# ------------------------------------------------------------------ a user error inside the loop (F2, F3)
class _Trainer(TrainerBase):
    """detectron2's training loop whose step raises ``error`` at iteration ``fail_at``."""

    def __init__(self, error, fail_at):
        super().__init__()
        self.error, self.fail_at = error, fail_at

    def run_step(self):
        if self.iter == self.fail_at:
            raise self.error


def test_a_user_error_in_the_loop_leaves_its_traceback_in_log_txt_only(tmp_path, capsys, no_run_log):
    """detectron2's loop logs 'Exception during training:' with the traceback before re-raising: the terminal
    got it before the one-line error."""
    out = tmp_path / "out"
    logging_utils.setup_plain_file_logs(str(out), 0)
    with pytest.raises(SystemExit) as stop:
        with user_errors_exit(PROG):
            _Trainer(UserValueError("set model.num_classes"), fail_at=0).train(0, 2)
    printed, err = capsys.readouterr()
    assert stop.value.code == 2 and "Traceback" not in printed + err and "Exception during" not in printed + err
    assert err == f"{PROG}: error: set model.num_classes (traceback in {out / 'log.txt'})\n"
    log = (out / "log.txt").read_text()
    assert "Exception during training:" in log and "UserValueError: set model.num_classes" in log
    # any other exception (a bug) keeps detectron2's record on the terminal
    with pytest.raises(RuntimeError):
        _Trainer(RuntimeError("a bug"), fail_at=0).train(0, 1)
    assert "Exception during training:" in capsys.readouterr().out


@pytest.mark.parametrize("fail_at", [0, 1])
def test_no_evaluation_after_a_training_that_raised(fail_at):
    """detectron2's EvalHook evaluated after a failure in the last iteration (iter + 1 >= max_iter), and the
    evaluation's exception (an IndexError of the broken model) replaced the user error."""
    evaluated = []
    trainer = _Trainer(UserValueError("the step's error"), fail_at=fail_at)
    trainer.register_hooks([eval_hook(5, lambda: evaluated.append(trainer.iter) or {}, trainer)])
    with pytest.raises(UserValueError, match="the step's error"):
        trainer.train(0, 2)
    assert evaluated == []
    finished = _Trainer(None, fail_at=-1)
    finished.register_hooks([eval_hook(5, lambda: evaluated.append(finished.iter) or {}, finished)])
    finished.train(0, 2)
    assert evaluated == [2]  # a finished run is evaluated after its last iteration


def test_eval_only_checks_the_counts_an_evaluation_reads(tmp_path, capsys, no_run_log, demo_cfg):
    """--eval-only checked no count: dataloader.test.num_workers=-1 reached torch's DataLoader. Now the keys an
    evaluation reads are checked, named, before anything runs; the training-only ones (train.max_iter=0) are not."""
    argv = ["--eval-only"] + _args(tmp_path, "dataloader.test.num_workers=-1")
    message = _tool_error(capsys, argv)
    assert message.startswith("Config key 'dataloader.test.num_workers' (")
    assert message.endswith("must be at least 0, got -1.")
    assert not (tmp_path / "out").exists()
    cfg = demo_cfg()
    cfg.train.max_iter, cfg.train.log_period, cfg.dataloader.train.num_workers = 0, 0, -1
    check_counts(cfg, eval_only=True)  # nothing an evaluation reads
    with pytest.raises(UserValueError, match=r"^Config key 'train.max_iter' \(iterations to train\) must be at least"):
        check_counts(cfg)
    for key, value in (("model.num_queries", 0), ("model.num_classes", 0), ("train.seed", 1.5)):
        bad = demo_cfg()
        node, leaf = key.rsplit(".", 1)
        setattr(bad.model if node == "model" else bad.train, leaf, value)
        with pytest.raises(UserValueError, match=rf"^Config key '{re.escape(key)}' "):
            check_counts(bad, eval_only=True)


def test_help_is_worded_for_this_tool(capsys):
    """detectron2's help of the shared options spoke of Yacs configs ("space-separated PATH.KEY VALUE pairs",
    which this tool refuses) and showed --config-file as optional."""
    with pytest.raises(SystemExit) as stop:
        train_net.parse_args(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Yacs" not in text and "PATH.KEY VALUE" not in text
    assert "the LazyConfig to run (required;" in text
    assert "config overrides at the end of the command, key=value" in text
