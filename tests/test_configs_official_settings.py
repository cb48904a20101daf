"""The pretraining configs (Siamese DETR, UP-DETR, DETReg) and the Deformable / Conditional DETR finetuning
configs against the OFFICIAL runs they mirror.

The official settings are read from ``tests/fixtures/official_run_settings/``: ``{siamese_detr,up_detr}.json``
hold the merged mmcv configs ``configs/selfsup/siamese_detr/main/*.py`` of github Zx55/SiameseDETR and the same
authors' UP-DETR runs ``configs/selfsup/updetr/main/*.py`` (``record.py``); ``arguments.json`` the arguments of
the official UP-DETR (dddzg/up-detr, README pre-training command), DETReg (amirbar/DETReg, README commands of
``configs/DETReg_top30_{in,in_detr,coco}.sh``), Deformable DETR (``configs/r50_deformable_detr*.sh``) and
Conditional DETR (``scripts/conddetr_r50_epoch50.sh``) runs as their own parsers read them
(``record_arguments.py``); commits and commands in the folder's README. Compared, setting by setting: the
loss weights (official ``loss_feature`` = our ``loss_region``, ``loss_enc_global_contra`` = ``loss_global`` for
Siamese DETR), the matcher costs and class loss, queries and regions / patches / proposals, the Transformer's
shape, the SimSiam head widths, the optimiser, the gradient clipping, the total batch (GPUs x images per GPU),
the epochs (argparse runs), where the learning rate drops and by how much, and the resize, views, regions,
crops and their augmentation.

Deliberate differences, each in the project card ("Choices and where the sources disagree") or the config's
docstring, are not compared: the schedule's length of the mmcv runs (ours counts epochs: 60 ImageNet epochs at
batch 256 are 300274 iterations, the official 300000 steps; on COCO ours is 60 epochs, the official 120000
steps about 65), Siamese DETR's short side drawn as any integer of the official list's range (the official list
of ImageNet sizes skips 384; our UP-DETR mapper draws from the list itself), and DETReg's learning-rate drop
in its 5- and 60-epoch runs (their ``lr_drop`` of 40 or 200 epochs is never reached; ours drops at 4/5 or 2/3
of every pretraining, the same fraction for the three methods); the 50-epoch COCO run's drop at 40 is compared.
Nor, in the finetuning configs (Siamese DETR §4.1's protocol), the batch of 32 for every variant and Conditional
DETR's backbone lr, nor the COCO class head's width (80 classes, the official heads 91 sparse ids).
"""

import inspect
import json
import re
from pathlib import Path

import pytest
from detectron2.config import LazyConfig, instantiate
from detectron2.data import transforms as T

from siamese_detr.data.up_detr_mapper import up_detr_augmentation
from siamese_detr.modeling.meta_arch.pretext_detr import PretextDETR

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "official_run_settings"
SIAMESE = json.loads((FIXTURES / "siamese_detr.json").read_text())
UP_DETR = json.loads((FIXTURES / "up_detr.json").read_text())
ARGUMENTS = json.loads((FIXTURES / "arguments.json").read_text())["runs"]
COMMIT = "ae604dce39c7b5d82169acc26e925eff022aeb77"
# training images of the official datasets (ImageNet-1k train, COCO train2017), for epochs -> iterations
COCO_TRAIN = 118287
IMAGES = {"imagenet": 1281167, "coco_pretrain": COCO_TRAIN}  # keyed by DETReg's --dataset

