"""DETReg pretraining model built from any finetune model config (Vanilla, Conditional, Deformable).

``detreg_from(detr_model)`` reuses the finetune model's feature levels, position encoding, transformer,
number of queries, criterion (class loss and matcher, one objectness class) and post-processing; the backbone
config is copied with the embedding level (``res3``) added to its ``out_features``, which changes no weight,
so the pretraining checkpoint loads into the finetune model through ``train.init_checkpoint`` with no
conversion (class head skipped for its shape; ``sem_embed`` reported unused).
"""
import copy

from siamese_detr.modeling.meta_arch.detreg import DETRegPretrain
from siamese_detr.modeling.meta_arch.pretext_config import pretext_model_from


def detreg_from(detr_model, embedding_feature: str = "res3", loss_object_embedding: float = 1.0):
    """A ``DETRegPretrain`` config from ``detr_model`` (a ``DETR`` config).

    Defaults are the official ones (github amirbar/DETReg ``util/default_args.py``, ``models/__init__.py``):
    embedding target = average of the frozen SwAV R50's C3 (``--obj_embedding_head intermediate``:
    ``feature_embed`` outputs ``2 * hidden_dim`` = 512 = C3's width), ``object_embedding_coef`` 1; class /
    box weights from the finetune model (Deformable: ``cls_loss_coef`` 2, L1 5, GIoU 2).
    """
    backbone = copy.deepcopy(detr_model.backbone)
    backbone.out_features = sorted(set(backbone.out_features) | {embedding_feature})
    return pretext_model_from(
        DETRegPretrain, detr_model, {"loss_object_embedding": loss_object_embedding},
        backbone=backbone, embedding_feature=embedding_feature,
    )
