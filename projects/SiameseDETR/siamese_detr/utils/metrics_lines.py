"""Reading detectron2's ``metrics.json`` (one JSON object per line), shared by the plot tools and the demo.

A line cut short by a kill (a ``{...`` that does not parse: the last line of a killed run, or a line in the
middle once the run was resumed) is skipped with a warning on stderr; any other line that is not a JSON
object is an error naming the file and the line number.
"""
import json
import sys
from typing import Iterator, Tuple

from .user_errors import UserError

__all__ = ["FINISHED_ITERATIONS_KEY", "MetricsFileError", "metrics_records"]

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