# our config -> the official file it mirrors (the Vanilla COCO config has no official counterpart)
SIAMESE_PAIRS = {
    "siamese_detr_r50_imagenet_60ep.py": "r50_vanillatr_syncbn_imgnet_edgebox_rdiscr_gdiscr_gpu32_step30w",
    "siamese_detr_conditional_r50_imagenet_60ep.py":
        "r50_condtr_100q_syncbn_imgnet_edgebox_rdiscr_gdiscr_gpu32_step30w",
    "siamese_detr_conditional_r50_imagenet_300q_60ep.py":
        "r50_condtr_300q_syncbn_imgnet_edgebox_rdiscr_gdiscr_gpu32_step30w",
    "siamese_detr_deformable_ms_r50_imagenet_60ep.py":
        "r50_deformtr_ms_300q_syncbn_imgnet_edgebox_rdiscr_gdiscr_gpu64_step30w",
    "siamese_detr_deformable_ss_r50_imagenet_60ep.py":
        "r50_deformtr_ss_300q_syncbn_imgnet_edgebox_rdiscr_gdiscr_gpu64_step30w",
    "siamese_detr_conditional_r50_coco_60ep.py": "r50_condtr_100q_syncbn_coco_edgebox_rdiscr_gdiscr_gpu16_step12w",
}
# The authors' UP-DETR runs, which our Conditional and Deformable UP-DETR configs mirror (dddzg/up-detr, the
# Vanilla ones' source, has argparse defaults, not config files). Their Deformable config names a base file
# missing from the release (``../imagenet_bs8.py``): its data pipeline, batch and clipping are not recorded,
# and our config takes the ImageNet ones of their other runs (its docstring says so).
UP_DETR_PAIRS = {
    "up_detr_conditional_r50_imagenet_60ep.py": "r50_condtr_100q_imgnet_gpu16_step30w",
    "up_detr_conditional_r50_coco_60ep.py": "r50_condtr_100q_coco_gpu16_step12w",
    "up_detr_deformable_ms_r50_imagenet_60ep.py": "r50_deformtr_ms_300q_imgnet_gpu32_step30w",
}


def _params(pairs, records):
    return [pytest.param(ours, records["files"][official], official, id=ours[:-3]) for ours, official in pairs.items()]


SIAMESE_PARAMS = _params(SIAMESE_PAIRS, SIAMESE)
UP_DETR_PARAMS = _params(UP_DETR_PAIRS, UP_DETR)
UP_DETR_WITH_DATA = [p for p in UP_DETR_PARAMS if "_missing_bases_" not in p.values[1]]


def _load(folder, name):
    return LazyConfig.load(str(ROOT / "configs" / folder / name))


def _transform(pipeline, kind):
    """The official pipeline entry of type ``kind``, also inside a ``RandomAppliedTrans``: ``(entry, p)``."""
    for entry in pipeline:
        if entry["type"] == kind:
            return entry, 1.0
        if entry["type"] == "RandomAppliedTrans" and entry["transforms"][0]["type"] == kind:
            return entry["transforms"][0], entry["p"]
    raise KeyError(kind)


def _mapper_setting(mapper, name):
    """A mapper argument as the config gives it, or the mapper class's default when the config leaves it out."""
    if name in mapper:
        return mapper[name]
    return inspect.signature(mapper["_target_"]).parameters[name].default


def assert_matcher_costs(matcher, costs):
    assert (matcher.cost_class, matcher.cost_bbox, matcher.cost_giou) == (
        costs["cost_class"], costs["cost_bbox"], costs["cost_giou"])


def assert_transformer_shape(ours, official):
    """Our ``model.transformer`` against the official ``ConditionalTR`` / ``VanillaTR`` / ``DeformableTR``."""
    width = official.get("hidden_dim", official.get("d_model"))
    assert (ours.d_model, ours.nhead, ours.dim_feedforward, ours.dropout) == (
        width, official["nhead"], official["dim_feedforward"], official["dropout"])
    assert (ours.num_encoder_layers, ours.num_decoder_layers) == (
        official["num_encoder_layers"], official["num_decoder_layers"])
    if official["type"] == "DeformableTR":
        assert (ours.num_feature_levels, ours.enc_n_points, ours.dec_n_points) == (
            official["num_feature_levels"], official["enc_n_points"], official["dec_n_points"])
        assert ours.two_stage == official["two_stage"] and ours.with_box_refine is False
    else:
        assert ours.get("normalize_before", False) == official["normalize_before"]


