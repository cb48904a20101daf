"""Low-data splits: seeded subsets written once to json, identical across processes (hash seeds, input
orders) and reruns, registered by name."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import siamese_detr.data.datasets.low_data_splits as LD
from siamese_detr.utils.user_errors import UserValueError

PARENT = "toy_low_data_parent"
NAME = "toy_low_data_parent_10pct_seed42"

# run in a child process: register a toy parent whose dicts come in an order that depends on the hash seed
# (iteration over a set of strings) and write its 10 % split under argv[1]
# (the Detectron2-free module, loaded by path so that the child starts in a fraction of a second)
CHILD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("low_data_select", sys.argv[2])
LD = importlib.util.module_from_spec(spec)
spec.loader.exec_module(LD)
ids = [int(s) for s in {str(7 * i + 3) for i in range(1000)}]
LD.LOW_DATA_SPLITS["toy_low_data_parent_10pct_seed42"] = ("toy_low_data_parent", 10, 42, "test")
print(ids[:5])
LD.write_low_data_split("toy_low_data_parent_10pct_seed42", ids, root=sys.argv[1])
"""


def test_names_and_protocols():
    names = set(LD.LOW_DATA_SPLITS)
    assert {"voc_2007_2012_trainval_10pct_seed42", "voc_2007_2012_trainval_30pct_seed42"} <= names
    assert {f"coco_2017_train_{p}pct_seed42" for p in (1, 2, 5, 10)} <= names
    assert LD.LOW_DATA_SPLITS["coco_2017_train_5pct_seed42"][:3] == ("coco_2017_train", 5, 42)
    assert LD.LOW_DATA_SPLITS["voc_2007_2012_trainval_30pct_seed42"][0] == "voc_2007_2012_trainval_coco"
    assert LD.split_name("coco_2017_train", 0.5) == "coco_2017_train_0p5pct_seed42"
    for name in names:
        assert name in DatasetCatalog.list()


def test_select_subset_size_order_independence_and_detreg_draw():
    ids = list(range(5, 5 + 3 * 997, 3))  # 997 ids
    chosen = LD.select_subset(ids, 10, 42)
    assert len(chosen) == round(997 * 0.10) == 100 and chosen == sorted(set(chosen)) and set(chosen) <= set(ids)
    rng = np.random.default_rng(0)
    assert LD.select_subset(rng.permutation(ids).tolist(), 10, 42) == chosen  # input order is irrelevant
    assert LD.select_subset(ids, 10, 43) != chosen
    # DETReg's released code (datasets/coco.py at a4b6363), verbatim but for the names:
    # self.ids = np.random.default_rng(seed).choice(self.ids, size=round(num_keep), replace=False).tolist()
    for pct in (0.01, 0.02, 0.05, 0.10):
        num_keep = float(len(ids)) * pct
        detreg = np.random.default_rng(42).choice(sorted(ids), size=round(num_keep), replace=False).tolist()
        assert LD.select_subset(ids, round(pct * 100), 42) == sorted(detreg), pct
    assert len(LD.select_subset(ids, 1, 42)) == 10 and len(LD.select_subset(ids[:20], 1, 42)) == 1
    with pytest.raises(ValueError):
        LD.select_subset([], 10)


