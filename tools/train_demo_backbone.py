#!/usr/bin/env python
"""Train the demo's backbone (configs/demo/demo_backbone.py) and report its k-NN accuracy.

    python tools/train_demo_backbone.py --config-file configs/demo/demo_backbone.py [key=value ...]

Writes ``model_final.pth`` (keys ``backbone.*``, loadable through ``train.init_checkpoint``),
``metrics.json`` (k-NN accuracy of the trained and the randomly initialised network) and ``loss.json``
to ``train.output_dir``. See :mod:`siamese_detr.demo.backbone_pretrain`.
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

from siamese_detr.demo.backbone_pretrain import train_backbone  # noqa: E402
from siamese_detr.engine import apply_checked_overrides  # noqa: E402

DEFAULT_CONFIG = "configs/demo/demo_backbone.py"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("opts", nargs="*", help="key=value overrides of the config")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config_file):
        parser.error(f"--config-file {args.config_file}: no such file (the demo's is {DEFAULT_CONFIG})")
    try:
        cfg = apply_checked_overrides(LazyConfig.load(args.config_file), args.opts)
    except (KeyError, ValueError, TypeError) as e:  # an unknown key or a value of another kind
        parser.error(e.args[0] if isinstance(e, KeyError) and e.args else str(e))
    problem = check_config(cfg)
    if problem:
        parser.error(problem)
    os.makedirs(cfg.train.output_dir, exist_ok=True)
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