def assert_optimiser_and_drop(cfg, official):
    """AdamW's lr and weight decay, and one drop by ``gamma`` at the official fraction of the run (official:
    ``step_drop`` of ``steps``; ours: a milestone in units of ``num_updates``, rounded to a whole iteration)."""
    optimizer, drop, schedule = official["optimizer"], official["lr_config"], cfg.lr_multiplier
    assert optimizer["type"] == "AdamW" and "AdamW" in str(cfg.optimizer._target_)
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (optimizer["lr"], optimizer["weight_decay"])
    assert drop["policy"] == "Step" and drop["step"] == official["step_drop"]
    assert list(schedule["values"]) == [1.0, drop["gamma"]] and len(schedule.milestones) == 1
    fraction = official["step_drop"] / official["steps"]
    assert abs(schedule.milestones[0] / schedule.num_updates - fraction) <= 1 / schedule.num_updates


def assert_batch_and_clipping(cfg, official, name):
    """Total batch = the GPUs in the official file name x ``imgs_per_gpu``; the clipping norm."""
    gpus = int(re.search(r"_gpu(\d+)_", name).group(1))
    assert cfg.dataloader.train.total_batch_size == gpus * official["data"]["imgs_per_gpu"]
    assert cfg.train.clip_grad.max_norm == official["optimizer_config"]["grad_clip"]["max_norm"]


def assert_crop_augmentation(mapper, pipeline):
    """Colour jitter, grayscale and blur of the mapper (config or class default) against an official pipeline."""
    jitter, p_jitter = _transform(pipeline, "ColorJitter")
    assert list(_mapper_setting(mapper, "color_jitter")) == [
        jitter[k] for k in ("brightness", "contrast", "saturation", "hue")]
    assert _mapper_setting(mapper, "color_jitter_prob") == p_jitter
    assert _mapper_setting(mapper, "grayscale_prob") == _transform(pipeline, "RandomGrayscale")[0]["p"]
    blur, p_blur = _transform(pipeline, "GaussianBlur")
    assert (tuple(_mapper_setting(mapper, "blur_sigma")), _mapper_setting(mapper, "blur_prob")) == (
        (blur["sigma_min"], blur["sigma_max"]), p_blur)


def test_the_fixtures_hold_the_official_main_configs_and_every_pair_names_one():
    for records, folder in ((SIAMESE, "siamese_detr"), (UP_DETR, "updetr")):
        assert records["commit"] == COMMIT and records["folder"] == f"configs/selfsup/{folder}/main"
        assert len(records["files"]) == 6
    mirrored = set(SIAMESE_PAIRS) | {"siamese_detr_r50_coco_60ep.py"}  # the one without an official config
    assert {p.name for p in (ROOT / "configs" / "siamese_detr").glob("*.py")} == mirrored
    missing = {name: f["_missing_bases_"] for name, f in UP_DETR["files"].items() if "_missing_bases_" in f}
    assert missing == {"r50_deformtr_ms_300q_imgnet_gpu32_step30w": ["../imagenet_bs8.py"]}
    assert len(UP_DETR_WITH_DATA) == len(UP_DETR_PARAMS) - 1


# ------------------------------------------------------------------------------------------------ Siamese DETR
@pytest.mark.parametrize("ours, off, name", SIAMESE_PARAMS)
def test_loss_weights_matcher_queries_and_regions_are_the_official_ones(ours, off, name):
    cfg = _load("siamese_detr", ours)
    weights = off["model"]["weight_dict"]
    assert dict(cfg.model.weight_dict) == {
        "loss_ce": weights["loss_ce"], "loss_bbox": weights["loss_bbox"], "loss_giou": weights["loss_giou"],
        "loss_region": weights["loss_feature"], "loss_global": weights["loss_enc_global_contra"],
    }
    assert_matcher_costs(cfg.model.criterion.matcher, off["pred_head"]["matcher_cfg"])
    assert cfg.model.num_queries == off["model"]["num_queries"]
    assert cfg.model.num_regions == off["model"]["num_patches"] == off["data"]["train"]["anchor_num"]
    # a loss on every decoder layer (official: the weights repeated for num_repeat = the decoder's layers)
    assert cfg.model.aux_loss is True and off["aux_loss"] is True
    assert cfg.model.transformer.num_decoder_layers == weights["num_repeat"]


