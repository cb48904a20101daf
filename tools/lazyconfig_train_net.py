#!/usr/bin/env python
"""Train or evaluate any model of this project from a LazyConfig python file.

    python tools/lazyconfig_train_net.py --config-file configs/demo/detr_demo.py [--num-gpus N]
        [--resume] [--eval-only] key=value ...

Follows detectron2's tools/lazyconfig_train_net.py, with what DETR-style training needs:
gradient clipping (``train.clip_grad``), CPU runs (no CUDA assertion; AMP only with CUDA; DDP over
gloo when ``--num-gpus N`` is given on a machine without GPUs), overrides that refuse unknown
keys (``+key=value`` adds one on purpose), and evaluation through the config's evaluator.
Writes ``config.yaml``, ``log.txt`` and ``metrics.json`` (losses, lr, ETA, evaluation results) to
``train.output_dir``.

A mistake in the config, an override, a file or a dataset stops the run with one line,
``lazyconfig_train_net.py: error: ...`` naming it and the fix, and exit status 2 (the traceback goes to
``log.txt`` once that exists, also for one raised inside the training loop, which then runs no evaluation after
it; ``SIAMESE_DETR_TRACEBACK=1`` shows it on the terminal too).
"""
import difflib
import gc
import logging
import os
import sys
import warnings
from typing import Optional

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")
# with several processes, each printed two more warnings about detectron2's code, not the user's: v0.6's
# comm.all_gather serialises through torch.ByteStorage (a TypedStorage), and create_ddp_model passes DDP's
# broadcast_buffers=False (train.ddp), deprecated in recent torch for forward_sync_buffers, which would still
# sync the buffers at start (and which older torch does not have): the argument is kept, the warnings silenced
warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning,
                        module=r"detectron2\.utils\.comm")
warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning,
                        module=r"detectron2\.engine\.defaults")

from detectron2.config import instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_argument_parser, default_setup
from detectron2.engine import hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

import siamese_detr.data  # noqa: F401  (registers the built-in datasets)
from siamese_detr.engine import add_gradient_clipping, apply_checked_overrides, launch
from siamese_detr.engine.eval_outputs import (FINISHED_ITERATIONS_KEY, append_eval_metrics, eval_hook,
                                              final_evaluation_logged, set_evaluator_output_dir)
from siamese_detr.engine.logging_utils import held_records, replay_records, setup_plain_file_logs
from siamese_detr.engine.pretrain_checks import check_backbone_initialised, check_backbone_loaded, check_proposal_store
from siamese_detr.engine.resume_checks import (check_resume_matches, keep_training_config, optimizer_settings,
                                               reapply_optimizer_settings)
from siamese_detr.engine.schedule_checks import (check_counts, check_milestones, check_output_dir, check_rates,
                                                 describe_lr_schedule)
from siamese_detr.engine.config_checks import check_image_formats
from siamese_detr.engine.worker_checks import check_worker_temp_dir
from siamese_detr.engine.config_sections import check_batch_split, check_config_sections, load_config
from siamese_detr.engine.checkpointing import (SafeDetectionCheckpointer, check_checkpoint_path,
                                               ensure_final_checkpoint, keep_earlier_periodic_checkpoints,
                                               trust_pickle_requested)
from siamese_detr.engine.load_refusals import (refuse_other_variant, refuse_partly_random_model,
                                               refuse_shape_mismatches, require_eval_checkpoint)
from siamese_detr.engine.evaluation_checks import (build_checked_test_loader, check_coco_test_fields,
                                                   check_test_classes, check_test_set_on_disk,
                                                   check_train_set_on_disk, test_dataset_names)
from siamese_detr.engine.metrics_file import safe_default_writers
from siamese_detr.engine.user_error_exit import user_errors_exit
from siamese_detr.utils.user_errors import UserValueError

logger = logging.getLogger("detectron2")


