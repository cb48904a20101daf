"""Demo figures: the AP history read from metrics.json and the AP-curve PNG."""
from siamese_detr.demo.plots import eval_history, plot_ap_curves

from figure_capture import figures_at_save


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


def test_eval_history_skips_a_torn_line_and_names_bad_lines(tmp_path, capsys):
    import pytest

    from siamese_detr.demo.plots import MetricsFileError

    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"iteration": 99, "bbox/AP": 1.5, "total_loss": 2.0}\n'
                       '{"iteration": 150, "bbox/A\n'  # a torn line kept apart by a resumed run
                       '{"iteration": 199, "bbox/AP": 2.5, "total_loss": 2.0}\n'
                       '{"iteration": 299, "bbox/AP')  # the torn last line of a killed run
    assert eval_history(metrics) == [(100, 1.5), (200, 2.5)]
    err = capsys.readouterr().err
    assert f"{metrics}:2: skipping a line cut short" in err and f"{metrics}:4: skipping a line cut short" in err
    for text, message in [('{"iteration": 1, "bbox/AP": 1}\n\n7\n', "metrics.json:3: '7' is a number, not a JSON"),
                          ("[1, 2]\n", r"metrics.json:1: '\[1, 2\]' is an array"),
                          ('{"iteration": 1}\nnot json\n', r"metrics.json:2: not a JSON line \(Expecting value"),
                          ('{"iteration": 1, "bbox/AP": "high"}\n', "metrics.json:1: 'bbox/AP' = 'high'")]:
        metrics.write_text(text)
        with pytest.raises(MetricsFileError, match=message):
            eval_history(metrics)


def test_figure_path():
    import pytest

    from siamese_detr.demo.plots import figure_path

    assert figure_path("a/b.pdf") == "a/b.pdf" and figure_path("a/b.PNG") == "a/b.PNG"
    assert figure_path("a/noext") == "a/noext.png"
    with pytest.raises(ValueError, match=r"y\.txt: matplotlib cannot write \.txt files"):
        figure_path("y.txt")


def test_many_curves_put_the_legend_beside_the_axes(tmp_path, monkeypatch):
    """Up to LEGEND_INSIDE_MAX curves: a 6 x 4 in figure with the legend inside; more: a wider figure whose
    legend lies right of the axes (its box starts beyond the axes' right edge)."""
    from PIL import Image

    from siamese_detr.demo.plots import LEGEND_INSIDE_MAX

    figures = figures_at_save(monkeypatch)
    sizes = []
    for n in (LEGEND_INSIDE_MAX, LEGEND_INSIDE_MAX + 1):
        out = tmp_path / f"{n}.png"
        plot_ap_curves({f"run {i}": [(100, float(i)), (200, i + 1.0)] for i in range(n)}, str(out), "t")
        sizes.append(Image.open(out).size)
    assert sizes[0] == (600, 400) and sizes[1][0] > 600 and sizes[1][1] == 400
    (inside_x0, inside_axes_x1), (outside_x0, outside_axes_x1) = [
        (fig.axes[0].get_legend().get_window_extent().x0, fig.axes[0].get_window_extent().x1) for fig in figures]
    assert inside_x0 < inside_axes_x1
    assert outside_x0 > outside_axes_x1


def test_the_three_kinds_of_evaluation_record_of_one_checkpoint_get_one_iteration(tmp_path):
    """A periodic evaluation after 4 iterations (0-based 3, beside the losses), the evaluation after training
    (labelled max_iter = 4) and --eval-only of model_final.pth (its stored iteration 3) are one point."""
    from siamese_detr.engine.eval_outputs import append_eval_metrics

    for kind in ("periodic", "final", "eval_only"):
        folder = tmp_path / kind
        if kind == "periodic":
            folder.mkdir()
            (folder / "metrics.json").write_text('{"iteration": 3, "bbox/AP": 7.0, "total_loss": 1.0}\n')
        elif kind == "final":
            append_eval_metrics(str(folder), {"bbox": {"AP": 7.0}}, iteration=4)
        else:
            append_eval_metrics(str(folder), {"bbox": {"AP": 7.0}}, iteration=3, eval_only=True,
                                checkpoint="out/model_final.pth")
        assert eval_history(folder / "metrics.json") == [(4, 7.0)], kind


def test_eval_history_counts_finished_iterations_off_the_logging_steps(tmp_path):
    """A real detectron2 loop (TrainerBase + EvalHook + PeriodicWriter/JSONWriter) whose evaluations fall
    off the logging steps (log every 20, evaluate every 25, 60 iterations): detectron2 writes each periodic
    evaluation on a line of its own holding its 0-based step, the final one with the count. The curve's x
    must be the number of steps run when each evaluation ran, counted here by the steps themselves."""
    from detectron2.engine import TrainerBase, hooks
    from detectron2.utils.events import JSONWriter

    from siamese_detr.engine.eval_outputs import eval_hook

    class CountingTrainer(TrainerBase):
        steps_run = 0

        def run_step(self):
            self.steps_run += 1
            self.storage.put_scalars(total_loss=1.0 / self.steps_run)

    trainer = CountingTrainer()
    trainer.register_hooks([
        eval_hook(25, lambda: {"bbox": {"AP": float(trainer.steps_run)}}, trainer),
        hooks.PeriodicWriter([JSONWriter(str(tmp_path / "metrics.json"))], period=20),
    ])
    trainer.train(0, 60)
    assert eval_history(tmp_path / "metrics.json") == [(25, 25.0), (50, 50.0), (60, 60.0)]


