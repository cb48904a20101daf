"""tools/install_detectron2.py: idempotent patches, official builds left untouched, clear missing-op errors."""
import hashlib
import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "install_detectron2.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("install_detectron2", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inst = _load_script()


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def fake_v06_tree(tmp_path):
    """The lines of detectron2 v0.6 that break on this stack, in the files where they live."""
    root = tmp_path / "src"
    _write(root, "setup.py", 'from os import path\nsetup(\n    install_requires=["black==21.4b2",],\n'
                             "    ext_modules=get_extensions(),\n)\n")
    for rel in ("detectron2/layers/deform_conv.py", "detectron2/layers/rotated_boxes.py",
                "detectron2/layers/roi_align_rotated.py", "detectron2/evaluation/fast_eval_api.py"):
        _write(root, rel, "import torch\nfrom detectron2 import _C\n\n\ndef op(x):\n    return _C.op(x)\n")
    _write(root, "detectron2/layers/nms.py",
           "import torch\n\n\ndef nms_rotated(boxes, scores, iou_threshold):\n"
           "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)\n")
    _write(root, "detectron2/data/transforms/transform.py",
           "from PIL import Image\n\n\ndef f(interp=Image.LINEAR):\n    return interp\n")
    _write(root, "detectron2/data/build.py",
           "import numpy as np\nh = np.zeros((3,), dtype=np.int)\nk = np.int64(2)\nb = np.bool_(1)\n"
           "s = np.str_('a')\nf = np.float32(1)\n")
    _write(root, "detectron2/model_zoo/model_zoo.py",
           "import os\nimport pkg_resources\n\n\ndef get_config_file(config_path):\n"
           "    cfg_file = pkg_resources.resource_filename(\n"
           '        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )\n    return cfg_file\n')
    return root


def test_patches_fix_every_known_break_and_are_idempotent(fake_v06_tree):
    root = fake_v06_tree
    changed = inst.patch_source_tree(root)
    assert set(changed) == {
        "setup.py", "detectron2/_missing_ops.py", "detectron2/layers/deform_conv.py",
        "detectron2/layers/rotated_boxes.py", "detectron2/layers/roi_align_rotated.py",
        "detectron2/evaluation/fast_eval_api.py", "detectron2/data/transforms/transform.py",
        "detectron2/data/build.py", "detectron2/model_zoo/model_zoo.py", "detectron2/layers/nms.py",
    }
    build = (root / "detectron2/data/build.py").read_text()
    assert "dtype=int)" in build and "np.int64(2)" in build and "np.bool_(1)" in build
    assert "np.str_('a')" in build and "np.float32(1)" in build
    assert "Image.LINEAR" not in (root / "detectron2/data/transforms/transform.py").read_text()
    assert "pkg_resources" not in (root / "detectron2/model_zoo/model_zoo.py").read_text()
    assert '"black",' in (root / "setup.py").read_text()
    assert "from detectron2 import _C\n" not in (root / "detectron2/layers/deform_conv.py").read_text()
    assert 'if not hasattr(torch.ops.detectron2, "nms_rotated")' in (root / "detectron2/layers/nms.py").read_text()

    before = _tree_digest(root)
    assert inst.patch_source_tree(root) == []
    assert _tree_digest(root) == before


def test_patched_files_still_compile(fake_v06_tree):
    inst.patch_source_tree(fake_v06_tree)
    for path in fake_v06_tree.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")


def _sdist(path: Path, members) -> Path:
    """A .tar.gz holding ``members``: (name, text) for files, (name, None) for a symlink to /etc/passwd."""
    import io

    with tarfile.open(path, "w:gz") as tar:
        for name, text in members:
            info = tarfile.TarInfo(name)
            if text is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(text.encode())
                tar.addfile(info, io.BytesIO(text.encode()))
    return path


@pytest.mark.parametrize("filters", [True, False], ids=["with_filters", "python_3_11_0_to_3"])
def test_unpack_extracts_the_source_tree_and_refuses_escapes(tmp_path, monkeypatch, filters):
    """With tarfile's extraction filters, or (Python 3.11.0 to 3.11.3, which has none) with its own check."""
    if not filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    good = _sdist(tmp_path / "good.tar.gz", [("pkg-0.6/setup.py", "x = 1\n"), ("pkg-0.6/a/b.py", "y = 2\n")])
    root = inst.unpack(good, tmp_path / "out")
    assert root == tmp_path / "out" / "pkg-0.6" and (root / "a" / "b.py").read_text() == "y = 2\n"
    for name, members in (("escape", [("pkg-0.6/setup.py", ""), ("../evil.py", "z = 3\n")]),
                          ("link", [("pkg-0.6/setup.py", ""), ("pkg-0.6/passwd", None)])):
        bad = _sdist(tmp_path / f"{name}.tar.gz", members)
        with pytest.raises((SystemExit, tarfile.FilterError) if filters else SystemExit):
            inst.unpack(bad, tmp_path / name)
        assert not (tmp_path / "evil.py").exists()


