"""ClassAgnosticEvaluator against hand-computed COCO recall / precision, and the pretraining demo config's
``--eval-only`` path through tools/lazyconfig_train_net.py."""
import importlib.util
import json
import math
import uuid
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from torchvision.ops import box_convert, box_iou

from siamese_detr.evaluation import ClassAgnosticEvaluator

ROOT = Path(__file__).resolve().parents[1]
IOU_THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]  # COCO .50:.05:.95


@pytest.fixture
def register_dataset():
    """register(images) -> name; images: list of (image_id, [(xyxy, category_id), ...]), 200x300 each."""
    names = []

    def register(images, thing_classes=("a", "b", "c")):
        name = f"class_agnostic_test_{uuid.uuid4().hex[:8]}"
        dicts = [
            {
                "file_name": f"{image_id}.jpg", "image_id": image_id, "height": 200, "width": 300,
                "annotations": [
                    {"bbox": list(map(float, box)), "bbox_mode": BoxMode.XYXY_ABS, "category_id": c,
                     "iscrowd": 0}
                    for box, c in annotations
                ],
            }
            for image_id, annotations in images
        ]
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(thing_classes=list(thing_classes))
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _output(boxes, scores, classes=None):
    inst = Instances((200, 300))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).view(-1, 4))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes if classes is not None else [0] * len(scores), dtype=torch.int64)
    return {"instances": inst}


def _evaluate(name, per_image, **kwargs):
    """per_image: {image_id: (boxes, scores[, classes])} -> the class_agnostic dict."""
    evaluator = ClassAgnosticEvaluator(name, **kwargs)
    evaluator.reset()
    for image_id, pred in per_image.items():
        evaluator.process([{"image_id": image_id, "height": 200, "width": 300}], [_output(*pred)])
    return evaluator.evaluate()["class_agnostic"]


def test_perfect_predictions_of_wrong_classes(register_dataset):
    gt1 = [([10, 10, 60, 50], 0), ([100, 20, 180, 120], 1), ([200, 100, 290, 190], 2)]
    gt2 = [([30, 40, 130, 140], 2)]
    name = register_dataset([(1, gt1), (2, gt2)])
    # gt boxes, score 1, classes deliberately wrong / arbitrary: classes are ignored
    preds = {
        1: ([b for b, _ in gt1], [1.0, 1.0, 1.0], [2, 2, 0]),
        2: ([b for b, _ in gt2], [1.0], [1]),
    }
    res = _evaluate(name, preds)
    assert set(res) == {"AR@1", "AR@10", "AR@100", "AP", "AP50", "AP75"}
    for key in ("AR@10", "AR@100", "AP", "AP50", "AP75"):
        assert res[key] == pytest.approx(100.0), key
    # AR@1: one detection per image -> 2 of the 4 ground-truth boxes (recall pooled over images)
    assert res["AR@1"] == pytest.approx(50.0)


@pytest.mark.parametrize("shift", [0, 10, 20, 27, 40])
def test_known_iou_counts_thresholds(register_dataset, shift):
    gt = [0.0, 0.0, 100.0, 100.0]
    pred = [float(shift), 0.0, 100.0 + shift, 100.0]
    iou = (100 - shift) / (100 + shift)  # by hand: overlap (100-d)*100, union (100+d)*100
    assert float(box_iou(torch.tensor([gt]), torch.tensor([pred]))) == pytest.approx(iou)
    assert min(abs(iou - t) for t in IOU_THRESHOLDS) > 1e-3  # away from any threshold
    expected = 100.0 * sum(iou >= t for t in IOU_THRESHOLDS) / len(IOU_THRESHOLDS)
    # shift 27: IoU 73/127 = 0.575 -> thresholds .50 and .55 only -> 20
    if shift == 27:
        assert expected == pytest.approx(20.0)
    name = register_dataset([(7, [(gt, 1)])])
    res = _evaluate(name, {7: ([pred], [0.9])})
    for key in ("AR@1", "AR@10", "AR@100", "AP"):
        assert res[key] == pytest.approx(expected), key
    assert res["AP50"] == pytest.approx(100.0 if iou >= 0.5 else 0.0)
    assert res["AP75"] == pytest.approx(100.0 if iou >= 0.75 else 0.0)


GT4 = [([10, 10, 50, 50], 0), ([100, 10, 140, 50], 0), ([10, 100, 50, 140], 1), ([200, 100, 240, 140], 1)]
FAR = [[250 + i, 160, 260 + i, 170] for i in range(0, 35, 5)]  # 7 boxes far from every gt (IoU 0)


