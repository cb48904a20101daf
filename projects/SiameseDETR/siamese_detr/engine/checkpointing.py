"""Checkpoints that survive a kill, refuse files that would run code, and refuse loads that load nothing.

:class:`SafeDetectionCheckpointer` is Detectron2's ``DetectionCheckpointer`` with:

* **atomic writes**: ``<name>.pth`` and ``last_checkpoint`` are written to ``<file>.tmp``, flushed to disk
  and renamed, so a kill leaves either the previous file or the new one, never a torn one;
* **resume fallback**: ``resume_or_load(..., resume=True)`` loads the checkpoint named by ``last_checkpoint``
  and, when it is missing or does not load, the newest loadable ``*.pth`` of the folder (with a warning
  naming the bad file); none loadable is an error listing each file and why;
* **no code from unvetted pickles**: ``.pth`` files are read with ``torch.load(weights_only=True)``;
  a ``.pkl`` (pickle) file needs ``trust_pickle=True``; a file that is neither (JSON, random bytes) is
  reported as not a checkpoint, and an empty one (0 bytes) as a write that was interrupted;
* **layouts named**: a ``state_dict`` entry (the layout of many other training codes) is taken as the model;
  a file without tensors (a Tensor alone, an optimizer state, a dict of settings) is named as not a model
  checkpoint;
* **no empty loads**: a checkpoint of which not one tensor matches a model parameter (name and shape)
  is refused (partial matches, e.g. a backbone-only or pretraining checkpoint, are normal and allowed);
* **``PATH?matching_heuristics=True``** (the query of detectron2 after v0.6) on the release too: names are
  matched by Detectron2's heuristics (suffixes, model-zoo layouts) instead of exactly; any other query on a
  local path is an error naming it.

What a load leaves wrong (a partly random model for ``--eval-only``, tensors of other shapes when training
from a checkpoint) is refused by :mod:`.load_refusals`.

Convert a trusted Detectron2 ``.pkl`` once into a ``.pth`` that loads without ``--trust-pickle``::

    python -m siamese_detr.engine.checkpointing IN.pkl OUT.pth
"""
import logging
import os
import pickle
import re
import sys
from typing import List, Optional, Sequence, Tuple
from urllib.parse import parse_qs

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm

from .load_summary import is_pretraining_model, official_layout_hint, partial_load_summary
from ..utils.user_errors import UserError

__all__ = [
    "CheckpointLoadError",
    "SafeDetectionCheckpointer",
    "atomic_torch_save",
    "check_checkpoint_path",
    "checkpoint_kind",
    "error_first_line",
    "convert_pickle_checkpoint",
    "is_legacy_torch_save",
    "ensure_final_checkpoint",
    "keep_earlier_periodic_checkpoints",
    "model_checkpoint_dict",
    "trust_pickle_requested",
]

logger = logging.getLogger(__name__)

CONVERT_PKL_HINT = "python -m siamese_detr.engine.checkpointing {src} OUT.pth"
CONVERT_TOOL = "tools/convert_checkpoint.py"
_PERIODIC = re.compile(r"_(\d+)\.pth$")


class CheckpointLoadError(UserError, RuntimeError):
    """A checkpoint file is missing, torn, not a checkpoint, untrusted, or matches no model parameter."""


def _fsync_write(path: str, write) -> None:
    """``write(f)`` into ``path + ".tmp"``, fsync, then rename over ``path`` (atomic on POSIX)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file and a rename."""
    _fsync_write(path, lambda f: torch.save(obj, f))


def checkpoint_kind(path: str) -> str:
    """What the file's first bytes say it is: ``"zip"`` (PyTorch >= 1.6 ``torch.save``), ``"pickle"`` (a
    pickle: Detectron2 ``.pkl`` or a legacy ``torch.save``), ``"empty"`` or ``"unknown"``."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "empty"
    if head == b"PK\x03\x04":
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # PROTO opcode, protocol 2..5
        return "pickle"
    if path.endswith(".pkl") and head[:1] in (b"(", b"}", b"]", b"c"):  # protocol 0/1 pickles (Python 2 era)
        return "pickle"
    return "unknown"


# torch.save's magic number 0x1950a86a20f9469cfc6c, pickled (LONG1 opcode, 10 bytes little-endian) as the first
# object of a legacy (non-zip, torch < 1.6 or ``_use_new_zipfile_serialization=False``) file
_TORCH_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def is_legacy_torch_save(path: str) -> bool:
    """Whether a file :func:`checkpoint_kind` calls ``"pickle"`` was written by ``torch.save`` in the legacy
    (non-zip) format, which ``torch.load`` reads; a plain pickle (a Detectron2 ``.pkl``) is not."""
    with open(path, "rb") as f:
        head = f.read(32)
    return _TORCH_LEGACY_MAGIC in head


def error_first_line(error: BaseException) -> str:
    """The first line of an exception's message ("" for one without, e.g. a bare ``EOFError``)."""
    return (str(error).splitlines() or [""])[0]


