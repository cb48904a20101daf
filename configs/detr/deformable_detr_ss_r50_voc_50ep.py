"""Single-scale Deformable DETR R50 finetuning on PASCAL VOC 07+12 -> 07 test, 40/50 epochs, batch 32."""
from ..common.data.detr_voc import dataloader
from ..common.schedules import NUM_IMAGES, step_schedule
from .deformable_detr_ss_r50_coco_50ep import model, optimizer, train

BATCH_SIZE = 32
dataloader.train.total_batch_size = BATCH_SIZE
lr_multiplier, train.max_iter = step_schedule(50, (40,), NUM_IMAGES["voc_2007_2012_trainval"], BATCH_SIZE)

model.num_classes = 20
train.output_dir = "./output/deformable_detr_ss_r50_voc_50ep"
train.checkpointer.period = 5000
train.eval_period = 5000
