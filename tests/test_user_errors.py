"""User errors (a wrong key, value, file or dataset) end the training tool with one line and exit status 2;
every other error keeps its traceback (siamese_detr.utils.user_errors, siamese_detr.engine.user_error_exit)."""
import logging
import tempfile

import pytest
import torch
import torch.multiprocessing as mp
from detectron2.config import LazyConfig

from siamese_detr.data.dataset_checks import check_datasets_on_disk
from siamese_detr.engine import apply_checked_overrides, launch
from siamese_detr.engine import logging_utils
from siamese_detr.engine.logging_utils import PROJECT_LOGGER
from siamese_detr.engine.user_error_exit import user_errors_exit
from siamese_detr.utils.user_errors import (TRACEBACK_ENV, UserError, UserKeyError, UserOSError, UserValueError,
                                            user_message)

from train_net_tool import ROOT, TINY, train_net

PROG = "lazyconfig_train_net.py"


@pytest.fixture
def no_run_log(monkeypatch):
    """As before any run of this process set up its log.txt."""
    monkeypatch.setattr(logging_utils, "_active_log_file", None)
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)


def test_user_errors_are_also_the_builtin_errors_and_read_unquoted():
    key = UserKeyError("Config key 'train.max_itr' does not exist")
    assert isinstance(key, KeyError) and isinstance(key, UserError)
    assert str(key) == user_message(key) == "Config key 'train.max_itr' does not exist"
    assert str(KeyError("x")) == "'x'" and user_message(KeyError("x")) == "x"  # what the helper undoes
    assert isinstance(UserValueError("v"), ValueError) and isinstance(UserOSError("o"), OSError)
    assert user_message(UserValueError("bad value")) == "bad value"


def test_a_user_error_is_one_line_on_stderr_and_exit_status_2(capsys, no_run_log):
    with pytest.raises(SystemExit) as stop:
        with user_errors_exit("tool.py"):
            raise UserKeyError("Dataset 'nope' is not registered.")
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "tool.py: error: Dataset 'nope' is not registered.\n"


def test_other_errors_pass_with_their_traceback(no_run_log):
    with pytest.raises(ValueError, match="a bug"):
        with user_errors_exit("tool.py"):
            raise ValueError("a bug")
    with user_errors_exit("tool.py"):  # nothing raised: nothing happens
        pass


@pytest.mark.parametrize("value, shown", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_siamese_detr_traceback_keeps_the_traceback(monkeypatch, capsys, value, shown):
    monkeypatch.setattr(logging_utils, "_active_log_file", None)
    monkeypatch.setenv(TRACEBACK_ENV, value)
    raised = SystemExit if not shown else UserValueError
    with pytest.raises(raised):
        with user_errors_exit("tool.py"):
            raise UserValueError("wrong")
    assert ("error: wrong" in capsys.readouterr().err) is not shown


def test_the_traceback_goes_to_this_runs_log_only(tmp_path, monkeypatch, capsys, no_run_log):
    logger = logging.getLogger(PROJECT_LOGGER)
    old_run, this_run = tmp_path / "old" / "log.txt", tmp_path / "new" / "log.txt"
    handlers = []
    for path in (old_run, this_run):  # an earlier run of this process left its handler on the logger
        path.parent.mkdir()
        handlers.append(logging.StreamHandler(open(path, "a")))
    monkeypatch.setattr(logger, "handlers", logger.handlers + handlers)
    monkeypatch.setattr(logging_utils, "_active_log_file", str(this_run))
    try:
        with pytest.raises(SystemExit):
            with user_errors_exit("tool.py"):
                raise UserValueError("Config key 'x' is wrong.")
    finally:
        for handler in handlers:
            handler.stream.close()
    assert capsys.readouterr().err == f"tool.py: error: Config key 'x' is wrong. (traceback in {this_run})\n"
    logged = this_run.read_text()
    assert "tool.py: error: Config key 'x' is wrong." in logged and "Traceback (most recent call last)" in logged
    assert 'raise UserValueError("Config key \'x\' is wrong.")' in logged
    assert old_run.read_text() == ""


def test_setting_up_the_logs_names_the_active_log_file(tmp_path, monkeypatch):
    monkeypatch.setattr(logging_utils, "_active_log_file", None)
    calls = []
    monkeypatch.setattr(logging_utils, "setup_logger", lambda *a, **k: calls.append((a, k)))
    assert logging_utils.active_log_file() is None
    logging_utils.setup_plain_file_logs(str(tmp_path / "run"), 0)
    assert logging_utils.active_log_file() == str(tmp_path / "run" / "log.txt")
    logging_utils.setup_plain_file_logs(str(tmp_path / "run"), 3)  # detectron2's name for rank 3
    assert logging_utils.active_log_file() == str(tmp_path / "run" / "log.txt.rank3")
    logging_utils.setup_plain_file_logs(str(tmp_path / "my.log"), 0)  # a file name is used as it is
    assert logging_utils.active_log_file() == str(tmp_path / "my.log")
    assert len(calls) == 9


def _cfg():
    return LazyConfig.load(str(ROOT / "configs/demo/detr_demo.py"))


@pytest.mark.parametrize("check", [
    lambda: apply_checked_overrides(_cfg(), ["train.max_itr=3"]),  # unknown key
    lambda: apply_checked_overrides(_cfg(), ["train.max_iter"]),  # not key=value
    lambda: apply_checked_overrides(_cfg(), ["train.max_iter=[1"]),  # the grammar cannot read it
    lambda: apply_checked_overrides(_cfg(), ["model.num_classes=abc"]),  # another kind of value
    lambda: check_datasets_on_disk(["no_such_dataset_xyz"]),  # not registered
    lambda: check_datasets_on_disk(["coco:/no/such/ann.json:/no/such/images"]),  # files that do not exist
    lambda: check_datasets_on_disk(["coco_2017_val"]),  # a builtin dataset not downloaded
], ids=["unknown-key", "no-equals", "syntax", "type", "unregistered", "missing-files", "not-downloaded"])
def test_the_start_up_checks_raise_user_errors(check, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))  # holds no dataset
    with pytest.raises(UserError):
        check()


