"""benchmarks/bench_pretrain_methods.py at tiny settings: it completes and reports every method (values are
machine-dependent and not asserted)."""
import gc
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pretrain_methods.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_pretrain_methods", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_reports_every_method(tiny_synthetic_shapes, capsys):
    bench = _bench()
    text = bench.main(["--size", "tiny", "--batch-size", "2", "--iters", "1", "--short-side", "64",
                       "--device", "cpu", "--memory", "skip", "--no-append"])
    for label in ("UP-DETR", "Siamese DETR", "DETReg"):
        assert text.count(f"| {label} |") == 2  # the comparison row and the profile row
    assert "0.4036" in text and "0.3118" in text and "0.3528" in text  # the paper's Table 7 beside


def test_memory_child_prints_its_measurement_for_the_parent(tiny_synthetic_shapes, capsys):
    """The child's last stdout line is the JSON the parent reads (the value is machine-dependent)."""
    bench = _bench()
    args = bench.parse_args(["--size", "tiny", "--batch-size", "2", "--iters", "1", "--short-side", "64",
                             "--memory-child", "siamese_detr"])
    growth = bench.memory_child(args)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed) == {"peak_mib", "peak_reset"} and printed["peak_mib"] == growth


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs")
def test_rss_growth_measures_the_steps_not_an_earlier_peak():
    """Against allocations of known size: 64 MiB touched and held per call counts (128 MiB over two calls),
    and an earlier 256 MiB peak, freed before the steps, does not (the high-water mark is reset)."""
    bench = _bench()
    mib = 2 ** 20
    earlier = np.ones(256 * mib // 8)  # touched, then returned to the system (a large allocation is mmapped)
    del earlier
    idle, reset = bench.rss_growth_mib(lambda: None, 2)
    if not reset:
        pytest.skip("this kernel refuses to reset VmHWM")
    assert idle < 32
    held = []
    growth, _ = bench.rss_growth_mib(lambda: held.append(np.ones(64 * mib // 8)), 2)
    assert 120 <= growth < 160
    # the peak, not what is left: 64 MiB touched and freed within the step still counts
    peak, _ = bench.rss_growth_mib(lambda: np.ones(64 * mib // 8).sum(), 1)
    assert 60 <= peak < 100


class _Cycle:
    """An object that refers to itself: freed only by the cyclic garbage collector."""

    def __init__(self, payload):
        self.itself, self.payload = self, payload


def test_rss_growth_is_not_hidden_by_garbage_freed_during_the_steps():
    """64 MiB held in an unreachable cycle before the measurement, a collection inside each step (as one that
    the steps' allocations trigger): two 64 MiB steps still read as about 128 MiB, not 64."""
    bench = _bench()
    mib = 2 ** 20
    held = []

    def step():
        held.append(np.ones(64 * mib // 8))
        gc.collect()

    gc.disable()  # no automatic collection before the measurement: only an explicit one frees the cycle
    try:
        _Cycle(np.ones(64 * mib // 8))  # unreachable at once, still resident until a collection
        growth, reset = bench.rss_growth_mib(step, 2)
    finally:
        gc.enable()
    if not reset:
        pytest.skip("this kernel refuses to reset VmHWM")
    assert 120 <= growth < 160


def test_the_report_rows_are_computed_from_the_measurements():
    """Ratios to UP-DETR (time and memory) and parameters in millions, from hand-made measurements."""
    bench = _bench()
    args = bench.parse_args(["--size", "tiny", "--device", "cpu", "--iters", "3"])
    stages = {s: 0.0 for s in bench.STAGES}
    means = {"up_detr": dict(stages, total=0.1), "siamese_detr": dict(stages, total=0.2),
             "detreg": dict(stages, total=0.05)}
    memory = {"up_detr": 100.0, "siamese_detr": 150.0, "detreg": 300.0}
    params = {"up_detr": 2_000_000, "siamese_detr": 3_500_000, "detreg": 1_250_000}
    text = bench.report(args, means, memory, params, "RSS")
    table = text.split("| method | s/it |")[1].split("\n\n")[0].splitlines()[2:]  # below the header rule
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:6] for line in table}
    assert rows["UP-DETR"] == ["0.1000", "1.00", "100", "1.00", "2.00"]
    assert rows["Siamese DETR"] == ["0.2000", "2.00", "150", "1.50", "3.50"]
    assert rows["DETReg"] == ["0.0500", "0.50", "300", "3.00", "1.25"]
