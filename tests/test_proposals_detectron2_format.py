"""Import of Detectron2 proposal files (``read_detectron2`` / ``import_detectron2``): what is refused before
anything is written, that nothing is unpickled without the explicit opt-in, the Detectron1 key names and other
box modes.

Files are hand-written pickles ``{"ids", "boxes" (xyxy absolute unless bbox_mode says otherwise),
"objectness_logits", "bbox_mode"}``; sizes are (height, width).
"""

import os
import pickle
import uuid

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from siamese_detr.data.proposals import ProposalStore, import_detectron2
from siamese_detr.data.proposals.detectron2_format import read_detectron2

from pickle_payload import Payload


def _file(tmp_path, payload, name="p.pkl"):
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(payload, f)
    return str(path)


def _payload(ids=("a", "b"), boxes=None, logits=None):
    boxes = boxes if boxes is not None else [np.array([[1, 2, 8, 9]], np.float32), np.array([[0, 0, 5, 4]], np.float32)]
    logits = logits if logits is not None else [np.array([0.5], np.float32), np.array([0.2], np.float32)]
    return {"ids": list(ids), "boxes": boxes, "objectness_logits": logits, "bbox_mode": BoxMode.XYXY_ABS}


def test_reading_without_the_opt_in_never_unpickles(tmp_path):
    """read_detectron2's default is allow_pickle=False: refused before the file is opened, no code runs."""
    marker = tmp_path / "pwned"
    pkl = _file(tmp_path, Payload(str(marker)))
    with pytest.raises(ValueError, match="allow_pickle=True"):
        read_detectron2(pkl)
    assert not marker.exists()


def test_box_below_the_image_is_refused(tmp_path):
    """Image 'a' is 9 high x 20 wide: a box with y2 = 9.5 lies outside it (x2 = 8 is fine)."""
    pkl = _file(tmp_path, _payload())
    sizes = {"a": (9, 20), "b": (10, 10)}
    read_detectron2(pkl, allow_pickle=True, image_sizes=sizes)  # y2 = 9 = height: inside
    pkl = _file(tmp_path, _payload(boxes=[np.array([[1, 2, 8, 9.5]], np.float32),
                                          np.array([[0, 0, 5, 4]], np.float32)]), "q.pkl")
    with pytest.raises(ValueError, match=r"lie outside the image.*'a'.*\(height, width\) = \(9, 20\)"):
        read_detectron2(pkl, allow_pickle=True, image_sizes=sizes)


@pytest.mark.parametrize("box", [[-1, 2, 8, 9], [1, -1, 8, 9], [5, 2, 4, 9], [1, 6, 8, 5]])
def test_negative_or_reversed_boxes_are_refused(tmp_path, box):
    """x1 or y1 below 0, x2 < x1 or y2 < y1: invalid even without image sizes; no store is written."""
    pkl = _file(tmp_path, _payload(boxes=[np.array([box], np.float32), np.array([[0, 0, 5, 4]], np.float32)]))
    with pytest.raises(ValueError, match=r"1 images have invalid boxes.*image 'a'"):
        import_detectron2(pkl, str(tmp_path / "s"), allow_pickle=True)
    assert not os.path.exists(tmp_path / "s" / "meta.json")


def test_duplicated_ids_and_length_mismatches_are_refused(tmp_path):
    """One entry per image: an id twice, or an image with 2 boxes and 1 score, is not a proposal file."""
    with pytest.raises(ValueError, match="1 image ids occur more than once"):
        read_detectron2(_file(tmp_path, _payload(ids=("a", "a"))), allow_pickle=True)
    two_boxes = [np.array([[1, 2, 8, 9], [0, 0, 1, 1]], np.float32), np.array([[0, 0, 5, 4]], np.float32)]
    with pytest.raises(ValueError, match="image 'a' has 2 boxes but 1 scores"):
        read_detectron2(_file(tmp_path, _payload(boxes=two_boxes), "m.pkl"), allow_pickle=True)


def test_detectron1_key_names_are_read(tmp_path):
    """Detectron1 files name the ids "indexes" and the logits "scores"; they are read like the new names,
    boxes sorted by descending score."""
    payload = {"indexes": [3], "boxes": [np.array([[0, 0, 2, 2], [1, 1, 4, 4]], np.float32)],
               "scores": [np.array([0.1, 0.8], np.float32)]}
    data = read_detectron2(_file(tmp_path, payload), allow_pickle=True)
    assert data["ids"] == ["3"]
    assert np.array_equal(data["boxes"][0], [[1, 1, 4, 4], [0, 0, 2, 2]])
    assert np.allclose(data["scores"][0], [0.8, 0.1])


def test_a_dataset_with_images_the_file_lacks_is_refused(tmp_path):
    """--dataset given: the file's ids must be the dataset's ids. The dataset has a third image 'c' with no
    entry: refused (a store missing 'c' would fail every consumer), naming 'c'."""
    name = f"toy_import_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: [{"image_id": i, "height": 10, "width": 10, "file_name": f"{i}.jpg"}
                                           for i in ("a", "b", "c")])
    try:
        with pytest.raises(ValueError, match=r"1 of the dataset's 3 images have no entry \(first: \['c'\]\)"):
            read_detectron2(_file(tmp_path, _payload()), allow_pickle=True, dataset=name)
        store = import_detectron2(_file(tmp_path, _payload(ids=("a", "b")), "ok.pkl"), str(tmp_path / "s"),
                                  allow_pickle=True, image_sizes={"a": (10, 10), "b": (10, 10)})
        assert isinstance(store, ProposalStore) and store.image_size("a") == (10, 10)
    finally:
        DatasetCatalog.remove(name)


def test_boxes_in_another_bbox_mode_are_converted_and_sorted_by_objectness(tmp_path):
    """A file whose ``bbox_mode`` is XYWH_ABS (Detectron2 converts any mode when loading) is stored as xyxy
    absolute pixels, each image's boxes in descending objectness (Detectron2's order), ties kept in file order;
    a file without ``bbox_mode`` is XYXY_ABS, Detectron2's default."""
    payload = _payload(
        boxes=[np.array([[1, 2, 7, 7], [0, 0, 3, 4], [4, 4, 6, 6]], np.float32), np.array([[0, 0, 5, 4]], np.float32)],
        logits=[np.array([0.1, 0.9, 0.1], np.float32), np.array([0.2], np.float32)],
    )
    payload["bbox_mode"] = BoxMode.XYWH_ABS
    data = read_detectron2(_file(tmp_path, payload), allow_pickle=True)
    assert data["ids"] == ["a", "b"]
    assert data["boxes"][0].tolist() == [[0, 0, 3, 4], [1, 2, 8, 9], [4, 4, 10, 10]]
    assert data["scores"][0].tolist() == pytest.approx([0.9, 0.1, 0.1])
    assert data["boxes"][1].tolist() == [[0, 0, 5, 4]]
    del payload["bbox_mode"]
    data = read_detectron2(_file(tmp_path, payload, "no_mode.pkl"), allow_pickle=True)
    assert data["boxes"][0].tolist() == [[0, 0, 3, 4], [1, 2, 7, 7], [4, 4, 6, 6]]
