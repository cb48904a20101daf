"""A coco:ANNOTATIONS.json[:IMAGE_ROOT] spec whose json lacks a field detectron2's loader reads is refused when it
is registered, naming the file, the entry and the field (not a bare KeyError at start-up); one that lacks a field
only COCO evaluation reads ('iscrowd', 'area') is refused as the test set of a run that evaluates, at start-up
(not after the whole training), and accepted for training; a dataset path given without its spec prefix, or with
a misspelled one, is answered with the spec syntax."""
import copy
import json
import re

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from siamese_detr.data.dataset_checks import check_datasets_on_disk, get_checked_dataset_dicts
from siamese_detr.data.datasets import register_dataset_spec
from script_modules import forget_datasets

# the training tool, loaded once (tests/train_net_tool.py)
from train_net_tool import ROOT, train_net

VALID = {
    "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60},
               {"id": 2, "file_name": "b.png", "height": 40, "width": 60}],
    "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0},
                    {"id": 8, "image_id": 2, "category_id": 2, "bbox": [30, 10, 15.5, 20], "area": 310.0,
                     "iscrowd": 0}],
    "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "disc"}],
}

# (list, index of the entry that lacks the field, how the error names that entry, field)
MISSING = [
    ("images", 1, "images[1] (file_name 'b.png')", "id"),
    ("images", 0, "images[0] (id 1)", "file_name"),
    ("images", 1, "images[1] (file_name 'b.png')", "height"),
    ("images", 0, "images[0] (file_name 'a.png')", "width"),
    ("annotations", 1, "annotations[1] (image_id 2)", "id"),
    ("annotations", 1, "annotations[1] (id 8)", "image_id"),
    ("annotations", 0, "annotations[0] (id 7)", "category_id"),
    ("annotations", 1, "annotations[1] (id 8)", "bbox"),
    ("categories", 1, "categories[1] (name 'disc')", "id"),
    ("categories", 0, "categories[0] (id 1)", "name"),
]


@pytest.fixture
def coco_dir(tmp_path):
    """``tmp_path/images/{a,b}.png`` and a writer of ``tmp_path/NAME.json`` returning its ``coco:`` spec;
    the specs registered by the test are removed afterwards (DatasetCatalog is global)."""
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        image = np.zeros((40, 60, 3), np.uint8)
        cv2.rectangle(image, (5, 5), (25, 25), (0, 0, 255), -1)
        cv2.imwrite(str(tmp_path / "images" / name), image)
    specs = []

    def write(name, data):
        json_file = tmp_path / f"{name}.json"
        json_file.write_text(json.dumps(data))
        specs.append(f"coco:{json_file}:{tmp_path / 'images'}")
        return json_file, specs[-1]

    yield write
    forget_datasets(specs)


@pytest.mark.parametrize("key, index, entry, field", MISSING, ids=[f"{k}.{f}" for k, _, _, f in MISSING])
def test_a_missing_required_field_is_refused_at_registration_naming_file_entry_and_field(
        coco_dir, key, index, entry, field):
    data = copy.deepcopy(VALID)
    del data[key][index][field]
    json_file, spec = coco_dir(f"no_{key}_{field}", data)
    with pytest.raises(ValueError) as err:
        register_dataset_spec(spec)
    message = str(err.value)
    assert f"the COCO json '{json_file}': {entry} lacks '{field}'" in message, message
    assert "add it to the json" in message, message
    assert spec not in DatasetCatalog.list()  # refused before registering: no later bare KeyError


def test_the_evaluation_fields_are_required_of_a_test_set_only_and_say_what_to_put_there(coco_dir):
    """The user's case: no 'iscrowd' and no 'area' anywhere. detectron2's loader does without them (a json only
    trained on registers and loads); COCO evaluation failed on them after the whole training: a run that
    evaluates on that json is refused at start-up."""
    from siamese_detr.engine.evaluation_checks import check_coco_test_fields

    data = copy.deepcopy(VALID)
    for annotation in data["annotations"]:
        del annotation["iscrowd"], annotation["area"]
    data["annotations"][1]["area"] = 310.0  # the second lacks only 'iscrowd': the fix still names both
    json_file, spec = coco_dir("no_eval_fields", data)
    assert register_dataset_spec(spec) == spec
    assert len(get_checked_dataset_dicts(spec, require_boxes=True)) == 2  # trains
    with pytest.raises(ValueError) as err:
        check_coco_test_fields([spec], "to train without evaluation, set train.eval_period=0")
    assert str(err.value) == (
        f"the COCO json '{json_file}': annotations[0] (id 7) lacks 'iscrowd' and 'area' (2 of 2 annotations lack "
        "a required field). COCO evaluation needs 'iscrowd' (0 for an ordinary object) and 'area' (e.g. the box's "
        f"w*h) in every annotation: add them to the json. It is the test set (dataloader.test.dataset.names={spec}) "
        "of this run; to train without evaluation, set train.eval_period=0.")
    _, valid = coco_dir("eval_fields_there", VALID)
    check_coco_test_fields([register_dataset_spec(valid)])  # nothing missing: no error


