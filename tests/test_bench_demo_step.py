"""benchmarks/bench_demo_step.py: which kind each profiler op counts as, the per-step sums and shares (worked out
by hand), a real profile of a tiny step, the timing split (warm-up excluded, profile only for eager) on a fake
clock, the compile wrapping, the inputs check, the child process's errors, and the report's ratios."""
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench_review_fakes import Clock
from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return load_script(ROOT / "benchmarks" / "bench_demo_step.py", "test_bench_demo_step_module")


def _labels(bench):
    return [label for label, _, _ in bench.OP_CATEGORIES] + [bench.OTHER]


def test_op_category_names_each_kind_and_leaves_the_rest_to_other(bench):
    matrix, grid, conv, attention, roi, other = _labels(bench)
    expected = {
        "aten::mm": matrix, "aten::addmm": matrix, "aten::bmm": matrix, "aten::baddbmm": matrix,
        "aten::grid_sampler_2d": grid, "aten::grid_sampler_2d_backward": grid,
        "aten::mkldnn_convolution": conv, "aten::convolution_backward": conv, "aten::max_pool2d_with_indices": conv,
        "aten::_scaled_dot_product_flash_attention_for_cpu": attention, "aten::_softmax": attention,
        "torchvision::roi_align": roi, "torchvision::_roi_align_backward": roi,
        "aten::mul": other, "aten::copy_": other, "aten::matmul": other, "Optimizer.step#AdamW.step": other,
        "aten::mvlgamma": other,  # not aten::mv: the matrix products are exact names
    }
    assert {name: bench.op_category(name) for name in expected} == expected


def test_category_seconds_are_per_step_sums_in_the_table_order(bench):
    op_times = [("aten::mm", 0.4), ("aten::addmm", 0.2), ("aten::grid_sampler_2d_backward", 0.6),
                ("aten::mul", 0.1), ("aten::copy_", 0.3)]
    out = bench.category_seconds(op_times, steps=2)
    assert list(out) == _labels(bench)
    assert list(out.values()) == pytest.approx([0.3, 0.3, 0.0, 0.0, 0.0, 0.2])


def test_profile_summary_lists_the_largest_other_ops_and_their_calls_per_step(bench):
    op_stats = [("aten::mm", 4.0, 100), ("aten::mul", 0.6, 300), ("aten::copy_", 0.9, 500), ("aten::sum", 0.2, 40),
                ("aten::add", 0.3, 60)]
    out = bench.profile_summary(op_stats, steps=2, top=2)
    assert out["other_top"] == [["aten::copy_", pytest.approx(0.45)], ["aten::mul", pytest.approx(0.3)]]
    assert out["other_calls"] == pytest.approx((300 + 500 + 40 + 60) / 2)  # the mm's calls are not "other"
    assert out["categories"][bench.OTHER] == pytest.approx(1.0)


