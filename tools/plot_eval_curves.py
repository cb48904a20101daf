#!/usr/bin/env python
"""Evaluation curves of several groups of runs (e.g. one group per initialisation, one run per seed): the
mean over each group's runs at every evaluated iteration, with the runs' min-max range shaded, in one figure
(a PNG unless ``--output`` names another format), and the same numbers as a Markdown table on the terminal.

    python tools/plot_eval_curves.py \\
        --run "scratch=output/compare/scratch_seed*/finetune" \\
        --run "Siamese DETR=output/compare/siamese_detr_seed*/finetune" \\
        --reference scratch --output output/compare/ap_curves_by_seed.png

``--run LABEL=PATH[,PATH...]``: each PATH is a training output directory (its ``metrics.json``, written by
``tools/lazyconfig_train_net.py`` with ``train.eval_period > 0``) or a ``metrics.json`` file; shell-style
wildcards are expanded (sorted); a run listed twice in a group counts once (with a warning). A wrong argument
(a PATH that does not exist, a directory without ``metrics.json``, an ``--output`` that cannot be written, ...)
is refused before any run is read (exit 2); a ``metrics.json`` that cannot be used (a bad line, no such metric)
stops the tool with one line, ``error: ...``, naming it (exit 1). A group's curve is taken at the iterations
that all its runs evaluated. A line of a ``metrics.json`` cut short by a kill is skipped with a warning, as
``tools/plot_metrics.py`` does; as there, a run folder trained again (resumed from an earlier checkpoint than
its last logged iteration, or started over without ``--resume``) counts the evaluations of its last run only:
those the earlier run logged from the iteration training started again at are left out, with one ``note:``
line on stderr. ``--eval-only`` results appended to a run folder (``"eval_only": true``) are points at their
checkpoint's iteration (a later line wins at the same iteration) and never start a new series.
``--reference LABEL`` adds the difference of every other group's mean to that group's, per iteration (a
difference of means: pair the runs by seed yourself, or use ``tools/compare_pretraining.py``, for per-seed
gains).
"""
import argparse
import contextlib
import glob
import io
import os
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

from siamese_detr.demo.plots import (  # noqa: E402
    MetricsFileError,
    eval_history,
    figure_path,
    plot_ap_curves,
    seed_summary,
)
from siamese_detr.utils.metrics_lines import (  # noqa: E402
    FINISHED_ITERATIONS_KEY,
    Timeline,
    is_number,
    read_timeline,
    restart_note,
)

Summary = List[Tuple[int, float, float, float]]


RUN_PATHS_HINT = ("give training output directories written by tools/lazyconfig_train_net.py (with "
                  "train.eval_period > 0) or their metrics.json files")


def parse_run(spec: str) -> Tuple[str, List[Path]]:
    """``"LABEL=PATH[,PATH...]"`` -> ``(label, [metrics.json paths])``, wildcards expanded; a directory stands
    for its ``metrics.json``.

    Raises:
        ValueError: naming the argument or the path that is wrong (no ``=``, a PATH that does not exist, a
            directory without ``metrics.json``, a file that is not a ``.json``).
    """
    label, sep, paths = spec.partition("=")
    if not sep or not label.strip() or not paths.replace(",", " ").strip():  # "a=," names no path either
        raise ValueError(f"--run {spec!r}: expected LABEL=PATH[,PATH...], e.g. \"scratch=output/run_seed*\"")
    files = []
    for pattern in (p.strip() for p in paths.split(",") if p.strip()):
        matches = sorted(glob.glob(pattern)) or [pattern]
        for match in matches:
            path = Path(match)
            if path.is_dir():
                metrics = path / "metrics.json"
                if not metrics.is_file():
                    raise ValueError(f"--run {label!r}: no metrics.json in {path}; {RUN_PATHS_HINT}")
            elif not path.exists():
                raise ValueError(f"--run {label!r}: {path} does not exist; {RUN_PATHS_HINT}")
            else:
                metrics = path
                if metrics.suffix != ".json":
                    raise ValueError(f"--run {label!r}: {metrics} is not a metrics.json file (a wildcard that "
                                     f"matched more than the run directories? end it with '/' to match only them)")
            if any(metrics.resolve() == f.resolve() for f in files):
                print(f"warning: --run {label.strip()!r}: {metrics} is listed more than once; counted once",
                      file=sys.stderr)
                continue
            files.append(metrics)
    return label.strip(), files


