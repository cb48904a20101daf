"""Details of the dataset checks and of datasets given by path: how a spec is split, what a registration
sets before the json is loaded, what the messages for a missing, unregistered, empty or unreadable dataset
say, and which boxes and images the start-up checks look at."""
import json
import logging

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from siamese_detr.data.dataset_checks import (AnnotationError, check_datasets_on_disk, check_has_boxes,
                                              check_images_readable, missing_path_error, validate_annotations)
from siamese_detr.data.datasets import parse_dataset_spec, register_dataset_spec
from siamese_detr.data.datasets.from_path import empty_folder_message, spec_thing_classes
from siamese_detr.data.image_io import UnreadableImageError


@pytest.fixture
def registered():
    """Names registered by the test are removed after it."""
    before = set(DatasetCatalog.list())
    yield
    for name in set(DatasetCatalog.list()) - before:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _coco_json(path, category_ids=(7, 3)):
    payload = {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": category_ids[0], "bbox": [1, 1, 4, 4],
                                "area": 16, "iscrowd": 0}],
               "categories": [{"id": i, "name": f"class{i}"} for i in category_ids]}
    path.write_text(json.dumps(payload))
    return path


def _png(path, height=24, width=24):
    cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))
    return str(path)


# ----------------------------------------------------------------------------------- datasets by path
def test_the_first_json_ends_the_annotation_path():
    """Whatever follows ``.json:`` is the image root, even a folder whose name has ``.json:`` in it."""
    assert parse_dataset_spec("coco:/d/train.json:/img/v1.json:b") == (
        "coco", {"json_file": "/d/train.json", "image_root": "/img/v1.json:b"})


def test_categories_that_are_not_a_list_are_refused(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"images": [{"id": 1}], "categories": {"1": "x"}}))
    with pytest.raises(ValueError, match="is not a COCO detection json"):
        register_dataset_spec(f"coco:{tmp_path / 'a.json'}")


def test_a_registration_maps_the_category_ids_before_the_json_is_loaded(tmp_path, registered):
    """The metadata load_coco_json would set (contiguous ids in the order of the category ids), set when the
    spec is registered: what a tool reads before any image is loaded."""
    spec = register_dataset_spec(f"coco:{_coco_json(tmp_path / 'a.json')}")
    meta = MetadataCatalog.get(spec)
    assert meta.thing_classes == ["class3", "class7"] and meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}


def test_the_classes_of_a_list_of_datasets_skip_unlabelled_folders(tmp_path, registered):
    (tmp_path / "images").mkdir()
    _png(tmp_path / "images" / "a.png")
    folder = f"folder:{tmp_path / 'images'}"
    coco = f"coco:{_coco_json(tmp_path / 'a.json')}"
    assert spec_thing_classes([folder, coco]) == ["class3", "class7"]
    assert spec_thing_classes([folder]) is None


@pytest.mark.parametrize("names, shown", [
    (["b.ZIP", "a.tgz", "c.tar.gz"], "a.tgz, b.ZIP, c.tar.gz"),
    (["n1.tar", "n2.tar", "n3.tar", "n4.tar", "n5.tar"], "n1.tar, n2.tar, n3.tar and 2 more"),
])
def test_unextracted_archives_of_every_kind_are_named(tmp_path, names, shown):
    for name in names:
        (tmp_path / name).write_text("x")
    message = empty_folder_message("Dataset 'x'", str(tmp_path))
    assert f"it holds archives ({shown}): extract each into a folder of its own" in message


