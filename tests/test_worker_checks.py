"""The training tool refuses data-loader workers under a temporary folder too long for their Unix sockets
(``siamese_detr.engine.worker_checks``), which would otherwise wait for their first batch for ever.

The limit is checked against the operating system and torch themselves: a socket bound at the path the check
computes, and a tensor pickled for another process (what a worker does with each batch) under such a folder."""
import os
import socket
import subprocess
import sys
import tempfile

import pytest
from detectron2.config import LazyConfig

from siamese_detr.engine.worker_checks import (SOCKET_PATH_MAX, check_worker_temp_dir, worker_socket_path,
                                               worker_temp_dir_problem)
from siamese_detr.utils.user_errors import UserOSError

from train_net_tool import ROOT, TINY, train_net

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX") or sys.platform == "win32", reason="Unix sockets")


def _folder_for_socket_length(socket_length: int) -> str:
    """A new folder in which the check's socket path is ``socket_length`` bytes long."""
    return _folder_of_length(socket_length - len(worker_socket_path("x")) + 1)  # "x/...": one byte for the folder


def _folder_of_length(length: int) -> str:
    """A new folder whose path is ``length`` bytes long, under the session's (short) temporary folder."""
    base = tempfile.mkdtemp(prefix="w")
    assert len(base) + 2 <= length, "the session's temporary folder is too long for this test"
    path = os.path.join(base, "d" * (length - len(base) - 1))
    os.makedirs(path)
    return path


@pytest.mark.parametrize("socket_length", [SOCKET_PATH_MAX, SOCKET_PATH_MAX + 1])
def test_the_limit_is_the_one_the_os_sets(socket_length):
    """A socket at the path the check computes binds at 107 bytes and not at 108, and the check refuses the
    second folder only."""
    folder = _folder_for_socket_length(socket_length)
    path = worker_socket_path(folder)
    assert len(path) == socket_length
    os.makedirs(os.path.dirname(path))
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(path)
        bound = True
    except OSError:
        bound = False
    finally:
        sock.close()
    problem = worker_temp_dir_problem(folder, ["dataloader.train.num_workers"], "file_descriptor")
    assert bound is (socket_length <= 107) is (problem is None)


def test_multiprocessing_names_its_socket_as_the_check_assumes():
    """In a process whose TMPDIR is the folder, multiprocessing's socket address has the length of the check's
    path (its random parts are as long as the check's X's)."""
    folder = _folder_of_length(60)
    code = "from multiprocessing.connection import arbitrary_address; print(arbitrary_address('AF_UNIX'))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TMPDIR": folder}, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert os.path.dirname(os.path.dirname(out)) == folder
    assert len(out) == len(worker_socket_path(folder))


@pytest.mark.parametrize("extra, fails", [(0, False), (1, True)])
def test_a_tensor_sent_to_another_process_needs_that_socket(extra, fails):
    """What a worker does with each batch, in a fresh process: pickling a tensor for another process opens the
    socket, and fails exactly when the check refuses the folder (in a worker that error is printed, the batch
    dropped, and the training process waits for ever)."""
    folder = _folder_for_socket_length(SOCKET_PATH_MAX + extra)
    code = ("import torch, torch.multiprocessing\n"
            "from multiprocessing.reduction import ForkingPickler\n"
            "assert torch.multiprocessing.get_sharing_strategy() == 'file_descriptor'\n"
            "ForkingPickler.dumps(torch.zeros(3))\n")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TMPDIR": folder}, capture_output=True,
                          text=True)
    assert (done.returncode != 0) is fails, done.stderr[-2000:]
    if fails:
        assert "AF_UNIX path too long" in done.stderr
    assert (worker_temp_dir_problem(folder, ["dataloader.train.num_workers"], "file_descriptor") is not None) is fails


def test_only_loaders_with_workers_and_the_socket_strategy_are_refused():
    long_folder = "/" + "t" * 80
    assert worker_temp_dir_problem(long_folder, [], "file_descriptor") is None
    assert worker_temp_dir_problem(long_folder, ["dataloader.train.num_workers"], "file_system") is None
    message = worker_temp_dir_problem(long_folder, ["dataloader.train.num_workers", "dataloader.test.num_workers"],
                                      "file_descriptor")
    assert long_folder in message and "TMPDIR" in message
    assert message.endswith("dataloader.train.num_workers=0 dataloader.test.num_workers=0")

    assert worker_temp_dir_problem(long_folder, ["dataloader.train.num_workers"], "file_descriptor",
                                   platform="win32") is None  # no Unix socket there


def test_the_limit_counts_bytes_not_characters():
    """``é`` is two bytes in the file system's encoding: under a folder of 40 of them (81 bytes) the socket's
    path is 113 bytes, over the 107, though it has 73 characters."""
    folder = "/" + "é" * 40
    assert len(worker_socket_path(folder)) <= SOCKET_PATH_MAX < len(os.fsencode(worker_socket_path(folder)))
    assert "(81 bytes, from $TMPDIR)" in worker_temp_dir_problem(folder, ["k"], "file_descriptor")


def test_a_bool_is_no_count_of_workers(monkeypatch):
    """``num_workers=True`` is refused by the count check, naming the key; here it is no loader with workers."""
    cfg = LazyConfig.load(str(ROOT / "configs/demo/detr_demo.py"))
    cfg.dataloader.train.num_workers, cfg.dataloader.test.num_workers = True, 0
    monkeypatch.setattr(tempfile, "tempdir", "/" + "t" * 80)
    check_worker_temp_dir(cfg)


@pytest.mark.parametrize("train, test, eval_only, refused", [
    (2, 0, False, True), (0, 2, False, True), (0, 0, False, False), (2, 0, True, False), (0, 1, True, True),
])
def test_the_config_check_counts_the_loaders_it_runs(monkeypatch, train, test, eval_only, refused):
    cfg = LazyConfig.load(str(ROOT / "configs/demo/detr_demo.py"))
    cfg.dataloader.train.num_workers, cfg.dataloader.test.num_workers = train, test
    monkeypatch.setattr(tempfile, "tempdir", "/" + "t" * 80)
    if refused:
        with pytest.raises(UserOSError, match="too long for data-loader workers"):
            check_worker_temp_dir(cfg, eval_only=eval_only)
    else:
        check_worker_temp_dir(cfg, eval_only=eval_only)


def test_the_training_tool_refuses_in_one_line_before_it_builds_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", "/" + "t" * 80)
    argv = ["--config-file", str(ROOT / "configs/demo/detr_demo.py"), *TINY, "dataloader.train.num_workers=1",
            f"train.output_dir={tmp_path / 'out'}"]
    with pytest.raises(SystemExit) as stop:
        train_net.run(argv)
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lazyconfig_train_net.py: error: the temporary folder /ttt") and "TMPDIR" in last
    assert not (tmp_path / "out").exists()
