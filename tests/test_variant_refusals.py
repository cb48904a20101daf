"""A checkpoint of another DETR variant's transformer (Vanilla, Conditional, Deformable) is refused, naming both
variants and the configs of the checkpoint's: Vanilla and Conditional DETR share their encoder's names, so a
Vanilla pretraining finetuned as Conditional DETR loaded the encoder, trained the decoder from scratch and said so
only in a log line."""

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from siamese_detr.engine.load_summary import transformer_variant

from train_net_tool import ROOT, train_net

PROG = "lazyconfig_train_net.py"
DEMO = ROOT / "configs" / "demo"
SMALL = ["train.max_iter=1", "train.log_period=1", "train.seed=0", "train.device=cpu",
         "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0"]


def _model_state(config: str, normalize_before=None) -> dict:
    cfg = LazyConfig.load(str(DEMO / config))
    if normalize_before is not None:
        cfg.model.transformer.normalize_before = normalize_before
    if "allow_random_backbone" in cfg.model:
        cfg.model.allow_random_backbone = True
    torch.manual_seed(0)
    return instantiate(cfg.model).state_dict()


@pytest.fixture(scope="module")
def states():
    names = {"vanilla_pretrain": "siamese_detr_pretrain_demo.py",
             "conditional_pretrain": "siamese_detr_conditional_pretrain_demo.py",
             "deformable_pretrain": "siamese_detr_deformable_pretrain_demo.py",
             "vanilla": "detr_demo.py", "conditional": "conditional_detr_demo.py",
             "deformable": "deformable_detr_demo.py"}
    return {key: _model_state(config) for key, config in names.items()}


def test_the_variant_is_told_from_the_state_dict_names(states):
    for key, state in states.items():
        assert transformer_variant(state) == key.split("_")[0].capitalize(), key
    assert transformer_variant({"module." + k: v for k, v in states["conditional"].items()}) == "Conditional"
    backbone_only = [k for k in states["vanilla"] if k.startswith("backbone.")]
    assert backbone_only and transformer_variant(backbone_only) is None
    # an official release's own layout (its hint names the converter instead): not told
    official = ["backbone.0.body.conv1.weight", "transformer.encoder.layers.0.self_attn.in_proj_weight"]
    assert transformer_variant(official) is None


def _tool_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        train_net.run(argv)
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and "Traceback" not in out + err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{PROG}: error: "), err
    return last[len(f"{PROG}: error: "):]


def _not_loaded(checkpoint: dict, model: dict) -> list:
    """The model's transformer tensors that the checkpoint does not give by name and shape (the expectation)."""
    return [k for k, v in model.items() if k.startswith("transformer.")
            and (k not in checkpoint or tuple(checkpoint[k].shape) != tuple(v.shape))]


@pytest.mark.parametrize("source, config, target", [
    ("vanilla_pretrain", "conditional_detr_demo.py", "conditional"),  # loaded the encoder before: no refusal
    ("conditional_pretrain", "detr_demo.py", "vanilla"),
    ("vanilla_pretrain", "deformable_detr_demo.py", "deformable"),
])
def test_a_pretraining_of_another_variant_is_refused_naming_both(tmp_path, capsys, tiny_synthetic_shapes, states,
                                                                 source, config, target):
    checkpoint = tmp_path / f"{source}.pth"
    torch.save({"model": states[source]}, checkpoint)
    argv = ["--config-file", str(DEMO / config), *SMALL, f"train.init_checkpoint={checkpoint}",
            f"train.output_dir={tmp_path / 'out'}"]
    message = _tool_error(capsys, argv)
    theirs, ours = source.split("_")[0].capitalize(), target.capitalize()
    assert message.startswith(f"{checkpoint} holds a {theirs} DETR transformer, and this config's model is {ours} "
                              "DETR: ")
    fresh = _not_loaded(states[source], states[target])
    total = sum(k.startswith("transformer.") for k in states[target])
    if len(fresh) == total:
        assert f"none of the model's {total} transformer tensors is in it" in message
    else:
        assert f"{len(fresh)} of the model's {total} transformer tensors are not in it" in message
    prefix = {"Vanilla": "detr", "Conditional": "conditional_detr", "Deformable": "deformable_detr"}[theirs]
    assert f"finetune it with a config of {theirs} DETR (configs/detr/{prefix}_*.py or configs/demo/" \
           f"{prefix}_demo.py). (train.allow_shape_mismatch=True loads what fits on purpose.) (traceback in " in message
    assert list((ROOT / "configs" / "detr").glob(f"{prefix}_*.py")) and (DEMO / f"{prefix}_demo.py").is_file()
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_allow_shape_mismatch_loads_what_fits_on_purpose(tmp_path, tiny_synthetic_shapes, states):
    checkpoint = tmp_path / "vanilla_pretrain.pth"
    torch.save({"model": states["vanilla_pretrain"]}, checkpoint)
    argv = ["--config-file", str(DEMO / "conditional_detr_demo.py"), *SMALL, f"train.init_checkpoint={checkpoint}",
            f"train.output_dir={tmp_path / 'out'}", "train.allow_shape_mismatch=True", "train.eval_period=0"]
    train_net.main(train_net.parse_args(argv))
    assert (tmp_path / "out" / "model_final.pth").is_file()


