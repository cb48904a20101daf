"""Mutation review of the twenty-seventh session's code: behaviours the other tests left unpinned (load
refusals, load summary, image formats, metrics timelines, the demo's --fresh check, checkpointer and
interrupt handling)."""

from types import SimpleNamespace

import pytest

from siamese_detr.engine.checkpointing import CheckpointLoadError
from siamese_detr.engine.load_refusals import architecture_mismatch, refuse_shape_mismatches

# project-layout names of a Vanilla DETR transformer, post-norm (no final encoder norm) and pre-norm
_VANILLA = ["backbone.stem.conv1.weight", "transformer.encoder_layers.0.linear1.weight",
            "transformer.decoder_layers.0.linear1.weight", "query_embed.weight"]
_PRE_NORM = _VANILLA + ["transformer.encoder_norm.weight", "transformer.encoder_norm.bias"]


def _checkpointer(checkpoint_keys, model_keys, incorrect_shapes=()):
    model = SimpleNamespace(state_dict=lambda: dict.fromkeys(model_keys), parameters=lambda: iter(()))
    return SimpleNamespace(checkpoint_keys=list(checkpoint_keys), model=model, loaded_names=None,
                           incorrect_shapes=list(incorrect_shapes))


# ------------------------------------------------------------------ load_refusals
def test_a_ddp_saved_pre_norm_checkpoint_is_told_from_a_post_norm_model():
    """A ``module.`` prefix (a DDP-saved file) is looked through for the final encoder norm too."""
    ddp = ["module." + k for k in _PRE_NORM]
    message = architecture_mismatch(_checkpointer(ddp, _VANILLA), "ddp.pth")
    assert message is not None
    assert message.startswith("ddp.pth holds a pre-norm Vanilla DETR transformer, and this config's model is "
                              "post-norm")


def test_the_norm_placement_is_not_judged_when_the_checkpoint_is_not_a_project_vanilla_transformer():
    """An official UP-DETR release (its own layout, pre-norm) is not a project Vanilla DETR transformer: the
    official-layout hint names it, not the norm placement."""
    official = ["backbone.0.body.conv1.weight", "transformer.encoder.layers.0.self_attn.in_proj_weight",
                "transformer.encoder_norm.weight"]
    assert architecture_mismatch(_checkpointer(official, _VANILLA), "up-detr.pth") is None
    # nor when the model is not one (a backbone-only model state)
    assert architecture_mismatch(_checkpointer(_PRE_NORM, ["backbone.stem.conv1.weight"]), "x.pth") is None


def test_one_backbone_tensor_of_another_shape_names_the_config_families():
    wrong = [("backbone.stem.conv1.weight", (8, 3, 7, 7), (16, 3, 7, 7))]
    with pytest.raises(CheckpointLoadError) as exc:
        refuse_shape_mismatches(_checkpointer([], [], wrong), "c.pth")
    assert "c.pth: 1 tensors do not fit" in str(exc.value)
    assert "1 of them in the backbone: a checkpoint of another model config" in str(exc.value)


def test_the_backbone_refusal_counts_the_backbone_tensors_among_all():
    wrong = [("backbone.stem.conv1.weight", (8, 3, 7, 7), (16, 3, 7, 7)),
             ("query_embed.weight", (30, 64), (100, 64))]
    with pytest.raises(CheckpointLoadError) as exc:
        refuse_shape_mismatches(_checkpointer([], [], wrong), "c.pth")
    assert "c.pth: 2 tensors do not fit" in str(exc.value)
    assert ", 1 of them in the backbone:" in str(exc.value)
    assert "model.num_queries" not in str(exc.value)


# ------------------------------------------------------------------ load_summary: one-stage / two-stage
_SHARED = ["transformer.level_embed", "transformer.encoder.layers.0.linear1.weight",
           "transformer.decoder.layers.0.linear1.weight"]
_ONE = ["query_embed.weight", "transformer.reference_points.weight", "transformer.reference_points.bias"]
_TWO = ["transformer.enc_output.weight", "transformer.enc_output_norm.weight", "transformer.pos_trans.weight",
        "transformer.pos_trans_norm.weight"]


def test_two_stage_modules_missing_without_learned_queries_unused_are_no_one_stage_checkpoint():
    """A checkpoint without learned queries (e.g. of the shared transformer only) into a two-stage model: nothing
    says it was one-stage."""
    from siamese_detr.engine.load_summary import partial_load_summary

    summary = partial_load_summary([], _TWO, [], checkpoint_keys=_SHARED, model_keys=_SHARED + _TWO)
    assert "Deformable DETR checkpoint in a" not in summary


