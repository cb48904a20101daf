"""Figures of the demo: AP against finetuning iteration, and detections next to the ground truth.

Both read what the training tool wrote (``metrics.json``: one JSON object per line; evaluation results
under ``task/metric`` keys with the ``iteration`` they were computed at) or run a model checkpoint.
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..utils.metrics_lines import MetricsFileError, metrics_records

__all__ = ["MetricsFileError", "metrics_records", "eval_history", "seed_summary", "figure_path", "plot_ap_curves",
           "draw_detections"]


def eval_history(metrics_json, key: str = "bbox/AP") -> List[Tuple[int, float]]:
    """``[(iteration, value)]`` of every line of a detectron2 ``metrics.json`` that holds ``key``; the
    iteration is the number of finished iterations; later lines win for the same iteration. A missing file
    gives ``[]``; lines are read by :func:`metrics_records` (a torn line is skipped with a warning, any other
    line that is not a JSON object, or a ``key`` / ``iteration`` that is not a number, raises
    :class:`MetricsFileError` naming the line)."""
    found: Dict[int, float] = {}
    if os.path.isfile(metrics_json):
        for lineno, row in metrics_records(metrics_json):
            if key in row and "iteration" in row:
                value, iteration = row[key], row["iteration"]
                if not _is_number(value) or not _is_number(iteration):
                    raise MetricsFileError(f"{metrics_json}:{lineno}: {key!r} = {value!r} at iteration "
                                           f"{iteration!r}: expected numbers")
                # detectron2's labels: a line the trainer wrote (with losses / timings: a periodic evaluation)
                # and an --eval-only record (the checkpoint's iteration) hold the 0-based index of the last
                # finished iteration; a line holding only results (the evaluation after training) holds the
                # number of finished iterations, which is what is returned for all three
                zero_based = bool(row.get("eval_only")) or any("/" not in k and k != "iteration" for k in row)
                found[int(iteration) + int(zero_based)] = float(value)
    return sorted(found.items())


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    extension (matplotlib adds it). Raises ValueError, naming ``output``, for a folder or an extension
    matplotlib cannot write, so that a tool can refuse it before it does its work."""
    from matplotlib.backend_bases import FigureCanvasBase

    output = os.fspath(output)
    if os.path.isdir(output):
        raise ValueError(f"{output} is a folder; give the file to write, e.g. {os.path.join(output, 'curves.png')}")
    ext = os.path.splitext(output)[1][1:].lower()
    if not ext:
        return output + ".png"
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext not in formats:
        raise ValueError(f"{output}: matplotlib cannot write .{ext} files; give one of "
                         f"{', '.join('.' + f for f in sorted(formats))} (e.g. .png)")
    return output


LEGEND_INSIDE_MAX = 4  # curves whose legend fits inside a 6 x 4 in plot without hiding them


def plot_ap_curves(curves: Dict[str, Sequence[Tuple[int, float]]], output: str, title: str,
                   ylabel: str = "COCO AP (%) on synthetic_shapes_val",
                   bands: Optional[Dict[str, Sequence[Tuple[int, float, float]]]] = None) -> None:
    """Line plot of ``{label: [(iteration, AP)]}`` written to the PNG ``output``; ``bands`` optionally
    shades ``{label: [(iteration, low, high)]}`` around the line of the same label (e.g. the seeds'
    min-max range around their mean). With more than ``LEGEND_INSIDE_MAX`` curves the legend goes to the
    right of the axes (a wider figure), where it cannot hide a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    legend_outside = len(curves) > LEGEND_INSIDE_MAX
    fig, ax = plt.subplots(figsize=(9.5 if legend_outside else 6, 4), dpi=100)
    for label, points in curves.items():
        if points:
            xs, ys = zip(*points)
            line, = ax.plot(xs, ys, marker="o", label=label)
            band = (bands or {}).get(label)
            if band:
                bx, lo, hi = zip(*band)
                ax.fill_between(bx, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel("finetuning iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend_outside:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")
    else:
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output)
    plt.close(fig)


def _draw_boxes(image: np.ndarray, boxes, labels: Sequence[str], colour) -> np.ndarray:
    import cv2

    image = image.copy()
    for (x0, y0, x1, y1), text in zip(boxes, labels):
        cv2.rectangle(image, (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1))), colour, 1)
        cv2.putText(image, text, (int(round(x0)) + 1, max(8, int(round(y0)) - 2)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.3, colour, 1, cv2.LINE_AA)
    return image


def draw_detections(config_file: str, runs: Dict[str, str], output: str, dataset: str = "synthetic_shapes_val",
                    num_images: int = 4, score_threshold: float = 0.3, overrides: Optional[List[str]] = None,
                    cell: int = 240, top_k: bool = False) -> None:
    """A grid: one row per image of ``dataset`` (its first ``num_images``), columns = ground truth, then
    the detections (score >= ``score_threshold``; with ``top_k`` the k best, k = the image's number of
    ground-truth objects, whatever their score) of each model ``runs = {label: checkpoint}`` built from
    ``config_file``. Boxes xyxy in original-image pixels; images resized to ``cell`` px wide."""
    import cv2
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig, instantiate
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    from ..engine import apply_checked_overrides

    cfg = apply_checked_overrides(LazyConfig.load(config_file), list(overrides or []))
    cfg.dataloader.test.dataset.names = dataset
    classes = MetadataCatalog.get(dataset).thing_classes
    dicts = DatasetCatalog.get(dataset)[:num_images]
    mapper = instantiate(cfg.dataloader.test.mapper)
    columns = {"ground truth": []}
    images = [cv2.imread(d["file_name"], cv2.IMREAD_COLOR) for d in dicts]
    for image, d in zip(images, dicts):
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
        columns["ground truth"].append(_draw_boxes(image, boxes, [classes[a["category_id"]] for a in d["annotations"]],
                                                   (0, 200, 0)))
    for label, checkpoint in runs.items():
        model = instantiate(cfg.model)
        model.to("cpu")
        DetectionCheckpointer(model).load(checkpoint)
        model.eval()
        columns[label] = []
        with torch.no_grad():
            for image, d in zip(images, dicts):
                inst = model([mapper(dict(d))])[0]["instances"]
                keep = inst.scores >= score_threshold
                if score_threshold is None or top_k:  # the k best, k = number of ground-truth objects
                    keep = torch.zeros_like(inst.scores, dtype=torch.bool)
                    keep[inst.scores.argsort(descending=True)[: max(1, len(d["annotations"]))]] = True
                texts = [f"{classes[int(c)]} {float(s):.2f}"
                         for c, s in zip(inst.pred_classes[keep], inst.scores[keep])]
                columns[label].append(_draw_boxes(image, inst.pred_boxes.tensor[keep].tolist(), texts, (0, 0, 255)))
    rows = []
    for r in range(len(dicts)):
        tiles = []
        for label, tiles_of_column in columns.items():
            tile = tiles_of_column[r]
            scale = cell / tile.shape[1]
            tile = cv2.resize(tile, (cell, int(round(tile.shape[0] * scale))), interpolation=cv2.INTER_LINEAR)
            tiles.append(tile)
        height = max(t.shape[0] for t in tiles)
        rows.append(np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 4), (0, 0))) for t in tiles], axis=1))
    width = max(r.shape[1] for r in rows)
    header = np.full((18, width, 3), 255, np.uint8)
    for i, label in enumerate(columns):
        cv2.putText(header, label, (i * (cell + 4) + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    grid = np.concatenate([header] + [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if not cv2.imwrite(output, grid):
        raise OSError(f"could not write {output}")
