#!/usr/bin/env python
"""Pin what `make setup` installs: write ``constraints.txt`` from this environment, or check this environment
against it.

``make setup`` passes ``constraints.txt`` to each of its pip installs (``pip install -c``; ``make setup
CONSTRAINTS=`` leaves it out), so a fresh machine gets the versions the project was tested with rather than
whatever the package index holds that day. Those versions matter: numpy and OpenCV change the demo's floats
(the demo's step records name their versions), and a new major release can break detectron2 v0.6.

What is pinned is what ``make setup`` asks pip for and everything that requires in turn, as installed here
(environment markers evaluated for this interpreter, extras followed):

- this project's requirements with its ``test`` extra (``setup.cfg``);
- torch and torchvision (``TORCH_PINS`` in the ``Makefile``);
- the requirements of the detectron2 that ``tools/install_detectron2.py`` builds (the ``pb1-detectron2``
  distribution), when it is installed. An official detectron2 is the user's and is not followed.

Not pinned: this project, detectron2 itself (a sha256-checked sdist) and pip.

Usage::

    python tools/freeze_constraints.py                # write constraints.txt from this environment
    python tools/freeze_constraints.py --check        # exit 1, naming each pin this environment breaks

To move the pins to the package index's versions of the day::

    make clean-venv && make setup CONSTRAINTS= && .venv/bin/python tools/freeze_constraints.py && make test
"""
import argparse
import configparser
import datetime
import importlib.metadata as metadata
import platform
import re
import sys
from collections import deque
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONSTRAINTS = ROOT / "constraints.txt"
# The detectron2 that tools/install_detectron2.py builds; its requirements are pinned.
DETECTRON2_BUILD = "pb1-detectron2"
# Never pinned: the project, detectron2 under either name (built locally), pip (comes with the interpreter).
NOT_PINNED = frozenset({"siamese-detr", "detectron2", DETECTRON2_BUILD, "pip"})


def canonical(name: str) -> str:
    """A distribution name in PEP 503 form (``Foo_bar.baz`` -> ``foo-bar-baz``), as pip compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def setup_requirements(root: Path = ROOT) -> List[str]:
    """The requirement strings ``make setup`` gives pip for this project: ``install_requires`` and the ``test``
    extra of ``root/setup.cfg``, then ``TORCH_PINS`` of ``root/Makefile``. ``SystemExit`` naming the file when
    one is missing."""
    cfg = configparser.ConfigParser()
    if not cfg.read(root / "setup.cfg"):
        raise SystemExit(f"{root / 'setup.cfg'}: not found")
    lines = cfg.get("options", "install_requires", fallback="").splitlines()
    lines += cfg.get("options.extras_require", "test", fallback="").splitlines()
    makefile = root / "Makefile"
    pins = re.search(r"^TORCH_PINS\s*:?=\s*(.+)$", makefile.read_text(), re.MULTILINE)
    if pins is None:
        raise SystemExit(f"{makefile}: no TORCH_PINS line")
    lines = [line.strip() for line in lines]
    return [line for line in lines if line and not line.startswith("#")] + pins.group(1).split()


def installed(path: Optional[Sequence[str]] = None) -> Dict[str, metadata.Distribution]:
    """The distributions installed on ``path`` (``sys.path`` when None), by canonical name; where a name is
    installed twice, the first on the path (the one Python imports) wins."""
    found: Dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions(path=list(path) if path is not None else sys.path):
        found.setdefault(canonical(dist.metadata["Name"] or ""), dist)
    return found


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    """Whether ``requirement``'s marker holds here, for the plain distribution or one of the ``extras`` asked."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras))


def root_requirements(dists: Dict[str, metadata.Distribution], root: Path = ROOT) -> List[str]:
    """:func:`setup_requirements`, plus the requirements of ``pb1-detectron2`` when it is among ``dists``
    (:func:`installed`)."""
    requirements = setup_requirements(root)
    build = dists.get(DETECTRON2_BUILD)
    if build is not None:
        requirements += list(build.requires or [])
    return requirements


