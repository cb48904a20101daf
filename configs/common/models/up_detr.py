"""UP-DETR pretraining model built from any finetune model config (Vanilla, Conditional, Deformable).

``up_detr_from(detr_model)`` reuses the finetune model's backbone, feature levels, position encoding (with
offset 0, as both official UP-DETRs: dddzg/up-detr is DETR's code, and the Siamese DETR authors' UP-DETR
configs, Deformable included, use ``openselfsup/models/utils/position_encoding.py``, which has no offset),
transformer, number of queries, criterion (its class loss and matcher, with one objectness class) and
post-processing, so the pretraining checkpoint loads into that finetune model through ``train.init_checkpoint``
with no conversion (class head skipped for its shape; ``region_proj`` / ``sem_embed`` reported unused).
"""
import copy

from siamese_detr.modeling.meta_arch.up_detr import UPDETRPretrain
from siamese_detr.modeling.meta_arch.pretext_config import pretext_model_from


def up_detr_from(detr_model, num_patches: int = 10, mask_ratio: float = 0.1, loss_feature: float = 1.0):
    """A ``UPDETRPretrain`` config sharing every sub-config of ``detr_model`` (a ``DETR`` config).

    Defaults are the official ones (github dddzg/up-detr ``main.py`` / ``models/__init__.py``): 10 query
    patches, feature mask ratio 0.1, ``loss_feature`` weight 1, CE 1 / L1 5 / GIoU 2 from the finetune model.
    """
    model = pretext_model_from(
        UPDETRPretrain, detr_model, {"loss_feature": loss_feature},
        num_patches=num_patches, mask_ratio=mask_ratio, feature_recon=True,
    )
    # Deformable DETR's finetuning positions have a -0.5 offset; the official UP-DETR pretraining's have none
    # (positions have no weights: the handoff to a finetuning model with another offset is unaffected)
    model.position_embedding = copy.deepcopy(detr_model.position_embedding)
    model.position_embedding.offset = 0.0
    return model
