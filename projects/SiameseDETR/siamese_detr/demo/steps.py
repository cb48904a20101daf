"""Pipeline steps that remember what made their outputs, so a re-run reuses a finished step only when
its inputs are unchanged and redoes it otherwise.

A step owns one output folder. ``<folder>/step_inputs.json`` records ``{"step", "inputs", "complete"}``;
``inputs`` is any JSON-able dict the caller builds (the resolved config's digest, the command line, the
digests of the checkpoints it starts from, ...). :meth:`Step.begin` compares the record with the current
inputs:

* same inputs, complete -> ``"cached"``: nothing to do;
* same inputs, incomplete (an interrupted run) -> ``"resume"``: the folder is kept, the step may resume;
* anything else (other inputs, no record: e.g. a folder another command left there) -> ``"fresh"``: the
  folder is deleted and re-created.

:meth:`Step.finish` marks the step complete (written atomically).
"""
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ["Step", "file_digest", "text_digest"]

RECORD = "step_inputs.json"


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


class Step:
    """One cached pipeline step (see the module docstring).

    Args:
        name: label of the step (recorded, shown in messages).
        output_dir: the folder the step writes; it is deleted when the inputs differ.
        inputs: JSON-able description of everything the step's result depends on.
    """

    def __init__(self, name: str, output_dir, inputs: Dict[str, Any]):
        self.name = name
        self.output_dir = Path(output_dir)
        # round-trip through JSON so tuples / paths compare equal to what the record holds
        self.inputs = json.loads(json.dumps(inputs, sort_keys=True, default=str))

    @property
    def record_path(self) -> Path:
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
        return "cached" if record.get("complete") else "resume"

    def changed_keys(self) -> list:
        """Top-level input keys that differ from the record (all of them when there is none)."""
        old = (self.record() or {}).get("inputs") or {}
        return sorted(k for k in set(old) | set(self.inputs) if old.get(k) != self.inputs.get(k))

    def begin(self) -> str:
        """Prepare the folder for this run and return its state (``fresh`` folders are emptied)."""
        state = self.state()
        if state == "fresh":
            if self.output_dir.exists():
                shutil.rmtree(self.output_dir)
            self.output_dir.mkdir(parents=True)
            self._write(complete=False)
        return state

    def finish(self, seconds: Optional[float] = None) -> None:
        """Mark the step complete (recording how long it took, if given)."""
        self._write(complete=True, seconds=seconds)

    def seconds(self) -> Optional[float]:
        """Duration recorded by :meth:`finish`, or None."""
        return (self.record() or {}).get("seconds")

    def _write(self, complete: bool, seconds: Optional[float] = None) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".tmp")
        record = {"step": self.name, "inputs": self.inputs, "complete": complete}
        if seconds is not None:
            record["seconds"] = float(seconds)
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        os.replace(tmp, self.record_path)
