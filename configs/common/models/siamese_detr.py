"""Siamese DETR pretraining model built from any finetune model config (Vanilla, Conditional, Deformable).

``siamese_detr_from(detr_model)`` reuses the finetune model's backbone, feature levels, position encoding,
transformer, number of queries, criterion (its class loss and matcher, with one objectness class) and
post-processing, so the pretraining checkpoint loads into that finetune model through
``train.init_checkpoint`` with no conversion (the class head is skipped for its shape, the pretext heads
``region_proj`` / ``sem_embed`` / ``projector`` / ``predictor`` are reported unused).
"""
import copy

from detectron2.config import LazyCall as L

from siamese_detr.modeling.meta_arch.siamese_detr import SiameseDETRPretrain


def siamese_detr_from(detr_model, num_regions: int = 10, loss_region: float = 3.0, loss_global: float = 10.0):
    """A ``SiameseDETRPretrain`` config sharing every sub-config of ``detr_model`` (a ``DETR`` config).

    Loss weights (Eq. 13): the finetune model's ``loss_ce`` / ``loss_bbox`` / ``loss_giou`` for L_loc
    (λ2 = 1), ``loss_region`` = λ0, ``loss_global`` = λ1.
    """
    criterion = copy.deepcopy(detr_model.criterion)
    criterion.num_classes = 1  # objectness (+ no-object for the softmax loss)
    weights = {k: detr_model.weight_dict[k] for k in ("loss_ce", "loss_bbox", "loss_giou")}
    return L(SiameseDETRPretrain)(
        backbone=detr_model.backbone,
        in_features=detr_model.in_features,
        num_extra_levels=detr_model.get("num_extra_levels", 0),
        input_proj_norm=detr_model.get("input_proj_norm", False),
        position_embedding=detr_model.position_embedding,
        transformer=detr_model.transformer,
        num_queries=detr_model.num_queries,
        num_regions=num_regions,
        criterion=criterion,
        weight_dict={**weights, "loss_region": loss_region, "loss_global": loss_global},
        aux_loss=True,
        projection_dim=256,
        predictor_hidden_dim=256,
        roi_output_size=7,
        postprocess=detr_model.postprocess,
        pixel_mean=detr_model.pixel_mean,
        pixel_std=detr_model.pixel_std,
        input_format=detr_model.input_format,
    )
