"""Class-agnostic AP of the top-K proposals against hand-computed COCO values, and the evaluate_proposals
tool end to end on a COCO-format dataset and a store written by the test."""

import contextlib
import io
import json
import os
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


def _toy_coco_dataset(tmp_path):
    """``coco:`` spec of 2 annotated 64 x 64 images: image 1 with two objects, image 2 with one."""
    images = tmp_path / "images"
    images.mkdir()
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
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
    return f"coco:{ann}:{images}"


def test_tool_end_to_end(tmp_path, capsys):
    # image 1: two objects, both among its proposals (ranks 1 and 2); image 2: one object, no proposals.
    # Only image 1 has detections, so no two detections share a score.
    spec = _toy_coco_dataset(tmp_path)
    store = str(tmp_path / "toy.proposals")
    write_store(store, [1, 2], [np.array([OBJECT, FAR]), np.zeros((0, 4))], [np.zeros(2), np.zeros(0)],
                sizes=[(64, 64)] * 2, method="edgeboxes")
    out = tmp_path / "r.json"
    assert evaluate_proposals.main(["--dataset", spec, "--store", store, "--ap-ks", "1", "2", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["results"]["toy.proposals"]
    # precision 1 up to recall 1/3 (top 1) or 2/3 (top 2): COCO's recall points 0 ... 0.33 / 0.66
    assert r["AP@top1"] == pytest.approx(100 * 34 / 101)
    assert r["AP@top2"] == pytest.approx(100 * 67 / 101)
    assert r["AR@10"] == pytest.approx(2 / 3)
    assert "AP@top" in capsys.readouterr().out


def test_stores_of_the_same_folder_name_keep_their_own_results(tmp_path, capsys):
    spec = _toy_coco_dataset(tmp_path)
    # A/st finds both objects of image 1, B/st finds nothing: one row each, not the last one only
    a, b = tmp_path / "A" / "st", tmp_path / "B" / "st"
    write_store(str(a), [1, 2], [np.array([OBJECT, FAR]), np.zeros((0, 4))], [np.zeros(2), np.zeros(0)],
                sizes=[(64, 64)] * 2, method="edgeboxes")
    write_store(str(b), [1, 2], [np.zeros((0, 4))] * 2, [np.zeros(0)] * 2, sizes=[(64, 64)] * 2, method="random")
    out = tmp_path / "r.json"
    assert evaluate_proposals.main(["--dataset", spec, "--store", str(a), str(b), "--ap-ks", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {os.path.join("A", "st"), os.path.join("B", "st")}
    assert results[os.path.join("A", "st")]["AR@10"] == pytest.approx(2 / 3)
    assert results[os.path.join("B", "st")]["AR@10"] == 0.0
    table = capsys.readouterr().out
    assert os.path.join("A", "st") in table and os.path.join("B", "st") in table
    # --store repeated: both stores, as with one --store A B (argparse alone kept only the last)
    assert evaluate_proposals.main(["--dataset", spec, "--store", str(a), "--ap-ks", "--store", str(b),
                                    "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())["results"]) == set(results)
    # the same store twice (also through a trailing "/") is refused
    with pytest.raises(SystemExit) as exc:
        evaluate_proposals.main(["--dataset", spec, "--store", str(a), str(a) + "/"])
    assert exc.value.code == 2 and "the same store more than once" in capsys.readouterr().err


def test_store_names_grow_only_as_far_as_needed():
    assert evaluate_proposals.store_names(["x/a/st", "y/b/st", "z/c.proposals"]) == \
        [os.path.join("a", "st"), os.path.join("b", "st"), "c.proposals"]
    assert evaluate_proposals.store_names(["p/x/st", "q/x/st"]) == \
        [os.path.join("p", "x", "st"), os.path.join("q", "x", "st")]


@pytest.mark.parametrize("args, message", [
    (["--ks", "0", "-5"], "argument --ks: must be at least 1 (a proposal budget K), got 0"),
    (["--ks", "10", "-5"], "argument --ks: must be at least 1 (a proposal budget K), got -5"),
    (["--ap-ks", "0"], "argument --ap-ks: must be at least 1 (a proposal budget K), got 0"),
    (["--ap-ks", "x"], "argument --ap-ks: expected a whole number (a proposal budget K), got 'x'"),
])
def test_budgets_must_be_positive(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        evaluate_proposals.main(["--dataset", "synthetic_shapes_val", "--store", str(tmp_path)] + args)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_json_folder_is_checked_before_the_evaluation(tmp_path, capsys, monkeypatch):
    spec = _toy_coco_dataset(tmp_path)
    store = str(tmp_path / "toy.proposals")
    write_store(store, [1, 2], [np.array([OBJECT]), np.array([OBJECT])], [np.zeros(1)] * 2,
                sizes=[(64, 64)] * 2, method="edgeboxes")
    # a file where the folder should be: refused up front, before anything is evaluated
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(evaluate_proposals, "evaluate_proposal_recall",
                        lambda *a, **k: pytest.fail("evaluated before checking --json"))
    with pytest.raises(SystemExit) as exc:
        evaluate_proposals.main(["--dataset", spec, "--store", store, "--json", str(tmp_path / "afile" / "r.json")])
    assert exc.value.code == 2 and f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        evaluate_proposals.main(["--dataset", spec, "--store", store, "--json", str(tmp_path)])
    assert exc.value.code == 2 and "is a folder" in capsys.readouterr().err
    monkeypatch.undo()
    # a folder that does not exist yet is created
    out = tmp_path / "new" / "dir" / "r.json"
    assert evaluate_proposals.main(["--dataset", spec, "--store", store, "--ap-ks", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["results"]["toy.proposals"]["AR@10"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("ap_ks", [[], ["1"]])
def test_a_dataset_without_boxes_is_refused(tmp_path, capsys, ap_ks):
    images = tmp_path / "imgs"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((64, 64, 3), np.uint8))
    store = str(tmp_path / "fold.proposals")
    write_store(store, ["a.png"], [np.array([OBJECT])], [np.zeros(1)], sizes=[(64, 64)], method="edgeboxes")
    code = evaluate_proposals.main(["--dataset", f"folder:{images}", "--store", store, "--ap-ks", *ap_ks])
    err = capsys.readouterr().err
    assert code == 2 and "has no box annotations" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_store_of_another_dataset_suggests_a_new_output(tmp_path, capsys):
    spec = _toy_coco_dataset(tmp_path)
    other = tmp_path / "other.proposals"  # a valid store of another dataset (image ids 7, 8)
    write_store(str(other), [7, 8], [np.array([OBJECT])] * 2, [np.zeros(1)] * 2, sizes=[(64, 64)] * 2,
                method="edgeboxes", dataset="synthetic_shapes_train")
    assert evaluate_proposals.main(["--dataset", spec, "--store", str(other), "--ap-ks"]) == 1
    err = capsys.readouterr().err.splitlines()
    error = [line for line in err if line.startswith("error:")]
    assert len(error) == 1 and "--overwrite" not in error[0]  # the other dataset's store is never overwritten
    assert f"keep it (it is the store of 'synthetic_shapes_train') and generate one for {spec}" in error[0]
    hint = [line for line in err if line.startswith("hint:")]
    assert len(hint) == 1
    assert f"--dataset {spec} --method edgeboxes --output NEW_STORE.proposals" in hint[0]
    assert "'synthetic_shapes_train'" in hint[0] and "--overwrite" not in hint[0]
    # a registered name: a concrete new folder beside the other store
    fake = type("Store", (), {"meta": {"dataset": "synthetic_shapes_val"}, "method": "edgeboxes"})()
    hint = evaluate_proposals._other_dataset_hint(fake, "out/val.eb", "synthetic_shapes_train")
    assert hint.endswith("--dataset synthetic_shapes_train --method edgeboxes "
                         f"--output {os.path.join('out', 'synthetic_shapes_train.edgeboxes.proposals')}")
    assert evaluate_proposals._other_dataset_hint(fake, "out/val.eb", "synthetic_shapes_val") is None


def test_list_options_given_twice_add_up_and_replace_the_default():
    import argparse

    from siamese_detr.utils.cli_types import ExtendList

    parser = argparse.ArgumentParser()
    parser.add_argument("--ks", action=ExtendList, type=int, nargs="+", default=[10, 100])
    parser.add_argument("--extra", action=ExtendList, nargs="*", default=[])
    assert parser.parse_args([]).ks == [10, 100]
    assert parser.parse_args(["--ks", "1"]).ks == [1]
    assert parser.parse_args(["--ks", "1", "2", "--ks", "3"]).ks == [1, 2, 3]
    assert parser.parse_args(["--extra"]).extra == []
    assert parser.parse_args(["--extra", "a", "--extra", "b"]).extra == ["a", "b"]
    assert parser.get_default("ks") == [10, 100]  # the default list itself is never extended
    parser.parse_args(["--ks", "5", "--ks", "6"])
    assert parser.parse_args([]).ks == [10, 100]


def test_boxes_become_xywh_with_their_own_width_and_height():
    """xyxy (10, 20, 50, 80) -> COCO xywh [10, 20, 40, 60]: x0 != y0 and w != h, so no coordinate can stand in for
    another."""
    dets = top_k_proposal_detections(_store({5: [[10.0, 20.0, 50.0, 80.0]]}), [5], k=1)
    assert dets == [{"image_id": 5, "category_id": 1, "bbox": [10.0, 20.0, 40.0, 60.0], "score": 1.0}]


def test_a_budget_above_100_keeps_all_its_proposals():
    """k = 150: all 150 proposals are detections (COCOeval's maxDets is k, not its default 100). The object is the
    proposal of rank 120 (1-based), so the precision at recall 1 is 1 / 120 and, interpolated, on every recall
    point: AP = AP50 = 100 / 120. Cut at 100 detections it would be missed (AP 0)."""
    proposals = [[30.0 + (i % 20), 30.0, 40.0 + (i % 20), 40.0] for i in range(119)] + [OBJECT]
    proposals += [FAR] * 30
    assert len(proposals) == 150
    r = evaluate_proposal_precision(_store({1: proposals}), _coco({1: [OBJECT]}), ks=[150])
    assert r["AP@top150"] == pytest.approx(100 / 120)
    assert r["AP50@top150"] == pytest.approx(100 / 120)


def test_precision_table_columns_are_labelled_in_value_order():
    """Each header label stands above its own value: AP@top10, AP@top30, then AP50@top10, AP50@top30."""
    from siamese_detr.evaluation.proposal_precision import format_precision_table

    row = {"AP@top10": 1.0, "AP@top30": 2.0, "AP50@top10": 3.0, "AP50@top30": 4.0}
    header, line = format_precision_table({"selective_search": row}).splitlines()
    labels, values = header.split(), line.split()
    assert labels[0] == "proposals" and values[0] == "selective_search"
    assert dict(zip(labels[1:], map(float, values[1:]))) == row
