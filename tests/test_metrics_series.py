"""A folder's metrics.json holding more than one series (a run resumed from an earlier checkpoint, a run started
over without --resume, --eval-only results appended): tools/plot_metrics.py and tools/plot_eval_curves.py follow
the folder's last run, say in one ``note:`` line what they left out, and never let an --eval-only record cut a
training curve; a file of --eval-only results only is named as such; a loss term keeps its colour in every panel."""
import json
from pathlib import Path

import pytest

from siamese_detr.demo.plots import eval_history

from figure_capture import figures_at_save
from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]
plot_metrics = load_script(ROOT / "tools" / "plot_metrics.py", "plot_metrics_series")
plot_eval_curves = load_script(ROOT / "tools" / "plot_eval_curves.py", "plot_eval_curves_series")


def _train(iterations, loss, **extra):
    """Training lines (losses, lr) at ``iterations``, ``loss`` + a hundredth of the iteration."""
    return [{"iteration": it, "loss_ce": loss + it / 100, "lr": 1e-4, **extra} for it in iterations]


def _eval(finished, ap, **extra):
    """An evaluation line as the training tool writes it after ``finished`` iterations (the final one: labelled
    with the count; a periodic one: the 0-based index of the last iteration, pass ``iteration=``)."""
    return {"iteration": finished, "bbox/AP": ap, "eval/finished_iterations": finished, **extra}


def _eval_only(checkpoint_iteration, ap):
    """An --eval-only record of a checkpoint saved at the 0-based ``checkpoint_iteration``."""
    return {"iteration": checkpoint_iteration, "bbox/AP": ap, "eval_only": True,
            "eval/finished_iterations": checkpoint_iteration + 1, "checkpoint": "out/model.pth"}


def _folder(tmp_path, records, name="run") -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def _notes(err: str):
    return [line for line in err.splitlines() if line.startswith("note:")]


def test_a_run_started_over_shows_alone(tmp_path, capsys):
    """train.max_iter=6 then, in the same folder without --resume, max_iter=3: the curve is the second run's
    iterations 0-2 only (not 0-2 of the new run and 3-5 of the old one), its results are the printed ones, and
    one note names the 7 lines left out and their iterations."""
    run = _folder(tmp_path, _train(range(6), 2.0) + [_eval(6, 10.0)] + _train(range(3), 5.0) + [_eval(3, 1.0)])
    records = plot_metrics.read_metrics(run / "metrics.json")
    assert plot_metrics.loss_curves(records)["loss_ce"] == ([0, 1, 2], [5.0, 5.01, 5.02])
    assert plot_metrics.eval_results(records) == {"bbox/AP": 1.0}
    notes = _notes(capsys.readouterr().err)
    assert notes == [f"note: {run / 'metrics.json'}: training started again at iteration 0 (a run started over "
                     f"without --resume, or resumed from an earlier checkpoint): left out 7 lines of the earlier "
                     f"run, at iterations 0-6"]

    assert plot_metrics.main([str(run), "--output", str(tmp_path / "a.png")]) == 0
    out, err = capsys.readouterr()
    assert len(_notes(err)) == 1 and "run: bbox/AP = 1.000" in out and "10.000" not in out


def test_a_resumed_run_replaces_what_the_killed_run_logged_past_its_checkpoint(tmp_path, capsys):
    """Killed at iteration 25 after a checkpoint and an evaluation at 20 finished iterations (index 19), resumed
    from that checkpoint to 30: iterations 20-25 are the resumed run's, the evaluation of the checkpoint stays,
    nothing of the killed run beyond it does; the note says 6 lines at iterations 20-25."""
    killed = _train(range(20), 2.0) + [_eval(20, 4.0, iteration=19)] + _train(range(20, 26), 9.0)
    resumed = _train(range(20, 30), 1.0) + [_eval(30, 6.0)]
    run = _folder(tmp_path, killed + resumed)
    curve = plot_metrics.loss_curves(plot_metrics.read_metrics(run / "metrics.json"))["loss_ce"]
    assert curve[0] == list(range(30))
    assert curve[1][19:22] == [2.19, 1.2, 1.21] and max(curve[1]) < 9.0
    assert "left out 6 lines of the earlier run, at iterations 20-25" in capsys.readouterr().err
    assert eval_history(run / "metrics.json") == [(20, 4.0), (30, 6.0)]

    # an uninterrupted run's file, and one resumed exactly where it stopped: kept whole, no note
    plain = _folder(tmp_path, _train(range(20), 2.0) + [_eval(20, 4.0, iteration=19)] + resumed, "plain")
    assert plot_metrics.loss_curves(plot_metrics.read_metrics(plain / "metrics.json"))["loss_ce"][0] == list(range(30))
    assert _notes(capsys.readouterr().err) == []