# ----------------------------------------------------------------------------------- missing datasets
def test_a_missing_path_names_the_datasets_root_in_use(monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", "/data/d2")
    message = str(missing_path_error("coco_2017_val", "/data/d2/coco/val2017"))
    assert "(DETECTRON2_DATASETS=/data/d2)" in message and "section 'COCO' of datasets/README.md" in message


def test_a_dataset_generated_on_demand_is_not_looked_for_on_disk(tmp_path, registered):
    """The built-in data is written by its loader on first use: its paths need not exist at start-up."""
    for name, on_demand in (("test_generated_on_demand", True), ("test_not_generated", False)):
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(image_root=str(tmp_path / "not_yet"), generated_on_demand=on_demand)
    check_datasets_on_disk(["test_generated_on_demand"])
    with pytest.raises(FileNotFoundError, match="not_yet"):
        check_datasets_on_disk(["test_not_generated"])


def test_an_upper_case_json_path_is_suggested_as_a_coco_spec():
    with pytest.raises(KeyError) as err:
        check_datasets_on_disk(["data/TRAIN.JSON"])
    message = err.value.args[0]
    assert "Did you mean 'coco:data/TRAIN.JSON'?" in message
    assert "registered datasets" not in message  # the spec hint replaces the list of registered names


def test_an_unknown_name_lists_the_projects_datasets_as_examples():
    with pytest.raises(KeyError) as err:
        check_datasets_on_disk(["no_such_dataset_name"])
    assert ("(e.g. coco_2017_train, coco_2017_val, voc_2007_trainval, voc_2007_test, synthetic_shapes_train, "
            "synthetic_shapes_val; the synthetic_shapes_* ones are built in") in err.value.args[0]


# ----------------------------------------------------------------------------------- boxes
def test_a_box_in_another_mode_is_left_alone():
    """Only absolute XYXY / XYWH boxes are checked; a relative box is kept as it is (its values are not pixels)."""
    relative = {"bbox": [0.6, 0.2, 0.3, 0.5], "bbox_mode": BoxMode.XYXY_REL, "category_id": 0}
    dicts = [{"file_name": "a.png", "image_id": 0, "height": 10, "width": 10, "annotations": [relative]}]
    assert validate_annotations(dicts, strict=True, size_checks=0)[0]["annotations"] == [relative]


def test_the_summary_counts_removed_images_and_says_what_happens_to_boxes_that_stick_out(caplog):
    def image(i, boxes):
        return {"file_name": f"{i}.png", "image_id": i, "height": 10, "width": 10,
                "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0} for b in boxes]}

    # two images emptied (zero-size boxes), one with a box sticking out by 3 px, two fine
    dicts = [image(0, [[1, 1, 1, 5]]), image(1, [[2, 2, 2, 2]]), image(2, [[5, 5, 13, 9]]), image(3, [[1, 1, 4, 4]]),
             image(4, [[2, 2, 6, 6]])]
    with caplog.at_level(logging.WARNING):
        kept = validate_annotations(dicts, filter_empty=True, size_checks=0, name="toy")
    assert [d["image_id"] for d in kept] == [2, 3, 4]
    assert "toy: dropped 2 boxes of 2 images, 2 images left without boxes removed;" in caplog.text
    assert caplog.text.rstrip().endswith("; boxes that stick out are kept and clipped")


def test_a_dataset_without_boxes_says_whether_it_has_annotations_at_all():
    with pytest.raises(AnnotationError, match=r"^toy: none of its 1 images has a box \(its dicts have no "
                                              r"'annotations' at all\); "):
        check_has_boxes([{"file_name": "a.png"}], "toy")
    with pytest.raises(AnnotationError, match=r"^toy: none of its 1 images has a box; "):
        check_has_boxes([{"file_name": "a.png", "annotations": []}], "toy")


# ----------------------------------------------------------------------------------- sampled images
def test_the_probed_images_are_a_sample_of_the_whole_dataset_not_its_first_images(tmp_path, caplog):
    """200 images of which only the first 10 are on disk: a sample of 10 drawn over all of them finds missing
    ones, where the first 10 would all be readable."""
    dicts = [{"file_name": str(tmp_path / f"{i}.png"), "image_id": i, "annotations": []} for i in range(200)]
    for d in dicts[:10]:
        _png(d["file_name"])
    with caplog.at_level(logging.WARNING):
        validate_annotations(dicts, size_checks=10, name="toy")
    assert "toy: " in caplog.text and " of 10 sampled images cannot be read" in caplog.text


def test_one_readable_image_of_two_sampled_is_a_warning_not_an_error(tmp_path, caplog):
    dicts = [{"file_name": _png(tmp_path / "a.png"), "image_id": 0, "annotations": []},
             {"file_name": str(tmp_path / "gone.png"), "image_id": 1, "annotations": []}]
    with caplog.at_level(logging.WARNING):
        validate_annotations(dicts, size_checks=2, name="toy")
    assert "toy: 1 of 2 sampled images cannot be read" in caplog.text


def test_a_coco_spec_among_several_names_gets_the_image_root_fix(tmp_path):
    dicts = [{"file_name": str(tmp_path / "gone.png"), "image_id": 0, "annotations": []}]
    with pytest.raises(UnreadableImageError, match=r"coco:ANN\.json:IMAGES; without it, the json's own folder"):
        validate_annotations(dicts, size_checks=1, name="voc_2007_trainval,coco:a.json")


# ----------------------------------------------------------------------------------- test images
def test_unreadable_test_images_are_listed_up_to_ten_and_counted(tmp_path):
    dicts = [{"file_name": str(tmp_path / f"gone{i:02d}.png")} for i in range(12)]
    with pytest.raises(UnreadableImageError) as err:
        check_images_readable(dicts, name="toy")
    message = str(err.value)
    assert message.startswith("12 of 12 images of toy cannot be read: ")
    assert "gone09.png" in message and "gone10.png" not in message and "; ... and 2 more." in message


def test_no_thread_count_below_one(tmp_path):
    check_images_readable([{"file_name": _png(tmp_path / "a.png")}], num_threads=0)
