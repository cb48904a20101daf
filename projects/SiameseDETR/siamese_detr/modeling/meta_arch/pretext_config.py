"""LazyConfig helper: what every pretraining model (Siamese DETR, UP-DETR, DETReg) takes from the finetune
model config (used by ``configs/common/models/{siamese_detr,up_detr,detreg}.py``).

``pretext_model_from(cls, detr_model, extra_weights, ...)`` reuses the finetune model's backbone, feature
levels, position encoding, transformer, number of queries, criterion (its class loss and matcher, with one
objectness class), L_loc weights and post-processing, so the pretraining checkpoint loads into that finetune
model through ``train.init_checkpoint`` with no conversion (the class head is skipped for its shape, the
pretext-only heads are reported unused).
"""
import copy

from detectron2.config import LazyCall as L


def pretext_model_from(cls, detr_model, extra_weights, backbone=None, **kwargs):
    """``L(cls)(...)`` sharing the sub-configs of ``detr_model`` (a ``DETR`` config).

    Args:
        cls: the pretraining meta-architecture.
        extra_weights: weights of the pretext losses, added to the finetune model's ``loss_ce`` / ``loss_bbox`` /
            ``loss_giou``.
        backbone: a backbone config to use instead of the finetune model's (e.g. with one more output level).
        kwargs: the method's own arguments.
    """
    criterion = copy.deepcopy(detr_model.criterion)
    criterion.num_classes = 1  # objectness (+ no-object for the softmax loss)
    weights = {k: detr_model.weight_dict[k] for k in ("loss_ce", "loss_bbox", "loss_giou")}
    return L(cls)(
        backbone=detr_model.backbone if backbone is None else backbone,
        in_features=detr_model.in_features,
        num_extra_levels=detr_model.get("num_extra_levels", 0),
        input_proj_norm=detr_model.get("input_proj_norm", False),
        position_embedding=detr_model.position_embedding,
        transformer=detr_model.transformer,
        num_queries=detr_model.num_queries,
        criterion=criterion,
        weight_dict={**weights, **extra_weights},
        aux_loss=True,
        postprocess=detr_model.postprocess,
        pixel_mean=detr_model.pixel_mean,
        pixel_std=detr_model.pixel_std,
        input_format=detr_model.input_format,
        **kwargs,
    )
