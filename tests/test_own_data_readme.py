"""README "Train on your own data": its commands, run verbatim on a made-up 2-class COCO dataset.

Only the three variable lines at the top of the block (DATA, OUT, ITERS) are replaced (and ``.venv/bin/python``
by the interpreter running the tests); every command is the README's own text, run by bash.
"""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import torch

from hang_guard import HANG_GUARD_S
from test_own_data_specs import IMAGE_SIZE, write_tiny_coco

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- own-data-commands:"


def readme_commands() -> str:
    """The bash block that follows the marker comment in README.md."""
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "README.md lost the own-data command block"
    block = re.search(r"```bash\n(.*?)```", text[text.index(MARKER):], re.S)
    assert block, "no ```bash block after the own-data marker"
    return block.group(1)


def with_variables(script: str, **values) -> str:
    lines = script.splitlines()
    for name, value in values.items():
        index = [i for i, line in enumerate(lines) if line.startswith(f"{name}=")]
        assert len(index) == 1, f"the README block must set {name} once"
        lines[index[0]] = f"{name}={shlex.quote(str(value))}"
    return "\n".join(lines).replace(".venv/bin/python", shlex.quote(sys.executable)) + "\n"


def _metrics(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_readme_own_data_commands_end_to_end(tmp_path):
    data, out = tmp_path / "my_data", tmp_path / "out"
    written = write_tiny_coco(data)
    script = with_variables(readme_commands(), DATA=data, OUT=out, ITERS=2)
    for step in ("generate_proposals.py --image-dir", "siamese_detr_pretrain_demo.py", "--eval-only",
                 "visualize_predictions.py"):
        assert step in script
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "DETECTRON2_DATASETS": str(tmp_path / "datasets")}
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    # 1. proposals keyed by the images' paths relative to the folder (what folder:DIR uses as image_id)
    from siamese_detr.data.proposals import ProposalStore

    store = ProposalStore.open(out / "images.edgeboxes.proposals")
    assert sorted(store.image_ids) == sorted(im["file_name"] for im in written["train"] + written["val"])

    # 2. pretraining: 2 iterations, plain-text log
    pretrain = out / "pretrain"
    assert (pretrain / "model_final.pth").is_file()
    assert [r["iteration"] for r in _metrics(pretrain / "metrics.json") if "total_loss" in r][-1] == 1
    assert "\x1b" not in (pretrain / "log.txt").read_text()
    # its evaluation: the class-agnostic AR of the queries on the user's val.json, not on the built-in data
    assert "class_agnostic/AR@100" in _metrics(pretrain / "metrics.json")[-1]
    assert not (tmp_path / "datasets" / "synthetic_shapes").exists()

    # 3. finetuning from the pretraining checkpoint: 2 classes from the json (+ no-object), COCO AP at the end
    finetune = out / "finetune"
    state = torch.load(finetune / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    heads = [v for k, v in state.items() if re.fullmatch(r"class_embed(\.\d+)*\.weight", k)]
    assert heads and all(h.shape[0] == 2 + 1 for h in heads)
    log = (finetune / "log.txt").read_text()
    assert str(pretrain / "model_final.pth") in log and "\x1b" not in log
    records = _metrics(finetune / "metrics.json")
    assert [r["iteration"] for r in records if "total_loss" in r][-1] == 1
    assert "bbox/AP" in records[-1]

    # 4. --eval-only: COCO results json (original category ids, val image ids) and a metrics.json line
    results = json.loads((out / "eval" / "inference" / "coco_instances_results.json").read_text())
    assert results, "the untrained model still returns its top-k boxes"
    assert {r["image_id"] for r in results} <= {im["id"] for im in written["val"]}
    assert {r["category_id"] for r in results} <= {3, 7}
    last = _metrics(out / "eval" / "metrics.json")[-1]
    assert last["eval_only"] is True and last["iteration"] == 1 and "bbox/AP" in last

    # 5. one PNG per val image: ground truth and detections side by side, enlarged to >= 320 px high
    pngs = sorted((out / "pictures").glob("*.png"))
    assert len(pngs) == len(written["val"])
    picture = cv2.imread(str(pngs[0]))
    scale = 320 / IMAGE_SIZE[0]
    assert picture.shape[0] >= 320 and picture.shape[1] >= 2 * IMAGE_SIZE[1] * scale
