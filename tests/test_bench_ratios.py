"""The arithmetic of benchmarks/bench_data.py and bench_ms_deform_attn.py with fake stages that advance a fake
``time.perf_counter`` by known amounts: warm-up calls excluded, per-image / per-call means, medians of the
alternating rounds, the ratios and shares printed (worked out by hand), and what each side is given."""
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench_review_fakes import Clock, benchmark_loader, table_rows


@pytest.fixture
def load(monkeypatch):
    return benchmark_loader(monkeypatch)


# ------------------------------------------------------------------------------------------------ bench_data
def test_resize_short_scales_the_short_side_keeping_the_aspect(load):
    bd = load("bench_data")
    assert bd.resize_short(np.zeros((100, 200, 3), np.uint8), 50).shape == (50, 100, 3)
    assert bd.resize_short(np.zeros((300, 120, 3), np.uint8), 60).shape == (150, 60, 3)


def test_bench_methods_is_seconds_per_image_after_an_untimed_call(load, monkeypatch):
    """A method costs base x short side per image (the resize-128 variant half that); the first call of a
    (method, size) costs 10^6 and must not count."""
    bd = load("bench_data")
    clock = Clock()
    monkeypatch.setattr(bd, "time", clock)
    base = {"edgeboxes": 1e-3, "selective_search": 4e-3, "random": 1e-5}
    seen, calls = set(), []

    def compute(im, method, image_id=None, **kw):
        key = (method, tuple(sorted(kw.items())), min(im.shape[:2]))
        calls.append(key)
        if key not in seen:
            seen.add(key)
            clock.advance(1e6)
        else:
            clock.advance(base[method] * min(im.shape[:2]) * (0.5 if "resize" in kw else 1.0))
        return None

    monkeypatch.setattr(bd, "compute_proposals", compute)
    images = [np.zeros((100, 150, 3), np.uint8), np.zeros((120, 80, 3), np.uint8)]
    rounds = {"edgeboxes": 3, "selective_search": 1, "random": 10}
    out = bd.bench_methods(images, (50, 200), rounds)
    for size in (50, 200):
        assert out[("edgeboxes (512)", size)] == pytest.approx(1e-3 * size)
        assert out[("selective_search fast", size)] == pytest.approx(4e-3 * size)
        assert out[("selective_search fast, resize 128", size)] == pytest.approx(2e-3 * size)
        assert out[("random (512)", size)] == pytest.approx(1e-5 * size)
    counts = {}
    for method, kw, size in calls:
        counts[(method, kw, size)] = counts.get((method, kw, size), 0) + 1
    assert counts[("edgeboxes", (("max_boxes", 512),), 50)] == 1 + 3 * 2
    assert counts[("random", (("max_boxes", 512),), 200)] == 1 + 10 * 2
    assert counts[("selective_search", (("resize", 128),), 200)] == 1 + 1 * 2


def test_recall_on_val_scores_each_method_on_its_own_proposals(load, monkeypatch):
    bd = load("bench_data")
    monkeypatch.setattr(bd, "compute_proposals", lambda im, method, **kw: (method, kw, int(im[0, 0])))

    def recall(props, dicts, ks):
        assert ks == (100,) and sorted(props) == [d["image_id"] for d in dicts]
        methods = {props.get(i)[0] for i in props}
        assert len(methods) == 1 and [props.get(d["image_id"])[2] for d in dicts] == [7, 9]
        return {"AR@100": {"edgeboxes": 0.25, "selective_search": 0.75}[methods.pop()]}

    monkeypatch.setattr(bd, "evaluate_proposal_recall", recall)
    images = [np.full((4, 4), 7), np.full((4, 4), 9)]
    out = bd.recall_on_val([{"image_id": "a"}, {"image_id": "b"}], images)
    assert out == {"edgeboxes (512)": 0.25, "selective_search fast": 0.75}


