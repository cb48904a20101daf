"""The arithmetic of benchmarks/bench_finetune.py, bench_pretrain.py and bench_pretrain_methods.py, driven with
fake models whose every stage advances a fake ``time.perf_counter`` by a known amount: warm-up steps excluded,
means over the timed steps, stage splits, the ratios and shares of the tables (worked out by hand), the
batching checks, memory from the right counter, and the settings handed to the children / mappers."""
import json
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from script_modules import load_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def load(monkeypatch):
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


def _table(lines, header_start):
    """The body rows of the markdown table whose header starts with ``header_start``, as lists of cells."""
    lines = list(lines)
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


# ------------------------------------------------------------------------------------------- bench_finetune
class FinetuneModel(nn.Module):
    """Each call costs the sum of its images' ``cost``; 10 trainable and 5 frozen parameters."""

    def __init__(self, clock):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(10))
        self.frozen = nn.Parameter(torch.zeros(5), requires_grad=False)
        self.clock, self.calls = clock, 0

    def forward(self, batch):
        self.calls += 1
        self.clock.advance(sum(x["cost"] for x in batch))
        return {"a": self.w.sum(), "b": 2 * self.w.sum()}


def _finetune_row(monkeypatch, ft, costs, shapes, device="cpu", variant="vanilla", force_pytorch=False,
                  compiled=False, rss=(1000, 1000)):
    clock = Clock()
    import bench_inputs  # its time_step times the steps

    monkeypatch.setattr(bench_inputs, "time", clock)
    monkeypatch.setattr(ft, "resource", FakeRusage(*rss))
    cfg = SimpleNamespace(model=SimpleNamespace(transformer=SimpleNamespace(use_compiled_op=True)))
    monkeypatch.setattr(ft, "load_config", lambda v, s, short: (cfg, f"configs/{v}_{s}.py"))
    requested = []

    def prepare(cfg_, batch_size, count):
        requested.append((batch_size, count))
        return [[{"cost": c, "image": torch.zeros(3, *hw)}] for c, hw in zip(costs[:count], shapes)]

    monkeypatch.setattr(ft, "prepare_batches", prepare)
    model = FinetuneModel(clock)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    monkeypatch.setattr(ft, "build_training", lambda cfg_, device_: (model, optimizer))
    from siamese_detr.modeling.ops import ms_deform_attn

    monkeypatch.setattr(ms_deform_attn, "compiled_op_available", lambda: compiled)
    row = ft.run_row(variant, "demo", 1, len(costs) - 1, device, force_pytorch, 480)
    return row, requested, cfg, model


def test_finetune_row_is_the_mean_of_the_steps_after_the_warm_up(load, monkeypatch):
    """Steps cost 100 (warm-up), 1, 3 s: 2 s/it; ru_maxrss 1000 -> 4072 KiB is 3 MiB; images 10x20, 12x8,
    30x16 span 8-30 px; 10 of 15 parameters train."""
    ft = load("bench_finetune")
    row, requested, _, _ = _finetune_row(monkeypatch, ft, [100.0, 1.0, 3.0], [(10, 20), (12, 8), (30, 16)],
                                         rss=(1000, 1000 + 3 * 1024))
    assert requested == [(1, 3)]  # iters + 1 batches: one warm-up, then the timed ones
    assert row["seconds"] == pytest.approx(2.0)
    assert row["peak_mb"] == pytest.approx(3.0)
    assert row["image_px"] == [8, 30]
    assert row["trainable_m"] == pytest.approx(10 / 1e6)
    assert (row["variant"], row["size"], row["batch"]) == ("vanilla", "demo", 1)
    assert row["config"] == "configs/vanilla_demo.py"
    assert row["attention"] == "pytorch"  # CPU


def test_finetune_row_on_cuda_resets_the_peak_after_the_warm_up_and_names_the_attention_path(load, monkeypatch):
    ft = load("bench_finetune")
    resets = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    model_ref = {}
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: resets.append(model_ref["m"].calls))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 5 * 2 ** 20)
    orig = FinetuneModel.__init__

    def init(self, clock):
        orig(self, clock)
        model_ref["m"] = self

    monkeypatch.setattr(FinetuneModel, "__init__", init)
    row, _, cfg, _ = _finetune_row(monkeypatch, ft, [100.0, 1.0, 3.0], [(8, 8)] * 3, device="cuda",
                                   variant="deformable-ms", compiled=True)
    assert resets == [1]  # after the warm-up step, before the first timed one
    assert row["peak_mb"] == pytest.approx(5.0) and row["seconds"] == pytest.approx(2.0)
    assert row["attention"] == "compiled" and cfg.model.transformer.use_compiled_op is True
    row, _, cfg, _ = _finetune_row(monkeypatch, ft, [100.0, 1.0, 3.0], [(8, 8)] * 3, device="cuda",
                                   variant="deformable-ms", compiled=True, force_pytorch=True)
    assert row["attention"] == "pytorch" and cfg.model.transformer.use_compiled_op is False


