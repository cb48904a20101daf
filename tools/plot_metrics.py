#!/usr/bin/env python
"""Plot training curves from detectron2's ``metrics.json`` files into one PNG.

    python tools/plot_metrics.py output/demo/pretrain/metrics.json output/demo/finetune/metrics.json \
        --labels pretrain finetune --output output/demo/loss_curves.png

Each input gets one panel; a panel shows ``total_loss`` (summed over the logged loss terms when
the trainer did not log it) and every final-layer loss term (auxiliary ``loss_*_0..N`` terms, and
``loss_*_0..N_one2many`` of hybrid matching, are left out unless ``--aux``). Evaluation results (e.g.
``bbox/AP``) are printed, not plotted.

A line cut short by a kill (a ``{...`` that does not parse: the last line of a killed run, or a line in
the middle once the run was resumed) is skipped with a warning; any other line that is not a JSON object is
an error naming it. ``--output`` without an extension gets ``.png``; an extension matplotlib cannot write is
refused before anything is read.
"""
import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

from siamese_detr.utils.metrics_lines import MetricsFileError, metrics_records

AUX_SUFFIX = re.compile(r"_\d+(_one2many)?$")  # decoder layer i, also of the hybrid-matching queries


def read_metrics(path: Path) -> List[dict]:
    """One dict per line of a detectron2 ``metrics.json`` (a JSON object per logged iteration); torn lines
    (see the module docstring) are skipped with a warning, any other bad line exits naming it."""
    try:
        return [record for _, record in metrics_records(path)]
    except MetricsFileError as e:
        raise SystemExit(str(e)) from None


def loss_curves(records: List[dict], with_aux: bool = False) -> Dict[str, Tuple[List[int], List[float]]]:
    """``{name: (iterations, values)}`` for total_loss and the loss terms logged in ``records``."""
    curves = defaultdict(lambda: ([], []))
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
            curves[name][0].append(rec["iteration"])
            curves[name][1].append(float(value))
    return dict(curves)


def eval_results(records: List[dict]) -> Dict[str, float]:
    """The last logged value of every evaluation metric (keys containing '/', e.g. ``bbox/AP``)."""
    results = {}
    for rec in records:
        for k, v in rec.items():
            if "/" in k and isinstance(v, (int, float)):
                results[k] = v
    return results


def plot(inputs: List[Path], labels: List[str], output: Path, with_aux: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(inputs), figsize=(6 * len(inputs), 4), squeeze=False)
    for ax, path, label in zip(axes[0], inputs, labels):
        records = read_metrics(path)
        curves = loss_curves(records, with_aux)
        if not curves:
            raise SystemExit(f"{path}: no loss values logged (did training run past its first log period?)")
        for name in sorted(curves, key=lambda n: (n != "total_loss", n)):
            its, values = curves[name]
            ax.plot(its, values, label=name, linewidth=2.0 if name == "total_loss" else 1.0)
        ax.set_title(label)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        for k, v in sorted(eval_results(records).items()):
            print(f"{label}: {k} = {v:.3f}")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def output_file(output: Path) -> Path:
    """The file matplotlib writes for ``--output``: itself, or with ``.png`` added when it has no extension.

    Raises:
        ValueError: ``output`` is a folder, or its extension is not a format matplotlib writes.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    if output.is_dir():
        raise ValueError(f"{output} is a folder; give the file to write, e.g. {output / 'loss_curves.png'}")
    ext = output.suffix[1:].lower()
    if not ext:
        return output.with_name(output.name + ".png")
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext not in formats:
        raise ValueError(f"{output}: matplotlib cannot write .{ext} files; give one of "
                         f"{', '.join('.' + f for f in sorted(formats))} (e.g. .png)")
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.json files")
    parser.add_argument("--labels", nargs="*", help="one title per input (default: parent folder names)")
    parser.add_argument("--output", type=Path, default=Path("loss_curves.png"),
                        help="figure to write (.png, .pdf, .svg, ...; no extension: .png is added)")
    parser.add_argument("--aux", action="store_true", help="also plot auxiliary decoder-layer losses")
    args = parser.parse_args(argv)
    try:
        output = output_file(args.output)
    except ValueError as e:
        parser.error(f"--output {e}")
    for path in args.metrics:
        if not path.is_file():
            parser.error(f"{path} does not exist")
    labels = args.labels or [p.parent.name for p in args.metrics]
    if len(labels) != len(args.metrics):
        parser.error(f"{len(labels)} labels for {len(args.metrics)} inputs")
    print(f"wrote {plot(args.metrics, labels, output, args.aux)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