def _quiet_timeline(path) -> Timeline:
    """:func:`read_timeline` of ``path`` without its torn-line warnings: :func:`summarise` gave them already."""
    with contextlib.redirect_stderr(io.StringIO()):
        return read_timeline(path)


def eval_metric_keys(path, records=None) -> List[str]:
    """The evaluation metrics a ``metrics.json`` holds: its keys containing '/' with a number for a value
    (e.g. ``bbox/AP``, ``class_agnostic/AR@100``), sorted; never the bookkeeping ``eval/finished_iterations``.
    Only its last run's lines count (``records``: ``(line number, record)`` pairs; default: the
    :class:`Timeline` of ``path``, read without warnings)."""
    keys = set()
    for _, row in _quiet_timeline(path).records if records is None else records:
        keys.update(k for k, v in row.items() if "/" in k and k != FINISHED_ITERATIONS_KEY and is_number(v))
    return sorted(keys)


def missing_metric_message(path, metric: str, shown: int = 20) -> str:
    """Why ``path`` gives no curve of ``metric``: the evaluation metrics it does hold (at most ``shown`` of
    them) and ``--metric KEY``, or, when it holds none, that the run was not evaluated; when only the lines
    left out of a folder trained again hold it (:func:`read_timeline`), that the run since is not evaluated yet."""
    line = _quiet_timeline(path)
    keys = eval_metric_keys(path, line.records)
    restarts = [it for it, stale in line.restarts if any(metric in row for _, row in stale)]
    if restarts:
        return (f"{path}: no {metric!r} since training started again at iteration {restarts[-1]}: the earlier "
                f"run's evaluations are left out (see the note above), and the run since has not been evaluated "
                f"yet (train.eval_period)")
    if not keys:
        return f"{path}: no {metric!r} in it (was the run evaluated? train.eval_period > 0)"
    listed = ", ".join(keys[:shown]) + (f", ... ({len(keys) - shown} more)" if len(keys) > shown else "")
    return (f"{path}: no {metric!r} in it; its evaluation metrics are {listed}: give one with --metric KEY, "
            f"e.g. --metric {keys[0]}")


def summarise(groups: Dict[str, List[Path]], metric: str) -> Dict[str, Summary]:
    """``{label: seed_summary of its runs' histories of metric}``; exits (``error: ...``, status 1) when a
    ``metrics.json`` has a bad line, a run never logged ``metric`` or a group's runs share no evaluated
    iteration."""
    summaries = {}
    for label, files in groups.items():
        histories = []
        for path in files:
            try:
                line = read_timeline(path)
                history = eval_history(str(path), metric, line.records)
            except MetricsFileError as e:
                raise SystemExit(f"error: {e}") from None
            note = restart_note(path, line)
            if note:
                print(note, file=sys.stderr)
            if not history:
                raise SystemExit(f"error: {missing_metric_message(path, metric)}")
            histories.append(history)
        summary = seed_summary(histories)
        if not summary:
            raise SystemExit(f"error: --run {label!r}: its {len(files)} runs share no evaluated iteration")
        summaries[label] = summary
    return summaries