class TinyStep(nn.Module):
    """One matrix product and one grid_sample per forward, returning a loss dict as the DETR models do."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(64, 64))

    def forward(self, batch):
        x = torch.stack([b["x"] for b in batch])  # [B, 64, 64]
        grid = torch.rand(len(batch), 8, 8, 2) * 2 - 1
        sampled = F.grid_sample((x @ self.weight)[:, None], grid, align_corners=False)
        return {"loss": sampled.square().mean()}


def test_a_real_profile_puts_the_matrix_product_and_grid_sample_in_their_kinds(bench):
    torch.manual_seed(0)
    model = TinyStep()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [[{"x": torch.randn(64, 64)} for _ in range(2)] for _ in range(2)]
    out = bench.profile_training_steps(model, optimizer, batches, "cpu")
    matrix, grid, conv, attention, roi, other = _labels(bench)
    seconds = out["categories"]
    assert seconds[matrix] > 0 and seconds[grid] > 0 and seconds[other] > 0
    assert seconds[conv] == seconds[attention] == seconds[roi] == 0.0
    assert out["other_calls"] >= 1 and len(out["other_top"]) == 3


def test_compile_transformer_wraps_the_instances_encode_and_decode_with_dynamic_shapes(bench, monkeypatch):
    calls = []

    def fake_compile(fn, **kwargs):
        calls.append((fn.__name__, kwargs))
        return lambda *a: ("compiled", fn(*a))

    monkeypatch.setattr(torch, "compile", fake_compile)

    class Transformer(nn.Module):
        def encode(self, x):
            return x + 1

        def decode(self, x):
            return x * 2

    model = SimpleNamespace(transformer=Transformer())
    bench.compile_transformer(model)
    assert calls == [("encode", {"dynamic": True}), ("decode", {"dynamic": True})]
    assert model.transformer.encode(1) == ("compiled", 2) and model.transformer.decode(3) == ("compiled", 6)
    assert Transformer().encode(1) == 2  # the class is untouched


def test_inputs_digest_changes_with_any_tensor_byte_or_file_name_not_with_key_order(bench):
    def sample(value=0, name="a.png"):
        return {"file_name": name, "image": torch.full((3, 4, 5), value, dtype=torch.uint8),
                "boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "image_id": 7}

    base = bench.inputs_digest([[sample(), sample(name="b.png")]])
    reordered = dict(reversed(list(sample().items())))
    assert bench.inputs_digest([[reordered, sample(name="b.png")]]) == base
    assert bench.inputs_digest([[sample(1), sample(name="b.png")]]) != base
    assert bench.inputs_digest([[sample(), sample(name="c.png")]]) != base
    changed = sample()
    changed["image"][0, 0, 0] = 9
    assert bench.inputs_digest([[changed, sample(name="b.png")]]) != base


@pytest.mark.parametrize("mode", ["eager", "compile"])
def test_run_child_times_after_the_warm_up_and_profiles_only_eager(bench, monkeypatch, mode):
    """Steps cost 50 (first), 10 (warm-up), then 1, 2, 6: 3 s/it; the eager run profiles the 2 batches after."""
    clock = Clock()
    costs = iter([50.0, 10.0, 1.0, 2.0, 6.0])
    requested, profiled, compiled, threads = [], [], [], []

    class Model:
        def __call__(self, batch):
            clock.advance(next(costs))
            return {"loss": torch.zeros((), requires_grad=True)}

    import bench_inputs  # its time_step times the steps

    monkeypatch.setattr(bench_inputs, "time", clock)
    monkeypatch.setattr(bench, "load_step_config", lambda step: SimpleNamespace(step=step))
    monkeypatch.setattr(bench, "loader_batches", lambda cfg, count: requested.append(count) or [
        [{"file_name": f"{i}.png", "image": torch.full((3, 2, 2), i)}] for i in range(count)])
    monkeypatch.setattr(bench, "build_training", lambda cfg, device: (Model(), torch.optim.SGD([nn.Parameter(
        torch.zeros(1))], lr=0.1)))
    monkeypatch.setattr(bench, "profile_training_steps", lambda model, opt, batches, device: profiled.append(
        [b[0]["file_name"] for b in batches]) or {"categories": {}, "other_top": [], "other_calls": 0})
    monkeypatch.setattr(bench, "compile_transformer", lambda model: compiled.append(model))
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    graph_counts = iter([3, 5])  # after the warm-up, after the timed steps
    monkeypatch.setattr(bench, "_graphs_compiled", lambda: next(graph_counts))
    row = bench.run_child("finetune", mode, 3, 2, 2, 1, "cpu")
    assert threads == [1]
    assert (row["first_s"], row["warmup_s"], row["seconds"]) == (50.0, 60.0, pytest.approx(3.0))
    assert row["config"] == bench.STEP_CONFIGS["finetune"] and (row["step"], row["mode"]) == ("finetune", mode)
    if mode == "eager":
        assert requested == [7] and profiled == [["5.png", "6.png"]] and not compiled
        assert row["graphs"] is None and row["profile"] is not None
    else:
        assert requested == [5] and profiled == [] and len(compiled) == 1
        assert row["graphs"] == [3, 5] and row["profile"] is None
    expected = bench.inputs_digest([[{"file_name": f"{i}.png", "image": torch.full((3, 2, 2), i)}] for i in range(5)])
    assert row["inputs"] == expected  # the timed batches only: eager and compile compare


def test_run_in_subprocess_gives_the_child_an_empty_inductor_cache_and_names_a_failed_child(
        bench, monkeypatch, tmp_path):
    warm = tmp_path / "warm_cache"  # this process's cache (the profiler sets the variable), not empty
    warm.mkdir()
    (warm / "compiled.so").write_text("x")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(warm))
    seen = []

    def fake_run(cmd, **kwargs):
        cache = Path(kwargs["env"]["TORCHINDUCTOR_CACHE_DIR"])
        seen.append((json.loads(cmd[-1]), cache.is_dir() and not any(cache.iterdir())))
        if cmd[-1].startswith('["pretrain"'):
            return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="line 1\nKeyError: 'image'\n")
        return subprocess.CompletedProcess(cmd, 0, stdout='noise\n{"seconds": 1.5}\n', stderr="")

    import bench_child

    monkeypatch.setattr(bench_child.subprocess, "run", fake_run)
    assert bench.run_in_subprocess("finetune", "eager", 1, 1, 0, 1, "cpu") == {"seconds": 1.5}
    with pytest.raises(SystemExit) as exc:
        bench.run_in_subprocess("pretrain", "compile", 1, 1, 0, 1, "cpu")
    assert "bench_demo_step.py: the child process of ['pretrain', 'compile', 1, 1, 0, 1, 'cpu'] failed (exit 1)" \
        in str(exc.value) and "KeyError: 'image'" in str(exc.value)
    assert seen == [(["finetune", "eager", 1, 1, 0, 1, "cpu"], True), (["pretrain", "compile", 1, 1, 0, 1, "cpu"],
                                                                       True)]


def _row(step, mode, seconds, inputs="x", profile=None, graphs=None, first_s=1.0):
    return {"step": step, "mode": mode, "config": f"{step}.py", "first_s": first_s, "warmup_s": 2.0,
            "seconds": seconds, "profile": profile, "graphs": graphs, "inputs": inputs}


def test_report_ratios_are_to_the_eager_step_of_the_same_config_and_the_inputs_are_checked(bench, monkeypatch):
    monkeypatch.setattr(bench, "describe_machine", lambda: "a machine")
    labels = _labels(bench)
    profile = {"categories": dict(zip(labels, [0.2, 0.1, 0.05, 0.0, 0.0, 0.15])),
               "other_top": [["aten::mul", 0.1], ["aten::copy_", 0.05]], "other_calls": 1234.0}
    rows = [_row("pretrain", "eager", 0.5, profile=profile),
            _row("pretrain", "compile", 0.6, graphs=[20, 27], first_s=99),
            _row("finetune", "eager", 0.4, inputs="y"), _row("finetune", "compile", 0.2, inputs="z", graphs=[3, 3])]
    args = SimpleNamespace(device="cpu", threads=1, warmup=10, steps=20, profile_steps=5)
    lines = bench.report(args, rows)
    table = [line.split(" | ")[2:8] for line in lines if line.startswith("| pretrain |") or line.startswith(
        "| finetune |")][:4]
    assert table == [["eager", "1.00", "2.0", "0.500", "1.00x", "- |"],
                     ["compile", "99.00", "2.0", "0.600", "1.20x", "27 (7 in the timed steps) |"],
                     ["eager", "1.00", "2.0", "0.400", "1.00x", "- |"],
                     ["compile", "1.00", "2.0", "0.200", "0.50x", "3 (0 in the timed steps) |"]]
    shares = next(line for line in lines if line.startswith("| pretrain | 0."))
    assert shares == "| pretrain | 0.200 (40%) | 0.100 (20%) | 0.050 (10%) | 0.000 (0%) | 0.000 (0%) | 0.150 (30%) |"
    pretrain = next(line for line in lines if line.startswith("* pretrain:"))
    assert f"largest named kind of op: {labels[0]}, 40%" in pretrain
    assert "other ops 30% in 1234 calls per step (largest: aten::mul 20%, aten::copy_ 10%)" in pretrain
    assert "compiled: 1.20 times the eager step's time after 10 warm-up steps, the first step 99 s" in pretrain
    assert "27 graphs (7 of them compiled in the timed steps)" in pretrain
    assert pretrain.endswith("the same batches: True.")
    finetune = next(line for line in lines if line.startswith("* finetune:"))
    assert "largest named" not in finetune and finetune.endswith("the same batches: False.")


def test_main_runs_each_config_and_mode_once_in_its_own_child(bench, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(bench, "run_in_subprocess", lambda *row: calls.append(row) or _row(
        row[0], row[1], 1.0, graphs=[1, 1] if row[1] == "compile" else None))
    monkeypatch.setattr(bench, "describe_machine", lambda: "a machine")
    monkeypatch.setattr(bench, "append_section", lambda lines: pytest.fail("--no-append was given"))
    bench.main(["--steps", "3", "--warmup", "2", "--profile-steps", "0", "--device", "cpu", "--no-append"])
    assert calls == [(step, mode, 3, 2, 0, 1, "cpu") for step in ("pretrain", "finetune")
                     for mode in ("eager", "compile")]
    assert "## bench_demo_step.py (a machine)" in capsys.readouterr().out


def test_defaults_and_refusals(bench, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = bench.parse_args([])
    assert (args.steps, args.warmup, args.profile_steps, args.threads, args.device) == (20, 10, 5, 1, "cpu")
    assert args.configs == ["pretrain", "finetune"] and args.modes == ["eager", "compile"] and not args.no_append
    assert bench.parse_args(["--configs", "finetune", "--modes", "compile"]).configs == ["finetune"]
    for argv, fragment in ((["--warmup", "0"], "the first step compiles"), (["--steps", "0"], "--steps"),
                           (["--device", "cuda"], "no CUDA device")):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
        assert fragment in capsys.readouterr().err
