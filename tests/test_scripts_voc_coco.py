"""datasets/prepare_voc_coco.py's command line on the tiny VOC tree of test_voc_coco.py: which files it
writes, the counts it prints (hand-counted from the tree), the default root and the one-line refusal."""
import importlib.util
import json
from pathlib import Path

import pytest

from siamese_detr.data.datasets.voc_coco import register_voc_coco
from test_voc_coco import _make_voc

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("prepare_voc_coco_t", ROOT / "datasets" / "prepare_voc_coco.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture()
def voc_tree(tmp_path):
    _make_voc(tmp_path)
    yield tmp_path
    register_voc_coco()


def test_names_selects_the_files_and_the_summary_counts_images_objects_and_difficult(voc_tree, capsys):
    """VOC2007 test of the tree: 4 images x 5 objects, one difficult per image -> 20 objects, 4 difficult."""
    _tool().main(["--root", str(voc_tree), "--names", "voc_2007_test_coco"])
    out = capsys.readouterr().out.splitlines()
    path = voc_tree / "voc_coco" / "voc_2007_test.json"
    assert out == [f"voc_2007_test_coco: 4 images, 20 objects (4 difficult, kept as ground truth) -> {path}"]
    assert not (voc_tree / "voc_coco" / "voc_2007_2012_trainval.json").exists()
    assert len(json.loads(path.read_text())["annotations"]) == 20


def test_default_root_is_detectron2_datasets_and_writes_both(voc_tree, monkeypatch, capsys):
    """07+12 trainval of the tree: 1 + 2 images, 15 objects, 3 difficult."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(voc_tree))
    _tool().main([])
    out = capsys.readouterr().out
    assert "voc_2007_2012_trainval_coco: 3 images, 15 objects (3 difficult, kept as ground truth)" in out
    assert (voc_tree / "voc_coco" / "voc_2007_test.json").is_file()


def test_a_missing_voc_tree_stops_with_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        _tool().main(["--root", str(tmp_path)])  # a root without VOC2007/
    assert str(e.value).startswith("error: ") and "\n" not in str(e.value)
    assert "test.txt not found" in str(e.value)
