"""Figures of the demo: AP against finetuning iteration, and detections next to the ground truth.

Both read what the training tool wrote (``metrics.json``: one JSON object per line; evaluation results
under ``task/metric`` keys with the ``iteration`` they were computed at) or run a model checkpoint.
"""
import os
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..utils.figure_text import fit_text
from ..utils.metrics_lines import MetricsFileError, finished_at, is_number, metrics_records, read_timeline
from ..utils.writable import file_problem

if TYPE_CHECKING:  # torch is imported where a figure needs it (curves and tables do not)
    import torch

__all__ = ["MetricsFileError", "metrics_records", "eval_history", "seed_summary", "figure_path", "plot_ap_curves",
           "method_colours", "is_baseline", "label_box", "draw_detections", "detections_to_draw"]


def eval_history(metrics_json, key: str = "bbox/AP", records=None) -> List[Tuple[int, float]]:
    """``[(iteration, value)]`` of every line of a detectron2 ``metrics.json`` that holds ``key``; the
    iteration is the number of finished iterations (:func:`~siamese_detr.utils.metrics_lines.finished_at`:
    the line's ``eval/finished_iterations`` when the training tool wrote one, see
    :func:`siamese_detr.engine.eval_outputs.eval_hook`); later lines win for the same iteration. Only the
    lines of the folder's last run count (:func:`~siamese_detr.utils.metrics_lines.timeline`: a run started
    over, or resumed from an earlier checkpoint, replaces what the earlier one logged from there on);
    ``--eval-only`` records count at their checkpoint's iteration. A missing file gives ``[]``; lines are read
    by :func:`metrics_records` (a torn line is skipped with a warning, any other line that is not a JSON
    object, or a ``key`` / ``iteration`` that is not a number, raises :class:`MetricsFileError` naming the
    line). ``records``: the ``(line number, record)`` pairs of ``metrics_json``'s timeline when the caller
    has read them already (:func:`~siamese_detr.utils.metrics_lines.read_timeline`)."""
    found: Dict[int, float] = {}
    if records is None:
        records = read_timeline(metrics_json).records if os.path.isfile(metrics_json) else []
    for lineno, row in records:
        if key in row and "iteration" in row:
            value, iteration = row[key], row["iteration"]
            if not is_number(value) or not is_number(iteration):
                raise MetricsFileError(f"{metrics_json}:{lineno}: {key!r} = {value!r} at iteration "
                                       f"{iteration!r}: expected numbers")
            found[finished_at(row)] = float(value)
    return sorted(found.items())


def seed_summary(histories: Sequence[Sequence[Tuple[int, float]]]) -> List[Tuple[int, float, float, float]]:
    """``[(iteration, mean, min, max)]`` over several runs (e.g. seeds) of :func:`eval_history` outputs, at
    the iterations that EVERY run evaluated (sorted); empty when there is no run or no common iteration."""
    if not histories:
        return []
    per_run = [dict(h) for h in histories]
    common = sorted(set.intersection(*(set(h) for h in per_run)))
    rows = []
    for it in common:
        values = [h[it] for h in per_run]
        rows.append((it, sum(values) / len(values), min(values), max(values)))
    return rows


def figure_path(output) -> str:
    """The file matplotlib writes for ``output``: ``output`` itself, or ``output + ".png"`` when it has no
    extension (matplotlib adds it). Raises ValueError, naming ``output``, for a folder, an extension
    matplotlib cannot write, or a file that cannot be written (a file in the way of its folder, a folder
    without write permission: :func:`~siamese_detr.utils.writable.file_problem`), so that a tool can refuse
    it before it does its work."""
    from matplotlib.backend_bases import FigureCanvasBase

    output = os.fspath(output)
    if os.path.isdir(output):
        raise ValueError(f"{output} is a folder; give the file to write, e.g. {os.path.join(output, 'curves.png')}")
    ext = os.path.splitext(output)[1][1:].lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in formats:
        raise ValueError(f"{output}: matplotlib cannot write .{ext} files; give one of "
                         f"{', '.join('.' + f for f in sorted(formats))} (e.g. .png)")
    figure = output if ext else output + ".png"
    problem = file_problem(figure)
    if problem:
        raise ValueError(f"{figure} {problem}; give a file in a folder you can write to")
    return figure


LEGEND_INSIDE_MAX = 4  # curves whose legend fits inside a 6 x 4 in plot without hiding them
BASELINE_WORDS = ("scratch", "random init", "no pretraining")  # labels of a curve without pretraining
# colours kept by a method in every figure (the first label naming it); the baseline is grey and dashed
METHOD_COLOURS = (("siamese", "tab:blue"), ("up-detr", "tab:orange"), ("detreg", "tab:green"))
OTHER_COLOURS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
BASELINE_COLOUR = "tab:gray"