def test_ar_at_k_when_only_the_top_scored_detections_are_right(register_dataset):
    name = register_dataset([(3, GT4)])
    right = [b for b, _ in GT4[:3]]
    # three exact boxes with the top-3 scores, seven wrong ones below; listed out of score order
    boxes = [FAR[0], right[2], FAR[1], right[0]] + FAR[2:] + [right[1]]
    scores = [0.5, 0.7, 0.45, 0.9, 0.4, 0.35, 0.3, 0.25, 0.2, 0.8]
    res = _evaluate(name, {3: (boxes, scores)})
    assert res["AR@1"] == pytest.approx(25.0)  # 1 of 4
    assert res["AR@10"] == pytest.approx(75.0)  # 3 of 4
    assert res["AR@100"] == pytest.approx(75.0)
    # PR curve: precision 1 up to recall .75, nothing beyond: 76 of the 101 recall points
    assert res["AP"] == pytest.approx(100.0 * 76 / 101)

    # only the top-1 detection right: AR@10 gains nothing over AR@1
    res = _evaluate(name, {3: ([right[0]] + FAR, [0.9] + [0.5] * 7)})
    assert res["AR@1"] == pytest.approx(25.0) and res["AR@10"] == pytest.approx(25.0)

    # the top-1 detection wrong: AR@1 = 0; precision 1/2, 2/3, 3/4 at recall .25, .5, .75 ->
    # interpolated precision 3/4 on the 76 recall points up to .75
    res = _evaluate(name, {3: ([FAR[0]] + right, [0.95, 0.9, 0.8, 0.7])})
    assert res["AR@1"] == pytest.approx(0.0)
    assert res["AR@10"] == pytest.approx(75.0)
    assert res["AP"] == pytest.approx(100.0 * 0.75 * 76 / 101)


def test_max_dets_order_does_not_matter(register_dataset):
    """``max_dets`` is a set of k's: AP uses the largest and AR@k each k, whatever order they are given in (COCOeval
    itself evaluates ``maxDets[-1]`` detections per image and reads the curve at the last one)."""
    name = register_dataset([(3, GT4)])
    right = [b for b, _ in GT4[:3]]
    boxes = [FAR[0], right[2], FAR[1], right[0]] + FAR[2:] + [right[1]]
    scores = [0.5, 0.7, 0.45, 0.9, 0.4, 0.35, 0.3, 0.25, 0.2, 0.8]
    ascending = _evaluate(name, {3: (boxes, scores)}, max_dets=(1, 10, 100))
    descending = _evaluate(name, {3: (boxes, scores)}, max_dets=(100, 10, 1))
    assert set(descending) == set(ascending)
    for key, value in ascending.items():
        assert descending[key] == pytest.approx(value), key
    # the values of test_ar_at_k_when_only_the_top_scored_detections_are_right
    assert (descending["AR@1"], descending["AR@10"], descending["AR@100"]) == pytest.approx((25.0, 75.0, 75.0))
    assert descending["AP"] == pytest.approx(100.0 * 76 / 101)


def test_max_dets_limits_detections_per_image(register_dataset):
    name = register_dataset([(3, GT4)])
    boxes = [b for b, _ in GT4]
    res = _evaluate(name, {3: (boxes, [0.9, 0.8, 0.7, 0.6])}, max_dets=(2, 3, 100))
    assert res["AR@2"] == pytest.approx(50.0)
    assert res["AR@3"] == pytest.approx(75.0)
    assert res["AR@100"] == pytest.approx(100.0)


@pytest.mark.parametrize("max_dets", [(0, 10), (-1,), ()])
def test_max_dets_must_be_positive(register_dataset, max_dets):
    """A k of 0 (or below, or no k at all) is refused before any evaluation: AR@0 is no metric."""
    name = register_dataset([(3, GT4)])
    with pytest.raises(ValueError, match="max_dets must be positive"):
        _evaluate(name, {3: ([b for b, _ in GT4], [0.9, 0.8, 0.7, 0.6])}, max_dets=max_dets)


def test_an_image_processed_twice_is_evaluated_with_its_first_predictions(register_dataset, monkeypatch):
    """The first predictions of a repeated image id count (here: all 4 boxes exact, AR@100 = 100), the later
    copy (one box far from every object) is dropped with a warning that counts the repeats."""
    name = register_dataset([(3, GT4)])
    evaluator = ClassAgnosticEvaluator(name, distributed=False)
    evaluator.reset()
    evaluator.process([{"image_id": 3}], [_output([b for b, _ in GT4], [0.9, 0.8, 0.7, 0.6])])
    evaluator.process([{"image_id": 3}], [_output([FAR[0]], [0.95])])
    from siamese_detr.evaluation import class_agnostic

    warnings = []  # recorded directly: a project logger set up by another test may not propagate to caplog
    monkeypatch.setattr(class_agnostic.logger, "warning", lambda msg, *args: warnings.append(msg % args))
    res = evaluator.evaluate()["class_agnostic"]
    assert res["AR@100"] == pytest.approx(100.0) and res["AP"] == pytest.approx(100.0)
    assert len(warnings) == 1 and "1 of 2 processed images were repeats" in warnings[0]


