"""Which checkpoint files the checkpointer loads, reads as which layout, or refuses (called directly: no training).

Model of these tests: ``TinyModel`` (``backbone`` Linear 3->4, ``head`` Linear 4->2), parameters filled with
a constant so that a load is seen in the values.
"""
import argparse
import os
import pickle

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from siamese_detr.engine.checkpointing import (
    CheckpointLoadError,
    SafeDetectionCheckpointer,
    checkpoint_kind,
    convert_pickle_checkpoint,
    load_checkpoint_file,
    split_load_query,
    trust_pickle_requested,
)
from siamese_detr.engine.load_refusals import refuse_partly_random_model, refuse_shape_mismatches
from test_reliability_checkpoints import TinyModel, _model  # the same two-layer model and its filler


def _filled_state(value: float) -> dict:
    return {k: torch.full_like(v, value) for k, v in TinyModel().state_dict().items()}


def _all_equal(model: nn.Module, value: float) -> bool:
    return all(torch.equal(p, torch.full_like(p, value)) for p in model.parameters())


class Settings:
    """A python object saved beside the tensors (as some training codes save their config)."""

    def __init__(self, lr):
        self.lr = lr


# --------------------------------------------------------------------------------------- file kinds
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_trusted_pkl_of_any_binary_protocol_loads(tmp_path, protocol):
    """Pickles of protocol 2..5 start with PROTO (0x80, n): every one is a pickle, e.g. one written with
    ``pickle.HIGHEST_PROTOCOL`` (5), and loads with ``trust_pickle``."""
    pkl = tmp_path / "d2.pkl"
    weights = {"backbone.weight": np.full((4, 3), 2.0, np.float32), "backbone.bias": np.full(4, 3.0, np.float32)}
    pkl.write_bytes(pickle.dumps({"model": weights, "__author__": "someone"}, protocol=protocol))
    assert pkl.read_bytes()[:2] == bytes([0x80, protocol])
    assert checkpoint_kind(str(pkl)) == "pickle"
    model = _model(0.0)
    SafeDetectionCheckpointer(model, trust_pickle=True).load(str(pkl))
    assert torch.equal(model.backbone.weight, torch.full((4, 3), 2.0))
    assert torch.equal(model.backbone.bias, torch.full((4,), 3.0))
    assert torch.equal(model.head.weight, torch.zeros(2, 4))  # not in the file


def test_text_protocol_pickles_count_only_with_the_pkl_suffix(tmp_path):
    """A protocol-0 pickle starts with a printable byte (``(``, ``}``, ``]``, ``c``): read as a pickle only
    for a ``.pkl`` (Python 2 era Detectron files); a ``.pth`` starting so is a text file, not a checkpoint."""
    text = pickle.dumps({"model": {}}, protocol=0)
    assert text[:1] == b"("
    for name, expected in [("old.pkl", "pickle"), ("old.pth", "unknown")]:
        (tmp_path / name).write_bytes(text)
        assert checkpoint_kind(str(tmp_path / name)) == expected
    notes = tmp_path / "notes.pth"
    notes.write_text("checkpoint from run 3: see the log\n")
    assert checkpoint_kind(str(notes)) == "unknown"
    with pytest.raises(CheckpointLoadError, match="is not a checkpoint"):
        SafeDetectionCheckpointer(_model(0.0), trust_pickle=True).load(str(notes))


def test_a_pth_with_python_objects_loads_only_when_trusted(tmp_path):
    """``torch.load(weights_only=True)`` refuses a ``.pth`` holding a python object: refused without
    ``trust_pickle``, loaded (model and the object) with it."""
    path = tmp_path / "with_settings.pth"
    torch.save({"model": _filled_state(0.5), "settings": Settings(0.1)}, path)
    with pytest.raises(CheckpointLoadError, match="python objects"):
        load_checkpoint_file(str(path))
    loaded = load_checkpoint_file(str(path), trust_pickle=True)
    assert isinstance(loaded["settings"], Settings) and loaded["settings"].lr == 0.1
    model = _model(0.0)
    SafeDetectionCheckpointer(model, trust_pickle=True).load(str(path))
    assert _all_equal(model, 0.5)


