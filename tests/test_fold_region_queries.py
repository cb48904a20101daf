"""The mean-region handoff option: ``fold_mean_region_embedding`` by hand, ``view_region_embeddings`` against
what the pretraining forward adds to the queries, and ``tools/fold_region_queries.py`` end to end on a dataset
whose labels raise on access."""
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from siamese_detr.modeling.pretext.region_features import fold_mean_region_embedding

from test_demo_labels import _register_raising
from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo" / "demo_siamese_pretrain.py"


def _tool():
    return load_script(ROOT / "tools" / "fold_region_queries.py", "fold_region_queries_tool")


def test_fold_adds_each_slot_mean_to_its_queries_positional_half_only():
    queries = torch.arange(24.0).view(6, 4)  # Q = 6, D' = 4 (Deformable-like [query_pos | tgt], D = 2)
    embeddings = torch.tensor([[[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]],
                               [[3.0, 4.0], [30.0, 40.0], [300.0, 400.0]]])  # N = 2 views, n = 3 slots
    folded = fold_mean_region_embedding(queries, embeddings)
    slot_means = [[2.0, 3.0], [20.0, 30.0], [200.0, 300.0]]  # by hand
    for i in range(6):  # query i belongs to slot i // (Q / n) = i // 2
        expected = queries[i].clone()
        expected[:2] += torch.tensor(slot_means[i // 2])
        assert torch.equal(folded[i], expected), i
    assert torch.equal(queries, torch.arange(24.0).view(6, 4))  # the input is not modified


def test_fold_refuses_what_it_cannot_fold():
    with pytest.raises(ValueError, match="N >= 1"):
        fold_mean_region_embedding(torch.zeros(6, 4), torch.zeros(0, 3, 2))
    with pytest.raises(ValueError, match="multiple"):
        fold_mean_region_embedding(torch.zeros(6, 4), torch.zeros(2, 4, 2))


def _demo_model_and_batch(dataset):
    cfg = LazyConfig.load(str(CONFIG))
    cfg.dataloader.train.dataset.names = dataset
    cfg.dataloader.train.num_workers = 0
    cfg.dataloader.train.total_batch_size = 2
    torch.manual_seed(0)
    return instantiate(cfg.model), next(iter(instantiate(cfg.dataloader.train)))


def test_view_region_embeddings_are_what_the_pretraining_forward_adds_to_the_queries(tiny_synthetic_shapes):
    model, batch = _demo_model_and_batch("synthetic_shapes_train")
    added = []
    model.region_proj.register_forward_hook(lambda module, inputs, output: added.append(output.detach()))
    model.train()
    model(batch)
    assert len(added) == 1
    embeddings = model.view_region_embeddings(batch)
    assert embeddings.shape == (2 * len(batch), model.num_regions, model.transformer.d_model)
    torch.testing.assert_close(embeddings, added[0], rtol=0, atol=0)


def test_tool_folds_a_checkpoint_without_reading_labels(tiny_synthetic_shapes, tmp_path, capsys):
    name = _register_raising("raising_labels_train", "synthetic_shapes_train")
    torch.manual_seed(1)
    model = instantiate(LazyConfig.load(str(CONFIG)).model)
    source = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint, output = tmp_path / "pretrain.pth", tmp_path / "folded.pth"
    torch.save({"model": source, "iteration": 599}, checkpoint)
    overrides = [f"dataloader.train.dataset.names={name}", "dataloader.train.num_workers=0",
                 "dataloader.train.total_batch_size=2"]
    argv = ["--config-file", str(CONFIG), "--checkpoint", str(checkpoint), "--output", str(output), "--batches", "2"]
    assert _tool().main(argv + overrides) == 0
    assert ("folded the mean region embedding of 8 views (2 batches, seed 0) into 30 object queries"
            in capsys.readouterr().out)

    written = torch.load(output, weights_only=True)
    assert set(written) == {"model", "__author__", "matching_heuristics"}  # no iteration: not a run to resume
    folded = written["model"]
    assert set(folded) == set(source)
    assert all(torch.equal(folded[k], v) for k, v in source.items() if k != "query_embed.weight")
    delta = folded["query_embed.weight"] - source["query_embed.weight"]
    d = model.transformer.d_model
    assert torch.equal(delta[:, d:], torch.zeros_like(delta[:, d:]))  # Deformable: the tgt half stays
    per_slot = delta[:, :d].view(model.num_regions, -1, d)  # the 5 queries of a slot move alike
    torch.testing.assert_close(per_slot, per_slot[:, :1].expand_as(per_slot), rtol=0, atol=1e-6)
    assert per_slot[:, 0].norm(dim=1).min() > 0

    # the value: redo what the tool does (same seed, so the same model draw, proposals and views), collect
    # the 8 views' region embeddings and average each slot by hand
    from detectron2.utils.env import seed_all_rng

    cfg = LazyConfig.load(str(CONFIG))
    cfg.dataloader.train.dataset.names = name
    cfg.dataloader.train.num_workers = 0
    cfg.dataloader.train.total_batch_size = 2
    seed_all_rng(int(cfg.train.seed))
    again = instantiate(cfg.model).eval()
    again.load_state_dict(source)
    embeddings = _tool().collect_region_embeddings(again, instantiate(cfg.dataloader.train), 2)
    assert embeddings.shape == (8, model.num_regions, d)
    slot_means = torch.stack([sum(view[slot] for view in embeddings) / 8 for slot in range(model.num_regions)])
    torch.testing.assert_close(per_slot[:, 0], slot_means, rtol=0, atol=1e-6)


def test_tool_refuses_a_config_that_is_not_a_siamese_detr_pretraining(tiny_synthetic_shapes, tmp_path, capsys):
    checkpoint = tmp_path / "pretrain.pth"
    torch.save({"model": {"query_embed.weight": torch.zeros(30, 256)}}, checkpoint)
    detector = ROOT / "configs" / "demo" / "demo_detector.py"
    argv = ["--config-file", str(detector), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "out.pth")]
    assert _tool().main(argv) == 2
    assert "not a SiameseDETRPretrain" in capsys.readouterr().err
    assert not (tmp_path / "out.pth").exists()


def test_tool_uses_a_fixed_seed_where_the_config_asks_for_a_random_one(tiny_synthetic_shapes, tmp_path, capsys):
    """``train.seed=-1`` (the default of every full-size config: a random seed in training) folds with seed 0,
    the same checkpoint as ``--seed 0``; ``--seed`` overrides the config."""
    torch.manual_seed(1)
    model = instantiate(LazyConfig.load(str(CONFIG)).model)
    checkpoint = tmp_path / "pretrain.pth"
    torch.save({"model": model.state_dict()}, checkpoint)
    common = ["--config-file", str(CONFIG), "--checkpoint", str(checkpoint), "--batches", "1"]
    data = ["dataloader.train.dataset.names=synthetic_shapes_train", "dataloader.train.num_workers=0",
            "dataloader.train.total_batch_size=2"]
    tool = _tool()
    assert tool.main(common + ["--output", str(tmp_path / "random.pth")] + data + ["train.seed=-1"]) == 0
    assert "(1 batches, seed 0)" in capsys.readouterr().out
    assert tool.main(common + ["--output", str(tmp_path / "zero.pth"), "--seed", "0"] + data + ["train.seed=5"]) == 0
    assert "(1 batches, seed 0)" in capsys.readouterr().out
    assert tool.main(common + ["--output", str(tmp_path / "five.pth")] + data + ["train.seed=5"]) == 0
    assert "(1 batches, seed 5)" in capsys.readouterr().out
    queries = {name: torch.load(tmp_path / f"{name}.pth", weights_only=True)["model"]["query_embed.weight"]
               for name in ("random", "zero", "five")}
    assert torch.equal(queries["random"], queries["zero"])
    assert not torch.equal(queries["random"], queries["five"])  # other draws, other views: another mean


def test_tool_refuses_wrong_arguments_before_loading_anything(tmp_path, capsys, monkeypatch):
    """Usage errors (exit 2, nothing written): ``--batches 0``; an ``--output`` that is the ``--checkpoint``
    spelled another way (``./pretrain.pth``); a seed of 2**32 (numpy's seeds stop at 2**32 - 1)."""
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {}}, tmp_path / "pretrain.pth")
    tool = _tool()
    common = ["--config-file", str(CONFIG), "--checkpoint", "pretrain.pth"]
    for extra, message in [(["--output", "out.pth", "--batches", "0"], "--batches must be at least 1, got 0"),
                           (["--output", "./pretrain.pth"], "must be a new file, not a folder nor the --checkpoint"),
                           (["--output", "out.pth", "--seed", str(2 ** 32)], "the seed must be in [0, 2**32)")]:
        assert tool.main(common + extra) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pretrain.pth"]


