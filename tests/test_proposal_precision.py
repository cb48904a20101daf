"""Class-agnostic AP of the top-K proposals against hand-computed COCO values, and the evaluate_proposals
tool end to end on a COCO-format dataset and a store written by the test."""

import contextlib
import io
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from siamese_detr.data.proposals.store import write_store
from siamese_detr.evaluation.proposal_precision import evaluate_proposal_precision, top_k_proposal_detections

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import evaluate_proposals  # noqa: E402

OBJECT = [0.0, 0.0, 10.0, 10.0]  # xyxy
FAR = [50.0, 50.0, 60.0, 60.0]  # IoU 0 with OBJECT
IOU_072 = [0.0, 0.0, 10.0, 7.2]  # IoU 0.72 with OBJECT: a match at IoU 0.50 ... 0.70, 5 of the 10 thresholds


class DictStore(dict):
    def get(self, image_id):
        return self[image_id]


def _coco(gt_per_image):
    """COCO api of images 1..N, 64 x 64, each with the given xyxy ground-truth boxes."""
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    for image_id, boxes in gt_per_image.items():
        data["images"].append({"id": image_id, "height": 64, "width": 64})
        for x0, y0, x1, y1 in boxes:
            data["annotations"].append(
                {"id": len(data["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco


def _store(per_image):
    return DictStore({i: (np.asarray(b, np.float32).reshape(-1, 4), np.zeros(len(b), np.float32))
                      for i, b in per_image.items()})


def test_rank_is_the_score():
    dets = top_k_proposal_detections(_store({3: [FAR, OBJECT, IOU_072]}), [3, 4], k=2)
    assert [d["score"] for d in dets] == [2.0, 1.0]  # image 4 is not in the store: no detections
    assert dets[1]["bbox"] == [0.0, 0.0, 10.0, 10.0]  # xywh
    with pytest.raises(ValueError, match="positive"):
        top_k_proposal_detections(_store({}), [1], k=0)


@pytest.mark.parametrize(
    "proposals, k, ap, ap50",
    [
        ([OBJECT, FAR], 2, 100.0, 100.0),  # the object ranked first: precision 1 at every recall
        ([FAR, OBJECT], 2, 50.0, 50.0),  # ranked second: precision 1/2 at recall 1, so 1/2 interpolated
        ([FAR, OBJECT], 1, 0.0, 0.0),  # outside the top 1
        ([IOU_072], 1, 50.0, 100.0),  # a match at 5 of the 10 IoU thresholds
    ],
)
def test_one_object_hand_computed(proposals, k, ap, ap50):
    r = evaluate_proposal_precision(_store({1: proposals}), _coco({1: [OBJECT]}), ks=[k])
    assert r[f"AP@top{k}"] == pytest.approx(ap)
    assert r[f"AP50@top{k}"] == pytest.approx(ap50)


def test_image_missing_from_the_store_counts_its_objects_as_missed():
    # image 1 found at rank 1, image 2 absent: precision 1 up to recall 1/2, then nothing; COCO's 101
    # recall points 0, 0.01, ..., 0.50 get precision 1 -> AP = 51 / 101
    r = evaluate_proposal_precision(_store({1: [OBJECT]}), _coco({1: [OBJECT], 2: [OBJECT]}), ks=[10])
    assert r["AP@top10"] == pytest.approx(100 * 51 / 101)


def test_tool_end_to_end(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    # image 1: two objects, both among its proposals (ranks 1 and 2); image 2: one object, no proposals.
    # Only image 1 has detections, so no two detections share a score.
    gt = {1: [OBJECT, FAR], 2: [OBJECT]}
    for image_id, boxes in gt.items():
        cv2.imwrite(str(images / f"{image_id}.png"), np.zeros((64, 64, 3), np.uint8))
        data["images"].append({"id": image_id, "file_name": f"{image_id}.png", "height": 64, "width": 64})
        for x0, y0, x1, y1 in boxes:
            data["annotations"].append(
                {"id": len(data["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0}
            )
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    store = str(tmp_path / "toy.proposals")
    write_store(store, [1, 2], [np.array([OBJECT, FAR]), np.zeros((0, 4))], [np.zeros(2), np.zeros(0)],
                sizes=[(64, 64)] * 2, method="edgeboxes")
    out = tmp_path / "r.json"
    spec = f"coco:{ann}:{images}"
    assert evaluate_proposals.main(["--dataset", spec, "--store", store, "--ap-ks", "1", "2", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["results"]["toy.proposals"]
    # precision 1 up to recall 1/3 (top 1) or 2/3 (top 2): COCO's recall points 0 ... 0.33 / 0.66
    assert r["AP@top1"] == pytest.approx(100 * 34 / 101)
    assert r["AP@top2"] == pytest.approx(100 * 67 / 101)
    assert r["AR@10"] == pytest.approx(2 / 3)
    assert "AP@top" in capsys.readouterr().out