def test_bench_store_writes_the_announced_counts_and_times_get_after_its_warm_up(load, monkeypatch):
    """2000 images written in chunks of 900 (1 s per chunk), open 0.25 s; 20 lookups at 5 µs each after a
    warm-up of the same 20 at 1 s each. Box counts are U{1..511} (no image without a box)."""
    bd = load("bench_data")
    clock = Clock()
    monkeypatch.setattr(bd, "time", clock)
    written = {}

    class Writer:
        def __init__(self, path, num_images, total):
            written.update(path=path, num_images=num_images, total=total, chunks=[])

        def append(self, boxes, scores, counts, sizes):
            written["chunks"].append((boxes, scores, counts, sizes))
            clock.advance(1.0)

        def close(self, ids, method, meta):
            written["ids"] = ids
            Path(written["path"]).mkdir()
            (Path(written["path"]) / "data.bin").write_bytes(b"x" * 1000)

    gets = []

    class Store:
        @staticmethod
        def open(path):
            assert path == written["path"]
            clock.advance(0.25)
            return Store()

        def get(self, image_id):
            gets.append(image_id)
            clock.advance(1.0 if len(gets) <= 20 else 5e-6)

    monkeypatch.setattr(bd, "StoreWriter", Writer)
    monkeypatch.setattr(bd, "ProposalStore", Store)
    st = bd.bench_store(2000, lookups=20, chunk=900)
    counts = np.concatenate([c[2] for c in written["chunks"]])
    assert len(counts) == 2000 == written["num_images"] and [len(c[2]) for c in written["chunks"]] == [900, 900, 200]
    assert counts.min() >= 1 and counts.max() <= 511
    assert int(counts.sum()) == written["total"] == st["boxes"]
    for boxes, scores, c, sizes in written["chunks"]:
        assert boxes.shape == (int(c.sum()), 4) and scores.shape == (int(c.sum()),)
        assert (boxes[:, :2] <= boxes[:, 2:]).all() and (boxes[:, 2] <= 500).all() and (boxes[:, 3] <= 375).all()
        assert (sizes == [375, 500]).all()
    assert 246 < counts.mean() < 266  # ~256
    assert len(set(written["ids"])) == 2000 and set(gets) <= set(written["ids"])
    assert st["images"] == 2000 and st["mean_boxes"] == pytest.approx(st["boxes"] / 2000)
    assert st["write_s"] == pytest.approx(3.0) and st["open_s"] == pytest.approx(0.25)
    assert st["gb"] == pytest.approx(1e-6) and st["get_us"] == pytest.approx(5.0)
    assert not Path(written["path"]).exists()  # the temp store is deleted


def test_bench_mapper_rates_and_stage_shares_exclude_the_warm_up(load, monkeypatch):
    """Per sample: decode 1, proposals (store 1, online 9, random 0), geometry 1, resize 1 + two view warps 1
    each, augmentation 2, crops 1, the rest 1; the warm-up sample costs 100x."""
    bd = load("bench_data")
    import siamese_detr.data.proposals as proposals
    import siamese_detr.data.siamese_mapper as sm

    clock = Clock()
    monkeypatch.setattr(bd, "time", clock)
    monkeypatch.setattr(proposals, "StoreProposals", lambda path: ("store", path))
    monkeypatch.setattr(proposals, "OnlineProposals", lambda method, max_boxes: ("online", method, max_boxes))
    original = sm.simsiam_augment, sm.crop_regions
    cost = {("store", "p"): 1, ("online", "edgeboxes", 512): 9, None: 0}
    seen_sources, mapped = [], []

    class Mapper:
        def __init__(self, proposal_source, seed):
            seen_sources.append(proposal_source)
            self.source, self.k = proposal_source, 100
            self.policy = SimpleNamespace(sample=lambda: clock.advance(1 * self.k))

        def _read(self):
            clock.advance(1 * self.k)

        def _proposals(self):
            clock.advance(cost[self.source] * self.k)

        def _resize(self):
            clock.advance(1 * self.k)

        def _warp_view(self):
            clock.advance(1 * self.k)

        def __call__(self, d):
            mapped.append(d)
            self._read()
            self._proposals()
            self.policy.sample()
            self._resize()
            self._warp_view()
            self._warp_view()
            sm.simsiam_augment(2 * self.k)
            sm.crop_regions(1 * self.k)
            clock.advance(1 * self.k)
            self.k = 1

    monkeypatch.setattr(sm, "SiameseViewMapper", Mapper)
    monkeypatch.setattr(sm, "simsiam_augment", clock.advance)
    monkeypatch.setattr(sm, "crop_regions", clock.advance)
    patched = sm.simsiam_augment, sm.crop_regions
    rows = bd.bench_mapper(["d0", "d1", "d2", "d3", "d4"], 4, "p")
    assert seen_sources == [("store", "p"), ("online", "edgeboxes", 512), None]
    assert mapped == ["d0", "d0", "d1", "d2", "d3"] * 3  # warm-up on the first, then n
    assert (sm.simsiam_augment, sm.crop_regions) == patched and patched != original
    rate, share = rows["store (EdgeBoxes)"]
    assert rate == pytest.approx(4 / 40)
    assert share == pytest.approx({"decode": 0.1, "proposals": 0.1, "geometry": 0.1, "resize + warp": 0.3,
                                   "augmentation": 0.2, "crops": 0.1, "other": 0.1})
    rate, share = rows["online EdgeBoxes"]
    assert rate == pytest.approx(4 / 72) and share["proposals"] == pytest.approx(0.5)
    assert share["other"] == pytest.approx(1 / 18)
    rate, share = rows["random"]
    assert rate == pytest.approx(4 / 36) and share["proposals"] == 0


