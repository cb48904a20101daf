"""datasets/prepare_synthetic_shapes.py: the preview grid's geometry (tiling, scaling, box corners) against
hand-placed images and boxes, and how the command line maps onto the generator (stubbed, nothing generated)."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "datasets" / "prepare_synthetic_shapes.py"
GRAY = 50


def _script():
    spec = importlib.util.spec_from_file_location("prepare_synthetic_shapes_script_t", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def three_images(tmp_path):
    """Three gray 20 (h) x 40 (w) images; image 0 has one box, COCO xywh [5, 10, 10, 4] of class "o"."""
    images = []
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((20, 40, 3), GRAY, np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 20, "width": 40})
    coco = {"images": images, "categories": [{"id": 1, "name": "o"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 10, 10, 4]}]}
    json_file = tmp_path / "a.json"
    json_file.write_text(json.dumps(coco))
    return str(tmp_path), str(json_file)


def test_preview_grid_tiles_scales_and_draws_boxes_where_they_are(three_images):
    """cell 80, 2 columns: 3 images need 2 rows; each 20 x 40 image is scaled by 80 / max(20, 40) = 2 to
    40 x 80 and placed at the top-left of its cell in row-major order. The box [5, 10, 10, 4] scaled by 2 is
    x 10..30, y 20..28: a 1-pixel rectangle with inclusive corners (10, 20) and (29, 27)."""
    grid = _script().preview_grid(*three_images, count=3, cell=80, columns=2)
    assert grid.shape == (160, 160, 3) and grid.dtype == np.uint8
    gray = (grid == GRAY).all(axis=2)
    # image 1: row 0, column 1; image 2: row 1, column 0; the rest of each cell and the fourth cell are empty
    assert gray[0:40, 80:160].all() and gray[80:120, 0:80].all()
    assert (grid[40:80] == 0).all() and (grid[120:160] == 0).all() and (grid[80:120, 80:160] == 0).all()
    box = ~gray[0:40, 0:80]
    assert box[27, 10:30].all() and box[20:28, 10].all() and box[20:28, 29].all()  # bottom, left, right
    assert not box[28:, :].any()  # nothing below the bottom edge (the label sits above the box)
    assert not box[20:28, 30:].any() and not box[20:28, :10].any()  # nothing right or left of it
    assert not box[21:27, 11:29].any()  # a 1-pixel outline, not filled


def test_preview_grid_count_limits_the_images(three_images):
    grid = _script().preview_grid(*three_images, count=2, cell=80, columns=2)
    assert grid.shape == (80, 160, 3)
    assert (grid[0:40, 80:160] == GRAY).all()


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    """The script with its generators replaced by recorders returning (image folder, json) per split."""
    module = _script()
    calls = []

    def recorder(kind):
        def make(split, root, num_images):
            calls.append((kind, split, root, num_images))
            return (f"{root}/{split}", f"{root}/{split}.json")
        return make

    monkeypatch.setattr(module, "ensure_synthetic_shapes", recorder("ensure"))
    monkeypatch.setattr(module, "generate_synthetic_shapes", recorder("generate"))
    monkeypatch.chdir(tmp_path)
    return module, calls


def test_each_split_gets_its_own_size_and_force_regenerates(stubbed, tmp_path, capsys):
    module, calls = stubbed
    module.main(["--root", "rel", "--splits", "train", "val", "train_large", "dev", "--num-train", "3",
                 "--num-val", "4", "--num-train-large", "5", "--num-dev", "2"])
    root = str(tmp_path / "rel")  # made absolute
    assert calls == [("ensure", "train", root, 3), ("ensure", "val", root, 4),
                     ("ensure", "train_large", root, 5), ("ensure", "dev", root, 2)]
    assert "note: non-default sizes" in capsys.readouterr().out
    calls.clear()
    module.main(["--root", "rel", "--splits", "dev", "--force"])
    assert calls == [("generate", "dev", root, None)]
    assert "note: non-default sizes" not in capsys.readouterr().out
    module.main(["--root", "rel", "--num-train", "256", "--num-val", "64"])  # the defaults, given explicitly
    assert "note: non-default sizes" not in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--num-train-large", "--num-dev"])
def test_every_size_flag_refuses_zero(stubbed, capsys, flag):
    module, calls = stubbed
    with pytest.raises(SystemExit) as e:
        module.main([flag, "0"])
    assert e.value.code == 2 and f"{flag} must be at least 1, got 0" in capsys.readouterr().err
    assert calls == []


def test_preview_shows_val_with_the_requested_count(stubbed, monkeypatch, tmp_path, capsys):
    module, _ = stubbed
    seen = []
    monkeypatch.setattr(module, "preview_grid",
                        lambda image_root, json_file, count: seen.append((image_root, json_file, count))
                        or np.zeros((8, 8, 3), np.uint8))
    module.main(["--root", "r", "--splits", "train", "val", "--preview", "out/p.png", "--preview-count", "5"])
    root = tmp_path / "r"
    assert seen == [(f"{root}/val", f"{root}/val.json", 5)]
    assert (tmp_path / "out" / "p.png").is_file() and "preview of 'val' written" in capsys.readouterr().out
    monkeypatch.setattr(module.cv2, "imwrite", lambda path, image: False)
    with pytest.raises(SystemExit, match="could not write out/p.png"):
        module.main(["--root", "r", "--splits", "train", "--preview", "out/p.png"])
    assert seen[-1][0] == f"{root}/train"
