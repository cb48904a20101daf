"""Pipeline steps that remember what made their outputs, so a re-run reuses a finished step only when
its inputs are unchanged and redoes it otherwise.

A step owns one output folder. ``<folder>/step_inputs.json`` records ``{"step", "inputs", "complete"}`` (and,
while the step is not finished, ``"started"``: when its current run started, ``time.time()`` seconds, and
``"earlier_seconds"``: the seconds its interrupted runs took; once finished, ``"seconds"`` and ``"outputs"``:
``{file name: sha256}``);
``inputs`` is any JSON-able dict the caller builds (the resolved config's digest, the command line, the
digests of the checkpoints it starts from, the code's digest (:func:`source_digest`) and the versions of the
libraries that compute the numbers (:func:`software_versions`), the kind of processor they run on
(:func:`machine_kind`), ...). :meth:`Step.begin` compares the
record with the current inputs:

* same inputs, complete -> ``"cached"``: nothing to do;
* same inputs, incomplete (an interrupted run) -> ``"resume"``: the folder is kept, the step may resume;
* anything else (other inputs, no record: e.g. a folder another command left there) -> ``"fresh"``: the
  folder is deleted and re-created.

:meth:`Step.finish` marks the step complete (written atomically) and records the digests of the outputs that
later steps and the summary read (:data:`CHECKED_OUTPUTS`, those that exist); a complete step one of whose
recorded outputs has since changed or gone (a truncated checkpoint, an edited metrics.json) is ``"fresh"``
again, so it is redone instead of handing the damaged file on.
"""
import ast
import hashlib
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

__all__ = ["CHECKED_OUTPUTS", "Step", "file_digest", "machine_kind", "software_versions", "source_digest",
           "text_digest"]

RECORD = "step_inputs.json"
# the files of a finished step that later steps and the summary read: their digests are checked before reuse
CHECKED_OUTPUTS = ("model_final.pth", "metrics.json")


def text_digest(text: str) -> str:
    """sha256 hex digest of a string (utf-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_digest(path, chunk: int = 1 << 20) -> Optional[str]:
    """sha256 hex digest of a file's bytes, or None if it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` with the docstring of its module, classes and functions removed (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(folders: Iterable) -> str:
    """sha256 over the Python code of every ``*.py`` file under ``folders`` (recursive), as parsed: comments,
    docstrings and layout do not count, any change of what the code does (or a file added, removed or
    renamed) does. A file that does not parse counts by its bytes."""
    digest = hashlib.sha256()
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            text = path.read_bytes()
            try:
                code = ast.dump(_without_docstrings(ast.parse(text)), include_attributes=False).encode()
            except (SyntaxError, ValueError):
                code = text
            name = f"{folder.name}/{path.relative_to(folder).as_posix()}"  # a file moved between folders counts
            digest.update(name.encode() + b"\0" + code + b"\0")
    return digest.hexdigest()


def software_versions() -> Dict[str, str]:
    """Versions of Python and of the libraries whose kernels make the demo's numbers (floats differ
    between versions, and training amplifies that)."""
    import cv2
    import detectron2
    import numpy
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "detectron2": detectron2.__version__,
            "numpy": numpy.__version__, "opencv": cv2.__version__}


# the /proc/cpuinfo fields that name a processor's kind (x86; other architectures: "CPU implementer" ...)
_CPUINFO_KIND_FIELDS = ("vendor_id", "cpu family", "model", "stepping", "CPU implementer", "CPU architecture",
                        "CPU variant", "CPU part", "CPU revision")


