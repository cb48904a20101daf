"""Evaluation results in files, not only in the log; ``train.eval_period <= 0`` means no evaluation.

* :func:`eval_hook`: detectron2's ``EvalHook`` evaluates every ``eval_period`` iterations *and after the
  last one* even when the period is 0; here a period ``<= 0`` gives no hook, so no evaluation at all. Given
  the trainer, each evaluation's results also carry ``eval/finished_iterations`` (how many iterations had
  finished), since the ``iteration`` detectron2 writes next to them is the 0-based index of the last
  finished one for a periodic evaluation but the count of finished ones after the last iteration. Training
  that raised runs no evaluation after it (:class:`FinishedTrainingEvalHook`: detectron2's ran one when the last
  iteration raised, and its error then hid the training's).
* :func:`set_evaluator_output_dir`: the config's evaluator writes its predictions to
  ``train.output_dir/inference/`` (``COCOEvaluator``: ``coco_instances_results.json``, COCO results format
  ``{"image_id", "category_id", "bbox": [x, y, w, h] absolute, "score"}``; ``ClassAgnosticEvaluator``:
  ``class_agnostic_predictions.json`` and ``class_agnostic_results.json``).
* :func:`append_eval_metrics`: one line ``{"bbox/AP": ..., "iteration": ..., "eval_only": true}`` appended
  to ``train.output_dir/metrics.json``, as the periodic evaluation of a training run writes it.
* :func:`final_evaluation_logged`: whether ``metrics.json`` holds the evaluation after the last iteration (a
  run killed after writing ``model_final.pth`` but before that evaluation was logged has none).
"""
import inspect
import json
import logging
import os
from typing import Callable, Mapping, Optional

from detectron2.engine import hooks
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.utils import comm

from ..utils.metrics_lines import FINISHED_ITERATIONS_KEY, metrics_records
from .metrics_file import terminate_torn_line

__all__ = ["FINISHED_ITERATIONS_KEY", "FinishedTrainingEvalHook", "append_eval_metrics", "eval_hook",
           "final_evaluation_logged", "finished_iterations", "set_evaluator_output_dir"]

INFERENCE_DIR = "inference"
logger = logging.getLogger(__name__)


class FinishedTrainingEvalHook(hooks.EvalHook):
    """``hooks.EvalHook`` whose evaluation after the last iteration runs only when training finished.

    detectron2's ``after_train`` evaluates when ``trainer.iter + 1 >= max_iter``, which also holds when the
    last iteration raised (its training loop leaves ``iter`` at ``max_iter`` only after all of them ran): a
    one-iteration run whose step raised then evaluated a model the error left unusable, and the evaluation's
    own exception replaced the training's."""

    def after_train(self):
        if self.trainer.iter < self.trainer.max_iter:  # the loop raised: no evaluation after it
            logger.info("Training stopped at iteration %d (of train.max_iter=%d): no evaluation after it",
                        self.trainer.iter, self.trainer.max_iter)
            del self._func  # as detectron2's does: the function holds the trainer
            return
        super().after_train()


def finished_iterations(trainer) -> int:
    """How many iterations a detectron2 trainer has finished when a hook runs: ``trainer.iter + 1`` in
    ``after_step`` (``iter`` is the 0-based index of the step that just ran), ``max_iter`` in ``after_train``
    (the training loop leaves ``iter`` at ``max_iter`` there)."""
    return min(int(trainer.iter) + 1, int(trainer.max_iter))


def eval_hook(eval_period: int, eval_function: Callable[[], dict], trainer=None) -> Optional[hooks.EvalHook]:
    """:class:`FinishedTrainingEvalHook` ``(eval_period, eval_function)``, or None (no evaluation, also not at
    the end) when ``eval_period <= 0``. ``trainer.register_hooks`` skips None. With ``trainer``, non-empty results get
    ``{"eval": {"finished_iterations": n}}`` added (:func:`finished_iterations`), which the hook stores as the
    scalar ``eval/finished_iterations`` beside them."""
    if eval_period is None or eval_period <= 0:
        return None
    if trainer is None:
        return FinishedTrainingEvalHook(eval_period, eval_function)

    def counted():
        results = eval_function()
        if not results:
            return results
        task, metric = FINISHED_ITERATIONS_KEY.split("/")
        return {**results, task: {metric: finished_iterations(trainer)}}

    return FinishedTrainingEvalHook(eval_period, counted)


def _target_callable(target):
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        return locate(target)
    return target


def set_evaluator_output_dir(cfg, subdir: str = INFERENCE_DIR) -> Optional[str]:
    """Point ``cfg.dataloader.evaluator.output_dir`` to ``train.output_dir/<subdir>`` when the evaluator takes
    an ``output_dir`` and the config leaves it unset. Returns the folder used (None: evaluator has none)."""
    evaluator = cfg.dataloader.get("evaluator", None) if "dataloader" in cfg else None
    if evaluator is None or not hasattr(evaluator, "get") or "_target_" not in evaluator:
        return None
    try:
        parameters = inspect.signature(_target_callable(evaluator._target_)).parameters
    except (TypeError, ValueError, ImportError):
        return None
    if "output_dir" not in parameters:
        return None
    if not evaluator.get("output_dir", None):
        evaluator.output_dir = os.path.join(cfg.train.output_dir, subdir)
    return evaluator.output_dir


def append_eval_metrics(output_dir: str, results: Mapping, **extra) -> Optional[dict]:
    """Append the flattened ``results`` (``{"bbox": {"AP": ..}}`` -> ``{"bbox/AP": ..}``) plus ``extra`` as
    one json line to ``output_dir/metrics.json`` (main process only; after a line a killed run left cut short,
    on a line of its own). Returns the record written; None, writing nothing, off the main process or for
    empty ``results``."""
    if not comm.is_main_process() or not results:
        return None
    record = dict(flatten_results_dict(dict(results)))
    record.update(extra)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "metrics.json")
    terminate_torn_line(path)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    return record


def final_evaluation_logged(output_dir: str, max_iter: int) -> bool:
    """Whether ``output_dir/metrics.json`` holds a training run's evaluation after all ``max_iter``
    iterations: a record with ``eval/finished_iterations == max_iter`` that is not an ``--eval-only`` one,
    after the file's last training line (one with ``total_loss``): an earlier series of the folder (a run
    started over without ``--resume`` appends to the file) does not count for the last one.

    detectron2 writes ``model_final.pth`` after the last iteration's step and runs the last evaluation only
    after training, so a run killed in between resumes with nothing left to train and no final results."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return False
    logged = False
    for _, row in metrics_records(path):
        if "total_loss" in row:
            logged = False
        if row.get(FINISHED_ITERATIONS_KEY) == max_iter and not row.get("eval_only"):
            logged = True
    return logged