def test_finetune_load_config_resizes_every_variant_the_same_way(load):
    ft = load("bench_finetune")
    for variant in ("vanilla", "deformable-ms"):
        cfg, path = ft.load_config(variant, "demo", 480)
        assert path == ft.VARIANTS[variant][0]
        (aug,) = cfg.dataloader.train.mapper.augmentation
        assert (aug.short_edge_length, aug.max_size) == (224, 373)  # 224 * 5 / 3
        assert cfg.dataloader.train.mapper.augmentation_with_crop is None
        assert cfg.model.num_classes == 8 and cfg.dataloader.train.dataset.names == "synthetic_shapes_train"
        cfg, path = ft.load_config(variant, "r50", 300)
        assert path == ft.VARIANTS[variant][1]
        (aug,) = cfg.dataloader.train.mapper.augmentation
        assert (aug.short_edge_length, aug.max_size) == (300, 500)


def test_finetune_report_ratios_are_to_vanilla_of_the_same_size(load):
    ft = load("bench_finetune")
    args = SimpleNamespace(device="cpu", batch_size=2, iters=5, r50_short_side=480)

    def row(variant, size, seconds, attention="pytorch"):
        return {"variant": variant, "size": size, "config": "c.py", "batch": 2, "seconds": seconds,
                "peak_mb": 123.4, "trainable_m": 1.234, "image_px": [224, 373], "attention": attention}

    rows = [row("vanilla", "demo", 2.0), row("conditional", "demo", 3.0), row("deformable-ms", "demo", 1.0),
            row("vanilla", "r50", 4.0), row("deformable-ss", "r50", 10.0, "compiled"),
            row("conditional", "other", 1.0)]
    lines = ft.report(args, rows, "NOTE")
    table = _table(lines, "| variant | size |")
    assert [r[4:] for r in table] == [
        ["-", "2.000", "1.00x", "123", "1.23"], ["-", "3.000", "1.50x", "123", "1.23"],
        ["pytorch", "1.000", "0.50x", "123", "1.23"], ["-", "4.000", "1.00x", "123", "1.23"],
        ["compiled", "10.000", "2.50x", "123", "1.23"], ["-", "1.000", "nanx", "123", "1.23"],
    ]
    assert table[0][3] == "224-373" and lines[-1] == "NOTE"
    assert "5 timed steps after 1 warm-up" in "\n".join(lines)
    assert "ru_maxrss growth" in "\n".join(lines)


@pytest.mark.parametrize("argv, compiled, cuda, iters", [
    (["--quick"], False, False, 2), ([], False, False, 5), (["--device", "cuda"], True, True, 5),
    (["--device", "cpu"], True, True, 5),  # the compiled op exists, but the rows run on the CPU
])
def test_finetune_main_runs_every_row_once_and_both_paths_only_where_compiled(load, monkeypatch, capsys, argv,
                                                                              compiled, cuda, iters):
    ft = load("bench_finetune")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    from siamese_detr.modeling.ops import ms_deform_attn

    monkeypatch.setattr(ms_deform_attn, "compiled_op_available", lambda: compiled)
    calls = []

    def child(*row):
        calls.append(row)
        variant, size, *_ = row
        return {"variant": variant, "size": size, "config": "c", "batch": 2, "seconds": 1.0, "peak_mb": 1.0,
                "trainable_m": 1.0, "image_px": [1, 2], "attention": "x"}

    monkeypatch.setattr(ft, "run_in_subprocess", child)
    monkeypatch.setattr(ft, "describe_machine", lambda: "a machine")
    monkeypatch.setattr(ft, "append_section", lambda lines: pytest.fail("--no-append was given"))
    ft.main(argv + ["--no-append"])
    device = "cuda" if cuda and "cpu" not in argv else "cpu"
    both_paths = compiled and device == "cuda"
    note = capsys.readouterr().out.strip().splitlines()[-1]
    assert note.startswith("Deformable rows are measured with the PyTorch (grid_sample) path and with" if both_paths
                           else "The official compiled MultiScaleDeformableAttention extension is not importable")
    expected = []
    for size in ("demo", "r50"):
        for variant in ("vanilla", "conditional", "deformable-ss", "deformable-ms"):
            if size == "demo" and variant == "deformable-ss":
                continue  # no demo config
            both = variant.startswith("deformable") and both_paths
            for force in ([True, False] if both else [True]):
                expected.append((variant, size, 2, iters, device, force, 480))
    assert calls == expected


def test_finetune_defaults(load, monkeypatch):
    ft = load("bench_finetune")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ft.parse_args([])
    assert (args.batch_size, args.r50_short_side, args.device, args.sizes) == (2, 480, "cpu", ["demo", "r50"])
    assert args.variants == list(ft.VARIANTS) and not args.quick and not args.no_append


