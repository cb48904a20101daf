"""DIAGNOSTIC, reads the labels: the demo's Siamese DETR pretraining (``demo_siamese_pretrain.py``) with each
image's annotated boxes as its regions in place of EdgeBoxes, on the labelled dicts of
``synthetic_shapes_train_large``. Not label-free and not a demo step: it measures what the pretext gives when
its regions are exactly the objects (project card, "What bounds it": "Not the proposals"). Everything else
(model, views, schedule, seed) is the demo's; e.g. four times the pretraining::

    python tools/lazyconfig_train_net.py --config-file configs/demo/demo_siamese_pretrain_oracle_regions.py \\
        train.init_checkpoint=output/demo/backbone/model_final.pth train.max_iter=2400 \\
        "lr_multiplier.milestones=[1920]" lr_multiplier.num_updates=2400 train.eval_period=2400 \\
        train.checkpointer.period=2400

and finetune its ``model_final.pth`` with ``demo_detector.py`` as the demo does.
"""
from detectron2.config import LazyCall as L
from detectron2.data import get_detection_dataset_dicts

from siamese_detr.data.proposals import AnnotationProposals

from .demo_siamese_pretrain import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

dataloader.train.dataset = L(get_detection_dataset_dicts)(names="synthetic_shapes_train_large", filter_empty=False)
dataloader.train.mapper.proposal_source = L(AnnotationProposals)()
train.output_dir = "./output/demo_siamese_pretrain_oracle_regions"
