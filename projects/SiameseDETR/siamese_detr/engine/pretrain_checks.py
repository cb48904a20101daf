"""Start-up checks of a training run that catch a wasted pretraining before its first iteration.

A pretext model (Siamese DETR, UP-DETR, DETReg) keeps its backbone frozen: it learns against the features
of a backbone pretrained elsewhere (SwAV in the official Siamese DETR configs: ``pretrained=
'data/model_zoo/resnet/swav_800ep_pretrain_oss.pth.tar'`` with ``freeze_backbone=True``). Started without
``train.init_checkpoint`` that backbone stays random and every iteration is spent on meaningless features,
so :func:`check_backbone_initialised` refuses it unless the model says ``allow_random_backbone=True`` (the
CPU demo, which cannot download weights). A checkpoint that is given but holds no (or not every) backbone
tensor of the model, e.g. one of another backbone width, is as bad: :func:`check_backbone_loaded` refuses it
after the load. The same holds for a finetuning model whose first backbone stages are frozen (a ResNet with
``freeze_at=2``, as DETR): those stages would stay random without weights from a checkpoint.
"""

import os
from typing import Iterable, List, Optional

from torch import nn

from ..utils.user_errors import UserError

__all__ = ["RandomBackboneError", "has_frozen_backbone", "frozen_backbone_parameters", "check_backbone_initialised",
           "check_backbone_loaded", "check_proposal_store"]


