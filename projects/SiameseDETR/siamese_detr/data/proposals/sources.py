"""Proposal sources for the two-view mapper: a stored run, an online method, or random boxes.

Each source is a callable ``source(dataset_dict, image) -> (boxes, scores)`` where ``image`` is the decoded
HxWx3 uint8 image in the mapper's ``image_format`` ("BGR" by default, "RGB" accepted) and the result is
``boxes`` float32 [K, 4] xyxy ABSOLUTE pixels of the ORIGINAL (un-resized) image, ``scores`` float32 [K],
in the method's score order (best first).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .methods import compute_proposals, random_boxes, stable_seed
from .store import ProposalStore

__all__ = ["StoreProposals", "OnlineProposals", "RandomProposals"]


class StoreProposals:
    """Look proposals up in a :class:`ProposalStore` by ``str(dataset_dict["image_id"])``.

    The store is opened lazily in each process (data-loader workers fork/spawn after construction), so the
    object is cheap to pickle. ``dataset`` (optional name or dicts) is checked once at the first open.
    """

    def __init__(self, path: str, dataset=None, validate: bool = True):
        self.path, self.dataset, self.validate = path, dataset, validate
        self._store: Optional[ProposalStore] = None

    @property
    def store(self) -> ProposalStore:
        if self._store is None:
            self._store = ProposalStore.open(self.path, dataset=self.dataset, validate=self.validate)
        return self._store

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"] = None  # memory maps are re-opened in the worker
        return state

    def __call__(
        self, dataset_dict: dict, image: Optional[np.ndarray] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        return self.store.get(dataset_dict["image_id"])


class OnlineProposals:
    """Compute proposals on the fly with :func:`compute_proposals` (EdgeBoxes or Selective Search).

    Args:
        method: "edgeboxes" or "selective_search"; max_boxes: None = the method's default.
        image_format: channel order of the images the mapper passes ("BGR" or "RGB").
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
            raise ValueError(
                f"OnlineProposals method must be 'edgeboxes' or 'selective_search', got {method!r}"
            )
        self.method, self.max_boxes, self.image_format, self.kwargs = (
            method,
            max_boxes,
            image_format,
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
    so every worker and process draws the same boxes for the same image."""

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