def is_baseline(label: str) -> bool:
    """True for the label of a run without pretraining (it contains ``scratch``, ``random init`` or ``no
    pretraining``, any case; e.g. ``from a random Transformer (scratch)``): drawn dashed in every figure,
    and grey when it is the first such label of the figure (:func:`method_colours`)."""
    return any(word in label.lower() for word in BASELINE_WORDS)


def method_colours(labels: Sequence[str]) -> Dict[str, str]:
    """``{label: matplotlib colour}``, the same for a method in every figure: grey for the baseline (see
    :func:`is_baseline`), blue for the first Siamese DETR label, orange UP-DETR, green DETReg; the others
    (and further labels of a method) take the next unused colour."""
    colours: Dict[str, str] = {}
    for label in labels:
        if is_baseline(label) and BASELINE_COLOUR not in colours.values():
            colours[label] = BASELINE_COLOUR
        for word, colour in METHOD_COLOURS:
            if label not in colours and word in label.lower() and colour not in colours.values():
                colours[label] = colour
    free = [c for c in (*OTHER_COLOURS, *(c for _, c in METHOD_COLOURS)) if c not in colours.values()]
    for label in labels:
        if label not in colours:
            colours[label] = free.pop(0) if free else None
    return colours


def _plot_curve(ax, label: str, points, band, colour, dodge: float) -> None:
    """One curve (markers at the evaluated iterations) and its shaded ``band``; a curve of ONE evaluation
    shows its band as an error bar instead (an area of no width is invisible), shifted ``dodge`` points
    sideways so that the error bars of several such curves do not hide each other."""
    from matplotlib.transforms import ScaledTranslation

    xs, ys = zip(*points)
    style = dict(color=colour, linestyle="--" if is_baseline(label) else "-", marker="o", label=label)
    if len(points) > 1 or not band:
        ax.plot(xs, ys, **style)
        if band and len(band) > 1:
            bx, lo, hi = zip(*band)
            ax.fill_between(bx, lo, hi, color=colour, alpha=0.15, linewidth=0)
        return
    (_, lo, hi), = band
    shift = ax.transData + ScaledTranslation(dodge / 72, 0, ax.figure.dpi_scale_trans)
    ax.errorbar(xs, ys, yerr=[[ys[0] - lo], [hi - ys[0]]], capsize=4, transform=shift, **style)
    ax.update_datalim([(xs[0], lo), (xs[0], hi)])  # a shifted artist does not widen the axes by itself
    ax.autoscale_view()


def _note_empty(ax, empty: Sequence[str], drawn: int) -> None:
    """Say which curves have no evaluation: in the legend when others are drawn, else across the axes."""
    if drawn:
        for label in empty:
            ax.plot([], [], linestyle="none", marker="x", color="k", label=f"{label}: no evaluation logged")
        return
    import textwrap

    names = "\n".join(textwrap.shorten(label, 60) for label in empty) or "(no run given)"
    ax.text(0.5, 0.5, f"no evaluation results to plot; runs without any:\n{names}", ha="center", va="center",
            transform=ax.transAxes, fontsize="medium")
    ax.set_xticks([])
    ax.set_yticks([])


def _mark_iterations(ax, curves) -> None:
    """Ticks at the evaluated iterations when there are few of them (a single evaluation would otherwise get
    meaningless ticks around it)."""
    iterations = sorted({it for points in curves.values() for it, _ in points})
    if 0 < len(iterations) <= 8:
        ax.set_xticks(iterations)
        if len(iterations) == 1:
            ax.set_xlim(iterations[0] * 0.5, iterations[0] * 1.5 if iterations[0] > 0 else 1)


