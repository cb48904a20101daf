#!/usr/bin/env python
"""Fold the mean region embedding of a Siamese DETR pretraining into its learned object queries.

    python tools/fold_region_queries.py --config-file configs/demo/demo_siamese_pretrain.py \\
        --checkpoint output/demo/siamese_pretrain/model_final.pth \\
        --output output/siamese_pretrain_folded.pth [--batches 64] [key=value ...]

Why: in the pretraining the decoder's object queries are ``proj(z_j) + phi_q`` (Eq. 7), a region embedding
plus the learned query, and the decoder only ever saw such sums. A finetuning initialised from the checkpoint
uses ``phi_q`` alone (as the paper), a shift in the queries' distribution. This tool replaces ``phi_q`` of
query ``i`` by ``phi_q + mean proj(z_j)``, the average over pretraining views of the queries of its region
slot ``j = i // (Q / n)`` (``fold_mean_region_embedding`` in ``modeling/pretext/region_features.py``), so
the finetuning starts from the queries the decoder was trained on, on average. It is a handoff option, not
part of the paper; the project card ("What bounds it") gives what it measured.

How: the model is the config's ``model`` (a ``SiameseDETRPretrain``) loaded from ``--checkpoint`` with the
rules of ``train.init_checkpoint`` (a ``.pkl`` or a ``.pth`` holding python objects only with
``--trust-pickle``), which must give every parameter of the model. ``--batches`` batches of the config's
pretraining loader (views, proposals, jitter; seeded with ``--seed``, by default ``train.seed``, or 0 where
that is negative, detectron2's "a random seed"; image fields only, labels are never read) go through the
frozen backbone, RoIAlign and ``region_proj`` only. The output has the checkpoint's model tensors with
``query_embed.weight`` replaced, no optimizer or iteration (a ``train.init_checkpoint`` for the finetuning
config, not a run to resume), written through a temporary file and a rename. ``--output`` must be a new file
(``--overwrite`` replaces an existing one) in a folder this process can write in: checked before anything is
loaded. ``--seed`` is a whole number in [0, 2**32) (numpy's seeds; so must ``train.seed`` be when it is used).
"""
import argparse
import logging
import os
import sys
import time
import warnings

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import siamese_detr.data  # noqa: E402,F401  (registers the built-in datasets)
from siamese_detr.engine import apply_checked_overrides  # noqa: E402
from siamese_detr.engine.checkpointing import (  # noqa: E402
    CheckpointLoadError,
    SafeDetectionCheckpointer,
    atomic_torch_save,
)
from siamese_detr.engine.config_sections import check_config_sections  # noqa: E402
from siamese_detr.modeling.meta_arch.siamese_detr import SiameseDETRPretrain  # noqa: E402
from siamese_detr.modeling.pretext.region_features import fold_mean_region_embedding  # noqa: E402
from siamese_detr.utils.cli_types import non_negative_seed  # noqa: E402
from siamese_detr.utils.output_paths import check_output_file  # noqa: E402
from siamese_detr.utils.user_errors import USER_ERROR_EXIT, UserValueError, user_message  # noqa: E402

logger = logging.getLogger("fold_region_queries")
EXAMPLE_CONFIG = "configs/demo/demo_siamese_pretrain.py"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the Siamese DETR pretraining LazyConfig of the checkpoint")
    p.add_argument("--checkpoint", required=True, help="its pretraining checkpoint (e.g. OUTPUT/model_final.pth)")
    p.add_argument("--output", required=True, help="the folded checkpoint to write (.pth): a new file")
    p.add_argument("--overwrite", action="store_true", help="replace --output when it exists")
    p.add_argument("--batches", type=int, default=64,
                   help="pretraining batches whose region embeddings are averaged (default 64)")
    p.add_argument("--seed", type=non_negative_seed, default=None,
                   help="seed of the loader's draws (default: the config's train.seed; 0 where that is negative)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a .pkl checkpoint (or a .pth holding python objects): unpickling runs code from it")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="key=value config overrides")
    return p


def collect_region_embeddings(model: SiameseDETRPretrain, batches, num_batches: int) -> torch.Tensor:
    """``proj(z)`` of every view of the first ``num_batches`` batches: ``[N views, n, d_model]`` (logged with
    an ETA every 10 batches)."""
    embeddings, start = [], time.perf_counter()
    for index, batch in enumerate(batches):
        if index >= num_batches:
            break
        embeddings.append(model.view_region_embeddings(batch).cpu())
        done = index + 1
        if done % 10 == 0 or done == num_batches:
            elapsed = time.perf_counter() - start
            logger.info("batch %d/%d, %d views, eta %.0f s", done, num_batches,
                        sum(len(e) for e in embeddings), elapsed / done * (num_batches - done))
    if not embeddings:
        raise ValueError("the pretraining loader gave no batch")
    return torch.cat(embeddings)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return USER_ERROR_EXIT


