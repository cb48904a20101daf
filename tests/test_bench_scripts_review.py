"""The arithmetic of benchmarks/bench_finetune.py and bench_pretrain.py, driven with fake models whose every
stage advances a fake ``time.perf_counter`` by a known amount: warm-up steps excluded, means over the timed
steps, stage splits, the ratios and shares of the tables (worked out by hand), the batching checks, memory from
the right counter, and the settings handed to the children / mappers (bench_pretrain_methods.py:
test_bench_methods_review.py)."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench_review_fakes import Clock, Costly, FakeRusage, benchmark_loader, table_rows


@pytest.fixture
def load(monkeypatch):
    return benchmark_loader(monkeypatch)


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
    table = table_rows(lines, "| variant | size |")
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


def test_pretrain_data_wait_refuses_workers_under_a_temporary_folder_too_long_for_their_sockets(load, monkeypatch):
    """With loader workers and a $TMPDIR whose worker sockets would pass 107 bytes, the data-wait part stops
    before it builds the model or the loader (its first batch would never come), naming TMPDIR and the fix it
    can take (it measures the workers, so turning them off is not offered). Without workers it runs."""
    bp = load("bench_pretrain")
    import tempfile

    import detectron2.config

    long_dir = "/" + "d" * 79  # 80 bytes: sockets of 112 (only named, never made)
    monkeypatch.setattr(tempfile, "tempdir", long_dir)
    monkeypatch.setattr(bp.torch.multiprocessing, "get_sharing_strategy", lambda: "file_descriptor")
    train = SimpleNamespace(num_workers=0, total_batch_size=4)
    monkeypatch.setattr(bp, "load_config", lambda name, online_proposals: SimpleNamespace(
        dataloader=SimpleNamespace(train=train)))
    built = []
    monkeypatch.setattr(bp, "build_training", lambda cfg, device: built.append(cfg) or (None, None))
    monkeypatch.setattr(detectron2.config, "instantiate", lambda cfg: iter(()))
    with pytest.raises(SystemExit) as stop:
        bp.data_wait(iters=1, warmup=0, num_workers=2, device="cpu", online=False)
    message = str(stop.value)
    assert long_dir in message and "(80 bytes, from $TMPDIR)" in message and "(112 bytes, at most 107)" in message
    assert "2 loader workers" in message and "TMPDIR=/tmp" in message and "num_workers=0" not in message
    assert built == []
    with pytest.raises(StopIteration):  # no workers: past the check, to the (empty) loader
        bp.data_wait(iters=1, warmup=0, num_workers=0, device="cpu", online=False)
    assert len(built) == 1


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
    rows = table_rows(bp.stage_table([{"model": "demo", "batch": 2, "view_px": [128, 224], "seconds": seconds,
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
    assert table_rows(text.splitlines(), "| proposals |") == [["online EdgeBoxes", "4", "0.500", "**12.5%**"]]
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
