"""Shared fixtures: a small built-in dataset in a temporary DETECTRON2_DATASETS; the session's temporary files
kept under pytest's own temporary folder; read-only folders; detectron2's dataset catalog restored after a
test; the demo tools' environment and a stand-in that refuses every step or command they would start."""
import logging
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

_RUN = subprocess.run  # the real one: some fixtures replace subprocess.run to catch any command a tool starts

# detectron2's ``setup_logger`` stops these loggers propagating to the root logger, where ``caplog`` listens;
# pytest attaches its handlers to the loggers that do not propagate when a test starts, not to those that stop
# during the test. So a test whose records come from the first run of a tool in this process saw them only
# when an earlier test had run one (it failed alone). Set as every run leaves them, from the start:
_LOGGERS_SET_UP_BY_RUNS = ("detectron2", "fvcore", "siamese_detr",  # setup_plain_file_logs
                           "visualize_predictions", "visualize_views", "fold_region_queries")  # the tools'
for _name in _LOGGERS_SET_UP_BY_RUNS:
    logging.getLogger(_name).propagate = False

# ``make test`` runs the suite on parallel workers (pytest-xdist, ``-n auto``). Each worker's memory grows to
# about 2.5 GiB over the suite (measured on the 2-core machine), so "auto" takes one worker per usable CPU but
# at most this many; ``make test TEST_WORKERS=N`` (or ``pytest -n N``) chooses another number.
MAX_AUTO_WORKERS = 4


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container or ``taskset`` may limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per usable CPU, at most ``MAX_AUTO_WORKERS``; pytest-xdist's own
    ``PYTEST_XDIST_AUTO_NUM_WORKERS``, when set, still decides (None hands over to xdist's implementation)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return max(1, min(usable_cpus(), MAX_AUTO_WORKERS))


@pytest.fixture(autouse=True, scope="session")
def _temporary_files_under_pytest_folder(tmp_path_factory):
    """For the whole session, in this process and every process it starts (``TMPDIR``): temporary files go
    under pytest's session folder, not the machine's ``/tmp``. What a test cannot clean up itself stays there
    too: the ``pytorch-errorfile-*.pickle`` that torch's spawn leaves for each worker that raised (the tests of
    failing DDP workers), the ``pymp-*`` folders of processes that ended by a signal."""
    folder = tmp_path_factory.mktemp("tmpdir")
    patch = pytest.MonkeyPatch()
    patch.setenv("TMPDIR", str(folder))
    patch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    patch.undo()


@pytest.fixture
def tiny_synthetic_shapes(tmp_path, monkeypatch):
    """Registers synthetic_shapes_{train,val} with 6 / 3 images under a temp root; restores afterwards."""
    from siamese_detr.data import register_synthetic_shapes

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    register_synthetic_shapes(root=str(tmp_path / "datasets"), num_images={"train": 6, "val": 3})
    yield tmp_path / "datasets"
    register_synthetic_shapes()


@pytest.fixture
def tiny_edgeboxes_store(tiny_synthetic_shapes):
    """The EdgeBoxes store of the tiny train split where the demo configs look for it."""
    import importlib.util
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "generate_proposals.py"
    spec = importlib.util.spec_from_file_location("generate_proposals_tool", tool)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    store = tiny_synthetic_shapes / "proposals" / "synthetic_shapes_train.edgeboxes.proposals"
    argv = ["--dataset", "synthetic_shapes_train", "--method", "edgeboxes", "--output", str(store), "--no-progress"]
    assert gen.main(argv) == 0
    return store


@pytest.fixture(autouse=True)
def _no_log_handlers_on_closed_streams():
    """After each test: drop the logging handlers left writing to a stream the test closed (detectron2's
    ``setup_logger`` binds its console handler to ``sys.stdout`` as it is then, e.g. a ``capsys`` buffer that
    pytest closes after the test); otherwise every later record prints "--- Logging error ---" into the
    stderr of whichever test emits it."""
    import logging

    yield
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in list(logger.handlers):
            if getattr(getattr(handler, "stream", None), "closed", False):
                logger.removeHandler(handler)


@pytest.fixture
def make_read_only():
    """``make(folder)``: ``folder`` (made if missing) in which no file can be created until the test ends, even by
    root: the immutable flag (``chattr +i``; permission bits do not stop root), else ``chmod 500``. Skips the test
    where a file can still be made there. Writable again afterwards."""
    locked = []

    def make(folder) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        immutable = os.geteuid() == 0 and _RUN(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if not immutable:
            folder.chmod(0o500)
        locked.append((folder, immutable))
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            return folder
        pytest.skip(f"no way to make {folder} read-only here")

    yield make
    for folder, immutable in locked:
        if immutable:
            _RUN(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o700)


@pytest.fixture
def restore_dataset_catalog():
    """Unregister the datasets a test registered (e.g. a config's ImageNet folder under the test's temporary
    DETECTRON2_DATASETS), so the next test may register the same name under another root."""
    from detectron2.data import DatasetCatalog

    from script_modules import forget_datasets

    before = set(DatasetCatalog.list())
    yield
    forget_datasets(set(DatasetCatalog.list()) - before)


@pytest.fixture
def demo_env(tmp_path, monkeypatch):
    """A tiny dataset root (``TINY_SIZES`` images), the variables the demo's tools set restored afterwards, and the
    working directory too."""
    from demo_tool_helpers import TINY_SIZES

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("SYNTHETIC_SHAPES_NUM_IMAGES", TINY_SIZES)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::FutureWarning:torch.jit._script")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def nothing_runs(monkeypatch):
    """Any command (``subprocess.run``) or step (``StepRunner``) the demo's tools would start raises
    :class:`StepStarted` instead."""
    import siamese_detr.demo.runner as runner
    from demo_tool_helpers import StepStarted

    def refuse(*args, **kwargs):
        raise StepStarted(args)

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(runner, "StepRunner", refuse)
