"""Options of the proposal tools that reach the computation: ``--max-boxes 0`` (all boxes) of
tools/generate_proposals.py and ``--ks`` of tools/evaluate_proposals.py (the budgets the recall is measured at).
"""

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from script_modules import load_script
from siamese_detr.data.proposals.generate_arguments import method_params, usage_problem
from siamese_detr.data.proposals.methods import compute_proposals
from siamese_detr.data.proposals.store import write_store
from siamese_detr.utils.user_errors import UserValueError

ROOT = Path(__file__).resolve().parents[1]
gen = load_script(str(ROOT / "tools" / "generate_proposals.py"), "generate_proposals_tool")
sys.path.insert(0, str(ROOT / "tools"))
import evaluate_proposals  # noqa: E402


@pytest.mark.parametrize("method", ["selective_search", "edgeboxes", "random"])
def test_max_boxes_zero_means_all_boxes_not_the_default(tmp_path, method):
    """--max-boxes 0 is accepted and recorded as 0 ("all boxes"), not replaced by the method's default; no
    --max-boxes gives the default (512 EdgeBoxes / random, all Selective Search boxes). Random boxes have no
    "all": 0 is refused (it drew 512 while meta.json recorded 0)."""
    common = ["--image-dir", str(tmp_path), "--method", method, "--output", str(tmp_path / "o")]
    args = gen.build_parser().parse_args(common + ["--max-boxes", "0"])
    if method == "random":
        assert usage_problem(args) == ("--max-boxes 0 (all boxes) has no meaning for --method random, whose boxes "
                                       "are drawn as many as asked: give a count of 1 or more (default 512)")
        with pytest.raises(UserValueError, match=r"^max_boxes=0 \(all boxes\) has no meaning for method 'random'"):
            compute_proposals(np.zeros((8, 8, 3), np.uint8), "random", 0)
    else:
        assert usage_problem(args) is None
        assert method_params(args)["max_boxes"] == 0
    args = gen.build_parser().parse_args(common)
    assert method_params(args)["max_boxes"] == {"selective_search": None, "edgeboxes": 512, "random": 512}[method]


def test_evaluate_reports_recall_at_the_given_budgets(tmp_path):
    """--ks 1 2: image 1 (objects A = [0, 0, 10, 10], B = [50, 50, 60, 60]) has proposals [B, A] in rank order,
    image 2 (object A) none. Top 1 finds B only: AR@1 = 1/3 (IoU 1 at every threshold); top 2 finds both:
    AR@2 = 2/3. Only the asked budgets are reported."""
    images = tmp_path / "images"
    images.mkdir()
    a, b = [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for image_id, boxes in {1: [a, b], 2: [a]}.items():
        cv2.imwrite(str(images / f"{image_id}.png"), np.zeros((64, 64, 3), np.uint8))
        data["images"].append({"id": image_id, "file_name": f"{image_id}.png", "height": 64, "width": 64})
        for x0, y0, x1, y1 in boxes:
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                                        "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                        "iscrowd": 0})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    store = str(tmp_path / "toy.proposals")
    write_store(store, [1, 2], [np.array([b, a]), np.zeros((0, 4))], [np.array([0.9, 0.5]), np.zeros(0)],
                sizes=[(64, 64)] * 2, method="edgeboxes")
    out = tmp_path / "r.json"
    spec = f"coco:{ann}:{images}"
    assert evaluate_proposals.main(["--dataset", spec, "--store", store, "--ks", "1", "2", "--ap-ks",
                                    "--json", str(out)]) == 0
    r = json.loads(out.read_text())["results"]["toy.proposals"]
    assert r["AR@1"] == pytest.approx(1 / 3) and r["AR@2"] == pytest.approx(2 / 3)
    assert "AR@10" not in r and r["store"] == os.path.abspath(store)


def test_evaluate_names_an_unregistered_dataset_with_the_closest_names(tmp_path, capsys):
    """A misspelt ``--dataset``: one ``error:`` line (exit 2) that suggests the registered names it is close to,
    before any store is opened."""
    assert evaluate_proposals.main(["--dataset", "synthetic_shapes_vall", "--store", str(tmp_path / "none")]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith("error: Dataset 'synthetic_shapes_vall' is not registered. Did you mean "
                           "'synthetic_shapes_val'")