def do_test(cfg, model):
    """Run the config's test loader through its evaluator; returns the results dict (or {} if none)."""
    if "evaluator" not in cfg.dataloader or cfg.dataloader.evaluator is None:
        return {}
    # every test image must be readable: evaluation never skips or replaces one
    results = inference_on_dataset(model, build_checked_test_loader(cfg.dataloader.test),
                                   instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process() and results:
        print_csv_format(results)
    return results


def evaluate_if_killed_before_final_evaluation(cfg, model):
    """A resumed run that had finished its iterations: when ``metrics.json`` lacks the evaluation after the
    last one (the run was killed while it ran: ``model_final.pth`` is written first), run it now and log it
    as the training run would have (``iteration`` and ``eval/finished_iterations`` = ``train.max_iter``)."""
    if cfg.train.eval_period is None or cfg.train.eval_period <= 0 or cfg.dataloader.get("evaluator") is None:
        return  # the run never evaluates (e.g. the ImageNet pretrainings: no evaluator)
    # the main process's reading decides for all: every process must take part in the evaluation or none
    logged = comm.all_gather(final_evaluation_logged(cfg.train.output_dir, cfg.train.max_iter))[0]
    if logged:
        return
    logger.info("%s: metrics.json has no evaluation after the last iteration: evaluating model_final",
                cfg.train.output_dir)
    results = do_test(cfg, model)
    if results:
        logger.warning("%s: the evaluation after the last iteration was missing (the run was stopped while it "
                       "ran); done now and appended to metrics.json", cfg.train.output_dir)
    append_eval_metrics(cfg.train.output_dir, results, iteration=cfg.train.max_iter,
                        **{FINISHED_ITERATIONS_KEY: cfg.train.max_iter})


def release_data_loader(trainer) -> None:
    """Once training is over, drop the trainer's training-data iterator so that its worker processes are shut
    down and exit cleanly (detectron2 keeps the endless iterator until the process ends; its workers were then
    terminated at exit and each left its multiprocessing folder, ``/tmp/pymp-*``, behind). Works with both
    layouts of detectron2's ``SimpleTrainer`` (v0.6: ``_data_loader_iter``; main: ``_data_loader_iter_obj``)."""
    for name in ("_data_loader_iter_obj", "_data_loader_iter"):
        if name in vars(trainer):
            iterator = vars(trainer)[name]
            close = getattr(iterator, "close", None)  # a generator (aspect-ratio grouping): its loop ends
            if callable(close):
                close()
            setattr(trainer, name, None)
    gc.collect()  # the DataLoader iterator's __del__ shuts its workers down


def _resolve_device(cfg):
    """Keep ``train.device`` honest: fall back to CPU (and no AMP) when CUDA is absent."""
    import torch

    try:
        torch.device(str(cfg.train.device))
    except RuntimeError:
        raise UserValueError(f"Config key 'train.device' must be a torch device such as cpu, cuda or cuda:1, got "
                             f"{cfg.train.device!r}.") from None
    if str(cfg.train.device).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("train.device=%s but CUDA is not available: using cpu.", cfg.train.device)
        cfg.train.device = "cpu"
    if cfg.train.amp.enabled and not str(cfg.train.device).startswith("cuda"):
        logger.warning("train.amp.enabled=True needs CUDA: training in float32 on %s.", cfg.train.device)
        cfg.train.amp.enabled = False


def _ddp_kwargs(cfg):
    """``create_ddp_model``'s keyword arguments: ``train.ddp``, with ``device_ids=None`` (CPU DDP over gloo) when
    ``train.device`` is not CUDA."""
    kwargs = dict(cfg.train.ddp)
    if not str(cfg.train.device).startswith("cuda"):
        kwargs["device_ids"] = None  # CPU DDP (gloo)
    return kwargs


def check_before_training(args, cfg) -> None:
    """What can go wrong before the model is built, named before any work: the training and test sets on disk,
    the test set's classes, the proposal store (main process) and ``train.init_checkpoint`` (unless a resumed
    run finds its own checkpoint); a warning when a run without ``--resume`` starts over in a folder that holds
    an earlier run."""
    has_checkpoint = os.path.isfile(os.path.join(cfg.train.output_dir, "last_checkpoint"))
    if not args.resume and has_checkpoint:
        logger.warning("%s holds the checkpoints of an earlier run: starting over without --resume overwrites "
                       "them and appends a second series to its metrics.json (--resume continues that run; "
                       "another train.output_dir keeps both).", cfg.train.output_dir)
    check_train_set_on_disk(cfg)  # a missing training set is named first (not its missing proposal store)
    check_test_set_on_disk(cfg)  # a missing test set fails now, not after the last iteration
    check_test_classes(cfg)  # so does a test set of other classes than the training set
    if comm.is_main_process():
        check_proposal_store(cfg)  # and a missing or mismatched proposal store
    if not (args.resume and has_checkpoint):  # a missing init_checkpoint: before the model is built (a resumed
        check_checkpoint_path(cfg.train.init_checkpoint)  # run that finds its last_checkpoint loads that one)


def resume_or_load(args, cfg, model, trainer, checkpointer, optim, periodic) -> int:
    """Load the run's last checkpoint (``--resume`` and one exists) or ``train.init_checkpoint``, and return
    the iteration to start at (the one after the checkpoint's). A resumed run keeps the config's optimizer
    settings and its earlier periodic checkpoints; a loaded ``init_checkpoint`` must initialise the frozen
    backbone and have the model's shapes (unless ``train.allow_shape_mismatch``). A resumed run that finished
    beyond ``train.max_iter`` is refused (``UserValueError``)."""
    resumed = args.resume and checkpointer.has_checkpoint()
    if args.resume and not resumed:
        logger.warning("--resume: no checkpoint in %s (no last_checkpoint file): starting at iteration 0 from "
                       "%s", cfg.train.output_dir, cfg.train.init_checkpoint or "a random initialisation")
    configured = optimizer_settings(optim)
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    if resumed:  # the config's lr / weight decay win over the resumed optimizer state's (config.yaml says so)
        changed = reapply_optimizer_settings(optim, configured)
        if changed:
            logger.warning("Resumed with the config's optimizer settings, not the checkpoint's: %s",
                           "; ".join(changed[:6]) + (" ..." if len(changed) > 6 else ""))
    if not resumed and cfg.train.init_checkpoint:
        if not cfg.train.get("allow_shape_mismatch", False):  # a Vanilla pretraining into Conditional DETR
            refuse_other_variant(checkpointer, cfg.train.init_checkpoint)
        check_backbone_loaded(model, checkpointer.loaded_names, cfg.train.init_checkpoint)
        if not cfg.train.get("allow_shape_mismatch", False):  # e.g. another num_queries: random queries
            refuse_shape_mismatches(checkpointer, cfg.train.init_checkpoint)
    # a resumed checkpoint stores the iteration that just finished: start at the next one
    start_iter = trainer.iter + 1 if resumed else 0
    if resumed and periodic is not None:  # max_to_keep also counts the interrupted run's periodic files
        keep_earlier_periodic_checkpoints(periodic, start_iter)
    if start_iter > cfg.train.max_iter:
        raise UserValueError(
            f"--resume: {checkpointer.loaded_path} finished iteration {start_iter - 1}, beyond "
            f"train.max_iter={cfg.train.max_iter}. Give train.max_iter={start_iter} or more to go on, or "
            f"evaluate it with --eval-only train.init_checkpoint={checkpointer.loaded_path}."
        )
    return start_iter


def do_train(args, cfg):
    """Train ``cfg.model`` up to ``train.max_iter``: :func:`check_before_training`, then the model, the optimizer
    (gradient clipping from ``train.clip_grad``), the training loader, the hooks (periodic checkpoints on the main
    process, evaluation every ``train.eval_period``) and :func:`resume_or_load`. A resumed run that had finished
    all its iterations trains nothing and runs only a missing final evaluation
    (:func:`evaluate_if_killed_before_final_evaluation`). Raises the checks' user errors (e.g. ``UserValueError``)."""
    check_before_training(args, cfg)
    model = instantiate(cfg.model)
    # a frozen backbone must be initialised from train.init_checkpoint (or resumed), unless the model allows it
    check_backbone_initialised(model, cfg.train.init_checkpoint, resuming=args.resume and os.path.isfile(
        os.path.join(cfg.train.output_dir, "last_checkpoint")))
    logger.info("Model:\n{}".format(model))
    model.to(cfg.train.device)

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    clip = cfg.train.get("clip_grad", None)
    if clip is not None:
        add_gradient_clipping(optim, clip.max_norm, clip.get("norm_type", 2.0), amp=bool(cfg.train.amp.enabled))

    train_loader = instantiate(cfg.dataloader.train)
    model = create_ddp_model(model, **_ddp_kwargs(cfg))
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optim)
    # atomic saves, resume fallback to the newest loadable checkpoint, .pkl only with --trust-pickle
    checkpointer = SafeDetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer, optimizer=optim,
                                             trust_pickle=trust_pickle_requested(args, cfg))
    lr_multiplier = instantiate(cfg.lr_multiplier)
    if comm.is_main_process():  # where the lr drops, in iterations; a warning when num_updates != max_iter
        schedule, suspect = describe_lr_schedule(cfg, lr_multiplier)
        (logger.warning if suspect else logger.info)(schedule)
    periodic = hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=lr_multiplier),
            periodic,
            # period <= 0: no evaluation; results carry eval/finished_iterations (the curves' x)
            eval_hook(cfg.train.eval_period, lambda: do_test(cfg, model), trainer),
        ]
    )
    start_iter = resume_or_load(args, cfg, model, trainer, checkpointer, optim, periodic)
    if start_iter < cfg.train.max_iter:
        # the writers open metrics.json and a TensorBoard file at once: only for a run that trains (its
        # after_train closes them), not for one refused above nor a finished run resumed (no empty files)
        if comm.is_main_process():
            trainer.register_hooks([hooks.PeriodicWriter(
                safe_default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)])
        try:
            trainer.train(start_iter, cfg.train.max_iter)
        finally:
            release_data_loader(trainer)
    else:  # a finished run resumed: nothing to train
        logger.info("%s finished all train.max_iter=%d iterations: nothing left to train",
                    cfg.train.output_dir, cfg.train.max_iter)
        evaluate_if_killed_before_final_evaluation(cfg, model)
    ensure_final_checkpoint(checkpointer, start_iter, cfg.train.max_iter)  # resumed at max_iter: still valid


