"""The benchmarks' shared helpers (benchmarks/bench_args.py, bench_child.py, results_md.py, machine_info.py,
bench_inputs.py): option bounds and device refusals, child processes and their answers, RESULTS.md appends, the
machine line, and the batches / model they build, each against values written out by hand."""
import argparse
import importlib.util
import io
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_t", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_at_least_accepts_the_bound_and_names_value_bound_and_reason():
    parse = _load("bench_args").at_least(2, "two views")
    assert parse("2") == 2 and parse("17") == 17 and parse.__name__ == "integer >= 2"
    with pytest.raises(argparse.ArgumentTypeError, match=r"^1 is too small: give an integer >= 2 \(two views\)$"):
        parse("1")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'2\.5' is not an integer$"):
        parse("2.5")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^0 is too small: give an integer >= 1$"):
        _load("bench_args").at_least(1)("0")


def test_check_device_accepts_cpu_and_refuses_other_names_and_absent_cuda(monkeypatch, capsys):
    bench_args = _load("bench_args")
    parser = argparse.ArgumentParser(prog="bench")
    bench_args.check_device(parser, "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    bench_args.check_device(parser, "cuda:0")
    bench_args.check_device(parser, "cuda")  # the current CUDA device
    for device, message in (("mps", "--device mps: give cpu or cuda (cuda:N)"),):
        with pytest.raises(SystemExit):
            bench_args.check_device(parser, device)
        assert message in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        bench_args.check_device(parser, "cuda:1")
    assert "--device cuda:1: no CUDA device is available here; run with --device cpu" in capsys.readouterr().err


def test_append_section_creates_the_header_once_and_appends_in_order(tmp_path, monkeypatch):
    results_md = _load("results_md")
    monkeypatch.setattr(results_md, "RESULTS", tmp_path / "RESULTS.md")
    results_md.append_section(["", "## bench_a", "| x | 1 |"])
    results_md.append_section(["", "## bench_b"])
    assert (tmp_path / "RESULTS.md").read_text() == results_md.HEADER + "\n## bench_a\n| x | 1 |\n\n## bench_b\n"
    (tmp_path / "RESULTS.md").write_text("kept\n")  # an existing file without the header is not rewritten
    results_md.append_section(["", "## c"])
    assert (tmp_path / "RESULTS.md").read_text() == "kept\n\n## c\n"


def test_machine_line_names_cpu_model_affinity_and_core_count(monkeypatch):
    machine_info = _load("machine_info")
    cpuinfo = "processor\t: 0\nvendor_id\t: Acme\nmodel\t\t: 85\nmodel name\t: Acme CPU @ 3.0GHz: rev 2\nflags\t: x\n"
    monkeypatch.setattr(machine_info.os.path, "exists", lambda path: path == "/proc/cpuinfo")
    monkeypatch.setattr(machine_info, "open", lambda path: io.StringIO(cpuinfo), raising=False)
    assert machine_info.cpu_model() == "Acme CPU @ 3.0GHz: rev 2"
    monkeypatch.setattr(machine_info.os, "sched_getaffinity", lambda pid: {0, 3})
    monkeypatch.setattr(machine_info.os, "cpu_count", lambda: 8)
    line = machine_info.describe_machine()
    assert line.startswith("nproc 2 (8 cores), CPU Acme CPU @ 3.0GHz: rev 2, ")
    assert f"torch {torch.__version__} ({torch.get_num_threads()} threads)" in line


def test_mapped_batches_skip_rejected_images_and_cycle_in_order():
    """5 images, the mapper rejects image 1: 3 batches of 2 are 0 2 | 3 4 | 0 2 (cycling from the start);
    the mapper gets copies, so a mapper that edits its input does not change the dataset."""
    from detectron2.data import DatasetCatalog

    name = "toy_bench_helpers_ds"
    DatasetCatalog.register(name, lambda: [{"image_id": i} for i in range(5)])
    try:
        def mapper(d):
            image_id = d.pop("image_id")
            return None if image_id == 1 else image_id

        batches = _load("bench_inputs").mapped_batches(mapper, 2, 3, dataset=name)
        assert batches == [[0, 2], [3, 4], [0, 2]]
    finally:
        DatasetCatalog.remove(name)


def _params(model):
    return model.parameters()


@pytest.mark.parametrize("clip, expected_step", [
    ({"max_norm": 1.0}, [0.6, 0.8]),                      # ||(3, 4)||_2 = 5 -> (3, 4) / 5
    ({"max_norm": 1.0, "norm_type": 1.0}, [3 / 7, 4 / 7]),  # ||(3, 4)||_1 = 7
    (None, [3.0, 4.0]),                                   # no clipping
])
def test_build_training_seeds_the_model_and_clips_as_configured(clip, expected_step):
    """A bias-free Linear(2, 1) built with seed 0 in train mode; loss w . (3, 4) has gradient (3, 4), so one
    SGD step (lr 1) moves the weights by the clipped gradient."""
    from detectron2.config import LazyCall as L
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"train": {} if clip is None else {"clip_grad": clip}})
    cfg.model = L(torch.nn.Linear)(in_features=2, out_features=1, bias=False)
    cfg.optimizer = L(torch.optim.SGD)(params=L(_params)(model=None), lr=1.0)
    torch.manual_seed(0)
    expected_w0 = torch.nn.Linear(2, 1, bias=False).weight.detach().clone()
    torch.manual_seed(123)
    model, optimizer = _load("bench_inputs").build_training(cfg, "cpu")
    assert model.training and torch.equal(model.weight.detach(), expected_w0)
    (model.weight * torch.tensor([[3.0, 4.0]])).sum().backward()
    optimizer.step()
    torch.testing.assert_close(expected_w0 - model.weight.detach(), torch.tensor([expected_step]))


CHILD_SCRIPT = """
import json, os, sys
assert sys.argv[1] == "--child"
row = json.loads(sys.argv[2])
print("a line of noise before the answer")
if row[0] == "fail":
    sys.stderr.write("\\n".join(f"line {i}" for i in range(20)) + "\\nValueError: bad row\\n")
    sys.exit(3)
print(json.dumps({"sum": row[1] + row[2], "cwd": os.getcwd(), "env": os.environ.get("BENCH_CHILD_T")}))
"""


def test_run_child_process_returns_the_last_json_line_and_ends_the_benchmark_on_a_failed_child(tmp_path):
    bench_child = _load("bench_child")
    script = tmp_path / "fake_bench.py"
    script.write_text(CHILD_SCRIPT)
    out = bench_child.run_child_process(script, ["ok", 2, 3], env=dict(os.environ, BENCH_CHILD_T="given"))
    assert out == {"sum": 5, "cwd": str(BENCH.parent), "env": "given"}  # run from the repository root
    with pytest.raises(SystemExit) as exc:
        bench_child.run_child_process(script, ("fail", 0, 0))
    message = str(exc.value)
    assert message.startswith("fake_bench.py: the child process of ['fail', 0, 0] failed (exit 3):\n")
    assert message.endswith("line 19\nValueError: bad row")  # the last 15 lines of its error output
    assert "line 6\n" in message and "line 5\n" not in message


def test_answer_if_child_prints_the_measurement_only_in_a_child(capsys):
    bench_child = _load("bench_child")
    calls = []
    assert bench_child.answer_if_child(SimpleNamespace(child=None), calls.append) is False
    assert calls == [] and capsys.readouterr().out == ""
    assert bench_child.answer_if_child(SimpleNamespace(child='["a", 2]'), lambda name, n: {name: n * 2}) is True
    assert capsys.readouterr().out == '{"a": 4}\n'
