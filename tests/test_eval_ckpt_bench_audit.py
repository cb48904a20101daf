"""Audit of the class-agnostic evaluator, the checkpoint converters and the benchmarks' command lines.

Evaluation numbers are checked against values computed by hand (not against the code's own output):
two images, three ground-truth boxes A = [0, 0, 10, 10] and B = [20, 20, 30, 30] (image 1), C = [0, 0, 10, 10]
(image 2), and three predictions: A itself (score 0.9, IoU 1), a box of IoU 0.62 with B (0.8) and one of IoU
0.77 with C (0.7). Over the ten IoU thresholds .50:.05:.95 A is found at 10, B at 3 (.50-.60), C at 6
(.50-.75); top-1 per image keeps A and C: AR@1 = (10 + 6) / 30, AR@10 = (10 + 3 + 6) / 30. At IoU .50 every
prediction is right (AP50 = 100); at .75 the ranked hits are TP, FP, TP, so the 101-point interpolated
precision is 1 for recall <= 1/3 (34 points) and 2/3 up to recall 2/3 (33 points): AP75 = (34 + 22) / 101.
"""
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO

from siamese_detr.evaluation import ClassAgnosticEvaluator
from siamese_detr.evaluation.class_agnostic import class_agnostic_metrics

ROOT = Path(__file__).resolve().parents[1]
AR1, AR10, AP50, AP75 = 100 * 16 / 30, 100 * 19 / 30, 100.0, 100 * 56 / 101
GT = [(1, [0, 0, 10, 10]), (1, [20, 20, 10, 10]), (2, [0, 0, 10, 10])]  # (image, COCO xywh)
DETECTIONS = [  # COCO xywh; IoU 1 with A, 6.2 / 10 with B, 7.7 / 10 with C
    {"image_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9, "category_id": 1},
    {"image_id": 1, "bbox": [20, 20, 10, 6.2], "score": 0.8, "category_id": 1},
    {"image_id": 2, "bbox": [0, 0, 10, 7.7], "score": 0.7, "category_id": 1},
]


def _coco(categories, annotation_categories, images=(1, 2)):
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "height": 100, "width": 100} for i in images],
        "annotations": [
            {"id": k + 1, "image_id": i, "bbox": b, "area": b[2] * b[3], "iscrowd": 0, "category_id": c}
            for k, ((i, b), c) in enumerate(zip(GT, annotation_categories))
        ],
    }
    if categories is not None:  # None: a json without the key
        coco.dataset["categories"] = [{"id": c, "name": str(c)} for c in categories]
    coco.createIndex()
    return coco


def _assert_hand_computed(res):
    assert res["AR@1"] == pytest.approx(AR1)
    assert res["AR@10"] == pytest.approx(AR10) and res["AR@100"] == pytest.approx(AR10)
    assert res["AP50"] == pytest.approx(AP50) and res["AP75"] == pytest.approx(AP75)


# ------------------------------------------------------------------------------------------ evaluation
@pytest.mark.parametrize("categories, annotation_categories", [
    ([1], [1, 1, 1]),  # the plain case
    ([1], [1, 7, 1]),  # B's category is not listed in "categories"
    ([], [1, 1, 1]),  # a json with an empty category list
    (None, [1, 1, 1]),  # a json without categories (COCO.loadRes copies them)
])
def test_every_ground_truth_box_counts_whatever_its_category(categories, annotation_categories):
    # before the fix pycocotools pooled only the listed categories: B dropped (AR@1 80) or every box (NaN)
    coco = _coco(categories, annotation_categories)
    with torch.no_grad():
        _assert_hand_computed(class_agnostic_metrics(coco, DETECTIONS, [1, 2]))
    assert ("categories" in coco.dataset) == (categories is not None)  # the ground truth is left as it was


def test_an_evaluated_image_unknown_to_the_ground_truth_is_refused_even_without_detections():
    coco = _coco([1], [1, 1, 1])
    with pytest.raises(ValueError, match=r"not in the ground truth \(e.g. \[99\]\)"):
        class_agnostic_metrics(coco, DETECTIONS, [1, 2, 99])


def _output(detections):
    inst = Instances((100, 100))
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in detections)]
    inst.pred_boxes = Boxes(torch.tensor(xyxy, dtype=torch.float32).view(-1, 4))
    inst.scores = torch.tensor([d["score"] for d in detections], dtype=torch.float32)
    return {"instances": inst}


def _processed(evaluator, image_ids):
    evaluator.reset()
    for image_id in image_ids:
        evaluator.process([{"image_id": image_id}], [_output([d for d in DETECTIONS if d["image_id"] == image_id])])
    return list(evaluator._predictions)


