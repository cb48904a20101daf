"""Proposal sources for the two-view mapper: a stored run, an online method, random boxes, or (a diagnostic
that reads the labels) the annotated boxes.

Each source is a callable ``source(dataset_dict, image) -> (boxes, scores)`` where ``image`` is the decoded
HxWx3 uint8 image in the mapper's ``image_format`` ("BGR" by default, "RGB" accepted) and the result is
``boxes`` float32 [K, 4] xyxy ABSOLUTE pixels of the ORIGINAL (un-resized) image, ``scores`` float32 [K],
in the method's score order (best first).
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

import numpy as np
from detectron2.structures import BoxMode

from ..image_io import check_image_format
from .methods import compute_proposals, random_boxes, stable_seed
from .store import REGENERATE_HINT, ProposalStore, ProposalStoreError
from ...utils.user_errors import UserKeyError, UserValueError

logger = logging.getLogger(__name__)

__all__ = ["StoreProposals", "OnlineProposals", "RandomProposals", "AnnotationProposals"]

# The flags the project's stores of a method are made with (datasets/README.md, 'Proposal stores'): the only
# Selective Search stores are DETReg's, on a copy of short side 128 (the official squashes to 128 x 128; see
# configs/common/data/pretrain_peers.py). The configs name the store's path only, so the hint takes them here.
STORE_FLAGS = {"selective_search": "--ss-resize 128"}


class StoreProposals:
    """Look proposals up in a :class:`ProposalStore` by ``str(dataset_dict["image_id"])``.

    The store is opened lazily in each process (data-loader workers fork/spawn after construction), so the
    object is cheap to pickle. ``dataset`` (optional name or dicts) is checked once at the first open;
    ``method`` (optional, e.g. "edgeboxes") must be the store's method. Every image's decoded size must be the
    size recorded in the store (else :class:`ProposalStoreError`: the images changed since generation). A
    store made with ``--image-dir`` from another folder than the one the images are read from is refused,
    unless ``allow_other_folder=True`` (a copy of the same files, e.g. on a local disk).
    """

    def __init__(self, path: str, dataset=None, validate: bool = True, method: Optional[str] = None,
                 allow_other_folder: bool = False):
        self.path, self.dataset, self.validate, self.method = path, dataset, validate, method
        self.allow_other_folder = allow_other_folder
        self._store: Optional[ProposalStore] = None
        self._folder_checked = False

    def generate_command(self, images: Optional[str] = None) -> str:
        """The ``tools/generate_proposals.py`` command that makes this store (method from ``method`` or the
        ``NAME.METHOD.proposals`` folder name, else EdgeBoxes as the official code). ``images``: its
        ``--dataset NAME`` / ``--image-dir DIR`` part when known from elsewhere (the training config), else
        from ``dataset``, else a placeholder. The method's flags of ``STORE_FLAGS`` are added (Selective Search:
        ``--ss-resize 128``, as the DETReg stores of datasets/README.md)."""
        from .methods import METHODS

        parts = os.path.basename(os.path.normpath(self.path)).split(".")
        method = self.method or (parts[-2] if len(parts) >= 3 and parts[-2] in METHODS else "edgeboxes")
        source = images or (f"--dataset {self.dataset}" if isinstance(self.dataset, str) else "--image-dir IMAGE_DIR")
        flags = f" {STORE_FLAGS[method]}" if method in STORE_FLAGS else ""
        command = f"python tools/generate_proposals.py {source} --method {method}{flags} --output {self.path}"
        if method == "edgeboxes":
            command += ("\n(EdgeBoxes as the paper: add --sed-model model.yml.gz, OpenCV's Structured Edge model, "
                        "see datasets/README.md 'Proposal stores (pretraining)'; without it edges come from image "
                        "gradients, as in the demos)")
        return command

    @property
    def store(self) -> ProposalStore:
        if self._store is None:
            if not os.path.exists(self.path):  # a file is named as such by ProposalStore.open
                raise ProposalStoreError(
                    f"proposal store {self.path!r} (dataloader.train.mapper.proposal_source.path) does not exist; "
                    f"create it with\n    {self.generate_command()}"
                )
            store = ProposalStore.open(self.path, dataset=self.dataset, validate=self.validate)
            if self.method is not None and store.method != self.method:
                raise ProposalStoreError(
                    f"{self.path} holds {store.method!r} proposals, the config asks for {self.method!r}: point the "
                    f"config to a {self.method} store or {REGENERATE_HINT}"
                )
            _warn_if_full_size_selective_search(store, self.path)
            self._store = store
        return self._store

    def _check_folder(self, file_name: Optional[str]) -> None:
        self._folder_checked = True
        made_from = self.store.meta.get("dataset")
        if not (file_name and isinstance(made_from, str) and os.path.isabs(made_from)):
            return
        made_from, here = os.path.realpath(made_from), os.path.realpath(file_name)
        if os.path.commonpath([here, made_from]) == made_from:
            return
        if not self.allow_other_folder:
            raise ProposalStoreError(
                f"{self.path} was generated from the images in {made_from}, but the images are read from "
                f"{os.path.dirname(here)}: {REGENERATE_HINT}; or, if these are a copy of the same files, add "
                "+dataloader.train.mapper.proposal_source.allow_other_folder=True"
            )
        logger.warning("%s was generated from %s, the images are read from %s (allow_other_folder=True); image "
                       "sizes are still checked", self.path, made_from, os.path.dirname(here))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"] = None  # memory maps are re-opened in the worker
        return state

    def __call__(
        self, dataset_dict: dict, image: Optional[np.ndarray] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        if not self._folder_checked:
            self._check_folder(dataset_dict.get("file_name"))
        result = self.store.get(dataset_dict["image_id"])
        if image is not None:
            self.store.check_image(dataset_dict["image_id"], image.shape[:2], dataset_dict.get("file_name"))
        return result


def _warn_if_full_size_selective_search(store: ProposalStore, path: str) -> None:
    """Warn when a Selective Search store was computed at full size (meta.json ``params.resize`` None): the
    DETReg configs expect ``--ss-resize 128`` stores, whose boxes are far fewer and coarser."""
    params = store.meta.get("params") or {}
    if store.method == "selective_search" and isinstance(params, dict) and params.get("resize") is None:
        logger.warning(
            "%s holds Selective Search proposals computed on the full-size images (its meta.json records "
            "params.resize = None); the DETReg configs and datasets/README.md make them with --ss-resize 128 "
            "(as DETReg's 128 x 128). If that is not intended, regenerate it: tools/generate_proposals.py with "
            "the same --dataset / --image-dir and --output, --method selective_search --ss-resize 128 --overwrite",
            path)


# where OnlineProposals' image_format comes from: the configs interpolate the mapper's (pretrain_builtin.py)
_FORMAT_KEY = ("OnlineProposals: image_format (dataloader.train.mapper.proposal_source.image_format, which the configs "
               "set to the mapper's dataloader.train.mapper.image_format)")


class OnlineProposals:
    """Compute proposals on the fly with :func:`compute_proposals` (EdgeBoxes or Selective Search): float32
    ``[K, 4]`` xyxy absolute pixels of the image passed in (the decoded original), scores ``[K]`` best first.

    Args:
        method: "edgeboxes" or "selective_search"; max_boxes: None = the method's default.
        image_format: channel order of the images the mapper passes ("BGR" or "RGB"; another value raises
            ``UserValueError``).
        **method_kwargs: e.g. ``resize=128`` for Selective Search, ``sed_model=...`` for EdgeBoxes.
    """

    def __init__(
        self,
        method: str = "edgeboxes",
        max_boxes: Optional[int] = None,
        image_format: str = "BGR",
        **method_kwargs,
    ):
        if method not in ("edgeboxes", "selective_search"):
            raise UserValueError(
                f"OnlineProposals method must be 'edgeboxes' or 'selective_search', got {method!r}"
            )
        self.method, self.max_boxes, self.image_format, self.kwargs = (
            method,
            max_boxes,
            check_image_format(image_format, _FORMAT_KEY),
            method_kwargs,
        )

    def __call__(self, dataset_dict: dict, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image = image[:, :, :3]
        if self.image_format == "RGB":
            image = image[:, :, ::-1]
        return compute_proposals(image, self.method, self.max_boxes, **self.kwargs)


class RandomProposals:
    """``num_boxes`` uniformly random boxes (see :func:`random_boxes`), seeded by ``stable_seed(image_id, seed)``
    so every worker and process draws the same boxes for the same image: float32 ``[num_boxes, 4]`` xyxy
    absolute pixels of the decoded image (or of the dict's ``height`` x ``width`` without an image), scores
    ``(K - rank) / K``."""

    def __init__(self, num_boxes: int = 512, seed: int = 0, min_size: int = 8):
        self.num_boxes, self.seed, self.min_size = num_boxes, seed, min_size

    def __call__(
        self, dataset_dict: dict, image: Optional[np.ndarray] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        if image is not None:
            height, width = image.shape[:2]
        else:
            height, width = int(dataset_dict["height"]), int(dataset_dict["width"])
        seed = stable_seed(dataset_dict["image_id"], self.seed)
        return random_boxes(height, width, self.num_boxes, seed=seed, min_size=self.min_size)


class AnnotationProposals:
    """The image's annotated boxes as its proposals: an ORACLE for diagnostics, not a proposal method.

    A pretraining with this source reads the labels (boxes, not classes), so it is no longer label-free; it
    measures what the pretext gives when its regions are exactly the objects (e.g.
    ``configs/demo/demo_siamese_pretrain_oracle_regions.py``). The dataset dicts must keep their
    ``annotations`` (the demo's label-free loader, ``unlabelled_dicts``, drops them).

    Returns the non-crowd boxes converted to float32 ``[K, 4]`` xyxy absolute pixels of the original image (any
    ``bbox_mode``), in annotation order, with scores float32 ``[K]`` all 1; an image without annotations gets
    ``[0, 4]``.
    """

    def __call__(
        self, dataset_dict: dict, image: Optional[np.ndarray] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        if "annotations" not in dataset_dict:
            raise UserKeyError(
                f"AnnotationProposals: the dataset dict of image_id {dataset_dict.get('image_id')!r} has no "
                "'annotations'; this oracle source needs labelled dicts (e.g. dataloader.train.dataset = "
                "L(get_detection_dataset_dicts)(names=..., filter_empty=False)), not unlabelled_dicts"
            )
        boxes = [
            BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            for a in dataset_dict["annotations"]
            if not a.get("iscrowd", 0)
        ]
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        return boxes, np.ones(len(boxes), dtype=np.float32)