def _start_child(root, hash_seed):
    env = dict(os.environ, PYTHONHASHSEED=str(hash_seed), OMP_NUM_THREADS="1")
    module = os.path.join(os.path.dirname(LD.__file__), "low_data_select.py")
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), module], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_split_files_identical_across_processes_and_reruns(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    children = [_start_child(a, 1), _start_child(b, 2)]  # concurrently: each imports detectron2
    outputs = []
    for child in children:
        stdout, stderr = child.communicate()
        assert child.returncode == 0, stderr
        outputs.append(stdout.strip().splitlines()[-1])
    assert outputs[0] != outputs[1]  # the two processes saw the parent in different orders
    path = os.path.join("low_data_splits", f"{NAME}.json")
    bytes_a = (a / path).read_bytes()
    assert bytes_a == (b / path).read_bytes()
    record = json.loads(bytes_a)
    assert record["num_parent_images"] == 1000 and len(record["image_ids"]) == 100
    assert record["seed"] == 42 and record["parent"] == PARENT
    # rerun here (another process, ids in yet another order): the file is kept, byte for byte
    parent_ids = [7 * i + 3 for i in range(1000)][::-1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(LD.LOW_DATA_SPLITS, NAME, (PARENT, 10, 42, "test"))
        LD.write_low_data_split(NAME, parent_ids, root=str(a))
        assert (a / path).read_bytes() == bytes_a
        LD.write_low_data_split(NAME, parent_ids, root=str(a), overwrite=True)  # rewritten: same bytes
        assert (a / path).read_bytes() == bytes_a


@pytest.fixture()
def toy_parent(monkeypatch):
    ids = [7 * i + 3 for i in range(200)]
    DatasetCatalog.register(PARENT, lambda: [{"image_id": i, "file_name": f"{i}.jpg"} for i in ids])
    MetadataCatalog.get(PARENT).set(thing_classes=["a", "b"], evaluator_type="coco",
                                    thing_dataset_id_to_contiguous_id={3: 0, 9: 1})
    monkeypatch.setitem(LD.LOW_DATA_SPLITS, NAME, (PARENT, 10, 42, "test"))
    yield ids
    for name in (PARENT, NAME):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_registered_split_loads_the_subset_and_checks_the_parent(toy_parent, tmp_path, monkeypatch):
    ids = toy_parent
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    LD.register_low_data_splits()
    with pytest.raises(FileNotFoundError, match="prepare_low_data_splits.py"):
        DatasetCatalog.get(NAME)
    LD.write_low_data_split(NAME, ids)
    dicts = DatasetCatalog.get(NAME)
    assert [d["image_id"] for d in dicts] == LD.select_subset(ids, 10, 42)
    meta = MetadataCatalog.get(NAME)  # the parent's, so that COCO evaluation maps the same category ids
    assert (meta.thing_classes, meta.thing_dataset_id_to_contiguous_id) == (["a", "b"], {3: 0, 9: 1})
    assert (meta.evaluator_type, meta.parent) == ("coco", PARENT)
    # an existing file with other ids is not silently replaced
    with pytest.raises(ValueError, match="different image ids"):
        LD.write_low_data_split(NAME, ids[:-1])
    # the parent changed size since the split was drawn (fewer or more images): refuse to load
    for changed in (ids[:-1], ids + [10 ** 6]):
        DatasetCatalog.remove(PARENT)
        DatasetCatalog.register(PARENT, lambda changed=changed: [{"image_id": i} for i in changed])
        with pytest.raises(ValueError, match=f"drawn from 200 images of {PARENT}, which now has {len(changed)}"):
            DatasetCatalog.get(NAME)


def test_a_split_whose_images_left_the_parent_is_refused_even_at_the_same_size(toy_parent, tmp_path, monkeypatch):
    """The parent still has 200 images, but two of the split's were replaced by others: the split would load 2
    images short, so it is refused, naming how many ids are missing, the file and the parent."""
    ids = toy_parent
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    LD.register_low_data_splits()
    LD.write_low_data_split(NAME, ids)
    chosen = LD.select_subset(ids, 10, 42)
    replaced = [i for i in ids if i not in chosen[:2]] + [10 ** 6, 10 ** 6 + 1]
    DatasetCatalog.remove(PARENT)
    DatasetCatalog.register(PARENT, lambda: [{"image_id": i} for i in replaced])
    with pytest.raises(UserValueError, match=f"{NAME}: 2 image ids of .*{NAME}.json are not in {PARENT}"):
        DatasetCatalog.get(NAME)


@pytest.mark.parametrize("content, what", [
    ("", "is empty (0 bytes), not a low-data split file"),
    ('{"parent": "x"', "is not JSON ("),
    ("[1, 2]", "holds a JSON list, not a low-data split file"),
    ('{"image_ids": [3]}', "lacks 'parent', 'num_parent_images': not a low-data split file"),
])
def test_loading_a_damaged_split_file_names_it_and_the_flag(toy_parent, tmp_path, monkeypatch, content, what):
    """Training reads the split file when the dataset is loaded: a damaged one is a user error naming the file
    and how to write it again, not a JSONDecodeError / KeyError traceback."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    LD.register_low_data_splits()
    path = Path(LD.split_file(NAME))
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(UserValueError) as e:
        DatasetCatalog.get(NAME)
    message = str(e.value)
    assert message.startswith(f"{path} {what}")
    assert message.endswith("pass --force of datasets/prepare_low_data_splits.py to write it again")


def test_a_split_file_drawn_from_another_parent_size_is_not_kept_silently(toy_parent, tmp_path, monkeypatch):
    """The same ids drawn from a parent of another size (e.g. images added since) are another split: the
    file records the parent's size, which the loader checks, so keeping the old file would make it refuse."""
    from siamese_detr.data.datasets import low_data_select

    ids = toy_parent
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    monkeypatch.setattr(low_data_select, "select_subset", lambda parent_ids, pct, seed: [3, 10, 17])
    path = LD.write_low_data_split(NAME, ids)
    assert LD.write_low_data_split(NAME, ids) == path  # the same: kept
    with pytest.raises(ValueError, match=f"was drawn from 200 images of {PARENT}, which now has 201: pass "):
        LD.write_low_data_split(NAME, ids + [10 ** 6])
    LD.write_low_data_split(NAME, ids + [10 ** 6], overwrite=True)
    with open(path) as f:
        assert json.load(f)["num_parent_images"] == 201


def test_the_script_names_each_missing_parent_and_fails_when_it_writes_nothing(tmp_path):
    """No VOC / COCO under DETECTRON2_DATASETS: every parent is skipped naming its missing file and the README
    section (or the script that writes it), and the run ends with exit 1, not a silent 0."""
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "datasets"), "OMP_NUM_THREADS": "1"}
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets",
                          "prepare_low_data_splits.py")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no split written" in proc.stderr
    coco = str(tmp_path / "datasets" / "coco" / "annotations" / "instances_train2017.json")
    assert f"skipped splits of coco_2017_train: Dataset 'coco_2017_train' expects '{coco}'" in proc.stdout
    assert "Follow the section 'COCO' of datasets/README.md" in proc.stdout
    assert "skipped splits of voc_2007_2012_trainval_coco: " in proc.stdout
    assert "datasets/prepare_voc_coco.py" in proc.stdout
    assert not (tmp_path / "datasets" / "low_data_splits").exists()