def test_images_without_detections_are_misses_and_empty_results_work(register_dataset, tmp_path):
    gt1, gt2 = [([10, 10, 60, 50], 0)], [([30, 40, 130, 140], 1)]
    name = register_dataset([(1, gt1), (2, gt2), (5, gt1)])
    # image 2 evaluated without any detection; image 5 not evaluated at all (not counted)
    res = _evaluate(name, {1: ([gt1[0][0]], [0.9]), 2: ([], [])}, output_dir=str(tmp_path))
    assert res["AR@100"] == pytest.approx(50.0)
    saved = json.loads((tmp_path / "class_agnostic_results.json").read_text())
    assert saved["AR@100"] == pytest.approx(50.0)
    detections = json.loads((tmp_path / "class_agnostic_predictions.json").read_text())
    assert [d["image_id"] for d in detections] == [1]
    assert detections[0]["bbox"] == pytest.approx([10, 10, 50, 40])  # COCO xywh

    res = _evaluate(name, {1: ([], []), 2: ([], [])})
    assert res["AR@100"] == pytest.approx(0.0) and res["AP"] == pytest.approx(0.0)


def test_images_without_ground_truth_give_nan_and_unknown_ids_fail(register_dataset, tmp_path):
    name = register_dataset([(1, [])])
    res = _evaluate(name, {1: ([[0, 0, 10, 10]], [0.9])}, output_dir=str(tmp_path))
    assert math.isnan(res["AR@100"])
    text = (tmp_path / "class_agnostic_results.json").read_text()
    assert "NaN" not in text and json.loads(text)["AR@100"] is None  # strict JSON: null, not NaN
    with pytest.raises(ValueError, match="not in the ground truth"):
        _evaluate(name, {42: ([[0, 0, 10, 10]], [0.9])})


def _ddp_worker(out_dir):
    from detectron2.utils import comm

    name = "class_agnostic_ddp_test"
    gt4 = [([40, 40, 90, 90], 0)]
    dicts = [
        {"file_name": f"{i}.jpg", "image_id": i, "height": 200, "width": 300,
         "annotations": [{"bbox": list(map(float, b)), "bbox_mode": BoxMode.XYXY_ABS, "category_id": c}
                         for b, c in gt]}
        for i, gt in ((3, GT4), (4, gt4))
    ]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["a", "b"])
    evaluator = ClassAgnosticEvaluator(name)
    evaluator.reset()
    rank = comm.get_rank()
    if rank == 0:  # 2 of the 4 boxes of image 3
        evaluator.process([{"image_id": 3}], [_output([b for b, _ in GT4[:2]], [0.9, 0.8])])
    else:  # the box of image 4
        evaluator.process([{"image_id": 4}], [_output([gt4[0][0]], [0.9])])
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(evaluator.evaluate()))


def test_predictions_are_gathered_across_processes(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("with CUDA, launch delegates to detectron2's NCCL launcher")
    from siamese_detr.engine import launch

    launch(_ddp_worker, 2, dist_url="auto", args=(str(tmp_path),))
    main = json.loads((tmp_path / "rank0.json").read_text())
    assert json.loads((tmp_path / "rank1.json").read_text()) == {}
    assert main["class_agnostic"]["AR@100"] == pytest.approx(60.0)  # 3 of the 5 boxes of both images
    assert main["class_agnostic"]["AR@1"] == pytest.approx(40.0)  # top-1 of each image: 2 of 5


# ----------------------------------------------------------------------------------- the demo config
spec = importlib.util.spec_from_file_location(
    "lazyconfig_train_net", ROOT / "tools" / "lazyconfig_train_net.py"
)
train_net = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_net)

DEMO = ROOT / "configs/demo/siamese_detr_pretrain_demo.py"


def _demo_model(seed=0):
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(str(DEMO))
    torch.manual_seed(seed)
    return cfg, instantiate(cfg.model).eval()


def _raw_outputs(model, inputs):
    """The network's own outputs for ``inputs``: ``pred_logits [Q, 2]`` and ``pred_boxes [Q, 4]`` (cxcywh
    normalised by the RESIZED image the model is fed) of the single image, and that image's size."""
    with torch.no_grad():
        images = model.preprocess_image([inputs])
        raw = model.forward_outputs(images)
    return raw["pred_logits"][0], raw["pred_boxes"][0], tuple(images.image_sizes[0])


