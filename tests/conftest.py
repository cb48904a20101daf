"""Shared fixtures: a small built-in dataset in a temporary DETECTRON2_DATASETS."""
import pytest


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