@pytest.mark.parametrize("ours, off, name", SIAMESE_PARAMS)
def test_transformer_and_simsiam_heads_have_the_official_shape(ours, off, name):
    cfg = _load("siamese_detr", ours)
    assert_transformer_shape(cfg.model.transformer, off["transformer"])
    projector, predictor = off["encoder_head"]["projector"], off["encoder_head"]["predictor"]
    assert cfg.model.projection_dim == projector["out_channels"] == projector["hid_channels"]
    assert cfg.model.projection_dim == predictor["in_channels"] == predictor["out_channels"]
    assert cfg.model.predictor_hidden_dim == predictor["hid_channels"]


@pytest.mark.parametrize("ours, off, name", SIAMESE_PARAMS)
def test_optimiser_clipping_batch_and_learning_rate_drop_are_the_official_ones(ours, off, name):
    cfg = _load("siamese_detr", ours)
    assert_optimiser_and_drop(cfg, off)
    assert_batch_and_clipping(cfg, off, name)


@pytest.mark.parametrize("ours, off, name", SIAMESE_PARAMS)
def test_views_regions_and_crops_are_the_official_ones(ours, off, name):
    mapper = _load("siamese_detr", ours).dataloader.train.mapper
    train = off["data"]["train"]
    assert mapper.tau == train["iou"] and mapper.shrink_outer == train["views_bbox_stochastic"]
    assert mapper.min_region_area_frac == train["area_min_ratio"]
    assert (mapper.num_random_proposals, mapper.random_max_aspect) == (train["dice_num"], train["ratio_max"])
    assert mapper.query_jitter == off["model"]["box_disturbance"]
    resize = _transform(off["base_pipeline"], "RandomResizeWithTarget")[0]
    assert tuple(mapper.short_side_range) == (min(resize["sizes"]), max(resize["sizes"]))
    assert mapper.max_size == resize["max_size"]
    assert [mapper.crop_size] * 2 == list(_transform(off["crop_pipeline"], "Resize")[0]["size"])
    for pipeline in (off["view_pipeline"], off["crop_pipeline"]):  # one setting in ours serves both
        assert_crop_augmentation(mapper, pipeline)
    assert mapper.crop_augment is True


# ----------------------------------------------------------------------------------------------------- UP-DETR
@pytest.mark.parametrize("ours, off, name", UP_DETR_PARAMS)
def test_up_detr_losses_queries_transformer_and_optimiser_are_the_authors(ours, off, name):
    cfg = _load("up_detr", ours)
    criterion = off["head"]["criterion_cfg"]
    weights = criterion["weight_dict"]
    assert dict(cfg.model.weight_dict) == {k: weights[k] for k in ("loss_ce", "loss_bbox", "loss_giou", "loss_feature")}
    assert cfg.model.aux_loss is True and cfg.model.transformer.num_decoder_layers == weights["num_repeat"]
    assert_matcher_costs(cfg.model.criterion.matcher, off["head"]["matcher_cfg"])
    # their DETRHead: softmax over 2 classes + no-object (every target class 1); ours: objectness + no-object
    assert off["head"]["type"] == "DETRHead" and off["head"]["num_classes"] == 2
    assert cfg.model.criterion.class_loss == "ce" and cfg.model.criterion.eos_coef == criterion["eos_coef"]
    assert (cfg.model.num_queries, cfg.model.num_patches, cfg.model.mask_ratio) == (
        off["model"]["num_queries"], off["model"]["num_patches"], off["model"]["mask_ratio"])
    assert cfg.model.feature_recon is off["head"]["feature_recon"] is True
    assert_transformer_shape(cfg.model.transformer, off["neck"])
    assert_optimiser_and_drop(cfg, off)