def argument_problem(args):
    """Why the arguments cannot work, before anything is loaded (a missing or folder ``--config-file`` /
    ``--checkpoint``, ``--batches`` below 1, an ``--output`` that is the checkpoint, a folder, an existing file
    without ``--overwrite`` or a path that cannot be written), or None."""
    for path, what in ((args.config_file, "--config-file"), (args.checkpoint, "--checkpoint")):
        if os.path.isdir(path):
            return f"{what} {path!r} is a folder, not a file: give the file itself"
        if not os.path.isfile(path):
            return f"{what} {path!r} does not exist"
    if args.batches < 1:
        return f"--batches must be at least 1, got {args.batches}"
    if os.path.isdir(args.output) or os.path.abspath(args.output) == os.path.abspath(args.checkpoint):
        return f"--output {args.output!r} must be a new file, not a folder nor the --checkpoint"
    try:
        check_output_file(args.output, overwrite=args.overwrite)
    except OSError as err:
        return user_message(err)
    return None


def load_config(args):
    """The config with the overrides applied; ``ValueError`` / ``KeyError`` / ``TypeError`` /
    ``FileNotFoundError`` naming the mistake for a file LazyConfig cannot load, a config without the sections
    the tool reads (a part under ``configs/common``) or a wrong override."""
    here = f"Here: the Siamese DETR pretraining config of the checkpoint, e.g. {EXAMPLE_CONFIG}."
    try:
        cfg = LazyConfig.load(args.config_file)  # ValueError: not a python / yaml file
        check_config_sections(cfg, args.config_file, eval_only=True)
    except ValueError as err:
        raise UserValueError(f"{err} {here}") from None
    return apply_checked_overrides(cfg, args.opts)


def main(argv=None) -> int:
    """The command line: check the arguments, load the config and every parameter of its ``SiameseDETRPretrain``
    from ``--checkpoint``, average ``proj(z)`` over ``--batches`` batches (:func:`collect_region_embeddings`), fold
    it into ``query_embed.weight`` (:func:`fold_mean_region_embedding`) and write ``--output``. Returns 0, or
    ``USER_ERROR_EXIT`` (2) after an ``error:`` line."""
    args = build_parser().parse_args(argv)
    setup_logger(name="fold_region_queries")
    problem = argument_problem(args)
    if problem:
        return _error(problem)
    try:
        cfg = load_config(args)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as err:
        return _error(user_message(err))

    seed = args.seed if args.seed is not None else int(cfg.train.get("seed", 0))
    if seed < 0:  # train.seed=-1 (configs/common/train.py): a random seed in training; a fixed one here
        seed = 0
    if seed >= 2 ** 32:
        return _error(f"the seed must be in [0, 2**32), got {seed}")
    seed_all_rng(seed)  # the same proposals, views and jitter on every run
    device = str(cfg.train.get("device", "cpu"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    model = instantiate(cfg.model).to(device).eval()
    if not isinstance(model, SiameseDETRPretrain):
        return _error(f"{args.config_file} builds a {type(model).__name__}, not a SiameseDETRPretrain: give the "
                      "Siamese DETR pretraining config the checkpoint was trained with")
    checkpointer = SafeDetectionCheckpointer(model, trust_pickle=args.trust_pickle)
    try:
        checkpointer.load(args.checkpoint)
    except CheckpointLoadError as err:
        return _error(str(err))
    missing = checkpointer.parameters_not_loaded()
    if missing:
        return _error(f"{len(missing)} parameters of the model are not in {args.checkpoint} (e.g. {missing[:4]}): "
                      "give the pretraining config the checkpoint was trained with")

    embeddings = collect_region_embeddings(model, instantiate(cfg.dataloader.train), args.batches)
    before = model.query_embed.weight.detach().cpu()
    folded = fold_mean_region_embedding(before, embeddings)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state["query_embed.weight"] = folded
    author = f"siamese_detr tools/fold_region_queries.py ({args.batches} batches, {len(embeddings)} views)"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        atomic_torch_save({"model": state, "__author__": author, "matching_heuristics": False}, args.output)
    except OSError as err:
        return _error(f"cannot write {args.output}: {err.strerror or err}")

    group_norms = embeddings.mean(0).norm(dim=1)
    d = embeddings.shape[-1]
    print(f"folded the mean region embedding of {len(embeddings)} views ({args.batches} batches, seed {seed}) "
          f"into {len(folded)} object queries ({embeddings.shape[1]} region slots)")
    print("  mean embedding norm per region slot: " + ", ".join(f"{v:.2f}" for v in group_norms.tolist()))
    print(f"  query norm (first {d} channels), mean: {before[:, :d].norm(dim=1).mean():.2f} -> "
          f"{folded[:, :d].norm(dim=1).mean():.2f}")
    print(f"wrote {args.output}; finetune from it with train.init_checkpoint={args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
