"""UP-DETR pretraining model built from any finetune model config (Vanilla, Conditional, Deformable).

``up_detr_from(detr_model)`` reuses the finetune model's backbone, feature levels, position encoding,
transformer, number of queries, criterion (its class loss and matcher, with one objectness class) and
post-processing, so the pretraining checkpoint loads into that finetune model through ``train.init_checkpoint``
with no conversion (class head skipped for its shape; ``region_proj`` / ``sem_embed`` reported unused).
"""
import copy

from detectron2.config import LazyCall as L

from siamese_detr.modeling.meta_arch.up_detr import UPDETRPretrain


def up_detr_from(detr_model, num_patches: int = 10, mask_ratio: float = 0.1, loss_feature: float = 1.0):
    """A ``UPDETRPretrain`` config sharing every sub-config of ``detr_model`` (a ``DETR`` config).

    Defaults are the official ones (github dddzg/up-detr ``main.py`` / ``models/__init__.py``): 10 query
    patches, feature mask ratio 0.1, ``loss_feature`` weight 1, CE 1 / L1 5 / GIoU 2 from the finetune model.
    """
    criterion = copy.deepcopy(detr_model.criterion)
    criterion.num_classes = 1  # objectness (+ no-object for the softmax loss)
    weights = {k: detr_model.weight_dict[k] for k in ("loss_ce", "loss_bbox", "loss_giou")}
    return L(UPDETRPretrain)(
        backbone=detr_model.backbone,
        in_features=detr_model.in_features,
        num_extra_levels=detr_model.get("num_extra_levels", 0),
        input_proj_norm=detr_model.get("input_proj_norm", False),
        position_embedding=detr_model.position_embedding,
        transformer=detr_model.transformer,
        num_queries=detr_model.num_queries,
        num_patches=num_patches,
        mask_ratio=mask_ratio,
        feature_recon=True,
        criterion=criterion,
        weight_dict={**weights, "loss_feature": loss_feature},
        aux_loss=True,
        postprocess=detr_model.postprocess,
        pixel_mean=detr_model.pixel_mean,
        pixel_std=detr_model.pixel_std,
        input_format=detr_model.input_format,
    )
