"""A dataset that is not on disk stops start-up with the expected path and the README section."""
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from siamese_detr.data.dataset_checks import check_datasets_on_disk, expected_paths, get_checked_dataset_dicts


@pytest.mark.parametrize("name,section", [("coco_2017_val", "COCO"), ("voc_2007_test", "PASCAL VOC")])
def test_missing_builtin_dataset_names_path_and_readme_section(name, section):
    paths = expected_paths(name)
    assert paths, f"detectron2 registers {name} with paths in its metadata"
    if all(os.path.exists(p) for p in paths):
        pytest.skip(f"{name} is on disk here")
    missing = next(p for p in paths if not os.path.exists(p))
    with pytest.raises(FileNotFoundError) as err:
        get_checked_dataset_dicts(name)
    message = str(err.value)
    assert missing in message and f"'{section}'" in message and "datasets/README.md" in message


def test_unregistered_dataset_is_a_key_error():
    with pytest.raises(KeyError, match="'no_such_dataset' is not registered"):
        check_datasets_on_disk(["no_such_dataset"])


def test_present_dataset_passes(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "ann.json").write_text("{}")
    image = str(tmp_path / "images" / "x.png")
    cv2.imwrite(image, np.full((20, 30, 3), 128, np.uint8))  # the sampled images are probed
    name = "test_dataset_checks_present"
    DatasetCatalog.register(name, lambda: [{"file_name": image, "image_id": 0, "annotations": []}])
    MetadataCatalog.get(name).set(json_file=str(tmp_path / "ann.json"), image_root=str(tmp_path / "images"))
    try:
        check_datasets_on_disk(name)
        assert len(get_checked_dataset_dicts(name, filter_empty=False)) == 1
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_missing_voc_coco_json_names_the_script_that_writes_it():
    """The COCO-style VOC json is not downloaded: it is written by datasets/prepare_voc_coco.py."""
    name = "voc_2007_test_coco"
    import siamese_detr.data.datasets  # noqa: F401  (registers the VOC json datasets)

    json_file = expected_paths(name)[0]
    if os.path.exists(json_file):
        pytest.skip(f"{json_file} is on disk here")
    with pytest.raises(FileNotFoundError) as err:
        check_datasets_on_disk([name])
    message = str(err.value)
    assert json_file in message and "python datasets/prepare_voc_coco.py" in message and "'PASCAL VOC'" in message
