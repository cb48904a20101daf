"""Progress of a long loop: a tqdm bar on a terminal, log lines with rate and ETA anywhere else.

A tqdm bar redraws itself with carriage returns several times a second. On a terminal that is one line; in a
log file (a batch job's stdout, ``2> generate.log``) it is thousands of updates glued into one line. When the
stream is not a terminal, :func:`progress_bar` returns a :class:`LoggedProgress` instead, which logs one line
at most every ``interval`` seconds and one when it is closed, as Detectron2's evaluator does
("Inference done 11/32 ... ETA=0:00:03")::

    INFO edgeboxes shard 0/1: 1200/118287 img (1%), 38.2 img/s, ETA 0:51:05
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from typing import Callable, Optional, TextIO

_logger = logging.getLogger(__name__)


def format_eta(seconds: float) -> str:
    """``h:mm:ss`` of a number of seconds, rounded to the second (``90`` -> ``0:01:30``; negative -> ``0:00:00``;
    a day or more as ``datetime.timedelta`` writes it: ``1 day, 1:00:00``)."""
    return str(datetime.timedelta(seconds=int(round(max(0.0, seconds)))))


class LoggedProgress:
    """The part of tqdm's interface the project's loops use (``update``, ``close``, ``n``), as log lines.

    The rate counts only this run's items (``n - initial``: a resumed run's earlier items took no time here);
    the ETA is the items left at that rate. ``update`` takes negative counts (a rolled-back chunk).

    Args:
        total: number of items of the whole loop.
        initial: items already done before this run (a resumed run).
        desc: what is counted, at the start of each line.
        unit: the items' unit ("img", "it").
        interval: at most one line per ``interval`` seconds while running (the closing line comes always).
        logger: where the lines go (``logging.INFO``).
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it", interval: float = 60.0,
                 logger: Optional[logging.Logger] = None, clock: Callable[[], float] = time.monotonic):
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        self.total, self.initial, self.n = int(total), int(initial), int(initial)
        self.desc, self.unit, self.interval = desc, unit, float(interval)
        self._logger = logger or _logger
        self._clock = clock
        self._start = self._last = clock()
        self._logged_n: Optional[int] = None
        self._closed = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items (may be negative) and log a line if ``interval`` seconds passed since the
        last one."""
        self.n += int(n)
        now = self._clock()
        if now - self._last >= self.interval:
            self._log(now)

    def close(self) -> None:
        """Log the final count once (not again when nothing changed since the last line)."""
        if self._closed:
            return
        self._closed = True
        if self._logged_n != self.n:
            self._log(self._clock())

    def line(self, now: float) -> str:
        """The line logged at time ``now`` (a ``clock`` reading): count, share of the total, rate and ETA (both
        once measurable), and ``done in h:mm:ss`` once the total is reached."""
        share = f" ({100.0 * self.n / self.total:.0f}%)" if self.total > 0 else ""
        text = f"{self.desc}: {self.n}/{self.total} {self.unit}{share}"
        elapsed, done = now - self._start, self.n - self.initial
        if elapsed > 0 and done > 0:
            rate = done / elapsed
            text += f", {rate:.1f} {self.unit}/s"
            if self.n < self.total:
                text += f", ETA {format_eta((self.total - self.n) / rate)}"
        if self.n >= self.total:
            text += f", done in {format_eta(elapsed)}"
        return text

    def _log(self, now: float) -> None:
        self._logger.info(self.line(now))
        self._last, self._logged_n = now, self.n


def progress_bar(total: int, initial: int = 0, desc: str = "", unit: str = "it", enabled: bool = True,
                 stream: Optional[TextIO] = None, interval: float = 60.0, logger: Optional[logging.Logger] = None):
    """A tqdm bar when ``stream`` (default: stderr) is a terminal, a :class:`LoggedProgress` otherwise, and a
    disabled tqdm bar (nothing shown) when ``enabled`` is False. All three have ``update``, ``close`` and ``n``."""
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    if not enabled:
        return tqdm(total=total, initial=initial, disable=True)
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True, file=stream)
    return LoggedProgress(total, initial=initial, desc=desc, unit=unit, interval=interval, logger=logger)
