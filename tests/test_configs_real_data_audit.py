"""The real-scale data paths as a user on their own machine meets them, on tiny data made here: the VOC
conversion and low-data scripts stop with one line naming the file and the fix (no traceback), the VOC splits
of the paper's data-efficiency figure are registered, and datasets/README.md names every folder and proposal
store the real-scale configs read."""
import importlib.util
import os
from pathlib import Path

import pytest
from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog

from siamese_detr.data.datasets.voc_coco import register_voc_coco
from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]
GOOD_OBJECT = ("<object><name>dog</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
               "<bndbox><xmin>10</xmin><ymin>12</ymin><xmax>60</xmax><ymax>70</ymax></bndbox></object>")
GOOD_SIZE = "<size><width>128</width><height>96</height><depth>3</depth></size>"


def _xml(size=GOOD_SIZE, obj=GOOD_OBJECT):
    return f"<annotation><filename>x.jpg</filename>{size}{obj}</annotation>"


def _tool(name):
    return load_script(ROOT / "datasets" / f"{name}.py", name)


def _make_voc(root: Path, stems_by_part, xml=None):
    """A VOC tree with the XML only (the conversion reads no image): {(year, split): [stem, ...]}."""
    for (year, split), stems in stems_by_part.items():
        (root / year / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / year / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        with open(root / year / "ImageSets" / "Main" / f"{split}.txt", "a") as f:
            f.write("".join(f"{s}\n" for s in stems))
        for stem in stems:
            (root / year / "Annotations" / f"{stem}.xml").write_text(xml or _xml())


VOC_PARTS = {("VOC2007", "test"): ["000001", "000004"], ("VOC2007", "trainval"): ["000005", "000007"],
             ("VOC2012", "trainval"): ["2008_000002", "2008_000003"]}

# name -> (content of VOC2007/Annotations/000004.xml, or None to delete it; words the message must hold)
MALFORMED = {
    "truncated": (_xml()[:90], ["not valid XML"]),
    "not_xml": ("this is not xml\n", ["not valid XML"]),
    "empty": ("", ["not valid XML"]),
    "no_size": (_xml(size=""), ["no <size>"]),
    "no_bndbox": (_xml(obj="<object><name>dog</name><difficult>0</difficult></object>"), ["no <bndbox>"]),
    "no_xmax": (_xml(obj=GOOD_OBJECT.replace("<xmax>60</xmax>", "")), ["<bndbox>", "no <xmax>"]),
    "width_not_a_number": (_xml(size=GOOD_SIZE.replace(">128<", ">abc<")), ["<width>", "'abc'"]),
    "zero_size": (_xml(size=GOOD_SIZE.replace(">128<", ">0<")), ["<size>", "not a positive size"]),
    "no_name": (_xml(obj=GOOD_OBJECT.replace("<name>dog</name>", "")), ["no <name>"]),
    "missing_file": (None, ["annotation file not found"]),
}


@pytest.fixture
def restore_voc_registration():
    """Re-register the VOC json names under the root they had before the test (which may change the env)."""
    root = os.getenv("DETECTRON2_DATASETS", "datasets")
    yield
    register_voc_coco(root)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_prepare_voc_coco_malformed_xml_is_one_line_naming_the_file(case, tmp_path):
    content, words = MALFORMED[case]
    _make_voc(tmp_path, VOC_PARTS)
    bad = tmp_path / "VOC2007" / "Annotations" / "000004.xml"
    if content is None:
        bad.unlink()
    else:
        bad.write_text(content)
    with pytest.raises(SystemExit) as exc:
        _tool("prepare_voc_coco").main(["--root", str(tmp_path), "--names", "voc_2007_test_coco"])
    message = str(exc.value.code)
    assert "\n" not in message and str(bad) in message, message
    for word in words:
        assert word in message, message
    assert not (tmp_path / "voc_coco" / "voc_2007_test.json").exists()


@pytest.mark.parametrize("case", ["unknown_class", "non_voc_stem"])
def test_prepare_voc_coco_bad_class_or_image_name_is_one_line(case, tmp_path):
    if case == "unknown_class":
        _make_voc(tmp_path, {("VOC2007", "test"): ["000001"]}, xml=_xml(obj=GOOD_OBJECT.replace(">dog<", ">dgo<")))
        expected = [str(tmp_path / "VOC2007" / "Annotations" / "000001.xml"), "'dgo'"]
    else:
        _make_voc(tmp_path, {("VOC2007", "test"): ["000001", "my_image"]})
        expected = [str(tmp_path / "VOC2007" / "ImageSets" / "Main" / "test.txt"), "'my_image'"]
    with pytest.raises(SystemExit) as exc:
        _tool("prepare_voc_coco").main(["--root", str(tmp_path), "--names", "voc_2007_test_coco"])
    message = str(exc.value.code)
    assert "\n" not in message and all(w in message for w in expected), message


def test_prepare_voc_coco_points_at_an_unmoved_vocdevkit(tmp_path):
    """The VOC tars extract to VOCdevkit/VOC2007: the error says to move it, as a one-line exit."""
    _make_voc(tmp_path / "VOCdevkit", VOC_PARTS)
    with pytest.raises(SystemExit) as exc:
        _tool("prepare_voc_coco").main(["--root", str(tmp_path)])
    message = str(exc.value.code)
    assert "\n" not in message and "VOCdevkit" in message and str(tmp_path / "VOC2007") in message, message


def test_voc_splits_of_the_data_efficiency_figure_are_registered(tmp_path, monkeypatch, restore_voc_registration):
    """Paper Fig. 8 finetunes on 10 / 30 / 50 / 70 % of VOC 07+12: each is a registered, loadable split."""
    _make_voc(tmp_path, {("VOC2007", "trainval"): [f"{i:06d}" for i in range(1, 11)]}, xml=_xml())
    _make_voc(tmp_path, {("VOC2012", "trainval"): [f"2008_{i:06d}" for i in range(1, 11)]}, xml=_xml())
    _tool("prepare_voc_coco").main(["--root", str(tmp_path), "--names", "voc_2007_2012_trainval_coco"])
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_voc_coco(str(tmp_path))
    names = [f"voc_2007_2012_trainval_{p}pct_seed42" for p in (10, 30, 50, 70)]
    _tool("prepare_low_data_splits").main(["--names", *names])
    assert [len(DatasetCatalog.get(n)) for n in names] == [2, 6, 10, 14]


def test_prepare_low_data_splits_missing_parent_is_one_line(tmp_path, monkeypatch, restore_voc_registration):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_voc_coco(str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        _tool("prepare_low_data_splits").main(["--names", "voc_2007_2012_trainval_10pct_seed42"])
    message = str(exc.value.code)
    assert "\n" not in message and "prepare_voc_coco.py" in message, message


def test_prepare_low_data_splits_changed_split_is_one_line(tmp_path, monkeypatch, restore_voc_registration):
    """A split file written from another parent (other ids) is kept and named, with the --force fix."""
    _make_voc(tmp_path, VOC_PARTS)
    _tool("prepare_voc_coco").main(["--root", str(tmp_path)])
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_voc_coco(str(tmp_path))
    tool = _tool("prepare_low_data_splits")
    name = "voc_2007_2012_trainval_30pct_seed42"
    tool.main(["--names", name])
    split = tmp_path / "low_data_splits" / f"{name}.json"
    before = split.read_text()
    (tmp_path / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").write_text("2008_000002\n")
    (tmp_path / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").write_text("000005\n")
    _tool("prepare_voc_coco").main(["--root", str(tmp_path)])  # the parent changed: 2 images instead of 4
    with pytest.raises(SystemExit) as exc:
        tool.main(["--names", name])
    message = str(exc.value.code)
    assert "\n" not in message and str(split) in message and "--force" in message, message
    assert split.read_text() == before
    tool.main(["--names", name, "--force"])
    assert split.read_text() != before


REAL_SCALE = sorted(
    str(p.relative_to(ROOT)) for d in ("siamese_detr", "detreg") for p in (ROOT / "configs" / d).glob("*.py")
)


def test_datasets_readme_names_every_folder_and_store_the_configs_read():
    """Where the real-scale configs look (proposal stores, converted VOC json, low-data splits) is in
    datasets/README.md, with the command that writes each store."""
    readme = (ROOT / "datasets" / "README.md").read_text()
    stores = set()
    for config_file in REAL_SCALE:
        source = LazyConfig.load(str(ROOT / config_file)).dataloader.train.mapper.get("proposal_source")
        if source is not None and "path" in source:
            stores.add(os.path.join(*Path(source.path).parts[-2:]))
    assert {"proposals/imagenet_train.edgeboxes.proposals",
            "proposals/coco_2017_train.selective_search.proposals"} <= stores
    for store in sorted(stores):
        assert f"`{store}`" in readme, f"datasets/README.md does not say where {store} comes from"
        assert f"--output $DETECTRON2_DATASETS/{store}" in readme, store
    for folder in ("voc_coco/", "low_data_splits/", "proposals/"):
        assert f"\n  {folder}" in readme, folder


def _readme_split_schedules():
    """The rows of datasets/README.md's table of low-data schedules: {split: (images, max_iter, milestone)}."""
    rows = {}
    for line in (ROOT / "datasets" / "README.md").read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith("pct_seed42") and cells[1].isdigit():
            rows[cells[0]] = (int(cells[1]), int(cells[2]), int(cells[3].strip("[]")))
    return rows


def test_low_data_splits_come_with_their_own_schedule():
    """A finetuning config's iterations are for the full dataset; the README gives each split's 40/50-epoch
    schedule at batch 32, and its command trains 50 epochs of the split, dropping the lr at 40."""
    from siamese_detr.data.datasets.low_data_select import LOW_DATA_SPLITS, select_subset
    from siamese_detr.engine import apply_checked_overrides

    spec = importlib.util.spec_from_file_location("schedules", ROOT / "configs" / "common" / "schedules.py")
    schedules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(schedules)
    full = {"voc_2007_2012_trainval_coco": 16551, "coco_2017_train": 118287}
    rows = _readme_split_schedules()
    assert set(rows) == set(LOW_DATA_SPLITS)
    for name, (parent, percent, seed, _protocol) in LOW_DATA_SPLITS.items():
        images = len(select_subset(range(full[parent]), percent, seed))
        assert rows[name] == (images, schedules.epochs_to_iters(50, images, 32),
                              schedules.epochs_to_iters(40, images, 32)), name

    images, max_iter, drop = rows["voc_2007_2012_trainval_10pct_seed42"]
    cfg = apply_checked_overrides(LazyConfig.load(str(ROOT / "configs" / "detr" / "detr_r50_voc_50ep.py")), [
        "dataloader.train.dataset.names=voc_2007_2012_trainval_10pct_seed42", f"train.max_iter={max_iter}",
        f"lr_multiplier.milestones=[{drop}]", f"lr_multiplier.num_updates={max_iter}"])
    batch = cfg.dataloader.train.total_batch_size
    assert round(cfg.train.max_iter * batch / images) == 50
    assert round(list(cfg.lr_multiplier.milestones)[0] * batch / images) == 40
    for config_file in ("configs/common/data/detr_voc.py", "configs/common/data/detr_coco.py"):
        doc = (ROOT / config_file).read_text()
        assert "ITERATIONS" in doc and "lr_multiplier.milestones=" in doc, config_file


@pytest.fixture
def unregister_imagenet():
    def drop():
        from detectron2.data import MetadataCatalog

        if "imagenet_train_unlabeled" in DatasetCatalog.list():
            DatasetCatalog.remove("imagenet_train_unlabeled")
            MetadataCatalog.remove("imagenet_train_unlabeled")
    drop()
    yield
    drop()


def test_imagenet_folder_of_unextracted_class_tars_is_named(tmp_path, monkeypatch, unregister_imagenet):
    """ILSVRC2012_img_train.tar holds one tar per class: left unextracted, the ImageNet pretraining config's
    dataset names the folder and the fix (Detectron2 alone says "Dataset '...' is empty!")."""
    from detectron2.config import instantiate

    train = tmp_path / "imagenet" / "train"
    train.mkdir(parents=True)
    for wnid in ("n01440764", "n01443537"):
        (train / f"{wnid}.tar").write_bytes(b"not extracted")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    cfg = LazyConfig.load(str(ROOT / "configs" / "siamese_detr" / "siamese_detr_r50_imagenet_60ep.py"))
    with pytest.raises(FileNotFoundError) as exc:
        instantiate(cfg.dataloader.train.dataset)
    message = str(exc.value)
    assert "\n" not in message and str(train) in message and "n01440764.tar" in message and "extract" in message
