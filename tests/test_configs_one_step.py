"""One training step of every full-scale config (configs/detr, siamese_detr, up_detr, detreg) on tiny local data.

``test_configs.py`` instantiates these configs but never trains them: their data (COCO, VOC, ImageNet and their
proposal stores) is not on disk, so nothing in CI runs THIS config's mapper output through THIS config's model.
A config whose mapper emits what its model does not expect (another number of regions / patches / proposals
than the model's queries, a missing field), whose ``weight_dict`` names a loss the model never computes, or
whose heads get no gradient would otherwise only fail on a GPU cluster, after the data has been prepared.

For every non-demo config (the discovery of ``test_configs.py`` without ``configs/demo/``) the test

1. loads the config and shrinks its model exactly as ``test_configs._tiny_model_overrides`` (1 encoder +
   1 decoder layer, FFN 64, ResNet-18 for ``stages`` backbones);
2. makes its data tiny and local, keeping the config's mapper class and policy (number of regions, patches,
   proposals, selection policy, augmentation functions, flip or not): the training set becomes the built-in
   ``synthetic_shapes_train`` (6 images, fixture ``tiny_synthetic_shapes``; for the ImageNet configs this
   replaces the ``register_unlabeled_folder`` dataset, whose image ids would not match the tiny proposal store,
   and the pretraining mappers never read the labels); images get a short side of 96..128 (max 192) through
   the mapper's own size knobs (augmentation lists / functions, ``short_side_range`` / ``max_size``), crops and
   patches 64 px; the proposal store becomes the EdgeBoxes store of the tiny set (fixture
   ``tiny_edgeboxes_store``, same ``StoreProposals`` class) or, for another method (DETReg's Selective Search),
   ``OnlineProposals`` of that method; batch 2, no workers;
3. builds model, optimizer (``cfg.optimizer.params.model = model``) and gradient clipping as
   ``tools/lazyconfig_train_net.py`` does, takes ONE batch of ``instantiate(cfg.dataloader.train)``, runs the
   forward in train mode under detectron2's ``EventStorage`` and checks that every loss is a finite scalar
   tensor and that every loss named in ``model.weight_dict`` is computed;
4. backpropagates the sum and checks that EVERY trainable parameter (transformer, input projections, class /
   box heads, pretext heads, and the trainable backbone stages of the finetune models) received a gradient
   (not None), then steps the optimizer and checks that at least one parameter changed.

No parameter is exempted from the gradient check; the ones that get none by design are not trainable or do
not exist in these models (see :func:`_trainable_parameters_without_gradient`).
"""
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.events import EventStorage
from omegaconf import ListConfig

from siamese_detr.data.detr_mapper import detr_crop_augmentation, detr_train_augmentation
from siamese_detr.data.proposals.sources import OnlineProposals, StoreProposals
from siamese_detr.data.up_detr_mapper import up_detr_augmentation
from siamese_detr.engine import add_gradient_clipping
from siamese_detr.modeling.meta_arch.pretext_detr import PretextDETR

from test_configs import CONFIGS, ROOT, _tiny_model_overrides

FULL_SCALE_CONFIGS = [c for c in CONFIGS if not c.startswith("configs/demo/")]

TINY_DATASET = "synthetic_shapes_train"
SHORT_SIDES = [96, 112, 128]  # every final resize (DETR's plain branch and the end of its crop branch)
MAX_SIZE = 192
CROP_RESIZE_SIDES = [128, 160]  # DETR's crop branch: resize to one of these, random crop, resize again
CROP_RANGE = [96, 128]  # the random crop's sides (absolute_range)
CROP_SIZE = 64  # region crops (Siamese DETR), query patches (UP-DETR), proposal crops (DETReg)
BATCH_SIZE = 2  # the SimSiam heads' per-view batch norm of Siamese DETR needs >= 2 images
SEED = 0


def test_every_full_scale_family_is_covered():
    families = {Path(c).parts[1] for c in FULL_SCALE_CONFIGS}
    assert {"detr", "siamese_detr", "up_detr", "detreg"} <= families


# ------------------------------------------------------------------------------------------------ tiny data
def _name(node) -> str:
    """Short name of a LazyCall's target (a class / function object, or its dotted path)."""
    target = node["_target_"]
    return (target if isinstance(target, str) else target.__name__).rsplit(".", 1)[-1]


