"""Pins the shapes and box conventions that the docstrings of the main entry points promise.

Each test checks a documented statement against the code on tiny CPU inputs: model outputs (cxcywh
normalised by the unpadded image), eval detections (xyxy absolute in the original image), set targets,
matcher indices, and the boxes of every dataset mapper (xyxy absolute pixels of the image they come with).
"""
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances
from torchvision.ops import box_convert

from siamese_detr.data.detr_mapper import DetrDatasetMapper
from siamese_detr.data.detreg_mapper import DETRegMapper
from siamese_detr.data.siamese_mapper import SiameseViewMapper
from siamese_detr.data.up_detr_mapper import UPDETRMapper
from siamese_detr.data.views import view_to_original
from siamese_detr.modeling import HungarianMatcher
from siamese_detr.modeling.meta_arch.detr import set_target
from siamese_detr.modeling.postprocess import SoftmaxArgmaxPostProcess
from test_siamese_detr_model import fake_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 90, 150  # original image of the mapper tests


@pytest.fixture
def coord_image(tmp_path):
    """A BGR image whose pixel (y, x) encodes its own centre: B = (x + 0.5) * 255 / W, G = (y + 0.5) * 255 / H."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([(xx + 0.5) * 255 / W, (yy + 0.5) * 255 / H, np.zeros_like(xx)], -1).round().astype(np.uint8)
    path = str(tmp_path / "coords.png")
    cv2.imwrite(path, img)
    return path


def decode_xy(image_chw: torch.Tensor, x: float, y: float):
    """Original-image (x, y) encoded at pixel (x, y) of a uint8 [3, H', W'] BGR tensor."""
    px = image_chw[:, min(int(y), image_chw.shape[1] - 1), min(int(x), image_chw.shape[2] - 1)].double()
    return float(px[0]) * W / 255, float(px[1]) * H / 255


def demo_model(name):
    torch.manual_seed(0)
    return instantiate(LazyConfig.load(f"{ROOT}/configs/demo/{name}.py").model)


# ----------------------------------------------------------------------------------------------- modeling
def test_set_target_is_cxcywh_normalised_by_unpadded_size():
    out = set_target(torch.tensor([3]), torch.tensor([[20.0, 10.0, 60.0, 50.0]]), (100, 200))  # (h, w)
    assert out["labels"].dtype == torch.int64
    assert torch.allclose(out["boxes"], torch.tensor([[0.2, 0.3, 0.2, 0.4]]))
    # float64 boxes stay float64 (float64 parity runs); integer boxes become float32
    exact = set_target(torch.tensor([0]), torch.tensor([[1.0, 1.0, 2.0, 4.0]], dtype=torch.float64), (3, 3))
    assert exact["boxes"].dtype == torch.float64
    assert abs(exact["boxes"][0, 1].item() - 2.5 / 3) < 1e-15  # float32 would be off by ~1e-8
    assert set_target(torch.tensor([0]), torch.tensor([[1, 1, 2, 4]]), (3, 3))["boxes"].dtype == torch.float32


def test_postprocess_gives_xyxy_absolute_of_the_given_size():
    logits = torch.tensor([[[2.0, 0.0, 0.0]]])  # [B=1, Q=1, K+1=3]
    boxes = torch.tensor([[[0.5, 0.25, 0.2, 0.5]]])  # cxcywh normalised
    inst = SoftmaxArgmaxPostProcess()(logits, boxes, [(40, 100)])[0]
    assert inst.image_size == (40, 100)
    assert torch.allclose(inst.pred_boxes.tensor, torch.tensor([[40.0, 0.0, 60.0, 20.0]]))
    assert inst.pred_classes.tolist() == [0]


def test_matcher_indices_shape_order_and_assignment():
    targets = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]])
    perm = [2, 0, 1]  # query q predicts target perm[q]
    outputs = {"pred_logits": torch.zeros(2, 3, 2), "pred_boxes": targets[perm][None].repeat(2, 1, 1)}
    tgts = [{"labels": torch.zeros(3, dtype=torch.long), "boxes": targets},
            {"labels": torch.zeros(1, dtype=torch.long), "boxes": targets[1:2]}]
    indices = HungarianMatcher()(outputs, tgts)
    assert len(indices) == 2
    (q0, t0), (q1, t1) = indices
    assert q0.dtype == t0.dtype == torch.int64 and q0.device.type == "cpu"
    assert q0.tolist() == [0, 1, 2] and t0.tolist() == perm  # ascending queries, optimal targets
    assert len(q1) == len(t1) == 1 and q1.tolist() == [2] and t1.tolist() == [0]  # min(Q, N_b) pairs


def test_detr_outputs_train_and_eval_conventions():
    model = demo_model("detr_demo").eval()
    images = [torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8),
              torch.randint(0, 256, (3, 80, 64), dtype=torch.uint8)]
    q, k = model.num_queries, model.num_classes
    with torch.no_grad():
        out = model.forward_outputs(model.pad_images(images))
    assert out["pred_logits"].shape == (2, q, k + 1)
    assert out["pred_boxes"].shape == (2, q, 4)
    assert bool(((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all())
    assert len(out["aux_outputs"]) == model.transformer.num_decoder_layers - 1

    # eval: xyxy absolute in the ORIGINAL image (height / width), the cxcywh boxes scaled by it
    with torch.no_grad():
        res = model([{"image": images[0], "height": 128, "width": 192}, {"image": images[1]}])
    for r, (h, w), boxes in zip(res, [(128, 192), (80, 64)], out["pred_boxes"]):
        inst = r["instances"]
        assert inst.image_size == (h, w) and len(inst) == q
        expected = box_convert(boxes, "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
        assert torch.allclose(inst.pred_boxes.tensor, expected.clamp(min=0).clamp(max=torch.tensor([w, h, w, h])),
                              atol=1e-3)

    model.train()
    batch = []
    for im in images:
        inst = Instances(tuple(im.shape[1:]))
        inst.gt_boxes = Boxes(torch.tensor([[5.0, 6.0, 40.0, 50.0]]))
        inst.gt_classes = torch.tensor([1])
        batch.append({"image": im, "instances": inst})
    losses = model(batch)
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0"} <= set(losses)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())


def test_siamese_pretrain_forward_shapes_and_targets_of_the_other_view():
    model = demo_model("siamese_detr_pretrain_demo").train()
    n, q, batch = model.num_regions, model.num_queries, 2
    inputs = fake_batch(batch, num_regions=n)  # mapper-like samples, random pixels and boxes
    seen = {}
    decode, criterion = model.decode, model.criterion.forward

    def rec_decode(*args, **kwargs):
        seen["decoded"] = decode(*args, **kwargs)
        return seen["decoded"]

    def rec_criterion(outputs, targets, return_indices=False):
        seen["outputs"], seen["targets"] = outputs, targets
        return criterion(outputs, targets, return_indices=return_indices)

    model.decode, model.criterion.forward = rec_decode, rec_criterion
    losses = model(inputs)
    hs = seen["decoded"].hidden_states
    assert hs.shape == (model.transformer.num_decoder_layers, 2 * batch, q, model.transformer.d_model)
    assert seen["outputs"]["pred_logits"].shape == (2 * batch, q, 2)  # objectness + no-object
    assert seen["outputs"]["pred_boxes"].shape == (2 * batch, q, 4)
    # row v * B + b decodes the OTHER view: its targets are the other view's regions, cxcywh normalised by
    # that view's unpadded size
    views = [x["views"][v] for v in (0, 1) for x in inputs]
    for row, target in enumerate(seen["targets"]):
        other = views[(row + batch) % (2 * batch)]
        h, w = other["image"].shape[1:]
        expected = set_target(torch.zeros(n, dtype=torch.long), other["region_boxes"], (h, w))
        assert torch.allclose(target["boxes"], expected["boxes"])
        assert target["labels"].tolist() == [0] * n
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_region", "loss_global", "loss_region_0"} <= set(losses)
    assert "loss_global_0" not in losses

    model.eval()
    with torch.no_grad():
        res = model([{"image": views[0]["image"], "height": 128, "width": 192}])
    inst = res[0]["instances"]
    assert inst.image_size == (128, 192) and len(inst) == q
    assert set(inst.pred_classes.tolist()) == {0}  # class-agnostic


# ----------------------------------------------------------------------------------------------- data
def test_detr_mapper_gt_boxes_xyxy_absolute_in_augmented_image(coord_image):
    mapper = DetrDatasetMapper(True, [T.ResizeShortestEdge(2 * H, max_size=10 * W)])
    d = {"file_name": coord_image, "height": H, "width": W, "image_id": 0,
         "annotations": [{"bbox": [10.0, 20.0, 30.0, 40.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2}]}
    out = mapper(d)
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, 2 * H, 2 * W)
    assert torch.allclose(out["instances"].gt_boxes.tensor, torch.tensor([[20.0, 40.0, 80.0, 120.0]]))
    assert out["instances"].gt_classes.tolist() == [2]


def test_siamese_mapper_boxes_are_view_pixels_of_the_same_regions(coord_image):
    props = np.array([[20, 10, 120, 80], [40, 25, 140, 88], [60, 30, 110, 70]], float)
    n, crop = 4, 16
    for seed in range(3):
        mapper = SiameseViewMapper(
            is_train=True, proposal_source=lambda d, im: (props, np.array([3.0, 2.0, 1.0])), num_regions=n,
            short_side_range=(80, 100), max_size=200, crop_size=crop, seed=seed, color_jitter=None,
            grayscale_prob=0.0, blur_prob=0.0, crop_augment=False,
        )
        out = mapper({"file_name": coord_image, "image_id": 1})
        (h0, w0), (h1, w1) = (tuple(v["image"].shape[1:]) for v in out["views"])
        assert (h0, w0) == (h1, w1)  # both views resized to the outer box's size
        originals = []
        for view in out["views"]:
            image, rb, qb = view["image"], view["region_boxes"], view["query_boxes"]
            hv, wv = image.shape[1:]
            assert image.dtype == torch.uint8 and image.shape[0] == 3
            assert rb.shape == qb.shape == (n, 4) and rb.dtype == qb.dtype == torch.float32
            assert view["crops"].shape == (n, 3, crop, crop) and view["crops"].dtype == torch.uint8
            for boxes in (rb, qb):
                assert bool((boxes[:, :2] >= -1e-4).all() and (boxes[:, 2] <= wv + 1e-4).all()
                            and (boxes[:, 3] <= hv + 1e-4).all() and (boxes[:, 2:] > boxes[:, :2]).all())
            orig = view_to_original(rb.double().numpy(), view["view_box"].numpy(), (H, W),
                                    (out["resized_height"], out["resized_width"]), out["flip"],
                                    view["view_scale"].numpy())
            originals.append(orig)
            for (x0, y0, x1, y1), (ox0, oy0, ox1, oy1) in zip(rb.tolist(), orig):
                ex, ey = decode_xy(image, (x0 + x1) / 2, (y0 + y1) / 2)
                assert abs(ex - (ox0 + ox1) / 2) < 1.0 and abs(ey - (oy0 + oy1) / 2) < 1.0
        # row k of both views is the same image region
        assert np.allclose(originals[0], originals[1], atol=1e-3)


def test_up_detr_mapper_patch_boxes_in_augmented_image_pixels(coord_image):
    mapper = UPDETRMapper(is_train=False, num_patches=3, patch_size=16, seed=0,
                          augmentation=[T.ResizeShortestEdge(2 * H, max_size=10 * W)])
    out = mapper({"file_name": coord_image, "image_id": 0})
    image, boxes, patches = out["image"], out["patch_boxes"], out["patches"]
    assert tuple(image.shape) == (3, 2 * H, 2 * W) and boxes.shape == (3, 4) and boxes.dtype == torch.float32
    assert patches.shape == (3, 3, 16, 16) and patches.dtype == torch.uint8
    for (x0, y0, x1, y1), patch in zip(boxes.tolist(), patches):
        cx, cy = decode_xy(image, (x0 + x1) / 2, (y0 + y1) / 2)
        assert abs(cx - (x0 + x1) / 4) < 1.0 and abs(cy - (y0 + y1) / 4) < 1.0  # image is 2x the original
        # the patch is cut from the ORIGINAL image around the same centre (mean of its two central pixels)
        (ax, ay), (bx, by) = decode_xy(patch, 7, 7), decode_xy(patch, 8, 8)
        assert abs((ax + bx) / 2 - (x0 + x1) / 4) < 1.5 and abs((ay + by) / 2 - (y0 + y1) / 4) < 1.5


def test_detreg_mapper_proposal_boxes_follow_the_image(coord_image):
    props = np.array([[10, 5, 60, 45], [30, 20, 140, 85], [0, 0, 150, 90]], float)
    mapper = DETRegMapper(lambda d, im: (props, np.array([3.0, 2.0, 1.0])), is_train=False, num_proposals=2,
                          crop_size=16, augmentation=[T.ResizeShortestEdge(2 * H, max_size=10 * W)], seed=0)
    out = mapper({"file_name": coord_image, "image_id": 0})
    assert tuple(out["image"].shape) == (3, 2 * H, 2 * W)
    assert torch.allclose(out["proposal_boxes"], torch.as_tensor(2 * props[:2], dtype=torch.float32))
    assert out["crops"].shape == (2, 3, 16, 16) and out["proposal_rank"].tolist() == [0, 1]


@pytest.mark.parametrize("config", ["siamese_detr_deformable_pretrain_demo", "siamese_detr_pretrain_demo",
                                    "demo_siamese_pretrain"])
def test_pretraining_detections_are_one_objectness_box_per_query(config):
    """A pretraining model scores objectness (one class): its eval detections are class 0, one per query at
    most (the Deformable configs train a softmax objectness: a sigmoid top-k over its two logits also
    returned the no-object column as a class)."""
    cfg = LazyConfig.load(f"{ROOT}/configs/demo/{config}.py")
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    with torch.no_grad():
        inst = model([{"image": torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)}])[0]["instances"]
    assert len(inst) <= model.num_queries and set(inst.pred_classes.tolist()) == {0}


def test_a_postprocess_for_another_class_loss_is_refused():
    from siamese_detr.modeling import SigmoidTopKPostProcess

    cfg = LazyConfig.load(f"{ROOT}/configs/demo/siamese_detr_deformable_pretrain_demo.py")
    cfg.model.postprocess = SigmoidTopKPostProcess(num_detections=10)  # focal scores of 'ce' logits
    with pytest.raises(ValueError, match="reads the logits of a 'focal' class loss, but model.criterion.class_loss "
                                         "is 'ce': set model.postprocess to SoftmaxArgmaxPostProcess"):
        instantiate(cfg.model)
    cfg = LazyConfig.load(f"{ROOT}/configs/demo/deformable_detr_demo.py")
    cfg.model.postprocess = SoftmaxArgmaxPostProcess()  # would drop the last real class of a focal head
    with pytest.raises(ValueError, match="'ce' class loss, but model.criterion.class_loss is 'focal'"):
        instantiate(cfg.model)