def _tool(tmp_path, *extra):
    return ["--config-file", str(ROOT / "configs/demo/detr_demo.py"), *TINY,
            f"train.output_dir={tmp_path / 'out'}", *extra]


def test_the_training_tool_prints_an_override_mistake_as_one_line(tmp_path, capsys, no_run_log):
    with pytest.raises(SystemExit) as stop:
        train_net.run(_tool(tmp_path, "train.max_itr=3"))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: Config key 'train.max_itr' (from override 'train.max_itr=3') does not "
                          "exist in the config.") and err.count("\n") == 1 and "Traceback" not in err


def test_the_training_tool_logs_the_traceback_once_its_log_exists(tmp_path, capsys, no_run_log):
    with pytest.raises(SystemExit) as stop:
        train_net.run(_tool(tmp_path, "train.device=qpu"))
    assert stop.value.code == 2
    log = tmp_path / "out" / "log.txt"
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"{PROG}: error: Config key 'train.device' must be a torch device such as cpu, cuda or "
                    f"cuda:1, got 'qpu'. (traceback in {log})")
    assert "Traceback (most recent call last)" in log.read_text() and "_resolve_device" in log.read_text()


def _rank_one_errs(kind):
    from detectron2.utils import comm

    if comm.get_rank() == 1:
        raise (UserValueError if kind == "user" else ValueError)(f"rank one's {kind} error")
    comm.synchronize()  # rank 0 waits for rank 1, which never comes


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU workers over gloo")
def test_a_user_error_in_one_of_several_processes_is_one_line_there(capfd, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where torch's spawn puts its error files
    with pytest.raises(UserError, match=r"^process 1 of the 2 stopped on the error printed above \(exit status 2\)$"):
        launch(_rank_one_errs, 2, dist_url="auto", args=("user",))
    err = capfd.readouterr().err
    assert "error: rank one's user error\n" in err
    line = next(line for line in err.splitlines() if "rank one's user error" in line)
    assert line.startswith("[rank 1] ") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU workers over gloo")
def test_another_error_in_a_process_keeps_torchs_report_with_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where torch's spawn puts its error files
    with pytest.raises(mp.ProcessRaisedException, match=r"(?s)Traceback.*ValueError: rank one's other error"):
        launch(_rank_one_errs, 2, dist_url="auto", args=("other",))
    # the traceback files the failed workers wrote (rank one's, and rank zero's from the broken barrier) are
    # removed once read, as is the rendezvous folder
    assert list(tmp_path.iterdir()) == []


def test_a_missing_init_checkpoint_is_refused_before_the_model_is_built(
        tmp_path, monkeypatch, tiny_synthetic_shapes, no_run_log):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(train_net, "instantiate", no_model)
    missing = tmp_path / "nope.pth"
    for eval_only in ([], ["--eval-only"]):
        with pytest.raises(UserError, match=f"^checkpoint {missing} does not exist$"):
            train_net.main(train_net.parse_args(eval_only + _tool(tmp_path, f"train.init_checkpoint={missing}")))
    with pytest.raises(UserError, match=f"^checkpoint {tmp_path} is a folder: give a file in it, e.g. "
                                        f"{tmp_path / 'model_final.pth'}$"):
        train_net.main(train_net.parse_args(_tool(tmp_path, f"train.init_checkpoint={tmp_path}")))
    # --resume into a folder without a checkpoint of the run starts from train.init_checkpoint: checked as well
    with pytest.raises(UserError, match=f"^checkpoint {missing} does not exist$"):
        train_net.main(train_net.parse_args(["--resume", *_tool(tmp_path, f"train.init_checkpoint={missing}")]))
    # --resume that finds the run's last_checkpoint loads that one, not train.init_checkpoint: not checked there
    (tmp_path / "out" / "last_checkpoint").write_text("model_final.pth")
    with pytest.raises(AssertionError, match="the model was built"):
        train_net.main(train_net.parse_args(["--resume", *_tool(tmp_path, f"train.init_checkpoint={missing}")]))
