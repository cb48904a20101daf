#!/usr/bin/env python
"""Compare pretraining methods on the demo's fast detector: scratch vs UP-DETR vs DETReg vs Siamese DETR,
same backbone, same pretraining and finetuning budget, for several seeds.

    python tools/compare_pretraining.py                      # all methods whose config exists, seeds 0 1
    python tools/compare_pretraining.py --seeds 0 1 2 --output output/compare
    python tools/compare_pretraining.py --low-label-percent 2    # finetune on 2%, reusing the pretrainings
    python tools/compare_pretraining.py --method "Siamese DETR=configs/demo/demo_siamese_pretrain.py" \\
        --method scratch= --pretrain-iters 100 --finetune-iters 200

For each seed ``s`` and method: pretraining (skipped for ``scratch``) with ``train.seed=s`` from the demo's
backbone checkpoint (trained once per output folder, into ``<output>/backbone``, with the demo's backbone
config configs/demo/demo_backbone.py; not the one of ``make demo``), then
finetuning ``configs/demo/demo_detector.py`` on the 10% low-label subset drawn with seed ``s``
(``synthetic_shapes_train_large_10pct_seed{s}``; ``--low-label-percent P``: the P% one) with ``train.seed=s``,
COCO AP on ``synthetic_shapes_val``.
A pretraining config must build a model whose checkpoint loads into the detector (the same transformer,
queries and heads), e.g. one made from ``demo_detector.model`` as ``demo_siamese_pretrain.py`` is.
Each method's runs go to ``<output>/<slug>_seed<s>/`` (``Siamese DETR`` -> ``siamese_detr``): its pretraining
to ``pretrain/``, shared by every percent (it does not depend on the labels), its finetuning to ``finetune/``
at the default 10% and to ``finetune_{P}pct/`` at any other percent P, so that the runs of several percents
live side by side in one ``--output`` (:func:`finetune_folder`). Names whose folders would be the same
(``Siamese DETR`` and ``siamese-detr``), a name given twice, a ``--method`` whose config is not a file (paths
are relative to the repository root) or not a pretraining config (a ``.py`` LazyConfig whose ``model`` is a
pretraining model: a finetuning config is refused), a seed given twice, a ``--low-label-percent`` outside
1..100 and an ``--output`` that cannot be written are refused before anything runs. Without ``--method``, a
built-in method whose config is not in this checkout is left out with a note (and a list left with no method is
refused).

Writes ``<output>/comparison.json``, ``comparison.md`` (mean ± half the min-max spread of AP and AP50 over
seeds, pretraining seconds per iteration, and each method's AP gain over the first method without
pretraining, ``scratch``, paired by seed: its mean and its worst seed) and ``comparison.png``; at another
percent P than 10, ``comparison_{P}pct.json``, ``.md`` and ``.png`` (:func:`comparison_paths`), leaving the
10% ones as they are. Steps are cached like ``make demo``'s: a re-run reuses finished runs whose inputs did
not change (e.g. ``--low-label-percent 2`` after a 10% run reuses the pretrainings, and a 10% run after it
reuses the 10% finetunings too). Runs that do not depend on each other go two at a time (``--parallel``, one
torch thread each): the pretrainings and scratch finetunings first, each finetuning from a pretraining as soon
as that pretraining has finished.
"""
import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BACKBONE_CONFIG = "configs/demo/demo_backbone.py"
DETECTOR_CONFIG = "configs/demo/demo_detector.py"
# the percent of train_large finetuned on by default; its runs and files keep the names they had before other
# percents got their own (finetune/, comparison.*), so that caches and documented paths stay valid
DEFAULT_LOW_LABEL_PERCENT = 10
COMPARISON_SUFFIXES = ("json", "md", "png")
# (name, pretraining config or None for no pretraining); without --method, a method whose config is not in this
# checkout is left out with a note (a --method's missing config is an error: check_configs)
DEFAULT_METHODS: List[Tuple[str, Optional[str]]] = [
    ("scratch", None),
    ("UP-DETR", "configs/demo/demo_up_detr_pretrain.py"),
    ("DETReg", "configs/demo/demo_detreg_pretrain.py"),
    ("Siamese DETR", "configs/demo/demo_siamese_pretrain.py"),
]