@pytest.mark.parametrize("ours, off, name", UP_DETR_WITH_DATA)
def test_up_detr_batch_resize_and_patches_are_the_authors(ours, off, name):
    cfg = _load("up_detr", ours)
    assert_batch_and_clipping(cfg, off, name)
    mapper = cfg.dataloader.train.mapper
    assert mapper.num_patches == off["data"]["train"]["num_patches"]
    augs = up_detr_augmentation() if mapper.augmentation is None else instantiate(mapper.augmentation)
    assert [type(a) for a in augs] == [T.ResizeShortestEdge]  # no flip, as theirs
    resize = _transform(off["image_pipeline"], "RandomResizeWithTarget")[0]
    assert (list(augs[0].short_edge_length), augs[0].max_size) == (resize["sizes"], resize["max_size"])
    assert augs[0].sample_style == "choice"
    patches = off["patch_pipeline"]
    assert [_mapper_setting(mapper, "patch_size")] * 2 == list(_transform(patches, "Resize")[0]["size"])
    assert_crop_augmentation(mapper, patches)


# ------------------------------------------------------------------------------------ argparse runs (UP-DETR, DETReg)
FINETUNE_PAIRS = {  # our finetuning configs -> the official trainings of the detectors (defined below)
    "deformable_detr_r50_coco_50ep.py": "r50_deformable_detr",
    "deformable_detr_refine_r50_coco_50ep.py": "r50_deformable_detr_plus_iterative_bbox_refinement",
    "deformable_detr_refine_two_stage_r50_coco_50ep.py":
        "r50_deformable_detr_plus_iterative_bbox_refinement_plus_plus_two_stage",
    "deformable_detr_ss_r50_coco_50ep.py": "r50_deformable_detr_single_scale",
    "conditional_detr_r50_coco_300q_50ep.py": "conddetr_r50_epoch50",
}
DETREG_PAIRS = {
    "detreg_deformable_ms_r50_imagenet_5ep.py": "DETReg_top30_in",
    "detreg_detr_r50_imagenet_60ep.py": "DETReg_top30_in_detr",
    "detreg_deformable_ms_r50_coco_50ep.py": "DETReg_top30_coco",
}
DETREG_PARAMS = [pytest.param(ours, ARGUMENTS[run]["args"], ARGUMENTS[run]["gpus"], id=ours[:-3])
                 for ours, run in DETREG_PAIRS.items()]


def assert_argparse_transformer(ours, args):
    """``model.transformer`` against DETR-style arguments (``--enc_layers``, ``--nheads``, ...)."""
    assert (ours.d_model, ours.nhead, ours.dim_feedforward, ours.dropout) == (
        args["hidden_dim"], args["nheads"], args["dim_feedforward"], args["dropout"])
    assert (ours.num_encoder_layers, ours.num_decoder_layers) == (args["enc_layers"], args["dec_layers"])


def assert_argparse_training(cfg, args, gpus, images):
    """lr, weight decay, clipping, total batch (GPUs x ``--batch_size``), and ``--epochs`` as iterations, the
    backbone frozen (``--lr_backbone 0`` / ``--fre_cnn``: every pretext model freezes it by construction)."""
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (args["lr"], args["weight_decay"])
    assert cfg.train.clip_grad.max_norm == args["clip_max_norm"]
    batch = cfg.dataloader.train.total_batch_size
    assert batch == gpus * args["batch_size"]
    assert abs(cfg.train.max_iter - args["epochs"] * images / batch) <= 1
    assert issubclass(cfg.model._target_, PretextDETR)


def test_the_argument_fixture_holds_the_official_commands():
    assert set(ARGUMENTS) == {"up_detr", *DETREG_PAIRS.values(), *FINETUNE_PAIRS.values()}
    commits = {
        "44c0c6eb4bddf409a41cbaae31b7360062495199": ["up_detr"],  # dddzg/up-detr
        "a4b636351b46d8a77fa7155e350424027a7889d6": list(DETREG_PAIRS.values()),  # amirbar/DETReg
        "11169a60c33333af00a4849f1808023eba96a931": [r for r in FINETUNE_PAIRS.values() if "deformable" in r],
        "8ea7c3f3fff49cd287855d4f13cc12a6066bc8e9": ["conddetr_r50_epoch50"],  # Atten4Vis/ConditionalDETR
    }
    assert {run: ARGUMENTS[run]["commit"] for runs in commits.values() for run in runs} == {
        run: commit for commit, runs in commits.items() for run in runs}
    # the GPUs the command starts (Deformable DETR's scripts do not say; its README: "total batch size of 32")
    assert {run: v["gpus"] for run, v in ARGUMENTS.items()} == {
        run: None if "deformable" in run else 8 for run in ARGUMENTS}


