#!/usr/bin/env python
"""Train the demo's backbone (configs/demo/demo_backbone.py) and report its k-NN accuracy.

    python tools/train_demo_backbone.py --config-file configs/demo/demo_backbone.py [key=value ...]

Writes ``config.yaml`` (the config with the overrides), ``progress.json`` (the loss every 5 iterations and
at the last), ``model_final.pth`` (keys ``backbone.*``, loadable through ``train.init_checkpoint``),
``metrics.json`` (k-NN accuracy of the trained and the randomly initialised network) and ``loss.json`` to
``train.output_dir``. See :mod:`siamese_detr.demo.backbone_pretrain`.
"""
import argparse
import json
import logging
import os
import sys
import time
import warnings
from typing import Optional

warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

from detectron2.config import LazyConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from siamese_detr.demo.backbone_pretrain import train_backbone  # noqa: E402
from siamese_detr.engine import apply_checked_overrides  # noqa: E402
from siamese_detr.engine.schedule_checks import check_output_dir  # noqa: E402
from siamese_detr.utils.user_errors import user_message  # noqa: E402

DEFAULT_CONFIG = "configs/demo/demo_backbone.py"
SECTIONS = ("backbone", "data", "train")  # what train_backbone reads


def main(argv=None) -> int:
    """The command line: load and check the config (:func:`load_config`), save it as ``train.output_dir/config.yaml``,
    train the backbone (:func:`~siamese_detr.demo.backbone_pretrain.train_backbone`; the loss every 5 iterations to
    the terminal and ``progress.json``) and print its metrics. Returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True,
                        help="the backbone stage's config, e.g. configs/demo/demo_backbone.py")
    parser.add_argument("opts", nargs="*", help="key=value overrides of the config")
    args = parser.parse_args(argv)
    cfg = load_config(parser, args)
    LazyConfig.save(cfg, os.path.join(cfg.train.output_dir, "config.yaml"))
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    metrics_file = os.path.join(cfg.train.output_dir, "progress.json")
    open(metrics_file, "w").close()  # this run's progress only (a re-run of an interrupted step starts over)
    start = time.time()

    def progress(it, total, loss):
        if it % 5 == 0 or it == total:
            print(f"iter {it}/{total} loss {loss:.4f} ({time.time() - start:.0f}s)", flush=True)
            with open(metrics_file, "a") as f:
                f.write(json.dumps({"iteration": it - 1, "total_loss": loss}) + "\n")

    metrics = train_backbone(cfg, progress)
    print(json.dumps(metrics, indent=1))
    return 0


def load_config(parser: argparse.ArgumentParser, args):
    """The backbone config with the overrides applied and ``train.output_dir`` made; a mistake (a missing file,
    a folder, a file that is not a backbone config, a wrong override or value, an output folder that cannot be
    written) ends the tool through ``parser.error`` (one line, exit 2) before any work."""
    if os.path.isdir(args.config_file):
        parser.error(f"--config-file {args.config_file} is a folder, not a config file (the demo's is "
                     f"{DEFAULT_CONFIG})")
    if not os.path.isfile(args.config_file):
        parser.error(f"--config-file {args.config_file}: no such file (the demo's is {DEFAULT_CONFIG})")
    try:
        cfg = LazyConfig.load(args.config_file)
    except ValueError as e:  # not a python / yaml file
        parser.error(f"{e} The demo's is {DEFAULT_CONFIG}")
    problem = config_kind_problem(cfg, args.config_file)
    if problem:
        parser.error(problem)
    try:
        cfg = apply_checked_overrides(cfg, args.opts)
    except (KeyError, ValueError, TypeError) as e:  # an unknown key or a value of another kind
        parser.error(user_message(e))
    problem = check_config(cfg)
    if problem:
        parser.error(problem)
    try:
        check_output_dir(cfg.train.output_dir)  # a file, or a folder that takes no file: one line, no traceback
    except (ValueError, OSError) as e:
        parser.error(user_message(e))
    return cfg


def config_kind_problem(cfg, config_file: str) -> Optional[str]:
    """Why ``config_file`` (loaded as ``cfg``) is not a backbone config like :data:`DEFAULT_CONFIG` (sections
    :data:`SECTIONS` and a ``train.method``; e.g. a detector config or a part under ``configs/common``), or
    None."""
    missing = [name for name in SECTIONS if not isinstance(cfg.get(name, None), DictConfig)]
    if not missing and "method" not in cfg.train:
        missing = ["train.method"]
    if not missing:
        return None
    found = ", ".join(sorted(str(k) for k in cfg.keys())) or "nothing"
    return (f"{config_file} is not a demo backbone config: it defines no {', '.join(missing)} (it defines "
            f"{found}). Give {DEFAULT_CONFIG} (or a copy of it); detector and pretraining configs are run by "
            "tools/lazyconfig_train_net.py")


def check_config(cfg) -> Optional[str]:
    """Why ``cfg`` cannot train the backbone, or None; checked before any work (the k-NN of the random
    network comes first and takes a while)."""
    t = cfg.train
    if t.get("method") not in ("simsiam", "supervised"):
        return f"train.method must be 'simsiam' or 'supervised', got {t.get('method')!r}"
    for key, least in (("max_iter", 0), ("batch_size", 1), ("crop_size", 1), ("knn_k", 1)):
        value = t.get(key)
        if not isinstance(value, int) or value < least:
            return f"train.{key} must be an integer of at least {least}, got {value!r}"
    return None


if __name__ == "__main__":
    sys.exit(main())