def parse_method(text: str) -> Tuple[str, Optional[str]]:
    """``"NAME=CONFIG"`` (``"NAME="``: no pretraining)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--method expects NAME=CONFIG (or NAME= for none), got {text!r}")
    name, config = text.split("=", 1)
    return name.strip(), (config.strip() or None)


def method_slug(name: str) -> str:
    """The folder name part of a method: ``"Siamese DETR"`` -> ``siamese_detr`` (runs go to ``<slug>_seed<s>``)."""
    return name.lower().replace(" ", "_").replace("-", "_")


def finetune_folder(percent: int) -> str:
    """The folder of a finetuning on ``percent``% of train_large, inside its run folder ``<slug>_seed<s>``:
    ``finetune`` at the default 10%, ``finetune_{percent}pct`` otherwise. The pretraining (``pretrain``) does not
    depend on the percent and is shared, so each percent has its own cached finetunings beside it and a run at
    one percent never redoes (and so deletes) another percent's."""
    percent = int(percent)
    return "finetune" if percent == DEFAULT_LOW_LABEL_PERCENT else f"finetune_{percent}pct"


def comparison_paths(output: Path, percent: int) -> Dict[str, Path]:
    """``{"json", "md", "png"}`` -> the comparison files of a run on ``percent``% of train_large:
    ``<output>/comparison.*`` at the default 10%, ``<output>/comparison_{percent}pct.*`` otherwise."""
    percent = int(percent)
    stem = "comparison" if percent == DEFAULT_LOW_LABEL_PERCENT else f"comparison_{percent}pct"
    return {suffix: Path(output) / f"{stem}.{suffix}" for suffix in COMPARISON_SUFFIXES}


def check_methods(methods: List[Tuple[str, Optional[str]]]) -> Optional[str]:
    """Why the ``--method`` list cannot be run, or None: an empty name, a name with a path separator, the same
    name twice, or two names that map to one run folder (:func:`method_slug`), whose runs would overwrite each
    other's."""
    by_slug: Dict[str, str] = {}
    for name, _ in methods:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            return f"--method {name!r}: a method name must be non-empty and must not contain '/' or '\\'"
        slug = method_slug(name)
        if slug in by_slug:
            other = by_slug[slug]
            if other == name:
                return f"--method {name!r} is given twice; give each method once"
            return (f"--method names {other!r} and {name!r} both map to the run folders {slug}_seed*: "
                    f"rename one of them")
        by_slug[slug] = name
    return None


def check_configs(methods: List[Tuple[str, Optional[str]]], explicit: bool
                  ) -> Tuple[List[Tuple[str, Optional[str]]], List[str], Optional[str]]:
    """``(methods to run, notes, problem)``: every pretraining config must be a file (a path relative to the
    repository root, or absolute). A method the user named (``explicit``: given with ``--method``) whose config
    is not one is a ``problem`` (never skipped: a typo would otherwise leave it out of the comparison); a
    built-in method (``DEFAULT_METHODS``, no ``--method`` given) whose config is not in this checkout is left
    out with a note. A list with no method left is a ``problem``."""
    present, notes = [], []
    for name, config in methods:
        if config is not None and not (ROOT / config).is_file():
            what = "is a folder, not a config file" if (ROOT / config).is_dir() else "does not exist"
            if explicit:
                return [], notes, (f"--method {name!r}: its pretraining config {config} {what} (paths are relative "
                                   f"to the repository root {ROOT}); give an existing config, or {name}= for no "
                                   f"pretraining")
            notes.append(f"note: built-in method {name} left out: its config {config} {what}")
            continue
        present.append((name, config))
    if not present:
        given = ", ".join(f"{name}={config or ''}" for name, config in methods)
        return [], notes, (f"no method to run: none of the methods ({given}) has its config; give --method "
                           f"NAME=CONFIG (or NAME= for no pretraining)")
    return present, notes, None


