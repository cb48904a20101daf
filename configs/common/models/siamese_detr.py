"""Siamese DETR pretraining model built from any finetune model config (Vanilla, Conditional, Deformable).

``siamese_detr_from(detr_model)`` reuses the finetune model's backbone, feature levels, position encoding
(with the official Siamese DETR's offset 0), transformer, number of queries, criterion (its class loss and
matcher, with one objectness class) and post-processing, so the pretraining checkpoint loads into that
finetune model through ``train.init_checkpoint`` with no conversion (the class head is skipped for its shape,
the pretext heads ``region_proj`` / ``sem_embed`` / ``projector`` / ``predictor`` are reported unused).
"""
import copy

from siamese_detr.modeling.meta_arch.siamese_detr import SiameseDETRPretrain
from siamese_detr.modeling.meta_arch.pretext_config import pretext_model_from


def siamese_detr_from(detr_model, num_regions: int = 10, loss_region: float = 3.0, loss_global: float = 10.0,
                      roi_aligned: bool = False, global_context_levels: int = 3):
    """A ``SiameseDETRPretrain`` config sharing every sub-config of ``detr_model`` (a ``DETR`` config).

    Loss weights (Eq. 13): the finetune model's ``loss_ce`` / ``loss_bbox`` / ``loss_giou`` for L_loc
    (λ2 = 1), ``loss_region`` = λ0, ``loss_global`` = λ1. ``roi_aligned``: RoIAlign sampling of the region
    features, False as the official code (``model.roi_aligned=True`` samples half-pixel-correctly).
    ``global_context_levels``: the encoder-memory levels averaged, each on its own, for the L_g context (3, as
    the official ``x[:3]``; ``model.global_context_levels=1`` averages the first level only). Sine positions
    without offset, as the official code for every variant (the finetune model's may differ).
    """
    model = pretext_model_from(
        SiameseDETRPretrain, detr_model, {"loss_region": loss_region, "loss_global": loss_global},
        num_regions=num_regions, projection_dim=256, predictor_hidden_dim=256, roi_output_size=7,
        roi_aligned=roi_aligned, global_context_levels=global_context_levels,
    )
    # the official Siamese DETR has its own sine positions (openselfsup/models/utils/position_encoding.py),
    # without Deformable DETR's -0.5 offset, for every variant; positions have no weights, so the handoff to a
    # finetuning model with another offset is unaffected
    model.position_embedding = copy.deepcopy(detr_model.position_embedding)
    model.position_embedding.offset = 0.0
    return model
