"""VOC XML -> COCO json on a tiny VOC tree made here: raw XML boxes, difficult objects kept as ground truth,
all 20 classes, 07+12 ids, registration and COCO-style evaluation with COCOEvaluator."""
import importlib.util
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, BoxMode, Instances

from siamese_detr.data.datasets.voc_coco import VOC_CLASSES, register_voc_coco, voc_to_coco

ROOT = Path(__file__).resolve().parents[1]


def _xml(stem, h, w, objects):
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{diff}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, diff in objects
    )
    return (f"<annotation><folder>VOC</folder><filename>{stem}.jpg</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>")


def _make_voc(root: Path):
    """VOC2007 test: 4 images covering all 20 classes (one difficult object per image); VOC2007 trainval 1,
    VOC2012 trainval 2 images. Returns {stem: [(class, xyxy, difficult), ...]}."""
    truth = {}
    classes = list(VOC_CLASSES)
    layout = {
        ("VOC2007", "test"): ["000001", "000004", "000010", "000012"],
        ("VOC2007", "trainval"): ["000005"],
        ("VOC2012", "trainval"): ["2008_000002", "2011_003276"],
    }
    k = 0
    for (year, split), stems in layout.items():
        (root / year / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / year / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / year / "JPEGImages").mkdir(parents=True, exist_ok=True)
        with open(root / year / "ImageSets" / "Main" / f"{split}.txt", "a") as f:
            f.write("".join(f"{s}\n" for s in stems))
        for stem in stems:
            h, w = 60 + 3 * k, 80
            objects = []
            for j in range(5):
                name = classes[(5 * k + j) % 20]
                x0, y0 = 1 + 12 * j, 2 + 5 * j
                objects.append((name, (x0, y0, x0 + 10 + j, y0 + 20), int(j == 2)))
            truth[stem] = (h, w, objects)
            (root / year / "Annotations" / f"{stem}.xml").write_text(_xml(stem, h, w, objects))
            cv2.imwrite(str(root / year / "JPEGImages" / f"{stem}.jpg"), np.full((h, w, 3), 100, np.uint8))
            k += 1
    return truth


@pytest.fixture()
def voc_root(tmp_path):
    truth = _make_voc(tmp_path)
    yield tmp_path, truth
    register_voc_coco()  # back to $DETECTRON2_DATASETS


def test_conversion_raw_boxes_difficult_and_all_classes(voc_root):
    root, truth = voc_root
    data = voc_to_coco(str(root), [("VOC2007", "test")])
    assert [c["name"] for c in data["categories"]] == list(VOC_CLASSES)
    assert [c["id"] for c in data["categories"]] == list(range(1, 21))
    assert [im["id"] for im in data["images"]] == [1, 4, 10, 12]
    assert data["images"][0]["file_name"] == "VOC2007/JPEGImages/000001.jpg"
    assert {cat for cat in (a["category_id"] for a in data["annotations"])} == set(range(1, 21))
    anns = [a for a in data["annotations"] if a["image_id"] == 4]
    h, w, objects = truth["000004"]
    assert data["images"][1]["height"] == h and data["images"][1]["width"] == w
    for a, (name, (x0, y0, x1, y1), diff) in zip(anns, objects):
        assert a["bbox"] == [x0, y0, x1 - x0, y1 - y0] and a["area"] == (x1 - x0) * (y1 - y0)
        assert VOC_CLASSES[a["category_id"] - 1] == name
        assert a["difficult"] == diff and a["iscrowd"] == 0  # difficult: recorded, still ground truth
    assert len(data["annotations"]) == 20 and sum(a["difficult"] for a in data["annotations"]) == 4
    assert len({a["id"] for a in data["annotations"]}) == 20


