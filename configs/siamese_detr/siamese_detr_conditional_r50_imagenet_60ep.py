"""Siamese DETR pretraining of Conditional DETR (R50, frozen SwAV backbone, 100 queries) on ImageNet, 40/60 epochs.

Mirrors the official Zx55/SiameseDETR ``configs/selfsup/siamese_detr/main/
r50_condtr_100q_syncbn_imgnet_edgebox_rdiscr_gdiscr_gpu32_step30w.py``: ``ConditionalTR`` with hidden_dim 256,
8 heads, 6 + 6 layers, FFN 2048, dropout 0.1, post-norm; 100 queries for 10 regions; frozen SwAV R50;
AdamW lr 1e-4, weight decay 1e-4, 300k steps with a x0.1 drop at 200k at batch 256 (32 GPUs x 8), i.e. the
paper's 40/60 epochs. Pretext head as the official ``SiameseDETRPredictHead``: objectness with SOFTMAX
cross-entropy (not the focal loss of Conditional DETR finetuning), matcher costs class 1 / L1 5 / GIoU 2, loss
weights ``loss_ce 1, loss_bbox 5, loss_giou 2``; ``loss_feature 5`` (λ0, region discrimination) and
``loss_enc_global_contra 10`` (λ1, global discrimination). The supplementary (§B) gives λ0 = 3 on ImageNet
for every variant; we follow the official Conditional configs' 5.

Everything else (data, schedule, crops, projector) is the Vanilla config ``siamese_detr_r50_imagenet_60ep.py``;
only the transformer becomes Conditional DETR's, with the shape of ``configs/common/models/
conditional_detr_r50.py``, so ``train.init_checkpoint=output/siamese_detr_conditional_r50_imagenet_60ep/
model_final.pth`` in ``configs/detr/conditional_detr_r50_{coco,voc}_50ep.py`` loads the transformer,
``query_embed``, ``input_proj`` and ``bbox_embed`` with no conversion (the class head differs in width and is
re-initialised; the region queries enter as ``query_pos``, so the reference points come from them, as the
official ``necks/conditional_tr.py``).
"""
from ..common.models.conditional_detr_r50 import conditional_transformer_like
from .siamese_detr_r50_imagenet_60ep import NUM_REGIONS, dataloader, lr_multiplier, model, optimizer, train

model.transformer = conditional_transformer_like(model.transformer)
model.num_queries = 100
model.weight_dict = {
    "loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_region": 5.0, "loss_global": 10.0,
}
train.output_dir = "./output/siamese_detr_conditional_r50_imagenet_60ep"
