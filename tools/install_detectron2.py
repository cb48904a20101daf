#!/usr/bin/env python
"""Install a working detectron2 into the current Python environment.

Detectron2 is not published on PyPI. This script:

1. does nothing if a working detectron2 is already importable (for example an
   official build from source, with its C++/CUDA ops): it is left untouched;
2. otherwise downloads FAIR's v0.6 release as republished on PyPI
   (``pb1-detectron2==0.6``, checked against a pinned sha256), applies the small
   compatibility fixes below to the unpacked source tree, builds a pure-Python
   wheel (the sdist has no C++ sources, so ``detectron2._C`` is not built) and
   installs it with its dependencies.

Fixes applied to the v0.6 tree (each one is a text substitution, literal or, for the
numpy aliases, a regular expression, that is a no-op when already applied, so the script
is idempotent):

- ``setup.py``: build no extension when ``detectron2/layers/csrc`` is absent, and
  unpin ``black==21.4b2`` (it cannot be imported with click >= 8.1);
- ``from detectron2 import _C`` at module level (deform_conv, roi_align_rotated,
  rotated_boxes, fast_eval_api): replaced by a loader that returns the real
  extension when present, otherwise an object whose attributes raise a
  ``RuntimeError`` saying that detectron2 was built without its C++ ops and how
  to get them; ``nms_rotated`` (``layers/nms.py``), which calls ``torch.ops.detectron2``
  directly, raises the same error when that op is not registered;
- ``Image.LINEAR`` (removed in Pillow 10) -> ``Image.BILINEAR``;
- ``np.int`` / ``np.float`` / ``np.bool`` / ``np.str`` (removed in numpy 1.24) ->
  the builtins they aliased;
- ``pkg_resources`` (not shipped by recent setuptools) in ``model_zoo`` ->
  a path relative to the package;
- ``MapDataset`` draws a replacement for a sample its mapper rejected with
  ``random.sample(set, k=1)``, a ``TypeError`` since Python 3.11 -> sample from a sorted list.

A detectron2 built by this script carries ``detectron2/_missing_ops.py`` with a
``PATCH_LEVEL``; when this script gains a fix, PATCH_LEVEL grows and such a build is rebuilt.
A working detectron2 without that file (an official build) is never touched, unless ``--force`` is given.

``--constraint FILE`` (``make setup`` gives ``constraints.txt``) installs the dependencies at the versions
pinned there, and brings those of an earlier build of this script to them when it leaves that build untouched.

Usage: ``python tools/install_detectron2.py [--force] [--build-dir DIR] [--check] [--constraint FILE]``.
"""
import argparse
import hashlib
import importlib.metadata
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# Bump when PATCHES change, so that builds made by an older version of this script are redone.
PATCH_LEVEL = 3

# Modules a training run imports; all of them must import for detectron2 to count as working.
PROBE_MODULES = (
    "detectron2.config",
    "detectron2.data",
    "detectron2.engine",
    "detectron2.evaluation",
    "detectron2.layers",
    "detectron2.modeling",
    "detectron2.checkpoint",
)

MISSING_OPS_MODULE = f'''\
"""Stand-in for ``detectron2._C`` when detectron2 was built without its C++ ops.

Written by tools/install_detectron2.py of the Siamese DETR project.
"""

PATCH_LEVEL = {PATCH_LEVEL}


class _MissingCompiledOps:
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"detectron2._C.{{name}} is a compiled op, but this detectron2 was built without its "
            "C++/CUDA ops (the PyPI release 'pb1-detectron2' ships no C++ sources). To use it, "
            "install detectron2 from source: "
            "`pip install 'git+https://github.com/facebookresearch/detectron2.git'` "
            "(see https://detectron2.readthedocs.io/en/latest/tutorials/install.html)."
        )


def load_compiled_ops():
    """Return ``detectron2._C`` if it was built, else an object whose ops raise a clear error."""
    try:
        from detectron2 import _C
    except ImportError:
        return _MissingCompiledOps()
    return _C
'''

