"""constraints.txt and tools/freeze_constraints.py: the versions `make setup` pins, how they are found (the
requirements `make setup` asks for, followed through the installed distributions' metadata), the check of an
environment against them, and that the environment these tests run in matches them when `make setup` made it
with them."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hang_guard import HANG_GUARD_S
from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]
freeze = load_script(ROOT / "tools" / "freeze_constraints.py", "freeze_constraints")


def _dist(site: Path, name: str, version: str, *requires: str) -> None:
    """A fake installed distribution: ``site/<name>-<version>.dist-info/METADATA`` with ``requires``."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


@pytest.fixture
def fake_site(tmp_path):
    """Installed: app -> Lib_A (-> lib-b -> lib-a, a cycle), opt[extra1] (-> plain, and extra-only only for
    extra1), a requirement for Python 2 only, ghost (not installed) and the project itself (never pinned);
    other-extra and unrelated are installed but reached by nothing."""
    site = tmp_path / "site"
    _dist(site, "app", "1.0", "Lib_A>=1", "py2only; python_version < '3'", "opt[extra1]", "ghost",
          "siamese-detr")
    _dist(site, "Lib_A", "2.0", "lib-b")
    _dist(site, "lib-b", "3.0", "lib.a")
    _dist(site, "opt", "4.0", "plain", "extra-only; extra == 'extra1'", "other-extra; extra == 'x2'")
    _dist(site, "plain", "5.0")
    _dist(site, "extra-only", "6.0")
    _dist(site, "other-extra", "7.0")
    _dist(site, "py2only", "8.0")
    _dist(site, "unrelated", "9.0")
    _dist(site, "siamese-detr", "0.1.0")
    return site


def test_closure_follows_requirements_markers_and_extras(fake_site):
    dists = freeze.installed([str(fake_site)])
    found, missing = freeze.closure(["app"], dists)
    assert {name: dist.version for name, dist in found.items()} == {
        "app": "1.0", "lib-a": "2.0", "lib-b": "3.0", "opt": "4.0", "plain": "5.0", "extra-only": "6.0"}
    assert missing == ["ghost"]


def test_an_extra_asked_after_the_plain_distribution_is_still_followed(fake_site):
    """``opt`` is reached first without extras, then as ``opt[extra1]`` through app."""
    dists = freeze.installed([str(fake_site)])
    found, _ = freeze.closure(["opt", "app"], dists)
    assert "extra-only" in found and "other-extra" not in found
    found, _ = freeze.closure(["opt"], dists)
    assert set(found) == {"opt", "plain"}


def test_problems_name_each_difference(fake_site, tmp_path):
    dists = freeze.installed([str(fake_site)])
    found, missing = freeze.closure(["app"], dists)
    pins_file = tmp_path / "pins.txt"
    pins_file.write_text("# a comment\napp==1.0\nlib_a==2.1\nlib-b==3.0  # trailing comment\nopt==4.0\n"
                         "extra-only==6.0\nstale==1\n")
    pins = freeze.read_constraints(pins_file)
    assert freeze.problems(pins, found, missing, pins_file) == [
        f"Lib_A is 2.0 here but pinned to 2.1 in {pins_file}",
        f"plain 5.0 is required here but not pinned in {pins_file}",
        "ghost is required but not installed",
        f"stale==1 in {pins_file} is required by nothing here",
    ]
    assert freeze.problems(pins, found, missing, pins_file, report_unused=False)[-1] == (
        "ghost is required but not installed")


def test_rendered_constraints_pin_exactly_what_was_found(fake_site, tmp_path):
    dists = freeze.installed([str(fake_site)])
    found, _ = freeze.closure(["app"], dists)
    text = freeze.render(found)
    path = tmp_path / "constraints.txt"
    path.write_text(text)
    assert freeze.read_constraints(path) == {"app": ("app", "1.0"), "lib-a": ("Lib_A", "2.0"),
                                             "lib-b": ("lib-b", "3.0"), "opt": ("opt", "4.0"),
                                             "plain": ("plain", "5.0"), "extra-only": ("extra-only", "6.0")}
    assert freeze.problems(freeze.read_constraints(path), found, [], path) == []
    pin_lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert pin_lines == ["app==1.0", "extra-only==6.0", "Lib_A==2.0", "lib-b==3.0", "opt==4.0", "plain==5.0"]