def test_two_stage_modules_unused_without_learned_queries_missing_are_no_handoff():
    """A checkpoint holding both stages' modules into a one-stage model: its learned queries load, so nothing
    starts anew for one stage; the unused modules are named as any others."""
    from siamese_detr.engine.load_summary import partial_load_summary

    summary = partial_load_summary([], [], _TWO, checkpoint_keys=_SHARED + _ONE + _TWO, model_keys=_SHARED + _ONE)
    assert "Deformable DETR checkpoint in a" not in summary and "learned queries start anew" not in summary


def _heads(n):
    return [f"{head}.{i}.weight" for i in range(n) for head in ("class_embed", "bbox_embed")]


def test_the_handoff_accounts_for_its_tensors_once():
    """What the one-stage / two-stage part names is not named again as missing or unused tensors: the summary
    is that part alone. The encoder proposals' prediction head (index 2, beside 2 decoder layers' heads) is one
    of the two-stage tensors."""
    from siamese_detr.engine.load_summary import partial_load_summary

    one, two = _SHARED + _ONE + _heads(2), _SHARED + _TWO + _heads(3)
    proposals = ("6 tensors: transformer.enc_output, transformer.enc_output_norm, transformer.pos_trans, "
                 "transformer.pos_trans_norm, class_embed, bbox_embed")
    queries = "3 tensors: query_embed, transformer.reference_points"
    summary = partial_load_summary([], _ONE, _TWO + _heads(3)[4:], checkpoint_keys=two, model_keys=one)
    assert summary == (f"Partial load, in short: a two-stage Deformable DETR checkpoint in a one-stage model: its "
                       f"encoder proposals are unused ({proposals}) and this model's learned queries start anew "
                       f"({queries}); to keep the proposals, finetune with a two-stage config "
                       f"(configs/detr/deformable_detr_refine_two_stage_r50_coco_50ep.py).")
    summary = partial_load_summary([], _TWO + _heads(3)[4:], _ONE, checkpoint_keys=one, model_keys=two)
    assert summary == (f"Partial load, in short: a one-stage Deformable DETR checkpoint in a two-stage model: its "
                       f"learned queries are unused ({queries}) and this model's encoder proposals start anew "
                       f"({proposals}), as in DETReg's finetuning.")


# ------------------------------------------------------------------ image formats
def test_an_absolute_interpolation_names_its_key_as_written():
    from siamese_detr.engine.config_checks import interpolated_key

    key = "dataloader.test.mapper.image_format"
    assert interpolated_key(key, "${dataloader.train.mapper.image_format}") == "dataloader.train.mapper.image_format"
    assert interpolated_key(key, "${.other}") == "dataloader.test.mapper.other"
    assert interpolated_key(key, "${...train.mapper.image_format}") == "dataloader.train.mapper.image_format"
    assert interpolated_key(key, "BGR") is None and interpolated_key(key, 42) is None


def test_image_formats_inside_lists_are_found_and_checked():
    from omegaconf import OmegaConf

    from siamese_detr.engine.config_checks import check_image_formats, image_format_keys
    from siamese_detr.utils.user_errors import UserValueError

    cfg = OmegaConf.create({"model": {"input_format": "BGR"},
                            "dataloader": {"train": {"mapper": {"image_format": "BGR"},
                                                     "sources": [{"image_format": "BGR"}, {"image_format": 5}]},
                                           "test": {"mapper": {"image_format": "BGR"}}}})
    assert image_format_keys(cfg) == [("dataloader.train.mapper.image_format", "BGR"),
                                      ("dataloader.train.sources.0.image_format", "BGR"),
                                      ("dataloader.train.sources.1.image_format", 5),
                                      ("dataloader.test.mapper.image_format", "BGR")]
    assert image_format_keys(cfg, eval_only=True) == [("dataloader.test.mapper.image_format", "BGR")]
    with pytest.raises(UserValueError, match=r"^Config key 'dataloader\.train\.sources\.1\.image_format' must be "):
        check_image_formats(cfg)
    check_image_formats(cfg, eval_only=True)  # --eval-only builds no training loader