def test_trust_pickle_comes_from_the_flag_or_the_config():
    """``--trust-pickle`` or ``train.trust_pickle=True``; neither: no trust."""
    cfg = OmegaConf.create({"train": {"trust_pickle": True}})
    plain = OmegaConf.create({"train": {}})
    assert trust_pickle_requested(argparse.Namespace(), cfg) is True
    assert trust_pickle_requested(argparse.Namespace(trust_pickle=True), plain) is True
    assert trust_pickle_requested(argparse.Namespace(trust_pickle=False), plain) is False
    assert trust_pickle_requested(argparse.Namespace(), OmegaConf.create({"train": {"trust_pickle": False}})) is False


# --------------------------------------------------------------------------------------- layouts
def test_a_bare_state_dict_loads_as_the_model(tmp_path):
    """``torch.save(model.state_dict())`` (no ``model`` entry): its tensors are the model's."""
    torch.save(_filled_state(0.75), tmp_path / "bare.pth")
    model = _model(0.0)
    checkpointer = SafeDetectionCheckpointer(model)
    checkpointer.load(str(tmp_path / "bare.pth"))
    assert _all_equal(model, 0.75)
    assert sorted(checkpointer.loaded_names) == sorted(model.state_dict())


def test_the_model_entry_wins_over_a_state_dict_entry(tmp_path):
    """A file with both ``model`` and ``state_dict`` (e.g. EMA weights beside the raw ones) loads ``model``."""
    torch.save({"model": _filled_state(1.0), "state_dict": _filled_state(-1.0)}, tmp_path / "both.pth")
    model = _model(0.0)
    SafeDetectionCheckpointer(model).load(str(tmp_path / "both.pth"))
    assert _all_equal(model, 1.0)


def test_a_torch_file_named_pkl_loads_without_trust_pickle(tmp_path):
    """A ``torch.save`` file given a ``.pkl`` name (a zip, not a pickle) is read as any ``.pth``: with
    ``weights_only=True``, so no ``--trust-pickle`` is needed."""
    torch.save({"model": _filled_state(0.5)}, tmp_path / "weights.pkl")
    assert checkpoint_kind(str(tmp_path / "weights.pkl")) != "pickle"
    model = _model(0.0)
    SafeDetectionCheckpointer(model).load(str(tmp_path / "weights.pkl"))
    assert _all_equal(model, 0.5)


@pytest.mark.parametrize("entry, kind", [([1.0, 2.0], "list"), (torch.zeros(3), "Tensor")])
def test_a_model_entry_that_is_not_a_dict_is_named(tmp_path, entry, kind):
    torch.save({"model": entry}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointLoadError) as err:
        SafeDetectionCheckpointer(_model(0.0)).load(str(tmp_path / "odd.pth"))
    assert str(err.value) == f"checkpoint {tmp_path / 'odd.pth'}: its 'model' entry is a {kind}, not a dict of tensors"


def test_a_ddp_saved_checkpoint_counts_its_tensors_as_loaded(tmp_path):
    """Names ``module.<name>`` (a ``DistributedDataParallel``'s state dict) load into the bare model, and every
    tensor counts as loaded (``--eval-only`` would otherwise call the model random)."""
    torch.save({"model": {f"module.{k}": v for k, v in _filled_state(0.25).items()}}, tmp_path / "ddp.pth")
    model = _model(0.0)
    checkpointer = SafeDetectionCheckpointer(model)
    checkpointer.load(str(tmp_path / "ddp.pth"))
    assert _all_equal(model, 0.25)
    assert sorted(checkpointer.loaded_names) == sorted(model.state_dict())
    refuse_partly_random_model(checkpointer, "ddp.pth")  # nothing random: no error


def test_tensors_of_another_shape_are_not_counted_as_loaded(tmp_path):
    """Names that match but shapes that do not load nothing: every tensor of another shape -> refused as a
    load matching no parameter; some of another shape -> those are not in ``loaded_names``."""
    wrong = {"backbone.weight": torch.ones(4, 5), "backbone.bias": torch.ones(5),
             "head.weight": torch.ones(3, 4), "head.bias": torch.ones(3)}
    torch.save({"model": wrong}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointLoadError, match="matches no parameter"):
        SafeDetectionCheckpointer(_model(0.0)).load(str(tmp_path / "wrong.pth"))
    partly = dict(_filled_state(2.0), **{"head.weight": torch.ones(3, 4), "head.bias": torch.ones(3)})
    torch.save({"model": partly}, tmp_path / "partly.pth")
    model = _model(0.0)
    checkpointer = SafeDetectionCheckpointer(model)
    checkpointer.load(str(tmp_path / "partly.pth"))
    assert sorted(checkpointer.loaded_names) == ["backbone.bias", "backbone.weight"]
    assert checkpointer.parameters_not_loaded() == ["head.weight", "head.bias"]
    with pytest.raises(CheckpointLoadError, match="2 of the model's 4 parameters"):
        refuse_partly_random_model(checkpointer, "partly.pth")


