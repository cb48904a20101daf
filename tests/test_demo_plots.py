"""Demo figures: the AP history read from metrics.json and the AP-curve PNG."""
from siamese_detr.demo.plots import eval_history, plot_ap_curves


def test_eval_history_and_curve(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(
        '{"iteration": 9, "total_loss": 3.0}\n'
        '{"iteration": 99, "bbox/AP": 1.5, "bbox/AP50": 4.0, "data_time": 0.1}\n'  # trainer: 0-based
        '{"iteration": 199, "bbox/AP": 2.5, "total_loss": 2.0}\n'
        '{"iteration": 200, "bbox/AP": 3.0}\n'  # after training: finished iterations; later line wins
    )
    assert eval_history(metrics) == [(100, 1.5), (200, 3.0)]
    assert eval_history(metrics, "bbox/AP50") == [(100, 4.0)]
    assert eval_history(tmp_path / "missing.json") == []
    out = tmp_path / "curves" / "ap.png"
    plot_ap_curves({"a": eval_history(metrics), "b": []}, str(out), "t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
