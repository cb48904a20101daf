"""Built-in synthetic-shapes dataset: determinism, annotation validity, reuse, concurrency, registration."""
import json
import multiprocessing
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, BoxMode, Instances

import siamese_detr.data  # noqa: F401  (registers the datasets)
from siamese_detr.data.datasets import (
    SYNTHETIC_SHAPES_CLASSES,
    ensure_synthetic_shapes,
    generate_synthetic_shapes,
    register_synthetic_shapes,
)
from siamese_detr.data.datasets.shapes_render import CATEGORY_STYLES, render_scene, shape_mask


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _load(json_file):
    with open(json_file) as f:
        return json.load(f)


@pytest.fixture
def restore_registration():
    yield
    register_synthetic_shapes()  # back to the defaults of `import siamese_detr.data`


def test_generation_is_bit_identical(tmp_path):
    a = generate_synthetic_shapes(str(tmp_path / "a"), "val", num_images=5, seed=7)
    b = generate_synthetic_shapes(str(tmp_path / "b"), "val", num_images=5, seed=7)
    assert _bytes(a[1]) == _bytes(b[1])
    names = sorted(os.listdir(a[0]))
    assert names == sorted(os.listdir(b[0])) and len(names) == 5
    for name in names:
        assert _bytes(os.path.join(a[0], name)) == _bytes(os.path.join(b[0], name))
    # image i depends only on seed + i: seed 8 image 0 is seed 7 image 1
    c = generate_synthetic_shapes(str(tmp_path / "c"), "val", num_images=1, seed=8)
    assert _bytes(os.path.join(c[0], "000000.png")) == _bytes(os.path.join(a[0], "000001.png"))


def test_annotations_are_valid_and_cover_all_categories(tmp_path):
    image_root, json_file = generate_synthetic_shapes(str(tmp_path), "train", num_images=24)
    coco = _load(json_file)
    assert [c["id"] for c in coco["categories"]] == list(range(1, 9))
    assert tuple(c["name"] for c in coco["categories"]) == SYNTHETIC_SHAPES_CLASSES
    assert 6 <= len(SYNTHETIC_SHAPES_CLASSES) <= 8
    images = {im["id"]: im for im in coco["images"]}
    assert len(images) == 24
    for im in images.values():
        short, long = sorted((im["height"], im["width"]))
        assert 160 <= short <= 256 and long <= short * 4 / 3 + 1
        assert os.path.isfile(os.path.join(image_root, im["file_name"]))
    per_image = {i: 0 for i in images}
    for ann in coco["annotations"]:
        im = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= im["width"] and y + h <= im["height"]
        assert 0 < ann["area"] <= w * h
        assert ann["iscrowd"] == 0 and 0.3 <= ann["visibility"] <= 1.0
        per_image[ann["image_id"]] += 1
    assert all(1 <= n <= 8 for n in per_image.values())  # the top object is always visible
    assert {a["category_id"] for a in coco["annotations"]} == set(range(1, 9))
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    sides = [np.sqrt(a["bbox"][2] * a["bbox"][3]) / min(images[a["image_id"]]["height"],
                                                        images[a["image_id"]]["width"])
             for a in coco["annotations"] if a["visibility"] == 1.0]
    assert min(sides) < 0.15 and max(sides) > 0.4  # many scales


@pytest.mark.parametrize("min_visible", [0.0, 0.3])
def test_boxes_and_areas_are_those_of_the_visible_pixels(monkeypatch, min_visible):
    """Each object painted in its own flat colour on a black, clutter-free background: its annotation must be
    the tight box and the count of the pixels of that colour left in the image (later objects paint over
    earlier ones), and its visibility that count over its mask's; objects below min_visible are dropped."""
    from siamese_detr.data.datasets import shapes_render

    masks = []

    def flat_patch(rng, texture, colour, mask):
        masks.append(int(mask.astype(bool).sum()))
        k = len(masks)
        return np.broadcast_to(np.array([k, 255 - k, 128], np.uint8), mask.shape + (3,)).copy()

    monkeypatch.setattr(shapes_render, "render_background", lambda rng, h, w: np.zeros((h, w, 3), np.uint8))
    monkeypatch.setattr(shapes_render, "draw_clutter", lambda rng, image, num: None)
    monkeypatch.setattr(shapes_render, "texture_patch", flat_patch)
    checked = 0
    for seed in range(12):
        masks.clear()
        image, objects = render_scene(np.random.default_rng(seed), 96, 128, min_visible=min_visible)
        expected = []
        for k, full in enumerate(masks, start=1):
            ys, xs = np.nonzero(np.all(image == np.array([k, 255 - k, 128], np.uint8), axis=2))
            if len(xs) == 0 or len(xs) < min_visible * full:
                continue
            box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            expected.append((box, len(xs), len(xs) / full))
        assert [(o["bbox"], o["area"], o["visibility"]) for o in objects] == expected
        checked += len(expected)
    assert checked >= 30