def checked_config(args, world_size: int):
    """The config with the overrides applied and the checks that need no process group: syntax, sections, keys,
    counts, image formats, the temporary folder of data-loader workers, rates, lr milestones, and the batch split
    over ``world_size`` processes. Its log records are held (see :func:`setup`)."""
    cfg = load_config(args.config_file)  # a syntax error: one line naming the file and line
    check_config_sections(cfg, args.config_file, eval_only=args.eval_only)  # e.g. a tool given as the config
    with held_records() as early_records:  # e.g. model.num_classes taken from a coco: dataset's categories
        cfg = apply_checked_overrides(cfg, args.opts)
        check_counts(cfg, world_size, eval_only=args.eval_only)  # max_iter=0, max_iter=1e3, seed=1.5, ...: named
        check_image_formats(cfg, eval_only=args.eval_only)  # mapper.image_format=42: before any image is read
        check_worker_temp_dir(cfg, eval_only=args.eval_only)  # a $TMPDIR too long for the workers' sockets
        if not args.eval_only:
            check_rates(cfg)  # optimizer.lr=-1, weight_decay=nan
            check_milestones(cfg)  # lr_multiplier.milestones=[400] beyond its num_updates, or decreasing
            check_batch_split(cfg, world_size)
    return cfg, early_records