LAST_CHECKPOINT = "last_checkpoint"  # detectron2's pointer file: one line, the name of the latest checkpoint


def _pointer_error(path: str) -> Optional[CheckpointLoadError]:
    """For a ``path`` that is detectron2's ``last_checkpoint`` pointer (one line naming a ``.pth``/``.pkl``
    of its folder), the error naming the checkpoint it points to; None for any other file."""
    if os.path.getsize(path) > 4096:
        return None
    with open(path, "rb") as f:
        try:
            lines = f.read().decode("utf-8").split()
        except UnicodeDecodeError:
            return None
    if len(lines) != 1 or not lines[0].endswith((".pth", ".pkl")) or os.sep in lines[0]:
        return None
    folder = os.path.dirname(path)
    target = os.path.join(folder, lines[0])
    return CheckpointLoadError(
        f"{path} is detectron2's {LAST_CHECKPOINT} file, which names the latest checkpoint of its run, not a "
        f"checkpoint: give the file it names, train.init_checkpoint={target}"
        + ("" if os.path.isfile(target) else " (missing now)")
        + f", or continue that run with --resume train.output_dir={folder or '.'}"
    )


def _not_a_checkpoint(path: str) -> CheckpointLoadError:
    pointer = _pointer_error(path)
    if pointer is not None:
        return pointer
    with open(path, "rb") as f:
        head = f.read(16)
    return CheckpointLoadError(
        f"{path} is not a checkpoint: it is neither a PyTorch .pth file nor a pickle (it starts with {head!r}). "
        "Check the path given."
    )


def _untrusted_pickle(path: str) -> CheckpointLoadError:
    return CheckpointLoadError(
        f"{path} is a pickle file: loading it runs whatever code it contains. If you trust its source, pass "
        "--trust-pickle, or convert it once into a .pth that loads safely: "
        + CONVERT_PKL_HINT.format(src=path)
    )


def load_checkpoint_file(path: str, trust_pickle: bool = False) -> dict:
    """Read a ``.pth`` (``torch.load(weights_only=True)``; ``weights_only=False`` only with ``trust_pickle``).

    A file written by ``torch.save`` (zip or legacy format) is read here whatever its name; Detectron2 / Caffe2
    pickles (``.pkl`` files not written by ``torch.save``) are not (see :meth:`SafeDetectionCheckpointer._load_file`).

    Returns:
        what ``torch.load`` returned, unchecked (:func:`model_checkpoint_dict` checks its layout).
    Raises:
        CheckpointLoadError: naming ``path`` and what is wrong with it.
    """
    if not os.path.isfile(path):
        raise CheckpointLoadError(f"checkpoint {path} does not exist")
    kind = checkpoint_kind(path)
    if kind == "empty":
        raise CheckpointLoadError(f"checkpoint {path} is empty (0 bytes): its write was interrupted")
    if kind == "unknown":
        raise _not_a_checkpoint(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e) and "Weights only" not in str(e):
            raise CheckpointLoadError(f"checkpoint {path} is corrupt ({type(e).__name__}: {e})") from e
        if not trust_pickle:
            raise CheckpointLoadError(
                f"{path} holds python objects besides tensors, which torch.load(weights_only=True) refuses "
                f"({error_first_line(e)}). Loading it would run code from the file: pass --trust-pickle "
                "only if you trust its source."
            ) from e
    except Exception as e:  # torn zip, truncated legacy file, bad header
        raise CheckpointLoadError(
            f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {error_first_line(e)})"
        ) from e
    logger.warning("Loading %s with torch.load(weights_only=False) (--trust-pickle).", path)
    return torch.load(path, map_location="cpu", weights_only=False)


