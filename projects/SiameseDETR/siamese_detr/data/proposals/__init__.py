"""Object proposals: methods (EdgeBoxes, Selective Search, random), the on-disk store, sources for the mapper.

Boxes are float32 [K, 4] xyxy in absolute pixels of the original image, best score first, everywhere (methods,
store, sources), except :func:`~.methods.intersection_random_boxes`, which draws float64 regions in a view's
pixels for the two-view mapper. Which method each pretext task uses: Siamese DETR EdgeBoxes, DETReg Selective
Search, UP-DETR random boxes (Siamese DETR paper §4.1 "Pretraining").
"""

from .detectron2_format import export_detectron2, import_detectron2
from .methods import (
    METHODS,
    compute_proposals,
    edgeboxes,
    gradient_edge_map,
    random_boxes,
    selective_search,
    stable_seed,
)
from .selection import POLICIES, importance_probabilities, select_proposals
from .sources import AnnotationProposals, OnlineProposals, RandomProposals, StoreProposals
from .store import FORMAT_VERSION, ProposalStore, ProposalStoreError, StoreWriter, merge_stores, write_store

__all__ = [
    "METHODS",
    "POLICIES",
    "importance_probabilities",
    "select_proposals",
    "FORMAT_VERSION",
    "ProposalStore",
    "ProposalStoreError",
    "StoreWriter",
    "write_store",
    "merge_stores",
    "compute_proposals",
    "edgeboxes",
    "selective_search",
    "random_boxes",
    "gradient_edge_map",
    "stable_seed",
    "StoreProposals",
    "OnlineProposals",
    "RandomProposals",
    "AnnotationProposals",
    "export_detectron2",
    "import_detectron2",
]
