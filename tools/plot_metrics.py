#!/usr/bin/env python
"""Plot training curves from detectron2's ``metrics.json`` files into one figure (a PNG unless ``--output`` names
another format).

    python tools/plot_metrics.py output/demo/siamese_pretrain/metrics.json \\
        output/demo/finetune_pretrained/metrics.json --labels pretrain finetune --output loss_curves.png
    python tools/plot_metrics.py output/demo/siamese_pretrain output/demo/finetune_pretrained  # DIR: DIR/metrics.json

Each input (a ``metrics.json`` file, or a training output folder holding one) gets one column of two panels:
``total_loss`` (summed over the logged loss terms when the trainer did not log it) on top, and every final-layer
loss term underneath (auxiliary ``loss_*_0..N`` terms, and ``loss_*_0..N_one2many`` of hybrid matching, are left
out unless ``--aux``). Each loss term has one colour in every panel of the figure. Evaluation results (e.g.
``bbox/AP``) are printed, not plotted (the last logged value of each; plot them against the iterations with
``tools/plot_eval_curves.py``). An input that is neither a file nor a folder holding ``metrics.json`` is refused
(exit 2) before anything is plotted.

A folder trained again holds more than one series in its ``metrics.json``: the curves follow its last run. When
a training line's iteration is not higher than the one before it, training started again there (a run resumed
from an earlier checkpoint than its last logged iteration, or started over without ``--resume``): the earlier
lines from that iteration on (losses, and evaluations of a model trained past it) are left out, with one
``note:`` line on stderr saying how many and at which iterations. ``--eval-only`` results appended to a
training folder (``"eval_only": true``) never start a series: they count, like the training's own evaluations,
among the printed results (the last logged value wins). A file of ``--eval-only`` results only has no loss
curve: an error saying so (exit 1).

A line cut short by a kill (a ``{...`` that does not parse: the last line of a killed run, or a line in
the middle once the run was resumed) is skipped with a warning; any other line that is not a JSON object is
an error naming it, as is an empty file or one that is not a detectron2 ``metrics.json`` (no line with an
``iteration``): one line, ``error: ...``, exit 1. ``--output`` without an extension gets ``.png``; an extension
matplotlib cannot write, or an ``--output`` that cannot be written (a file in the way of its folder, a folder
without write permission), is refused (exit 2) before anything is read.
"""
import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

from siamese_detr.utils.cli_types import ExtendList
from siamese_detr.utils.figure_text import fit_text
from siamese_detr.utils.metrics_lines import FINISHED_ITERATIONS_KEY, MetricsFileError, read_timeline, restart_note
from siamese_detr.utils.writable import file_problem

AUX_SUFFIX = re.compile(r"_\d+(_one2many)?$")  # decoder layer i, also of the hybrid-matching queries


def read_metrics(path: Path) -> List[dict]:
    """One dict per line of a detectron2 ``metrics.json`` (a JSON object per logged iteration) that the
    folder's last run stands on (:func:`~siamese_detr.utils.metrics_lines.timeline`), in file order; the lines
    of an earlier run that it left out are named in one ``note:`` line on stderr. Torn lines (see the module
    docstring) are skipped with a warning, any other bad line exits (``error: ...``) naming it."""
    try:
        line = read_timeline(path)
    except MetricsFileError as e:
        raise SystemExit(f"error: {e}") from None
    note = restart_note(path, line)
    if note:
        print(note, file=sys.stderr)
    return [record for _, record in line.records]


def no_curves_message(path: Path, records: List[dict]) -> str:
    """Why ``records`` (read from ``path``) give no loss curve: the file is empty, it is not a detectron2
    ``metrics.json`` (no line has an ``iteration``), it holds only ``--eval-only`` results, or no line logged
    a loss."""
    if not records:
        what = "is empty (0 bytes)" if path.stat().st_size == 0 else "holds no JSON object"
        return (f"{path} {what}: the run did not get to its first logged iteration (train.log_period); give "
                f"the metrics.json of a run that did")
    if not any("iteration" in rec for rec in records):
        return (f"{path} is not a detectron2 metrics.json: none of its {len(records)} JSON object(s) has an "
                f"'iteration' (the training tool writes one JSON object per logged iteration, with "
                f"'iteration' and the losses)")
    if all(rec.get("eval_only") for rec in records):
        return (f"{path} holds only --eval-only evaluation results ({len(records)} line"
                f"{'s' if len(records) > 1 else ''}), no training losses to plot; plot its evaluation results "
                f"with tools/plot_eval_curves.py --run LABEL={path}")
    return f"{path}: no loss values logged (did training run past its first log period?)"