def test_vanilla_up_detr_is_the_official_run():
    cfg, args = _load("up_detr", "up_detr_r50_imagenet_60ep.py"), ARGUMENTS["up_detr"]["args"]
    # official models/__init__.py build_model: loss_ce 1 and loss_feature 1 written in the code, the box
    # weights from the arguments; SetCriterion(num_classes=2, eos_coef=args.eos_coef)
    assert dict(cfg.model.weight_dict) == {"loss_ce": 1, "loss_bbox": args["bbox_loss_coef"],
                                           "loss_giou": args["giou_loss_coef"], "loss_feature": 1}
    assert_matcher_costs(cfg.model.criterion.matcher, {
        "cost_class": args["set_cost_class"], "cost_bbox": args["set_cost_bbox"], "cost_giou": args["set_cost_giou"]})
    assert cfg.model.criterion.get("class_loss", "ce") == "ce" and cfg.model.criterion.eos_coef == args["eos_coef"]
    assert (cfg.model.num_queries, cfg.model.num_patches, cfg.model.aux_loss) == (
        args["num_queries"], args["num_patches"], args["aux_loss"])
    assert cfg.model.feature_recon is args["feature_recon"] is True and args["fre_cnn"] is True
    assert_argparse_transformer(cfg.model.transformer, args)
    assert cfg.model.transformer.normalize_before is args["pre_norm"] is True
    assert_argparse_training(cfg, args, ARGUMENTS["up_detr"]["gpus"], IMAGES["imagenet"])
    schedule = cfg.lr_multiplier  # the drop at epoch --lr_drop
    batch = cfg.dataloader.train.total_batch_size
    assert abs(schedule.milestones[0] - args["lr_drop"] * IMAGES["imagenet"] / batch) <= 1
    assert schedule.num_updates == cfg.train.max_iter and list(schedule["values"]) == [1.0, 0.1]


@pytest.mark.parametrize("ours, args, gpus", DETREG_PARAMS)
def test_detreg_is_the_official_run(ours, args, gpus):
    cfg = _load("detreg", ours)
    # official models/__init__.py: loss_ce / loss_bbox / loss_giou from --cls/bbox/giou_loss_coef, and
    # loss_object_embedding from --object_embedding_coef when --object_embedding_loss is set
    assert args["object_embedding_loss"] is True
    assert dict(cfg.model.weight_dict) == {
        "loss_ce": args["cls_loss_coef"], "loss_bbox": args["bbox_loss_coef"], "loss_giou": args["giou_loss_coef"],
        "loss_object_embedding": args["object_embedding_coef"]}
    criterion = cfg.model.criterion
    assert_matcher_costs(criterion.matcher, {
        "cost_class": args["set_cost_class"], "cost_bbox": args["set_cost_bbox"], "cost_giou": args["set_cost_giou"]})
    assert (cfg.model.num_queries, cfg.model.aux_loss) == (args["num_queries"], args["aux_loss"])
    assert_argparse_transformer(cfg.model.transformer, args)
    transformer = cfg.model.transformer
    if args["model"] == "deformable_detr":  # sigmoid focal objectness, the linear projections at 0.1 x lr
        assert criterion.class_loss == "focal"
        assert criterion.focal_alpha == criterion.matcher.alpha == args["focal_alpha"]
        assert (transformer.num_feature_levels, transformer.enc_n_points, transformer.dec_n_points) == (
            args["num_feature_levels"], args["enc_n_points"], args["dec_n_points"])
        assert (transformer.with_box_refine, transformer.two_stage) == (args["with_box_refine"], args["two_stage"])
        assert dict(cfg.optimizer.params.lr_factors_by_keyword) == {
            name: args["lr_linear_proj_mult"] for name in args["lr_linear_proj_names"]}
    else:  # DETR: softmax objectness with the no-object weight
        assert args["model"] == "detr" and criterion.get("class_loss", "ce") == "ce"
        assert criterion.eos_coef == args["eos_coef"]
        assert transformer.normalize_before is args["pre_norm"] is True
    mapper = cfg.dataloader.train.mapper
    assert (mapper.num_proposals, mapper.policy) == (args["max_prop"], args["strategy"])
    assert_argparse_training(cfg, args, gpus, IMAGES[args["dataset"]])
    if args["lr_drop"] < args["epochs"]:  # the COCO run's drop at epoch 40 of 50 (the others never drop)
        batch = cfg.dataloader.train.total_batch_size
        assert abs(cfg.lr_multiplier.milestones[0] - args["lr_drop"] * IMAGES[args["dataset"]] / batch) <= 1


