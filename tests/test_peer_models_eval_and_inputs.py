"""The UP-DETR and DETReg pretraining models: in eval mode the detections of their learned object queries alone;
in training, inputs that are not their mappers' outputs refused with one line naming the mapper; their mappers
skip and count unreadable images.

In eval mode a pretraining model is scored as a class-agnostic detector (as ``make demo`` scores the Siamese DETR
one, ``tests/test_siamese_detr_model.py``): its detections must be those of a plain ``DETR`` with one class and
the same weights, whatever pretext inputs (patches, crops, their boxes) the dicts also carry.
"""
import copy

import pytest
import torch
from detectron2.utils.events import EventStorage

from siamese_detr.modeling import DETR, HungarianMatcher, SetCriterion
from siamese_detr.utils.user_errors import UserValueError
from test_detreg import fake_batch as detreg_batch, tiny_detreg
from test_up_detr import fake_batch as up_detr_batch, tiny_up_detr


def detr_with_the_same_weights(pretrain_model) -> DETR:
    """A one-class ``DETR`` built from copies of the model's parts, loaded with its state dict (pretext heads
    dropped): the detector a finetuning would start from, before any finetuning."""
    detr = DETR(
        backbone=copy.deepcopy(pretrain_model.backbone),
        position_embedding=copy.deepcopy(pretrain_model.position_embedding),
        transformer=copy.deepcopy(pretrain_model.transformer),
        num_classes=1,
        num_queries=pretrain_model.num_queries,
        criterion=SetCriterion(1, HungarianMatcher()),
        weight_dict={"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        in_features=pretrain_model.in_features,
    )
    incompatible = detr.load_state_dict(pretrain_model.state_dict(), strict=False)
    assert incompatible.missing_keys == []  # every weight of the detector comes from the pretraining model
    return detr.eval()


MODELS = {
    "up_detr": (lambda: tiny_up_detr(num_queries=6, num_patches=3), lambda: up_detr_batch(batch=2, num_patches=3)),
    "detreg": (lambda: tiny_detreg(num_queries=6), lambda: detreg_batch(counts=(2, 4))),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_eval_gives_the_class_agnostic_detections_of_the_learned_queries(name):
    make_model, make_batch = MODELS[name]
    model = make_model().eval()
    # the second image as if it had been resized from 2x its size: boxes come back in the original size
    batch = make_batch()
    batch[1]["height"], batch[1]["width"] = 2 * batch[1]["image"].shape[1], 2 * batch[1]["image"].shape[2]
    images_only = [{k: v for k, v in x.items() if k in ("image", "height", "width")} for x in batch]
    with torch.no_grad():
        out = model(batch)
        out_images_only = model(images_only)
        expected = detr_with_the_same_weights(model)(images_only)

    assert len(out) == len(batch)
    for got, alone, ref, x in zip(out, out_images_only, expected, images_only):
        inst, inst_alone, inst_ref = got["instances"], alone["instances"], ref["instances"]
        size = (x.get("height", x["image"].shape[1]), x.get("width", x["image"].shape[2]))
        assert inst.image_size == size
        assert len(inst) == 6 and bool((inst.pred_classes == 0).all())
        # the pretext inputs are not used in eval
        assert torch.equal(inst.pred_boxes.tensor, inst_alone.pred_boxes.tensor)
        assert torch.equal(inst.scores, inst_alone.scores)
        # the detector of the same weights gives the same detections
        assert torch.allclose(inst.pred_boxes.tensor, inst_ref.pred_boxes.tensor, rtol=0, atol=1e-5)
        assert torch.allclose(inst.scores, inst_ref.scores, rtol=0, atol=1e-6)
        assert bool((inst.pred_boxes.tensor[:, 2:] <= torch.tensor([size[1], size[0]])).all())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_eval_does_not_depend_on_the_patches_or_crops_given(name):
    """The learned queries alone: other patches or crops for the same images give the same detections, where in
    training they change the queries (UP-DETR: patch features) or the targets (DETReg: crop embeddings)."""
    make_model, make_batch = MODELS[name]
    model = make_model().eval()
    batch, other = make_batch(), make_batch()
    key = "patches" if name == "up_detr" else "crops"
    for x, y in zip(batch, other):
        y[key] = 255 - x[key]
        assert not torch.equal(x[key], y[key])
    with torch.no_grad():
        a, b = model(batch), model(other)
    for ra, rb in zip(a, b):
        assert torch.equal(ra["instances"].pred_boxes.tensor, rb["instances"].pred_boxes.tensor)
        assert torch.equal(ra["instances"].scores, rb["instances"].scores)
        assert torch.equal(ra["instances"].pred_classes, rb["instances"].pred_classes)


@pytest.mark.parametrize("name, mapper, fields", [("up_detr", "UPDETRMapper", "('image', 'patches', 'patch_boxes')"),
                                                  ("detreg", "DETRegMapper", "('image', 'proposal_boxes', 'crops')")])
def test_training_refuses_an_empty_batch_and_dicts_of_another_mapper(name, mapper, fields):
    """Training inputs without the pretext fields (e.g. a config left with ``DetrDatasetMapper``): one line that
    names the image and the mapper whose outputs are expected, before any forward pass; an empty batch too."""
    make_model, make_batch = MODELS[name]
    model = make_model().train()
    cls = type(model).__name__
    with EventStorage(), pytest.raises(UserValueError, match=f"^{cls} got an empty batch$"):
        model([])
    batch = make_batch()
    batch[1] = {"image": batch[1]["image"], "image_id": "b.jpg"}  # what DetrDatasetMapper gives, without instances
    message = f"image 'b.jpg': training expects {mapper} outputs {fields}"
    with EventStorage(), pytest.raises(UserValueError) as err:
        model(batch)
    assert str(err.value) == message


@pytest.mark.parametrize("name", ["up_detr", "detreg"])
def test_the_peer_mappers_skip_and_count_unreadable_images(name, tmp_path, caplog):
    """A corrupt, an empty and a missing file: ``None`` (detectron2's dataset then draws another sample), each
    counted in ``num_unreadable`` and the file named in a warning; a readable image after them maps as usual.
    The proposal source is never asked for the boxes of an image that could not be read."""
    import cv2
    import numpy as np
    from detectron2.data import transforms as T

    from siamese_detr.data.detreg_mapper import DETRegMapper
    from siamese_detr.data.up_detr_mapper import UPDETRMapper

    (tmp_path / "corrupt.jpg").write_bytes(b"not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    good = str(tmp_path / "good.png")
    cv2.imwrite(good, np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    asked = []

    def proposals(d, image):
        asked.append(d["file_name"])
        return np.array([[2, 2, 30, 30], [10, 8, 60, 40]], np.float32), np.array([2.0, 1.0], np.float32)

    if name == "up_detr":
        mapper = UPDETRMapper(num_patches=2, patch_size=16, augmentation=[], seed=0)
    else:
        mapper = DETRegMapper(proposal_source=proposals, num_proposals=2, crop_size=16, is_train=False,
                              augmentation=[T.NoOpTransform()], augmentation_with_crop=None, seed=0)
    caplog.set_level("WARNING")
    for i, file in enumerate(("corrupt.jpg", "empty.png", "missing.jpg")):
        assert mapper({"file_name": str(tmp_path / file), "image_id": i}) is None
    assert mapper.num_unreadable == 3 and asked == []
    assert "corrupt.jpg" in caplog.text and "empty.png" in caplog.text
    out = mapper({"file_name": good, "image_id": 9})
    assert out is not None and out["image"].shape == (3, 48, 64)
    assert mapper.num_unreadable == 3
    assert asked == ([] if name == "up_detr" else [good])