def closure(requirements: Iterable[str], dists: Dict[str, metadata.Distribution]
            ) -> Tuple[Dict[str, metadata.Distribution], List[str]]:
    """Follow ``requirements`` (PEP 508 strings) through ``dists``, the installed distributions
    (:func:`installed`).

    Returns ``(found, missing)``: ``found`` maps each canonical name reached (``NOT_PINNED`` excepted) to its
    installed distribution; ``missing`` lists the canonical names required here but not installed. A
    requirement whose marker is false for this interpreter is not followed; ``name[extra]`` also follows the
    requirements marked ``extra == "extra"``."""
    queue = deque((text, ()) for text in requirements)
    found: Dict[str, metadata.Distribution] = {}
    missing: List[str] = []
    asked: Dict[str, set] = {}
    while queue:
        text, parent_extras = queue.popleft()
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            raise SystemExit(f"cannot read the requirement {text!r}: {error}")
        if not _applies(requirement, parent_extras):
            continue
        name = canonical(requirement.name)
        if name in NOT_PINNED:
            continue
        new_extras = set(requirement.extras) - asked.get(name, set())
        if name in asked and not new_extras:
            continue
        asked.setdefault(name, set()).update(requirement.extras)
        dist = dists.get(name)
        if dist is None:
            if name not in missing:
                missing.append(name)
            continue
        found[name] = dist
        extras = tuple(sorted(asked[name]))
        for sub in dist.requires or []:
            queue.append((sub, extras))
    return found, missing


def read_constraints(path: Path) -> Dict[str, Tuple[str, str]]:
    """``path``'s pins: canonical name -> (name as written, version). Blank lines and ``#`` comments are
    skipped; anything else must be ``name==version``, each name once (``SystemExit`` naming the line)."""
    if not path.is_file():
        raise SystemExit(f"{path}: not found (write it with: python tools/freeze_constraints.py --output {path})")
    pins: Dict[str, Tuple[str, str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s=;]+)", text)
        if match is None:
            raise SystemExit(f"{path}:{number}: {line.strip()!r} is not a pin of the form name==version")
        name = canonical(match.group(1))
        if name in pins:
            raise SystemExit(f"{path}:{number}: {match.group(1)} is pinned twice")
        pins[name] = (match.group(1), match.group(2))
    return pins


def render(found: Dict[str, metadata.Distribution], today: Optional[datetime.date] = None) -> str:
    """The text of a constraints file pinning every distribution of ``found``, sorted by name, under a header
    that says where it came from and how to remake it."""
    today = today or datetime.date.today()
    header = [
        "# The exact versions `make setup` installs: it runs each pip install with -c constraints.txt",
        "# (`make setup CONSTRAINTS=` leaves them out). Written by tools/freeze_constraints.py after a fresh",
        f"# `make setup` on {today.isoformat()}, Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()}.",
        "# Do not edit by hand: the tool's docstring says how to move the pins.",
    ]
    pins = [f"{found[name].metadata['Name']}=={found[name].version}" for name in sorted(found)]
    return "\n".join(header + pins) + "\n"


def problems(pins: Dict[str, Tuple[str, str]], found: Dict[str, metadata.Distribution], missing: List[str],
             constraints: Path, report_unused: bool = True) -> List[str]:
    """What keeps this environment from being the one ``constraints`` describes: a distribution at another
    version than its pin, one that is installed and required but not pinned, one required but not installed,
    and (with ``report_unused``) a pin that nothing here requires. One line each, naming the distribution.

    ``found`` and ``missing`` are :func:`closure`'s answer. Leave ``report_unused`` off for an environment with
    an official detectron2: the pins of the detectron2 build's own dependencies are then unused."""
    lines = []
    for name, dist in sorted(found.items()):
        if name not in pins:
            lines.append(f"{dist.metadata['Name']} {dist.version} is required here but not pinned in {constraints}")
        elif Version(dist.version) != Version(pins[name][1]):
            lines.append(f"{dist.metadata['Name']} is {dist.version} here but pinned to {pins[name][1]} in "
                         f"{constraints}")
    lines += [f"{name} is required but not installed" for name in missing]
    if report_unused:
        lines += [f"{written}=={version} in {constraints} is required by nothing here"
                  for name, (written, version) in sorted(pins.items()) if name not in found]
    return lines


def main(argv=None) -> int:
    """The command line: write the constraints file (returns 0), or with ``--check`` compare this environment
    with it (returns 0 when it matches, else 1 after printing each difference)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_CONSTRAINTS,
                        help="the constraints file to write or check (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="do not write: exit 1 if this environment does not match the file, naming each "
                        "difference")
    args = parser.parse_args(argv)

    dists = installed()
    found, missing = closure(root_requirements(dists), dists)
    if args.check:
        differences = problems(read_constraints(args.output), found, missing, args.output,
                               report_unused=DETECTRON2_BUILD in dists)
        for line in differences:
            print(line)
        if differences:
            print(f"{len(differences)} difference(s) from {args.output}: `make -B setup` brings .venv to its pins; "
                  "to move the pins instead, see the docstring of tools/freeze_constraints.py")
            return 1
        print(f"this environment matches the {len(found)} pins of {args.output}")
        return 0
    if missing:
        raise SystemExit(f"required but not installed: {', '.join(missing)}; run `make setup CONSTRAINTS=` first")
    args.output.write_text(render(found))
    print(f"wrote {len(found)} pins to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
