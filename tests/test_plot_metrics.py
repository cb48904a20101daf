"""tools/plot_metrics.py reads detectron2 metrics.json and writes a PNG."""
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from figure_capture import figures_at_save

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("plot_metrics", ROOT / "tools" / "plot_metrics.py")
plot_metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_metrics)


def _write_metrics(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_curves_sum_losses_skip_aux_and_keep_eval(tmp_path):
    metrics = tmp_path / "metrics.json"
    _write_metrics(metrics, [
        {"iteration": 19, "loss_ce": 2.0, "loss_bbox": 1.0, "loss_ce_0": 3.0, "lr": 1e-4},
        {"iteration": 39, "loss_ce": 1.5, "loss_bbox": 0.5, "loss_ce_0": 2.0, "total_loss": 4.0,
         "loss_ce_one2many": 0.7, "loss_ce_1_one2many": 0.9},
        {"iteration": 39, "bbox/AP": 12.5, "eval/finished_iterations": 40},
    ])
    records = plot_metrics.read_metrics(metrics)
    curves = plot_metrics.loss_curves(records)
    assert set(curves) == {"loss_ce", "loss_bbox", "total_loss", "loss_ce_one2many"}
    assert curves["total_loss"] == ([19, 39], [6.0, 4.0])
    assert {"loss_ce_0", "loss_ce_1_one2many"} <= set(plot_metrics.loss_curves(records, with_aux=True))
    assert plot_metrics.eval_results(records) == {"bbox/AP": 12.5}
    # resumed from a checkpoint at iteration 19 after the interrupted run had logged 39: logged again from there
    replay = records + [{"iteration": 29, "loss_ce": 1.0, "loss_bbox": 0.5},
                        {"iteration": 39, "loss_ce": 0.75, "loss_bbox": 0.5}]
    assert plot_metrics.loss_curves(replay)["total_loss"] == ([19, 29, 39], [6.0, 1.5, 1.25])

    out = tmp_path / "curves.png"
    assert plot_metrics.main([str(metrics), "--output", str(out)]) == 0
    import matplotlib.image as mpimg

    image = mpimg.imread(out)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert float(np.std(image[..., :3])) > 0.01  # not a blank canvas


def test_a_file_that_is_not_metrics_json_names_the_line(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text('{"iteration": 1, "loss_ce": 1}\nnot json\n')
    with pytest.raises(SystemExit, match="metrics.json:2"):
        plot_metrics.read_metrics(bad)


@pytest.mark.parametrize("text, message", [
    ('{"iteration": 1, "loss_ce": 1}\n5\n', "metrics.json:2: '5' is a number, not a JSON object"),
    ("null\n", "metrics.json:1: 'null' is null, not a JSON object"),
])
def test_a_line_that_is_not_an_object_names_the_line(tmp_path, text, message):
    bad = tmp_path / "metrics.json"
    bad.write_text(text)
    with pytest.raises(SystemExit, match=message):
        plot_metrics.read_metrics(bad)


def test_output_path_written_and_unsupported_extension(tmp_path, capsys):
    metrics = tmp_path / "metrics.json"
    _write_metrics(metrics, [{"iteration": 19, "loss_ce": 2.0}, {"iteration": 39, "loss_ce": 1.0}])
    # no extension: matplotlib writes noext.png, and that is the path printed
    assert plot_metrics.main([str(metrics), "--output", str(tmp_path / "png" / "noext")]) == 0
    assert f"wrote {tmp_path / 'png' / 'noext.png'}" in capsys.readouterr().out
    assert (tmp_path / "png" / "noext.png").stat().st_size > 0
    # an extension matplotlib cannot write, or a folder: refused up front (argparse error), nothing written
    for output, message in [(tmp_path / "y.txt", r"y\.txt: matplotlib cannot write \.txt files"),
                            (tmp_path / "png", "is a folder")]:
        with pytest.raises(SystemExit) as exc:
            plot_metrics.main([str(metrics), "--output", str(output)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err
    assert not (tmp_path / "y.txt").exists() and not (tmp_path / "png.png").exists()


def _inside(text, box) -> bool:
    extent = text.get_window_extent()
    return box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1


def test_titles_fit_in_the_figure_and_read_well(tmp_path, monkeypatch):
    """One input (the narrowest figure): the figure's title lies inside it, wrapped rather than cut off; a long
    --labels title lies above its own panel; "of all decoder layers" with --aux, not "of the all"."""
    figures = figures_at_save(monkeypatch)
    metrics = tmp_path / "metrics.json"
    _write_metrics(metrics, [{"iteration": 19, "loss_ce": 2.0, "loss_ce_0": 3.0},
                             {"iteration": 39, "loss_ce": 1.0, "loss_ce_0": 2.0}])
    long_label = "a rather long label for the pretraining run of Siamese DETR on the built-in world"
    plot_metrics.main([str(metrics), "--output", str(tmp_path / "a.png"), "--labels", long_label])
    plot_metrics.main([str(metrics), "--output", str(tmp_path / "b.png"), "--aux"])
    titles = []
    for fig in figures:
        title = fig._suptitle
        assert _inside(title, fig.bbox), (title.get_text(), title.get_window_extent(), fig.bbox)
        panel = fig.axes[0]
        assert _inside(panel.title, fig.bbox)
        extent = panel.title.get_window_extent()
        assert panel.bbox.x0 <= extent.x0 and extent.x1 <= panel.bbox.x1
        titles.append(" ".join(title.get_text().split()))
    assert titles == ["Training losses per logged iteration (loss terms of the final decoder layer)",
                      "Training losses per logged iteration (loss terms of all decoder layers)"]
    assert " ".join(figures[0].axes[0].title.get_text().split()) == long_label


def test_every_loss_term_has_a_style_of_its_own(tmp_path, monkeypatch):
    """Many terms (--aux, hybrid matching): no two lines share both colour and line style; a term's
    _one2many copy keeps its colour, dashed."""
    from matplotlib.colors import to_hex

    terms = [f"loss_{t}{layer}" for t in ("bbox", "ce", "giou", "region") for layer in ("", "_0", "_1", "_2", "_3")]
    names = terms + [f"{t}_one2many" for t in terms]  # 20 terms and their 20 copies
    styles = plot_metrics._term_styles(sorted(names + [f"loss_extra_{i}" for i in range(15)]))
    assert len({(s["color"], s["linestyle"]) for s in styles.values()}) == len(styles) == 55
    assert styles["loss_ce_1_one2many"]["color"] == styles["loss_ce_1"]["color"]
    assert styles["loss_ce_1_one2many"]["linestyle"] != styles["loss_ce_1"]["linestyle"]

    figures = figures_at_save(monkeypatch)
    metrics = tmp_path / "metrics.json"
    _write_metrics(metrics, [{"iteration": it, **{n: 1.0 + it / 100 for n in names}} for it in (19, 39)])
    plot_metrics.main([str(metrics), "--output", str(tmp_path / "c.png"), "--aux"])
    lines = figures[0].axes[1].get_lines()
    assert len(lines) == 40
    looks = {(to_hex(line.get_color()), line.get_linestyle()) for line in lines}
    assert len(looks) == 40


def test_a_single_logged_point_is_drawn_as_a_marker(tmp_path, monkeypatch):
    figures = figures_at_save(monkeypatch)
    metrics = tmp_path / "metrics.json"
    _write_metrics(metrics, [{"iteration": 0, "loss_ce": 1.0, "loss_bbox": 2.0}])
    plot_metrics.main([str(metrics), "--output", str(tmp_path / "one.png")])
    top, bottom = figures[0].axes[:2]
    for line in top.get_lines() + bottom.get_lines():
        assert len(line.get_xdata()) == 1
        assert line.get_marker() not in ("None", "", " ", None) and line.get_markersize() > 0
    low, high = bottom.get_xlim()
    assert [t for t in bottom.get_xticks() if low <= t <= high] == [0]  # whole iterations, not -0.04 ... 0.04

    many = tmp_path / "many.json"
    _write_metrics(many, [{"iteration": it, "loss_ce": 1.0} for it in range(plot_metrics.FEW_POINTS + 1)])
    plot_metrics.main([str(many), "--output", str(tmp_path / "many.png")])
    assert all(line.get_marker() in ("None", "", " ", None) for line in figures[1].axes[1].get_lines())


def test_help_names_the_default_output(capsys):
    with pytest.raises(SystemExit):
        plot_metrics.main(["--help"])
    assert "(default: ./loss_curves.png)" in " ".join(capsys.readouterr().out.split())


def test_a_run_folder_means_its_metrics_json(tmp_path, capsys, monkeypatch):
    """An existing training output folder is read as DIR/metrics.json (titled with the folder's name); a folder
    without one, and a path that does not exist, are usage errors (exit 2) naming the path and the fix."""
    figures = figures_at_save(monkeypatch)
    run = tmp_path / "run_dir"
    run.mkdir()
    _write_metrics(run / "metrics.json", [{"iteration": 19, "loss_ce": 2.0}, {"iteration": 39, "loss_ce": 1.0}])
    out = tmp_path / "curves.png"
    assert plot_metrics.main([str(run), "--output", str(out)]) == 0
    assert out.stat().st_size > 0 and figures[0].axes[0].get_title() == "run_dir"
    empty = tmp_path / "empty_run"
    empty.mkdir()
    for path, message in [(empty, f"no metrics.json in {empty}: give a training output folder"),
                          (tmp_path / "nowhere", f"{tmp_path / 'nowhere'} does not exist: give a metrics.json file "
                           "or the training output folder holding it")]:
        with pytest.raises(SystemExit) as exc:
            plot_metrics.main([str(run), str(path), "--output", str(tmp_path / "x.png")])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"error: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_blank_lines_are_skipped_and_line_numbers_count_them(tmp_path, capsys):
    """Blank lines (a file edited by hand, a trailing newline) are skipped silently; the line numbers of the
    warnings and errors still count them as lines of the file."""
    from siamese_detr.utils.metrics_lines import metrics_records

    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"iteration": 1, "loss_ce": 1}\n\n   \n{"iteration": 2, "loss_ce": 0.5}\n{"iterat\n\n')
    assert [(n, r["iteration"]) for n, r in metrics_records(metrics)] == [(1, 1), (4, 2)]
    assert "metrics.json:5: skipping a line cut short" in capsys.readouterr().err
    assert plot_metrics.loss_curves(plot_metrics.read_metrics(metrics))["loss_ce"] == ([1, 2], [1.0, 0.5])


def test_log_scale_only_for_positive_values_spanning_a_decade():
    """Log y-axis when every value is > 0 and max >= 10 x min (a zero has no logarithm)."""
    assert plot_metrics.use_log_scale([1.0, 10.0]) and plot_metrics.use_log_scale([0.02, 0.5, 0.2])
    assert not plot_metrics.use_log_scale([1.0, 9.99])
    assert not plot_metrics.use_log_scale([0.0, 5.0]) and not plot_metrics.use_log_scale([-1.0, 20.0])
    assert not plot_metrics.use_log_scale([])


def test_each_panel_axis_takes_its_scale_from_its_own_values(tmp_path, monkeypatch):
    """Total loss 3.0 -> 2.5 (linear) above loss terms spanning 0.01 .. 2.0 (log): the bottom axis decides on
    the terms' values, not the total's; and the other way round in a second run."""
    figures = figures_at_save(monkeypatch)
    metrics = tmp_path / "metrics.json"
    _write_metrics(metrics, [{"iteration": 19, "loss_ce": 2.0, "loss_bbox": 0.01, "total_loss": 3.0},
                             {"iteration": 39, "loss_ce": 1.5, "loss_bbox": 0.02, "total_loss": 2.5}])
    plot_metrics.main([str(metrics), "--output", str(tmp_path / "a.png")])
    top, bottom = figures[0].axes[:2]
    assert (top.get_yscale(), bottom.get_yscale()) == ("linear", "log")
    assert bottom.get_ylabel() == "loss term (log scale)" and top.get_ylabel() == "total loss"
    _write_metrics(metrics, [{"iteration": 19, "loss_ce": 2.0, "total_loss": 30.0},
                             {"iteration": 39, "loss_ce": 1.5, "total_loss": 2.5}])
    plot_metrics.main([str(metrics), "--output", str(tmp_path / "b.png")])
    top, bottom = figures[1].axes[:2]
    assert (top.get_yscale(), bottom.get_yscale()) == ("log", "linear")


def test_series_of_up_to_few_points_get_markers(tmp_path, monkeypatch):
    """Two logged points, and exactly FEW_POINTS of them, are still drawn with markers (a short run's curve
    reads as its logged iterations)."""
    figures = figures_at_save(monkeypatch)
    for count in (2, plot_metrics.FEW_POINTS):
        metrics = tmp_path / f"m{count}.json"
        _write_metrics(metrics, [{"iteration": it, "loss_ce": 1.0 + it} for it in range(count)])
        plot_metrics.main([str(metrics), "--output", str(tmp_path / f"m{count}.png")])
    for fig in figures:
        lines = fig.axes[0].get_lines() + fig.axes[1].get_lines()
        assert lines and all(line.get_marker() == "o" for line in lines)


def test_the_first_ten_terms_take_matplotlibs_default_colours():
    """The palette starts with matplotlib's ten default (tab10) colours, in order, then the ten light tab20
    ones: the first terms of a panel are not told apart by a dark/light shade of one hue."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = plot_metrics._palette()
    assert palette[:10] == [to_hex(c) for c in colormaps["tab10"].colors]
    assert len(set(palette)) == 20
    styles = plot_metrics._term_styles(["loss_a", "loss_b"])
    assert (styles["loss_a"]["color"], styles["loss_b"]["color"]) == tuple(palette[:2])


def test_labels_must_match_the_inputs_and_an_upper_case_extension_is_written(tmp_path, capsys):
    """Two inputs with one ``--labels`` title is a usage error (exit 2) naming both counts, nothing written;
    ``--output X.PNG`` is a format matplotlib writes (the extension's case does not matter)."""
    metrics = tmp_path / "metrics.json"
    _write_metrics(metrics, [{"iteration": 19, "loss_ce": 2.0}, {"iteration": 39, "loss_ce": 1.0}])
    with pytest.raises(SystemExit) as exc:
        plot_metrics.main([str(metrics), str(metrics), "--labels", "one", "--output", str(tmp_path / "x.png")])
    assert exc.value.code == 2 and "error: 1 labels for 2 inputs" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert plot_metrics.output_file(tmp_path / "X.PNG") == tmp_path / "X.PNG"
    assert plot_metrics.main([str(metrics), "--output", str(tmp_path / "X.PNG")]) == 0
    assert (tmp_path / "X.PNG").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_numeric_loss_values_make_curves():
    """A ``loss*`` key whose value is not a number (a string, a list, null) is no curve and no part of the
    summed total."""
    records = [{"iteration": 9, "loss_ce": 1.0, "loss_scaler": "dynamic", "loss_weights": [1, 2], "loss_x": None}]
    curves = plot_metrics.loss_curves(records)
    assert curves == {"loss_ce": ([9], [1.0]), "total_loss": ([9], [1.0])}