LOAD_OPS = "from detectron2._missing_ops import load_compiled_ops\n\n_C = load_compiled_ops()\n"

NMS_ROTATED_CALL = "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)\n"
NMS_ROTATED_CHECKED = (
    '    if not hasattr(torch.ops.detectron2, "nms_rotated"):\n'
    "        from detectron2._missing_ops import load_compiled_ops\n"
    "\n"
    "        ops = load_compiled_ops()  # importing a built detectron2._C registers the op\n"
    '        if not hasattr(torch.ops.detectron2, "nms_rotated"):\n'
    '            getattr(ops, "nms_rotated")  # no C++ ops: raises the error that says how to get them\n'
    + NMS_ROTATED_CALL
)

NUMPY_ALIASES = {"int": "int", "float": "float", "bool": "bool", "str": "str"}


def _sub_literal(old: str, new: str) -> Callable[[str], str]:
    return lambda text: text.replace(old, new)


def _sub_once(old: str, new: str) -> Callable[[str], str]:
    """Like :func:`_sub_literal` for a ``new`` that contains ``old``: a text that already has ``new`` is kept."""
    return lambda text: text if new in text else text.replace(old, new)


def _sub_numpy_aliases(text: str) -> str:
    # np.int / np.float / np.bool / np.str but not np.int64, np.float32, np.bool_, np.string_ ...
    return re.sub(r"\bnp\.(int|float|bool|str)\b(?![\w])", lambda m: NUMPY_ALIASES[m.group(1)], text)


def _sub_model_zoo(text: str) -> str:
    """``model_zoo.py`` without ``pkg_resources``: the config path is taken relative to the module's folder."""
    text = text.replace("import pkg_resources\n", "")
    return text.replace(
        'pkg_resources.resource_filename(\n        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )',
        'os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)',
    )


PATCHES: Dict[str, List[Callable[[str], str]]] = {
    "setup.py": [
        _sub_literal(
            "    ext_modules=get_extensions(),",
            "    ext_modules=get_extensions()\n"
            '    if path.isdir(path.join(path.dirname(path.abspath(__file__)), "detectron2", "layers", "csrc"))\n'
            "    else [],",
        ),
        _sub_literal('"black==21.4b2",', '"black",'),
    ],
    "detectron2/layers/deform_conv.py": [_sub_literal("from detectron2 import _C\n", LOAD_OPS)],
    "detectron2/layers/roi_align_rotated.py": [_sub_literal("from detectron2 import _C\n", LOAD_OPS)],
    "detectron2/layers/rotated_boxes.py": [_sub_literal("from detectron2 import _C\n", LOAD_OPS)],
    "detectron2/evaluation/fast_eval_api.py": [_sub_literal("from detectron2 import _C\n", LOAD_OPS)],
    "detectron2/layers/nms.py": [_sub_once(NMS_ROTATED_CALL, NMS_ROTATED_CHECKED)],
    "detectron2/data/transforms/transform.py": [_sub_literal("Image.LINEAR", "Image.BILINEAR")],
    "detectron2/model_zoo/model_zoo.py": [_sub_model_zoo],
    "detectron2/data/common.py": [
        _sub_literal(
            "self._rng.sample(self._fallback_candidates, k=1)[0]",
            "self._rng.sample(sorted(self._fallback_candidates), k=1)[0]",
        )
    ],
}
# Every python file of the package gets the numpy-alias fix.
GLOBAL_PATCHES: List[Callable[[str], str]] = [_sub_numpy_aliases]