# ------------------------------------------------------------------------------------------- bench_pretrain
class FakeLoss:
    """What ``sum(losses.values())`` gives for one value; its backward costs 128 * scale."""

    def __init__(self, clock):
        self.clock = clock

    def __radd__(self, other):
        return self

    def backward(self):
        self.clock.advance(128 * self.clock.scale)


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


class PretrainModel(nn.Module):
    """Per step (times the batch's ``scale``): backbone on the 2B views 1, on the 2Bn crops 2 (``split_crops``:
    one call per crop image; ``extra_backbone``: a third call), encode 4, decode 8 (``split_decoder``: one pass
    per direction; ``repeat_decoder``: the 2B batch twice), matching 16,
    criterion's own 32, the rest of the forward 64, backward 128 (FakeLoss), optimizer 256 (FakeOptimizer)."""

    def __init__(self, clock, n, split_crops=False, split_decoder=False, extra_backbone=False, repeat_decoder=False):
        super().__init__()
        self.clock, self.n, self.split_crops, self.split_decoder = clock, n, split_crops, split_decoder
        self.extra_backbone, self.repeat_decoder = extra_backbone, repeat_decoder
        self.backbone = Costly(clock)
        self.criterion = Costly(clock, matcher=Costly(clock))
        self.transformer = SimpleNamespace(
            encode=lambda srcs, *a: clock.advance(4 * clock.scale),
            decode=lambda mem, *a: clock.advance(8 * clock.scale),
        )
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        s = self.clock.scale = batch[0]["scale"]
        b = len(batch)
        self.backbone(torch.zeros(2 * b, 1), 1 * s)
        if self.split_crops:
            for _ in range(2 * b):
                self.backbone(torch.zeros(self.n, 1), 2 * s / (2 * b))
        else:
            self.backbone(torch.zeros(2 * b * self.n, 1), 2 * s)
        if self.extra_backbone:
            self.backbone(torch.zeros(2 * b, 1), 0)
        self.transformer.encode([torch.zeros(2 * b, 1)])
        if self.split_decoder:
            self.transformer.decode(SimpleNamespace(memory=torch.zeros(b, 1)))
            self.transformer.decode(SimpleNamespace(memory=torch.zeros(b, 1)))
        else:
            self.transformer.decode(SimpleNamespace(memory=torch.zeros(2 * b, 1)))
        if self.repeat_decoder:
            self.transformer.decode(SimpleNamespace(memory=torch.zeros(2 * b, 1)))
        self.criterion(torch.zeros(1), 32 * s)
        self.clock.advance(64 * s)
        return {"loss": FakeLoss(self.clock)}


class FakeOptimizer:
    def __init__(self, clock):
        self.clock = clock

    def zero_grad(self):
        pass

    def step(self):
        self.clock.advance(256 * self.clock.scale)


def _pretrain_batches(scales, b=2, hw=((40, 48),)):
    return [[{"scale": s, "views": [{"image": torch.zeros(3, *hw[(i + j) % len(hw)])}]} for j in range(b)]
            for i, s in enumerate(scales)]


BASE = {"backbone views": 1, "backbone crops": 2, "encoder": 4, "decoder": 8, "matching": 16,
        "losses + heads": 32 + 64, "backward": 128, "optimizer": 256, "total": 511}


def test_pretrain_time_steps_split_the_step_and_average_after_the_warm_up(load, monkeypatch):
    """Warm-up step x1000, timed steps x1 and x3: every stage is twice its base cost; losses + heads is the
    criterion without matching (32) plus the rest of the forward (64)."""
    bp = load("bench_pretrain")
    clock = Clock()
    monkeypatch.setattr(bp, "time", clock)
    model = PretrainModel(clock, n=5)
    seconds, checks = bp.time_steps(model, FakeOptimizer(clock), _pretrain_batches([1000, 1, 3]), 1, "cpu")
    assert seconds == pytest.approx({k: 2 * v for k, v in BASE.items()})
    assert checks == [{"backbone": [4, 20], "encoder": [4], "decoder": [4]}] * 3


def test_pretrain_time_steps_with_two_warm_up_steps(load, monkeypatch):
    bp = load("bench_pretrain")
    clock = Clock()
    monkeypatch.setattr(bp, "time", clock)
    seconds, _ = bp.time_steps(PretrainModel(clock, n=5), FakeOptimizer(clock),
                               _pretrain_batches([1000, 500, 2]), 2, "cpu")
    assert seconds == pytest.approx({k: 2 * v for k, v in BASE.items()})


def test_pretrain_time_steps_reset_the_cuda_peak_after_the_warm_up(load, monkeypatch):
    bp = load("bench_pretrain")
    clock = Clock()
    monkeypatch.setattr(bp, "time", clock)
    model = PretrainModel(clock, n=5)
    resets = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: resets.append(model.calls))
    bp.time_steps(model, FakeOptimizer(clock), _pretrain_batches([1000, 1, 3]), 1, "cuda")
    assert resets == [1]