# --------------------------------------------------------------------------------- finetuning (Deformable, Conditional)
@pytest.mark.parametrize("ours, run", [pytest.param(o, r, id=o[:-3]) for o, r in FINETUNE_PAIRS.items()])
def test_detector_finetuning_is_the_official_training(ours, run):
    """Our Deformable DETR COCO configs against the official ``configs/r50_deformable_detr*.sh`` and the
    300-query Conditional DETR one against ``scripts/conddetr_r50_epoch50.sh``: losses, matcher, queries,
    Transformer, optimiser, clipping, 50 epochs with the drop at 40. Deliberately not compared (Siamese DETR
    §4.1's finetuning protocol, the card's "Finetuning"): the batch, 32 for every variant (official Deformable
    DETR: 32 as well, by its README; Conditional DETR: 8 x 2), and Conditional DETR's backbone lr (5e-5,
    official 1e-5); nor the class head's width (80 COCO classes, official 91 sparse ids)."""
    cfg, args = _load("detr", ours), ARGUMENTS[run]["args"]
    model = cfg.model
    assert dict(model.weight_dict) == {
        "loss_ce": args["cls_loss_coef"], "loss_bbox": args["bbox_loss_coef"], "loss_giou": args["giou_loss_coef"]}
    assert_matcher_costs(model.criterion.matcher, {
        "cost_class": args["set_cost_class"], "cost_bbox": args["set_cost_bbox"], "cost_giou": args["set_cost_giou"]})
    assert model.criterion.class_loss == "focal"
    assert model.criterion.focal_alpha == model.criterion.matcher.alpha == args["focal_alpha"]
    assert (model.num_queries, model.aux_loss) == (args["num_queries"], args["aux_loss"])
    assert_argparse_transformer(model.transformer, args)
    optimizer = cfg.optimizer
    assert (optimizer.lr, optimizer.weight_decay) == (args["lr"], args["weight_decay"])
    if run.startswith("r50_deformable_detr"):
        transformer = model.transformer
        assert (transformer.num_feature_levels, transformer.enc_n_points, transformer.dec_n_points) == (
            args["num_feature_levels"], args["enc_n_points"], args["dec_n_points"])
        assert (transformer.with_box_refine, transformer.two_stage) == (args["with_box_refine"], args["two_stage"])
        assert optimizer.params.backbone_lr_factor == pytest.approx(args["lr_backbone"] / args["lr"], rel=1e-12)
        assert dict(optimizer.params.lr_factors_by_keyword) == {
            name: args["lr_linear_proj_mult"] for name in args["lr_linear_proj_names"]}
    else:
        assert model.transformer.get("normalize_before", False) is args["pre_norm"] is False
    assert cfg.train.clip_grad.max_norm == args["clip_max_norm"]
    batch = cfg.dataloader.train.total_batch_size
    assert abs(cfg.train.max_iter - args["epochs"] * COCO_TRAIN / batch) <= 1
    assert abs(cfg.lr_multiplier.milestones[0] - args["lr_drop"] * COCO_TRAIN / batch) <= 1
    assert list(cfg.lr_multiplier["values"]) == [1.0, 0.1]