def patch_source_tree(root: Path) -> List[str]:
    """Apply the compatibility fixes to an unpacked detectron2 v0.6 tree.

    Returns the list of files (relative to ``root``) that changed; an already patched
    tree returns an empty list.
    """
    root = Path(root)
    changed = []
    missing_ops = root / "detectron2" / "_missing_ops.py"
    if (root / "detectron2").is_dir() and (
        not missing_ops.exists() or missing_ops.read_text() != MISSING_OPS_MODULE
    ):
        missing_ops.write_text(MISSING_OPS_MODULE)
        changed.append(str(missing_ops.relative_to(root)))
    files = sorted(set(PATCHES) | {str(p.relative_to(root)) for p in root.glob("detectron2/**/*.py")})
    for rel in files:
        path = root / rel
        if not path.is_file():
            continue
        text = path.read_text()
        new = text
        for patch in PATCHES.get(rel, []) + (GLOBAL_PATCHES if rel.startswith("detectron2/") else []):
            new = patch(new)
        if new != text:
            path.write_text(new)
            changed.append(rel)
    return changed


def working_detectron2(python: str = sys.executable, env: Optional[Dict[str, str]] = None) -> Tuple[bool, str]:
    """Whether ``python`` can import detectron2 and the modules a training run needs.

    Runs in a subprocess so that a half-installed detectron2 cannot poison this process.
    Returns (ok, location-or-error).
    """
    code = (
        "import importlib, importlib.util, detectron2\n"
        f"for m in {PROBE_MODULES!r}: importlib.import_module(m)\n"
        "ours = importlib.util.find_spec('detectron2._missing_ops')\n"
        "level = importlib.import_module('detectron2._missing_ops').PATCH_LEVEL if ours else None\n"
        "print(detectron2.__file__)\n"
        "print(level)\n"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode == 0:
        location, level = proc.stdout.strip().splitlines()[-2:]
        if level != "None" and int(level) < PATCH_LEVEL:
            return False, f"built by an older version of this script (patch level {level} < {PATCH_LEVEL})"
        return True, location
    lines = proc.stderr.strip().splitlines()
    return False, lines[-1] if lines else f"exit code {proc.returncode}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pip(*args: str) -> None:
    """Run ``python -m pip ARGS`` with this interpreter, printing the command first; ``CalledProcessError`` when it
    fails."""
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def download_sdist(dest: Path) -> Path:
    """Download the pinned sdist into ``dest`` (no build; torch must already be installed)."""
    existing = sorted(dest.glob(f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"))
    if not existing:
        _pip("download", "--quiet", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
             "-d", str(dest), f"{SDIST_NAME}=={SDIST_VERSION}")
        existing = sorted(dest.glob(f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"))
    if not existing:
        raise SystemExit(f"pip did not produce {SDIST_NAME}-{SDIST_VERSION}.tar.gz in {dest}")
    sdist = existing[0]
    digest = sha256_of(sdist)
    if digest != SDIST_SHA256:
        raise SystemExit(
            f"{sdist}: sha256 {digest} does not match the pinned {SDIST_SHA256}; "
            "delete the file and run again, or check your package index."
        )
    return sdist


def unpack(sdist: Path, dest: Path) -> Path:
    """Extract ``sdist`` into ``dest`` with tarfile's "data" filter, or, on a Python without extraction filters
    (those before 3.9.17, 3.10.12 and 3.11.4), after checking that it holds only files and folders inside
    ``dest``; returns the source root (the folder with ``setup.py``)."""
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:
            inside = Path(dest).resolve()
            for member in tar.getmembers():
                target = (inside / member.name).resolve()
                if not (member.isfile() or member.isdir()) or not target.is_relative_to(inside):
                    raise SystemExit(f"{sdist}: refusing to unpack {member.name!r} (not a plain file or folder "
                                     f"inside {dest})")
            tar.extractall(dest)
    roots = [p for p in dest.iterdir() if p.is_dir() and (p / "setup.py").exists()]
    if len(roots) != 1:
        raise SystemExit(f"unexpected layout of {sdist}: {[p.name for p in dest.iterdir()]}")
    return roots[0]


def _constrained(constraint: Optional[Path]) -> List[str]:
    """pip's arguments for the constraints file ``constraint`` (none when it is None)."""
    return ["-c", str(constraint)] if constraint is not None else []


def build_and_install(build_dir: Path, constraint: Optional[Path] = None) -> None:
    """Download the pinned sdist into ``build_dir`` (:func:`download_sdist`), patch an unpacked copy
    (:func:`patch_source_tree`), build a wheel of it and install that, then its dependencies, at the versions
    pinned in ``constraint`` when one is given (``make setup`` gives ``constraints.txt``). ``SystemExit`` when
    torch is not installed (detectron2's ``setup.py`` imports it)."""
    try:
        import torch  # noqa: F401  (setup.py of detectron2 imports torch)
    except ImportError:
        raise SystemExit("Install torch first: detectron2's setup.py imports it.")
    build_dir.mkdir(parents=True, exist_ok=True)
    sdist = download_sdist(build_dir)
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        src = unpack(sdist, Path(tmp))
        changed = patch_source_tree(src)
        print(f"patched {len(changed)} files of {src.name}: {', '.join(changed)}", flush=True)
        wheel_dir = Path(tmp) / "wheel"
        _pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(src))
        wheels = sorted(wheel_dir.glob("*.whl"))
        _pip("install", "--quiet", "--force-reinstall", "--no-deps", str(wheels[0]))
        # Dependencies from the wheel's metadata, without touching the installed torch.
        _pip("install", "--quiet", *_constrained(constraint), str(wheels[0]))


def sync_dependencies(constraint: Path) -> bool:
    """Bring the dependencies of a detectron2 that this script built (the ``pb1-detectron2`` distribution) to
    the versions pinned in ``constraint``: ``make setup`` on an existing venv after the pins moved. Returns
    False, doing nothing, when no such build is installed (an official detectron2 is the user's to manage)."""
    try:
        requirements = importlib.metadata.distribution(SDIST_NAME).requires or []
    except importlib.metadata.PackageNotFoundError:
        return False
    # the plain distribution's requirements: those of its extras ("all", "dev") were never installed
    requirements = [text for text in requirements if not re.search(r";.*\bextra\s*==", text)]
    if requirements:
        _pip("install", "--quiet", *_constrained(constraint), *requirements)
    return True


def main(argv=None) -> int:
    """The command line. ``--check``: report whether a working detectron2 is importable, returns 0 if so, else 1.
    Otherwise build and install one (:func:`build_and_install`) unless one works already and ``--force`` is not
    given; returns 0, or raises ``SystemExit`` when detectron2 still does not work after the build."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true",
                        help="rebuild even if a working detectron2 is importable (never do this over an "
                        "official build you want to keep)")
    parser.add_argument("--build-dir", type=Path, default=Path(".cache/detectron2-build"),
                        help="where the sdist is downloaded and built (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="only report whether a working detectron2 is importable (exit 0 if so)")
    parser.add_argument("--constraint", type=Path, default=None, metavar="FILE",
                        help="install detectron2's dependencies at the versions pinned in FILE (pip -c; make "
                        "setup gives constraints.txt); with a working build of this script, bring them to it")
    args = parser.parse_args(argv)
    if args.constraint is not None and not args.constraint.is_file():
        raise SystemExit(f"--constraint {args.constraint}: no such file (make setup uses constraints.txt at the "
                         "repository's root; make setup CONSTRAINTS= installs without pins)")

    ok, where = working_detectron2()
    if args.check:
        print(f"detectron2: {'working at ' + where if ok else 'not working: ' + where}")
        return 0 if ok else 1
    if ok and not args.force:
        print(f"detectron2 already works ({where}); leaving it untouched.")
        if args.constraint is not None and sync_dependencies(args.constraint):
            print(f"its dependencies are at the versions pinned in {args.constraint}")
        return 0
    print(f"detectron2 not importable ({where}); building {SDIST_NAME}=={SDIST_VERSION} without C++ ops.")
    build_and_install(args.build_dir, args.constraint)
    ok, where = working_detectron2()
    if not ok:
        raise SystemExit(f"detectron2 still does not import after the build: {where}")
    print(f"detectron2 installed at {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