class RandomBackboneError(UserError, RuntimeError):
    """A frozen backbone would train from random weights."""


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or the model itself)."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def has_frozen_backbone(model: nn.Module) -> bool:
    """True when ``model.backbone`` exists and is frozen: named in ``model.frozen_modules`` or none of its
    parameters requires a gradient."""
    model = _unwrap(model)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        return False
    if "backbone" in tuple(getattr(model, "frozen_modules", ()) or ()):
        return True
    params = list(backbone.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def frozen_backbone_parameters(model: nn.Module) -> List[str]:
    """Names (``backbone.<name>``) of the backbone parameters that never train: all of them when the backbone
    is frozen (:func:`has_frozen_backbone`), else those that do not require a gradient (e.g. the stem and res2
    of a finetuning ResNet, ``freeze_at=2``); ``[]`` without a backbone."""
    model = _unwrap(model)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        return []
    everything = has_frozen_backbone(model)
    return [f"backbone.{n}" for n, p in backbone.named_parameters() if everything or not p.requires_grad]


def check_backbone_initialised(model: nn.Module, init_checkpoint: Optional[str], resuming: bool = False) -> None:
    """Raise :class:`RandomBackboneError` when ``model`` has a frozen backbone, or frozen backbone stages, that
    nothing initialises.

    Args:
        model: the instantiated model (a DDP wrapper is looked through).
        init_checkpoint: ``cfg.train.init_checkpoint`` (empty / None = no weights loaded).
        resuming: True when the run resumes from its own last checkpoint (which holds the backbone).

    Passes when no backbone parameter is frozen, when a checkpoint is given or resumed from, or when
    ``model.allow_random_backbone`` is True.
    """
    if resuming or (init_checkpoint and str(init_checkpoint).strip()):
        return
    frozen = frozen_backbone_parameters(model)
    if not frozen or getattr(_unwrap(model), "allow_random_backbone", False):
        return
    if not has_frozen_backbone(model):  # a finetuning ResNet whose first stages are frozen (freeze_at)
        total = sum(1 for _ in _unwrap(model).backbone.parameters())
        raise RandomBackboneError(
            f"{type(_unwrap(model)).__name__} freezes {len(frozen)} of its backbone's {total} parameters (e.g. "
            f"{frozen[:2]}; model.backbone.freeze_at) but train.init_checkpoint is empty: they would stay random "
            "for the whole run (DETR and its variants finetune from an ImageNet or SwAV ResNet-50). Convert one "
            "with\n    python tools/convert_checkpoint.py --input swav_800ep_pretrain.pth.tar --output "
            "swav_r50_d2.pth\nand pass train.init_checkpoint=swav_r50_d2.pth (or a pretraining's model_final.pth, "
            "which holds its backbone); to train the whole backbone from random weights on purpose, set "
            "model.backbone.freeze_at=0 (as configs/demo/detr_demo.py)."
        )
    raise RandomBackboneError(
        f"{type(_unwrap(model)).__name__} has a FROZEN backbone but train.init_checkpoint is empty: it would "
        "train against random features. The demo configs' narrow ResNet-18 takes the checkpoint of make demo's "
        "backbone stage: train.init_checkpoint=output/demo/backbone/model_final.pth. For a ResNet-50 config, "
        "convert pretrained weights (SwAV as the official Siamese DETR, or torchvision ImageNet) with\n"
        "    python tools/convert_checkpoint.py --input swav_800ep_pretrain.pth.tar --output swav_r50_d2.pth\n"
        "and pass train.init_checkpoint=swav_r50_d2.pth. Only for a demo or test that means it, set "
        "model.allow_random_backbone=True (+model.allow_random_backbone=True where the config does not set "
        "the key)."
    )


def check_backbone_loaded(model: nn.Module, loaded_names: Optional[Iterable[str]], checkpoint: str) -> None:
    """After loading ``checkpoint``: raise :class:`RandomBackboneError` when ``model`` has frozen backbone
    parameters (:func:`frozen_backbone_parameters`: a frozen backbone, or frozen stages) and does not allow a
    random backbone, and some of them were not in the checkpoint (``loaded_names``: the model tensors the load
    gave, ``SafeDetectionCheckpointer.loaded_names``; None = nothing loaded)."""
    model = _unwrap(model)
    names = frozen_backbone_parameters(model)
    if not names or getattr(model, "allow_random_backbone", False):
        return
    loaded = set(loaded_names or ())
    missing = [n for n in names if n not in loaded]
    if not missing:
        return
    what = "a FROZEN backbone" if has_frozen_backbone(model) else "frozen backbone stages (model.backbone.freeze_at)"
    stays = (f"{type(model).__name__} has {what}, but {len(missing)} of its {len(names)} frozen parameters are not "
             f"in train.init_checkpoint={checkpoint} (by name and shape; e.g. {missing[:3]}): they would stay random "
             "for the whole run.")
    official = _official_layout_hint(model, checkpoint)
    if official:
        raise RandomBackboneError(f"{official}. {stays}")
    raise RandomBackboneError(
        f"{stays} Is it the checkpoint of another backbone (depth, width) or layout? The log lists what was "
        "skipped; convert a torchvision/SwAV ResNet with tools/convert_checkpoint.py."
    )


def _official_layout_hint(model: nn.Module, checkpoint: str) -> Optional[str]:
    """The conversion command for a ``checkpoint`` file whose keys follow an official release's layout
    (:func:`~siamese_detr.engine.load_summary.official_layout_hint`), ``--for-pretraining`` for a pretraining
    model; ``None`` for any other (or unreadable) file. Reads the file's names again: only on the error path."""
    from .load_summary import checkpoint_file_keys, is_pretraining_model, official_layout_hint

    keys = checkpoint_file_keys(checkpoint)
    if not keys:
        return None
    return official_layout_hint(keys, checkpoint, is_pretraining_model(model.state_dict()))


def check_proposal_store(cfg) -> None:
    """Before training: open the proposal store of ``dataloader.train.mapper.proposal_source`` (a
    ``StoreProposals``) once, with its checks against the dataset, so that a missing or mismatched store stops
    the run at start-up rather than in the first data-loader worker. Raises ``ProposalStoreError``."""
    from detectron2.config import instantiate
    from omegaconf import OmegaConf

    source_cfg = OmegaConf.select(cfg, "dataloader.train.mapper.proposal_source", default=None)
    if source_cfg is None or "StoreProposals" not in str(source_cfg.get("_target_", "")):
        return
    from siamese_detr.data.proposals import ProposalStoreError

    source = instantiate(source_cfg)
    key = "dataloader.train.mapper.proposal_source"
    if os.path.isfile(source.path):
        raise ProposalStoreError(
            f"proposal store {source.path!r} ({key}.path) is a file: a store is the folder that "
            "tools/generate_proposals.py --output wrote (meta.json, image_ids.json, boxes.npy, ...)"
        )
    checked, trained = source_cfg.get("dataset", None), OmegaConf.select(cfg, "dataloader.train.dataset.names")
    other_images = isinstance(checked, str) and isinstance(trained, str) and checked != trained
    if not os.path.isdir(source.path):  # the command that makes it, with the training images of the config
        also = (f"\nand set {key}.dataset={trained} (it is {checked}: the store is checked against it)"
                if other_images else "")
        raise ProposalStoreError(
            f"proposal store {source.path!r} ({key}.path) does not exist; "
            f"create it with\n    {source.generate_command(_train_images_flag(cfg))}{also}"
        )
    try:
        source.store  # noqa: B018  (opening runs the checks)
    except ProposalStoreError as err:
        if other_images:
            raise ProposalStoreError(
                f"{err} (The store is checked against {key}.dataset={checked}, not the training images "
                f"dataloader.train.dataset.names={trained}: for a store of the training images, set "
                f"{key}.dataset={trained}.)"
            ) from err
        raise
    if other_images:
        _check_store_has_training_images(source, trained, checked, key, cfg)


def _check_store_has_training_images(source, trained: str, checked: str, key: str, cfg) -> None:
    """The store fits ``{key}.dataset`` but training reads another dataset (e.g. the training images changed
    to one's own and the store left at the demo's): every training image must be in it too, else the first
    data-loader worker would fail after the start with an advice that names neither key."""
    from detectron2.data import DatasetCatalog

    from siamese_detr.data.datasets import ensure_dataset
    from siamese_detr.data.proposals import ProposalStoreError

    ensure_dataset(trained)
    try:
        source.store.check_dataset(trained)
    except ProposalStoreError as err:
        known = set(source.store.image_ids)  # and the images the store recorded as skipped (unreadable)
        known |= {str(s.get("image_id")) for s in source.store.meta.get("skipped", []) if isinstance(s, dict)}
        missing = [str(d["image_id"]) for d in DatasetCatalog.get(trained) if str(d["image_id"]) not in known]
        if not missing:  # e.g. the same ids at other sizes: the store's own message says what differs
            raise
        raise ProposalStoreError(
            f"the proposal store {source.path} ({key}.path) is the store of {key}.dataset={checked}, but "
            f"training reads dataloader.train.dataset.names={trained}, and {len(missing)} of its images are not "
            f"in the store (first: {missing[:3]}). Point {key}.path to a store of the training images and set "
            f"{key}.dataset={trained}; make the store with\n    "
            f"{source.generate_command(_train_images_flag(cfg)).replace(source.path, 'NEW_STORE')}"
        ) from err


def _train_images_flag(cfg) -> Optional[str]:
    """``--dataset NAME`` or ``--image-dir DIR`` of ``tools/generate_proposals.py`` for the training images of
    ``cfg`` (a dataset name, or a lazily registered folder with its ``image_root``); None when not clear."""
    from omegaconf import OmegaConf

    names = OmegaConf.select(cfg, "dataloader.train.dataset.names", default=None)
    if isinstance(names, str):
        return f"--dataset {names}"
    if hasattr(names, "get") and isinstance(names.get("image_root"), str):
        return f"--image-dir {names.get('image_root')}"
    return None
