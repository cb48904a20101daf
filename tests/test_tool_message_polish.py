"""Messages and file names of the tools as a new user meets them: a misspelled --dataset gets "Did you mean",
a coco: spec whose images are not under its image root names the coco:ANNOTATIONS.json:IMAGE_ROOT form,
visualize_views names a folder: dataset's PNGs without the image's own extension, --help shows the
defaults, and compare_pretraining counts one seed as "1 seed"."""
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from script_modules import forget_datasets, load_script

ROOT = Path(__file__).resolve().parents[1]


def _tool(name):
    return load_script(ROOT / "tools" / f"{name}.py", f"{name}_message_polish")


@pytest.fixture
def specs():
    """Dataset specs (coco:/folder:) registered by a test; removed afterwards."""
    made = []
    yield made
    forget_datasets(made)


def _shapes(path, seed):
    """A small picture of a few filled rectangles (EdgeBoxes finds them)."""
    rng = np.random.default_rng(seed)
    image = np.full((160, 200, 3), 30, np.uint8)
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(0, (150, 110)))
        cv2.rectangle(image, (x, y), (x + 40, y + 40), tuple(int(c) for c in rng.integers(80, 255, 3)), -1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, image)


def test_a_misspelled_dataset_gets_a_did_you_mean(tmp_path, capsys):
    gen = _tool("generate_proposals")
    out = tmp_path / "out"
    assert gen.main(["--dataset", "synthetic_shape_val", "--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --dataset 'synthetic_shape_val' is not a registered dataset. "
                          "Did you mean 'synthetic_shapes_val'")
    assert not out.exists()
    assert gen.main(["--dataset", "no_such_thing_at_all", "--output", str(out)]) == 2  # nothing close: no guess
    err = capsys.readouterr().err
    assert "is not a registered dataset" in err and "Did you mean" not in err
    # a path given without its spec prefix: the spec syntax and the spec it probably meant
    assert gen.main(["--dataset", "datasets/my_data/train.json", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "It looks like a path" in err and "Did you mean 'coco:datasets/my_data/train.json'?" in err, err


def test_a_coco_spec_without_its_image_root_names_the_spec_form(tmp_path, capsys, monkeypatch, specs):
    gen = _tool("generate_proposals")
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        _shapes(os.path.join("imgs", f"im{i}.png"), i)
    os.makedirs("ann")
    with open(os.path.join("ann", "val.json"), "w") as f:  # images are in imgs/, not next to the json
        json.dump({"images": [{"id": i + 1, "file_name": f"im{i}.png", "height": 160, "width": 200}
                              for i in range(2)],
                   "annotations": [], "categories": [{"id": 1, "name": "thing"}]}, f)
    specs += ["coco:ann/val.json", "coco:ann/val.json:ann", "coco:ann/val.json:imgs"]
    argv = ["--method", "random", "--max-boxes", "4", "--output", "out", "--no-progress"]
    assert gen.main(["--dataset", "coco:ann/val.json"] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: none of the 2 images of --dataset 'coco:ann/val.json' exist (first: "
                          f"{tmp_path / 'ann' / 'im0.png'})")
    assert f"relative to the json's own folder {str(tmp_path / 'ann')!r} (no image root given)" in err
    assert err.rstrip().endswith("Give the folder that holds them as --dataset coco:ANNOTATIONS.json:IMAGE_ROOT "
                                 "(here: coco:ann/val.json:IMAGE_ROOT)")
    assert "DETECTRON2_DATASETS" not in err and not os.path.exists("out")  # nothing written, not even chunks
    assert gen.main(["--dataset", "coco:ann/val.json:ann"] + argv) == 2  # a root given, the wrong one
    assert f"relative to the image root {str(tmp_path / 'ann')!r} given after the json" in capsys.readouterr().err
    assert gen.main(["--dataset", "coco:ann/val.json:imgs"] + argv) == 0  # the advised form works


def test_views_of_a_folder_dataset_are_named_without_the_image_extension(tmp_path, specs):
    vis = _tool("visualize_views")
    images = tmp_path / "photos"
    _shapes(str(images / "a.png"), 0)
    _shapes(str(images / "sub" / "b.JPG"), 1)
    spec = f"folder:{images}"
    specs.append(spec)
    out = tmp_path / "views"
    assert vis.main(["--dataset", spec, "--num-samples", "2", "--output", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 2 and all(n.endswith(".png") and n.count(".") == 1 for n in names), names
    assert {n.split("_", 2)[2] for n in names} == {"a.png", "sub_b.png"}


def test_help_shows_what_each_option_does_and_its_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = " ".join(_tool("generate_proposals").build_parser().format_help().split())
    assert "--method {edgeboxes,selective_search,random} proposal method (default: edgeboxes)" in text
    assert "--num-workers NUM_WORKERS processes (each uses 1 thread; default: 1)" in text
    with pytest.raises(SystemExit):
        _tool("run_demo").main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--output OUTPUT folder of the steps, figures and summary.json (default: output/demo)" in text


@pytest.mark.parametrize("seeds, count, named", [
    ([3], "1 seed)", "; seed 3;"),
    ([0, 1], "2 seeds)", "; seeds [0, 1];"),
])
def test_the_comparison_counts_its_seeds_in_words(tmp_path, seeds, count, named):
    tool = _tool("compare_pretraining")
    results = {"A": {s: {"AP": 10.0 + s, "AP50": 20.0, "pretrain_s_per_iter": 0.5} for s in seeds}}
    args = type("Args", (), {"seeds": seeds, "low_label_percent": 10})()
    table = tool.write_outputs(tmp_path, results, args, 60.0, baseline=None)
    assert f"AP (mean ± spread, {count}" in table
    md = (tmp_path / "comparison.md").read_text()
    assert named in md and "1 seeds" not in md


def test_the_pickle_converter_module_prints_no_torch_jit_warnings():
    """``python -m siamese_detr.engine.checkpointing`` (the README's .pkl converter) imports the package, and
    with it detectron2, before any line of its own: detectron2 v0.6's torch.jit.script calls printed two
    FutureWarnings above its output. A fresh process (the warnings fire once per process, at import)."""
    import subprocess
    import sys

    from hang_guard import HANG_GUARD_S

    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    done = subprocess.run([sys.executable, "-m", "siamese_detr.engine.checkpointing", "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0 and "usage" in done.stdout
    assert "FutureWarning" not in done.stderr, done.stderr
