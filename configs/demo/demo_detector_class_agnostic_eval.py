"""Error analysis of a finetuned demo detector: the same model and test loader as ``demo_detector.py``, scored
class-agnostically (every prediction is "an object", every ground-truth box a target; AR@1/10/100, AP, AP50,
AP75). Next to the class-aware COCO AP of the finetuning run it tells whether the missing AP comes from wrong
classes (class-agnostic AP well above the class-aware one) or from boxes that are missed or imprecise (both
about equal)::

    python tools/lazyconfig_train_net.py --config-file configs/demo/demo_detector_class_agnostic_eval.py \\
        --eval-only train.init_checkpoint=output/demo/finetune_scratch/model_final.pth \\
        train.output_dir=output/class_agnostic_scratch

Measured on ``synthetic_shapes_dev`` (``dataloader.test.dataset.names=synthetic_shapes_dev``) in the project
card's demo section.
"""
from detectron2.config import LazyCall as L

from siamese_detr.evaluation import ClassAgnosticEvaluator

from .demo_detector import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

dataloader.evaluator = L(ClassAgnosticEvaluator)(dataset_name="${..test.dataset.names}", max_dets=(1, 10, 100))
train.output_dir = "./output/demo_detector_class_agnostic_eval"