def test_detections_grid_and_a_checkpoint_that_is_not_the_models(tiny_synthetic_shapes, tmp_path):
    """``draw_detections``: one row per image, ground truth + one column per checkpoint, each cell the
    image scaled to ``cell`` px wide; a checkpoint that leaves parameters of the model as initialised is
    refused (its boxes would be a random model's), never drawn."""
    import cv2
    import pytest
    import torch
    from detectron2.config import LazyConfig, instantiate

    from siamese_detr.demo.plots import draw_detections
    from siamese_detr.engine.checkpointing import CheckpointLoadError

    config = "configs/demo/demo_detector.py"
    torch.manual_seed(0)
    state = instantiate(LazyConfig.load(config).model).state_dict()
    torch.save({"model": state}, tmp_path / "full.pth")
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("class_embed")}}, tmp_path / "part.pth")
    out = tmp_path / "detections.png"
    draw_detections(config, {"a": str(tmp_path / "full.pth"), "b": str(tmp_path / "full.pth")}, str(out),
                    dataset="synthetic_shapes_val", num_images=2, cell=100, top_k=True)
    grid = cv2.imread(str(out))
    # a 24 px header, then per image a row of cells 100 px wide (the image's aspect kept) with 4 px gaps
    from detectron2.data import DatasetCatalog

    rows = [round(d["height"] * 100 / d["width"]) + 4 for d in DatasetCatalog.get("synthetic_shapes_val")[:2]]
    assert grid is not None and grid.shape == (24 + sum(rows), 3 * (100 + 4), 3)
    with pytest.raises(CheckpointLoadError, match=r"part\.pth lacks 6 parameters .*'class_embed\.0\.weight'"):
        draw_detections(config, {"a": str(tmp_path / "part.pth")}, str(tmp_path / "no.png"),
                        dataset="synthetic_shapes_val", num_images=1)
    assert not (tmp_path / "no.png").exists()


def test_a_long_title_is_wrapped_inside_the_figure_and_the_x_label_is_given(tmp_path, monkeypatch):
    """A title wider than the figure is wrapped onto more lines that lie inside it (legend inside or beside
    the axes, whose centre is then left of the figure's); the x-axis says "finetuning iteration" unless told."""
    from siamese_detr.demo.plots import LEGEND_INSIDE_MAX

    figures = figures_at_save(monkeypatch)
    title = ("class_agnostic/AR@100 of the Siamese DETR pretraining from seven initialisations, three seeds each: "
             "mean over runs (shade or bar: min-max)")
    for n, xlabel in ((1, None), (LEGEND_INSIDE_MAX + 1, "pretraining iteration")):
        curves = {f"run {i}": [(100, float(i)), (200, i + 1.0)] for i in range(n)}
        plot_ap_curves(curves, str(tmp_path / f"{n}.png"), title, **({"xlabel": xlabel} if xlabel else {}))
    drawn = [(fig.axes[0].title.get_text(), fig.axes[0].title.get_window_extent(), fig.bbox.frozen(),
              fig.axes[0].get_xlabel()) for fig in figures]
    (text, extent, box, xlabel), (text_beside, extent_beside, box_beside, xlabel_beside) = drawn
    for t, e, b in ((text, extent, box), (text_beside, extent_beside, box_beside)):
        assert "\n" in t and " ".join(t.split()) == title
        assert b.x0 <= e.x0 and e.x1 <= b.x1 and e.y1 <= b.y1, (e, b)
    assert xlabel == "finetuning iteration" and xlabel_beside == "pretraining iteration"


def test_the_detections_drawn_are_the_best_k_or_those_above_the_threshold():
    """k = the image's number of objects (at least 1), by score, wherever they are in the list; a threshold of
    None means the best k too (it raised a TypeError before)."""
    import torch

    from siamese_detr.demo.plots import detections_to_draw

    scores = torch.tensor([0.2, 0.9, 0.05, 0.6, 0.4])
    assert detections_to_draw(scores, 2, top_k=True).tolist() == [False, True, False, True, False]
    assert detections_to_draw(scores, 3, score_threshold=None).tolist() == [False, True, False, True, True]
    assert detections_to_draw(scores, 0, top_k=True).tolist() == [False, True, False, False, False]
    assert detections_to_draw(scores, 9, top_k=True).all()
    assert detections_to_draw(scores, 1, score_threshold=0.4).tolist() == [False, True, False, True, True]
