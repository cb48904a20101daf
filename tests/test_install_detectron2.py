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
    """Every Python file of the patched tree compiles (``compile`` raises SyntaxError otherwise), the patched
    ones among them."""
    patched = inst.patch_source_tree(fake_v06_tree)
    compiled = []
    for path in fake_v06_tree.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")
        compiled.append(path.relative_to(fake_v06_tree).as_posix())
    patched_python = {str(p) for p in patched if str(p).endswith(".py")}
    assert patched_python and patched_python <= set(compiled)


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


def _probed_site(tmp_path, patch_level: int, detectron2_init: str = ""):
    """A site folder with empty stand-ins of the probed modules and a detectron2 built at ``patch_level``."""
    site = tmp_path / "site"
    for module in inst.PROBE_MODULES:
        _write(site, module.replace(".", "/") + "/__init__.py", "")
    _write(site, "detectron2/__init__.py", detectron2_init)
    _write(site, "detectron2/_missing_ops.py", f"PATCH_LEVEL = {patch_level}\n")
    return site


def test_a_build_from_an_older_version_of_the_script_is_reported_for_rebuild(tmp_path):
    site = _probed_site(tmp_path, inst.PATCH_LEVEL - 1)
    ok, why = inst.working_detectron2(env=dict(os.environ, PYTHONPATH=str(site)))
    assert not ok and f"patch level {inst.PATCH_LEVEL - 1} < {inst.PATCH_LEVEL}" in why
    _write(site, "detectron2/_missing_ops.py", f"PATCH_LEVEL = {inst.PATCH_LEVEL}\n")
    ok, where = inst.working_detectron2(env=dict(os.environ, PYTHONPATH=str(site)))
    assert ok and where == str(site / "detectron2" / "__init__.py")


# ------------------------------------------------------------------ each fix, line by line and by behaviour
def _exec(path: Path, **namespace) -> dict:
    """Run a patched file with stand-ins for what it calls; returns its namespace."""
    namespace.setdefault("__file__", str(path))
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def test_each_literal_fix_writes_the_line_it_documents(fake_v06_tree):
    """np.float / np.bool / np.str -> float / bool / str (not all to one builtin), an alias on another name
    (``onp.int``) untouched, Image.LINEAR -> Image.BILINEAR, MapDataset samples from a *sorted* list."""
    root = fake_v06_tree
    _write(root, "detectron2/data/catalog.py",
           "import numpy as np\na = np.float(1)\nb = np.bool(0)\nc = np.str(2)\nd = onp.int(3)\n")
    _write(root, "detectron2/data/common.py",
           "class MapDataset:\n    def pick(self):\n"
           "        return self._rng.sample(self._fallback_candidates, k=1)[0]\n")
    changed = inst.patch_source_tree(root)
    assert {"detectron2/data/catalog.py", "detectron2/data/common.py"} <= set(changed)
    assert (root / "detectron2/data/catalog.py").read_text() == (
        "import numpy as np\na = float(1)\nb = bool(0)\nc = str(2)\nd = onp.int(3)\n")
    assert "def f(interp=Image.BILINEAR):" in (root / "detectron2/data/transforms/transform.py").read_text()
    assert (root / "detectron2/data/common.py").read_text().splitlines()[-1] == (
        "        return self._rng.sample(sorted(self._fallback_candidates), k=1)[0]")


def test_setup_py_builds_extensions_only_when_the_cpp_sources_are_there(fake_v06_tree):
    """The patched ``ext_modules``: [] without ``detectron2/layers/csrc`` (the PyPI sdist), the extensions with it."""
    inst.patch_source_tree(fake_v06_tree)
    setup_py = fake_v06_tree / "setup.py"

    def run():
        seen = {}
        _exec(setup_py, setup=lambda **kw: seen.update(kw), get_extensions=lambda: ["detectron2._C"])
        return seen

    assert run() == {"install_requires": ["black"], "ext_modules": []}
    (fake_v06_tree / "detectron2" / "layers" / "csrc").mkdir()
    assert run()["ext_modules"] == ["detectron2._C"]