def _run_config(bp, monkeypatch, model_kwargs, device="cpu", rss=(1000, 1000)):
    clock = Clock()
    monkeypatch.setattr(bp, "time", clock)
    monkeypatch.setattr(bp, "resource", FakeRusage(*rss))
    cfg = SimpleNamespace(model=SimpleNamespace(num_regions=5, num_queries=20),
                          dataloader=SimpleNamespace(train=SimpleNamespace(mapper=SimpleNamespace(crop_size=32))))
    loaded, requested = [], []
    monkeypatch.setattr(bp, "load_config", lambda name, online_proposals: loaded.append((name, online_proposals))
                        or cfg)

    def prepare(cfg_, batch_size, count):
        requested.append((batch_size, count))
        return _pretrain_batches([1000] + [1] * (count - 1), b=batch_size, hw=[(40, 48), (36, 64)])

    monkeypatch.setattr(bp, "prepare_batches", prepare)
    model = PretrainModel(clock, n=5, **model_kwargs)
    monkeypatch.setattr(bp, "build_training", lambda cfg_, device_: (model, FakeOptimizer(clock)))
    result = bp.run_config("demo", 2, 3, 1, device)
    return result, loaded, requested


def test_pretrain_run_config_checks_one_backbone_call_for_the_crops_and_one_decoder_pass(load, monkeypatch):
    """B = 2, n = 5: per step the backbone sees [4] then [20] and the decoder [4]; 2048 KiB of RSS growth
    is 2 MiB."""
    bp = load("bench_pretrain")
    r, loaded, requested = _run_config(bp, monkeypatch, {}, rss=(1000, 3048))
    assert loaded == [("demo", True)] and requested == [(2, 4)]
    assert r["one_backbone_call_for_crops"] is True and r["one_decoder_pass"] is True
    assert r["backbone_calls"] == [4, 20] and r["decoder_calls"] == [4]
    assert r["seconds"] == pytest.approx(BASE)
    assert r["peak_mb"] == pytest.approx(2.0) and r["memory"] == "ru_maxrss growth"
    assert (r["regions"], r["crop"], r["queries"], r["view_px"]) == (5, 32, 20, [36, 64])
    r, _, _ = _run_config(bp, monkeypatch, {"split_crops": True})
    assert r["one_backbone_call_for_crops"] is False and r["one_decoder_pass"] is True
    r, _, _ = _run_config(bp, monkeypatch, {"extra_backbone": True})
    assert r["one_backbone_call_for_crops"] is False and r["one_decoder_pass"] is True
    for kwargs in ({"split_decoder": True}, {"repeat_decoder": True}):
        r, _, _ = _run_config(bp, monkeypatch, kwargs)
        assert r["one_backbone_call_for_crops"] is True and r["one_decoder_pass"] is False


def test_pretrain_data_wait_is_the_share_of_the_timed_steps_spent_in_next(load, monkeypatch):
    """Warm-up: wait 1000 + step 511 x 7; timed: waits 1 and 3, steps 511 and 511 x 2."""
    bp = load("bench_pretrain")
    import detectron2.config

    clock = Clock()
    import bench_inputs  # its time_step times the steps

    monkeypatch.setattr(bp, "time", clock)
    monkeypatch.setattr(bench_inputs, "time", clock)
    train = SimpleNamespace(num_workers=0, total_batch_size=4)
    cfgs = []
    monkeypatch.setattr(bp, "load_config", lambda name, online_proposals: cfgs.append((name, online_proposals))
                        or SimpleNamespace(dataloader=SimpleNamespace(train=train)))
    model = PretrainModel(clock, n=5)
    monkeypatch.setattr(bp, "build_training", lambda cfg, device: (model, FakeOptimizer(clock)))

    def loader(cfg):
        assert cfg is train

        def gen():
            for wait, scale in ((1000, 7), (1, 1), (3, 2)):
                clock.advance(wait)
                yield _pretrain_batches([scale])[0]

        return gen()

    monkeypatch.setattr(detectron2.config, "instantiate", loader)
    w = bp.data_wait(iters=2, warmup=1, num_workers=3, device="cpu", online=False)
    total = (1 + 511) + (3 + 2 * 511)
    assert cfgs == [("demo", False)] and train.num_workers == 3
    assert w["seconds"] == pytest.approx(total / 2) and w["wait"] == pytest.approx(2.0)
    assert w["share"] == pytest.approx(4 / total)
    assert (w["batch"], w["workers"], w["proposals"]) == (4, 3, "EdgeBoxes store")


def test_pretrain_bound_by_names_the_largest_group_and_its_share(load):
    bp = load("bench_pretrain")
    s = {"backbone views": 1, "backbone crops": 2, "encoder": 3, "decoder": 4, "matching": 5,
         "losses + heads": 6, "backward": 30, "optimizer": 9, "total": 60}
    assert bp.bound_by(s) == "transformer (encoder + decoder forward, and backward) 62%"  # 37 / 60
    s.update({"backbone views": 20, "backbone crops": 25, "total": 100})
    assert bp.bound_by(s) == "frozen backbone (views + crops) 45%"
    s.update({"backbone views": 1, "matching": 40})
    assert bp.bound_by(s) == "matching 40%"