@pytest.fixture
def data_main(load, monkeypatch, tmp_path):
    """bench_data.main with every section faked; returns (module, calls, run) where run(argv) gives the
    printed lines."""
    bd = load("bench_data")
    import detectron2.data.detection_utils as du
    import siamese_detr.data.proposals as proposals
    from detectron2.data import DatasetCatalog

    calls = {}
    dicts = [{"image_id": f"i{i}", "file_name": f"f{i}"} for i in range(20)]
    monkeypatch.setattr(bd.cv2, "setNumThreads", lambda n: calls.setdefault("cv2_threads", n))
    monkeypatch.setattr(bd.torch, "set_num_threads", lambda n: calls.setdefault("torch_threads", n))
    monkeypatch.setattr(bd, "register_builtin_datasets", lambda: None)
    monkeypatch.setattr(DatasetCatalog, "get", lambda name: calls.setdefault("dataset", name) and dicts)
    monkeypatch.setattr(du, "read_image", lambda name, fmt: np.zeros((4, 6, 3), np.uint8))
    speed = {("edgeboxes (512)", 224): 0.5, ("edgeboxes (512)", 500): 2.0,
             ("selective_search fast", 224): 4.0, ("selective_search fast", 500): 10.0,
             ("selective_search fast, resize 128", 224): 0.25, ("selective_search fast, resize 128", 500): 0.5,
             ("random (512)", 224): 0.001, ("random (512)", 500): 0.002}

    def methods(images, sizes, rounds):
        calls["methods"] = (len(images), sizes, rounds)
        return speed

    monkeypatch.setattr(bd, "bench_methods", methods)
    monkeypatch.setattr(bd, "recall_on_val", lambda ds, ims: calls.setdefault("recall", (len(ds), len(ims)))
                        and {"edgeboxes (512)": 0.5, "selective_search fast": 0.625})

    def store(num):
        calls["store"] = num
        return {"images": num, "boxes": 3 * num, "mean_boxes": 3.0, "gb": 1.5, "write_s": 2.0, "open_s": 0.5,
                "get_us": 12.25}

    monkeypatch.setattr(bd, "bench_store", store)
    monkeypatch.setattr(bd, "compute_proposals", lambda im, method: (np.zeros((1, 4)), np.zeros(1)))
    monkeypatch.setattr(proposals, "write_store", lambda path, ids, *a, **kw: calls.setdefault("written", ids))

    def mapper(ds, n, path):
        calls["mapper"] = (len(ds), n)
        return {"store (EdgeBoxes)": (10.0, {"decode": 0.5, "other": 0.5}), "online EdgeBoxes": (2.5, {}),
                "random": (12.0, {})}

    monkeypatch.setattr(bd, "bench_mapper", mapper)
    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(sys.modules["results_md"], "RESULTS", results)  # where bd's append_section writes
    monkeypatch.setattr(bd, "describe_machine", lambda: "a machine")
    return bd, calls, results


def test_bench_data_main_tables_and_ratios(data_main, capsys):
    bd, calls, results = data_main
    bd.main(["--no-write"])
    out = capsys.readouterr().out.splitlines()
    assert calls["cv2_threads"] == 1 and calls["torch_threads"] == 1 and calls["dataset"] == "synthetic_shapes_val"
    assert calls["methods"] == (6, (224, 500), {"edgeboxes": 3, "selective_search": 1, "random": 10})
    assert calls["recall"] == (20, 20) and calls["store"] == 1_280_000 and calls["mapper"] == (20, 20)
    assert calls["written"] == [f"i{i}" for i in range(20)]
    assert table_rows(out, "| method | short 224 px")[0] == ["edgeboxes (512)", "2.00 img/s", "0.50 img/s"]
    assert table_rows(out, "| short side |") == [["224", "0.500", "4.000", "8.0x", "50.0", "62.5"],
                                                 ["500", "2.000", "10.000", "5.0x", "50.0", "62.5"]]
    assert table_rows(out, "| proposal source |")[0] == ["store (EdgeBoxes)", "10.0", "50%", "0%", "0%", "0%",
                                                         "0%", "0%", "50%"]
    assert "Ratios: store / online EdgeBoxes = 4.0x, random / store = 1.20x" in out
    assert any("**12.2 µs per get()**" in line or "**12.3 µs per get()**" in line for line in out)
    assert not results.exists()


