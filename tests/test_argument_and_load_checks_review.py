"""Argument checks of tools/generate_proposals.py, store-settings comparisons and checkpoint-load refusals that
no other test pinned (found by a mutation review): each test states the behaviour a user relies on, with the
expectation written out by hand, not taken from the code under test."""

import os

import cv2
import numpy as np
import pytest
import torch

from script_modules import forget_datasets, load_script
from siamese_detr.data.proposals.generate_arguments import (
    coco_images_missing,
    dataset_problem,
    ignored_by_method,
    sed_model_problem,
    usage_problem,
)
from siamese_detr.data.proposals.store import ProposalStoreError
from siamese_detr.data.proposals.store_settings import image_list_differs, read_meta
from siamese_detr.engine.checkpointing import CheckpointLoadError
from siamese_detr.engine.load_refusals import refuse_other_variant, refuse_partly_random_model, refuse_shape_mismatches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
gen = load_script(os.path.join(ROOT, "tools", "generate_proposals.py"), "generate_proposals_review37")


def _images(folder, n=2):
    """``n`` small noisy PNGs in ``folder``; returns the folder."""
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        image = np.random.default_rng(i).integers(0, 255, (40, 56, 3)).astype(np.uint8)
        cv2.imwrite(os.path.join(folder, f"im{i}.png"), image)
    return str(folder)


def _random_args(images, out, *extra):
    return ["--image-dir", images, "--method", "random", "--max-boxes", "4", "--output", out, "--no-progress",
            *extra]


# ------------------------------------------------------------------------------------------ generate_arguments
def test_a_merge_neither_notes_nor_refuses_method_flags_it_does_not_read(tmp_path):
    """``--merge`` only joins finished shards: the method flags of the command that computed them (a script
    passes the same ones to every step) are neither noted as ignored nor checked (a --sed-model path, the
    --max-boxes 0 of --method random) -- without --merge they are."""
    out = tmp_path / "store"
    out.mkdir()
    parser = gen.build_parser()
    for extra in (["--method", "random", "--alpha", "0.5"],
                  ["--method", "edgeboxes", "--sed-model", str(tmp_path / "missing.yml.gz")],
                  ["--method", "random", "--max-boxes", "0"]):
        argv = ["--merge", "--num-shards", "2", "--output", str(out), *extra]
        args = parser.parse_args(argv)
        assert ignored_by_method(args, argv, parser) is None, extra
        assert sed_model_problem(args) is None, extra
        assert usage_problem(args) is None, extra
    # the same flags without --merge: a note for --alpha, a refusal for the missing model and for 0 random boxes
    argv = ["--image-dir", str(tmp_path), "--output", str(out), "--method", "random", "--alpha", "0.5"]
    note = ignored_by_method(gen.build_parser().parse_args(argv), argv, parser)
    assert note.startswith("--method random does not use --alpha, which is ignored")
    args = parser.parse_args(["--image-dir", str(tmp_path), "--output", str(out), "--method", "edgeboxes",
                              "--sed-model", str(tmp_path / "missing.yml.gz")])
    assert sed_model_problem(args).startswith("--sed-model: ")
    args = parser.parse_args(["--image-dir", str(tmp_path), "--output", str(out), "--method", "random",
                              "--max-boxes", "0"])
    assert usage_problem(args).startswith("--max-boxes 0 (all boxes) has no meaning for --method random")


def test_a_mistyped_dataset_name_is_answered_with_the_registered_name():
    """``--dataset coco_2017_vla`` (two letters swapped) is refused naming ``coco_2017_val`` as the name meant."""
    problem = dataset_problem("coco_2017_vla")
    assert problem.startswith("--dataset 'coco_2017_vla' is not a registered dataset. Did you mean 'coco_2017_val'")


