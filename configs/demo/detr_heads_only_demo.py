"""Downstream-initialisation probe on the built-in dataset (Siamese DETR supplementary, "Downstream
initialization", Table 1): the backbone, input projection, encoder, decoder and object queries of a
pretrained checkpoint stay FIXED; only the class and box heads are trained, then class-agnostic
AR@1/10/100 (and AP) on ``synthetic_shapes_val`` tell how well the pretrained Transformer localises
objects. Run it once from a pretraining checkpoint and once from random weights to compare::

    python tools/lazyconfig_train_net.py --config-file configs/demo/detr_heads_only_demo.py \\
        train.init_checkpoint=output/siamese_detr_pretrain_demo/model_final.pth \\
        train.output_dir=output/heads_only_siamese

``make demo`` does not run it. Same model shape as ``detr_demo.py`` (and the pretraining demo).
"""
from detectron2.config import LazyCall as L

from siamese_detr.evaluation import ClassAgnosticEvaluator

from ..common.schedules import step_schedule_iters
from .detr_demo import dataloader, model, optimizer, train

model.frozen_modules = ["backbone", "input_proj", "transformer", "query_embed"]
# the probe is also run from random weights (the "random Transformer" baseline), frozen backbone included
model.allow_random_backbone = True
dataloader.evaluator = L(ClassAgnosticEvaluator)(dataset_name="${..test.dataset.names}")

optimizer.lr = 1e-3  # only the two heads learn
train.max_iter = 200
lr_multiplier = step_schedule_iters(train.max_iter, [160])
train.output_dir = "./output/detr_heads_only_demo"
train.checkpointer.period = 200
train.eval_period = 200