def test_bench_data_main_quick_and_store_size(data_main, capsys):
    bd, calls, results = data_main
    bd.main(["--quick"])
    assert calls["methods"] == (2, (224, 500), {"edgeboxes": 1, "selective_search": 1, "random": 10})
    assert calls["recall"] == (16, 16) and calls["store"] == 128_000 and calls["mapper"] == (16, 8)
    text = results.read_text()
    assert text.startswith("# Benchmark results\n") and "## bench_data.py (a machine)" in text
    calls.clear()
    bd.main(["--store-images", "7"])
    assert calls["store"] == 7
    text = results.read_text()
    assert text.count("# Benchmark results") == 1 and text.count("## bench_data.py") == 2


# --------------------------------------------------------------------------------------- bench_ms_deform_attn
def test_alternating_swaps_the_first_every_round(load):
    bench = load("bench_ms_deform_attn")
    a, b = ("a", 1), ("b", 2)
    assert bench.alternating([a, b], 3) == [[a, b], [b, a], [a, b]]
    assert bench.alternating([a, b], 1) == [[a, b]]


def test_time_core_is_the_mean_of_forward_and_backward_after_two_warm_up_calls(load, monkeypatch):
    bench = load("bench_ms_deform_attn")
    clock = Clock()
    monkeypatch.setattr(bench, "time", clock)
    forward = iter([100.0, 100.0, 1.0, 2.0, 3.0])
    grads = []

    class Out:
        def backward(self, grad):
            grads.append(grad)
            clock.advance(10.0)

    def core(*inputs):
        assert inputs == ("v", "s", "l", "loc", "w")
        clock.advance(next(forward))
        return Out()

    assert bench.time_core(core, ("v", "s", "l", "loc", "w"), "G", 3) == pytest.approx(12.0)
    assert grads == ["G"] * 5


def test_core_inputs_shapes_ranges_and_level_starts(load):
    bench = load("bench_ms_deform_attn")
    (value, spatial, starts, loc, weights), grad = bench.core_inputs(2, None, [(3, 4), (2, 2)], 3, channels=5,
                                                                     points=2)
    assert value.shape == (2, 16, 3, 5) and spatial.tolist() == [[3, 4], [2, 2]] and starts.tolist() == [0, 12]
    assert loc.shape == (2, 16, 3, 2, 2, 2) and weights.shape == (2, 16, 3, 2, 2) and grad.shape == (2, 16, 15)
    assert loc.min() >= -0.1 and loc.max() <= 1.1 and loc.min() < 0 and loc.max() > 1
    torch.testing.assert_close(weights.sum((-2, -1)), torch.ones(2, 16, 3))
    assert value.requires_grad and loc.requires_grad and weights.requires_grad and weights.is_leaf
    (_, _, _, loc, _), grad = bench.core_inputs(1, 7, [(3, 4)], 2)
    assert loc.shape[1] == 7 and grad.shape == (1, 7, 64)


def test_query_major_core_computes_what_the_project_core_computes(load):
    """The two layouts: equal outputs, and gradients equal up to float summation order."""
    bench = load("bench_ms_deform_attn")
    from siamese_detr.modeling.ops.ms_deform_attn import multi_scale_deformable_attention_pytorch as points_major

    inputs, grad = bench.core_inputs(2, 5, [(4, 6), (2, 3)], 2, channels=3, points=3)
    a = bench.query_major_core(*inputs)
    grads_a = torch.autograd.grad(a, [inputs[0], inputs[3], inputs[4]], grad)
    b = points_major(*inputs)
    grads_b = torch.autograd.grad(b, [inputs[0], inputs[3], inputs[4]], grad)
    assert torch.equal(a, b)
    for x, y in zip(grads_a, grads_b):
        torch.testing.assert_close(x, y)


def test_bench_cores_reports_the_median_of_the_alternating_rounds(load, monkeypatch):
    bench = load("bench_ms_deform_attn")
    monkeypatch.setattr(bench, "CORE_CASES", [("tiny", 1, 3, [(2, 3), (1, 2)], 2)])
    times = {"old": [10.0, 50.0, 20.0], "new": [1.0, 2.0, 9.0]}  # medians 20 and 2 (means 26.7 and 4)
    order = []

    def time_core(core, inputs, grad, steps):
        assert steps == 7
        key = "old" if core is bench.query_major_core else "new"
        order.append(key)
        return times[key][sum(k == key for k in order) - 1]

    monkeypatch.setattr(bench, "time_core", time_core)
    assert bench.bench_cores(7, 3) == [("tiny", 8, 3, 20.0, 2.0)]
    assert order == ["old", "new", "new", "old", "old", "new"]


