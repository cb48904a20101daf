"""tools/plot_metrics.py reads detectron2 metrics.json and writes a PNG."""
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

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
        {"iteration": 39, "bbox/AP": 12.5},
    ])
    records = plot_metrics.read_metrics(metrics)
    curves = plot_metrics.loss_curves(records)
    assert set(curves) == {"loss_ce", "loss_bbox", "total_loss", "loss_ce_one2many"}
    assert curves["total_loss"] == ([19, 39], [6.0, 4.0])
    assert {"loss_ce_0", "loss_ce_1_one2many"} <= set(plot_metrics.loss_curves(records, with_aux=True))
    assert plot_metrics.eval_results(records) == {"bbox/AP": 12.5}

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
