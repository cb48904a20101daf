"""Siamese DETR pretraining of the demo never reads a label: a dataset whose annotations raise on access
still pretrains (issue 10)."""
from pathlib import Path

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog

from siamese_detr.demo.data import IMAGE_KEYS, unlabelled_dicts

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo" / "demo_siamese_pretrain.py"


class LabelAccessError(AssertionError):
    pass


class NoLabels(dict):
    """A dataset dict whose ``annotations`` (and any label-like field) raise when read."""

    FORBIDDEN = ("annotations", "sem_seg_file_name", "pan_seg_file_name")

    def __getitem__(self, key):
        if key in self.FORBIDDEN:
            raise LabelAccessError(f"pretraining read {key!r}")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in self.FORBIDDEN:
            raise LabelAccessError(f"pretraining read {key!r}")
        return super().get(key, default)

    def items(self):
        raise LabelAccessError("pretraining iterated over all fields")

    def values(self):
        raise LabelAccessError("pretraining iterated over all fields")

    def copy(self):
        raise LabelAccessError("pretraining copied all fields")


def _register_raising(name, source):
    def load():
        return [NoLabels(d) for d in DatasetCatalog.get(source)]

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(thing_classes=["shape"])
    return name


def test_unlabelled_dicts_keep_only_image_fields(tiny_synthetic_shapes):
    name = _register_raising("raising_labels_train", "synthetic_shapes_train")
    dicts = unlabelled_dicts(name)
    assert len(dicts) == 6
    assert all(set(d) == set(IMAGE_KEYS) and type(d) is dict for d in dicts)
    originals = DatasetCatalog.get("synthetic_shapes_train")
    assert [d["file_name"] for d in dicts] == [d["file_name"] for d in originals]


def test_pretraining_steps_with_raising_annotations(tiny_synthetic_shapes):
    torch.manual_seed(0)
    name = _register_raising("raising_labels_train", "synthetic_shapes_train")
    cfg = LazyConfig.load(str(CONFIG))
    cfg.dataloader.train.dataset.names = name
    cfg.dataloader.train.num_workers = 0
    cfg.dataloader.train.total_batch_size = 2
    model = instantiate(cfg.model)
    model.train()
    loader = iter(instantiate(cfg.dataloader.train))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for _ in range(2):
        batch = next(loader)
        assert all("annotations" not in x and "instances" not in x for x in batch)
        losses = model(batch)
        total = sum(losses.values())
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert {"loss_region", "loss_global", "loss_bbox"} <= set(losses)


def test_unlabelled_dicts_prefix_ids_only_for_several_datasets_and_refuse_none():
    """One dataset keeps its image ids; two get ``name/id`` (ids may repeat across datasets); a dataset list
    without any image is an error."""
    import pytest

    data = {"ud_a": [{"file_name": "a.png", "image_id": 1, "height": 2, "width": 3}],
            "ud_b": [{"file_name": "b.png", "image_id": 1, "height": 4, "width": 5}], "ud_empty": []}
    for name, dicts in data.items():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        DatasetCatalog.register(name, lambda dicts=dicts: [dict(d) for d in dicts])
    try:
        assert [d["image_id"] for d in unlabelled_dicts("ud_a")] == [1]
        assert [d["image_id"] for d in unlabelled_dicts(["ud_a"])] == [1]
        assert [d["image_id"] for d in unlabelled_dicts(["ud_a", "ud_b"])] == ["ud_a/1", "ud_b/1"]
        with pytest.raises(ValueError, match="no images"):
            unlabelled_dicts("ud_empty")
    finally:
        for name in data:
            DatasetCatalog.remove(name)