def pretraining_config_problem(name: str, config: str) -> Optional[str]:
    """Why the ``--method NAME=CONFIG`` file (present) cannot be a pretraining config, or None: it is not a
    ``.py`` LazyConfig, does not load, or its ``model`` is not one of the project's pretraining models (a
    subclass of ``PretextDETR``: Siamese DETR, UP-DETR, DETReg). A finetuning config or another file passed
    the file check and failed only mid-run; loading the config is cheap (no model is built)."""
    from detectron2.config import LazyConfig
    from detectron2.utils.registry import locate

    from siamese_detr.engine.checkpointing import error_first_line
    from siamese_detr.modeling.meta_arch import PretextDETR

    fix = f"give a pretraining config, e.g. {DEFAULT_METHODS[-1][1]}, or {name}= for no pretraining"
    if Path(config).suffix != ".py":
        return f"--method {name!r}: {config} is not a LazyConfig .py file; {fix}"
    try:
        model = LazyConfig.load(str(ROOT / config)).get("model", None)
        target = model.get("_target_", None) if hasattr(model, "get") else None
        target = locate(target) if isinstance(target, str) else target  # as instantiate() finds it
    except Exception as e:  # any error of the user's file: a syntax error, an import, a missing name
        return f"--method {name!r}: cannot load {config} ({type(e).__name__}: {error_first_line(e)}); {fix}"
    if not (isinstance(target, type) and issubclass(target, PretextDETR)):
        what = f"builds {getattr(target, '__qualname__', target)} as its model" if target else "has no model"
        return (f"--method {name!r}: {config} {what}, not a pretraining model (SiameseDETRPretrain, "
                f"UPDETRPretrain or DETRegPretrain); {fix}")
    return None


def check_pretraining_configs(present: List[Tuple[str, Optional[str]]]) -> Optional[str]:
    """The first :func:`pretraining_config_problem` of the methods with a config, or None."""
    for name, config in present:
        problem = pretraining_config_problem(name, config) if config is not None else None
        if problem:
            return problem
    return None