def test_model_zoo_finds_configs_next_to_the_module(fake_v06_tree):
    inst.patch_source_tree(fake_v06_tree)
    zoo = fake_v06_tree / "detectron2/model_zoo/model_zoo.py"
    found = _exec(zoo)["get_config_file"]("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    assert found == str(zoo.parent / "configs" / "COCO-Detection" / "retinanet_R_50_FPN_1x.yaml")


def test_an_outdated_missing_ops_module_is_rewritten(fake_v06_tree):
    """A tree patched by an older version of the script (older PATCH_LEVEL in _missing_ops.py) gets the new one."""
    _write(fake_v06_tree, "detectron2/_missing_ops.py", "PATCH_LEVEL = 1\n")
    assert "detectron2/_missing_ops.py" in inst.patch_source_tree(fake_v06_tree)
    assert (fake_v06_tree / "detectron2/_missing_ops.py").read_text() == inst.MISSING_OPS_MODULE


@pytest.mark.parametrize("built", [False, True], ids=["without_cpp_ops", "with_cpp_ops"])
def test_patched_modules_load_the_real_ops_or_raise_the_documented_error(fake_v06_tree, built):
    """In a subprocess importing the patched fake tree: a built ``detectron2._C`` is used as is; without it an
    op raises the RuntimeError naming it and how to get it, dunder lookups stay AttributeErrors (``hasattr``
    works), and ``nms_rotated`` raises the same error rather than torch's unknown-op error."""
    root = fake_v06_tree
    _write(root, "detectron2/__init__.py", "")
    if built:
        _write(root, "detectron2/_C.py", "def op(x):\n    return x + 1\n")
    inst.patch_source_tree(root)
    code = (
        "import torch\n"
        "from detectron2.layers import deform_conv, nms\n"
        "try:\n    print('op', deform_conv.op(1))\nexcept RuntimeError as e:\n    print('op error', e)\n"
        "print('dunder', hasattr(deform_conv._C, '__wrapped__'))\n"
        f"if {not built} and not hasattr(torch.ops.detectron2, 'nms_rotated'):\n"
        "    try:\n        nms.nms_rotated(torch.zeros(1, 5), torch.ones(1), 0.5)\n"
        "        print('nms returned')\n"
        "    except RuntimeError as e:\n        print('nms error', e)\n"
        "else:\n    print('nms not tried')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(root)), cwd=root)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    if built:
        assert out[0] == "op 2"
    else:
        assert out[0].startswith("op error detectron2._C.op is a compiled op, but this detectron2 was built "
                                 "without its C++/CUDA ops")
        assert "install detectron2 from source" in out[0]
    assert out[1] == "dunder False"
    if built or out[2] == "nms not tried":  # built, or torch has a detectron2::nms_rotated registered here
        assert out[2:] == ["nms not tried"]
    else:  # the call was made: it must raise the documented error, not return nor raise torch's own
        assert len(out) == 3 and out[2].startswith("nms error")
        assert "detectron2._C.nms_rotated is a compiled op" in out[2]


def test_a_build_from_a_newer_script_or_with_chatter_on_stdout_counts_as_working(tmp_path):
    """PATCH_LEVEL above ours is not "older" (no downgrade), and a detectron2 that prints on import still
    reports its location (the probe's last two lines)."""
    site = _probed_site(tmp_path, inst.PATCH_LEVEL + 1, "print('detectron2 says hello')\n")
    ok, where = inst.working_detectron2(env=dict(os.environ, PYTHONPATH=str(site)))
    assert ok and where == str(site / "detectron2" / "__init__.py")


# ------------------------------------------------------------------ download, sha256, layout, main()
def test_sdist_sha256_is_checked_and_a_mismatch_refused(tmp_path, monkeypatch):
    """sha256_of equals hashlib over the whole file (3 MiB + 5 bytes: several 1 MiB chunks and a partial one);
    a present sdist is not downloaded again; the pinned digest is accepted, any other refused naming both."""
    sdist = tmp_path / f"{inst.SDIST_NAME}-{inst.SDIST_VERSION}.tar.gz"
    payload = bytes(range(256)) * (3 * 4096) + b"tail!"
    sdist.write_bytes(payload)
    assert inst.sha256_of(sdist) == hashlib.sha256(payload).hexdigest()
    monkeypatch.setattr(inst, "_pip", lambda *a: pytest.fail(f"pip called although the sdist is there: {a}"))
    monkeypatch.setattr(inst, "SDIST_SHA256", hashlib.sha256(payload).hexdigest())
    assert inst.download_sdist(tmp_path) == sdist
    sdist.write_bytes(payload[:-1] + b"?")
    with pytest.raises(SystemExit) as e:
        inst.download_sdist(tmp_path)
    wrong = hashlib.sha256(payload[:-1] + b"?").hexdigest()
    assert f"sha256 {wrong} does not match the pinned {hashlib.sha256(payload).hexdigest()}" in str(e.value)


def test_a_missing_sdist_is_downloaded_with_pip(tmp_path, monkeypatch):
    calls = []

    def fake_pip(*args):
        calls.append(args)
        (tmp_path / f"{inst.SDIST_NAME}-{inst.SDIST_VERSION}.tar.gz").write_bytes(b"sdist")

    monkeypatch.setattr(inst, "_pip", fake_pip)
    monkeypatch.setattr(inst, "SDIST_SHA256", hashlib.sha256(b"sdist").hexdigest())
    assert inst.download_sdist(tmp_path).read_bytes() == b"sdist"
    assert len(calls) == 1 and calls[0][0] == "download" and calls[0][-1] == "pb1-detectron2==0.6"
    assert calls[0][calls[0].index("-d") + 1] == str(tmp_path)


def test_unpack_refuses_an_sdist_with_two_source_roots(tmp_path):
    two = _sdist(tmp_path / "two.tar.gz", [("a-0.6/setup.py", ""), ("b-0.6/setup.py", "")])
    with pytest.raises(SystemExit, match="unexpected layout"):
        inst.unpack(two, tmp_path / "out")


def test_build_installs_the_patched_tree_then_its_dependencies(fake_v06_tree, tmp_path, monkeypatch):
    """pip (stubbed) builds a wheel from the *patched* tree, force-reinstalls it without dependencies (torch
    untouched), then installs it again for the dependencies of its metadata."""
    sdist = tmp_path / "dl" / "pb1-detectron2-0.6.tar.gz"
    sdist.parent.mkdir()
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(fake_v06_tree, arcname="pb1-detectron2-0.6")
    monkeypatch.setattr(inst, "download_sdist", lambda dest: sdist)
    calls = []

    def fake_pip(*args):
        calls.append(args)
        if args[0] == "wheel":
            src = Path(args[-1])
            assert "Image.BILINEAR" in (src / "detectron2/data/transforms/transform.py").read_text()
            assert (src / "detectron2/_missing_ops.py").is_file()
            wheel_dir = Path(args[args.index("-w") + 1])
            wheel_dir.mkdir(parents=True)
            (wheel_dir / "detectron2-0.6-py3-none-any.whl").write_bytes(b"")

    monkeypatch.setattr(inst, "_pip", fake_pip)
    inst.build_and_install(tmp_path / "build")
    assert [c[0] for c in calls] == ["wheel", "install", "install"]
    assert "--no-build-isolation" in calls[0] and "--no-deps" in calls[0]
    assert {"--force-reinstall", "--no-deps"} <= set(calls[1]) and calls[1][-1].endswith(".whl")
    assert "--no-deps" not in calls[2] and calls[2][-1] == calls[1][-1] and "-c" not in calls[2]
    # with the set-up's constraints file, the dependencies are installed at its pins
    calls.clear()
    inst.build_and_install(tmp_path / "build2", tmp_path / "pins.txt")
    assert calls[2][calls[2].index("-c") + 1] == str(tmp_path / "pins.txt") and calls[2][-1].endswith(".whl")


def test_an_earlier_build_gets_its_dependencies_at_the_pins_an_official_one_is_left_alone(
        tmp_path, monkeypatch, capsys):
    """`make setup` again after the pins moved: detectron2 works, so nothing is rebuilt, but the requirements
    of this script's build (read from its installed metadata) are installed with the constraints file; an
    official detectron2 (no pb1-detectron2 distribution) is not touched."""
    import importlib.metadata

    pins = tmp_path / "pins.txt"
    pins.write_text("numpy==1.0\n")
    calls = []
    monkeypatch.setattr(inst, "_pip", lambda *args: calls.append(args))
    monkeypatch.setattr(inst, "working_detectron2", lambda: (True, "/site/detectron2/__init__.py"))
    monkeypatch.setattr(inst, "build_and_install", lambda *a: pytest.fail("rebuilt a working detectron2"))

    class Build:
        requires = ["numpy", "fvcore<0.1.6,>=0.1.5", "dataclasses; python_version < \"3.7\"",
                    "panopticapi @ https://example.com/master.zip ; extra == \"all\"", "black",
                    "flake8==3.8.1; extra == \"dev\""]

    def distribution(name):
        if name != "pb1-detectron2":
            raise importlib.metadata.PackageNotFoundError(name)
        return Build

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    assert inst.main(["--constraint", str(pins)]) == 0
    assert calls == [("install", "--quiet", "-c", str(pins), "numpy", "fvcore<0.1.6,>=0.1.5",
                      'dataclasses; python_version < "3.7"', "black")]
    assert f"its dependencies are at the versions pinned in {pins}" in capsys.readouterr().out

    calls.clear()
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: distribution("detectron2"))
    assert inst.main(["--constraint", str(pins)]) == 0 and calls == []
    assert "pinned" not in capsys.readouterr().out
    assert inst.main([]) == 0 and calls == []  # no constraints: nothing to bring anything to


def test_a_constraints_file_that_is_not_there_is_refused_before_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(inst, "working_detectron2", lambda: pytest.fail("looked for detectron2 first"))
    with pytest.raises(SystemExit, match=r"--constraint .*gone.txt: no such file \(make setup uses "
                       r"constraints.txt at the repository's root; make setup CONSTRAINTS= installs without pins\)"):
        inst.main(["--constraint", str(tmp_path / "gone.txt")])


@pytest.mark.parametrize("argv, works_before, builds", [
    ([], True, False), (["--force"], True, True), ([], False, True)])
def test_main_builds_only_when_needed_or_forced(tmp_path, monkeypatch, capsys, argv, works_before, builds):
    """A working detectron2 is left alone unless --force; the default build folder is .cache/detectron2-build
    (where the real-sdist test looks); a build after which detectron2 still fails stops with its error."""
    state = {"ok": works_before, "built": []}
    monkeypatch.setattr(inst, "working_detectron2", lambda: (state["ok"], "/site/detectron2/__init__.py"))

    def build(build_dir, constraint=None):
        assert constraint is None
        state["built"].append(build_dir)
        state["ok"] = True

    monkeypatch.setattr(inst, "build_and_install", build)
    monkeypatch.setattr(inst, "sync_dependencies", lambda constraint: pytest.fail("no constraints were given"))
    assert inst.main(argv) == 0
    assert state["built"] == ([Path(".cache/detectron2-build")] if builds else [])
    monkeypatch.setattr(inst, "working_detectron2", lambda: (False, "ImportError: no module named fvcore"))
    monkeypatch.setattr(inst, "build_and_install", lambda build_dir, constraint=None: None)
    with pytest.raises(SystemExit, match="still does not import after the build: ImportError: no module named"):
        inst.main(["--build-dir", str(tmp_path)])
