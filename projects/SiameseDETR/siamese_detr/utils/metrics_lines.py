"""Reading detectron2's ``metrics.json`` (one JSON object per line), shared by the plot tools and the demo.

A line cut short by a kill (a ``{...`` that does not parse: the last line of a killed run, or a line in the
middle once the run was resumed) is skipped with a warning on stderr; any other line that is not a JSON
object is an error naming the file and the line number.

A folder's ``metrics.json`` can hold more than one series: a run resumed from a checkpoint earlier than its
last logged iteration logs those iterations again, and a run started over without ``--resume`` appends a
whole new series. :func:`read_timeline` keeps what the folder's last run stands on (see :func:`timeline`).
"""
import json
import sys
from typing import Iterable, Iterator, List, NamedTuple, Optional, Tuple

from .user_errors import UserError

__all__ = ["FINISHED_ITERATIONS_KEY", "MetricsFileError", "Timeline", "finished_at", "is_number", "is_training_record",
           "metrics_records", "read_timeline", "restart_note", "timeline"]

# how many training iterations had finished when an evaluation ran, stored beside its results by the
# training tool (siamese_detr.engine.eval_outputs.eval_hook)
FINISHED_ITERATIONS_KEY = "eval/finished_iterations"


class MetricsFileError(UserError, ValueError):
    """A line of a ``metrics.json`` that is neither a JSON object nor a line cut short by a kill (the message
    names the file and the line number)."""


_JSON_TYPES = {list: "an array", str: "a string", bool: "a boolean", type(None): "null", int: "a number",
               float: "a number"}


def metrics_records(metrics_json) -> Iterator[Tuple[int, dict]]:
    """``(line number, record)`` of every line of a detectron2 ``metrics.json`` (one JSON object per line).

    A line cut short by a kill (a ``{...`` that does not parse: the last line of a killed run, or a line in
    the middle once the run was resumed) is skipped with a warning on stderr, as is an empty line (silently);
    any other line that is not a JSON object raises :class:`MetricsFileError`. Line numbers count from 1."""
    with open(metrics_json, errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if line.startswith("{"):
                    print(f"warning: {metrics_json}:{lineno}: skipping a line cut short (a killed run?): "
                          f"{line[:60]!r}", file=sys.stderr)
                    continue
                raise MetricsFileError(f"{metrics_json}:{lineno}: not a JSON line ({e.msg}, column {e.colno}): "
                                       f"not a detectron2 metrics.json (a JSON object per line)?") from None
            if not isinstance(row, dict):
                raise MetricsFileError(
                    f"{metrics_json}:{lineno}: {line[:40]!r} is {_JSON_TYPES.get(type(row), 'not an object')}, "
                    f"not a JSON object: not a detectron2 metrics.json (a JSON object per line)?")
            yield lineno, row


def is_number(value) -> bool:
    """Whether ``value`` is a JSON number (a bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_training_record(row: dict) -> bool:
    """Whether ``row`` is a line the trainer wrote: a numeric ``iteration`` beside losses, ``lr`` or timings
    (keys without '/'), possibly with the results of an evaluation on that logging step. An evaluation's own
    line (only ``task/metric`` results) and an ``--eval-only`` record (``"eval_only": true``) are not."""
    return (not row.get("eval_only") and is_number(row.get("iteration"))
            and any("/" not in k and k != "iteration" for k in row))


def finished_at(row: dict) -> Optional[int]:
    """How many training iterations had finished when ``row`` was logged (None without a numeric
    ``iteration``): its ``eval/finished_iterations`` when the training tool wrote one (see
    :func:`siamese_detr.engine.eval_outputs.eval_hook`); otherwise, by detectron2's labels, ``iteration + 1``
    for a line the trainer wrote (:func:`is_training_record`) and for an ``--eval-only`` record (both hold the
    0-based index of the last finished iteration), and ``iteration`` for a line holding only results (the
    evaluation after training labels it with the number of finished iterations; a periodic evaluation off the
    logging steps also gets a line of its own: one short there, in files older than that key)."""
    finished = row.get(FINISHED_ITERATIONS_KEY)
    if is_number(finished):
        return int(finished)
    if not is_number(row.get("iteration")):
        return None
    return int(row["iteration"]) + int(bool(row.get("eval_only")) or is_training_record(row))


class Timeline(NamedTuple):
    """What :func:`timeline` keeps of a ``metrics.json``, and what it left out.

    Attributes:
        records: ``(line number, record)`` of the kept lines, in file order.
        restarts: one ``(iteration, [(line number, record)])`` per time training started again at a lower (or
            the same) iteration than it had logged: the iteration it started again at, and the earlier lines
            that this left out.
    """
    records: List[Tuple[int, dict]]
    restarts: List[Tuple[int, List[Tuple[int, dict]]]]


def timeline(rows: Iterable[Tuple[int, dict]]) -> Timeline:
    """The lines of ``rows`` (``(line number, record)``, in file order) that the last run's history stands on.

    Training records (:func:`is_training_record`) are taken in file order; one whose iteration is not higher
    than the previous training record's begins a new series (training started again: a run started over
    without ``--resume``, or resumed from a checkpoint older than its last logged iteration), and the lines
    kept so far from that iteration on are left out as an abandoned run's: those with more finished iterations
    (:func:`finished_at`) than it, i.e. the losses of that iteration or later and the evaluations of a model
    trained past it. So a resumed run replaces the lines it logs again, and a run started over shows alone.
    ``--eval-only`` records never begin a series (an evaluation of an older checkpoint appended at the end
    leaves the training curve whole); they are kept at their checkpoint's iteration, and left out like the
    others when a later series starts below it. Lines without a numeric ``iteration`` are kept as they are.
    """
    kept: List[Tuple[int, dict]] = []
    restarts = []
    last = None
    for lineno, row in rows:
        if is_training_record(row):
            iteration = row["iteration"]
            if last is not None and iteration <= last:
                stale = [(n, r) for n, r in kept if (finished_at(r) or 0) > iteration]
                kept = [(n, r) for n, r in kept if (finished_at(r) or 0) <= iteration]
                restarts.append((iteration, stale))
            last = iteration
        kept.append((lineno, row))
    return Timeline(kept, restarts)


def read_timeline(metrics_json) -> Timeline:
    """:func:`timeline` of the lines of ``metrics_json`` read by :func:`metrics_records` (a torn line is
    skipped with a warning; any other line that is not a JSON object raises :class:`MetricsFileError`)."""
    return timeline(metrics_records(metrics_json))


def _span(rows: List[Tuple[int, dict]]) -> str:
    """``"A-B"`` (or ``"A"``) of the numeric iterations of ``rows``."""
    its = [r["iteration"] for _, r in rows if is_number(r.get("iteration"))]
    low, high = min(its), max(its)
    return f"{low}" if low == high else f"{low}-{high}"


def restart_note(metrics_json, line: Timeline) -> Optional[str]:
    """One line saying which lines of ``metrics_json`` :func:`timeline` left out (how many, at which
    iterations, and why), or None when it left out none."""
    events = [(it, stale) for it, stale in line.restarts if stale]
    if not events:
        return None
    count = sum(len(stale) for _, stale in events)
    starts = " and ".join(str(it) for it, _ in events)
    spans = " and ".join(_span(stale) for _, stale in events)
    return (f"note: {metrics_json}: training started again at iteration{'s' if len(events) > 1 else ''} {starts} "
            f"(a run started over without --resume, or resumed from an earlier checkpoint): left out {count} "
            f"line{'s' if count > 1 else ''} of the earlier run, at iterations {spans}")