def _shrink_augmentation_list(augmentations) -> None:
    """In place: a list of ``L(T.RandomFlip)`` / ``L(T.ResizeShortestEdge)`` / ``L(T.RandomCrop)`` at tiny sizes.
    A resize followed by a crop (DETR's crop branch) gets ``CROP_RESIZE_SIDES`` and keeps its (absent) max
    size, every other resize ``SHORT_SIDES`` / ``MAX_SIZE``, the crop ``CROP_RANGE``."""
    names = [_name(a) for a in augmentations]
    unknown = set(names) - {"RandomFlip", "ResizeShortestEdge", "RandomCrop"}
    assert not unknown, f"augmentation {sorted(unknown)}: teach this test how to shrink it"
    for k, (name, aug) in enumerate(zip(names, augmentations)):
        if name == "ResizeShortestEdge" and "RandomCrop" in names[k + 1:]:
            aug.short_edge_length = CROP_RESIZE_SIDES
        elif name == "ResizeShortestEdge":
            aug.short_edge_length, aug.max_size = SHORT_SIDES, MAX_SIZE
        elif name == "RandomCrop":
            assert aug.crop_type == "absolute_range", aug
            aug.crop_size = CROP_RANGE


def _shrink_augmentation_call(call) -> None:
    """In place: ``L(detr_train_augmentation / detr_crop_augmentation / up_detr_augmentation)(...)`` at tiny sizes
    (other arguments, e.g. ``flip=False`` of the UP-DETR COCO configs, kept)."""
    name = _name(call)
    assert name in ("detr_train_augmentation", "detr_crop_augmentation", "up_detr_augmentation"), \
        f"augmentation function {name}: teach this test how to shrink it"
    call.min_sizes, call.max_size = SHORT_SIDES, MAX_SIZE
    if name == "detr_crop_augmentation":
        call.crop_resize_sizes, call.crop_size_range = CROP_RESIZE_SIDES, CROP_RANGE


def _shrink_mapper_augmentation(mapper) -> None:
    """The mapper's augmentation at tiny sizes, with the same transforms / functions as the config's."""
    for key in ("augmentation", "augmentation_with_crop"):
        augs = mapper.get(key)
        if isinstance(augs, (list, tuple, ListConfig)):
            _shrink_augmentation_list(augs)
        elif augs is not None:
            _shrink_augmentation_call(augs)
    if mapper.get("augmentation") is not None:
        return
    # None: the mapper's default (official sizes) -> the functions that default calls, at tiny sizes
    if _name(mapper) == "UPDETRMapper":  # default up_detr_augmentation()
        mapper.augmentation = L(up_detr_augmentation)(min_sizes=SHORT_SIDES, max_size=MAX_SIZE)
    elif _name(mapper) == "DETRegMapper":  # default detreg_augmentations(): (train, crop) branches
        assert mapper.get("augmentation_with_crop") is None
        mapper.augmentation = L(detr_train_augmentation)(min_sizes=SHORT_SIDES, max_size=MAX_SIZE)
        mapper.augmentation_with_crop = L(detr_crop_augmentation)(
            min_sizes=SHORT_SIDES, max_size=MAX_SIZE, crop_resize_sizes=CROP_RESIZE_SIDES, crop_size_range=CROP_RANGE
        )


def _tiny_proposal_source(source, request):
    """A local source of the config's proposal method: the tiny set's EdgeBoxes store (same ``StoreProposals``
    class as the config), or ``OnlineProposals`` of the method when there is no tiny store of it."""
    assert _name(source) == "StoreProposals", f"proposal source {_name(source)}: teach this test its tiny stand-in"
    parts = os.path.basename(os.path.normpath(source.path)).split(".")  # NAME.METHOD.proposals
    method = parts[-2] if len(parts) >= 3 else "edgeboxes"
    if method == "edgeboxes":
        store = request.getfixturevalue("tiny_edgeboxes_store")
        return L(StoreProposals)(path=str(store), dataset=TINY_DATASET)
    assert method == "selective_search", f"proposal method {method}: teach this test its tiny stand-in"
    # on a copy of short side 128, as the configs' stores (tools/generate_proposals.py --ss-resize 128)
    return L(OnlineProposals)(method=method, resize=128, image_format=source.get("image_format", "BGR"))


def _tiny_data(cfg, request) -> None:
    """Point ``cfg.dataloader.train`` at the tiny built-in set at tiny sizes; mapper class and policy kept."""
    train = cfg.dataloader.train
    train.dataset.names = TINY_DATASET
    train.total_batch_size = BATCH_SIZE
    train.num_workers = 0
    mapper = train.mapper
    name = _name(mapper)
    if name == "SiameseViewMapper":
        mapper.short_side_range = (SHORT_SIDES[0], SHORT_SIDES[-1])
        mapper.max_size = MAX_SIZE
        mapper.crop_size = CROP_SIZE
    elif name in ("DetrDatasetMapper", "UPDETRMapper", "DETRegMapper"):
        _shrink_mapper_augmentation(mapper)
        if name == "UPDETRMapper":
            mapper.patch_size = CROP_SIZE
        if name == "DETRegMapper":
            mapper.crop_size = CROP_SIZE
    else:
        raise AssertionError(f"mapper {name}: teach this test how to make its data tiny")
    if mapper.get("proposal_source") is not None:
        mapper.proposal_source = _tiny_proposal_source(mapper.proposal_source, request)


