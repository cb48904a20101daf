"""benchmarks/bench_pretrain_methods.py at tiny settings: it completes and reports every method (values are
machine-dependent and not asserted)."""
import importlib.util
import json
from pathlib import Path

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


def test_memory_child_reports_rss_growth(tiny_synthetic_shapes, capsys):
    bench = _bench()
    args = bench.parse_args(["--size", "tiny", "--batch-size", "2", "--iters", "1", "--short-side", "64",
                             "--memory-child", "siamese_detr"])
    growth = bench.memory_child(args)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["peak_mib"] == growth and growth >= 0
