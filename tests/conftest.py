"""Shared fixtures: a small built-in dataset in a temporary DETECTRON2_DATASETS."""
import pytest


@pytest.fixture
def tiny_synthetic_shapes(tmp_path, monkeypatch):
    """Registers synthetic_shapes_{train,val} with 6 / 3 images under a temp root; restores afterwards."""
    from siamese_detr.data import register_synthetic_shapes

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    register_synthetic_shapes(root=str(tmp_path / "datasets"), num_images={"train": 6, "val": 3})
    yield tmp_path / "datasets"
    register_synthetic_shapes()