def test_fields_missing_in_several_entries_are_all_named(coco_dir):
    data = copy.deepcopy(VALID)
    del data["annotations"][0]["id"]
    del data["annotations"][1]["category_id"]
    json_file, spec = coco_dir("several", data)
    with pytest.raises(ValueError, match=re.escape(
            f"'{json_file}': annotations[0] (image_id 1) lacks 'id' (2 of 2 annotations lack a required field). "
            "Loading the dataset needs 'id' (an integer unique in the file, e.g. 1, 2, 3, ...) and 'category_id' "
            "(the id of its category) in every annotation: add them")):
        register_dataset_spec(spec)


@pytest.mark.parametrize("bbox", [[5, 5, 20], [5, 5, 20, 20, 1], [5, "5", 20, 20], [5, None, 20, 20], None,
                                  {"x": 5}, "5 5 20 20"])
def test_a_bbox_that_is_not_a_list_of_4_numbers_is_named(coco_dir, bbox):
    data = copy.deepcopy(VALID)
    data["annotations"][1]["bbox"] = bbox
    json_file, spec = coco_dir("bad_bbox", data)
    expected = f"'{json_file}': annotations[1] (id 8) has 'bbox' {bbox!r}, not a list of 4 numbers [x, y, "
    expected += "width, height] in pixels"
    with pytest.raises(ValueError, match=re.escape(expected)):
        register_dataset_spec(spec)


def test_an_entry_that_is_not_an_object_and_a_list_that_is_not_a_list_are_named(coco_dir):
    data = copy.deepcopy(VALID)
    data["images"][1] = 2
    json_file, spec = coco_dir("not_object", data)
    with pytest.raises(ValueError, match=re.escape(f"'{json_file}': images[1] is 2, not an object with 'id', ")):
        register_dataset_spec(spec)
    data = copy.deepcopy(VALID)
    data["annotations"] = {"7": VALID["annotations"][0]}
    json_file, spec = coco_dir("not_list", data)
    with pytest.raises(ValueError, match=re.escape(f"'{json_file}': 'annotations' is a dict, not a list")):
        register_dataset_spec(spec)


def test_a_valid_minimal_json_registers_and_loads(coco_dir, tmp_path):
    """Only the required fields (no segmentation, supercategory, info, licenses): registered and loaded."""
    _, spec = coco_dir("valid", VALID)
    assert register_dataset_spec(spec) == spec
    dicts = DatasetCatalog.get(spec)
    assert [d["file_name"] for d in dicts] == [str(tmp_path / "images" / n) for n in ("a.png", "b.png")]
    assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[0], [1]]
    assert [list(d["annotations"][0]["bbox"]) for d in dicts] == [[5, 5, 20, 20], [30, 10, 15.5, 20]]
    assert MetadataCatalog.get(spec).thing_classes == ["square", "disc"]
    assert len(get_checked_dataset_dicts(spec, require_boxes=True)) == 2
    # an image list (no 'annotations' at all, e.g. COCO's image_info_*.json) is still accepted
    _, image_list = coco_dir("image_list", {"images": VALID["images"], "categories": VALID["categories"]})
    assert len(DatasetCatalog.get(register_dataset_spec(image_list))) == 2