def model_checkpoint_dict(loaded, path: str, log: Optional[logging.Logger] = None) -> dict:
    """``loaded`` (what ``torch.load`` returned) as ``{"model": {name: tensor}, ...}``, the layout the
    checkpointer loads: Detectron2's (a ``model`` entry), a ``state_dict`` entry (the layout of many other
    training codes) taken as the model, or a bare dict of tensors.

    Raises:
        CheckpointLoadError: naming ``path``: not a dict, or model entries that are not tensors (optimizer
            state, epochs, configs without any weights).
    """
    if not isinstance(loaded, dict):
        raise CheckpointLoadError(
            f"checkpoint {path} holds a {type(loaded).__name__}, not a dict of tensors. Save "
            "{'model': model.state_dict()}, or convert it with " + CONVERT_TOOL
        )
    if "model" not in loaded and isinstance(loaded.get("state_dict"), dict):
        if log is not None:
            log.info("%s has no 'model' entry: its 'state_dict' entry is taken as the model's tensors", path)
        loaded = dict(loaded, model=loaded["state_dict"])
        del loaded["state_dict"]
    model = loaded["model"] if "model" in loaded else loaded
    if not isinstance(model, dict):
        raise CheckpointLoadError(f"checkpoint {path}: its 'model' entry is a {type(model).__name__}, not a dict "
                                  "of tensors")
    bad = [k for k, v in model.items() if not isinstance(v, (torch.Tensor, np.ndarray))]
    if bad:
        raise CheckpointLoadError(
            f"checkpoint {path} is not a model checkpoint: "
            + (f"{len(bad)} of its entries are not tensors ({', '.join(map(repr, bad[:5]))})" if "model" in loaded
               else f"no 'model' or 'state_dict' entry, and {len(bad)} of its top-level entries are not tensors "
                    f"({', '.join(map(repr, bad[:5]))})")
            + ". Give a checkpoint written by tools/lazyconfig_train_net.py, or convert it with " + CONVERT_TOOL
        )
    return loaded if "model" in loaded else {"model": loaded}


def split_load_query(path: str) -> Tuple[str, bool]:
    """``"model.pth?matching_heuristics=True"`` -> ``("model.pth", True)``.

    For local paths (URLs are left to Detectron2's ``PathManager``); as in detectron2, a ``?`` always starts
    the query. The one query understood is detectron2's ``matching_heuristics=True|False``; anything else
    raises :class:`CheckpointLoadError` naming it.
    """
    if not path or "://" in path or "?" not in path:
        return path, False
    base, query = path.split("?", 1)
    params = parse_qs(query, keep_blank_values=True)
    value = params.pop("matching_heuristics", ["False"])
    if params or value not in (["True"], ["False"]):
        raise CheckpointLoadError(
            f"checkpoint {path}: unsupported query '?{query}'; the only one understood is "
            "'?matching_heuristics=True' (match names by Detectron2's heuristics, as detectron2 does)"
        )
    return base, value == ["True"]


def check_checkpoint_path(path: str) -> Tuple[str, bool]:
    """:func:`split_load_query` of ``path``, and a local file (a URL is left to Detectron2's ``PathManager``):
    a :class:`CheckpointLoadError` names a path that does not exist, is a folder or is the ``last_checkpoint``
    pointer of a run (naming the checkpoint it points to). Empty ``path``: no load."""
    path, heuristics = split_load_query(path)
    if path and not os.path.isfile(path) and "://" not in path:
        if os.path.isdir(path):
            raise CheckpointLoadError(f"checkpoint {path} is a folder: give a file in it, e.g. "
                                      f"{os.path.join(path, 'model_final.pth')}")
        raise CheckpointLoadError(f"checkpoint {path} does not exist")
    pointer = _pointer_error(path) if path and os.path.isfile(path) else None
    if pointer is not None:
        raise pointer
    return path, heuristics


class SafeDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic saves, safe loading and a resume fallback (module docstring).

    Args (besides ``DetectionCheckpointer``'s):
        trust_pickle: allow ``.pkl`` files and ``.pth`` files holding python objects (runs code from them).
    """

    def __init__(self, model, save_dir: str = "", *, trust_pickle: bool = False, save_to_disk=None,
                 **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.trust_pickle = bool(trust_pickle)
        self._loading: Optional[str] = None
        self._matching_heuristics = False
        self.loaded_path: Optional[str] = None
        self.loaded_names: Optional[List[str]] = None  # model tensors the last load gave (None: no load yet)
        # (name, shape in the checkpoint, shape in the model) of the tensors the last load skipped for their shape
        self.incorrect_shapes: List[Tuple[str, tuple, tuple]] = []
        self.checkpoint_keys: List[str] = []  # every tensor name of the last checkpoint loaded (its layout)

    # ------------------------------------------------------------------------------------- saving
    def save(self, name: str, **kwargs) -> None:
        """Write ``save_dir/<name>.pth`` (the model, every checkpointable's state and ``kwargs``) with
        :func:`atomic_torch_save`, then point ``last_checkpoint`` at it; nothing without ``save_dir`` or
        ``save_to_disk`` (the main process only, by default)."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Write ``last_checkpoint`` (the file name, no newline) atomically."""
        path = os.path.join(self.save_dir, LAST_CHECKPOINT)
        _fsync_write(path, lambda f: f.write(last_filename_basename.encode()))

    # ------------------------------------------------------------------------------------ loading
    def _load_file(self, filename: str) -> dict:
        loaded = self._read_checkpoint(filename)
        if self._matching_heuristics:
            loaded["matching_heuristics"] = True
        return loaded

    def _read_checkpoint(self, filename: str) -> dict:
        path = self._loading or filename
        kind = checkpoint_kind(filename) if os.path.isfile(filename) else "missing"
        if kind == "missing":
            raise CheckpointLoadError(f"checkpoint {path} does not exist")
        if kind == "empty":
            raise CheckpointLoadError(f"checkpoint {path} is empty (0 bytes): its write was interrupted")
        if kind == "unknown":
            raise _not_a_checkpoint(filename)
        if filename.endswith(".pkl"):
            if kind != "pickle":
                return self._wrap(load_checkpoint_file(filename, self.trust_pickle))
            if not self.trust_pickle:
                raise _untrusted_pickle(path)
            try:
                return super()._load_file(filename)  # Detectron2's pickle reader (model-zoo / Caffe2 layouts)
            except Exception as e:
                raise CheckpointLoadError(f"cannot read pickle checkpoint {path} ({type(e).__name__}: {e})") from e
        return self._wrap(load_checkpoint_file(filename, self.trust_pickle))

    def _wrap(self, loaded) -> dict:
        return model_checkpoint_dict(loaded, self._loading or "the checkpoint", self.logger)

    def _load_model(self, checkpoint: dict):
        model_state = self.model.state_dict()
        source = checkpoint.get("model", {})
        source_keys = sorted(source)
        heuristics = checkpoint.get("matching_heuristics", False)
        incompatible = super()._load_model(checkpoint)
        if heuristics:  # names were aligned by Detectron2's heuristics: count what is not missing
            missing = set(incompatible.missing_keys) | {k for k, *_ in incompatible.incorrect_shapes}
            loaded = [k for k in model_state
                      if k not in missing and k.split(".")[-1] not in ("pixel_mean", "pixel_std")]
        else:  # exact names (a "module." prefix of a DDP-saved checkpoint removed) and equal shapes
            names = {k[len("module."):] if k.startswith("module.") else k: v for k, v in source.items()}
            loaded = [k for k, v in names.items()
                      if k in model_state and tuple(getattr(v, "shape", ())) == tuple(model_state[k].shape)]
        self.checkpoint_keys = source_keys
        if model_state and not loaded:
            raise CheckpointLoadError(
                f"checkpoint {self._loading} matches no parameter of the model (0 of {len(model_state)} names "
                f"and shapes; its keys look like {source_keys[:3]}). "
                + (official_layout_hint(source_keys, self._loading or "FILE", is_pretraining_model(model_state))
                   or f"Is it for another model or layout? Convert a torchvision/SwAV/DETReg ResNet with "
                      f"{CONVERT_TOOL}") + "."
            )
        self.logger.info(f"Loaded {len(loaded)} of {len(model_state)} model tensors from {self._loading}")
        self.loaded_names = list(loaded)
        self.incorrect_shapes = [(k, tuple(a), tuple(b)) for k, a, b in incompatible.incorrect_shapes]
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        """fvcore's warning per tensor (kept for the log file), then :func:`~.load_summary.partial_load_summary`."""
        super()._log_incompatible_keys(incompatible)
        try:
            from fvcore.common.checkpoint import _filter_reused_missing_keys

            missing = _filter_reused_missing_keys(self.model, incompatible.missing_keys)
        except ImportError:  # a future fvcore without the private helper: count every missing key
            missing = list(incompatible.missing_keys)
        summary = partial_load_summary(incompatible.incorrect_shapes, missing, incompatible.unexpected_keys,
                                       checkpoint_keys=self.checkpoint_keys, model_keys=list(self.model.state_dict()),
                                       source=self._loading or "FILE")
        if summary:
            self.logger.info(summary)

    def parameters_not_loaded(self, exclude: Sequence[str] = ("one2many",)) -> List[str]:
        """Names of the model's parameters the last load did not give (``exclude``: substrings of names that
        are allowed to stay as initialised, e.g. hybrid matching's training-only queries)."""
        loaded = set(self.loaded_names or ())
        return [name for name, _ in self.model.named_parameters()
                if name not in loaded and not any(part in name for part in exclude)]

    def load(self, path: str, *args, **kwargs):
        """Detectron2's ``load`` of ``path`` after :func:`check_checkpoint_path` (its ``?matching_heuristics=``
        query applied); records ``loaded_path`` (None for an empty ``path``: nothing loaded), and the model
        load records ``loaded_names``, ``incorrect_shapes`` and ``checkpoint_keys``.

        Raises:
            CheckpointLoadError: a missing, unreadable or untrusted file, or one matching no model tensor.
        """
        path, self._matching_heuristics = check_checkpoint_path(path)
        # what an earlier load recorded must not be read as this one's (an empty path loads nothing)
        self.loaded_names, self.incorrect_shapes, self.checkpoint_keys = None, [], []
        self._loading = path
        try:
            result = super().load(path, *args, **kwargs)
        finally:
            self._loading = None
            self._matching_heuristics = False
            # detectron2 after v0.6 keeps the URL being loaded here and asserts it is unset when the next
            # load starts, but does not reset it when a load raises: the resume fallback loads again
            if getattr(self, "_parsed_url_during_load", None) is not None:
                self._parsed_url_during_load = None
        self.loaded_path = path or None
        return result

    def _candidates(self) -> List[str]:
        """``last_checkpoint`` first, then every other ``*.pth`` of ``save_dir``, newest first: by modification
        time, the iteration in a periodic name (``model_final`` after every number) breaking ties. Not by the
        name alone: a run resumed with a longer ``train.max_iter`` writes periodic checkpoints after the first
        run's ``model_final.pth``."""
        last = self.get_checkpoint_file()
        others = [p for p in self.get_all_checkpoint_files() if os.path.abspath(p) != os.path.abspath(last)]

        def newest(p: str) -> Tuple[float, int]:
            m = _PERIODIC.search(p)
            final = os.path.basename(p) == "model_final.pth"
            return (os.path.getmtime(p), sys.maxsize if final else int(m.group(1)) if m else -1)

        return ([last] if last else []) + sorted(others, key=newest, reverse=True)

    def resume_or_load(self, path: str, *, resume: bool = True):
        """As Detectron2's, with the fallback of the module docstring when resuming; after a fallback, the main
        process points ``last_checkpoint`` at the checkpoint that loaded."""
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        failures = []
        for candidate in self._candidates():
            try:
                result = self.load(candidate)
            except CheckpointLoadError as e:
                failures.append(f"{candidate}: {e}")
                self.logger.warning(f"Cannot resume from {candidate} ({e}); trying an older checkpoint")
                continue
            if failures:
                self.logger.warning(f"Resumed from {candidate} instead of the last checkpoint: "
                                    + "; ".join(failures))
                if comm.is_main_process() and self.save_to_disk:
                    self.tag_last_checkpoint(os.path.basename(candidate))
            return result
        raise CheckpointLoadError(
            f"--resume: no checkpoint in {self.save_dir} loads: " + "; ".join(failures)
            + ". Delete the broken files (or the folder's last_checkpoint) to start over, or run without --resume."
        )


def ensure_final_checkpoint(checkpointer: SafeDetectionCheckpointer, iteration: int, max_iter: int) -> None:
    """After a resumed run that had nothing left to train (``iteration``, its start iteration, ``>= max_iter``),
    make sure ``model_final.pth`` exists and loads; rewrite it from the loaded state otherwise (main process
    only).

    The rewritten file records the iteration the loaded checkpoint had finished, ``iteration - 1``, for the
    checkpoint and for the trainer, so that a later ``--resume`` (say with a longer schedule) starts at
    ``iteration``. Detectron2's ``TrainerBase.train`` leaves ``trainer.iter`` at ``start_iter + 1`` after an
    empty loop, which must not be saved: a resume would then skip two iterations (or, past a shorter
    ``max_iter``, fail in the lr scheduler).
    """
    if not comm.is_main_process() or not checkpointer.save_dir or iteration < max_iter:
        return
    final = os.path.join(checkpointer.save_dir, "model_final.pth")
    try:
        load_checkpoint_file(final, checkpointer.trust_pickle)
        return
    except CheckpointLoadError as e:
        logger.warning(f"{e}; writing it again from the resumed checkpoint")
    trainer = checkpointer.checkpointables.get("trainer")
    if trainer is not None:
        trainer.iter = iteration - 1
    checkpointer.save("model_final", iteration=iteration - 1)


def keep_earlier_periodic_checkpoints(periodic, start_iter: int) -> List[str]:
    """Let a resumed run's ``PeriodicCheckpointer`` (``periodic``) count the periodic checkpoints its
    interrupted run wrote, so that ``max_to_keep`` bounds the folder as in an uninterrupted run.

    fvcore's hook deletes only files it saved itself (its ``recent_checkpoints``, empty at start), so after
    every resume the interrupted run's last ``<prefix>_NNNNNNN.pth`` stayed for good. The newest
    ``max_to_keep`` of the files numbered below ``start_iter`` (the iterations already finished) are put in
    front, oldest first; the resumed run's first save then deletes the oldest, as the interrupted run's next
    save would have. Older ones (beyond what the run itself would have kept, e.g. from a run with another
    ``max_to_keep``) and ``<prefix>_final.pth`` are never touched. Nothing happens without ``max_to_keep``
    or without a save folder. Returns the paths adopted.
    """
    keep = getattr(periodic, "max_to_keep", None)
    save_dir = getattr(periodic.checkpointer, "save_dir", "")
    if keep is None or not save_dir or not os.path.isdir(save_dir):
        return []
    pattern = re.compile(re.escape(periodic.file_prefix) + r"_(\d{7,})\.pth$")
    numbered = sorted((int(m.group(1)), name) for name in os.listdir(save_dir)
                      for m in [pattern.fullmatch(name)] if m and int(m.group(1)) < start_iter)
    adopted = [os.path.join(save_dir, name) for _, name in numbered[-keep:]]
    periodic.recent_checkpoints[:0] = [p for p in adopted if p not in periodic.recent_checkpoints]
    return adopted


def trust_pickle_requested(args, cfg) -> bool:
    """``--trust-pickle`` on the command line, or ``train.trust_pickle=True`` in the config."""
    return bool(getattr(args, "trust_pickle", False) or cfg.train.get("trust_pickle", False))


def convert_pickle_checkpoint(src: str, dst: str) -> str:
    """Read a TRUSTED Detectron2 / Caffe2 ``.pkl`` once (this unpickles it) and write a ``.pth`` holding only
    tensors, the ``__author__`` string and the ``matching_heuristics`` bool, which later loads with
    ``torch.load(weights_only=True)`` and the same name matching. Returns ``dst``."""
    checkpointer = SafeDetectionCheckpointer(torch.nn.Module(), trust_pickle=True)
    data = checkpointer._load_file(src)
    checkpointer._convert_ndarray_to_tensor(data["model"])
    out = {"model": data["model"], "__author__": str(data.get("__author__", "converted from " + src)),
           "matching_heuristics": bool(data.get("matching_heuristics", False))}
    atomic_torch_save(out, dst)
    return dst


def main(argv=None) -> int:
    """``python -m siamese_detr.engine.checkpointing SRC.pkl DST.pth``: :func:`convert_pickle_checkpoint`.
    Returns the exit status (1: the conversion failed); argparse exits with 2 for a ``SRC`` that is missing
    or not a pickle."""
    import argparse

    p = argparse.ArgumentParser(description="Convert a trusted Detectron2 .pkl checkpoint into a safe .pth once.")
    p.add_argument("src", help="the .pkl file (it is unpickled: only for files you trust)")
    p.add_argument("dst", help="the .pth to write")
    args = p.parse_args(argv)
    if not os.path.isfile(args.src):
        p.error(f"{args.src} does not exist" + (" (it is a folder)" if os.path.isdir(args.src) else ""))
    kind = checkpoint_kind(args.src)
    if kind != "pickle":
        what = {"empty": "is empty (0 bytes)", "unknown": "is not a pickle",
                "zip": "is already a PyTorch .pth (use it as train.init_checkpoint directly)"}.get(kind, f"is {kind}")
        p.error(f"{args.src} {what}: this command converts a Detectron2 / Caffe2 .pkl")
    try:
        print(f"wrote {convert_pickle_checkpoint(args.src, args.dst)}; use train.init_checkpoint={args.dst}")
    except (CheckpointLoadError, OSError, ValueError, RuntimeError, KeyError) as e:
        print(f"error: cannot convert {args.src} into {args.dst}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
