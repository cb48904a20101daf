"""The arithmetic of benchmarks/bench_pretrain_methods.py (Siamese DETR vs UP-DETR vs DETReg), driven with
fake models whose every stage advances a fake ``time.perf_counter`` by a known amount: the interleaved rounds,
the step split, the paper ratios and profile shares (worked out by hand), the memory children and the batches
handed to every method."""
import json
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench_review_fakes import Clock, Costly, benchmark_loader, table_rows


@pytest.fixture
def load(monkeypatch):
    return benchmark_loader(monkeypatch)


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
    main_rows = {r[0]: r[1:] for r in table_rows(lines, "| method | s/it |")}
    # paper: 0.4036 / 0.3118 = 1.294, 7528 / 7377 = 1.020; 0.3528 / 0.3118 = 1.131, 8885 / 7377 = 1.204
    assert main_rows["Siamese DETR"] == ["1.0000", "2.00", "5", "nan", "1.00", "0.4036", "7528", "19.49",
                                         "1.29 / 1.02"]
    assert main_rows["DETReg"][-1] == "1.13 / 1.20" and main_rows["UP-DETR"][-1] == "1.00 / 1.00"
    assert main_rows["DETReg"][1] == "0.50"
    profile = {r[0]: r[1:] for r in table_rows(lines, "| method | backbone image |")}
    assert profile["DETReg"] == ["0.0100 (4%)", "0.0200 (8%)", "0.0300 (12%)", "0.0400 (16%)", "0.0500 (20%)",
                                 "0.3000 (120%)", "0.0500 (20%)"]
    assert profile["UP-DETR"][5] == "0.3000 (60%)"
    text = bench.report(args, means, None, params, "not measured")
    assert {r[0]: r[3:5] for r in table_rows(text.splitlines(), "| method | s/it |")}["DETReg"] == ["nan", "nan"]
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
    rows = {r[0]: r[1:5] for r in table_rows(text.splitlines(), "| method | s/it |")}
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