def test_gathered_predictions_with_an_empty_shard_and_a_repeated_image(monkeypatch, tmp_path):
    """Three processes: rank 0 saw images 1 and 2, rank 1 image 1 again (a sampler padding its shard), rank 2
    nothing. Image 1 must count once: the hand-computed numbers, as from one process (its repeated detections
    were false positives: AP50 75.6 instead of 100)."""
    from detectron2.utils import comm

    import siamese_detr.evaluation.class_agnostic as module

    monkeypatch.setattr(module, "load_coco_ground_truth", lambda name: _coco([1], [1, 1, 1]))
    evaluator = ClassAgnosticEvaluator("unused", output_dir=str(tmp_path))
    shards = [_processed(evaluator, [1, 2]), _processed(evaluator, [1]), []]
    monkeypatch.setattr(comm, "synchronize", lambda: None)
    monkeypatch.setattr(comm, "gather", lambda data, dst=0: shards)
    monkeypatch.setattr(comm, "is_main_process", lambda: True)
    res = evaluator.evaluate()["class_agnostic"]
    _assert_hand_computed(res)
    assert res["AP"] < 100 and not math.isnan(res["AP"])


# ------------------------------------------------------------------------------------------ checkpoints
def _deformable_state(num_rows, layers=2, d=8):
    torch.manual_seed(0)
    state = {"query_embed.weight": torch.randn(5, 2 * d)}
    for layer in range(layers):
        state[f"class_embed.{layer}.weight"] = torch.randn(num_rows, d)
        state[f"class_embed.{layer}.bias"] = torch.randn(num_rows)
    return state


def test_a_coco_deformable_detr_head_keeps_the_80_thing_rows_in_detectron2_order():
    """Official Deformable DETR trains COCO with num_classes = 91 (rows by COCO category id): the project's
    80-class COCO configs could not load a 91-row head (skipped for its shape: a random class head)."""
    from siamese_detr.checkpoint.official_deformable_detr import convert_official_deformable_detr

    state = _deformable_state(91)
    result = convert_official_deformable_detr({"model": state})
    # COCO's 80 thing category ids (1..90 without the 10 ids COCO never used), written out here
    ids = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
    assert len(ids) == 80 and ids[0] == 1  # contiguous id 0 is person, COCO id 1
    assert result.unmapped == []
    for layer in range(2):
        for p in ("weight", "bias"):
            key = f"class_embed.{layer}.{p}"
            assert result.converted[key].shape[0] == 80
            assert torch.equal(result.converted[key], state[key][ids])  # row i <-> contiguous id i (person = 1)
    assert any(k.startswith("class_embed.0.weight[rows 0,") for k in result.dropped)
    # a non-COCO width stays as it is, and "none" keeps every row
    assert convert_official_deformable_detr(_deformable_state(20)).converted["class_embed.0.weight"].shape[0] == 20
    kept = convert_official_deformable_detr(state, class_rows="none").converted["class_embed.1.bias"]
    assert torch.equal(kept, state["class_embed.1.bias"])


def test_detreg_deformable_pretraining_head_keeps_its_91_rows():
    from siamese_detr.checkpoint.official_pretrain import convert_official_detreg

    state = dict(_deformable_state(91), **{"transformer.level_embed": torch.zeros(4, 8)})
    result = convert_official_detreg(state)
    assert result.unmapped == []
    assert result.converted["class_embed.0.weight"].shape[0] == 91


def test_a_wrong_format_error_names_the_format_that_converts(tmp_path):
    state = torch.load(ROOT / "tests/fixtures/detr/state_dict.pt", weights_only=True)
    src = tmp_path / "detr_official.pth"
    torch.save({"model": state.get("model", state)}, src)
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools/convert_checkpoint.py"), "--format", "conditional_detr",
         "--input", str(src), "--output", str(tmp_path / "out.pth")], capture_output=True, text=True)
    assert done.returncode == 1
    first = [line for line in done.stderr.splitlines() if line.startswith("error:")][0]
    assert str(src) in first and "re-run with --format detr" in first
    assert not (tmp_path / "out.pth").exists()


# ------------------------------------------------------------------------------------------ benchmarks
def _bench(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(f"audit_{name}", ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


@pytest.mark.parametrize("name, argv, option", [
    ("bench_pretrain_methods", ["--iters", "0"], "--iters"),  # was a KeyError after the whole measurement
    ("bench_pretrain_methods", ["--batch-size", "1"], "--batch-size"),
    ("bench_ms_deform_attn", ["--steps", "0"], "--steps"),  # was a ZeroDivisionError
    ("bench_finetune", ["--batch-size", "0"], "--batch-size"),
    ("bench_pretrain", ["--batch-sizes", "2", "1"], "--batch-sizes"),  # was a traceback from a child process
    ("bench_data", ["--store-images", "0"], "--store-images"),
])
def test_benchmarks_refuse_a_misused_option_in_one_line(name, argv, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _bench(name).parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert option in error and "give an integer >=" in error


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of CUDA where there is none")
@pytest.mark.parametrize("name", ["bench_pretrain_methods", "bench_finetune", "bench_pretrain"])
def test_benchmarks_refuse_cuda_where_there_is_none(name, capsys):
    with pytest.raises(SystemExit):
        _bench(name).parse_args(["--device", "cuda"])
    assert "run with --device cpu" in capsys.readouterr().err
