"""What the demo's figures draw, checked on the figure and the pixels: the AP history's lines, colours and
styles of the curves, the bands and error bars, the ticks of a few evaluations, and the box tags of
``detections.png`` (where each tag goes, its ink, the scale of the boxes, the column header)."""
import numpy as np
import pytest

from siamese_detr.demo.plots import (MetricsFileError, _draw_boxes, _with_header, eval_history, is_baseline, label_box,
                                     method_colours, plot_ap_curves)

from figure_capture import figures_at_save


# ------------------------------------------------------------------------------------------ AP history
def test_a_result_line_without_an_iteration_is_no_point_of_the_history(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"bbox/AP": 9.0}\n{"iteration": 99, "bbox/AP": 1.5, "total_loss": 2.0}\n')
    assert eval_history(metrics) == [(100, 1.5)]


def test_an_iteration_that_is_not_a_number_names_its_line(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"iteration": 99, "bbox/AP": 1.5, "total_loss": 2.0}\n{"iteration": "199", "bbox/AP": 2.5}\n')
    with pytest.raises(MetricsFileError, match=r"metrics\.json:2: 'bbox/AP' = 2\.5 at iteration '199': expected "
                                               r"numbers"):
        eval_history(metrics)


# ------------------------------------------------------------------------------------------ colours
def test_a_baseline_is_told_by_its_words_in_any_case():
    assert is_baseline("Scratch") and is_baseline("Random Init, seed 1") and is_baseline("No Pretraining")
    assert not is_baseline("Siamese DETR")


def test_only_the_first_baseline_is_grey_and_every_label_gets_its_own_colour():
    colours = method_colours(["scratch, seed 0", "scratch, seed 1"])
    assert colours["scratch, seed 0"] == "tab:gray" and colours["scratch, seed 1"] not in ("tab:gray", None)
    many = method_colours([f"run {i}" for i in range(9)])  # past the six other colours: the methods' unused ones
    assert None not in many.values() and len(set(many.values())) == 9


# ------------------------------------------------------------------------------------------ AP curves
def _plotted(monkeypatch, tmp_path, curves, bands=None):
    figures = figures_at_save(monkeypatch)
    plot_ap_curves(curves, str(tmp_path / "ap.png"), "t", bands=bands)
    return figures[-1].axes[0]


def test_the_baseline_is_dashed_and_a_band_is_shaded(monkeypatch, tmp_path):
    ax = _plotted(monkeypatch, tmp_path, {"pretrained": [(100, 1.0), (200, 2.0)], "scratch": [(100, 0.5), (200, 1.0)]},
                  bands={"pretrained": [(100, 0.5, 1.5), (200, 1.5, 2.5)]})
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles == {"pretrained": "-", "scratch": "--"}
    (band,) = ax.collections  # the shaded min-max range of the one curve with a band
    vertices = band.get_paths()[0].vertices
    assert vertices[:, 1].min() == pytest.approx(0.5) and vertices[:, 1].max() == pytest.approx(2.5)


def test_a_few_evaluations_get_ticks_at_their_iterations(monkeypatch, tmp_path):
    ax = _plotted(monkeypatch, tmp_path, {"a": [(100, 1.0), (250, 2.0), (400, 2.5)]})
    assert list(ax.get_xticks()) == [100, 250, 400]


def test_single_evaluations_show_error_bars_side_by_side_around_their_iteration(monkeypatch, tmp_path):
    ax = _plotted(monkeypatch, tmp_path, {"a": [(800, 20.0)], "b": [(800, 21.0)]},
                  bands={"a": [(800, 18.0, 23.0)], "b": [(800, 19.0, 22.0)]})
    assert ax.get_xlim() == (400.0, 1200.0)  # half the iteration to one and a half times it
    bars = ax.containers
    assert len(bars) == 2
    # each bar's line drawn 3 points (6 apart) to the side of the iteration: 100 dpi, 72 points per inch
    xs = [bar.lines[0].get_transform().transform((800, 20.0))[0] for bar in bars]
    assert xs[1] - xs[0] == pytest.approx(6 * 100 / 72)


