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


def test_region_zero_on_top_thicker_and_query_boxes_end_at_their_last_pixel():
    """``draw_view`` at scale 1 on a grey 80 x 80 view: region 0 ([10, 20, 40, 50]) and region 1
    ([20, 20, 40, 60]) share their right edge, where region 0 (drawn last) shows; region 0's outline is wider
    than region 1's (away from the tags, which sit at the top-left corners); the thin query boxes (elsewhere)
    have their right / bottom lines on the last pixel inside the box, x1 - 1 / y1 - 1."""
    tool = _tool()
    colours = [(0, 0, 255), (255, 0, 0)]
    image = np.full((80, 80, 3), 128, dtype=np.uint8)
    out = tool.draw_view(image, [[10, 20, 40, 50], [20, 20, 40, 60]], [[60, 5, 75, 15], [5, 65, 15, 75]], colours)
    assert (image == 128).all()  # drawn on a copy
    assert tuple(out[40, 39]) == colours[0] and tuple(out[55, 39]) == colours[1]  # region 1 alone below y=50

    def band(row, x_from, x_to, colour):
        return sum(tuple(out[row, x]) == colour for x in range(x_from, x_to))

    assert band(45, 0, 16, colours[0]) > band(55, 16, 30, colours[1]) >= 1
    # query 0 (region 0's colour, red channel 2) and query 1 (blue channel 0), anti-aliased 1-pixel lines
    assert int(np.argmax(out[12:18, 68, 2])) + 12 == 14 and int(np.argmax(out[10, 71:78, 2])) + 71 == 74
    assert int(np.argmax(out[71:78, 10, 0])) + 71 == 74 and int(np.argmax(out[70, 11:18, 0])) + 11 == 14


def test_palette_hues_are_evenly_spaced_around_the_circle():
    """OpenCV hues span 0..179 for 360 degrees: 3 colours are red, green and blue (BGR), saturation 230/255
    (the smallest channel 255 - 230 = 25), value 255."""
    assert _tool().palette(3) == [(25, 25, 255), (25, 255, 25), (255, 25, 25)]


def test_caption_counts_and_rgb_views(monkeypatch):
    """The caption gives the views' IoU (4000 / 12000), region 0 the overlap, 1 region from proposals and
    n - 1 - 1 = 1 jittered copy; an RGB mapper's image (R=200) is drawn as BGR (0, 0, 200)."""
    tool = _tool()
    texts = []
    put_text = tool.cv2.putText

    def record(img, text, *args, **kwargs):
        texts.append(text)
        return put_text(img, text, *args, **kwargs)

    monkeypatch.setattr(tool.cv2, "putText", record)
    boxes = [[2, 3, 30, 35], [10, 5, 20, 15], [12, 6, 22, 16]]
    views = [_view(boxes, [0, 0, 100, 80], 0), _view(boxes, [50, 0, 150, 80], 0)]
    for view in views:
        view["image"][0] = 200  # channel 0 is R for an RGB mapper
    sample = {"image_id": "img/7", "num_proposals": 1, "flip": True, "views": views}
    canvas = tool.render_sample(sample, image_format="RGB", crop_display=32, min_view_height=40)
    caption = ("image img/7  IoU(view1, view2)=0.333  regions: 0 = overlap, 1 from proposals, 1 jittered copies  "
               "flip=True")
    assert [t for t in texts if t.startswith("image img/7")] == [caption]
    assert tuple(canvas[24 + 38, tool.GAP + 45]) == (0, 0, 200)  # inside view 1, off every box


def test_no_sample_drawn_is_an_error_that_says_why(tmp_path, capsys, monkeypatch):
    """Every sample skipped (here: the proposal method finds no box in any image, so no view overlap holds a
    proposal): exit status 1 and one ``error:`` line with the counts, not only an info line saying 0 samples."""
    import cv2

    from siamese_detr.data.proposals.sources import OnlineProposals

    monkeypatch.setattr(OnlineProposals, "__call__",
                        lambda self, dataset_dict, image: (np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
    images = tmp_path / "plain"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"img{i}.png"), np.full((120, 160, 3), 128, np.uint8))
    out = tmp_path / "views"
    assert _tool().main(["--dataset", f"folder:{images}", "--num-samples", "2", "--output", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and "no sample was drawn" in errors[0]
    assert "each of the 3 image(s)" in errors[0] and "(0 unreadable, 3 with no proposal" in errors[0]
    assert list(out.glob("*.png")) == []