@pytest.mark.parametrize("shape", [style[1] for style in CATEGORY_STYLES])
def test_shape_masks_fill_their_patch(shape):
    # objects span the sampled size: the mask reaches every border of its patch (the crescent's bite
    # removes one side, so it reaches three)
    rng = np.random.default_rng(0)
    for w, h in [(5, 6), (17, 13), (64, 80)]:
        mask = shape_mask(rng, shape, w, h)
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 1}
        rows, cols = mask.any(axis=1), mask.any(axis=0)
        touching = [rows[0], rows[-1], cols[0], cols[-1]]
        assert sum(map(bool, touching)) == (3 if shape == "crescent" else 4)
        assert rows[0] and rows[-1]


def test_occlusion_filter_only_removes_hidden_objects():
    for seed in range(6):
        img_all, all_objs = render_scene(np.random.default_rng(seed), 200, 240, min_visible=0.0)
        img, objs = render_scene(np.random.default_rng(seed), 200, 240, min_visible=0.3)
        assert np.array_equal(img, img_all)  # the filter does not change the pixels
        assert objs == [o for o in all_objs if o["visibility"] >= 0.3]
        assert all_objs[-1]["visibility"] == 1.0  # drawn last = on top


def test_ensure_reuses_then_regenerates_on_parameter_change(tmp_path):
    root = str(tmp_path)
    image_root, json_file = ensure_synthetic_shapes("val", root, num_images=3)
    mtime = os.stat(json_file).st_mtime_ns
    assert ensure_synthetic_shapes("val", root, num_images=3) == (image_root, json_file)
    assert os.stat(json_file).st_mtime_ns == mtime  # reused
    info = _load(json_file)["info"]
    assert info["num_images"] == 3 and info["split"] == "val" and "version" in info
    os.makedirs(os.path.join(os.path.dirname(image_root), ".tmp-val-killed", "images"))  # a crashed run
    ensure_synthetic_shapes("val", root, num_images=4)
    assert len(_load(json_file)["images"]) == 4 and len(os.listdir(image_root)) == 4
    with open(json_file, "w") as f:
        f.write('{"info": ')  # a torn write
    ensure_synthetic_shapes("val", root, num_images=4)
    assert len(_load(json_file)["images"]) == 4
    leftovers = [n for n in os.listdir(os.path.dirname(image_root)) if n.startswith(".tmp")]
    assert leftovers == []