def loss_curves(records: List[dict], with_aux: bool = False) -> Dict[str, Tuple[List[int], List[float]]]:
    """``{name: (iterations, values)}`` for total_loss and the loss terms logged in ``records``, by iteration;
    a later record wins for the same iteration. ``records``: one timeline, as :func:`read_metrics` gives it
    (the lines of an earlier run that a resumed or restarted run logged again are left out there)."""
    curves = defaultdict(dict)
    for rec in records:
        if "iteration" not in rec:
            continue
        losses = {k: v for k, v in rec.items() if k.startswith("loss") and isinstance(v, (int, float))}
        if not losses:
            continue
        if "total_loss" in rec:
            losses["total_loss"] = rec["total_loss"]
        else:
            losses["total_loss"] = sum(losses.values())
        for name, value in losses.items():
            if not with_aux and AUX_SUFFIX.search(name):
                continue
            curves[name][rec["iteration"]] = float(value)
    return {name: (sorted(points), [points[i] for i in sorted(points)]) for name, points in curves.items()}


def eval_results(records: List[dict]) -> Dict[str, float]:
    """The last logged value of every evaluation metric (keys containing '/', e.g. ``bbox/AP``)."""
    results = {}
    for rec in records:
        for k, v in rec.items():
            if "/" in k and k != FINISHED_ITERATIONS_KEY and isinstance(v, (int, float)):
                results[k] = v
    return results


def use_log_scale(values: List[float]) -> bool:
    """True when every value is positive and they span at least a decade: a linear axis would flatten the
    small ones."""
    return bool(values) and min(values) > 0 and max(values) >= 10 * min(values)


FEW_POINTS = 20  # a series with at most this many logged points gets markers (a single point has no line)
# (plain, _one2many) line styles of the loss terms: solid / dashed while the palette's colours last, then dotted /
# dash-dotted in the same colours again, so that no two series look the same up to 2 x len(palette) terms
LINE_STYLE_PAIRS = (("-", "--"), (":", "-."))


