"""Own data without a config: datasets by path, num_classes from the json, tuple overrides, evaluation switch,
files written by --eval-only, plain-text log files."""
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.config import LazyCall as L
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from omegaconf import OmegaConf

from siamese_detr.data.datasets import is_dataset_spec, parse_dataset_spec, register_dataset_spec
from siamese_detr.engine import apply_checked_overrides
from siamese_detr.engine.dataset_specs import register_config_datasets
from siamese_detr.engine.eval_outputs import append_eval_metrics, eval_hook, set_evaluator_output_dir
from siamese_detr.engine.logging_utils import held_records, make_file_handlers_plain, replay_records, strip_ansi
from siamese_detr.engine.override_syntax import tuples_to_lists

# COCO category ids on purpose not contiguous: detectron2 maps them, sorted by id, to 0..K-1
CATEGORIES = [{"id": 7, "name": "disc"}, {"id": 3, "name": "square"}]  # sorted by id: square (3), disc (7)
IMAGE_SIZE = (48, 64)  # (height, width)


def write_tiny_coco(root: Path, num_images: int = 6, num_val: int = 2) -> dict:
    """``root/images/`` (the last image in a sub-folder), ``root/train.json`` and ``root/val.json``: every image
    holds one square (category 3) on the left half and one disc (category 7) on the right half.

    Returns {"train": [image dicts], "val": [...], "annotations": [...]} as written."""
    rng = np.random.default_rng(0)
    (root / "images" / "sub").mkdir(parents=True, exist_ok=True)
    height, width = IMAGE_SIZE
    images, annotations = [], []
    for i in range(num_images):
        image = np.full((height, width, 3), 60 + 20 * i, np.uint8)
        image_id = 100 + i
        for half, (category, colour) in enumerate(((3, (255, 64, 64)), (7, (64, 255, 64)))):
            w, h = int(rng.integers(10, 18)), int(rng.integers(10, 18))
            x0 = half * width // 2 + int(rng.integers(0, width // 2 - w))
            y0 = int(rng.integers(0, height - h))
            if category == 3:
                cv2.rectangle(image, (x0, y0), (x0 + w - 1, y0 + h - 1), colour, -1)
            else:
                cv2.ellipse(image, (x0 + w // 2, y0 + h // 2), (w // 2, h // 2), 0, 0, 360, colour, -1)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0})
        file_name = f"sub/img_{i}.png" if i == num_images - 1 else f"img_{i}.png"
        cv2.imwrite(str(root / "images" / file_name), image)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    split = {"train": images[: num_images - num_val], "val": images[num_images - num_val:]}
    for name, split_images in split.items():
        ids = {im["id"] for im in split_images}
        payload = {"images": split_images, "annotations": [a for a in annotations if a["image_id"] in ids],
                   "categories": CATEGORIES}
        (root / f"{name}.json").write_text(json.dumps(payload))
    return dict(split, annotations=annotations)


@pytest.fixture
def tiny_coco(tmp_path):
    written = write_tiny_coco(tmp_path / "data")
    before = set(DatasetCatalog.list())
    yield tmp_path / "data", written
    for name in set(DatasetCatalog.list()) - before:  # specs registered by the test
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_parse_dataset_spec_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_dataset_spec("coco:a/train.json:imgs") == (
        "coco", {"json_file": str(tmp_path / "a" / "train.json"), "image_root": str(tmp_path / "imgs")})
    # no image root: the json's folder
    assert parse_dataset_spec("coco:/d/x.json") == ("coco", {"json_file": "/d/x.json", "image_root": "/d"})
    assert parse_dataset_spec("folder:/d/images") == ("folder", {"image_root": "/d/images"})
    assert is_dataset_spec("coco:x.json") and is_dataset_spec("folder:x") and not is_dataset_spec("coco_2017_val")
    for bad in ("coco:", "coco:/d/annotations.txt", "folder:", "voc:/x"):
        with pytest.raises(ValueError, match="coco:ANNOTATIONS.json"):
            parse_dataset_spec(bad)


def test_a_leading_tilde_in_a_spec_is_the_home_folder(tmp_path, monkeypatch):
    """The shell does not expand ``~`` inside ``coco:~/a.json`` (nor in a quoted override): the spec does, as a
    shell would, instead of looking for a folder named ``~`` in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    assert parse_dataset_spec("coco:~/d/x.json:~/imgs") == (
        "coco", {"json_file": str(home / "d" / "x.json"), "image_root": str(home / "imgs")})
    assert parse_dataset_spec("coco:~/d/x.json") == ("coco", {"json_file": str(home / "d" / "x.json"),
                                                              "image_root": str(home / "d")})
    assert parse_dataset_spec("folder:~/images") == ("folder", {"image_root": str(home / "images")})
    assert parse_dataset_spec("folder:a~/b") == ("folder", {"image_root": str(tmp_path / "a~" / "b")})


def test_missing_paths_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file .*nope.json"):
        register_dataset_spec(f"coco:{tmp_path}/nope.json")
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="image folder .*no_images"):
        register_dataset_spec(f"coco:{tmp_path}/a.json:{tmp_path}/no_images")
    with pytest.raises(ValueError, match="not a COCO detection json"):
        register_dataset_spec(f"coco:{tmp_path}/a.json")
    with pytest.raises(FileNotFoundError, match="image folder"):
        register_dataset_spec(f"folder:{tmp_path}/no_images")


@pytest.mark.parametrize("content, empty", [
    ({"images": [], "annotations": [], "categories": []}, "an empty 'images' and an empty 'categories' list"),
    ({"images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4}], "annotations": [], "categories": []},
     "an empty 'categories' list"),
])
def test_a_coco_json_without_images_or_categories_is_named(tmp_path, content, empty):
    """detectron2's load_coco_json fails on them with "min() arg is an empty sequence"."""
    (tmp_path / "empty.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty.json'}' has {empty}"):
        register_dataset_spec(f"coco:{tmp_path / 'empty.json'}")


def test_an_empty_list_of_dataset_names_is_named():
    from siamese_detr.data.dataset_checks import get_checked_dataset_dicts

    with pytest.raises(ValueError, match=r"no dataset given \(names=\[\]"):
        get_checked_dataset_dicts([])


def test_coco_spec_registers_boxes_classes_and_files(tiny_coco):
    root, written = tiny_coco
    spec = f"coco:{root}/train.json:{root}/images"
    assert register_dataset_spec(spec) == spec and register_dataset_spec(spec) == spec  # idempotent
    dicts = DatasetCatalog.get(spec)
    assert [d["image_id"] for d in dicts] == [im["id"] for im in written["train"]]
    contiguous = {3: 0, 7: 1}  # by hand: category ids sorted
    for d, im in zip(dicts, written["train"]):
        assert d["file_name"] == str(root / "images" / im["file_name"]) and Path(d["file_name"]).is_file()
        expected = [a for a in written["annotations"] if a["image_id"] == im["id"]]
        assert [a["category_id"] for a in d["annotations"]] == [contiguous[a["category_id"]] for a in expected]
        assert [list(a["bbox"]) for a in d["annotations"]] == [a["bbox"] for a in expected]
        assert all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in d["annotations"])
    meta = MetadataCatalog.get(spec)
    assert meta.thing_classes == ["square", "disc"] and meta.json_file == str(root / "train.json")


def test_folder_spec_ids_are_relative_paths(tiny_coco):
    root, written = tiny_coco
    spec = f"folder:{root}/images"
    dicts = DatasetCatalog.get(register_dataset_spec(spec))
    expected = sorted(im["file_name"] for im in written["train"] + written["val"])
    assert [d["image_id"] for d in dicts] == expected  # includes "sub/img_5.png"
    assert all("annotations" not in d for d in dicts)


def _detr_like_cfg(train_names, test_names, num_classes=80):
    return OmegaConf.create({
        "model": {"num_classes": num_classes, "criterion": {"num_classes": "${..num_classes}"}},
        "dataloader": {"train": {"dataset": {"names": train_names}, "mapper": {"size": [1, 2]}},
                       "test": {"dataset": {"names": test_names}},
                       "evaluator": {"dataset_name": "${..test.dataset.names}"}},
        "train": {"max_iter": 10},
    })


def test_overrides_register_specs_and_take_num_classes_from_the_json(tiny_coco):
    root, _ = tiny_coco
    train, val = f"coco:{root}/train.json:{root}/images", f"coco:{root}/val.json:{root}/images"
    cfg = apply_checked_overrides(_detr_like_cfg("coco_2017_train", "coco_2017_val"),
                                  [f"dataloader.train.dataset.names={train}", f"dataloader.test.dataset.names={val}"])
    assert train in DatasetCatalog.list() and val in DatasetCatalog.list()
    assert cfg.model.num_classes == 2 and cfg.model.criterion.num_classes == 2
    assert cfg.dataloader.evaluator.dataset_name == val

    # the user's own value wins when it can hold the classes; a smaller one is an error
    cfg = apply_checked_overrides(_detr_like_cfg("coco_2017_train", "x"),
                                  [f"dataloader.train.dataset.names={train}", "model.num_classes=5"])
    assert cfg.model.num_classes == 5
    with pytest.raises(ValueError, match="2 categories"):
        apply_checked_overrides(_detr_like_cfg("coco_2017_train", "x"),
                                [f"dataloader.train.dataset.names={train}", "model.num_classes=1"])
    # registered names leave num_classes alone
    cfg = apply_checked_overrides(_detr_like_cfg("coco_2017_train", "coco_2017_val", 80), ["train.max_iter=3"])
    assert cfg.model.num_classes == 80


def test_train_and_test_specs_with_different_categories_fail(tiny_coco):
    root, _ = tiny_coco
    other = json.loads((root / "val.json").read_text())
    other["categories"] = [{"id": 3, "name": "square"}, {"id": 7, "name": "circle"}]
    (root / "other.json").write_text(json.dumps(other))
    cfg = _detr_like_cfg(f"coco:{root}/train.json:{root}/images", f"coco:{root}/other.json:{root}/images")
    with pytest.raises(ValueError, match="different categories"):
        register_config_datasets(cfg)
    # two training sets (any of them, not only the first) with different categories: the same
    train = f"coco:{root}/train.json:{root}/images"
    with pytest.raises(ValueError, match="different categories"):
        apply_checked_overrides(_detr_like_cfg("x", train),
                                [f"dataloader.train.dataset.names=[{train},coco:{root}/other.json:{root}/images]"])


def test_spec_in_a_list_of_names_and_in_a_config_file_value(tiny_coco):
    root, _ = tiny_coco
    a, b = f"coco:{root}/train.json:{root}/images", f"coco:{root}/val.json:{root}/images"
    cfg = apply_checked_overrides(_detr_like_cfg("x", "y"), [f"dataloader.train.dataset.names=[{a},{b}]"])
    assert list(cfg.dataloader.train.dataset.names) == [a, b] and cfg.model.num_classes == 2
    folder = f"folder:{root}/images"
    register_config_datasets(OmegaConf.create({"source": {"dataset": folder}}))  # any key, e.g. StoreProposals
    assert folder in DatasetCatalog.list()


@pytest.mark.parametrize("given, expected", [
    ("a=(1,2)", "a=[1,2]"),
    ("a=((1,2),(3,4))", "a=[[1,2],[3,4]]"),
    ("a=[(1, 2), (3, 4)]", "a=[[1, 2], [3, 4]]"),
    ("a=(1,)", "a=[1]"),
    ("a=()", "a=[]"),
    ("a=choice(1,2)", "a=choice(1,2)"),  # hydra function
    ("a=coco:d/(2024)/x.json", "a=coco:d/(2024)/x.json"),  # parentheses inside a path
    ("a='(1,2)'", "a='(1,2)'"),  # quoted string
    ("a=${oc.env:X}", "a=${oc.env:X}"),
    ("a=(${x}, (1,2))", "a=[${x}, [1,2]]"),  # an interpolation as an element
    ("a=${oc.select:x,(1,2)}", "a=${oc.select:x,(1,2)}"),  # a tuple inside an interpolation is left alone
    ("a=${f:${g:x},(1,2)}", "a=${f:${g:x},(1,2)}"),  # ... also after a nested one
    (r"a=('x\'y', (1,2))", r"a=['x\'y', [1,2]]"),  # an escaped quote does not end the string
    ("a=(1, )", "a=[1]"),  # a trailing comma before spaces
    ("a=3", "a=3"),
])
def test_tuples_to_lists(given, expected):
    assert tuples_to_lists(given) == expected


def test_tuple_override_sets_a_list():
    cfg = _detr_like_cfg("x", "y")
    cfg = apply_checked_overrides(cfg, ["dataloader.train.mapper.size=(64, 80)"])
    assert list(cfg.dataloader.train.mapper.size) == [64, 80]
    cfg = apply_checked_overrides(cfg, ["dataloader.train.mapper.size=[3,4]"])
    assert list(cfg.dataloader.train.mapper.size) == [3, 4]


class _Trainer:
    """The part of detectron2's trainer the EvalHook reads: iter, max_iter and the storage."""

    def __init__(self, max_iter):
        from detectron2.utils.events import EventStorage

        self.iter, self.max_iter, self.storage = 0, max_iter, EventStorage()


def _evaluated_at(period, max_iter=5):
    calls = []
    trainer = _Trainer(max_iter)
    hook = eval_hook(period, lambda: calls.append(trainer.iter) or {})
    if hook is None:
        return calls
    hook.trainer = trainer
    with trainer.storage:
        for it in range(max_iter):
            trainer.iter = it
            trainer.storage.iter = it
            hook.after_step()
        trainer.iter += 1  # as detectron2's loop leaves it once every iteration ran
        hook.after_train()
    return calls


def test_eval_period_zero_means_no_evaluation_at_all():
    assert _evaluated_at(0) == [] and _evaluated_at(-1) == []
    # positive: every `period` iterations and after the last one (iterations are 0-based: 3rd -> iter 2; after
    # the last one, detectron2's loop has left iter at max_iter)
    assert _evaluated_at(3) == [2, 5]
    assert _evaluated_at(5) == [5]


def test_eval_only_outputs(tmp_path):
    from detectron2.evaluation import COCOEvaluator

    cfg = OmegaConf.create({"train": {"output_dir": str(tmp_path)}, "dataloader": {}},
                           flags={"allow_objects": True})  # as LazyConfig.load makes them
    cfg.dataloader.evaluator = L(COCOEvaluator)(dataset_name="x")
    assert set_evaluator_output_dir(cfg) == str(tmp_path / "inference")
    cfg.dataloader.evaluator.output_dir = "mine"
    assert set_evaluator_output_dir(cfg) == "mine"  # a configured folder is kept
    cfg.dataloader.evaluator = L(OmegaConf.create)(obj="x")  # a callable without output_dir
    assert set_evaluator_output_dir(cfg) is None

    (tmp_path / "metrics.json").write_text('{"iteration": 0, "total_loss": 1.0}\n')
    append_eval_metrics(str(tmp_path), {"bbox": {"AP": 12.5, "AP50": 30.0}}, iteration=7, eval_only=True)
    lines = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    assert lines[0] == {"iteration": 0, "total_loss": 1.0}
    assert lines[1] == {"bbox/AP": 12.5, "bbox/AP50": 30.0, "iteration": 7, "eval_only": True}
    # after a line a killed training cut short, the record still gets a line of its own
    with open(tmp_path / "metrics.json", "a") as f:
        f.write('{"iteration": 4, "total_lo')
    append_eval_metrics(str(tmp_path), {"bbox": {"AP": 13.0}}, iteration=7, eval_only=True)
    lines = (tmp_path / "metrics.json").read_text().splitlines()
    assert lines[2] == '{"iteration": 4, "total_lo'
    assert json.loads(lines[3]) == {"bbox/AP": 13.0, "iteration": 7, "eval_only": True}


def test_file_handlers_strip_colour_codes(tmp_path):
    """A file handler and a console handler whose stdout is redirected (``make demo`` writes each step's
    output to its demo.log) write plain text; a console handler on a terminal keeps the colours."""
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    coloured = "\x1b[36m| table |\x1b[0m and \x1b[38;5;204mconfig\x1b[39m"
    assert strip_ansi(coloured) == "| table | and config"
    logger = logging.getLogger("detectron2")
    stream, redirected, terminal = open(tmp_path / "log.txt", "w"), io.StringIO(), Terminal()
    handlers = [logging.StreamHandler(stream), logging.StreamHandler(redirected), logging.StreamHandler(terminal)]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert make_file_handlers_plain() >= 2 and make_file_handlers_plain() == 0  # idempotent
        logger.info(coloured)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.setLevel(old_level)
        stream.close()
    assert (tmp_path / "log.txt").read_text() == "INFO | table | and config\n"
    assert redirected.getvalue() == "INFO | table | and config\n"
    assert terminal.getvalue() == f"INFO {coloured}\n"  # the terminal keeps its colours


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_records_emitted_before_the_logs_exist_are_held_and_replayed():
    """What the project logs while the command-line overrides are applied (before log.txt exists) reaches the
    handlers set up afterwards, and not the handlers of an earlier run in the same process."""
    parent, child = logging.getLogger("held_test"), logging.getLogger("held_test.module")
    earlier, later = _Collect(), _Collect()
    parent.addHandler(earlier)
    try:
        with held_records("held_test") as records:
            child.info("registered coco:x.json")
            child.warning("model.num_classes = 2")
            child.debug("not held: below INFO")
        assert earlier.messages == [] and len(records) == 2
        assert parent.handlers == [earlier]  # restored
        parent.addHandler(later)  # the logs of this run
        parent.setLevel(logging.INFO)
        replay_records(records)
        assert later.messages == ["registered coco:x.json", "model.num_classes = 2"]
    finally:
        parent.handlers = []
        parent.setLevel(logging.NOTSET)


def test_held_records_are_replayed_at_once_when_the_block_raises(caplog):
    child = logging.getLogger("held_test_raise.module")
    caplog.set_level(logging.WARNING)
    with pytest.raises(ValueError):
        with held_records("held_test_raise") as records:
            child.warning("the json has 2 categories")
            raise ValueError("and this is why it stops")
    assert records == [] and logging.getLogger("held_test_raise").handlers == []
    # to the handlers there are (here pytest's on the root logger; in a tool without any, Python's last-resort
    # handler: stderr)
    assert [r.getMessage() for r in caplog.records] == ["the json has 2 categories"]


def test_relative_specs_are_made_absolute_and_not_silently_moved(tiny_coco, monkeypatch):
    """``folder:images`` is resolved against the working directory when first registered; the same spec
    string met again from another working directory (where it names another folder) is refused, naming the
    fix, instead of loading the first folder's images under the second's name."""
    root, _ = tiny_coco
    monkeypatch.chdir(root)
    assert parse_dataset_spec("folder:images") == ("folder", {"image_root": str(root / "images")})
    assert parse_dataset_spec("coco:train.json") == (
        "coco", {"json_file": str(root / "train.json"), "image_root": str(root)})
    assert register_dataset_spec("folder:images") == "folder:images"
    assert MetadataCatalog.get("folder:images").image_root == str(root / "images")
    assert register_dataset_spec("folder:images") == "folder:images"  # same place: idempotent
    (root / "images" / "images").mkdir()
    monkeypatch.chdir(root / "images")  # "images" now names root/images/images
    with pytest.raises(ValueError, match="already registered .*use absolute paths"):
        register_dataset_spec("folder:images")


def test_a_spec_refuses_a_file_as_image_folder_and_a_folder_as_json(tiny_coco):
    """Existence is checked by kind: the image root must be a folder, the annotation file a file."""
    root, _ = tiny_coco
    with pytest.raises(FileNotFoundError, match=r"the image folder .*img_0\.png' does not exist"):
        register_dataset_spec(f"coco:{root}/train.json:{root}/images/img_0.png")
    (root / "dir.json").mkdir()
    with pytest.raises(FileNotFoundError, match=r"the annotation file .*dir\.json' does not exist"):
        register_dataset_spec(f"coco:{root}/dir.json:{root}/images")
    with pytest.raises(FileNotFoundError, match="image folder"):
        register_dataset_spec(f"folder:{root}/train.json")


def test_a_folder_spec_without_images_names_the_folder_and_its_archives(tiny_coco):
    """Loading an image folder with no image is refused by the spec's loader with the folder and the
    unextracted archives in it (detectron2's own message would be a bare "Dataset '...' is empty!")."""
    root, _ = tiny_coco
    (root / "tars").mkdir()
    for name in ("n01.tar", "n02.tar", "notes.txt"):
        (root / "tars" / name).write_text("x")
    spec = register_dataset_spec(f"folder:{root}/tars")
    with pytest.raises(FileNotFoundError) as err:
        DatasetCatalog.get(spec)
    message = str(err.value)
    assert "no image files (.jpg" in message and str(root / "tars") in message
    assert "it holds archives (n01.tar, n02.tar): extract each into a folder of its own" in message


def test_spec_forms_in_lists_and_upper_case_extensions(tiny_coco):
    """``ensure_dataset`` registers each spec of a list (or tuple) and returns it unchanged; ``.JSON`` is an
    annotation file too; only a string that *starts* with the prefix is a spec."""
    from siamese_detr.data.datasets import ensure_dataset

    root, _ = tiny_coco
    (root / "TRAIN.JSON").write_text((root / "train.json").read_text())
    spec = f"coco:{root}/TRAIN.JSON:{root}/images"
    assert parse_dataset_spec(spec) == ("coco", {"json_file": str(root / "TRAIN.JSON"),
                                                 "image_root": str(root / "images")})
    names = [spec, f"folder:{root}/images"]
    assert ensure_dataset(names) == names
    assert all(name in DatasetCatalog.list() for name in names)  # registered from the list
    assert ensure_dataset(tuple(names)) == tuple(names)  # again, as a tuple: idempotent
    assert MetadataCatalog.get(spec).thing_classes == ["square", "disc"]
    assert not is_dataset_spec("my_coco:train.json") and not is_dataset_spec("data/folder:x")