def test_eval_only_does_not_judge_the_training_mapper_s_format_against_the_model():
    from omegaconf import OmegaConf

    from siamese_detr.engine.config_checks import check_image_formats
    from siamese_detr.utils.user_errors import UserValueError

    cfg = OmegaConf.create({"model": {"input_format": "BGR"},
                            "dataloader": {"train": {"mapper": {"image_format": "RGB"}},
                                           "test": {"mapper": {"image_format": "BGR"}}}})
    check_image_formats(cfg, eval_only=True)
    with pytest.raises(UserValueError, match=r"^Config key 'dataloader\.train\.mapper\.image_format' is 'RGB' but "):
        check_image_formats(cfg)
    # a proposal source's own format is no mapper's: not compared with the model's
    cfg.dataloader.train.mapper.image_format = "BGR"
    cfg.dataloader.train.mapper.proposal_source = {"image_format": "RGB"}
    check_image_formats(cfg)


def test_the_grey_level_hint_for_any_case_of_its_names():
    from siamese_detr.data.image_io import check_image_format
    from siamese_detr.utils.user_errors import UserValueError

    for value in ("gray", "Grey", "l"):
        with pytest.raises(UserValueError, match=r"\(a grey-level image is read as three equal channels"):
            check_image_format(value)
    with pytest.raises(UserValueError, match=r"got 'bgr' \(upper case: 'BGR'\);"):
        check_image_format("bgr")
    assert check_image_format("RGB") == "RGB"
    with pytest.raises(UserValueError, match=r"^k must be"):
        check_image_format("rgb", "k")


def test_a_null_image_format_is_refused_and_an_unresolved_interpolation_left_to_the_mapper():
    from omegaconf import OmegaConf

    from siamese_detr.engine.config_checks import check_image_formats
    from siamese_detr.utils.user_errors import UserValueError

    cfg = OmegaConf.create({"dataloader": {"train": {"mapper": {"image_format": None}}}})
    with pytest.raises(UserValueError, match=r"^Config key 'dataloader\.train\.mapper\.image_format' must be .*"
                                             r", got None"):
        check_image_formats(cfg)
    cfg = OmegaConf.create({"dataloader": {"train": {"mapper": {"image_format": "${..nowhere}"}}}})
    check_image_formats(cfg)  # building the mapper names the interpolation that does not resolve


# ------------------------------------------------------------------ metrics_lines
def test_a_bool_is_no_number_and_no_training_iteration():
    from siamese_detr.utils.metrics_lines import finished_at, is_number, is_training_record

    assert is_number(3) and is_number(2.5) and not is_number(True) and not is_number("3")
    assert not is_training_record({"iteration": True, "loss_ce": 1.0})
    assert finished_at({"iteration": True, "bbox/AP": 1.0}) is None


def test_a_line_of_results_only_is_no_training_line_and_counts_its_iteration_as_is():
    from siamese_detr.utils.metrics_lines import finished_at, is_training_record

    assert not is_training_record({"iteration": 20, "bbox/AP": 1.0})
    assert finished_at({"iteration": 20, "bbox/AP": 1.0}) == 20
    assert is_training_record({"iteration": 19, "loss_ce": 1.0})
    assert finished_at({"iteration": 19, "loss_ce": 1.0}) == 20
    # an --eval-only record of the checkpoint saved at (0-based) iteration 9, without the finished-count key
    assert not is_training_record({"iteration": 9, "loss_ce": 1.0, "eval_only": True})
    assert finished_at({"iteration": 9, "bbox/AP": 1.0, "eval_only": True}) == 10
    # the training tool's count wins over the labels
    assert finished_at({"iteration": 9, "bbox/AP": 1.0, "eval/finished_iterations": 7}) == 7


def test_a_run_started_over_at_iteration_zero_after_logging_only_iteration_zero():
    from siamese_detr.utils.metrics_lines import timeline

    rows = [{"iteration": 0, "loss_ce": 1.0}, {"iteration": 0, "loss_ce": 2.0}, {"iteration": 1, "loss_ce": 2.0}]
    line = timeline(enumerate(rows, 1))
    assert [n for n, _ in line.records] == [2, 3]
    assert [(it, [n for n, _ in stale]) for it, stale in line.restarts] == [(0, [1])]


def test_the_evaluation_at_the_restart_iteration_is_kept_and_past_it_left_out():
    """Resumed from the checkpoint after 5 finished iterations (the next training line is iteration 5): the
    evaluation of those 5 iterations stays, the one after 6 goes."""
    from siamese_detr.utils.metrics_lines import timeline

    rows = [{"iteration": 4, "loss_ce": 1.0}, {"iteration": 5, "bbox/AP": 1.0, "eval/finished_iterations": 5},
            {"iteration": 5, "loss_ce": 1.0}, {"iteration": 6, "bbox/AP": 2.0, "eval/finished_iterations": 6},
            {"iteration": 5, "loss_ce": 0.5}]
    line = timeline(enumerate(rows, 1))
    assert [n for n, _ in line.records] == [1, 2, 5]
    assert [(it, [n for n, _ in stale]) for it, stale in line.restarts] == [(5, [3, 4])]