def test_tool_writes_07_12_and_registration_loads_it(voc_root):
    root, _ = voc_root
    spec = importlib.util.spec_from_file_location("prepare_voc_coco", ROOT / "datasets" / "prepare_voc_coco.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(["--root", str(root)])
    with open(root / "voc_coco" / "voc_2007_2012_trainval.json") as f:
        trainval = json.load(f)
    assert [im["id"] for im in trainval["images"]] == [5, 2008000002, 2011003276]
    assert trainval["images"][1]["file_name"] == "VOC2012/JPEGImages/2008_000002.jpg"

    register_voc_coco(str(root))
    dicts = DatasetCatalog.get("voc_2007_test_coco")
    assert len(dicts) == 4 and os.path.isfile(dicts[0]["file_name"])
    assert all(a["bbox_mode"] == BoxMode.XYWH_ABS for d in dicts for a in d["annotations"])
    assert sorted({a["category_id"] for d in dicts for a in d["annotations"]}) == list(range(20))
    meta = MetadataCatalog.get("voc_2007_test_coco")
    assert meta.evaluator_type == "coco" and meta.thing_classes == list(VOC_CLASSES)


def test_missing_json_names_the_tool(tmp_path):
    register_voc_coco(str(tmp_path))
    try:
        with pytest.raises(FileNotFoundError, match="prepare_voc_coco.py"):
            DatasetCatalog.get("voc_2007_test_coco")
    finally:
        register_voc_coco()


def _predictions(dicts, keep):
    out = []
    for d in dicts:
        anns = [a for a in d["annotations"] if keep(a)]
        inst = Instances((d["height"], d["width"]))
        xyxy = [BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for a in anns]
        inst.pred_boxes = Boxes(torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        out.append({"instances": inst})
    return out


def test_coco_evaluator_counts_difficult_objects(voc_root, tmp_path):
    root, _ = voc_root
    from siamese_detr.data.datasets.voc_coco import write_voc_coco

    write_voc_coco(str(root), ["voc_2007_test_coco"])
    register_voc_coco(str(root))
    dicts = DatasetCatalog.get("voc_2007_test_coco")
    with open(root / "voc_coco" / "voc_2007_test.json") as f:
        difficult = {a["id"]: a["difficult"] for a in json.load(f)["annotations"]}
    results = {}
    for label, keep in (("all", lambda a: True), ("no_difficult", None)):
        ev = COCOEvaluator("voc_2007_test_coco", output_dir=str(tmp_path / label), use_fast_impl=False)
        ev.reset()
        if keep is None:  # drop the predictions of the difficult objects (one per image)
            order = iter(sorted(difficult))
            flags = {}
            for d in dicts:
                for a in d["annotations"]:
                    flags[id(a)] = difficult[next(order)]
            keep = lambda a, flags=flags: not flags[id(a)]  # noqa: E731
        ev.process([{"image_id": d["image_id"]} for d in dicts], _predictions(dicts, keep))
        results[label] = ev.evaluate()["bbox"]
    assert results["all"]["AP"] == pytest.approx(100.0) and results["all"]["AP50"] == pytest.approx(100.0)
    # missing the difficult objects costs recall: they are ordinary ground truth (the 4 difficult objects
    # are 4 of the 20 classes, one each, so those 4 classes get AP 0 -> mean AP 80)
    assert results["no_difficult"]["AP"] == pytest.approx(80.0)


def _tiny_voc(root: Path, list_lines, xml_by_stem):
    """VOC2007 with ``ImageSets/Main/test.txt`` = ``list_lines`` and one annotation file per stem."""
    (root / "VOC2007" / "Annotations").mkdir(parents=True)
    (root / "VOC2007" / "ImageSets" / "Main").mkdir(parents=True)
    (root / "VOC2007" / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{x}\n" for x in list_lines))
    for stem, xml in xml_by_stem.items():
        (root / "VOC2007" / "Annotations" / f"{stem}.xml").write_text(xml)


def test_flags_default_to_0_and_list_lines_may_carry_a_second_column(tmp_path):
    """``<difficult>`` / ``<truncated>`` absent or empty are 0, "1.0" is 1; a list line "000002  -1" (the
    per-class list format, image name then a label) lists image 000002; blank lines are skipped."""
    obj = ("<object><name>dog</name>{flags}<bndbox><xmin>3</xmin><ymin>4</ymin><xmax>13</xmax><ymax>24</ymax>"
           "</bndbox></object>")
    flags = ["", "<difficult></difficult><truncated/>", "<difficult>1.0</difficult><truncated>1</truncated>"]
    xml = "<annotation><size><width>40</width><height>30</height></size>{}</annotation>".format(
        "".join(obj.format(flags=f) for f in flags))
    _tiny_voc(tmp_path, ["000002  -1", "", "000003 1"], {"000002": xml, "000003": xml})
    data = voc_to_coco(str(tmp_path), [("VOC2007", "test")])
    assert [im["id"] for im in data["images"]] == [2, 3]
    assert [im["file_name"] for im in data["images"]] == ["VOC2007/JPEGImages/000002.jpg",
                                                          "VOC2007/JPEGImages/000003.jpg"]
    anns = [a for a in data["annotations"] if a["image_id"] == 2]
    assert [(a["difficult"], a["truncated"]) for a in anns] == [(0, 0), (0, 0), (1, 1)]
    assert all(a["iscrowd"] == 0 and a["bbox"] == [3.0, 4.0, 10.0, 20.0] and a["area"] == 200.0 for a in anns)


def test_an_image_listed_twice_is_refused_naming_both(tmp_path):
    """The same image twice in a list would be evaluated twice (its objects counted twice): refused."""
    from siamese_detr.data.datasets.voc_coco import VocAnnotationError

    xml = "<annotation><size><width>40</width><height>30</height></size></annotation>"
    _tiny_voc(tmp_path, ["000001", "000002", "000001"], {"000001": xml, "000002": xml})
    with pytest.raises(VocAnnotationError, match="image id 1 of VOC2007/000001 already used by VOC2007/000001"):
        voc_to_coco(str(tmp_path), [("VOC2007", "test")])


def test_fractional_coordinates_are_kept_as_written(tmp_path):
    """Coordinates are read as floats (some annotation tools write "48.5"): bbox = [xmin, ymin, xmax - xmin,
    ymax - ymin] = [2.5, 4, 10.25, 20], area 205."""
    xml = ("<annotation><size><width>40</width><height>30</height></size><object><name>cat</name><bndbox>"
           "<xmin>2.5</xmin><ymin>4</ymin><xmax>12.75</xmax><ymax>24.0</ymax></bndbox></object></annotation>")
    _tiny_voc(tmp_path, ["000007"], {"000007": xml})
    (ann,) = voc_to_coco(str(tmp_path), [("VOC2007", "test")])["annotations"]
    assert ann["bbox"] == [2.5, 4.0, 10.25, 20.0] and ann["area"] == 205.0
    assert ann["category_id"] == VOC_CLASSES.index("cat") + 1 == 8