def plot_ap_curves(curves: Dict[str, Sequence[Tuple[int, float]]], output: str, title: str,
                   ylabel: str = "COCO AP (%) on synthetic_shapes_val",
                   bands: Optional[Dict[str, Sequence[Tuple[int, float, float]]]] = None,
                   xlabel: str = "finetuning iteration") -> None:
    """Line plot of ``{label: [(iteration, AP)]}`` (AP in the unit of ``ylabel``: percent by default) written
    by matplotlib to the image file ``output``: format by its extension, PNG (``.png`` appended) when it has
    none, see :func:`figure_path`; its folder is created. ``xlabel`` goes under the x-axis; a ``title`` too
    wide for the figure is wrapped onto more lines. ``bands`` optionally
    shades ``{label: [(iteration, low, high)]}`` around the line of the same label (e.g. the seeds'
    min-max range around their mean). With more than ``LEGEND_INSIDE_MAX`` curves the legend goes to the
    right of the axes (a wider figure), where it cannot hide a curve. Colours follow :func:`method_colours`;
    a curve without points is named in the legend as such, and when no curve has any the axes say so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    legend_outside = len(curves) > LEGEND_INSIDE_MAX
    fig, ax = plt.subplots(figsize=(9.5 if legend_outside else 6, 4), dpi=100)
    colours = method_colours(list(curves))
    drawn = [label for label, points in curves.items() if points]
    single = [label for label in drawn if len(curves[label]) == 1]
    for label in drawn:
        dodge = 6.0 * (single.index(label) - (len(single) - 1) / 2) if label in single else 0.0
        _plot_curve(ax, label, curves[label], (bands or {}).get(label), colours[label], dodge)
    _note_empty(ax, [label for label in curves if label not in drawn], len(drawn))
    _mark_iterations(ax, curves)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        if legend_outside:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")
        else:
            ax.legend(loc="best", fontsize="small")
    fit_text(fig, ax.title)  # with fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output)
    plt.close(fig)


def label_box(image: np.ndarray, box, text: str, colour, thickness: int = 2, font_scale: float = 0.4,
              taken: Optional[List[Tuple[int, int, int, int]]] = None, draw_box: bool = True) -> None:
    """Draw the xyxy pixel ``box`` on the BGR ``image`` in place, with ``text`` on a filled tag of the box's
    colour (black or white letters, whichever contrasts with it) just above the box's top-left corner, or
    inside the box when there is no room above; the tag is kept inside the image.

    ``taken``: the tags already drawn on ``image`` (xyxy pixels; the new tag is appended). A tag that would
    cover one of them moves, in this order, right along the box's top edge, inside the box below its top
    edge, under the box, and then down the inside of the box, to the first place that is
    free, or stays where it was first put if no place next to or inside its box is; boxes with the same
    corner (jittered copies of one region) then keep readable labels.
    ``draw_box=False`` draws the tag alone (for boxes drawn before, in another order than their tags)."""
    import cv2

    x0, y0, x1, y1 = (int(round(float(c))) for c in box)
    if draw_box:
        cv2.rectangle(image, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, thickness)
    if not text:
        return
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    tag_w, tag_h = tw + 3, th + base + 2
    height, width = image.shape[:2]

    def fit(left: int, top: int) -> Tuple[int, int]:
        return min(max(0, left), max(0, width - tag_w - 1)), min(max(0, top), max(0, height - tag_h - 1))

    first = fit(x0, y0 - tag_h if y0 - tag_h >= 0 else y0)
    left, top = first
    if taken is not None:
        candidates = [first]
        candidates += [fit(x, first[1]) for x in range(x0 + tag_w + 2, max(x0, x1) - tag_w + 1, tag_w + 2)]
        candidates += [fit(x0, y0 + thickness), fit(x0, y1 + 1)]
        candidates += [fit(x0, y) for y in range(y0 + thickness + tag_h + 1, y1 - tag_h, tag_h + 1)]

        def free(corner: Tuple[int, int]) -> bool:
            a, b = corner
            return all(a + tag_w < c or c2 < a or b + tag_h < d or d2 < b for c, d, c2, d2 in taken)

        left, top = next((c for c in candidates if free(c)), first)
        taken.append((left, top, left + tag_w, top + tag_h))
    cv2.rectangle(image, (left, top), (left + tag_w, top + tag_h), colour, cv2.FILLED)
    b, g, r = (float(c) for c in colour)
    ink = (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)
    cv2.putText(image, text, (left + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, 1, cv2.LINE_AA)


def _draw_boxes(image: np.ndarray, boxes, labels: Sequence[str], colour, width: int) -> np.ndarray:
    """``image`` resized to ``width`` pixels wide with its ``boxes`` (xyxy pixels of the original image) and
    their ``labels`` drawn at that size, so that the text keeps a readable size whatever the image's."""
    import cv2

    scale = width / image.shape[1]
    out = cv2.resize(image, (width, int(round(image.shape[0] * scale))), interpolation=cv2.INTER_LINEAR)
    scaled = [[float(c) * scale for c in box] for box in boxes]
    for box in scaled:  # every box first, so that no outline crosses a tag drawn before it
        label_box(out, box, "", colour)
    taken: List[Tuple[int, int, int, int]] = []
    for box, text in zip(scaled, labels):
        label_box(out, box, text, colour, taken=taken, draw_box=False)
    return out