@pytest.mark.parametrize("text, message", [
    ("numpy==2.0\nscipy>=1\n", r"pins.txt:2: 'scipy>=1' is not a pin of the form name==version"),
    ("Foo_Bar==1\n\nfoo-bar==2\n", r"pins.txt:3: foo-bar is pinned twice"),
    ("torch==2.14.1 ; python_version > '3'\n", r"pins.txt:1: .* is not a pin"),
])
def test_a_malformed_constraints_file_is_refused_naming_the_line(tmp_path, text, message):
    path = tmp_path / "pins.txt"
    path.write_text(text)
    with pytest.raises(SystemExit, match=message):
        freeze.read_constraints(path)
    with pytest.raises(SystemExit, match=r"nothere.txt: not found \(write it with: python "
                       r"tools/freeze_constraints.py --output"):
        freeze.read_constraints(tmp_path / "nothere.txt")


def test_setup_requirements_are_setup_cfgs_and_the_makefiles_torch_pins():
    """Read independently here: the names of setup.cfg's install_requires and test extra, and the Makefile's
    TORCH_PINS line."""
    text = (ROOT / "setup.cfg").read_text()
    block = re.search(r"install_requires =\n((?:    .+\n)+)", text).group(1)
    extras = re.search(r"\ntest =\n((?:    .+\n)+)", text).group(1)
    expected = [line.strip() for line in (block + extras).splitlines() if not line.strip().startswith("#")]
    torch_line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("TORCH_PINS"))
    expected += torch_line.split("=", 1)[1].split()
    assert freeze.setup_requirements() == expected
    assert "torch==2.14.1" in expected and "pytest-xdist>=3.0" in expected


def test_the_committed_constraints_pin_torch_as_the_makefile_and_each_package_once():
    pins = freeze.read_constraints(ROOT / "constraints.txt")
    torch_line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("TORCH_PINS"))
    for pin in torch_line.split("=", 1)[1].split():
        name, version = pin.split("==")
        assert pins[name][1] == version, pin
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and line[0] != "#"]
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][^\s=]*", line) for line in lines), lines
    assert len(lines) == len(pins)
    assert not {"pip", "siamese-detr", "pb1-detectron2", "detectron2"} & set(pins)
    for required in ("numpy", "opencv-contrib-python", "scipy", "pycocotools", "fvcore", "pytest", "setuptools"):
        assert required in pins, required


def _setup_stamp_constraints():
    """The constraints file `make setup` recorded in this environment's stamp, or None (no stamp: not made
    by `make setup`; an empty value: made with CONSTRAINTS=)."""
    stamp = Path(sys.prefix) / ".setup-complete"
    if not stamp.is_file():
        return None
    recorded = dict(line.split("=", 1) for line in stamp.read_text().splitlines() if "=" in line)
    value = recorded.get("constraints", "").strip()
    return (ROOT / value if not Path(value).is_absolute() else Path(value)) if value else None


def test_this_environment_matches_the_pins_make_setup_applied():
    """Run in the venv `make setup` made (CI's fresh clone), this checks that the set-up honoured the pins:
    every distribution it asked for is at its pinned version, nothing it needs is unpinned, and (with this
    project's detectron2 build) no pin is stale."""
    constraints = _setup_stamp_constraints()
    if constraints is None:
        pytest.skip(f"{sys.prefix} was not set up by `make setup` with a constraints file")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "freeze_constraints.py"), "--check",
                           "--output", str(constraints)], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "this environment matches the" in done.stdout


def test_check_fails_naming_a_moved_pin(tmp_path):
    """The command line against a copy of the pins in which numpy moved: exit 1, numpy named with both
    versions (whatever this environment holds)."""
    import numpy

    pins = (ROOT / "constraints.txt").read_text()
    moved = re.sub(r"^numpy==.*$", "numpy==0.0.1", pins, flags=re.MULTILINE)
    assert moved != pins
    path = tmp_path / "moved.txt"
    path.write_text(moved)
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "freeze_constraints.py"), "--check",
                           "--output", str(path)], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 1
    assert f"numpy is {numpy.__version__} here but pinned to 0.0.1 in {path}" in done.stdout
    assert f"1 difference(s) from {path}: `make -B setup` brings .venv to its pins" in done.stdout


def test_the_readme_gives_the_number_of_pins_and_the_commands_that_exist():
    readme = (ROOT / "README.md").read_text()
    pins = freeze.read_constraints(ROOT / "constraints.txt")
    assert f"the exact\nversion of each of the {len(pins)} distributions" in readme
    assert "`make setup CONSTRAINTS=`" in readme and "tools/freeze_constraints.py --check" in readme
    assert "`make clean-venv && make setup CONSTRAINTS= && .venv/bin/python tools/freeze_constraints.py && make test`" \
        in readme
    assert "make clean-venv && make setup CONSTRAINTS= && .venv/bin/python tools/freeze_constraints.py && make test" \
        in freeze.__doc__
