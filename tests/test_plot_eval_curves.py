"""tools/plot_eval_curves.py: groups of runs -> mean and min-max per evaluated iteration, a table and a PNG."""
import importlib.util
import json
import re
from pathlib import Path

import pytest

from siamese_detr.demo.plots import seed_summary

from figure_capture import figures_at_save

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("plot_eval_curves", ROOT / "tools" / "plot_eval_curves.py")
plot_eval_curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_eval_curves)


def _run_dir(root: Path, name: str, aps):
    """A training output directory whose metrics.json holds trainer lines and AP at the given iterations."""
    run = root / name
    run.mkdir()
    lines = []
    for it, ap in aps:
        lines.append({"iteration": it - 10, "total_loss": 1.0})
        lines.append({"iteration": it - 1, "bbox/AP": ap, "bbox/AP50": 2 * ap, "total_loss": 0.5})
    (run / "metrics.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return run


def test_seed_summary_is_mean_min_max_at_common_iterations():
    runs = [[(100, 1.0), (200, 4.0), (300, 9.0)], [(100, 3.0), (200, 2.0)], [(200, 6.0), (100, 5.0)]]
    # 300 is evaluated by one run only: dropped; 100: (1+3+5)/3 = 3, 200: (4+2+6)/3 = 4
    assert seed_summary(runs) == [(100, 3.0, 1.0, 5.0), (200, 4.0, 2.0, 6.0)]
    assert seed_summary([]) == []
    assert seed_summary([[(100, 1.0)], [(200, 2.0)]]) == []


def test_table_reference_difference_and_png(tmp_path, capsys):
    _run_dir(tmp_path, "a_seed0", [(200, 10.0), (400, 20.0)])
    _run_dir(tmp_path, "a_seed1", [(200, 12.0), (400, 24.0)])
    _run_dir(tmp_path, "b_seed0", [(200, 13.0), (400, 21.0)])
    (tmp_path / "a_seed0.log").write_text("not a run\n")  # a wildcard ending in "/" does not match it
    out = tmp_path / "figs" / "curves.png"
    plot_eval_curves.main([
        "--run", f"a={tmp_path}/a_seed*/", "--run", f"b={tmp_path / 'b_seed0' / 'metrics.json'}",
        "--reference", "a", "--output", str(out),
    ])
    table = capsys.readouterr().out
    assert "| a | 2 | 11.00 (10.00-12.00) | 22.00 (20.00-24.00) |" in table
    assert "| b | 1 | 13.00 (13.00-13.00) | 21.00 (21.00-21.00) |" in table
    assert "| b - a | | +2.00 | -1.00 |" in table
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    plot_eval_curves.main(["--run", f"b={tmp_path}/b_seed0", "--metric", "bbox/AP50",
                           "--output", str(tmp_path / "ap50.png")])
    assert "| b | 1 | 26.00 (26.00-26.00) | 42.00 (42.00-42.00) |" in capsys.readouterr().out


@pytest.mark.parametrize("args, message, code", [
    # wrong arguments: usage errors (exit 2, argparse's "error:" line on stderr)
    (["--run", "no_equals_sign"], "expected LABEL=PATH", 2),
    (["--run", "a={missing}"], r"--run 'a': .*nowhere does not exist; give training output directories", 2),
    (["--run", "a={root}/a_seed*"], "is not a metrics.json file", 2),
    (["--run", "a={root}/a_seed0", "--metric", "eval/finished_iterations"], "is bookkeeping .*, not a metric", 2),
    (["--run", "a={root}/a_seed0", "--run", "a={root}/a_seed0"], "given twice", 2),
    (["--run", "a={root}/a_seed0", "--reference", "b"], "is not one of the --run labels", 2),
    (["--run", "a={root}/a_seed0", "--output", "{root}/x.txt"], r"--output .*x\.txt: matplotlib cannot write \.txt",
     2),
    (["--run", "a={root}/a_seed0", "--output", "{root}"], "is a folder", 2),
    # a metrics.json that cannot be used (exit 1, the message itself)
    (["--run", "a={root}/a_seed0", "--metric", "segm/AP"],
     r"no 'segm/AP' in it; its evaluation metrics are bbox/AP, bbox/AP50: give one with --metric KEY", 1),
    (["--run", "a={root}/bad"], r"bad.metrics\.json:2: not a JSON line .*not a detectron2 metrics\.json", 1),
    (["--run", "a={root}/number"], r"number.metrics\.json:2: '5' is a number, not a JSON object", 1),
    (["--run", "a={root}/null"], r"null.metrics\.json:1: 'null' is null, not a JSON object", 1),
])
def test_errors_name_the_argument_or_file(tmp_path, capsys, args, message, code):
    _run_dir(tmp_path, "a_seed0", [(200, 10.0)])
    (tmp_path / "a_seed0.log").write_text("x\n")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text("{\"iteration\": 1}\noops\n")
    for name, text in (("number", '{"iteration": 1}\n5\n'), ("null", "null\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(text)
    args = [a.format(root=tmp_path, missing=tmp_path / "nowhere") for a in args]
    if "--output" not in args:
        args += ["--output", str(tmp_path / "x.png")]
    with pytest.raises(SystemExit) as exc:
        plot_eval_curves.main(args)
    err = capsys.readouterr().err
    if code == 2:
        assert exc.value.code == 2 and re.search(r"error: .*" + message, err), err
    else:
        assert re.search(message, str(exc.value.code))  # printed by Python on exit, with status 1
    assert "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_a_run_folder_is_its_metrics_json_and_one_without_it_is_named(tmp_path, capsys):
    """--run accepts an existing training output folder (its metrics.json); a folder without a metrics.json is
    a usage error that says so, naming the folder (not "DIR/metrics.json does not exist")."""
    run = _run_dir(tmp_path, "run_dir", [(200, 10.0)])
    plot_eval_curves.main(["--run", f"a={run}", "--output", str(tmp_path / "ok.png")])
    assert "| a | 1 | 10.00 (10.00-10.00) |" in capsys.readouterr().out
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(SystemExit) as exc:
        plot_eval_curves.main(["--run", f"a={run},{empty}", "--output", str(tmp_path / "x.png")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: --run 'a': no metrics.json in {empty}; give training output directories" in err
    assert "does not exist" not in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_a_torn_last_line_is_skipped_with_its_line_number(tmp_path, capsys):
    """A killed run leaves its last line cut short: the run still counts, with a warning naming the line."""
    run = _run_dir(tmp_path, "killed", [(200, 10.0), (400, 20.0)])
    with open(run / "metrics.json", "a") as f:
        f.write('{"iteration": 819, "bbox/A')  # no newline: what a kill leaves
    out = tmp_path / "c.png"
    plot_eval_curves.main(["--run", f"scratch={run}", "--output", str(out)])
    captured = capsys.readouterr()
    assert "| scratch | 1 | 10.00 (10.00-10.00) | 20.00 (20.00-20.00) |" in captured.out
    assert f"{run / 'metrics.json'}:5: skipping a line cut short" in captured.err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_listed_twice_in_a_group_counts_once(tmp_path, capsys):
    _run_dir(tmp_path, "s_seed0", [(200, 10.0)])
    _run_dir(tmp_path, "s_seed1", [(200, 16.0)])
    plot_eval_curves.main(["--run", f"s={tmp_path}/s_seed*/,{tmp_path}/s_seed0,{tmp_path}/s_seed0/metrics.json",
                           "--output", str(tmp_path / "c.png")])
    captured = capsys.readouterr()
    assert "| s | 2 | 13.00 (10.00-16.00) |" in captured.out  # not n=3 with seed 0 twice (mean 12)
    assert captured.err.count("is listed more than once; counted once") == 2


def test_an_output_without_extension_gets_png(tmp_path, capsys):
    _run_dir(tmp_path, "a_seed0", [(200, 10.0)])
    plot_eval_curves.main(["--run", f"a={tmp_path}/a_seed0", "--output", str(tmp_path / "noext")])
    assert f"wrote {tmp_path / 'noext.png'}" in capsys.readouterr().out
    assert (tmp_path / "noext.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_metric_lists_the_ones_the_run_has(tmp_path):
    """A run evaluated under other keys (a pretraining's class-agnostic results): the message names them, and
    never the bookkeeping eval/finished_iterations; a run never evaluated keeps the eval_period hint."""
    run = tmp_path / "pretrain"
    run.mkdir()
    (run / "metrics.json").write_text("\n".join(json.dumps(x) for x in [
        {"iteration": 9, "loss_ce": 1.0},
        {"iteration": 19, "class_agnostic/AP": 1.5, "class_agnostic/AR@100": 11.0, "eval/finished_iterations": 20},
    ]) + "\n")
    with pytest.raises(SystemExit) as exc:
        plot_eval_curves.main(["--run", f"p={run}", "--output", str(tmp_path / "x.png")])
    message = str(exc.value)
    assert "no 'bbox/AP' in it; its evaluation metrics are class_agnostic/AP, class_agnostic/AR@100" in message
    assert "--metric KEY, e.g. --metric class_agnostic/AP" in message
    assert "finished_iterations" not in message and "eval_period" not in message

    plot_eval_curves.main(["--run", f"p={run}", "--metric", "class_agnostic/AR@100",
                           "--output", str(tmp_path / "y.png")])
    assert (tmp_path / "y.png").is_file()

    (run / "metrics.json").write_text(json.dumps({"iteration": 9, "loss_ce": 1.0}) + "\n")
    with pytest.raises(SystemExit, match=r"no 'bbox/AP' in it \(was the run evaluated\? train.eval_period > 0\)"):
        plot_eval_curves.main(["--run", f"p={run}", "--output", str(tmp_path / "x.png")])

    many = {f"bbox/AP-class{i:02d}": float(i) for i in range(25)}
    (run / "metrics.json").write_text(json.dumps({"iteration": 9, **many}) + "\n")
    message = plot_eval_curves.missing_metric_message(run / "metrics.json", "segm/AP")
    assert "bbox/AP-class19, ... (5 more)" in message and "class20" not in message


def test_the_default_title_fits_and_the_x_axis_is_neutral(tmp_path, monkeypatch, capsys):
    """The longest default title (a long --metric) lies inside the figure, wrapped; the x-axis says "training
    iteration" (pretraining runs too) unless --xlabel says otherwise."""
    figures = figures_at_save(monkeypatch)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"iteration": 600, "class_agnostic/AR@100": 11.65}) + "\n")
    metric = ["--metric", "class_agnostic/AR@100"]
    plot_eval_curves.main(["--run", f"pt={run}", *metric, "--output", str(tmp_path / "a.png")])
    plot_eval_curves.main(["--run", f"pt={run}", *metric, "--xlabel", "pretraining iteration",
                           "--output", str(tmp_path / "b.png")])
    (default, custom) = figures
    for fig in figures:
        title, box = fig.axes[0].title, fig.bbox
        extent = title.get_window_extent()
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and extent.y1 <= box.y1, (extent, box)
        assert " ".join(title.get_text().split()) == "class_agnostic/AR@100: mean over runs (shade or bar: min-max)"
    assert default.axes[0].get_xlabel() == "training iteration"
    assert custom.axes[0].get_xlabel() == "pretraining iteration"


def test_help_names_the_defaults(capsys):
    with pytest.raises(SystemExit):
        plot_eval_curves.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: ./eval_curves.png)" in text and "(default: bbox/AP)" in text
    assert "(default: 'training iteration')" in text


def test_the_curve_is_the_mean_and_the_reference_has_no_row_against_itself(tmp_path, capsys, monkeypatch):
    """Two runs (10, 20) and (12, 24): the drawn line goes through the means 11 and 22 (not the min or max of
    the shaded range), labelled with the group's run count; the table compares only the other group with
    the reference."""
    figures = figures_at_save(monkeypatch)
    _run_dir(tmp_path, "a_seed0", [(200, 10.0), (400, 20.0)])
    _run_dir(tmp_path, "a_seed1", [(200, 12.0), (400, 24.0)])
    _run_dir(tmp_path, "b_seed0", [(200, 13.0), (400, 21.0)])
    plot_eval_curves.main(["--run", f"a={tmp_path}/a_seed*/", "--run", f"b={tmp_path}/b_seed0",
                           "--reference", "a", "--output", str(tmp_path / "c.png")])
    table = capsys.readouterr().out
    assert "| b - a |" in table and "| a - a |" not in table
    lines = {line.get_label(): list(line.get_ydata()) for line in figures[0].axes[0].get_lines()}
    assert lines["a (2 runs)"] == [11.0, 22.0] and lines["b (1 run)"] == [13.0, 21.0]


@pytest.mark.parametrize("metric, label", [
    ("bbox/AP", "COCO AP (%), bbox/AP"),
    ("bbox/AP50", "COCO AP50 (%), bbox/AP50"),
    ("segm/APs", "COCO APs (%), segm/APs"),
    ("keypoints/AP", "COCO AP (%), keypoints/AP"),
    ("class_agnostic/AR@100", "class_agnostic/AR@100"),
    ("bbox/AR@100", "bbox/AR@100"),
])
def test_metric_label_marks_every_coco_ap_as_percent(metric, label):
    assert plot_eval_curves.metric_label(metric) == label


@pytest.mark.parametrize("spec", ["=out/run", " =out/run", "a=", "a= , "])
def test_a_run_without_a_label_or_a_path_is_refused(spec):
    with pytest.raises(ValueError, match="expected LABEL=PATH"):
        plot_eval_curves.parse_run(spec)


def test_the_same_run_spelled_two_ways_counts_once(tmp_path, capsys):
    """``DIR`` and ``OTHER/../DIR/metrics.json`` are one file: resolved before comparing."""
    run = _run_dir(tmp_path, "s_seed0", [(200, 10.0)])
    (tmp_path / "other").mkdir()
    label, files = plot_eval_curves.parse_run(f"s={run},{tmp_path}/other/../s_seed0/metrics.json")
    assert (label, files) == ("s", [run / "metrics.json"])
    assert "is listed more than once; counted once" in capsys.readouterr().err


def test_metric_keys_leave_out_booleans_and_the_list_ends_exactly_at_shown(tmp_path):
    """A boolean (``"eval/ok": true``) is not a metric; ``shown`` keys of ``shown`` are listed without a
    "... (0 more)" tail."""
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"iteration": 9, "bbox/AP": 1.0, "bbox/AP50": 2.0, "eval/ok": True}) + "\n")
    assert plot_eval_curves.eval_metric_keys(path) == ["bbox/AP", "bbox/AP50"]
    message = plot_eval_curves.missing_metric_message(path, "segm/AP", shown=2)
    assert "its evaluation metrics are bbox/AP, bbox/AP50: give one" in message and "more" not in message


def test_a_run_of_commas_only_is_a_usage_error(tmp_path, capsys):
    """``--run "a=,"`` names no path: a usage error (exit 2) on the argument, not "its 0 runs share no
    evaluated iteration" after reading."""
    with pytest.raises(SystemExit) as exc:
        plot_eval_curves.main(["--run", "a=,", "--output", str(tmp_path / "x.png")])
    assert exc.value.code == 2 and "--run 'a=,': expected LABEL=PATH" in capsys.readouterr().err