def _batch_images(batch):
    """Every image tensor the model receives: the views of Siamese DETR, else the image of each sample."""
    return [v["image"] for x in batch for v in x.get("views", [x])]


# ------------------------------------------------------------------------------------------ gradient check
def _trainable_parameters_without_gradient(model):
    """Names of the parameters with ``requires_grad`` whose ``.grad`` is None after ``backward``.

    None is exempted. What gets no gradient by design is not trainable or not built in these models:

    * the frozen backbones: ``PretextDETR.__init__`` passes ``frozen_modules=("backbone",)`` and
      ``DETR.__init__`` calls ``requires_grad_(False)`` on it (Siamese DETR, UP-DETR, DETReg); the finetune
      configs' ``freeze_at=2`` freezes stem and res2 the same way (detectron2 ``ResNet.freeze``). Their
      trainable res3-res5 ARE checked (res5 feeds every model; res3 / res4 feed it).
    * hybrid matching's one-to-many queries: ``DETR.__init__`` builds ``query_embed_one2many`` only when
      ``num_queries_one2many > 0``, which no config sets.
    * Conditional DETR's ``query_scale`` (used from the second decoder layer on): ``conditional.py`` builds it
      only with more than one decoder layer, and ``ca_qpos_proj`` only in the first layer, which is used.
    * two-stage Deformable DETR has no ``query_embed`` (``learned_queries`` False), and its encoder-proposal
      heads are trained by the ``_enc`` losses.

    Parameters whose gradient is an all-zero tensor at the first step pass (e.g. Deformable DETR's zero-
    initialised ``sampling_offsets`` weights leave ``level_embed`` without signal, the zero-initialised last
    box layer the earlier ones, the zero target of the first decoder layer its self-attention): they are used,
    and move with the first update.
    """
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.usefixtures("restore_dataset_catalog")
@pytest.mark.parametrize("config_file", FULL_SCALE_CONFIGS)
def test_config_trains_one_step(config_file, tiny_synthetic_shapes, request):
    """One optimizer step of ``config_file``'s (shrunk) model on one batch of ``config_file``'s own mapper: the
    losses are finite scalars and cover ``weight_dict``, every trainable parameter gets a gradient, the step
    changes the model. See the module docstring for what is made tiny and why."""
    torch.manual_seed(SEED)
    np.random.seed(SEED)  # detectron2's sampler seed and augmentations draw from np.random
    cfg = _tiny_model_overrides(LazyConfig.load(str(ROOT / config_file)))
    _tiny_data(cfg, request)

    # as tools/lazyconfig_train_net.py do_train (on CPU: the tiny model is checked, not the device)
    model = instantiate(cfg.model)
    model.to("cpu")
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    clip = cfg.train.get("clip_grad", None)
    if clip is not None:
        add_gradient_clipping(optimizer, clip.max_norm, clip.get("norm_type", 2.0), amp=False)
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert len(batch) == BATCH_SIZE
    sizes = [tuple(image.shape[-2:]) for image in _batch_images(batch)]
    assert all(max(s) <= MAX_SIZE for s in sizes), f"{config_file}: the data was not made tiny: {sizes}"
    if isinstance(model, PretextDETR):
        assert not any(p.requires_grad for p in model.backbone.parameters()), "pretraining backbone not frozen"

    model.train()
    with EventStorage(0):
        losses = model(batch)
    assert isinstance(losses, dict) and losses, f"{config_file}: the model returned no losses: {losses!r}"
    bad = {k: v for k, v in losses.items()
           if not (isinstance(v, torch.Tensor) and v.dim() == 0 and bool(torch.isfinite(v)))}
    assert not bad, f"{config_file}: losses that are not finite scalar tensors: {bad}"
    computed = {re.sub(r"_(\d+|enc)$", "", k) for k in losses}  # auxiliary / encoder copies -> base name
    never = sorted(set(cfg.model.weight_dict) - computed)
    assert not never, f"{config_file}: weight_dict weights losses the model never computes: {never}"

    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert before, f"{config_file}: the model has no trainable parameter"
    optimizer.zero_grad()
    sum(losses.values()).backward()
    missing = _trainable_parameters_without_gradient(model)
    assert not missing, f"{config_file}: trainable parameters without a gradient: {missing}"
    optimizer.step()
    changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(p.detach(), before[n])]
    assert changed, f"{config_file}: the optimizer step changed no parameter"
