"""Edge-case inputs of the models and the pretraining mappers (tiny, CPU, seeded): out-of-range class labels,
half-precision box losses, training inputs without ``instances``, two-stage Deformable DETR on too few tokens,
unusable DETReg ``min_proposals``, and padding invariance of the Conditional / multi-level Deformable demos."""

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn

from siamese_detr.data.detreg_mapper import DETRegMapper
from siamese_detr.modeling import HungarianMatcher, SetCriterion
from siamese_detr.modeling.matcher import FocalHungarianMatcher

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "demo"
STRIDES = {"res3": 8, "res4": 16, "res5": 32}


class PatchBackbone(Backbone):
    """One ``stride x stride`` patch convolution per level: a feature cell sees only its own pixels, so the
    features of an image do not depend on how much padding the batch adds (unlike 3x3 convolutions)."""

    def __init__(self, names, channels=32):
        super().__init__()
        self.names = list(names)
        self.channels = channels
        self.convs = nn.ModuleDict({n: nn.Conv2d(3, channels, STRIDES[n], stride=STRIDES[n]) for n in self.names})

    def forward(self, x):
        return {n: torch.relu(conv(x)) for n, conv in self.convs.items()}

    def output_shape(self):
        return {n: ShapeSpec(channels=self.channels, stride=STRIDES[n]) for n in self.names}


def demo_model(name, seed=0, **overrides):
    """The model of ``configs/demo/{name}.py`` with a patch backbone (and ``overrides`` on ``cfg.model``)."""
    cfg = LazyConfig.load(str(CONFIGS / f"{name}.py"))
    cfg.model.backbone = L(PatchBackbone)(names=list(cfg.model.in_features))
    cfg.model.frozen_modules = []
    for key, value in overrides.items():
        cfg.model[key] = value
    torch.manual_seed(seed)
    return instantiate(cfg.model)


def make_input(h, w, boxes=((4.0, 6.0, 30.0, 40.0),), classes=(0,), seed=0):
    g = torch.Generator().manual_seed(seed)
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), "instances": inst}


# ------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    "class_loss, label",
    [("ce", 3), ("focal", -1), ("ce", 7), ("focal", 3)],
    ids=["ce-label-K-is-no-object", "focal-label-minus-1-is-last-class", "ce-above-K", "focal-label-K"],
)
def test_out_of_range_labels_are_a_clear_error(class_loss, label):
    # K = 3 classes: with softmax CE label 3 indexes the no-object column (silently trained as background),
    # with the focal loss label -1 indexes class 2; both must stop with the config key to fix
    matcher = HungarianMatcher() if class_loss == "ce" else FocalHungarianMatcher()
    criterion = SetCriterion(3, matcher, class_loss=class_loss)
    logits = torch.zeros(2, 4, criterion.num_class_logits)
    outputs = {"pred_logits": logits, "pred_boxes": torch.full((2, 4, 4), 0.3)}
    ok = {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.2, 0.2]])}
    bad = {"labels": torch.tensor([1, label]), "boxes": ok["boxes"].clone()}
    criterion(outputs, [ok, dict(ok)])  # labels in [0, K): fine
    with pytest.raises(ValueError, match=rf"label {label} .*model\.num_classes"):
        criterion(outputs, [ok, bad])


def test_out_of_range_label_stops_the_detr_demo_training_step():
    model = demo_model("detr_demo").train()
    k = model.num_classes
    with EventStorage(), pytest.raises(ValueError, match="num_classes"):
        model([make_input(64, 80, classes=(k,)), make_input(48, 64, boxes=(), classes=())])


