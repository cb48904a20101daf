"""Building blocks of the pretext tasks: Siamese DETR (paper §3.3), UP-DETR query groups, DETReg embeddings.

* :mod:`.region_features` — object-level region features z (Eq. 4), crop-level features p (Eq. 5)
  and the region-conditioned object queries of Multi-View Cross-Attention (Eq. 6-7);
* :mod:`.simsiam` — the SimSiam projector / predictor of the global discrimination task, with
  batch norm synchronised across processes;
* :mod:`.losses` — L_g (Eq. 11), L_r (Eq. 12) as pure functions on tensors;
* :mod:`.query_groups` — UP-DETR's block-diagonal decoder self-attention mask (UP-DETR Eq. 3) and patch
  feature dropout;
* :mod:`.embedding_loss` — DETReg's object-embedding loss L_emb (DETReg Eq. 4).
"""

from .embedding_loss import object_embedding_loss
from .losses import (
    global_discrimination_loss,
    negative_cosine_similarity,
    normalized_l2_distance,
    region_discrimination_loss,
)
from .region_features import (
    average_pooled_roi_features,
    concatenated_average_pool,
    masked_average_pool,
    region_conditioned_queries,
)
from .query_groups import group_attention_mask, query_feature_dropout
from .simsiam import SimSiamPredictor, SimSiamProjector, SyncBatchNorm1d

__all__ = [
    "SimSiamPredictor",
    "SimSiamProjector",
    "SyncBatchNorm1d",
    "average_pooled_roi_features",
    "concatenated_average_pool",
    "global_discrimination_loss",
    "group_attention_mask",
    "masked_average_pool",
    "negative_cosine_similarity",
    "normalized_l2_distance",
    "object_embedding_loss",
    "query_feature_dropout",
    "region_conditioned_queries",
    "region_discrimination_loss",
]