def _cpuinfo_fields(path="/proc/cpuinfo") -> Dict[str, str]:
    """The ``key: value`` lines of the first processor in ``path`` (empty where it cannot be read)."""
    fields = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def machine_kind(cpuinfo_path="/proc/cpuinfo") -> Dict[str, str]:
    """The kind of processor the numbers are computed on: ``{"cpu": name, "cpu_id": identification,
    "torch_cpu_capability": ...}``.

    ``cpu`` is the model name (under a hypervisor often only the family's, e.g. "AMD EPYC"), ``cpu_id`` the
    vendor, family, model and stepping from ``cpuinfo_path`` (Linux; elsewhere ``platform.machine()``),
    ``torch_cpu_capability`` the instruction set torch chose its CPU kernels for (``AVX2``, ``AVX512``, ...).
    The same step on two kinds of processor gives other floats (their kernels differ, and training amplifies
    that), so the kind is a step input like the library versions; the number of processors is not (every
    step's thread count is fixed)."""
    import torch

    info = _cpuinfo_fields(cpuinfo_path)
    cpu_id = " ".join(f"{key} {info[key]}" for key in _CPUINFO_KIND_FIELDS if key in info)
    return {"cpu": info.get("model name") or platform.processor() or platform.machine() or "unknown",
            "cpu_id": cpu_id or platform.machine() or "unknown",
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


class Step:
    """One cached pipeline step (see the module docstring).

    Args:
        name: label of the step (recorded, shown in messages).
        output_dir: the folder the step writes; it is deleted and re-made when the step starts ``"fresh"``
            (other inputs, no readable record, or a recorded output changed).
        inputs: JSON-able description of everything the step's result depends on.
    """

    def __init__(self, name: str, output_dir, inputs: Dict[str, Any]):
        self.name = name
        self.output_dir = Path(output_dir)
        # round-trip through JSON so tuples / paths compare equal to what the record holds
        self.inputs = json.loads(json.dumps(inputs, sort_keys=True, default=str))

    @property
    def record_path(self) -> Path:
        """``<output_dir>/step_inputs.json``."""
        return self.output_dir / RECORD

    def record(self) -> Optional[dict]:
        """The stored record, or None if absent or unreadable."""
        try:
            with open(self.record_path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def state(self) -> str:
        """``"cached"``, ``"resume"`` or ``"fresh"`` (see the module docstring); changes nothing."""
        record = self.record()
        if record is None or record.get("inputs") != self.inputs:
            return "fresh"
        if not record.get("complete"):
            return "resume"
        return "fresh" if self.damaged_outputs() else "cached"

    def damaged_outputs(self) -> list:
        """Names of the outputs recorded by :meth:`finish` whose file has changed or gone since (sorted)."""
        recorded = (self.record() or {}).get("outputs") or {}
        return sorted(name for name, digest in recorded.items()
                      if file_digest(self.output_dir / name) != digest)

    def changed_keys(self) -> list:
        """Top-level input keys that differ from the record (all of them when there is none)."""
        old = (self.record() or {}).get("inputs") or {}
        return sorted(k for k in set(old) | set(self.inputs) if old.get(k) != self.inputs.get(k))

    def begin(self) -> str:
        """Prepare the folder for this run and return its state (``fresh`` folders are emptied)."""
        state = self.state()
        if state == "fresh":
            self.restart()
        return state

    def restart(self) -> None:
        """Empty the folder and record the step as begun, not finished (a ``fresh`` start; also an
        interrupted step that cannot resume)."""
        if self.output_dir.exists():
            shutil.rmtree(self.output_dir)
        self.output_dir.mkdir(parents=True)
        self._write(complete=False, started=time.time())

    def continue_interrupted(self) -> Optional[float]:
        """Record a run that continues this interrupted step as started now; returns the seconds the
        interrupted runs took: the time they recorded plus the last one's, from its start to the newest file
        it wrote in the folder; None when the record has no start time (written by a version that kept none)."""
        record = self.record() or {}
        earlier = record.get("earlier_seconds")
        started = record.get("started")
        if isinstance(started, (int, float)):
            written = [p.stat().st_mtime for p in self.output_dir.rglob("*")
                       if p.is_file() and p not in (self.record_path, self.record_path.with_suffix(".tmp"))]
            earlier = float(earlier or 0.0) + max([0.0] + [t - started for t in written])
        self._write(complete=False, started=time.time(), earlier_seconds=earlier)
        return earlier

    def finish(self, seconds: Optional[float] = None) -> None:
        """Mark the step complete, recording the digests of those of its :data:`CHECKED_OUTPUTS` that exist
        and, if given, ``seconds``: how long it took (all its runs, interrupted ones included)."""
        outputs = {name: file_digest(self.output_dir / name) for name in CHECKED_OUTPUTS}
        self._write(complete=True, seconds=seconds,
                    outputs={name: digest for name, digest in outputs.items() if digest is not None})

    def seconds(self) -> Optional[float]:
        """Duration recorded by :meth:`finish`, or None."""
        return (self.record() or {}).get("seconds")

    def _write(self, complete: bool, seconds: Optional[float] = None, outputs: Optional[dict] = None,
               started: Optional[float] = None, earlier_seconds: Optional[float] = None) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".tmp")
        record = {"step": self.name, "inputs": self.inputs, "complete": complete}
        for key, value in (("seconds", seconds), ("started", started), ("earlier_seconds", earlier_seconds)):
            if value is not None:
                record[key] = float(value)
        if outputs:
            record["outputs"] = outputs
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        os.replace(tmp, self.record_path)