# ------------------------------------------------------------------------------------------ box tags
RED, GREEN = (0, 0, 255), (0, 255, 0)


def test_the_box_outline_is_drawn_and_an_empty_label_draws_no_tag():
    image = np.zeros((100, 100, 3), np.uint8)
    label_box(image, [20, 40, 60, 80], "", RED)
    drawn = (image == RED).all(axis=2)
    assert drawn[40, 20:60].all() and drawn[40:80, 20].all()  # the top and left edges
    assert not drawn[:39].any()  # no tag above the box


def test_a_tag_at_the_right_edge_of_the_image_stays_whole_inside_it():
    alone = np.zeros((100, 200, 3), np.uint8)
    label_box(alone, [20, 40, 60, 80], "ring 0.50", RED, draw_box=False)
    edge = np.zeros((100, 100, 3), np.uint8)
    label_box(edge, [90, 40, 99, 80], "ring 0.50", RED, draw_box=False)
    assert (edge == RED).all(axis=2).sum() == (alone == RED).all(axis=2).sum()  # the same tag, none of it cut


def test_a_box_near_the_top_gets_its_tag_inside_it():
    """No room above a box 5 px from the top: the tag goes inside the box, from its top edge down."""
    image = np.zeros((100, 100, 3), np.uint8)
    label_box(image, [20, 5, 60, 60], "ring", RED, draw_box=False)
    rows = np.nonzero((image == RED).all(axis=2).any(axis=1))[0]
    assert rows.min() == 5


def test_a_tag_with_no_room_beside_the_first_goes_inside_the_box_below_its_top_edge():
    image = np.zeros((100, 100, 3), np.uint8)
    taken = []
    for colour in (RED, GREEN):  # a narrow box: no room to the right of the first tag
        label_box(image, [20, 40, 30, 90], "12", colour, taken=taken, thickness=2)
    assert taken[0][1] < 40 and taken[1][:2] == (20, 42)  # above the box, then just under its top edge


@pytest.mark.parametrize("colour, dark_ink", [((0, 160, 255), True), ((255, 160, 0), False)])
def test_the_tag_ink_contrasts_with_the_box_colour_by_its_luminance(colour, dark_ink):
    """Luminance 0.299 R + 0.587 G + 0.114 B of the BGR colour: orange (R 255, G 160) is 170, light enough
    for black letters; azure (B 255, G 160) is 123, dark enough for white ones."""
    image = np.full((60, 100, 3), 128, np.uint8)
    taken = []
    label_box(image, [20, 30, 80, 55], "8888", colour, taken=taken, draw_box=False)
    left, top, right, bottom = taken[0]
    tag = image[top:bottom + 1, left:right + 1].reshape(-1, 3).astype(int)
    letters = tag[(tag != colour).any(axis=1)]
    assert len(letters) > 10
    assert (letters.max(axis=1) < 100).any() if dark_ink else (letters.min(axis=1) > 200).any()


def test_boxes_are_drawn_at_the_scale_of_the_resized_image():
    image = np.zeros((100, 200, 3), np.uint8)
    out = _draw_boxes(image, [[100, 50, 150, 90]], [""], RED, width=100)  # half the size
    assert out.shape == (50, 100, 3)
    drawn = (out == RED).all(axis=2)
    assert drawn[25, 50:75].all() and not drawn[50 - 1, :].any()  # the top edge at y = 25, x from 50


def test_the_header_names_the_ground_truth_in_green_and_a_model_in_red():
    rows = [np.zeros((20, 2 * (50 + 4), 3), np.uint8)]
    header = _with_header(rows, ["truth", "model"], cell=50)[:24].astype(int)
    truth, model = (part[(part != 255).any(axis=2)] for part in (header[:, :54], header[:, 54:]))  # the letters
    assert len(truth) and len(model)
    assert (truth[:, 1] > truth[:, 2]).all() and (model[:, 2] > model[:, 1]).all()