def check_counts(args) -> Optional[str]:
    """Why a count flag cannot be used, or None: below 1 (``--pretrain-iters 0`` would otherwise silently mean
    each config's full schedule, ``--parallel 0`` would wait forever)."""
    for flag in ("backbone_iters", "pretrain_iters", "finetune_iters", "eval_period", "threads", "parallel"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            return f"--{flag.replace('_', '-')} must be at least 1, got {value}"
    return None


def check_overrides(args, methods: List[Tuple[str, Optional[str]]]) -> Optional[str]:
    """Why ``--backbone-extra`` / ``--extra`` do not apply to the configs they are given to (an unknown key, a
    value of another kind), or None; checked before any step runs."""
    from detectron2.config import LazyConfig

    from siamese_detr.engine import apply_checked_overrides

    configs = [("--backbone-extra", BACKBONE_CONFIG, args.backbone_extra), ("--extra", DETECTOR_CONFIG, args.extra)]
    configs += [("--extra", config, args.extra) for _, config in methods
                if config is not None and (ROOT / config).is_file()]
    for flag, config, overrides in configs:
        if not overrides:
            continue
        try:
            apply_checked_overrides(LazyConfig.load(str(ROOT / config)), list(overrides))
        except (KeyError, ValueError, TypeError) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            return f"{flag} (applied to {config}): {message}"
    return None


def seconds_per_iter(metrics_json: Path) -> Optional[float]:
    """Median of the ``time`` (seconds per iteration) values logged in a detectron2 metrics.json."""
    values = []
    if metrics_json.is_file():
        for line in metrics_json.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "time" in row:
                values.append(float(row["time"]))
    return statistics.median(values) if values else None


def mean_spread(values: List[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
    """(mean, half the max - min) of the non-None values."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return sum(values) / len(values), (max(values) - min(values)) / 2


def paired_gains(results: Dict[str, Dict[int, dict]], baseline: str) -> Dict[str, dict]:
    """AP of every other method minus the ``baseline``'s, seed by seed (the same seed draws the same low-label
    subset and finetuning seed for every method, so the differences are paired).

    Returns:
        ``{method: {"per_seed": {seed: gain}, "mean": mean gain, "worst": smallest gain}}`` over the seeds where
        both have an AP (mean / worst None when there is none); the baseline itself is left out.
    """
    base = results[baseline]
    gains = {}
    for name, per_seed in results.items():
        if name == baseline:
            continue
        diff = {seed: r["AP"] - base[seed]["AP"] for seed, r in per_seed.items()
                if r["AP"] is not None and base.get(seed, {}).get("AP") is not None}
        values = list(diff.values())
        gains[name] = {"per_seed": diff, "mean": sum(values) / len(values) if values else None,
                       "worst": min(values) if values else None}
    return gains


def _fmt_gain(gain: Optional[dict]) -> str:
    if gain is None or gain["mean"] is None:
        return "-"
    return f"{gain['mean']:+.2f} (worst seed {gain['worst']:+.2f})"


def _fmt(mean, spread, digits=2) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def schedule_overrides(iters: Optional[int]) -> List[str]:
    """Overrides giving a config ``iters`` iterations with its step schedule scaled (drop at 80%)."""
    if not iters:
        return []
    drop = max(1, int(iters * 0.8))  # lr x0.1 after 80%, as the configs (num_updates must exceed it)
    return [f"train.max_iter={iters}", f"lr_multiplier.milestones=[{drop}]",
            f"lr_multiplier.num_updates={max(iters, drop + 1)}"]


def build_parser() -> argparse.ArgumentParser:
    from siamese_detr.utils.cli_types import ExtendList

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("output/compare"),
                        help="folder of the runs and the comparison files (default: output/compare)")
    parser.add_argument("--seeds", action=ExtendList, type=int, nargs="+", default=[0, 1],
                        help="non-negative, each once (default: 0 1)")
    parser.add_argument("--method", type=parse_method, action="append", default=None,
                        help="NAME=CONFIG (CONFIG: an existing config, relative to the repository root) or NAME= "
                        "(no pretraining), repeatable (default: scratch, UP-DETR, DETReg, Siamese DETR)")
    parser.add_argument("--low-label-percent", type=int, default=DEFAULT_LOW_LABEL_PERCENT,
                        help=f"1..100 (default {DEFAULT_LOW_LABEL_PERCENT}); another percent P finetunes into "
                        "<method>_seed<s>/finetune_{P}pct and writes comparison_{P}pct.{md,json,png}, reusing the "
                        "pretrainings and leaving the 10%% runs and files as they are")
    parser.add_argument("--backbone-iters", type=int, default=None, help="default: demo_backbone's max_iter")
    parser.add_argument("--backbone-extra", action=ExtendList, nargs="*", default=[],
                        help="overrides of demo_backbone.py")
    parser.add_argument("--pretrain-iters", type=int, default=None, help="default: each config's max_iter")
    parser.add_argument("--finetune-iters", type=int, default=None, help="default: demo_detector's max_iter")
    parser.add_argument("--eval-period", type=int, default=None, help="default: only after the last iteration")
    parser.add_argument("--extra", action=ExtendList, nargs="*", default=[],
                        help="overrides added to every pretraining and finetuning command (e.g. tiny test settings)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (default: 2; pretrainings and scratch "
                        "finetunings first; each finetuning from a pretraining once that pretraining has finished)")
    return parser


def check_arguments(parser: argparse.ArgumentParser, args) -> List[Tuple[str, Optional[str]]]:
    """The methods to run (``(name, config or None)``, those whose config is present); every mistake in the
    arguments ends the tool through ``parser.error`` here, before any step runs (a wrong percent, say, would
    otherwise fail only in the first finetuning)."""
    if not 1 <= args.low_label_percent <= 100:
        parser.error(f"--low-label-percent must be in 1..100, got {args.low_label_percent}")
    repeated = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
    if repeated:
        parser.error(f"--seeds: {repeated} given more than once; give each seed once")
    if any(s < 0 for s in args.seeds):
        parser.error(f"--seeds must be non-negative, got {args.seeds}")
    methods = args.method or DEFAULT_METHODS
    problem = check_methods(methods)
    if problem:
        parser.error(problem)
    present, notes, problem = check_configs(methods, explicit=args.method is not None)
    for note in notes:
        print(note)
    if problem is None and args.method is not None:  # the built-in configs are the project's pretraining configs
        problem = check_pretraining_configs(present)
    problem = problem or check_counts(args) or check_overrides(args, present)
    if problem:
        parser.error(problem)
    from siamese_detr.demo.runner import output_folder_problem

    problem = output_folder_problem(args.output)
    if problem:
        parser.error(problem)
    return present


def plan_runs(args, present, output: Path, backbone_ckpt: Path, ft_total: int, data: dict):
    """The training jobs of every (seed, method), for ``StepRunner.parallel``.

    Returns ``(first_jobs, later_jobs, runs)``: the pretrainings and the finetunings without pretraining (they
    need only the backbone), the finetunings from a pretraining (each ``after`` its pretraining), and
    ``(name, seed, pretrain folder or None, finetune folder)`` of each run, in the order of the table."""
    from siamese_detr.data.datasets.builtin_shapes import low_label_name, register_low_label_split

    train_cmd = [PY, "tools/lazyconfig_train_net.py", "--config-file"]
    first_jobs, later_jobs, runs = [], [], []
    for seed in args.seeds:
        register_low_label_split(args.low_label_percent, seed)  # in this process, for the digests
        subset = low_label_name(args.low_label_percent, seed)
        for name, config in present:
            run_dir = output / f"{method_slug(name)}_seed{seed}"
            init, pt_dir = backbone_ckpt, None
            if config is not None:
                pt_dir = run_dir / "pretrain"
                over = ([f"train.output_dir={pt_dir}", f"train.init_checkpoint={backbone_ckpt}", f"train.seed={seed}",
                         "train.eval_period=0"] + schedule_overrides(args.pretrain_iters) + list(args.extra))
                first_jobs.append(dict(name=f"{name} pretrain seed {seed}", folder=pt_dir,
                                       cmd=train_cmd + [config, "--resume"] + over, config=config, overrides=over,
                                       init=backbone_ckpt, inputs=data))
                init = pt_dir / "model_final.pth"
            ft_dir = run_dir / finetune_folder(args.low_label_percent)
            over = ([f"train.output_dir={ft_dir}", f"train.init_checkpoint={init}", f"train.seed={seed}",
                     f"dataloader.train.dataset.names={subset}",
                     f"train.eval_period={args.eval_period or ft_total}"]
                    + schedule_overrides(args.finetune_iters) + list(args.extra))
            # the starting checkpoint's digest is read when the job starts (after its pretraining)
            job = dict(name=f"{name} finetune seed {seed}", folder=ft_dir, cmd=train_cmd + [DETECTOR_CONFIG, "--resume"]
                       + over, config=DETECTOR_CONFIG, overrides=over, init=init,
                       after=[f"{name} pretrain seed {seed}"] if config is not None else [], inputs=data)
            (later_jobs if config is not None else first_jobs).append(job)
            runs.append((name, seed, pt_dir, ft_dir))
    return first_jobs, later_jobs, runs


def collect_results(present, runs) -> Dict[str, Dict[int, dict]]:
    """``{method: {seed: {"AP", "AP50", "pretrain_s_per_iter"}}}`` from the runs' metrics.json files (None where
    a value is missing)."""
    from siamese_detr.demo.runner import last_results

    results: Dict[str, Dict[int, dict]] = {name: {} for name, _ in present}
    for name, seed, pt_dir, ft_dir in runs:
        res = last_results(ft_dir / "metrics.json")
        spi = seconds_per_iter(pt_dir / "metrics.json") if pt_dir is not None else None
        results[name][seed] = {"AP": res.get("bbox/AP"), "AP50": res.get("bbox/AP50"), "pretrain_s_per_iter": spi}
    return results


def main(argv=None) -> int:
    """The command line: check the arguments (:func:`check_arguments`), lock ``--output``, delete this percent's
    earlier comparison files, train the backbone, run the pretrainings and finetunings (:func:`plan_runs`, as
    cached steps, ``--parallel`` at a time) and write the comparison (:func:`write_outputs`). Returns 0."""
    parser = build_parser()
    args = parser.parse_args(argv)
    present = check_arguments(parser, args)

    os.environ["DETECTRON2_DATASETS"] = os.path.abspath(os.getenv("DETECTRON2_DATASETS", "datasets"))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning:torch.jit._script")
    output = args.output.resolve()
    os.chdir(ROOT)  # every command runs from the repository root
    if output.is_relative_to(ROOT):
        output = output.relative_to(ROOT)
    from detectron2.config import LazyConfig

    from siamese_detr.demo.data import synthetic_shapes_digests
    from siamese_detr.demo.runner import StepRunner, lock_output

    lock = lock_output(output)  # noqa: F841 (held until the process ends): one comparison per output folder
    written = comparison_paths(output, args.low_label_percent)
    for path in written.values():  # this run's, or none: never an earlier run's (other percents' are left alone)
        path.unlink(missing_ok=True)

    runner = StepRunner(ROOT, output)
    started = time.time()
    # the images are an input of every step (generated here if missing): other images redo the steps
    print("[data] synthetic_shapes train_large, val (generated on first use)", flush=True)
    data = {"data": synthetic_shapes_digests(("train_large", "val")), "threads": args.threads}  # floats differ

    bb_dir = output / "backbone"
    bb_over = [f"train.output_dir={bb_dir}"] + list(args.backbone_extra)
    if args.backbone_iters:
        bb_over.append(f"train.max_iter={args.backbone_iters}")
    runner.step("backbone", bb_dir, [PY, "tools/train_demo_backbone.py", "--config-file", BACKBONE_CONFIG] + bb_over,
                BACKBONE_CONFIG, bb_over, data)
    ft_total = args.finetune_iters or LazyConfig.load(str(ROOT / DETECTOR_CONFIG)).train.max_iter
    # ``--parallel`` runs at once (one torch thread each by default): the pretrainings and scratch finetunings
    # first, each finetuning from a pretraining as soon as that pretraining has finished
    first_jobs, later_jobs, runs = plan_runs(args, present, output, bb_dir / "model_final.pth", ft_total, data)
    runner.parallel(first_jobs + later_jobs, max_parallel=args.parallel)

    results = collect_results(present, runs)
    baseline = next((name for name, config in present if config is None), None)
    table = write_outputs(output, results, args, time.time() - started, baseline, runner.environment["software"],
                          runner.environment["machine"])
    print("\n" + table)
    print(f"written: {written['json']}, {written['md']}, {written['png']} (finetunings on "
          f"{args.low_label_percent}%: {output}/<method>_seed<s>/{finetune_folder(args.low_label_percent)})")
    return 0


def _count_seeds(n: int) -> str:
    """"1 seed", "2 seeds"."""
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _name_seeds(seeds: List[int]) -> str:
    """"seed 0" for one seed, "seeds [0, 1]" for several."""
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds}"


def write_outputs(output: Path, results: Dict[str, Dict[int, dict]], args, seconds: float,
                  baseline: Optional[str] = None, software: Optional[dict] = None,
                  machine: Optional[dict] = None) -> str:
    """comparison.md / .json / .png (``comparison_{P}pct.*`` when ``args.low_label_percent`` is not 10:
    :func:`comparison_paths`); with a ``baseline`` (the first method without pretraining), also every
    method's AP gain over it, paired by seed (:func:`paired_gains`). ``software`` and ``machine``: the library
    versions and the processor kind (:func:`~siamese_detr.demo.steps.machine_kind`) the runs used (recorded in
    the json)."""
    paths = comparison_paths(output, args.low_label_percent)
    rows = []
    gains = paired_gains(results, baseline) if baseline is not None else {}
    summary = {"seeds": args.seeds, "low_label_percent": args.low_label_percent, "minutes": seconds / 60,
               "baseline": baseline, "software": software, "machine": machine, "methods": {}}
    for name, per_seed in results.items():
        ap = mean_spread([r["AP"] for r in per_seed.values()])
        ap50 = mean_spread([r["AP50"] for r in per_seed.values()])
        spi = mean_spread([r["pretrain_s_per_iter"] for r in per_seed.values()])
        summary["methods"][name] = {"per_seed": per_seed, "AP": ap, "AP50": ap50, "pretrain_s_per_iter": spi}
        if name in gains:
            summary["methods"][name]["AP_gain_vs_baseline"] = gains[name]
        row = (name, _fmt(*ap), _fmt(*ap50), _fmt(*spi, digits=3) if spi[0] is not None else "-")
        rows.append(row + ((_fmt_gain(gains.get(name)),) if baseline is not None else ()))
    head = ("method", f"AP (mean ± spread, {_count_seeds(len(args.seeds))})", "AP50", "pretraining s/it")
    if baseline is not None:
        head += (f"AP gain vs {baseline}, paired by seed",)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    paths["md"].write_text(
        f"COCO AP (%) on synthetic_shapes_val after finetuning on {args.low_label_percent}% of "
        f"synthetic_shapes_train_large; {_name_seeds(args.seeds)}; spread = half the min-max range.\n\n{table}\n")
    with open(paths["json"], "w") as f:
        json.dump(summary, f, indent=1)
    plot(paths["png"], summary)
    return table


def plot(path: Path, summary: dict) -> None:
    """Left: AP and AP50 per method (bar = mean, error bar = half the spread, dots = seeds). Right, when there
    is a baseline: each method's AP gain over it, paired by seed (bar = mean, dots = seeds). Each method has
    its colour of the other figures (siamese_detr.demo.plots.method_colours: the baseline grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from siamese_detr.demo.plots import method_colours

    names = list(summary["methods"])
    colours = method_colours(names)
    gained = [n for n in names if "AP_gain_vs_baseline" in summary["methods"][n]]
    fig, axes = plt.subplots(1, 2 if gained else 1, figsize=(11 if gained else 6, 4.2), dpi=100, squeeze=False)
    ax = axes[0, 0]
    for i, name in enumerate(names):
        m = summary["methods"][name]
        for metric, offset, alpha, hatch in (("AP", -0.17, 1.0, None), ("AP50", 0.17, 0.45, "//")):
            mean, spread = m[metric]
            if mean is None:
                continue
            ax.bar(i + offset, mean, width=0.32, yerr=spread, color=colours[name], alpha=alpha, hatch=hatch,
                   edgecolor="k", linewidth=0.5, capsize=3)
            values = [r[metric] for r in m["per_seed"].values() if r[metric] is not None]
            ax.scatter([i + offset] * len(values), values, color="k", s=8, zorder=3)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel("COCO AP (%) on synthetic_shapes_val")
    ax.set_title("AP (solid) and AP50 (hatched)", fontsize="medium")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # room for the legend above the bars
    ax.legend(handles=[Patch(facecolor="w", edgecolor="k", label="AP"),
                       Patch(facecolor="w", edgecolor="k", hatch="//", label="AP50")],
              loc="upper left", ncol=2, fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    if gained:
        _plot_gains(axes[0, 1], summary, gained, colours)
    seeds = ("seed " if len(summary["seeds"]) == 1 else "seeds ") + ", ".join(str(s) for s in summary["seeds"])
    fig.suptitle(f"Finetuned on {summary['low_label_percent']}% of the labels, {seeds} "
                 "(bar: mean over seeds, whisker: ± half the min-max range, dots: single seeds)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_gains(ax, summary: dict, gained: List[str], colours: Dict[str, str]) -> None:
    """Each method's AP gain over the baseline, paired by seed: bar = mean (its value written beside it), dots =
    seeds, a line at 0 (no gain). Every slot is one unit wide, so one method's bar is as narrow as each of
    four's, and its value stays inside the axes; the line at 0 stays inside too when every gain is negative."""
    for i, name in enumerate(gained):
        gain = summary["methods"][name]["AP_gain_vs_baseline"]
        if gain["mean"] is None:
            continue
        ax.bar(i, gain["mean"], width=0.5, color=colours[name], edgecolor="k", linewidth=0.5)
        ax.text(i + 0.27, gain["mean"], f"{gain['mean']:+.2f}", va="center", fontsize="small")
        values = list(gain["per_seed"].values())
        ax.scatter([i] * len(values), values, color="k", s=10, zorder=3)
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set_xlim(-0.75, len(gained) - 0.25)  # room for the value written right of the last bar
    low, high = ax.get_ylim()
    pad = 0.08 * (high - low)
    ax.set_ylim(min(low, -pad), max(high, pad))  # 0 never on the frame: the line at 0 stays visible
    ax.set_xticks(range(len(gained)))
    ax.set_xticklabels(gained)
    ax.set_ylabel(f"AP gain over {summary['baseline']} (AP points)")
    ax.set_title(f"AP minus the AP of {summary['baseline']} with the same seed", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)


if __name__ == "__main__":
    sys.exit(main())