def test_a_load_of_nothing_does_not_keep_what_an_earlier_load_recorded(tmp_path):
    """``load("")`` (no ``train.init_checkpoint``) loads nothing: the names, shapes and keys of the checkpoint
    loaded before must not be read as its own (every parameter is then not loaded)."""
    partly = dict(_filled_state(2.0), **{"head.weight": torch.ones(3, 4), "head.bias": torch.ones(3)})
    torch.save({"model": partly}, tmp_path / "partly.pth")
    checkpointer = SafeDetectionCheckpointer(_model(0.0))
    checkpointer.load(str(tmp_path / "partly.pth"))
    assert checkpointer.loaded_names and checkpointer.incorrect_shapes and checkpointer.checkpoint_keys
    checkpointer.load("")
    assert checkpointer.loaded_path is None
    assert checkpointer.loaded_names is None
    assert checkpointer.incorrect_shapes == [] and checkpointer.checkpoint_keys == []
    assert checkpointer.parameters_not_loaded() == ["backbone.weight", "backbone.bias", "head.weight", "head.bias"]


class Normalised(nn.Module):
    """A detector-like model: ``pixel_mean`` / ``pixel_std`` buffers (never in a checkpoint) beside a layer."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pixel_mean", torch.zeros(3))
        self.register_buffer("pixel_std", torch.ones(3))
        self.detector = _model(0.0)


def test_the_pixel_buffers_never_count_as_loaded_by_heuristics(tmp_path):
    """With ``?matching_heuristics=True`` the loaded tensors are those not missing; detectron2 never reports
    ``pixel_mean`` / ``pixel_std`` as missing, so they must not count: a file matching nothing else is still
    refused."""
    torch.save({"model": {"unrelated.weight": torch.zeros(7, 7)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointLoadError, match="matches no parameter"):
        SafeDetectionCheckpointer(Normalised()).load(f"{tmp_path / 'other.pth'}?matching_heuristics=True")
    torch.save({"model": {"backbone.weight": torch.full((4, 3), 2.0)}}, tmp_path / "suffix.pth")
    model = Normalised()
    checkpointer = SafeDetectionCheckpointer(model)
    checkpointer.load(f"{tmp_path / 'suffix.pth'}?matching_heuristics=True")
    assert checkpointer.loaded_names == ["detector.backbone.weight"]
    assert torch.equal(model.detector.backbone.weight, torch.full((4, 3), 2.0))


class Hybrid(nn.Module):
    """H-DETR-like: ``query_embed_one2many`` is used in training only and absent from DETR checkpoints."""

    def __init__(self):
        super().__init__()
        self.query_embed = nn.Embedding(3, 4)
        self.query_embed_one2many = nn.Embedding(5, 4)


def test_eval_only_allows_the_training_only_one2many_queries_to_stay_random(tmp_path):
    """A checkpoint with every parameter but the hybrid-matching queries evaluates; one that lacks another
    parameter is refused naming how many."""
    torch.save({"model": {"query_embed.weight": torch.ones(3, 4)}}, tmp_path / "detr.pth")
    checkpointer = SafeDetectionCheckpointer(Hybrid())
    checkpointer.load(str(tmp_path / "detr.pth"))
    assert checkpointer.parameters_not_loaded() == []
    refuse_partly_random_model(checkpointer, "detr.pth")
    assert checkpointer.parameters_not_loaded(exclude=()) == ["query_embed_one2many.weight"]


# --------------------------------------------------------------------------------------- queries, URLs
def test_urls_are_left_to_detectron2_with_their_query(tmp_path, monkeypatch):
    """``https://...?...`` is not split (detectron2's ``PathManager`` handles URLs and their queries) and not
    refused as a missing local file."""
    url = "https://example.com/model.pth?matching_heuristics=True"
    assert split_load_query(url) == (url, False)
    assert split_load_query("https://example.com/model.pth?dl=1") == ("https://example.com/model.pth?dl=1", False)
    seen = []

    def fake_load(self, path, *args, **kwargs):  # stands for detectron2's download and load
        seen.append(path)
        return {}

    from detectron2.checkpoint import DetectionCheckpointer

    monkeypatch.setattr(DetectionCheckpointer, "load", fake_load)
    checkpointer = SafeDetectionCheckpointer(_model(0.0))
    checkpointer.load(url)
    assert seen == [url] and checkpointer.loaded_path == url


# --------------------------------------------------------------------------------------- resume order
def test_a_final_checkpoint_is_tried_before_a_periodic_one_of_the_same_time(tmp_path):
    """Candidates after ``last_checkpoint``: newest first by time; on equal times ``model_final`` (written after
    every periodic one) first, then the periodic ones by decreasing iteration."""
    checkpointer = SafeDetectionCheckpointer(_model(0.0), str(tmp_path))
    for name in ["model_0000009.pth", "model_final.pth", "model_0000004.pth", "model_0000019.pth"]:
        checkpointer.save(name[:-4])
    checkpointer.tag_last_checkpoint("model_0000019.pth")
    for name in ["model_0000009.pth", "model_final.pth", "model_0000004.pth", "model_0000019.pth"]:
        os.utime(tmp_path / name, (1_000_000, 1_000_000))
    order = [os.path.basename(p) for p in checkpointer._candidates()]
    assert order == ["model_0000019.pth", "model_final.pth", "model_0000009.pth", "model_0000004.pth"]


# --------------------------------------------------------------------------------------- shape refusals
class _Shapes:
    def __init__(self, incorrect):
        self.incorrect_shapes = incorrect


def test_only_class_heads_may_change_shape_when_training_from_a_checkpoint():
    """Another number of class logits is what a finetuning expects (any ``class_embed`` tensor, also those of
    Deformable DETR's per-layer heads); any other tensor of another shape is refused naming it."""
    heads = [("class_embed.weight", (2, 8), (81, 8)), ("class_embed.3.bias", (2,), (81,))]
    refuse_shape_mismatches(_Shapes(heads), "pretrain.pth")
    wrong = heads + [("query_embed.weight", (100, 8), (300, 8))]
    with pytest.raises(CheckpointLoadError, match=r"1 tensors do not fit.*model.num_queries=100"):
        refuse_shape_mismatches(_Shapes(wrong), "pretrain.pth")


def test_queries_of_another_width_name_another_variant_not_num_queries():
    """The same number of queries, another width (a Deformable DETR checkpoint, 2 x d_model, into a Vanilla DETR
    model): no ``model.num_queries`` advice that is already met, and no ``allow_shape_mismatch`` (it would load
    half of another architecture); the message says what the widths mean."""
    wrong = [("query_embed.weight", (20, 256), (20, 128)), ("input_proj.weight", (128, 64, 1, 1), (128, 64))]
    with pytest.raises(CheckpointLoadError) as e:
        refuse_shape_mismatches(_Shapes(wrong), "deformable.pth")
    message = str(e.value)
    assert message.startswith("deformable.pth: its object queries are 256 wide, the model's 128: a checkpoint of "
                              "another DETR variant or model width")
    assert "2 tensors do not fit (query_embed.weight: [20, 256] in the checkpoint, [20, 128] in the model;" in message
    assert "num_queries" not in message and "allow_shape_mismatch" not in message
    # other tensors that do not fit while the queries do: no query advice, the opt-in named
    with pytest.raises(CheckpointLoadError) as e:
        refuse_shape_mismatches(_Shapes([("a.weight", (3,), (4,))]), "x.pth")
    assert "num_queries" not in str(e.value) and "allow_shape_mismatch=True" in str(e.value)


# --------------------------------------------------------------------------------------- converter
def test_a_converted_caffe2_pickle_keeps_detectron2s_name_matching(tmp_path):
    """A Caffe2-style ``.pkl`` (``blobs``, names that are suffixes of the model's) loads with detectron2's name
    heuristics; its conversion records them, so the ``.pth`` loads the same without ``--trust-pickle``."""
    blobs = {"backbone.weight": np.full((4, 3), 2.0, np.float32), "head.bias": np.full(2, 3.0, np.float32)}
    pkl = tmp_path / "caffe2.pkl"
    pkl.write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))
    out = tmp_path / "caffe2.pth"
    convert_pickle_checkpoint(str(pkl), str(out))
    assert load_checkpoint_file(str(out))["matching_heuristics"] is True
    model = nn.Sequential()
    model.add_module("detector", _model(0.0))  # names: detector.backbone.weight, ...
    SafeDetectionCheckpointer(model).load(str(out))
    assert torch.equal(model.detector.backbone.weight, torch.full((4, 3), 2.0))
    assert torch.equal(model.detector.head.bias, torch.full((2,), 3.0))
