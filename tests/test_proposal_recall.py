"""Class-agnostic proposal recall / AR@K against brute force and hand-computed values."""

import numpy as np
import pytest

from siamese_detr.evaluation.proposal_recall import IOU_THRESHOLDS, evaluate_proposal_recall, max_iou_per_gt


class DictStore(dict):
    def get(self, image_id):
        return self[image_id]


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _boxes(rng, n, size=50):
    xy = rng.uniform(0, size, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(1, size, (n, 2))], 1)


def test_against_brute_force():
    rng = np.random.default_rng(0)
    store, dicts = DictStore(), []
    for i in range(12):
        gt = _boxes(rng, int(rng.integers(0, 6)))
        props = _boxes(rng, int(rng.integers(0, 40))).astype(np.float32)
        if i != 5:  # image 5 has no entry in the store
            store[i] = (props, np.zeros(len(props), np.float32))
        anns = [{"bbox": [x1, y1, x2 - x1, y2 - y1], "bbox_mode": 1, "iscrowd": 0} for x1, y1, x2, y2 in gt]
        anns.append({"bbox": [0, 0, 10, 10], "bbox_mode": 1, "iscrowd": 1})  # crowd: ignored
        dicts.append({"image_id": i, "annotations": anns, "gt": gt})
    ks = (1, 5, 20, 1000)
    result = evaluate_proposal_recall(store, dicts, ks=ks)
    for k in ks:
        hits = {t: 0 for t in IOU_THRESHOLDS}
        total = 0
        for d in dicts:
            props = store[d["image_id"]][0][:k] if d["image_id"] in store else []
            for g in d["gt"]:
                total += 1
                best = max([_iou(g, p.astype(float)) for p in props], default=0.0)
                for t in IOU_THRESHOLDS:
                    hits[t] += best >= t
        recalls = [hits[t] / total for t in IOU_THRESHOLDS]
        assert result[f"AR@{k}"] == pytest.approx(np.mean(recalls), abs=1e-9)
        assert result[f"R@0.5@{k}"] == pytest.approx(hits[0.5] / total, abs=1e-9)
        assert result[f"R@0.75@{k}"] == pytest.approx(hits[0.75] / total, abs=1e-9)
    assert result["num_missing"] == 1 and result["num_gt"] == total and result["num_images"] == 12
    # "boxes/img" of the recall table: every stored box, over all images (the missing one gives none)
    assert result["mean_proposals"] == pytest.approx(sum(len(p) for p, _ in store.values()) / 12)


def test_hand_computed():
    # gt 10x10; proposal covering its top half has IoU exactly 0.5; a perfect box comes second
    gt = np.array([[0.0, 0.0, 10.0, 10.0]])
    props = np.array([[0, 0, 10, 5], [0, 0, 10, 10]], np.float32)
    assert np.allclose(max_iou_per_gt(props, gt, [1, 2, 3]), [[0.5], [1.0], [1.0]])
    d = [{"image_id": "a", "annotations": [{"bbox": [0, 0, 10, 10], "bbox_mode": 1}]}]
    r = evaluate_proposal_recall(DictStore(a=(props, None)), d, ks=(1, 2))
    assert r["AR@1"] == pytest.approx(0.1)  # recall 1 at t = 0.5 only, 0 at 0.55..0.95
    assert r["R@0.5@1"] == 1.0 and r["R@0.75@1"] == 0.0
    assert r["AR@2"] == pytest.approx(1.0) and r["R@0.75@2"] == 1.0


def test_no_gt_and_no_proposals():
    assert max_iou_per_gt(np.zeros((0, 4)), np.array([[0, 0, 1, 1.0]]), [10]).tolist() == [[0.0]]
    r = evaluate_proposal_recall(DictStore(), [{"image_id": 0, "annotations": []}], ks=(10,))
    assert r["AR@10"] == 0.0 and r["num_gt"] == 0


def test_each_annotation_is_read_in_its_own_box_mode():
    """The same 20 x 20 box given as XYXY_ABS (bbox_mode 0, e.g. Detectron2's VOC loader), as XYWH_ABS (1) and
    without a mode (COCO's XYWH): one proposal on it covers all three exactly. Read as XYWH, the XYXY box would
    be 40 x 30 and its IoU with the proposal 400 / 1200."""
    props = np.array([[20.0, 10.0, 40.0, 30.0]], np.float32)
    anns = [{"bbox": [20, 10, 40, 30], "bbox_mode": 0}, {"bbox": [20, 10, 20, 20], "bbox_mode": 1},
            {"bbox": [20, 10, 20, 20]}]
    r = evaluate_proposal_recall(DictStore(a=(props, None)), [{"image_id": "a", "annotations": anns}], ks=(1,))
    assert r["num_gt"] == 3
    assert r["AR@1"] == pytest.approx(1.0) and r["R@0.75@1"] == 1.0