def check_before_launch(args) -> None:
    """With more than one process, the checks of :func:`checked_config` once in the launching process, before
    the processes start: a mistake there (a batch that does not split, an unknown key) is then one error,
    at once, instead of one traceback per process after they all started. Its log records are dropped: each
    process logs them again."""
    world_size = args.num_gpus * args.num_machines
    if world_size > 1:
        checked_config(args, world_size)


def setup(args):
    """The config of this process: :func:`checked_config`, ``train.output_dir`` checked (main process), the logs set
    up there (the held records replayed into them), the device resolved (:func:`_resolve_device`), a ``--resume``
    compared with the previous run's ``config.yaml``, then detectron2's ``default_setup`` (which writes
    ``config.yaml``; ``--eval-only`` keeps a training run's). Returns the config."""
    cfg, early_records = checked_config(args, comm.get_world_size())
    if comm.is_main_process():  # raises only (logs nothing)
        check_output_dir(cfg.train.output_dir)  # a file, a read-only folder, a number: named, before any log
    setup_plain_file_logs(cfg.train.output_dir, comm.get_rank())  # log.txt without colour codes
    replay_records(early_records)
    _resolve_device(cfg)  # after the logs are set up: its warnings go to log.txt too
    if args.resume:  # before default_setup overwrites the previous run's config.yaml
        check_resume_matches(cfg, cfg.train.output_dir)
        comm.synchronize()  # every process has read it before the main one rewrites it
    # --eval-only into a training folder keeps that run's config.yaml (what --resume compares against)
    with keep_training_config(cfg.train.output_dir, active=args.eval_only and comm.is_main_process()):
        default_setup(cfg, args)
    return cfg


