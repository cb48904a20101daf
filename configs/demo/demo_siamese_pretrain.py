"""Siamese DETR pretraining of the demo's fast detector (``demo_detector.py``) on the UNLABELLED images of
``synthetic_shapes_train_large``: the loader keeps only the image fields of each dataset dict
(:func:`siamese_detr.demo.data.unlabelled_dicts`), EdgeBoxes proposals are computed online.

The frozen backbone comes from ``train.init_checkpoint`` = the backbone stage's ``model_final.pth``
(``make demo`` passes it). Same transformer / queries / heads as the detector, so its ``model_final.pth``
initialises ``demo_detector.py``. 6 regions per view (5 queries each), 32 px crops, views of short side
128-160 (max 256), batch 4, 600 iterations, AdamW lr 5e-4 (x0.1 at 480), no clipping, loss weights of COCO-like data
λ0 = 3 (region), λ1 = 0.3 (global). Evaluation after the last iteration: class-agnostic AR@1/10/100 of
the learned queries alone on ``synthetic_shapes_val``.
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from siamese_detr.demo.data import unlabelled_dicts
from siamese_detr.evaluation import ClassAgnosticEvaluator

from ..common.data.pretrain_builtin import dataloader
from ..common.models.siamese_detr import siamese_detr_from
from ..common.schedules import step_schedule_iters
from .demo_detector import dataloader as _detection
from .demo_detector import model as _detector
from .demo_detector import optimizer, train

DEMO_REGIONS = 6

model = siamese_detr_from(_detector, num_regions=DEMO_REGIONS, loss_region=3.0, loss_global=0.3)
model.projection_dim = 128
model.predictor_hidden_dim = 64

dataloader.train.dataset = L(unlabelled_dicts)(names="synthetic_shapes_train_large")
dataloader.train.mapper.num_regions = DEMO_REGIONS
dataloader.train.mapper.short_side_range = (128, 160)
dataloader.train.mapper.max_size = 256
dataloader.train.mapper.crop_size = 32
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 1
dataloader.test = _detection.test
dataloader.evaluator = L(ClassAgnosticEvaluator)(dataset_name="${..test.dataset.names}", max_dets=(1, 10, 100))

optimizer.lr = 5e-4  # as the finetuning: DETR's 1e-4 + clipping barely trains the heads in a few hundred iterations
train.clip_grad.max_norm = 0.0
train.max_iter = 600
lr_multiplier = step_schedule_iters(train.max_iter, [480])
train.output_dir = "./output/demo_siamese_pretrain"
train.checkpointer.period = 200  # the last one kept: an interrupted `make demo` resumes its step from there
train.checkpointer.max_to_keep = 1
train.eval_period = 600
train.log_period = 10
train.seed = 0