def test_the_restart_note_counts_lines_and_names_single_iterations_and_spans():
    from siamese_detr.utils.metrics_lines import restart_note, timeline

    rows = [{"iteration": 0, "loss_ce": 1.0}, {"iteration": 1, "loss_ce": 1.0}, {"iteration": 2, "loss_ce": 1.0},
            {"iteration": 1, "loss_ce": 2.0}, {"iteration": 3, "loss_ce": 2.0}, {"iteration": 3, "loss_ce": 3.0}]
    note = restart_note("m.json", timeline(enumerate(rows, 1)))
    assert note == ("note: m.json: training started again at iterations 1 and 3 (a run started over without "
                    "--resume, or resumed from an earlier checkpoint): left out 3 lines of the earlier run, at "
                    "iterations 1-2 and 3")
    # one restart, one line left out
    rows = [{"iteration": 0, "loss_ce": 1.0}, {"iteration": 1, "loss_ce": 1.0}, {"iteration": 1, "loss_ce": 2.0}]
    line = timeline(enumerate(rows, 1))
    assert restart_note("m.json", line) == ("note: m.json: training started again at iteration 1 (a run started "
                                            "over without --resume, or resumed from an earlier checkpoint): left "
                                            "out 1 line of the earlier run, at iterations 1")
    assert restart_note("m.json", timeline(enumerate([{"iteration": 0, "loss_ce": 1.0}], 1))) is None


# ------------------------------------------------------------------ run_demo --fresh: files of no step
def test_foreign_step_files_of_every_step_folder(tmp_path):
    from pathlib import Path

    from script_modules import load_script

    run_demo = load_script(Path(__file__).resolve().parents[1] / "tools" / "run_demo.py", "run_demo_review27")
    demo = tmp_path / "demo"
    last = demo / run_demo.STEP_FOLDERS[-1]
    for name in ("model_0000199.pth", "model_final.pth.tmp", "metrics.json", "log.txt.rank1",
                 "inference/coco_instances_results.json", "inference/a/b.json",  # the steps' own
                 "config.yaml.bak", "model_final_folded.pth"):  # the user's
        (last / name).parent.mkdir(parents=True, exist_ok=True)
        (last / name).write_text("x")
    (last / "dangling.pth").symlink_to(tmp_path / "nowhere.pth")  # a link is listed, even a broken one
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine.txt").write_text("x")
    (demo / run_demo.STEP_FOLDERS[0]).symlink_to(elsewhere, target_is_directory=True)  # not looked into
    assert run_demo.foreign_step_files(demo) == [f"{last.name}/config.yaml.bak", f"{last.name}/dangling.pth",
                                                 f"{last.name}/model_final_folded.pth"]


# ------------------------------------------------------------------ plot_eval_curves: a metric missing
def _metrics_file(tmp_path, rows):
    import json

    path = tmp_path / "metrics.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _plot_eval_curves():
    from pathlib import Path

    from script_modules import load_script

    return load_script(Path(__file__).resolve().parents[1] / "tools" / "plot_eval_curves.py", "plot_eval_review27")


def test_a_folder_trained_again_but_never_evaluated_is_named_as_not_evaluated(tmp_path):
    rows = [{"iteration": 0, "loss_ce": 1.0}, {"iteration": 1, "loss_ce": 1.0}, {"iteration": 0, "loss_ce": 2.0}]
    path = _metrics_file(tmp_path, rows)
    assert _plot_eval_curves().missing_metric_message(path, "bbox/AP") == (
        f"{path}: no 'bbox/AP' in it (was the run evaluated? train.eval_period > 0)")


def test_the_missing_metric_names_the_last_restart_that_left_out_its_evaluations(tmp_path):
    def evaluation(finished):
        return {"iteration": finished, "bbox/AP": 1.0, "eval/finished_iterations": finished}

    rows = [{"iteration": 0, "loss_ce": 1.0}, {"iteration": 1, "loss_ce": 1.0}, evaluation(2),
            {"iteration": 1, "loss_ce": 2.0}, {"iteration": 2, "loss_ce": 2.0}, {"iteration": 3, "loss_ce": 2.0},
            evaluation(4), {"iteration": 3, "loss_ce": 3.0}]
    path = _metrics_file(tmp_path, rows)
    message = _plot_eval_curves().missing_metric_message(path, "bbox/AP")
    assert message.startswith(f"{path}: no 'bbox/AP' since training started again at iteration 3: ")
