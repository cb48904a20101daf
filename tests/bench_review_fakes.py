"""Fakes shared by the reviews of the benchmarks' arithmetic (tests/test_bench_scripts_review.py,
test_bench_methods_review.py, test_bench_ratios.py): the benchmarks loaded as fresh modules, a fake clock and
``resource`` module, a stage whose forward costs known seconds, and the markdown tables of a report as cells."""
from pathlib import Path
from types import SimpleNamespace

from torch import nn

from script_modules import load_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_loader(monkeypatch):
    """``load(name)``: benchmarks/<name>.py as a fresh module (benchmarks/ on sys.path for its helpers)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return lambda name: load_script(BENCH / f"{name}.py", f"review_{name}")


class Clock:
    """A fake ``time`` module: ``perf_counter`` only moves when a fake stage calls ``advance``."""

    def __init__(self):
        self.t = 0.0
        self.scale = 1.0

    def perf_counter(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


class FakeRusage:
    """A fake ``resource`` module whose ``ru_maxrss`` (KiB) takes the given values call after call."""

    RUSAGE_SELF = 0

    def __init__(self, *values):
        self.values = list(values)

    def getrusage(self, who):
        return SimpleNamespace(ru_maxrss=self.values.pop(0))


def table_rows(lines, header_start):
    """The body rows of the markdown table whose header starts with ``header_start``, as lists of cells."""
    lines = list(lines)
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


class Costly(nn.Module):
    def __init__(self, clock, matcher=None):
        super().__init__()
        self.clock = clock
        if matcher is not None:
            self.matcher = matcher

    def forward(self, x, cost):
        if hasattr(self, "matcher"):  # the criterion: 16 of its own around the matcher's 16
            self.clock.advance(cost / 2)
            self.matcher(x, 16 * self.clock.scale)
            self.clock.advance(cost / 2)
        else:
            self.clock.advance(cost)
        return x