def _palette() -> List[str]:
    """Twenty distinct colours: matplotlib's ten default ones, then the ten light ones of ``tab20``."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    tab20 = [to_hex(c) for c in colormaps["tab20"].colors]
    return tab20[0::2] + tab20[1::2]


def _term_styles(names: List[str]) -> Dict[str, dict]:
    """Line style of each loss term: a colour of its own (:func:`_palette`), its ``_one2many`` copy (hybrid
    matching) dashed in the same colour; past the palette's colours the terms take them again, dotted (their
    copies dash-dotted)."""
    palette = _palette()
    bases: Dict[str, int] = {}
    for name in names:
        bases.setdefault(name.replace("_one2many", ""), len(bases))
    styles = {}
    for name in names:
        i = bases[name.replace("_one2many", "")]
        plain, one2many = LINE_STYLE_PAIRS[(i // len(palette)) % len(LINE_STYLE_PAIRS)]
        styles[name] = {"color": palette[i % len(palette)], "linestyle": one2many if "one2many" in name else plain}
    return styles


def _markers(iterations: List[int]) -> dict:
    """Markers for a series of few points: a single logged point is otherwise invisible (a line of no length)."""
    return {"marker": "o", "markersize": 4} if len(iterations) <= FEW_POINTS else {}


def _plot_panel(top, bottom, curves: Dict[str, Tuple[List[int], List[float]]], label: str,
                styles: Dict[str, dict]) -> None:
    """``total_loss`` in the ``top`` axes, the loss terms under it in ``bottom`` (their own y range, so that
    the total does not flatten them) in their ``styles`` (:func:`_term_styles`); log y-axes where the values
    span decades; markers on series of few points (:data:`FEW_POINTS`)."""
    from matplotlib.ticker import MaxNLocator

    its, values = curves["total_loss"]
    top.plot(its, values, color="k", linewidth=1.5, **_markers(its))
    top.set_title(label)
    top.set_ylabel("total loss")
    terms = sorted(n for n in curves if n != "total_loss")
    for name in terms:
        bottom.plot(*curves[name], label=name, linewidth=1.2, **styles[name], **_markers(curves[name][0]))
    bottom.set_ylabel("loss term")
    bottom.set_xlabel("iteration")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # no fractional iterations
    for ax, ys in ((top, values), (bottom, [v for n in terms for v in curves[n][1]])):
        if use_log_scale(ys):
            ax.set_yscale("log")
            ax.set_ylabel(ax.get_ylabel() + " (log scale)")
        ax.grid(alpha=0.3, which="both" if ax.get_yscale() == "log" else "major")
    if terms:
        bottom.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, frameon=False)
    else:
        bottom.text(0.5, 0.5, "total_loss only: no loss term logged", ha="center", va="center",
                    transform=bottom.transAxes)


def plot(inputs: List[Path], labels: List[str], output: Path, with_aux: bool = False) -> Path:
    """One column per input: its total loss on top, its loss terms underneath (see :func:`_plot_panel`), each
    term in one style in every column (:func:`_term_styles` of all the inputs' terms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for path in inputs:
        records = read_metrics(path)
        curves = loss_curves(records, with_aux)
        if not curves:
            raise SystemExit(f"error: {no_curves_message(path, records)}")
        runs.append((records, curves))
    styles = _term_styles(sorted({name for _, curves in runs for name in curves if name != "total_loss"}))
    fig, axes = plt.subplots(2, len(inputs), figsize=(5.5 * len(inputs), 6.5), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [1, 1.3]})
    for column, (records, curves), label in zip(axes.T, runs, labels):
        _plot_panel(column[0], column[1], curves, label, styles)
        for k, v in sorted(eval_results(records).items()):
            print(f"{label}: {k} = {v:.3f}")
    for top in axes[0]:
        fit_text(fig, top.title, within=top)  # a long --labels title stays above its own panel
    layers = "all decoder layers" if with_aux else "the final decoder layer"
    fit_text(fig, fig.suptitle(f"Training losses per logged iteration (loss terms of {layers})"))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def output_file(output: Path) -> Path:
    """The file matplotlib writes for ``--output``: itself, or with ``.png`` added when it has no extension.

    Raises:
        ValueError: ``output`` is a folder, its extension is not a format matplotlib writes, or it cannot be
            written (a file in the way of its folder, a folder without write permission).
    """
    from matplotlib.backend_bases import FigureCanvasBase

    if output.is_dir():
        raise ValueError(f"{output} is a folder; give the file to write, e.g. {output / 'loss_curves.png'}")
    ext = output.suffix[1:].lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in formats:
        raise ValueError(f"{output}: matplotlib cannot write .{ext} files; give one of "
                         f"{', '.join('.' + f for f in sorted(formats))} (e.g. .png)")
    figure = output if ext else output.with_name(output.name + ".png")
    problem = file_problem(figure)
    if problem:
        raise ValueError(f"{figure} {problem}; give a file in a folder you can write to")
    return figure


def metrics_file(path: Path) -> Path:
    """The ``metrics.json`` an input names: the file itself, or ``DIR/metrics.json`` for a training output folder.

    Raises:
        ValueError: ``path`` does not exist, or is a folder without a ``metrics.json``.
    """
    if path.is_dir():
        inside = path / "metrics.json"
        if not inside.is_file():
            raise ValueError(f"no metrics.json in {path}: give a training output folder (train.output_dir of "
                             f"tools/lazyconfig_train_net.py) or a metrics.json file")
        return inside
    if not path.is_file():
        raise ValueError(f"{path} does not exist: give a metrics.json file or the training output folder holding it")
    return path


def main(argv=None) -> int:
    """The command line: check ``--output`` and the inputs (a mistake ends the tool through ``parser.error``, exit 2),
    plot one column per input (:func:`plot`) and print the file written. Returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", nargs="+", type=Path,
                        help="metrics.json files, or training output folders holding one (DIR/metrics.json)")
    parser.add_argument("--labels", action=ExtendList, nargs="*",
                        help="one title per input (default: the name of the folder holding its metrics.json)")
    parser.add_argument("--output", type=Path, default=Path("loss_curves.png"),
                        help="figure to write: .png, .pdf, .svg, ... (no extension: .png is added) "
                             "(default: ./loss_curves.png)")
    parser.add_argument("--aux", action="store_true", help="also plot auxiliary decoder-layer losses")
    args = parser.parse_args(argv)
    try:
        output = output_file(args.output)
    except ValueError as e:
        parser.error(f"--output {e}")
    inputs = []
    for path in args.metrics:
        try:
            inputs.append(metrics_file(path))
        except ValueError as e:
            parser.error(str(e))
    labels = args.labels or [p.absolute().parent.name for p in inputs]
    if len(labels) != len(inputs):
        parser.error(f"{len(labels)} labels for {len(inputs)} inputs")
    print(f"wrote {plot(inputs, labels, output, args.aux)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
