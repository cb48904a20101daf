"""Runs the demo's commands as cached steps (:class:`~siamese_detr.demo.steps.Step`) with a progress bar
and ETA on the terminal and each command's full output in ``<step folder>/demo.log``.

Used by ``tools/run_demo.py`` and ``tools/compare_pretraining.py``.
"""
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from .steps import Step, file_digest

__all__ = ["StepRunner", "clock", "last_iteration", "last_results", "read_json", "resolved_config_digest"]


def resolved_config_digest(config_file: str, overrides: List[str]) -> str:
    """sha256 of the LazyConfig ``config_file`` after ``overrides``, as the training tool sees it (its
    YAML dump): any change of the file, of a config it imports or of an override changes it."""
    from detectron2.config import LazyConfig

    from ..engine import apply_checked_overrides

    cfg = apply_checked_overrides(LazyConfig.load(str(config_file)), overrides)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.yaml")
        LazyConfig.save(cfg, path)
        return file_digest(path)


def last_iteration(folder: Path) -> int:
    """Number of finished iterations logged in ``metrics.json`` / ``progress.json`` of a step folder."""
    best = 0
    for name in ("metrics.json", "progress.json"):
        path = Path(folder) / name
        if not path.is_file():
            continue
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    best = max(best, int(json.loads(line).get("iteration", -1)) + 1)
                except (ValueError, AttributeError, TypeError):
                    continue
    return best


def clock(seconds: float) -> str:
    """``m:ss``."""
    seconds = int(max(0, seconds or 0))
    return f"{seconds // 60}:{seconds % 60:02d}"


def read_json(path: Path) -> dict:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def last_results(metrics_json: Path) -> dict:
    """The last value of every evaluation metric (``task/metric`` keys) in a detectron2 metrics.json."""
    results = {}
    metrics_json = Path(metrics_json)
    if metrics_json.is_file():
        for line in metrics_json.read_text(errors="replace").splitlines():
            try:
                results.update({k: v for k, v in json.loads(line).items() if "/" in k})
            except (ValueError, AttributeError):
                continue
    return results


class StepRunner:
    """Runs commands from ``root`` as cached steps; appends every command to ``<log_dir>/commands.txt``."""

    def __init__(self, root: Path, log_dir: Path):
        self.reused: set = set()  # names of the steps reused in this run
        self.root = Path(root)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def step(self, name: str, folder: Path, cmd: List, config: Optional[str] = None,
             overrides: Optional[List[str]] = None, inputs: Optional[Dict] = None, total: int = 0) -> float:
        """Run ``cmd`` as the step ``name`` writing ``folder``; returns its seconds (when reused: the seconds
        recorded by the run that made it, and ``name`` is added to :attr:`reused`).

        Inputs recorded: ``inputs`` + the command + (with ``config``) the resolved config's digest after
        ``overrides``. Unchanged and complete: reused; unchanged and incomplete: run again in the same folder
        (commands given ``--resume`` continue); changed or unknown: the folder is deleted first.
        Raises ``SystemExit`` with the end of the log when the command fails.
        """
        folder = Path(folder)
        inputs = dict(inputs or {})
        if config is not None:
            inputs["config"] = str(config)
            inputs["resolved_config"] = resolved_config_digest(str(self.root / config), list(overrides or []))
        inputs["command"] = [str(c) for c in cmd]
        step = Step(name, folder, inputs)
        printable = " ".join(shlex.quote(str(c)) for c in cmd)
        print(f"\n[{name}] $ {printable}", flush=True)
        with open(self.log_dir / "commands.txt", "a") as f:
            f.write(f"$ {printable}\n")
        previous = step.record()
        changed = step.changed_keys()
        state = step.begin()
        if state == "cached":
            print(f"[{name}] inputs unchanged and finished before: reused ({folder})", flush=True)
            self.reused.add(name)
            return float(step.seconds() or 0.0)
        if state == "fresh" and previous is not None:
            print(f"[{name}] inputs changed ({', '.join(changed)}): redoing the step", flush=True)
        elif state == "resume":
            print(f"[{name}] continuing an interrupted run", flush=True)
        start = time.time()
        with open(folder / "demo.log", "a") as log:
            proc = subprocess.Popen([str(c) for c in cmd], cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                time.sleep(1.0)
                self._progress(folder, total, start)
        self._progress(folder, total, start, final=True)
        if proc.returncode != 0:
            tail = (folder / "demo.log").read_text(errors="replace").splitlines()[-15:]
            raise SystemExit("\n".join(tail) + f"\n[{name}] failed (exit {proc.returncode}); full log: "
                             f"{folder / 'demo.log'}")
        seconds = time.time() - start
        step.finish(seconds)
        return seconds

    @staticmethod
    def _progress(folder, total, start, final=False):
        done = min(last_iteration(folder), total) if total else 0
        elapsed = time.time() - start
        if total:
            width = 30
            filled = int(width * done / total)
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} it"
            eta = "" if final or done == 0 else f", ETA {clock(elapsed / done * (total - done))}"
            text = f"  {bar}  {clock(elapsed)} elapsed{eta}"
        else:
            text = f"  {clock(elapsed)} elapsed"
        if sys.stdout.isatty():
            print("\r" + text.ljust(78), end="\n" if final else "", flush=True)
        elif final:
            print(text, flush=True)
