"""register_image_folder: recursive, image extensions only, sorted, relative-path ids, lazy, idempotent;
and the ImageNet-style pretraining config on such a folder."""

import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts

from siamese_detr.data.image_folder import list_image_files, register_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    files = ["b/z.jpg", "a/img2.PNG", "a/deep/er/x.jpeg", "top.bmp", "c.webp", "a/img10.png"]
    skipped = ["notes.txt", "a/labels.json", ".hidden.jpg", "a/.cache/y.jpg", "d/readme.md"]
    for rel in files + skipped:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.lower().endswith((".jpg", ".png", ".jpeg", ".bmp")):
            cv2.imwrite(str(path), rng.integers(0, 255, size=(40, 50, 3), dtype=np.uint8))
        else:
            path.write_bytes(b"x")
    (tmp_path / "empty_dir").mkdir()
    return tmp_path, sorted(files)


@pytest.fixture
def names():
    registered = []
    yield registered
    for name in registered:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_listing_recursive_sorted_images_only(folder):
    root, expected = folder
    assert list_image_files(str(root)) == expected
    assert list_image_files(str(root), extensions=("png",)) == ["a/img10.png", "a/img2.PNG"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_image_files(str(root / "nope"))


def test_register_is_lazy_idempotent_and_loads_dicts(folder, names, tmp_path_factory):
    root, expected = folder
    name = "test_image_folder_" + os.path.basename(str(root))
    names.append(name)
    assert register_image_folder(name, str(root)) == name
    (root / "late.jpg").write_bytes(b"added after registration")  # listed: registration is lazy
    assert register_image_folder(name, str(root)) == name  # same root again: no-op
    with pytest.raises(ValueError, match="already registered"):
        register_image_folder(name, str(tmp_path_factory.mktemp("other")))
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == sorted(expected + ["late.jpg"])
    for d in dicts:
        assert os.path.isabs(d["file_name"]) and os.path.isfile(d["file_name"])
        assert d["file_name"] == os.path.join(str(root), d["image_id"])
        assert "annotations" not in d
    assert MetadataCatalog.get(name).image_root == str(root)
    assert len(get_detection_dataset_dicts(name, filter_empty=False)) == len(expected) + 1


def test_imagenet_style_config_on_an_image_folder(folder, names):
    from detectron2.config import LazyConfig, instantiate

    root, expected = folder
    name = "test_pretrain_folder_" + os.path.basename(str(root))
    names.append(name)
    cfg = LazyConfig.load(os.path.join(REPO, "configs", "common", "data", "pretrain_imagenet.py"))
    cfg.dataloader.train.dataset.names.name = name
    cfg.dataloader.train.dataset.names.image_root = str(root)
    cfg.dataloader.train.mapper.proposal_source = None
    cfg.dataloader.train.mapper.seed = 0
    cfg.dataloader.train.num_workers = 0
    cfg.dataloader.train.total_batch_size = 2
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert len(batch) == 2
    for out in batch:
        assert out["image_id"] in expected  # the .webp placeholder is unreadable and gets redrawn
        assert out["views"][0]["crops"].shape == (10, 3, 128, 128)
        assert 320 <= min(out["resized_height"], out["resized_width"]) <= 480


def test_extensions_given_in_any_case_with_or_without_the_dot(folder):
    """``extensions`` are compared case-insensitively on both sides: ".PNG" and "JPG" (no dot, upper case)
    list a/img2.PNG, a/img10.png and b/z.jpg, as ("png", "jpg") does."""
    root, _ = folder
    expected = ["a/img10.png", "a/img2.PNG", "b/z.jpg"]
    assert list_image_files(str(root), extensions=("png", "jpg")) == expected
    assert list_image_files(str(root), extensions=(".PNG", "JPG")) == expected


def test_a_symlink_loop_below_the_root_is_entered_once(tmp_path):
    """``x/loop`` points back at ``x`` (not the root): the folder behind a symlink is entered through one
    symlink at most, so the listing ends and holds x/a.png under its two paths (x/ and x/loop/), as ``find -L``
    does; it does not recurse through x/loop/loop/... until the OS gives up."""
    (tmp_path / "x").mkdir()
    cv2.imwrite(str(tmp_path / "x" / "a.png"), np.zeros((20, 20, 3), np.uint8))
    os.symlink(tmp_path / "x", tmp_path / "x" / "loop")
    assert list_image_files(str(tmp_path)) == ["x/a.png", "x/loop/a.png"]


def test_a_relative_image_root_is_registered_as_its_absolute_path(folder, names, monkeypatch):
    """The registered ``image_root`` is absolute: registering "imgs" from the folder above it and then the
    absolute path (a config loaded again from another place) is the same registration, not a conflict."""
    root, expected = folder
    name = "test_image_folder_relative_" + os.path.basename(str(root))
    names.append(name)
    monkeypatch.chdir(root.parent)
    assert register_image_folder(name, os.path.basename(str(root))) == name
    assert MetadataCatalog.get(name).image_root == str(root)
    monkeypatch.chdir(root)  # the relative name would now point elsewhere; the registration does not move
    assert register_image_folder(name, str(root)) == name
    assert [d["file_name"] for d in DatasetCatalog.get(name)] == [os.path.join(str(root), r) for r in expected]


def test_a_file_given_as_image_root_is_named(folder):
    root, _ = folder
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        list_image_files(str(root / "top.bmp"))
