"""Multi-scale Deformable DETR R50 + iterative bounding box refinement on COCO, 40/50 epochs (official
``configs/r50_deformable_detr_plus_iterative_bbox_refinement.sh``: ``--with_box_refine``)."""
from .deformable_detr_r50_coco_50ep import dataloader, lr_multiplier, model, optimizer, train

model.transformer.with_box_refine = True
train.output_dir = "./output/deformable_detr_refine_r50_coco_50ep"