def test_bench_cores_refuses_layouts_that_disagree(load, monkeypatch):
    bench = load("bench_ms_deform_attn")
    monkeypatch.setattr(bench, "CORE_CASES", [("tiny", 1, 3, [(2, 3)], 2)])
    original = bench.query_major_core
    monkeypatch.setattr(bench, "query_major_core", lambda *a: original(*a) * 1.001)
    with pytest.raises(RuntimeError, match="tiny: the two layouts give different outputs"):
        bench.bench_cores(1, 1)


def test_bench_training_step_medians_exclude_the_warm_up_and_restore_the_core(load, monkeypatch):
    """steps = 2, rounds = 3: a measurement is a warm-up step (cost 100) and 2 timed steps at that round's cost
    (query-major 2, 8, 3: median 3; points x queries 1, 1.5, 4: median 1.5)."""
    bench = load("bench_ms_deform_attn")
    import bench_inputs
    import detectron2.config

    import siamese_detr.modeling.ops.ms_deform_attn as msda

    clock = Clock()
    monkeypatch.setattr(bench, "time", clock)
    current = msda.multi_scale_deformable_attention_pytorch
    cfg = SimpleNamespace(dataloader=SimpleNamespace(train=SimpleNamespace(mapper="M", total_batch_size=4)))
    monkeypatch.setattr(detectron2.config.LazyConfig, "load", staticmethod(lambda path: cfg))
    monkeypatch.setattr(detectron2.config, "instantiate", lambda c: ("mapper of", c))
    requested = []
    monkeypatch.setattr(bench_inputs, "mapped_batches", lambda mapper, b, count, dataset: requested.append(
        (mapper, b, count, dataset)) or list(range(count)))
    costs = {"query-major": [2.0, 8.0, 3.0], "points x queries": [1.0, 1.5, 4.0]}
    calls = {"query-major": 0, "points x queries": 0}
    w = torch.nn.Parameter(torch.zeros(1))

    def model(batch):
        core = msda.multi_scale_deformable_attention_pytorch
        name = "query-major" if core is bench.query_major_core else "points x queries"
        assert name == "query-major" or core is current
        k = calls[name]
        calls[name] += 1
        assert batch == k % 3
        clock.advance(100.0 if k % 3 == 0 else costs[name][k // 3])
        return {"loss": w.sum()}

    built = []
    monkeypatch.setattr(bench_inputs, "build_training", lambda c, device: built.append((c, device)) or (
        model, torch.optim.SGD([w], lr=0.0)))
    out = bench.bench_training_step(2, 3)
    assert out == pytest.approx({"query-major": 3.0, "points x queries": 1.5})
    assert built == [(cfg, "cpu")]
    assert requested == [(("mapper of", "M"), 4, 3, "synthetic_shapes_train_large")]
    assert msda.multi_scale_deformable_attention_pytorch is current

    def broken(batch):
        raise ValueError("boom")

    monkeypatch.setattr(bench_inputs, "build_training", lambda c, device: (broken, None))
    with pytest.raises(ValueError):
        bench.bench_training_step(1, 1)
    assert msda.multi_scale_deformable_attention_pytorch is current


@pytest.mark.parametrize("argv", [[], ["--no-append"]])
def test_ms_deform_attn_main_speed_ups_are_old_over_new(load, monkeypatch, argv):
    bench = load("bench_ms_deform_attn")
    monkeypatch.setattr(bench, "bench_cores", lambda steps, rounds: [("case A", 100, 50, 0.003, 0.002)])
    monkeypatch.setattr(bench, "bench_training_step",
                        lambda steps, rounds: {"query-major": 0.9, "points x queries": 0.6})
    appended = []
    monkeypatch.setattr(bench, "append_section", appended.append)
    bench.main(argv + ["--steps", "4", "--rounds", "5"])
    if argv:
        assert appended == []
        return
    (lines,) = appended
    assert table_rows(lines, "| case |") == [["case A", "100", "50", "3.0", "2.0", "1.50x"]]
    text = "\n".join(lines)
    assert "query-major 0.900 s/it, points x queries 0.600 s/it, **1.50x**" in text
    assert "median of 5 alternating measurements of the mean of 4 calls" in text


def test_ms_deform_attn_defaults_and_cases(load):
    bench = load("bench_ms_deform_attn")
    args = bench.parse_args([])
    assert (args.steps, args.rounds, args.no_append) == (20, 3, False)
    demo_dec = [c for c in bench.CORE_CASES if c[0] == "demo decoder"][0]
    assert demo_dec[2] == 30 + 90