def test_pretrain_stage_table_shares_are_of_the_step_total(load):
    bp = load("bench_pretrain")
    seconds = {k: v / 1000 for k, v in BASE.items()}
    rows = _table(bp.stage_table([{"model": "demo", "batch": 2, "view_px": [128, 224], "seconds": seconds,
                                   "peak_mb": 99.6}]), "| model |")
    assert rows == [["demo", "2", "128-224", "0.511", "0.001 (0%)", "0.002 (0%)", "0.004 (1%)", "0.008 (2%)",
                     "0.016 (3%)", "0.096 (19%)", "0.128 (25%)", "0.256 (50%)", "100",
                     "optimizer 50%"]]


def test_pretrain_wait_lines_compare_with_the_loaderless_step_of_the_same_batch(load):
    bp = load("bench_pretrain")
    waits = [{"proposals": "online EdgeBoxes", "batch": 4, "seconds": 0.5, "share": 0.125, "workers": 2}]
    results = [{"model": "r50", "batch": 4, "seconds": {"total": 9.0}},
               {"model": "demo", "batch": 2, "seconds": {"total": 0.2}},
               {"model": "demo", "batch": 4, "seconds": {"total": 0.3}}]
    text = "\n".join(bp.wait_lines(waits, results, "cpu"))
    assert _table(text.splitlines(), "| proposals |") == [["online EdgeBoxes", "4", "0.500", "**12.5%**"]]
    assert "(table above, demo batch 4) takes 0.300 s/it" in text


def test_pretrain_report_says_false_when_any_row_failed_a_batching_check(load):
    bp = load("bench_pretrain")
    args = SimpleNamespace(device="cpu")
    seconds = dict(BASE)
    row = {"model": "demo", "batch": 2, "view_px": [1, 2], "seconds": seconds, "peak_mb": 1.0,
           "memory": "ru_maxrss growth", "one_backbone_call_for_crops": True, "one_decoder_pass": True}
    waits = [{"proposals": "p", "batch": 4, "seconds": 0.5, "share": 0.1}]
    text = "\n".join(bp.report(args, [row, dict(row, one_backbone_call_for_crops=False)], waits, "3", 1))
    assert "in ONE call: False" in text and "in ONE pass): True" in text
    assert "ru_maxrss growth in a fresh process per row" in text and "after 1 warm-up" in text
    text = "\n".join(bp.report(args, [row, dict(row, one_decoder_pass=False)], waits, "3", 1))
    assert "in ONE call: True" in text and "in ONE pass): False" in text


@pytest.mark.parametrize("quick, store", [(True, True), (False, False)])
def test_pretrain_main_iterations_and_data_wait_runs(load, monkeypatch, tmp_path, quick, store):
    bp = load("bench_pretrain")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    if store:
        (tmp_path / "proposals").mkdir()
        (tmp_path / "proposals" / bp.STORE).write_text("")
    runs, waits = [], []

    def child(name, b, iters, warmup, device):
        runs.append((name, b, iters, warmup, device))
        return {"model": name, "batch": b, "seconds": dict(BASE), "peak_mb": 1.0, "memory": "m", "view_px": [1, 2],
                "backbone_calls": [], "decoder_calls": [], "one_backbone_call_for_crops": True,
                "one_decoder_pass": True}

    def wait(**kw):
        waits.append(kw)
        return {"proposals": "p", "batch": 4, "workers": 2, "seconds": 1.0, "wait": 0.1, "share": 0.1}

    monkeypatch.setattr(bp, "run_in_subprocess", child)
    monkeypatch.setattr(bp, "data_wait", wait)
    models = ["demo", "demo-deformable-ms", "r50-conditional"]
    bp.main((["--quick"] if quick else []) + ["--no-append", "--models", *models])
    demo, r50 = (3, 1) if quick else (10, 3)
    assert runs == [("demo", 2, demo, 1, "cpu"), ("demo", 4, demo, 1, "cpu"), ("demo-deformable-ms", 2, demo, 1, "cpu"),
                    ("demo-deformable-ms", 4, demo, 1, "cpu"), ("r50-conditional", 2, r50, 1, "cpu"),
                    ("r50-conditional", 4, r50, 1, "cpu")]
    online = [False, True] if store else [True]
    assert waits == [{"iters": 10 if quick else 40, "warmup": 5, "num_workers": 2, "device": "cpu", "online": o}
                     for o in online]


def test_pretrain_defaults(load, monkeypatch):
    bp = load("bench_pretrain")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = bp.parse_args([])
    assert (args.batch_sizes, args.models, args.device) == ([2, 4], list(bp.CONFIGS), "cpu")


