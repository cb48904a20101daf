"""tools/convert_checkpoint.py's summary, on the recorded official key layouts (tests/fixtures/pretrain_layouts):
the rows removed from class heads are listed (as the card promises), the per-module and dropped lines agree,
the SimSiam biases say where they went, and every unmapped key is listed."""

import os

import torch

from script_modules import load_script
from test_convert_pretrain_checkpoints import fake_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tool = load_script(os.path.join(ROOT, "tools", "convert_checkpoint.py"), "convert_checkpoint_summary")

COCO_ROWS_WITHOUT_CLASS = "0,12,26,29,30,45,66,68,69,71,83"  # COCO ids 0..90 that are not thing categories


def _save(tmp_path, layout, drop=(), wrap="model", extra=None):
    """The layout's tensors (no backbone: faster, and not what is checked) saved as an official checkpoint."""
    state = {k: v.contiguous() for k, v in fake_state(layout).items() if not k.startswith(("backbone.",) + drop)}
    state.update(extra or {})
    path = tmp_path / f"{layout}.pth"
    torch.save({wrap: state}, path)
    return str(path)


def test_detr_summary_lists_the_coco_rows_removed_and_drops_nothing(tmp_path, capsys):
    src = _save(tmp_path, "detreg_detr.json", drop=("feature_embed.",))  # DETR layout, a 92-row COCO head
    assert tool.main(["--format", "detr", "--input", src, "--output", str(tmp_path / "out.pth")]) == 0
    out = capsys.readouterr().out
    assert "class_embed: 12" in out
    assert (f"  class rows: class_embed.* (12 tensors): rows {COCO_ROWS_WITHOUT_CLASS} removed, 81 of 92 kept "
            "(removed: COCO ids without a class; kept: the 80 thing classes in Detectron2's contiguous order, "
            "then the no-object row)\n") in out
    assert "  dropped: nothing\n" in out


def test_siamese_for_pretraining_summary_names_the_rows_and_the_folded_biases(tmp_path, capsys):
    src = _save(tmp_path, "siamese_condtr.json", wrap="state_dict")
    assert tool.main(["--format", "siamese_detr", "--for-pretraining", "--input", src, "--output",
                      str(tmp_path / "out.pth")]) == 0
    out = capsys.readouterr().out
    assert ("  class rows: class_embed.* (12 tensors): rows 0 removed, 2 of 3 kept (removed: the rows the "
            "pretraining model's objectness head has no place for; kept: the object row 1, then the no-object row "
            "(the last))\n") in out
    dropped = out.split("  dropped: ")[1].splitlines()[0]
    assert dropped == ("enc_head.* (4 keys: biases of Linear layers in front of a BatchNorm, which the project's "
                       "layers lack: each subtracted from that BatchNorm's running_mean, so the output is "
                       "unchanged), pred_head.* (1 key: the loss's class weights, criterion.empty_weight)")
    assert "class_embed.* (" not in dropped


def test_siamese_finetune_summary_counts_every_simsiam_key_under_enc_head(tmp_path, capsys):
    src = _save(tmp_path, "siamese_condtr.json", wrap="state_dict")
    assert tool.main(["--format", "siamese_detr", "--input", src, "--output", str(tmp_path / "out.pth")]) == 0
    dropped = capsys.readouterr().out.split("  dropped: ")[1].splitlines()[0]
    assert dropped.startswith("enc_head.* (30 keys: the SimSiam heads, not used by finetuning") and "*." not in dropped


def test_every_unmapped_key_is_listed(tmp_path, capsys):
    extra = {f"mask_head.layer{i:02d}.weight": torch.zeros(1) for i in range(60)}
    src = _save(tmp_path, "detreg_detr.json", drop=("feature_embed.",), extra=extra)
    assert tool.main(["--format", "detr", "--input", src, "--output", str(tmp_path / "out.pth")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 60 key(s) of ")
    assert all(f"\n  {k}" in err for k in extra) and "more" not in err
    assert not (tmp_path / "out.pth").exists()