def test_tool_names_a_missing_file_a_wrong_override_and_an_untrusted_pickle(tmp_path, capsys):
    """Each as one ``error:`` line (exit 2, nothing written): a missing ``--config-file`` or ``--checkpoint``
    (named with its path), an override of a key the config lacks (named), and a pickled checkpoint, which is
    not unpickled without ``--trust-pickle`` (the payload does not run)."""
    import pickle

    from pickle_payload import Payload

    torch.save({"model": {}}, tmp_path / "pretrain.pth")
    marker, pkl = tmp_path / "pwned", tmp_path / "pretrain.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"x": Payload(str(marker))}}, protocol=2))
    out = ["--output", str(tmp_path / "out.pth")]
    tool = _tool()
    cases = [
        (["--config-file", str(tmp_path / "no.py"), "--checkpoint", str(tmp_path / "pretrain.pth")],
         f"error: --config-file {str(tmp_path / 'no.py')!r} does not exist"),
        (["--config-file", str(CONFIG), "--checkpoint", str(tmp_path / "no.pth")],
         f"error: --checkpoint {str(tmp_path / 'no.pth')!r} does not exist"),
        (["--config-file", str(CONFIG), "--checkpoint", str(tmp_path / "pretrain.pth"), *out, "model.num_regionz=3"],
         "model.num_regionz"),
        (["--config-file", str(CONFIG), "--checkpoint", str(pkl)], "--trust-pickle"),
    ]
    for argv, message in cases:
        assert tool.main(argv if "--output" in argv else argv + out) == 2
        (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
        assert line.startswith(message) if message.startswith("error:") else message in line
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pretrain.pkl", "pretrain.pth"]


def test_tool_refuses_a_checkpoint_that_lacks_parameters(tiny_synthetic_shapes, tmp_path, capsys):
    """A checkpoint without ``region_proj`` (e.g. a plain DETR's) leaves the region embedding random: refused
    (exit 2) naming the count, nothing written."""
    torch.manual_seed(1)
    state = instantiate(LazyConfig.load(str(CONFIG)).model).state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("region_proj.")}
    torch.save({"model": partial}, tmp_path / "pretrain.pth")
    argv = ["--config-file", str(CONFIG), "--checkpoint", str(tmp_path / "pretrain.pth"),
            "--output", str(tmp_path / "out.pth"), "dataloader.train.dataset.names=synthetic_shapes_train"]
    assert _tool().main(argv) == 2
    assert "2 parameters of the model are not in" in capsys.readouterr().err
    assert not (tmp_path / "out.pth").exists()


def test_collect_logs_the_eta_of_the_batches_left(caplog, monkeypatch):
    """Every 10 batches (and at the last) a line with the views so far and the ETA: after 10 of 25 batches in
    20 s (2 s each), 15 left take 30 s; after 25, 0 s; only the first ``num_batches`` batches are read."""
    import logging

    tool = _tool()
    seen = []  # batches embedded so far; the clock runs 2 s per batch

    class Model:
        def view_region_embeddings(self, batch):
            seen.append(batch)
            return torch.full((3, 2, 4), float(batch))

    monkeypatch.setattr(tool.time, "perf_counter", lambda: 2.0 * len(seen))

    caplog.set_level(logging.INFO, logger="fold_region_queries")
    out = tool.collect_region_embeddings(Model(), iter(range(100)), 25)
    assert out.shape == (75, 2, 4) and out[-1, 0, 0].item() == 24.0
    lines = [r.getMessage() for r in caplog.records if r.name == "fold_region_queries"]
    assert lines == ["batch 10/25, 30 views, eta 30 s", "batch 20/25, 60 views, eta 10 s",
                     "batch 25/25, 75 views, eta 0 s"]