def main(args):
    """One process's work. ``--eval-only``: load ``train.init_checkpoint`` (refused when missing, or when it leaves
    parameters random unless ``train.eval_allow_random=True``), evaluate it on the test set, append the results to
    ``train.output_dir/metrics.json`` and return them. Otherwise :func:`do_train`, and return None."""
    cfg = setup(args)
    if args.eval_only:
        require_eval_checkpoint(cfg.train.init_checkpoint)  # never evaluate a random model
        if cfg.dataloader.get("evaluator", None) is not None:  # a coco: json without iscrowd / area: now
            check_coco_test_fields(test_dataset_names(cfg))
        check_checkpoint_path(cfg.train.init_checkpoint)  # a missing file: before the model is built
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = create_ddp_model(model, **_ddp_kwargs(cfg))
        checkpointer = SafeDetectionCheckpointer(model, trust_pickle=trust_pickle_requested(args, cfg))
        loaded = checkpointer.load(cfg.train.init_checkpoint)
        if not cfg.train.get("eval_allow_random", False):  # the AP of random weights, unless asked for
            refuse_partly_random_model(checkpointer, cfg.train.init_checkpoint)
        set_evaluator_output_dir(cfg)  # predictions to train.output_dir/inference/
        results = do_test(cfg, model)
        # "iteration": the checkpoint's (detectron2's 0-based index of its last finished iteration); how many
        # it had finished, as the training run's own evaluations say it, when the checkpoint records it
        iteration = (loaded or {}).get("iteration", -1)
        finished = {FINISHED_ITERATIONS_KEY: int(iteration) + 1} if isinstance(iteration, int) and iteration >= 0 \
            else {}
        append_eval_metrics(cfg.train.output_dir, results, iteration=iteration, eval_only=True,
                            checkpoint=cfg.train.init_checkpoint, **finished)
        return results
    do_train(args, cfg)
    return None


CONFIG_EXTENSIONS = (".py", ".yaml", ".yml")  # what detectron2's LazyConfig.load reads


def _config_file_problem(config_file: str) -> Optional[str]:
    """Why ``--config-file`` cannot be loaded (missing, a folder, not a LazyConfig file), or None."""
    if os.path.isdir(config_file):
        inside = sorted(f for f in os.listdir(config_file) if f.endswith(".py"))[:3]
        return (f"--config-file {config_file!r} is a folder: give a config file in it"
                + (f", e.g. {os.path.join(config_file, inside[0])}" if inside else ""))
    if not os.path.isfile(config_file):
        folder = os.path.dirname(config_file) or "."
        siblings = sorted(f for f in os.listdir(folder) if f.endswith(".py")) if os.path.isdir(folder) else []
        close = difflib.get_close_matches(os.path.basename(config_file), siblings, n=3, cutoff=0.6)
        return (f"--config-file {config_file!r} does not exist"
                + (f". Did you mean {' or '.join(os.path.join(os.path.dirname(config_file), c) for c in close)}?"
                   if close else ""))
    if not config_file.endswith(CONFIG_EXTENSIONS):
        return (f"--config-file {config_file!r} is not a LazyConfig file: give a python config (.py, e.g. "
                "configs/demo/detr_demo.py) or the config.yaml of a run")
    return None