def _expected_detections(logits, boxes, height, width):
    """Independently of the model's post-processing: one detection per query (softmax over {object,
    no-object}, the object probability as score), the normalised box converted by torchvision and scaled by
    the ORIGINAL ``width`` / ``height``, clipped to the image (detector_postprocess's clip)."""
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    xyxy = box_convert(boxes, "cxcywh", "xyxy") * scale
    xyxy = torch.minimum(xyxy.clamp(min=0), scale)
    return xyxy, logits.softmax(-1)[:, 0]


def test_eval_mode_forward_returns_original_image_coordinates(tiny_synthetic_shapes):
    """The demo mapper resizes (short side 144) images of 160-256 px: the returned boxes must be the model's
    normalised boxes times the ORIGINAL width / height, not the resized one's (boxes left in resized
    coordinates would still lie inside the original image, so a bounds check alone cannot tell)."""
    from detectron2.config import instantiate

    cfg, model = _demo_model()
    mapper = instantiate(cfg.dataloader.test.mapper)
    record = DatasetCatalog.get("synthetic_shapes_val")[0]
    inputs = mapper(dict(record))
    h, w = inputs["image"].shape[-2:]
    assert min(h, w) == 144 and max(h, w) <= 224  # the demo's view scale
    assert (h, w) != (record["height"], record["width"])
    with torch.no_grad():
        (out,) = model([inputs])
    inst = out["instances"]
    assert inst.image_size == (record["height"], record["width"])
    assert len(inst) == cfg.model.num_queries

    logits, boxes, fed_size = _raw_outputs(model, inputs)
    assert fed_size == (h, w)  # the network saw the resized image
    expected, scores = _expected_detections(logits, boxes, record["height"], record["width"])
    assert torch.allclose(inst.pred_boxes.tensor, expected, rtol=0, atol=1e-4)
    assert torch.allclose(inst.scores, scores, rtol=0, atol=1e-6)
    assert bool((inst.pred_classes == 0).all())
    # the check can tell: boxes in resized coordinates would be off by tens of pixels (measured 66)
    resized, _ = _expected_detections(logits, boxes, h, w)
    assert (resized - expected).abs().max() > 20


def test_demo_pretrain_config_eval_only_prints_class_agnostic_ar(tmp_path, tiny_synthetic_shapes):
    """``--eval-only`` loads the checkpoint, runs the test loader and the evaluator: the detections it saves
    (``inference/class_agnostic_predictions.json``, COCO xywh) are those of the saved model on each val image,
    recomputed here from the network's normalised boxes scaled by the ORIGINAL image size."""
    from detectron2.config import instantiate

    cfg, model = _demo_model()
    checkpoint = tmp_path / "pretrain.pth"
    torch.save({"model": model.state_dict(), "iteration": 0}, checkpoint)
    argv = [
        "--config-file", str(DEMO), "--eval-only",
        f"train.init_checkpoint={checkpoint}", f"train.output_dir={tmp_path / 'out'}",
        "train.device=cpu", "dataloader.test.num_workers=0",
    ]
    results = train_net.main(train_net.parse_args(argv))
    res = results["class_agnostic"]
    assert set(res) == {"AR@1", "AR@10", "AR@100", "AP", "AP50", "AP75"}
    for value in res.values():
        assert 0.0 <= value <= 100.0
    assert res["AR@1"] <= res["AR@10"] <= res["AR@100"]  # more detections never lower recall

    saved = json.loads((tmp_path / "out" / "inference" / "class_agnostic_predictions.json").read_text())
    mapper = instantiate(cfg.dataloader.test.mapper)
    records = DatasetCatalog.get("synthetic_shapes_val")
    assert sorted({d["image_id"] for d in saved}) == sorted(r["image_id"] for r in records)
    for record in records:
        inputs = mapper(dict(record))
        assert tuple(inputs["image"].shape[-2:]) != (record["height"], record["width"])  # resized by the mapper
        logits, boxes, _ = _raw_outputs(model, inputs)
        xyxy, scores = _expected_detections(logits, boxes, record["height"], record["width"])
        mine = [d for d in saved if d["image_id"] == record["image_id"]]
        assert len(mine) == cfg.model.num_queries
        got = torch.tensor([d["bbox"] for d in mine], dtype=torch.float64)
        xywh = torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1).double()
        assert torch.allclose(got, xywh, rtol=0, atol=1e-4), (got - xywh).abs().max()  # measured 3.1e-5
        assert torch.allclose(torch.tensor([d["score"] for d in mine], dtype=torch.float64), scores.double(),
                              rtol=0, atol=1e-6)