def test_an_eval_only_record_of_an_older_checkpoint_does_not_cut_the_training_curve(tmp_path, capsys):
    """--eval-only of model_0000004.pth appended after a 10-iteration run: not a training line, so no new
    series (the curve keeps 0-9, no note); it is a point at its checkpoint's 5 finished iterations (a later line
    wins there) and, the last logged one, the printed result, as before. An --eval-only record logged before
    the folder's run started over is of the abandoned run: left out with it."""
    records = _train(range(5), 2.0) + [_eval(5, 3.0, iteration=4)] + _train(range(5, 10), 2.0) + [_eval(10, 5.0)]
    run = _folder(tmp_path, records + [_eval_only(4, 3.5)])
    kept = plot_metrics.read_metrics(run / "metrics.json")
    assert plot_metrics.loss_curves(kept)["loss_ce"][0] == list(range(10))
    assert plot_metrics.eval_results(kept) == {"bbox/AP": 3.5}
    assert eval_history(run / "metrics.json") == [(5, 3.5), (10, 5.0)]
    assert _notes(capsys.readouterr().err) == []

    over = _folder(tmp_path, records + [_eval_only(9, 5.0)] + _train(range(3), 1.0), "over")
    assert plot_metrics.eval_results(plot_metrics.read_metrics(over / "metrics.json")) == {}
    assert "left out 13 lines of the earlier run, at iterations 0-10" in capsys.readouterr().err
    assert eval_history(over / "metrics.json") == []


def test_eval_curves_follow_the_last_run_of_a_folder_started_over(tmp_path, capsys):
    """plot_eval_curves: evaluations at 5 and 10 of a first run, then a run started over evaluated at 5 only:
    the table has the new run's value at 5 (not its old 10), one note; a new run not evaluated yet is an error
    saying so, not a curve of the earlier run."""
    first = _train(range(5), 2.0) + [_eval(5, 3.0, iteration=4)] + _train(range(5, 10), 2.0) + [_eval(10, 5.0)]
    run = _folder(tmp_path, first + _train(range(5), 1.0) + [_eval(5, 8.0, iteration=4)])
    plot_eval_curves.main(["--run", f"a={run}", "--output", str(tmp_path / "a.png")])
    out, err = capsys.readouterr()
    assert "| runs | n | 5 |" in out and "| a | 1 | 8.00 (8.00-8.00) |" in out
    assert _notes(err) == [f"note: {run / 'metrics.json'}: training started again at iteration 0 (a run started "
                           f"over without --resume, or resumed from an earlier checkpoint): left out 12 lines of "
                           f"the earlier run, at iterations 0-10"]

    fresh = _folder(tmp_path, first + _train(range(3), 1.0), "fresh")
    with pytest.raises(SystemExit) as exc:
        plot_eval_curves.main(["--run", f"a={fresh}", "--output", str(tmp_path / "b.png")])
    assert str(exc.value.code) == (f"error: {fresh / 'metrics.json'}: no 'bbox/AP' since training started again at "
                                   f"iteration 0: the earlier run's evaluations are left out (see the note above), "
                                   f"and the run since has not been evaluated yet (train.eval_period)")
    assert len(_notes(capsys.readouterr().err)) == 1


