"""tools/visualize_views.py: where the drawing puts each region (hand-made sample), and the tool end to end on
the built-in dataset."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    return load_script(ROOT / "tools" / "visualize_views.py", "visualize_views_tool")


def _view(region_boxes, view_box, shade):
    n = len(region_boxes)
    return {"image": torch.full((3, 40, 50), shade, dtype=torch.uint8),
            "region_boxes": torch.tensor(region_boxes, dtype=torch.float32),
            "query_boxes": torch.tensor(region_boxes, dtype=torch.float32),
            "crops": torch.full((n, 3, 16, 16), shade, dtype=torch.uint8),
            "view_box": torch.tensor(view_box, dtype=torch.float32)}


def test_regions_drawn_in_their_colour_in_both_views():
    tool = _tool()
    boxes1 = [[2, 3, 30, 35], [10, 5, 20, 15]]  # xyxy pixels of each 40 x 50 view
    boxes2 = [[4, 1, 40, 30], [25, 20, 45, 38]]
    sample = {"image_id": "img/7", "num_proposals": 1, "flip": False,
              "views": [_view(boxes1, [0, 0, 100, 80], 100), _view(boxes2, [50, 0, 150, 80], 150)]}
    canvas = tool.render_sample(sample, crop_display=32, min_view_height=320)
    colours = tool.palette(2)
    assert colours[0] != colours[1]
    scale = 320 / 40  # views enlarged to 320 px high, panels side by side under a 24 px caption
    panel_x = [tool.GAP, tool.GAP + int(50 * scale) + tool.GAP]
    for x0, boxes in zip(panel_x, (boxes1, boxes2)):
        for k, (bx0, by0, bx1, by1) in enumerate(boxes):
            # top-left corner and a point of the bottom edge of the solid box of region k
            assert tuple(canvas[24 + int(by0 * scale), x0 + int(bx0 * scale)]) == colours[k]
            assert tuple(canvas[24 + int(by1 * scale) - 1, x0 + int((bx0 + bx1) / 2 * scale)]) == colours[k]
        assert tuple(canvas[24 + 2 * int(scale), x0 + 2]) in ((100,) * 3, (150,) * 3)  # the view itself
    # the crops underneath: one row per view, each framed in its region's colour
    cell = 32 + 6
    for row, shade in enumerate((100, 150)):
        y = 24 + int(40 * scale) + tool.GAP + row * (cell + tool.GAP)
        for k in range(2):
            x = tool.GAP + 60 + k * (cell + tool.GAP)
            assert tuple(canvas[y, x]) == colours[k]
            assert (canvas[y + 3: y + 3 + 32, x + 3: x + 3 + 32] == shade).all()


def test_visualize_views_end_to_end(tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"),
               SYNTHETIC_SHAPES_NUM_IMAGES="val=3,train=4")
    out = tmp_path / "views"
    cmd = [sys.executable, "tools/visualize_views.py", "--dataset", "synthetic_shapes_val", "--num-samples", "2",
           "--output", str(out), "dataloader.train.mapper.tau=0.7"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pngs = sorted(out.glob("views_*.png"))
    assert len(pngs) == 2
    import cv2

    picture = cv2.imread(str(pngs[0]))
    assert picture.shape[0] > 320 and np.unique(picture.reshape(-1, 3), axis=0).shape[0] > 10
    bad = subprocess.run(cmd[:-1] + ["dataloader.train.mapper.no_such_key=1"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "no_such_key" in bad.stdout + bad.stderr


def test_user_mistakes_get_one_line_errors(tmp_path, tiny_synthetic_shapes, capsys):
    import pytest

    tool = _tool()
    out = ["--output", str(tmp_path / "views")]
    for argv, message in [(["--num-samples", "0"], "--num-samples must be at least 1"),
                          (["--config-file", "configs/demo/detr_demo.py"], "is not a Siamese DETR pretraining config"),
                          (["--config-file", "no/such.py"], "does not exist")]:
        with pytest.raises(SystemExit) as e:
            tool.main(argv + out)
        assert e.value.code == 2 and message in capsys.readouterr().err
    cases = [(["--dataset", "synthetic_shapes_nope"], "'synthetic_shapes_nope' is not registered"),
             (["dataloader.train.mapper.tau=2.0"], "must lie in [0, 1], got 2.0"),
             (["--config-file", str(ROOT / "configs/demo/siamese_detr_pretrain_demo.py")],
              "does not exist; create it with\n    python tools/generate_proposals.py --dataset "
              "synthetic_shapes_train")]
    for argv, message in cases:
        assert tool.main(out + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "views").exists()