def draw_detections(config_file: str, runs: Dict[str, str], output: str, dataset: str = "synthetic_shapes_val",
                    num_images: int = 4, score_threshold: Optional[float] = 0.3, overrides: Optional[List[str]] = None,
                    cell: int = 240, top_k: bool = False) -> None:
    """A grid: one row per image of ``dataset`` (its first ``num_images``), columns = ground truth, then
    the detections (score >= ``score_threshold``; with ``top_k`` or no threshold the k best, k = the image's
    number of ground-truth objects but at least 1, whatever their score: :func:`detections_to_draw`) of each
    model ``runs = {label: checkpoint}`` built from ``config_file`` (after ``overrides``). Boxes xyxy in
    original-image pixels; each image resized to ``cell`` px wide. Written with ``cv2.imwrite`` to ``output``
    (format by its extension, e.g. ``detections.png``; its folder is created).

    Raises:
        CheckpointLoadError: a checkpoint lacks parameters of the model.
        OSError: ``output`` was not written.
    """
    import cv2
    import torch
    from detectron2.config import LazyConfig, instantiate
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    from ..data.image_io import read_image
    from ..engine import apply_checked_overrides
    from ..engine.checkpointing import CheckpointLoadError, SafeDetectionCheckpointer

    cfg = apply_checked_overrides(LazyConfig.load(config_file), list(overrides or []))
    cfg.dataloader.test.dataset.names = dataset
    classes = MetadataCatalog.get(dataset).thing_classes
    dicts = DatasetCatalog.get(dataset)[:num_images]
    mapper = instantiate(cfg.dataloader.test.mapper)
    columns = {"ground truth": []}
    # UnreadableImageError names the reason; BGR as cv2 draws and writes it (a copy: cv2 needs unit strides)
    images = [np.ascontiguousarray(read_image(d["file_name"], "BGR")) for d in dicts]
    for image, d in zip(images, dicts):
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
        columns["ground truth"].append(_draw_boxes(image, boxes, [classes[a["category_id"]] for a in d["annotations"]],
                                                   (0, 200, 0), cell))
    for label, checkpoint in runs.items():
        model = instantiate(cfg.model)
        model.to("cpu")
        checkpointer = SafeDetectionCheckpointer(model)  # no unpickling: the demo's own .pth files
        checkpointer.load(checkpoint)
        missing = checkpointer.parameters_not_loaded()
        if missing:  # never draw a random model's boxes as a trained one's
            raise CheckpointLoadError(f"{checkpoint} lacks {len(missing)} parameters of {config_file}'s model "
                                      f"(e.g. {missing[:4]}): give a checkpoint of that model")
        model.eval()
        columns[label] = []
        with torch.no_grad():
            for image, d in zip(images, dicts):
                inst = model([mapper(dict(d))])[0]["instances"]
                keep = detections_to_draw(inst.scores, len(d["annotations"]), score_threshold, top_k)
                texts = [f"{classes[int(c)]} {float(s):.2f}"
                         for c, s in zip(inst.pred_classes[keep], inst.scores[keep])]
                columns[label].append(_draw_boxes(image, inst.pred_boxes.tensor[keep].tolist(), texts, (0, 0, 255),
                                                  cell))
    rows = []
    for r in range(len(dicts)):
        tiles = []
        for label, tiles_of_column in columns.items():
            tiles.append(tiles_of_column[r])
        height = max(t.shape[0] for t in tiles)
        rows.append(np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 4), (0, 0))) for t in tiles], axis=1))
    grid = _with_header(rows, list(columns), cell)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if not cv2.imwrite(output, grid):
        raise OSError(f"could not write {output}")


def detections_to_draw(scores: "torch.Tensor", num_objects: int, score_threshold: Optional[float] = 0.3,
                       top_k: bool = False) -> "torch.Tensor":
    """Which of one image's detections (``scores`` [N]) a column of ``detections.png`` draws, as a bool mask
    [N]: with ``top_k`` or no ``score_threshold``, the ``max(1, num_objects)`` highest-scored (``num_objects``:
    the image's ground-truth objects); otherwise those scoring at least ``score_threshold``."""
    import torch

    if score_threshold is not None and not top_k:
        return scores >= score_threshold
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[scores.argsort(descending=True)[: max(1, num_objects)]] = True
    return keep


def _with_header(rows: List[np.ndarray], labels: Sequence[str], cell: int) -> np.ndarray:
    """The rows of tiles stacked under a white header naming each column (in the colour its boxes have:
    green for the ground truth, red for a model's detections)."""
    import cv2

    width = max(r.shape[1] for r in rows)
    header = np.full((24, width, 3), 255, np.uint8)
    for i, label in enumerate(labels):
        ink = (0, 140, 0) if i == 0 else (0, 0, 200)
        cv2.putText(header, label, (i * (cell + 4) + 2, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, ink, 1, cv2.LINE_AA)
    return np.concatenate([header] + [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