def markdown_table(summaries: Dict[str, Summary], counts: Dict[str, int], reference: Optional[str] = None) -> str:
    """Rows: groups (``mean (min-max)`` per iteration), then ``LABEL - REFERENCE`` (difference of means) at
    the iterations both have."""
    iterations = sorted({row[0] for summary in summaries.values() for row in summary})
    lines = ["| runs | n | " + " | ".join(str(it) for it in iterations) + " |",
             "| --- | --- | " + " | ".join("---" for _ in iterations) + " |"]
    for label, summary in summaries.items():
        by_it = {it: (mean, lo, hi) for it, mean, lo, hi in summary}
        cells = [f"{by_it[it][0]:.2f} ({by_it[it][1]:.2f}-{by_it[it][2]:.2f})" if it in by_it else "-"
                 for it in iterations]
        lines.append(f"| {label} | {counts[label]} | " + " | ".join(cells) + " |")
    if reference is not None:
        ref = {it: mean for it, mean, _, _ in summaries[reference]}
        for label, summary in summaries.items():
            if label == reference:
                continue
            mine = {it: mean for it, mean, _, _ in summary}
            cells = [f"{mine[it] - ref[it]:+.2f}" if it in mine and it in ref else "-" for it in iterations]
            lines.append(f"| {label} - {reference} | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metric_label(metric: str) -> str:
    """A y-axis label for a ``metrics.json`` key: COCO results (``bbox/AP``, ``segm/AP50``, ...) are in %."""
    task, _, name = metric.partition("/")
    if task in ("bbox", "segm", "keypoints") and name.startswith("AP"):
        return f"COCO {name} (%), {metric}"
    return metric


def main(argv=None) -> None:
    """The command line: check the arguments (a mistake ends the tool through ``parser.error``, exit 2, before any
    run is read), summarise each ``--run`` group (:func:`summarise`), print the Markdown table and write the figure
    to ``--output``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="LABEL=PATH[,PATH...]",
                        help="a group of runs (repeat for every group); each PATH a training output folder "
                             "or its metrics.json, shell wildcards expanded, e.g. \"scratch=output/compare/"
                             "scratch_seed*/finetune\" (quote it)")
    parser.add_argument("--metric", default="bbox/AP",
                        help="evaluation metric: a key in metrics.json, e.g. class_agnostic/AR@100 "
                             "(default: bbox/AP)")
    parser.add_argument("--reference", default=None, help="label of the group the others are compared with")
    parser.add_argument("--output", default="eval_curves.png",
                        help="figure to write: .png, .pdf, .svg, ... (no extension: .png is added) "
                             "(default: ./eval_curves.png)")
    parser.add_argument("--title", default=None,
                        help="figure title (default: '<metric>: mean over runs (shade or bar: min-max)')")
    parser.add_argument("--ylabel", default=None,
                        help="y-axis label (default: the metric in words, e.g. 'COCO AP (%%), bbox/AP')")
    parser.add_argument("--xlabel", default="training iteration",
                        help="x-axis label, e.g. 'finetuning iteration' (default: 'training iteration')")
    args = parser.parse_args(argv)
    # wrong arguments: usage errors (exit 2), refused before reading the runs
    if args.metric == FINISHED_ITERATIONS_KEY:
        parser.error(f"--metric {FINISHED_ITERATIONS_KEY} is bookkeeping (how many iterations had finished "
                     f"at an evaluation), not a metric; give an evaluation metric, e.g. bbox/AP")
    try:
        output = figure_path(args.output)
    except ValueError as e:
        parser.error(f"--output {e}")

    groups: Dict[str, List[Path]] = {}
    for spec in args.run:
        try:
            label, files = parse_run(spec)
        except ValueError as e:
            parser.error(str(e))
        if label in groups:
            parser.error(f"--run {label!r} is given twice; merge its paths with commas")
        groups[label] = files
    if args.reference is not None and args.reference not in groups:
        parser.error(f"--reference {args.reference!r} is not one of the --run labels {sorted(groups)}")

    summaries = summarise(groups, args.metric)
    print(markdown_table(summaries, {k: len(v) for k, v in groups.items()}, args.reference))
    named = {f"{label} ({len(groups[label])} run{'s' if len(groups[label]) > 1 else ''})": s
             for label, s in summaries.items()}
    curves = {label: [(it, mean) for it, mean, _, _ in s] for label, s in named.items()}
    bands = {label: [(it, lo, hi) for it, _, lo, hi in s] for label, s in named.items()}
    title = args.title or f"{args.metric}: mean over runs (shade or bar: min-max)"
    plot_ap_curves(curves, output, title, ylabel=args.ylabel or metric_label(args.metric), bands=bands,
                   xlabel=args.xlabel)
    print(f"wrote {os.path.abspath(output)}")


if __name__ == "__main__":
    main()