def test_damaged_or_missing_image_regenerates_the_split(tmp_path, caplog):
    """An image overwritten or deleted after generation (seen by a new process) is detected through the
    sha256 its json entry records, and the split is regenerated to the same bytes."""
    from siamese_detr.data.datasets import builtin_shapes

    root = str(tmp_path)
    image_root, json_file = ensure_synthetic_shapes("val", root, num_images=3)
    entries = _load(json_file)["images"]
    assert all(len(e["sha256"]) == 64 for e in entries)
    path = os.path.join(image_root, entries[1]["file_name"])
    original = _bytes(path)
    import hashlib
    assert hashlib.sha256(original).hexdigest() == entries[1]["sha256"]  # the digest is of the file's bytes
    with open(path, "r+b") as f:  # same size, one byte changed: a listing or size check cannot see it
        f.seek(len(original) // 2)
        f.write(bytes([original[len(original) // 2] ^ 0xFF]))
    builtin_shapes._VALIDATED.clear()  # a new process
    with caplog.at_level("WARNING", logger=builtin_shapes.__name__):
        ensure_synthetic_shapes("val", root, num_images=3)
    assert path in caplog.text and "regenerating" in caplog.text
    assert _bytes(path) == original
    os.remove(os.path.join(image_root, entries[2]["file_name"]))
    builtin_shapes._VALIDATED.clear()
    ensure_synthetic_shapes("val", root, num_images=3)
    assert _bytes(os.path.join(image_root, entries[2]["file_name"])) and _load(json_file)["images"] == entries


def test_json_of_an_older_generator_without_digests_is_regenerated(tmp_path):
    from siamese_detr.data.datasets import builtin_shapes

    root = str(tmp_path)
    image_root, json_file = ensure_synthetic_shapes("val", root, num_images=2)
    coco = _load(json_file)
    for entry in coco["images"]:
        del entry["sha256"]
    with open(json_file, "w") as f:
        json.dump(coco, f)
    builtin_shapes._VALIDATED.clear()
    ensure_synthetic_shapes("val", root, num_images=2)
    assert all("sha256" in e for e in _load(json_file)["images"])


def test_copy_from_another_generator_version_is_regenerated_with_a_warning(tmp_path, caplog):
    """datasets/README.md: a copy made by another version of the generator is regenerated, with a warning
    naming its json and the two versions."""
    from siamese_detr.data.datasets import builtin_shapes

    root = str(tmp_path)
    image_root, json_file = ensure_synthetic_shapes("val", root, num_images=2)
    coco = _load(json_file)
    current = coco["info"]["version"]
    coco["info"]["version"] = "an older one"
    with open(json_file, "w") as f:
        json.dump(coco, f)
    builtin_shapes._VALIDATED.clear()  # a new process
    with caplog.at_level("WARNING", logger=builtin_shapes.__name__):
        ensure_synthetic_shapes("val", root, num_images=2)
    assert _load(json_file)["info"]["version"] == current
    assert json_file in caplog.text and f"version 'an older one' (now {current!r})" in caplog.text
    assert "regenerating" in caplog.text


def _ensure_in_child(root):
    return ensure_synthetic_shapes("train", root, num_images=6)[1]


def test_concurrent_ensure_gives_one_consistent_copy(tmp_path):
    root = str(tmp_path / "shared")
    with multiprocessing.get_context("fork").Pool(3) as pool:
        results = pool.map(_ensure_in_child, [root] * 6)
    assert len(set(results)) == 1
    reference = generate_synthetic_shapes(str(tmp_path / "ref"), "train", num_images=6)
    assert _bytes(results[0]) == _bytes(reference[1])
    image_root = os.path.join(root, "synthetic_shapes", "train")
    assert sorted(os.listdir(image_root)) == sorted(os.listdir(reference[0]))


def test_registration_and_coco_evaluator(tmp_path, monkeypatch, restore_registration):
    assert "synthetic_shapes_train" in DatasetCatalog.list()  # by `import siamese_detr.data`
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_synthetic_shapes(num_images={"train": 6, "val": 4})
    register_synthetic_shapes(num_images={"train": 6, "val": 4})  # idempotent
    meta = MetadataCatalog.get("synthetic_shapes_val")
    assert meta.thing_classes == list(SYNTHETIC_SHAPES_CLASSES) and meta.evaluator_type == "coco"
    assert not os.path.exists(tmp_path / "synthetic_shapes")  # registering writes nothing

    # the evaluator reads metadata.json_file before anything loaded the dataset
    evaluator = COCOEvaluator("synthetic_shapes_val", output_dir=str(tmp_path / "eval"), use_fast_impl=False)
    assert meta.json_file == str(tmp_path / "synthetic_shapes" / "annotations" / "val.json")

    dicts = DatasetCatalog.get("synthetic_shapes_val")
    assert len(dicts) == 4 and all(d["annotations"] for d in dicts)
    assert len(DatasetCatalog.get("synthetic_shapes_train")) == 6
    # ground truth as predictions scores AP 100: checks boxes and category-id mapping end to end
    evaluator.reset()
    for d in dicts:
        inst = Instances((d["height"], d["width"]))
        xyxy = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
        inst.pred_boxes = Boxes(torch.tensor(xyxy, dtype=torch.float32))
        inst.scores = torch.ones(len(xyxy))
        inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]])
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)


def test_train_large_extends_train_and_low_label_subsets(tmp_path, monkeypatch, restore_registration):
    from siamese_detr.data.datasets.builtin_shapes import low_label_indices, low_label_name, register_low_label_split

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_synthetic_shapes(num_images={"train": 3, "train_large": 20, "val": 2})
    train = DatasetCatalog.get("synthetic_shapes_train")
    large = DatasetCatalog.get("synthetic_shapes_train_large")
    assert len(large) == 20
    for a, b in zip(train, large[:3]):  # same seeds: the first images of train_large ARE the train split
        assert _bytes(a["file_name"]) == _bytes(b["file_name"]) and a["annotations"] == b["annotations"]

    name = low_label_name(10, 0)
    assert name == "synthetic_shapes_train_large_10pct_seed0" and name in DatasetCatalog.list()
    subset = DatasetCatalog.get(name)
    expected = sorted(np.random.default_rng(0).choice(20, size=2, replace=False).tolist())  # 10% of 20
    assert [d["image_id"] for d in subset] == [large[i]["image_id"] for i in expected]
    assert low_label_indices(20, 10, 0).tolist() == expected
    assert low_label_indices(1024, 10, 3).tolist() != low_label_indices(1024, 10, 4).tolist()
    assert len(low_label_indices(1024, 10, 3)) == 102 and len(set(low_label_indices(1024, 10, 3).tolist())) == 102
    other = register_low_label_split(50, 7)
    assert len(DatasetCatalog.get(other)) == 10
    assert MetadataCatalog.get(name).thing_classes == list(SYNTHETIC_SHAPES_CLASSES)


def test_low_label_subsets_outside_the_defaults_register_on_first_use(tmp_path, monkeypatch, restore_registration):
    """A training process given ``..._{P}pct_seed{S}`` with P / S outside the defaults (e.g. through
    ``compare_pretraining.py --low-label-percent 25``) registers the subset when it checks its datasets."""
    from siamese_detr.data.dataset_checks import check_datasets_on_disk

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_synthetic_shapes(num_images={"train": 3, "train_large": 20, "val": 2})
    name = "synthetic_shapes_train_large_25pct_seed44"
    assert name not in DatasetCatalog.list()
    check_datasets_on_disk([name])
    large = DatasetCatalog.get("synthetic_shapes_train_large")
    expected = sorted(np.random.default_rng(44).choice(20, size=5, replace=False).tolist())  # 25% of 20
    assert [d["image_id"] for d in DatasetCatalog.get(name)] == [large[i]["image_id"] for i in expected]
    assert MetadataCatalog.get(name).thing_classes == list(SYNTHETIC_SHAPES_CLASSES)
    with pytest.raises(ValueError, match="1..100"):
        check_datasets_on_disk(["synthetic_shapes_train_large_0pct_seed1"])
    with pytest.raises(KeyError, match="synthetic_shapes_val_10pct_seed0"):  # only train / train_large subsets
        check_datasets_on_disk(["synthetic_shapes_val_10pct_seed0"])


def test_sizes_from_environment(tmp_path, monkeypatch, restore_registration):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    monkeypatch.setenv("SYNTHETIC_SHAPES_NUM_IMAGES", "val=2, train_large=3")
    register_synthetic_shapes()
    assert len(DatasetCatalog.get("synthetic_shapes_val")) == 2
    assert len(DatasetCatalog.get("synthetic_shapes_train_large")) == 3
    monkeypatch.setenv("SYNTHETIC_SHAPES_NUM_IMAGES", "val=two")
    with pytest.raises(ValueError, match="SPLIT=N"):
        ensure_synthetic_shapes("val", str(tmp_path))
    monkeypatch.setenv("SYNTHETIC_SHAPES_NUM_IMAGES", "trian=3")  # a misspelt split is not ignored
    with pytest.raises(ValueError, match="unknown split 'trian'.*train, val, train_large, dev"):
        ensure_synthetic_shapes("train", str(tmp_path))
    monkeypatch.setenv("SYNTHETIC_SHAPES_NUM_IMAGES", "train=-1")
    with pytest.raises(ValueError, match="'train=-1' must give at least 1 image"):
        ensure_synthetic_shapes("train", str(tmp_path))


def test_tiny_train_gives_tiny_train_large(tmp_path, monkeypatch, restore_registration):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_synthetic_shapes(num_images={"train": 5, "val": 2})
    assert len(DatasetCatalog.get("synthetic_shapes_train_large")) == 5
    assert len(DatasetCatalog.get("synthetic_shapes_train_large_10pct_seed0")) == 1


def test_dev_split_is_held_out_from_every_other_split(tmp_path, monkeypatch, restore_registration):
    """The demo's settings are chosen on ``synthetic_shapes_dev``: its scenes must be none of val's, of the
    (pre)training images' or of the backbone's classification scenes (seed ranges), and it must load."""
    from detectron2.config import LazyConfig

    from siamese_detr.data.datasets.builtin_shapes import DEFAULT_NUM_IMAGES, DEFAULT_SEEDS

    ranges = {split: range(DEFAULT_SEEDS[split], DEFAULT_SEEDS[split] + DEFAULT_NUM_IMAGES[split])
              for split in ("train_large", "val", "dev")}
    backbone_cfg = LazyConfig.load(os.path.join(os.path.dirname(__file__), "..", "configs", "demo", "demo_backbone.py"))
    start = backbone_cfg.data.classification_seed
    ranges["classification"] = range(start, start + backbone_cfg.data.classification_scenes)
    for a in ranges:
        for b in ranges:
            if a < b:
                assert not set(ranges[a]) & set(ranges[b]), (a, b)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_synthetic_shapes(num_images={"dev": 2, "val": 2})
    dev, val = DatasetCatalog.get("synthetic_shapes_dev"), DatasetCatalog.get("synthetic_shapes_val")
    assert len(dev) == 2 and all(d["annotations"] for d in dev)
    assert _bytes(dev[0]["file_name"]) != _bytes(val[0]["file_name"])
    assert MetadataCatalog.get("synthetic_shapes_dev").evaluator_type == "coco"


def test_prepare_script_refuses_bad_arguments_before_writing(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "datasets" / "prepare_synthetic_shapes.py"
    spec = importlib.util.spec_from_file_location("prepare_synthetic_shapes_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for argv, message in [(["--num-train", "0"], "--num-train must be at least 1, got 0"),
                          (["--num-val", "-3"], "--num-val must be at least 1, got -3"),
                          (["--preview", str(tmp_path / "p.txt")], "give a .png or .jpg file"),
                          (["--root", str(a_file)], "is a file, not a folder")]:
        with pytest.raises(SystemExit) as e:
            module.main(["--root", str(tmp_path / "root")] + argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "root").exists()


def test_object_sizes_counts_and_aspects_as_documented(monkeypatch):
    """Each object's patch (the size given to ``shape_mask``) has side sqrt(w h) log-uniform in
    ``scale_range`` of the short image side (median sqrt(0.08 * 0.6) = 0.22, not the uniform 0.34) and w / h in
    its shape's aspect range (up to the rounding of w and h); a scene holds 2..``max_objects`` objects, both
    ends reached; the object drawn last is always annotated, even with ``min_visible=1`` (fully visible)."""
    from siamese_detr.data.datasets import shapes_render

    sizes, counts = [], []
    original = shapes_render.shape_mask
    monkeypatch.setattr(shapes_render, "shape_mask",
                        lambda rng, shape, w, h: sizes.append((shape, w, h)) or original(rng, shape, w, h))
    for seed in range(40):
        before = len(sizes)
        _, objects = render_scene(np.random.default_rng(seed), 200, 300, max_objects=4, min_visible=1.0)
        counts.append(len(sizes) - before)
        assert objects and objects[-1]["visibility"] == 1.0
    assert set(counts) == {2, 3, 4}
    ratios = np.array([np.sqrt(w * h) / 200 for _, w, h in sizes])
    assert 0.08 * 0.97 <= ratios.min() and ratios.max() <= 0.6 * 1.03
    assert 0.18 < np.median(ratios) < 0.26
    ranges = {"circle": (0.85, 1.18), "ring": (0.8, 1.25), "square": (0.8, 1.25), "star": (0.85, 1.18)}
    for shape, w, h in sizes:
        lo, hi = ranges.get(shape, (0.7, 1.4))
        slack = 1 / min(w, h)  # rounding of w and h to whole pixels
        assert lo - 2 * slack <= w / h <= hi + 2 * slack, (shape, w, h)
    # objects as large as the image fit (placement upper bound inclusive), and max_objects=2 is legal
    _, objects = render_scene(np.random.default_rng(0), 32, 32, max_objects=2, scale_range=(1.0, 1.0))
    assert objects


def test_hues_and_solid_shading():
    """``hsv_colour`` keeps hue +- jitter on OpenCV's 0..179 circle (red 0 wraps to 172..179, not beyond);
    the solid texture is shaded vertically: constant along each row, darker towards the bottom."""
    from siamese_detr.data.datasets.shapes_render import hsv_colour, texture_patch

    rng = np.random.default_rng(0)
    hues = [int(cv2.cvtColor(hsv_colour(rng, 0)[None, None], cv2.COLOR_BGR2HSV)[0, 0, 0]) for _ in range(60)]
    assert all(min(h, 180 - h) <= 9 for h in hues) and max(hues) > 90  # both sides of 0 drawn
    patch = texture_patch(rng, "solid", np.array([200, 100, 50], np.uint8), np.ones((20, 10), np.uint8))
    assert np.all(patch == patch[:, :1])
    assert np.all(np.diff(patch.astype(int), axis=0) <= 0) and np.all(patch[-1] < patch[0])