def test_a_registered_dataset_whose_files_are_missing_is_refused_before_any_work(tmp_path):
    """A registered dataset whose annotation file is not on disk: the argument check names the missing file
    (before --output is created), instead of failing later while listing the images."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = "review37_dataset_without_files"
    missing = str(tmp_path / "annotations" / "instances.json")
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(json_file=missing, image_root=str(tmp_path))
    try:
        problem = dataset_problem(name)
    finally:
        forget_datasets([name])
    assert problem is not None and problem.startswith(f"Dataset '{name}' expects '{missing}', which does not exist")


def test_a_coco_spec_with_some_images_missing_is_not_refused(tmp_path):
    """Only a coco: spec none of whose images exist is refused up front; one with some images on disk goes on
    (the missing ones are skipped as unreadable)."""
    there = tmp_path / "a.png"
    there.write_bytes(b"x")
    records = [{"file_name": str(tmp_path / "gone.png")}, {"file_name": str(there)}]
    assert coco_images_missing("coco:ann/val.json", records) is None
    assert coco_images_missing("coco:ann/val.json", records[:1]) is not None


def test_the_coco_spec_hint_keeps_the_json_file_name_when_a_wrong_image_root_was_given(tmp_path):
    """The refusal of a coco: spec with a wrong image root writes the form to use with the user's own json:
    ``coco:ann/val.json:IMAGE_ROOT`` (not the path cut before ``.json``), and names the root given."""
    records = [{"file_name": str(tmp_path / "wrong" / "im0.png")}]
    problem = coco_images_missing("coco:ann/val.json:wrong", records)
    assert problem.endswith("(here: coco:ann/val.json:IMAGE_ROOT)")
    assert f"relative to the image root {os.path.abspath('wrong')!r} given after the json" in problem


def test_a_complete_store_is_exported_again_without_its_dataset(tmp_path, capsys):
    """The export-failure message says to export a complete store again with ``--output STORE
    --export-detectron2 FILE.pkl`` alone: that command runs (no --dataset / --image-dir needed) and writes the
    same file as the export made with the store."""
    images, out = _images(tmp_path / "imgs"), str(tmp_path / "store")
    first, again = tmp_path / "first.pkl", tmp_path / "again.pkl"
    assert gen.main(_random_args(images, out, "--export-detectron2", str(first))) == 0
    capsys.readouterr()
    assert gen.main(["--output", out, "--export-detectron2", str(again), "--no-progress"]) == 0
    assert "error" not in capsys.readouterr().err
    assert again.read_bytes() == first.read_bytes()


def test_only_a_coco_spec_gets_the_coco_image_root_refusal(tmp_path):
    """A registered dataset (or a folder: spec) whose listed images are all missing is not refused with the
    ``coco:ANNOTATIONS.json:IMAGE_ROOT`` advice, which only a coco: spec can follow."""
    records = [{"file_name": str(tmp_path / "gone0.png")}, {"file_name": str(tmp_path / "gone1.png")}]
    assert coco_images_missing("coco_2017_val", records) is None
    assert coco_images_missing(f"folder:{tmp_path}", records) is None
    assert "coco:ANNOTATIONS.json:IMAGE_ROOT" in coco_images_missing("coco:ann/val.json", records)


# ------------------------------------------------------------------------------------------------ store_settings
def test_a_store_whose_meta_json_is_not_json_is_named_corrupt_with_the_fix(tmp_path):
    """A complete store's meta.json that is cut short (not JSON) gives the store error naming the file and the
    fix (--overwrite or another --output), not a JSON traceback."""
    meta = tmp_path / "meta.json"
    meta.write_text('{"method": "random", "par')
    with pytest.raises(ProposalStoreError) as caught:
        read_meta(str(meta))
    message = str(caught.value)
    assert message.startswith(f"cannot read {meta} (")
    assert message.endswith("the store is corrupt; pass --overwrite to regenerate it, or choose another --output")


def test_a_merge_run_again_on_a_complete_store_is_not_compared_with_its_settings(tmp_path, capsys):
    """``--merge`` of a store merged already does nothing and succeeds, whatever computing flags the script
    passes along (the same ones, or another --method): a merge computes nothing, so there is nothing to refuse."""
    images, out = _images(tmp_path / "imgs"), str(tmp_path / "store")
    assert gen.main(_random_args(images, out)) == 0
    capsys.readouterr()
    assert gen.main(_random_args(images, out, "--merge")) == 0
    assert gen.main(["--merge", "--image-dir", images, "--method", "edgeboxes", "--output", out,
                     "--no-progress"]) == 0
    assert "error" not in capsys.readouterr().err


def test_a_finished_command_with_a_relative_image_dir_runs_again(tmp_path, capsys, monkeypatch):
    """The same command run again with a relative ``--image-dir`` (the store records the absolute folder) finds
    the store complete and made with its settings: exit 0, not "made with other settings"."""
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "imgs")
    assert gen.main(_random_args("imgs", "store")) == 0
    capsys.readouterr()
    assert gen.main(_random_args("imgs", "store")) == 0
    assert "error" not in capsys.readouterr().err


def test_an_unreadable_image_list_is_left_to_the_store_s_own_corruption_error(tmp_path):
    """An old store (no recorded digest) whose image_ids.json is missing or not JSON: the image comparison says
    nothing (None), so the run reports the store as corrupt when it opens it, not as "made from other images"."""
    records = [{"image_id": "a"}, {"image_id": "b"}]
    assert image_list_differs(str(tmp_path), {}, records, "imgs") is None
    (tmp_path / "image_ids.json").write_text('["a", ')
    assert image_list_differs(str(tmp_path), {}, records, "imgs") is None
    (tmp_path / "image_ids.json").write_text('["a"]')  # readable: compared, "b" is new
    assert image_list_differs(str(tmp_path), {}, records, "imgs") == (
        "the store was made from 1 images, imgs lists 2 now (1 new, first: ['b'])")


# ------------------------------------------------------------------------------------------------ load refusals
class _LastLoad:
    """What the refusals read of a checkpointer after a load: its model, the checkpoint's tensor names, the
    names it loaded and the tensors skipped for their shape."""

    def __init__(self, model, checkpoint_keys, loaded_names=(), incorrect_shapes=()):
        self.model, self.checkpoint_keys = model, list(checkpoint_keys)
        self.loaded_names, self.incorrect_shapes = list(loaded_names), list(incorrect_shapes)

    def parameters_not_loaded(self):
        return [name for name, _ in self.model.named_parameters() if name not in self.loaded_names]


def test_eval_only_of_a_torchvision_resnet_is_not_told_to_convert_it(tmp_path):
    """``--eval-only`` of a bare torchvision ResNet file: converting it would give a backbone, not a model to
    evaluate, so the refusal is the general one (how many parameters would be random, the opt-in), without the
    converter's command."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))  # 4 parameters
    resnet = ["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "fc.weight"]
    with pytest.raises(CheckpointLoadError) as caught:
        refuse_partly_random_model(_LastLoad(model, resnet), "resnet50.pth")
    message = str(caught.value)
    assert message.startswith("--eval-only: 4 of the model's 4 parameters are not in resnet50.pth (by name and "
                              "shape; e.g. ['0.weight', '0.bias', '1.weight', '1.bias'])")
    assert "convert_checkpoint" not in message and "train.eval_allow_random=True" in message


def test_a_shape_refusal_marks_more_tensors_than_shown_only_when_there_are_more(tmp_path):
    """The refusal shows the first 4 tensors that do not fit; "; ..." follows only when a fifth one exists."""
    four = [(f"layer{i}.weight", (3,), (4,)) for i in range(4)]
    with pytest.raises(CheckpointLoadError) as caught:
        refuse_shape_mismatches(_LastLoad(None, [], incorrect_shapes=four), "x.pth")
    shown = "; ".join(f"layer{i}.weight: [3] in the checkpoint, [4] in the model" for i in range(4))
    assert str(caught.value).startswith(f"x.pth: 4 tensors do not fit the model's shapes and would start from "
                                        f"scratch ({shown}). ")
    five = four + [("layer4.weight", (3,), (4,))]
    with pytest.raises(CheckpointLoadError) as caught:
        refuse_shape_mismatches(_LastLoad(None, [], incorrect_shapes=five), "x.pth")
    assert str(caught.value).startswith(f"x.pth: 5 tensors do not fit the model's shapes and would start from "
                                        f"scratch ({shown}; ...). ")


class _Model:
    """A model of which the refusal reads only the state dict's names."""

    def __init__(self, keys):
        self.keys = keys

    def state_dict(self):
        return dict.fromkeys(self.keys)


def test_a_checkpoint_of_the_model_s_own_variant_is_not_refused_even_when_it_loads_in_part():
    """A Vanilla DETR checkpoint into a Vanilla DETR model is no variant mistake, even when part of the
    transformer did not load (another decoder depth): no refusal. The same model given a Conditional DETR
    transformer (``ref_point_head``) is refused naming both variants."""
    vanilla = ["transformer.encoder_layers.0.linear1.weight", "transformer.decoder_layers.0.linear1.weight",
               "transformer.decoder_layers.1.linear1.weight", "query_embed.weight", "class_embed.weight"]
    checkpoint = vanilla[:2] + ["query_embed.weight"]
    refuse_other_variant(_LastLoad(_Model(vanilla), checkpoint, loaded_names=checkpoint), "vanilla.pth")
    conditional = checkpoint + ["transformer.ref_point_head.layers.0.weight"]
    with pytest.raises(CheckpointLoadError, match=r"^conditional\.pth holds a Conditional DETR transformer, and "
                                                  r"this config's model is Vanilla DETR: "):
        refuse_other_variant(_LastLoad(_Model(vanilla), conditional, loaded_names=checkpoint), "conditional.pth")