# ------------------------------------------------------------------ the script's command line, in-process
def _script():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets",
                        "prepare_low_data_splits.py")
    spec = importlib.util.spec_from_file_location("prepare_low_data_splits_t", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def counted_parent(toy_parent, tmp_path, monkeypatch):
    """The toy parent (200 ids) re-registered to count its loads, a second split of it (30 %, seed 7) and a
    split of a parent whose loader asserts (as detectron2's COCO loader does on a missing json)."""
    loads = []
    ids = list(toy_parent)

    def load():
        loads.append(1)
        return [{"image_id": i} for i in ids]

    DatasetCatalog.remove(PARENT)
    DatasetCatalog.register(PARENT, load)
    monkeypatch.setitem(LD.LOW_DATA_SPLITS, "toy_low_data_parent_30pct_seed7", (PARENT, 30, 7, "test b"))
    DatasetCatalog.register("toy_broken_parent", lambda: (_ for _ in ()).throw(AssertionError("no json here")))
    monkeypatch.setitem(LD.LOW_DATA_SPLITS, "toy_broken_parent_10pct_seed42", ("toy_broken_parent", 10, 42, "c"))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    yield ids, loads
    DatasetCatalog.remove("toy_broken_parent")


def test_script_writes_the_named_splits_loading_their_parent_once(counted_parent):
    ids, loads = counted_parent
    _script().main(["--names", NAME, "toy_low_data_parent_30pct_seed7"])
    assert len(loads) == 1
    for name, pct, seed in ((NAME, 10, 42), ("toy_low_data_parent_30pct_seed7", 30, 7)):
        with open(LD.split_file(name)) as f:
            record = json.load(f)
        assert len(record["image_ids"]) == pct * 2 and set(record["image_ids"]) <= set(ids)
        assert record["seed"] == seed and record["num_parent_images"] == 200


def test_script_keeps_a_different_file_unless_forced(counted_parent):
    """The parent lost an image since the split was written: a plain run refuses naming the script, --force
    rewrites the file from the 199 images."""
    ids, _ = counted_parent
    script = _script()
    script.main(["--names", NAME])
    ids.pop()
    with pytest.raises(SystemExit, match="^error: .*different image ids.*pass --force to replace it"):
        script.main(["--names", NAME])
    with open(LD.split_file(NAME)) as f:
        assert json.load(f)["num_parent_images"] == 200
    script.main(["--names", NAME, "--force"])
    with open(LD.split_file(NAME)) as f:
        assert json.load(f)["num_parent_images"] == 199


def test_script_a_named_split_of_a_missing_parent_stops_with_its_error(counted_parent, capsys):
    with pytest.raises(SystemExit) as e:
        _script().main(["--names", "toy_broken_parent_10pct_seed42"])
    assert str(e.value) == "error: no json here"


def test_script_without_names_skips_missing_parents_and_succeeds_if_one_is_written(counted_parent, capsys):
    _script().main([])  # the real VOC / COCO parents are not on disk here, nor the broken toy one
    out = capsys.readouterr().out
    assert "skipped splits of toy_broken_parent: no json here" in out
    assert f"{NAME}: {LD.split_file(NAME)}" in out and os.path.isfile(LD.split_file(NAME))
    assert not os.path.exists(LD.split_file("toy_broken_parent_10pct_seed42"))


def test_script_list_prints_each_protocol_and_writes_nothing(counted_parent, capsys):
    _, loads = counted_parent
    _script().main(["--list"])
    out = capsys.readouterr().out.splitlines()
    assert f"toy_low_data_parent_30pct_seed7: 30 % of {PARENT}, seed 7 — test b" in out
    assert loads == [] and not os.path.exists(LD.split_file(NAME))
