"""A user error raised inside a DataLoader worker (a mapper's check at the first sample) still ends a tool
with one line: the DataLoader re-raises it in the main process as the same class with the worker's traceback
in its message, and :func:`user_message` takes the message back out (``MESSAGE (in DataLoader worker process
N)``). Mapper settings that would only fail there are checked when the mapper is built."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from siamese_detr.data.views import JITTER_NOISES, ViewPolicy, jitter_boxes
from siamese_detr.engine import logging_utils
from siamese_detr.engine.user_error_exit import user_errors_exit
from siamese_detr.utils.user_errors import TRACEBACK_ENV, UserKeyError, UserValueError, user_message


class _Raises(Dataset):
    """Item 0 is fine; item 1 raises ``error``."""

    def __init__(self, error):
        self.error = error

    def __len__(self):
        return 2

    def __getitem__(self, index):
        if index == 1:
            raise self.error
        return torch.zeros(1)


def _worker_error(error):
    """The exception the main process gets when a DataLoader worker raises ``error``."""
    loader = DataLoader(_Raises(error), batch_size=1, num_workers=1)
    with pytest.raises(type(error)) as caught:
        list(loader)
    return caught.value


@pytest.mark.parametrize("error, message", [
    (UserValueError("dataloader.train.mapper.tau must lie in [0, 1], got 2"),
     "dataloader.train.mapper.tau must lie in [0, 1], got 2"),
    (UserKeyError("Dataset 'nope' is not registered."), "Dataset 'nope' is not registered."),
    (UserValueError("first line\nsecond line: the fix"), "first line\nsecond line: the fix"),
], ids=["value", "key", "two-line"])
def test_the_message_of_a_user_error_from_a_worker_is_the_workers_message(error, message):
    reraised = _worker_error(error)
    assert "Original Traceback" in str(reraised)  # what the DataLoader made of it
    assert user_message(reraised) == f"{message} (in DataLoader worker process 0)"


def test_a_builtin_error_from_a_worker_reads_the_same_way():
    reraised = _worker_error(ValueError("plain"))
    assert user_message(reraised) == "plain (in DataLoader worker process 0)"


def test_a_message_that_only_looks_wrapped_is_left_as_it_is():
    text = "Caught UserValueError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n  x"
    assert user_message(UserValueError(text)) == text  # no line naming the class: nothing to take out


def test_the_tool_prints_one_line_for_a_user_error_in_a_worker(capsys, monkeypatch):
    monkeypatch.setattr(logging_utils, "_active_log_file", None)
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    loader = DataLoader(_Raises(UserValueError("dataloader.train.mapper.x is wrong")), batch_size=1, num_workers=1)
    with pytest.raises(SystemExit) as stop:
        with user_errors_exit("tool.py"):
            list(loader)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == "tool.py: error: dataloader.train.mapper.x is wrong (in DataLoader worker process 0)\n"


def test_an_unknown_jitter_noise_is_refused_when_the_view_policy_is_built():
    with pytest.raises(UserValueError) as err:
        ViewPolicy(jitter_noise="gauss")
    assert str(err.value) == ("dataloader.train.mapper.jitter_noise must be one of ['sigmoid_normal', 'uniform'], "
                              "got 'gauss'")
    boxes = np.array([[10.0, 10.0, 30.0, 40.0]])
    for noise in JITTER_NOISES:  # the two it accepts are the two jitter_boxes draws
        ViewPolicy(jitter_noise=noise)
        out = jitter_boxes(np.random.default_rng(0), boxes, 0.1, noise=noise)
        assert out.shape == boxes.shape and not np.array_equal(out, boxes)