def test_patches_apply_to_the_real_v06_sdist(tmp_path):
    sdists = sorted((ROOT / ".cache" / "detectron2-build").glob("pb1-detectron2-0.6.tar.gz"))
    if not sdists:
        pytest.skip("the sdist is downloaded by `make setup` only when no detectron2 was importable")
    assert inst.sha256_of(sdists[0]) == inst.SDIST_SHA256
    with tarfile.open(sdists[0]) as tar:
        tar.extractall(tmp_path, filter="data")
    src = next(p for p in tmp_path.iterdir() if (p / "setup.py").exists())
    changed = inst.patch_source_tree(src)
    assert {"setup.py", "detectron2/data/build.py", "detectron2/layers/nms.py"} <= set(changed)
    for rel in changed:
        text = (src / rel).read_text()
        assert "Image.LINEAR" not in text
        compile(text, rel, "exec")
    assert inst.patch_source_tree(src) == []


def test_an_official_detectron2_is_left_untouched(tmp_path):
    """A working detectron2 (here a stand-in with a compiled-ops module) makes the script a no-op."""
    pkg = tmp_path / "site" / "detectron2"
    for module in inst.PROBE_MODULES:
        _write(tmp_path / "site", module.replace(".", "/") + "/__init__.py", "")
    _write(pkg.parent, "detectron2/__init__.py", '__version__ = "0.6+official"\n')
    _write(pkg.parent, "detectron2/_C.py", "def get_compiler_version():\n    return 'gcc'\n")
    before = _tree_digest(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    build_dir = tmp_path / "build"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--build-dir", str(build_dir)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "leaving it untouched" in proc.stdout
    assert str(pkg) in proc.stdout
    assert not build_dir.exists()
    assert _tree_digest(tmp_path / "site") == before


def test_check_mode_reports_a_broken_detectron2(tmp_path):
    _write(tmp_path, "detectron2/__init__.py", "raise ImportError('half-installed detectron2')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "half-installed detectron2" in proc.stdout


def test_compiled_only_op_raises_a_clear_error():
    from siamese_detr.utils import detectron2_has_compiled_ops

    if detectron2_has_compiled_ops():
        pytest.skip("this detectron2 has its C++ ops")
    import torch
    from detectron2.layers import batched_nms_rotated, nms_rotated
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[5.0, 5.0, 4.0, 4.0, 0.0]])
    with pytest.raises(RuntimeError, match="built without its C\\+\\+/CUDA ops"):
        pairwise_iou_rotated(boxes, boxes)
    with pytest.raises(RuntimeError, match="nms_rotated is a compiled op.*built without its C\\+\\+/CUDA ops"):
        nms_rotated(boxes, torch.ones(1), 0.5)
    with pytest.raises(RuntimeError, match="nms_rotated is a compiled op"):
        batched_nms_rotated(boxes, torch.ones(1), torch.zeros(1, dtype=torch.long), 0.5)


def test_a_build_from_an_older_version_of_the_script_is_reported_for_rebuild(tmp_path):
    site = tmp_path / "site"
    for module in inst.PROBE_MODULES:
        _write(site, module.replace(".", "/") + "/__init__.py", "")
    _write(site, "detectron2/__init__.py", "")
    _write(site, "detectron2/_missing_ops.py", f"PATCH_LEVEL = {inst.PATCH_LEVEL - 1}\n")
    ok, why = inst.working_detectron2(env=dict(os.environ, PYTHONPATH=str(site)))
    assert not ok and f"patch level {inst.PATCH_LEVEL - 1} < {inst.PATCH_LEVEL}" in why
    _write(site, "detectron2/_missing_ops.py", f"PATCH_LEVEL = {inst.PATCH_LEVEL}\n")
    ok, where = inst.working_detectron2(env=dict(os.environ, PYTHONPATH=str(site)))
    assert ok and where == str(site / "detectron2" / "__init__.py")