# detectron2's help of its shared options, worded for this tool (its own mentions Yacs configs and a trainer this
# tool does not use)
_HELP = {
    "config_file": "the LazyConfig to run (required; .py, or a config.yaml a run wrote), e.g. "
                   "configs/demo/detr_demo.py",
    "resume": "continue from the last checkpoint of train.output_dir (its last_checkpoint file); without one, "
              "start from train.init_checkpoint",
    "eval_only": "evaluate train.init_checkpoint on dataloader.test and stop (no training)",
    "num_gpus": "processes per machine: GPUs with NCCL where CUDA is available, CPU workers over gloo otherwise "
                "(default: 1)",
    "opts": "config overrides at the end of the command, key=value (e.g. train.max_iter=300 "
            "'optimizer.lr=2e-4'); +key=value adds a key the config does not have",
}


def parse_args(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``): detectron2's shared options (help worded by ``_HELP``) and
    ``--trust-pickle``. A missing or unusable ``--config-file``, a process or machine count below 1, or a machine
    rank out of range ends the tool through ``parser.error`` (exit 2)."""
    parser = default_argument_parser(epilog=__doc__)
    for action in parser._actions:
        action.help = _HELP.get(action.dest, action.help)
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a .pkl train.init_checkpoint (unpickling runs code from the file)")
    args = parser.parse_args(argv)
    if not args.config_file:
        parser.error("--config-file is required: the LazyConfig to run, e.g. configs/demo/detr_demo.py")
    problem = _config_file_problem(args.config_file)
    if problem:
        parser.error(problem)
    if args.num_gpus < 1:
        parser.error(f"--num-gpus {args.num_gpus}: the number of processes must be at least 1")
    if args.num_machines < 1:
        parser.error(f"--num-machines {args.num_machines}: the number of machines must be at least 1")
    if not 0 <= args.machine_rank < args.num_machines:
        parser.error(f"--machine-rank {args.machine_rank}: the rank of this machine must be from 0 to "
                     f"{args.num_machines - 1} (--num-machines {args.num_machines})")
    return args


INTERRUPTED_EXIT = 130  # the shell's status for a command stopped by SIGINT (128 + 2)


def interrupted_message(args) -> str:
    """What Ctrl-C (``KeyboardInterrupt``) prints instead of Python's traceback: how to go on."""
    if args.eval_only:
        return "interrupted (Ctrl-C); nothing was written to metrics.json: run the same command again to evaluate"
    return ("interrupted (Ctrl-C). The same command with --resume (before the key=value overrides) continues "
            "from the last checkpoint in train.output_dir (one every train.checkpointer.period iterations; the "
            "data order starts again); without --resume it starts over")


def run(argv=None) -> None:
    """The command line: parse ``argv`` (default ``sys.argv[1:]``), check, launch the processes. A user
    error ends it with one line on stderr and ``SystemExit(2)``; Ctrl-C with one line
    (:func:`interrupted_message`) and ``SystemExit(130)``."""
    args = parse_args(argv)
    prog = os.path.basename(__file__)
    try:
        with user_errors_exit(prog):  # a wrong key, value or file: one line, exit status 2
            check_before_launch(args)
            # --num-gpus N: N processes (GPUs when CUDA is available, otherwise CPU workers over gloo)
            launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                   dist_url=args.dist_url, args=(args,))
    except KeyboardInterrupt:
        print(f"\n{prog}: {interrupted_message(args)}", file=sys.stderr, flush=True)
        raise SystemExit(INTERRUPTED_EXIT) from None


if __name__ == "__main__":
    run()
    sys.exit(0)
