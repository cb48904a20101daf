"""Two-stage Deformable DETR R50 with iterative box refinement on COCO, 40/50 epochs (official
``configs/r50_deformable_detr_plus_iterative_bbox_refinement_plus_plus_two_stage.sh``: ``--with_box_refine
--two_stage``). The decoder's 300 queries come from the top-300 encoder proposals (no ``query_embed``); the
encoder proposals get class-agnostic losses ``loss_*_enc`` weighted like the decoder's."""
from .deformable_detr_r50_coco_50ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.with_box_refine = True
model.transformer.two_stage = True
train.output_dir = "./output/deformable_detr_refine_two_stage_r50_coco_50ep"
