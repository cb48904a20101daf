"""Presentation of the figures: a clear message for empty input, one colour per method in every figure, log
scale for losses spanning decades, and box labels on a tag of the box's colour."""
import importlib.util
from pathlib import Path

import numpy as np

from siamese_detr.demo.plots import label_box, method_colours, plot_ap_curves

ROOT = Path(__file__).resolve().parents[1]


def _texts_at_save(monkeypatch):
    """Record, at each savefig, the texts of the axes and the labels of their legends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = []
    original = plt.Figure.savefig

    def record(fig, *args, **kwargs):
        ax = fig.axes[0]
        legend = ax.get_legend()
        seen.append(([t.get_text() for t in ax.texts], [t.get_text() for t in legend.get_texts()] if legend else []))
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", record)
    return seen


def test_ap_curves_say_which_runs_have_no_evaluation(tmp_path, monkeypatch):
    seen = _texts_at_save(monkeypatch)
    plot_ap_curves({"pretrained": [], "scratch": []}, str(tmp_path / "none.png"), "t")
    plot_ap_curves({"pretrained": [(100, 1.0), (200, 2.0)], "scratch": []}, str(tmp_path / "one.png"), "t")
    (texts, legend), (texts_one, legend_one) = seen
    assert len(texts) == 1 and "no evaluation results to plot" in texts[0] and "scratch" in texts[0]
    assert legend == []
    assert texts_one == [] and legend_one == ["pretrained", "scratch: no evaluation logged"]


def test_a_single_evaluation_shows_its_range_as_an_error_bar(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    axes = []
    original = plt.Figure.savefig
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, *a, **k: (axes.append(fig.axes[0]), original(fig, *a, **k)))
    plot_ap_curves({"a": [(800, 20.0)]}, str(tmp_path / "one.png"), "t", bands={"a": [(800, 18.0, 23.0)]})
    ax = axes[0]
    assert list(ax.get_xticks()) == [800]
    low, high = ax.get_ylim()
    assert low < 18.0 and high > 23.0  # the whole min-max bar is in view


def test_method_colours_are_the_same_whatever_the_order():
    first = method_colours(["scratch", "UP-DETR", "DETReg", "Siamese DETR"])
    second = method_colours(["from Siamese DETR pretraining", "from a random Transformer (scratch)"])
    assert first["scratch"] == second["from a random Transformer (scratch)"] == "tab:gray"
    assert first["Siamese DETR"] == second["from Siamese DETR pretraining"] == "tab:blue"
    many = method_colours(["Siamese DETR, 600", "Siamese DETR, 2400", "other"])
    assert len(set(many.values())) == 3 and many["Siamese DETR, 600"] == "tab:blue"


def test_loss_axes_go_log_only_for_positive_values_spanning_decades():
    spec = importlib.util.spec_from_file_location("plot_metrics_review", ROOT / "tools" / "plot_metrics.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.use_log_scale([35.0, 0.2])
    assert not tool.use_log_scale([35.0, 10.0])  # less than a decade
    assert not tool.use_log_scale([35.0, -0.3, 0.2])  # a negative term (e.g. a similarity loss)
    assert not tool.use_log_scale([])


def test_label_tag_above_the_box_or_inside_it_at_the_top_edge():
    image = np.zeros((100, 100, 3), np.uint8)
    label_box(image, [20, 40, 60, 80], "ring 0.50", (0, 0, 255))
    red = (image == (0, 0, 255)).all(axis=2)
    assert red[26:39, 20:60].sum() > 100  # a filled tag of the box's colour just above the box
    assert (image[60, 40] == 0).all()  # the inside of the box stays clear
    top = np.zeros((100, 100, 3), np.uint8)
    label_box(top, [20, 0, 60, 40], "ring", (255, 255, 255))
    tag = top[1:12, 20:40]
    assert (tag == 255).any() and (tag < 128).any()  # a white tag with dark letters, inside the box


def test_label_tags_of_boxes_sharing_a_corner_do_not_cover_each_other():
    image = np.zeros((100, 100, 3), np.uint8)
    taken = []
    red, green, blue = (0, 0, 255), (0, 255, 0), (255, 0, 0)
    for colour in (red, green, blue):  # three jittered copies of one region: the same top-left corner
        label_box(image, [20, 40, 60, 80], "12", colour, taken=taken, draw_box=False)
    areas = {c: (image == c).all(axis=2) for c in (red, green, blue)}
    tag_area = (taken[0][2] - taken[0][0] + 1) * (taken[0][3] - taken[0][1] + 1)
    for colour, mask in areas.items():
        assert mask.sum() > tag_area // 2, colour  # each tag's fill is mostly visible
    assert areas[red][26:39, 20:40].sum() > tag_area // 2  # the first keeps its place above the box
    lone = np.zeros_like(image)
    label_box(lone, [20, 40, 60, 80], "12", red, draw_box=False)
    assert ((lone == red).all(axis=2) == areas[red]).all()  # the same place as without the others