def test_pretrain_load_config_seeds_the_mapper_and_uses_the_builtin_data(load):
    bp = load("bench_pretrain")
    cfg = bp.load_config("r50", online_proposals=True)
    mapper = cfg.dataloader.train.mapper
    assert mapper.seed == 0 and cfg.dataloader.train.dataset.names == "synthetic_shapes_train"
    assert mapper.proposal_source.method == "edgeboxes"


# ----------------------------------------------------------------------------------- bench_pretrain_methods
class CostlyBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, clock, cost):
        ctx.clock, ctx.cost = clock, cost
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        ctx.clock.advance(ctx.cost)
        return grad, None, None


class MethodModel(nn.Module):
    """Backbone on the image 1, on the crops 2, encode 4, decode 8, rest of the forward 16, backward 32; one
    trainable parameter (and a frozen one)."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock
        self.backbone = Costly(clock)
        self.w = nn.Parameter(torch.tensor([3.0, 4.0]))
        self.frozen = nn.Parameter(torch.ones(7), requires_grad=False)
        self.transformer = SimpleNamespace(encode=lambda *a: clock.advance(4), decode=lambda *a: clock.advance(8))

    def forward(self, batch):
        self.backbone(torch.zeros(1), 1.0)
        self.backbone(torch.zeros(1), 2.0)
        self.transformer.encode()
        self.transformer.decode()
        self.clock.advance(16)
        return {"loss": CostlyBackward.apply(self.w, self.clock, 32.0).sum()}


def test_methods_make_runner_splits_every_step_alike(load, monkeypatch):
    """Two steps, each: image 1, crops 2, encoder 4, decoder 8, rest 16, backward 32, optimizer 64 (the clip);
    the gradient is clipped to norm 0.1 over the trainable parameters only."""
    bench = load("bench_pretrain_methods")
    clock = Clock()
    monkeypatch.setattr(bench, "time", clock)
    clips = []

    def clip(params, max_norm):
        clips.append(([p.shape for p in params], max_norm))
        clock.advance(64)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    model, step = bench.make_runner(MethodModel(clock), None, "cpu")
    expected = {"backbone image": 1, "backbone crops": 2, "encoder": 4, "decoder": 8, "rest of forward": 16,
                "backward": 32, "optimizer": 64, "total": 127}
    assert step() == expected
    assert step() == expected  # the backbone call count starts again every step
    assert clips == [([torch.Size([2])], 0.1)] * 2


def test_methods_run_interleaved_rotates_the_order_and_averages_after_the_warm_up(load, monkeypatch):
    bench = load("bench_pretrain_methods")
    log, made = [], []
    base = {"up_detr": 1.0, "siamese_detr": 2.0, "detreg": 4.0}

    def make_runner(cfg, batch, device):
        made.append((cfg, batch, device))
        method = cfg
        calls = []

        def step():
            calls.append(None)
            log.append(method)
            k = len(calls) - 1  # 0 = warm-up
            total = 1000.0 if k == 0 else base[method] * k
            return {"encoder": total / 2, "total": total}

        module = nn.Module()
        module.a = nn.Parameter(torch.zeros(int(base[method]) * 1000))
        module.b = nn.Parameter(torch.zeros(50), requires_grad=False)
        return module, step

    monkeypatch.setattr(bench, "make_runner", make_runner)
    configs = {m: m for m in bench.METHODS}
    batches = {m: "batch of " + m for m in bench.METHODS}
    means, params = bench.run_interleaved(configs, batches, 3, "cpu")
    assert sorted(made) == sorted((m, "batch of " + m, "cpu") for m in bench.METHODS)
    # rounds 1, 2, 3 cost 1, 2, 3 x base: mean 2 x base
    assert means == {m: {"encoder": base[m], "total": 2 * base[m]} for m in bench.METHODS}
    assert params == {"up_detr": 1000, "siamese_detr": 2000, "detreg": 4000}
    assert Counter(log[:3]) == Counter(bench.METHODS)  # warm-up round: each once
    rounds = [log[3 + 3 * r: 6 + 3 * r] for r in range(3)]
    for m in bench.METHODS:
        assert sorted(r.index(m) for r in rounds) == [0, 1, 2]  # first, second and last once each


def test_methods_memory_subprocess_hands_the_child_the_same_settings(load, monkeypatch):
    bench = load("bench_pretrain_methods")
    args = bench.parse_args(["--size", "tiny", "--variant", "vanilla", "--batch-size", "3", "--iters", "2",
                             "--short-side", "96", "--device", "cpu"])
    seen = []

    def run(cmd, **kw):
        seen.append(cmd)
        return SimpleNamespace(returncode=0, stdout='loading\n{"peak_mib": 12.5, "peak_reset": true}\n', stderr="")

    monkeypatch.setattr(bench.subprocess, "run", run)
    assert bench.memory_subprocess("detreg", args) == 12.5
    (cmd,) = seen
    assert cmd[0] == sys.executable and Path(cmd[1]).name == "bench_pretrain_methods.py"
    child = bench.parse_args(cmd[2:])
    assert child.memory_child == "detreg"
    for key in ("size", "variant", "batch_size", "iters", "short_side", "device"):
        assert getattr(child, key) == getattr(args, key), key
    monkeypatch.setattr(bench.subprocess, "run",
                        lambda cmd, **kw: SimpleNamespace(returncode=1, stdout="", stderr="boom"))
    with pytest.raises(RuntimeError, match="memory measurement of siamese_detr failed:\nboom"):
        bench.memory_subprocess("siamese_detr", args)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_methods_memory_child_times_its_own_method_after_a_reset(load, monkeypatch, capsys, device):
    bench = load("bench_pretrain_methods")
    monkeypatch.setattr(bench, "build_model_configs", lambda size, variant: {m: "cfg " + m for m in bench.METHODS})
    monkeypatch.setattr(bench, "build_batches", lambda size, b, short: {m: "batch " + m for m in bench.METHODS})
    steps, events = [], []

    def make_runner(cfg, batch, device_):
        assert (cfg, batch, device_) == ("cfg up_detr", "batch up_detr", device)
        return None, lambda: steps.append(1) or events.append("step")

    monkeypatch.setattr(bench, "make_runner", make_runner)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: events.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 7 * 2 ** 20)
    args = SimpleNamespace(size="tiny", variant="conditional", batch_size=2, short_side=64, iters=3,
                           device=device, memory_child="up_detr")
    peak = bench.memory_child(args)
    assert len(steps) == 4  # the warm-up and the --iters steps
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["peak_mib"] == peak
    if device == "cuda":
        assert events == ["reset"] + ["step"] * 4 and peak == 7.0


def test_methods_report_paper_ratios_and_profile_shares(load):
    bench = load("bench_pretrain_methods")
    args = bench.parse_args(["--size", "tiny", "--device", "cpu", "--iters", "3"])
    prof = {"backbone image": 0.01, "backbone crops": 0.02, "encoder": 0.03, "decoder": 0.04,
            "rest of forward": 0.05, "backward": 0.3, "optimizer": 0.05, "total": 0.5}
    means = {"up_detr": dict(prof, total=0.5), "siamese_detr": dict(prof, total=1.0),
             "detreg": dict(prof, total=0.25)}
    params = {m: 1_000_000 for m in bench.METHODS}
    text = bench.report(args, means, {"up_detr": 0.0, "siamese_detr": 5.0, "detreg": 1.0}, params, "RSS")
    lines = text.splitlines()
    main_rows = {r[0]: r[1:] for r in _table(lines, "| method | s/it |")}
    # paper: 0.4036 / 0.3118 = 1.294, 7528 / 7377 = 1.020; 0.3528 / 0.3118 = 1.131, 8885 / 7377 = 1.204
    assert main_rows["Siamese DETR"] == ["1.0000", "2.00", "5", "nan", "1.00", "0.4036", "7528", "19.49",
                                         "1.29 / 1.02"]
    assert main_rows["DETReg"][-1] == "1.13 / 1.20" and main_rows["UP-DETR"][-1] == "1.00 / 1.00"
    assert main_rows["DETReg"][1] == "0.50"
    profile = {r[0]: r[1:] for r in _table(lines, "| method | backbone image |")}
    assert profile["DETReg"] == ["0.0100 (4%)", "0.0200 (8%)", "0.0300 (12%)", "0.0400 (16%)", "0.0500 (20%)",
                                 "0.3000 (120%)", "0.0500 (20%)"]
    assert profile["UP-DETR"][5] == "0.3000 (60%)"
    text = bench.report(args, means, None, params, "not measured")
    assert {r[0]: r[3:5] for r in _table(text.splitlines(), "| method | s/it |")}["DETReg"] == ["nan", "nan"]
    assert "3 interleaved rounds after 1 warm-up" in text


def test_methods_batches_give_every_mapper_the_same_images_and_base_resize(load, monkeypatch):
    """Spies on the three mappers: the same images in the same order (a skipped image skipped by the one
    mapper that skips it), one seed, and short side ``--short-side`` (max 1.5x) for all three."""
    bench = load("bench_pretrain_methods")
    from detectron2.data import DatasetCatalog

    import siamese_detr.data.detreg_mapper as dm
    import siamese_detr.data.proposals.sources as src
    import siamese_detr.data.siamese_mapper as sm
    import siamese_detr.data.up_detr_mapper as um

    dicts = [{"image_id": i} for i in range(3)]
    monkeypatch.setattr(DatasetCatalog, "get", lambda name: dicts if name == "synthetic_shapes_train" else None)
    made = {}

    def spy(name, skip=()):
        def build(**kw):
            made[name] = kw
            return lambda d: None if d["image_id"] in skip else (name, d["image_id"])

        return build

    monkeypatch.setattr(um, "UPDETRMapper", spy("up_detr"))
    monkeypatch.setattr(sm, "SiameseViewMapper", spy("siamese_detr", skip=(1,)))
    monkeypatch.setattr(dm, "DETRegMapper", spy("detreg"))
    monkeypatch.setattr(src, "RandomProposals", lambda **kw: ("random", kw))
    batches = bench.build_batches("r50", 4, 400, seed=3)
    assert batches == {"up_detr": [("up_detr", i) for i in (0, 1, 2, 0)],
                       "siamese_detr": [("siamese_detr", i) for i in (0, 2, 0, 2)],
                       "detreg": [("detreg", i) for i in (0, 1, 2, 0)]}
    up, si, de = made["up_detr"], made["siamese_detr"], made["detreg"]
    assert up["seed"] == si["seed"] == de["seed"] == 3
    assert (si["short_side_range"], si["max_size"]) == ((400, 400), 600)
    for kw in (up, de):
        (resize,) = kw["augmentation"]
        assert (resize.short_edge_length, resize.max_size) == ((400, 400), 600)
    assert de["augmentation_with_crop"] is None
    assert (up["num_patches"], up["patch_size"], si["num_regions"], si["crop_size"]) == (10, 128, 10, 128)
    assert (de["num_proposals"], de["crop_size"]) == (30, 128)
    assert si["proposal_source"] == de["proposal_source"] == ("random", {"num_boxes": 256, "seed": 3})
    bench.build_batches("tiny", 2, 64)
    up, si, de = made["up_detr"], made["siamese_detr"], made["detreg"]
    assert (up["num_patches"], up["patch_size"], si["num_regions"], si["crop_size"]) == (5, 32, 5, 32)
    assert (de["num_proposals"], de["crop_size"]) == (10, 32)


def test_methods_model_configs_share_one_finetune_model(load):
    bench = load("bench_pretrain_methods")
    for size, regions in (("tiny", 5), ("r50", 10)):
        configs = bench.build_model_configs(size, "vanilla")
        assert configs["siamese_detr"].num_regions == regions and configs["up_detr"].num_patches == regions
        assert all(c.allow_random_backbone for c in configs.values())
    conditional = bench.build_model_configs("tiny", "conditional")
    vanilla = bench.build_model_configs("tiny", "vanilla")
    assert conditional["detreg"].transformer._target_ != vanilla["detreg"].transformer._target_
    assert conditional["detreg"].num_queries == conditional["up_detr"].num_queries == \
        conditional["siamese_detr"].num_queries


def test_methods_defaults(load, monkeypatch):
    bench = load("bench_pretrain_methods")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = bench.parse_args([])
    assert (args.size, args.variant, args.batch_size, args.iters, args.short_side, args.device, args.memory) == \
        ("r50", "conditional", 4, 5, 400, "cpu", "rss")


@pytest.mark.parametrize("memory", ["rss", "skip"])
def test_methods_main_measures_each_methods_memory_in_its_own_child(load, monkeypatch, tmp_path, memory):
    bench = load("bench_pretrain_methods")
    monkeypatch.setattr(bench, "build_model_configs", lambda size, variant: "configs")
    monkeypatch.setattr(bench, "build_batches", lambda size, b, short: "batches")
    stages = {s: 0.0 for s in bench.STAGES}
    totals = {"up_detr": 0.5, "siamese_detr": 1.0, "detreg": 0.75}
    monkeypatch.setattr(bench, "run_interleaved", lambda configs, batches, iters, device: (
        {m: dict(stages, total=t) for m, t in totals.items()}, {m: 1_000_000 for m in bench.METHODS}))
    children = []
    peaks = {"up_detr": 200.0, "siamese_detr": 300.0, "detreg": 500.0}
    monkeypatch.setattr(bench, "memory_subprocess", lambda method, args: children.append(method) or peaks[method])
    monkeypatch.setattr(bench, "describe_machine", lambda: "a machine")
    monkeypatch.setattr(sys.modules["results_md"], "RESULTS", tmp_path / "RESULTS.md")  # append_section's file
    text = bench.main(["--size", "tiny", "--device", "cpu", "--memory", memory])
    rows = {r[0]: r[1:5] for r in _table(text.splitlines(), "| method | s/it |")}
    if memory == "skip":
        assert children == [] and rows["DETReg"] == ["0.7500", "1.50", "nan", "nan"]
        assert "peak memory = not measured" in text
    else:
        assert sorted(children) == sorted(bench.METHODS)
        assert rows["Siamese DETR"] == ["1.0000", "2.00", "300", "1.50"]
        assert rows["DETReg"] == ["0.7500", "1.50", "500", "2.50"]
        assert "peak RSS (VmHWM) growth of the steps in a fresh process (CPU)" in text
    # a new RESULTS.md starts with its header, as every benchmark writes it
    assert (tmp_path / "RESULTS.md").read_text() == sys.modules["results_md"].HEADER + "\n" + text