# ------------------------------------------------------------------------------------ mixed precision
def test_box_losses_do_not_round_float32_targets_to_half_precision():
    # autocast gives bf16 / fp16 predicted boxes; the L1 / GIoU losses must compare them with the float32
    # targets, not with targets rounded to the prediction's 8-bit mantissa
    torch.manual_seed(0)
    criterion = SetCriterion(1, HungarianMatcher())
    pred = (torch.rand(1, 3, 4) * 0.4 + 0.3).to(torch.bfloat16)
    tgt = torch.tensor([[0.3012345, 0.4123457, 0.2234567, 0.1345679], [0.6543211, 0.5432101, 0.1987653, 0.3012347]])
    outputs = {"pred_logits": torch.zeros(1, 3, 2), "pred_boxes": pred}
    losses, indices = criterion(outputs, [{"labels": torch.zeros(2, dtype=torch.long), "boxes": tgt}],
                                return_indices=True)
    rows, cols = indices[-1][0]  # the final layer, image 0
    expected_l1 = (pred[0, rows].double() - tgt[cols].double()).abs().sum() / 2  # independent, float64
    assert losses["loss_bbox"].dtype == torch.float32
    assert abs(losses["loss_bbox"].item() - expected_l1.item()) < 1e-5


# ------------------------------------------------------------------------------------------ inputs
def test_training_input_without_instances_names_the_image():
    model = demo_model("detr_demo").train()
    unlabelled = make_input(64, 80)
    del unlabelled["instances"]
    unlabelled["image_id"] = "img_7"
    with EventStorage(), pytest.raises(ValueError, match=r"'img_7' has no 'instances'"):
        model([make_input(64, 80), unlabelled])


def test_two_stage_on_fewer_tokens_than_proposals_is_a_clear_error():
    # a 40 x 60 image padded to 64 x 64 has 8*8 + 4*4 + 2*2 + 1*1 = 85 tokens on the demo's four levels
    cfg = LazyConfig.load(str(CONFIGS / "deformable_detr_demo.py"))
    cfg.model.backbone = L(PatchBackbone)(names=list(cfg.model.in_features))
    cfg.model.transformer.two_stage = True
    cfg.model.transformer.two_stage_num_proposals = 100
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    # the message names the config key to lower
    match = r"two_stage_num_proposals=100 .* only 85 tokens.*model\.transformer\.two_stage_num_proposals <= 85"
    with torch.no_grad(), pytest.raises(ValueError, match=match):
        model([make_input(40, 60)])
    model.transformer.two_stage_num_proposals = 85  # exactly the number of tokens works
    with torch.no_grad():
        assert len(model([make_input(40, 60)])[0]["instances"]) > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(min_proposals=0), "must be >= 1"),
    (dict(num_proposals=3, min_proposals=4), "skips every image"),
    (dict(num_proposals=3, min_proposals=4, policy="random"), "skips every image"),
])
def test_detreg_mapper_rejects_unusable_min_proposals(kwargs, match):
    def source(dataset_dict, image):
        return np.zeros((0, 4)), np.zeros(0)

    with pytest.raises(ValueError, match=match):
        DETRegMapper(proposal_source=source, **kwargs)
    # importance sampling may draw more than num_proposals: allowed
    DETRegMapper(proposal_source=source, num_proposals=3, min_proposals=4, policy="importance")


# ----------------------------------------------------------------------------------------- padding
@pytest.mark.parametrize("name", ["conditional_detr_demo", "deformable_detr_demo", "demo_detector"])
def test_batched_outputs_equal_single_image_outputs(name):
    # different sizes (one under the 32 px stride, one 16 x 300) batched together must give each image the
    # outputs it gets alone: padding masks, positional encodings and valid ratios of every level.
    # GroupNorm input projections (Deformable DETR) normalise over the padded map, as the official code,
    # so they are turned off here.
    model = demo_model(name, input_proj_norm=False).eval()
    inputs = [make_input(70, 90, seed=1), make_input(16, 300, seed=2), make_input(24, 20, seed=3)]
    with torch.no_grad():
        batched = model.forward_outputs(model.preprocess_image(inputs))
        for i, x in enumerate(inputs):
            alone = model.forward_outputs(model.preprocess_image([x]))
            assert torch.allclose(batched["pred_logits"][i], alone["pred_logits"][0], atol=1e-4)
            assert torch.allclose(batched["pred_boxes"][i], alone["pred_boxes"][0], atol=1e-4)