def test_the_timeline_rule():
    """Unit rule: a training line at or below the previous one's iteration starts a series and drops the kept
    lines logged past it (several restarts, the same iteration logged twice); lines without an iteration and
    --eval-only lines never start one."""
    from siamese_detr.utils.metrics_lines import timeline

    rows = [{"iteration": 0, "loss": 1}, {"iteration": 1, "loss": 1}, {"note": "no iteration"},
            {"iteration": 2, "loss": 1}, _eval_only(0, 1.0), {"iteration": 1, "loss": 2}, {"iteration": 2, "loss": 2},
            {"iteration": 2, "loss": 3}, _eval_only(0, 2.0)]
    line = timeline(enumerate(rows, 1))
    assert [n for n, _ in line.records] == [1, 3, 5, 6, 8, 9]
    assert [(it, [n for n, _ in stale]) for it, stale in line.restarts] == [(1, [2, 4]), (2, [7])]


def test_a_file_of_eval_only_results_says_so(tmp_path):
    """plot_metrics on an --eval-only output folder: one error line saying the file holds --eval-only results
    only and naming the tool for them, not "did training run past its first log period?"; exit status 1."""
    import subprocess
    import sys

    run = _folder(tmp_path, [_eval_only(2, 1.0), _eval_only(5, 2.0)])
    with pytest.raises(SystemExit) as exc:
        plot_metrics.main([str(run), "--output", str(tmp_path / "x.png")])
    metrics = run / "metrics.json"
    assert str(exc.value.code) == (f"error: {metrics} holds only --eval-only evaluation results (2 lines), no "
                                   f"training losses to plot; plot its evaluation results with "
                                   f"tools/plot_eval_curves.py --run LABEL={metrics}")
    assert not (tmp_path / "x.png").exists()
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "plot_metrics.py"), str(run), "--output",
                           str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip() == str(exc.value.code)


def test_a_loss_term_has_one_colour_in_every_panel(tmp_path, monkeypatch):
    """Two inputs, one with an extra term (loss_feature) sorting before loss_giou: loss_giou (and every other
    term) is drawn in the same colour in both panels, and no two terms share one."""
    from matplotlib.colors import to_hex

    figures = figures_at_save(monkeypatch)
    terms = ("loss_bbox", "loss_ce", "loss_giou")
    a = _folder(tmp_path, [{"iteration": it, **{t: 1.0 + it for t in terms}, "loss_feature": 0.5}
                           for it in (19, 39)], "pretrain")
    b = _folder(tmp_path, [{"iteration": it, **{t: 1.0 + it for t in terms}} for it in (19, 39)], "finetune")
    plot_metrics.main([str(a), str(b), "--output", str(tmp_path / "c.png")])
    colours = {}
    bottoms = [ax for ax in figures[0].axes if ax.get_ylabel().startswith("loss term")]
    assert len(bottoms) == 2
    for ax in bottoms:
        for line in ax.get_lines():
            colours.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
    assert set(colours) == {"loss_bbox", "loss_ce", "loss_feature", "loss_giou"}
    assert all(len(c) == 1 for c in colours.values()), colours
    assert len({c for cs in colours.values() for c in cs}) == 4


def test_bytes_that_are_not_utf8_are_a_torn_line_or_a_named_error_not_a_decode_error(tmp_path):
    """A kill can leave any bytes at the end of a line; a file of another encoding is no metrics.json: both are
    read as text with the undecodable bytes replaced, so the rules for torn and foreign lines apply."""
    from siamese_detr.utils.metrics_lines import MetricsFileError, metrics_records

    path = tmp_path / "metrics.json"
    path.write_bytes(b'{"iteration": 0, "loss": 1}\n{"iteration": 1, "lo\xe2\x82\n{"iteration": 2, "loss": 0.5}\n')
    assert [n for n, _ in metrics_records(path)] == [1, 3]
    path.write_bytes(b'{"iteration": 0, "loss": 1}\n\xff\xfe\x00i\x00t\x00\n')
    with pytest.raises(MetricsFileError, match=r"metrics\.json:2: not a JSON line"):
        list(metrics_records(path))