def test_the_checks_run_where_a_tool_meets_the_spec(coco_dir, tmp_path):
    """The start-up checks (get_checked_dataset_dicts) and the training tool stop before anything is trained:
    for a field the loader needs, wherever the json is used; for one only evaluation reads, when the run
    evaluates on it (training on it, or --eval-only on it, too)."""
    data = copy.deepcopy(VALID)
    for annotation in data["annotations"]:
        del annotation["image_id"]
    json_file, spec = coco_dir("tools", data)
    with pytest.raises(ValueError, match=re.escape(f"'{json_file}': annotations[0] (id 7) lacks 'image_id'")):
        get_checked_dataset_dicts(spec)

    data = copy.deepcopy(VALID)
    for annotation in data["annotations"]:
        del annotation["area"]
    json_file, spec = coco_dir("tools_eval", data)
    out = tmp_path / "out"
    argv = ["--config-file", str(ROOT / "configs/demo/detr_demo.py"), f"dataloader.train.dataset.names={spec}",
            f"dataloader.test.dataset.names={spec}", "train.max_iter=1", f"train.output_dir={out}",
            "dataloader.train.num_workers=0", "dataloader.test.num_workers=0"]
    for mode in ([], ["--eval-only", f"train.init_checkpoint={tmp_path / 'any.pth'}"]):
        with pytest.raises(ValueError, match=re.escape(f"'{json_file}': annotations[0] (id 7) lacks 'area'")):
            train_net.main(train_net.parse_args(argv[:2] + mode + argv[2:]))
        assert not (out / "model_final.pth").exists() and not (out / "metrics.json").exists()
    train_net.main(train_net.parse_args(argv + ["train.eval_period=0"]))  # no evaluation: it trains
    assert (out / "model_final.pth").exists()


@pytest.mark.parametrize("name, meant", [
    ("datasets/my_data/train.json", "coco:datasets/my_data/train.json"),  # prefix forgotten
    ("train.json", "coco:train.json"),
    ("cocos:datasets/my_data/train.json:datasets/my_data/images",  # prefix misspelled
     "coco:datasets/my_data/train.json:datasets/my_data/images"),
    ("Coco:/data/val.json", "coco:/data/val.json"),
    ("datasets/my_images", "folder:datasets/my_images"),
    ("folders:/data/unlabelled", "folder:/data/unlabelled"),
    ("C:/data/train.json", "coco:C:/data/train.json"),  # a drive letter is part of the path, not a prefix
])
def test_a_path_without_its_spec_prefix_gets_the_spec_syntax(name, meant):
    with pytest.raises(KeyError) as err:
        check_datasets_on_disk(name)
    message = err.value.args[0]
    assert f"Dataset '{name}' is not registered. It looks like a path" in message, message
    assert "'coco:ANNOTATIONS.json[:IMAGE_ROOT]' or 'folder:IMAGE_DIR'" in message, message
    assert f"Did you mean '{meant}'?" in message, message
    assert name not in DatasetCatalog.list()


def test_a_misspelled_registered_name_gets_no_spec_hint():
    with pytest.raises(KeyError) as err:
        check_datasets_on_disk("coco_2017_vall")
    message = err.value.args[0]
    assert "Did you mean 'coco_2017_val'" in message and "It looks like a path" not in message, message


def test_a_bad_bbox_after_float_bboxes_is_the_one_named(coco_dir):
    """Float coordinates are numbers: with annotations[0] at [5.5, 5.25, 20, 20] (fine) and annotations[1]'s
    bbox holding a string, the error names annotations[1] (id 8), not the first float box."""
    data = copy.deepcopy(VALID)
    data["annotations"][0]["bbox"] = [5.5, 5.25, 20.0, 20]
    data["annotations"][1]["bbox"] = [30, "10", 15.5, 20]
    json_file, spec = coco_dir("float_then_string", data)
    with pytest.raises(ValueError, match=re.escape(
            f"'{json_file}': annotations[1] (id 8) has 'bbox' [30, '10', 15.5, 20], not a list of 4 numbers")):
        register_dataset_spec(spec)


def test_the_evaluation_fix_names_every_field_missing_anywhere_not_only_in_the_first_entry(coco_dir):
    """annotations[0] lacks only 'area', annotations[1] only 'iscrowd': the error shows the first entry (lacks
    'area') but its fix lists both fields that COCO evaluation needs, so one edit of the json is enough."""
    from siamese_detr.engine.evaluation_checks import check_coco_test_fields

    data = copy.deepcopy(VALID)
    del data["annotations"][0]["area"], data["annotations"][1]["iscrowd"]
    json_file, spec = coco_dir("area_then_iscrowd", data)
    register_dataset_spec(spec)
    with pytest.raises(ValueError) as err:
        check_coco_test_fields([spec])
    assert (f"the COCO json '{json_file}': annotations[0] (id 7) lacks 'area' (2 of 2 annotations lack a required "
            "field). COCO evaluation needs 'iscrowd' (0 for an ordinary object) and 'area' (e.g. the box's w*h) in "
            "every annotation: add them to the json.") in str(err.value)
