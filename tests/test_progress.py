"""Progress output: a bar on a terminal, log lines with rate and ETA (computed by hand here) elsewhere."""

import importlib.util
import io
import logging
import os

import cv2
import numpy as np
import pytest

from siamese_detr.utils.progress import LoggedProgress, format_eta, progress_bar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _progress(caplog, **kwargs):
    clock = FakeClock()
    logger = logging.getLogger("test_progress")
    caplog.set_level(logging.INFO, logger="test_progress")
    return LoggedProgress(logger=logger, clock=clock, **kwargs), clock


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "test_progress"]


def test_format_eta():
    assert format_eta(0) == "0:00:00"
    assert format_eta(90) == "0:01:30"
    assert format_eta(3 * 3600 + 62.4) == "3:01:02"
    assert format_eta(-5) == "0:00:00"


def test_one_line_per_interval_with_rate_and_eta(caplog):
    bar, clock = _progress(caplog, total=100, desc="edgeboxes shard 0/1", unit="img", interval=60)
    for _ in range(59):  # one item per second: nothing logged before a minute has passed
        clock.t += 1
        bar.update(1)
    assert _lines(caplog) == []
    clock.t += 1
    bar.update(1)  # 60 items in 60 s: 1 img/s, 40 left
    assert _lines(caplog) == ["edgeboxes shard 0/1: 60/100 img (60%), 1.0 img/s, ETA 0:00:40"]
    clock.t += 30
    bar.update(20)  # 30 s after the last line: still quiet
    assert len(_lines(caplog)) == 1
    clock.t += 30
    bar.update(20)  # 100 items in 120 s
    assert _lines(caplog)[-1] == "edgeboxes shard 0/1: 100/100 img (100%), 0.8 img/s, done in 0:02:00"
    bar.close()  # nothing new since that line
    assert len(_lines(caplog)) == 2


def test_a_resumed_run_counts_only_its_own_items_in_the_rate(caplog):
    bar, clock = _progress(caplog, total=100, initial=50, unit="img", desc="d", interval=60)
    clock.t += 60
    bar.update(30)  # 30 items of this run in 60 s: 0.5 img/s, 20 left: 40 s
    assert _lines(caplog) == ["d: 80/100 img (80%), 0.5 img/s, ETA 0:00:40"]


def test_close_logs_the_final_count_once_and_rolled_back_items_are_subtracted(caplog):
    bar, clock = _progress(caplog, total=10, desc="d", interval=60)
    bar.update(6)
    bar.update(-6)  # a chunk rolled back after its pool broke
    clock.t += 5
    bar.update(4)
    bar.close()
    bar.close()
    assert _lines(caplog) == ["d: 4/10 it (40%), 0.8 it/s, ETA 0:00:08"]


def test_no_rate_before_anything_is_done(caplog):
    bar, clock = _progress(caplog, total=0, desc="empty", interval=60)
    bar.close()
    assert _lines(caplog) == ["empty: 0/0 it, done in 0:00:00"]


def test_a_non_positive_interval_is_refused():
    with pytest.raises(ValueError, match="interval"):
        LoggedProgress(10, interval=0)


class TerminalStream(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_on_a_terminal_log_lines_elsewhere_nothing_when_disabled(caplog):
    terminal = TerminalStream()
    bar = progress_bar(3, desc="on a terminal", unit="img", stream=terminal)
    assert not isinstance(bar, LoggedProgress)
    bar.update(3)
    bar.close()
    assert "on a terminal" in terminal.getvalue() and "3/3" in terminal.getvalue()

    logfile = io.StringIO()
    assert isinstance(progress_bar(3, stream=logfile), LoggedProgress)

    for stream in (TerminalStream(), io.StringIO()):
        caplog.clear()
        off = progress_bar(3, desc="off", stream=stream, enabled=False)
        off.update(3)
        off.close()
        assert stream.getvalue() == "" and not [r for r in caplog.records if "off" in r.getMessage()]
    assert logfile.getvalue() == ""  # log lines go to the logger, never to the stream


def test_generate_proposals_into_a_log_file_writes_lines_not_carriage_returns(tmp_path, caplog, capsys):
    spec = importlib.util.spec_from_file_location("generate_proposals_progress",
                                                  os.path.join(ROOT, "tools", "generate_proposals.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(images / f"im{i}.png"), rng.integers(0, 255, (32, 40, 3), dtype=np.uint8))
    caplog.set_level(logging.INFO)
    assert tool.main(["--image-dir", str(images), "--method", "random", "--max-boxes", "4",
                      "--output", str(tmp_path / "store")]) == 0
    finals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("random shard 0/1: 4/4 img")]
    assert len(finals) == 1 and "done in" in finals[0]
    assert "\r" not in capsys.readouterr().err


def test_more_items_than_the_total_is_done_without_an_eta(caplog):
    """A total that was an estimate (12 items of 10): the line says done (no negative ETA), the share is
    above 100%."""
    bar, clock = _progress(caplog, total=10, desc="d", interval=60)
    clock.t += 4
    bar.update(12)
    bar.close()
    assert _lines(caplog) == ["d: 12/10 it (120%), 3.0 it/s, done in 0:00:04"]


def test_no_rate_when_a_rollback_leaves_fewer_items_than_the_run_started_with(caplog):
    """A resumed run (initial 5) whose first chunk was rolled back below its start: this run has done
    -3 items, no measurable (negative) rate and no ETA from it."""
    bar, clock = _progress(caplog, total=10, initial=5, desc="d", interval=60)
    clock.t += 10
    bar.update(-3)
    bar.close()
    assert _lines(caplog) == ["d: 2/10 it (20%)"]


def test_progress_bar_passes_initial_interval_and_logger_to_the_log_lines(caplog):
    """Off a terminal, ``progress_bar`` logs with the caller's ``interval`` and ``initial`` (a resumed run):
    7 of 10 already done, interval 5 s. With the default 60 s interval, no line would be logged at 5 s."""
    caplog.set_level(logging.INFO, logger="test_progress")
    bar = progress_bar(10, initial=7, desc="d", stream=io.StringIO(), interval=5.0,
                       logger=logging.getLogger("test_progress"))
    assert isinstance(bar, LoggedProgress) and bar.n == 7 and bar.interval == 5.0
    clock = FakeClock()
    bar._clock, bar._start, bar._last = clock, clock.t, clock.t  # drive it by the fake clock from here
    clock.t += 5
    bar.update(1)  # 1 item of this run in 5 s
    assert _lines(caplog) == ["d: 8/10 it (80%), 0.2 it/s, ETA 0:00:10"]


def test_a_disabled_bar_starts_from_initial():
    """``enabled=False`` shows nothing but keeps the interface: ``n`` is ``initial`` (a disabled tqdm bar does
    not count its updates; no caller reads ``n`` after updating a disabled bar)."""
    off = progress_bar(10, initial=4, enabled=False)
    assert off.n == 4
    off.update(2)
    off.close()