def test_eval_only_of_another_variant_names_it(tmp_path, capsys, tiny_synthetic_shapes, states):
    checkpoint = tmp_path / "vanilla.pth"
    torch.save({"model": states["vanilla"]}, checkpoint)
    argv = ["--config-file", str(DEMO / "conditional_detr_demo.py"), "--eval-only", *SMALL,
            f"train.init_checkpoint={checkpoint}", f"train.output_dir={tmp_path / 'out'}"]
    message = _tool_error(capsys, argv)
    assert message.startswith(f"--eval-only: {checkpoint} holds a Vanilla DETR transformer, and this config's model "
                              "is Conditional DETR: ")
    assert "evaluate it with a config of Vanilla DETR (configs/detr/detr_*.py or configs/demo/detr_demo.py)" in message


# ------------------------------------------------------------------ pre-norm vs post-norm Vanilla DETR
@pytest.fixture(scope="module")
def norm_states():
    """Vanilla DETR of the demo, post-norm (the config's) and pre-norm (as the official UP-DETR release)."""
    return {False: _model_state("detr_demo.py", normalize_before=False),
            True: _model_state("detr_demo.py", normalize_before=True)}


def test_the_two_norm_placements_differ_only_by_the_encoders_final_norm(norm_states):
    """Why nothing else tells them apart: every other tensor has the same name and shape."""
    pre, post = norm_states[True], norm_states[False]
    assert sorted(set(pre) - set(post)) == ["transformer.encoder_norm.bias", "transformer.encoder_norm.weight"]
    assert not set(post) - set(pre)
    assert all(pre[k].shape == post[k].shape for k in post)


@pytest.mark.parametrize("trained_pre_norm", [True, False])
def test_a_vanilla_checkpoint_of_the_other_norm_placement_is_refused(tmp_path, capsys, tiny_synthetic_shapes,
                                                                     norm_states, trained_pre_norm):
    """A pre-norm UP-DETR pretraining finetuned as the (post-norm) DETR configs loaded every tensor but the final
    encoder norm, with one INFO line; the layers then applied the weights around other LayerNorms."""
    checkpoint = tmp_path / "vanilla.pth"
    torch.save({"model": norm_states[trained_pre_norm]}, checkpoint)
    argv = ["--config-file", str(DEMO / "detr_demo.py"), *SMALL, f"train.init_checkpoint={checkpoint}",
            f"train.output_dir={tmp_path / 'out'}", f"model.transformer.normalize_before={not trained_pre_norm}"]
    message = _tool_error(capsys, argv)
    theirs, ours = ("pre-norm", "post-norm") if trained_pre_norm else ("post-norm", "pre-norm")
    assert message.startswith(f"{checkpoint} holds a {theirs} Vanilla DETR transformer, and this config's model is "
                              f"{ours}: ")
    assert f"Set model.transformer.normalize_before={trained_pre_norm}, as it was trained. " \
           "(train.allow_shape_mismatch=True loads what fits on purpose.)" in message
    assert not (tmp_path / "out" / "model_final.pth").exists()
    # --eval-only too (pre-norm into post-norm: every parameter of the model loads, nothing was refused before)
    argv = ["--config-file", str(DEMO / "detr_demo.py"), "--eval-only", *SMALL, f"train.init_checkpoint={checkpoint}",
            f"train.output_dir={tmp_path / 'eval'}", f"model.transformer.normalize_before={not trained_pre_norm}"]
    message = _tool_error(capsys, argv)
    assert message.startswith(f"--eval-only: {checkpoint} holds a {theirs} Vanilla DETR transformer")
    # the placement it was trained with loads without a word
    argv = ["--config-file", str(DEMO / "detr_demo.py"), *SMALL, f"train.init_checkpoint={checkpoint}",
            f"train.output_dir={tmp_path / 'same'}", f"model.transformer.normalize_before={trained_pre_norm}",
            "train.eval_period=0"]
    train_net.main(train_net.parse_args(argv))
    assert (tmp_path / "same" / "model_final.pth").is_file()


def test_a_checkpoint_of_another_backbone_names_the_config_families_not_num_queries(tmp_path, capsys,
                                                                                    tiny_synthetic_shapes):
    """The demo's DETReg pretraining (the demo detector's narrow backbone, 30 queries) into deformable_detr_demo.py
    was told to set model.num_queries=30, which fits no better: the backbone differs."""
    pretrain = _model_state("demo_detreg_pretrain.py")
    target = _model_state("deformable_detr_demo.py")
    differing = [k for k in target if k.startswith("backbone.") and k in pretrain
                 and pretrain[k].shape != target[k].shape]
    assert differing  # the premise: another backbone width
    checkpoint = tmp_path / "demo_detreg.pth"
    torch.save({"model": pretrain}, checkpoint)
    argv = ["--config-file", str(DEMO / "deformable_detr_demo.py"), *SMALL, f"train.init_checkpoint={checkpoint}",
            f"train.output_dir={tmp_path / 'out'}"]
    message = _tool_error(capsys, argv)
    assert "of them in the backbone: a checkpoint of another model config (backbone depth or width)" in message
    assert "configs/demo/demo_{siamese,up_detr,detreg}_pretrain.py with configs/demo/demo_detector.py" in message
    assert "model.num_queries" not in message and "train.allow_shape_mismatch=True" in message
    # the configs it names exist
    for name in ("demo_siamese_pretrain", "demo_up_detr_pretrain", "demo_detreg_pretrain", "demo_detector",
                 "detr_demo", "conditional_detr_demo", "deformable_detr_demo", "siamese_detr_conditional_pretrain_demo",
                 "siamese_detr_deformable_pretrain_demo", "up_detr_pretrain_demo", "detreg_pretrain_demo"):
        assert (DEMO / f"{name}.py").is_file(), name
