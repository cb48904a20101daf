"""Shards of one proposal generation (``--num-shards K --shard-id I``) and their merge.

Each shard writes its own store under ``OUTPUT/shards/shard-IIIII-of-KKKKK`` with a ``run.json`` saying what it
was given (dataset or folder, the digest of the whole image list, K, method, parameters); a shard that starts
next to shards of other images, another K or other settings (method, parameters) is refused, and so is a merge
of shards whose ``run.json`` differ.
The last shard to finish merges them into ``OUTPUT`` under a lock file (atomic, stale locks of dead processes
on this host are taken over). See :mod:`.generate` for the generation itself.
"""
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from typing import Dict, List, Optional, Sequence

from .store import ProposalStore, ProposalStoreError, merge_stores

__all__ = ["image_list_digest", "same_source", "shard_dir", "existing_shards", "missing_shards",
           "merge_if_complete"]

logger = logging.getLogger(__name__)


def image_list_digest(image_ids: Sequence) -> str:
    """sha1 of the image ids in order (one per line): what run.json and meta.json record of an image list."""
    return hashlib.sha1("\n".join(str(i) for i in image_ids).encode()).hexdigest()


def same_source(a, b) -> bool:
    """True when two recorded ``dataset`` values name the same images: equal strings, or absolute paths of
    the same folder (through symlinks: compared by realpath)."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and os.path.isabs(a) and os.path.isabs(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return False


def shard_dir(output: str, shard_id: int, num_shards: int) -> str:
    return os.path.join(output, "shards", f"shard-{shard_id:05d}-of-{num_shards:05d}")


_SHARD_NAME = re.compile(r"^shard-(\d{5})-of-(\d{5})$")


def existing_shards(output: str) -> Dict[int, List[int]]:
    """{K: sorted shard ids} of the shard folders under ``output/shards`` (started or finished)."""
    found: Dict[int, List[int]] = {}
    root = os.path.join(output, "shards")
    if not os.path.isdir(root):
        return found
    for name in os.listdir(root):
        m = _SHARD_NAME.match(name)
        if m and os.path.isdir(os.path.join(root, name)):
            found.setdefault(int(m.group(2)), []).append(int(m.group(1)))
    return {k: sorted(v) for k, v in sorted(found.items())}


def missing_shards(output: str, num_shards: int) -> List[int]:
    """Ids of the shards of ``num_shards`` whose store is not complete (not started, or still running)."""
    return [i for i in range(num_shards)
            if not os.path.isfile(os.path.join(shard_dir(output, i, num_shards), "meta.json"))]


def _read_run(sdir: str) -> Optional[dict]:
    try:
        with open(os.path.join(sdir, "run.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _runs_differ(a: dict, b: dict, keys) -> List[tuple]:
    """``(setting, value in a, value in b)`` for each of ``keys`` that differs between two run.json dicts (a key
    missing from either, e.g. a run.json of an older version, is not compared; ``dataset`` paths are compared
    by realpath; ``params`` by parameter, e.g. ``params.resize``, and not at all when ``method`` differs)."""
    diff = []
    for k in keys:
        if k not in a or k not in b:
            continue
        same = same_source(a[k], b[k]) if k == "dataset" else a[k] == b[k]
        if same:
            continue
        if k == "params" and a.get("method") != b.get("method") and "method" in keys:
            continue  # another method has other parameters: the method says it
        if k == "params" and isinstance(a[k], dict) and isinstance(b[k], dict):
            diff += [(f"params.{p}", a[k].get(p), b[k].get(p)) for p in sorted(set(a[k]) | set(b[k]))
                     if a[k].get(p) != b[k].get(p)]
        else:
            diff.append((_RUN_KEY_NAMES.get(k, k), a[k], b[k]))
    return diff


def _describe_diff(diff, name_a: str, name_b: str) -> str:
    """``diff`` of :func:`_runs_differ` as ``"NAME_A has method='x', NAME_B has 'y'; ..."``: each value next to
    the shard it belongs to."""
    return "; ".join(f"{name_a} has {k}={va!r}, {name_b} has {vb!r}" for k, va, vb in diff)


_RUN_KEY_NAMES = {"num_images_all": "images listed", "image_list_sha1": "image list (sha1 of the ids in order)"}

_SETTING_KEYS = ("method", "params")  # the proposals of every shard of one output are computed alike


_IMAGE_SET_KEYS = ("dataset", "num_images_all", "image_list_sha1")  # what every shard of one output shares


def _check_other_shards(output: str, run: dict) -> None:
    """Refuse to start shard ``run["shard_id"]`` next to shards of another K or of other images."""
    k = run["num_shards"]
    found = existing_shards(output)
    others = {kk: ids for kk, ids in found.items() if kk != k}
    if others:
        folders = [os.path.basename(shard_dir(output, i, kk)) for kk, ids in others.items() for i in ids]
        ks = ", ".join(f"--num-shards {kk}" for kk in others)
        raise ProposalStoreError(
            f"{os.path.join(output, 'shards')} holds shards of {ks} ({', '.join(folders[:4])}"
            f"{', ...' if len(folders) > 4 else ''}), this run asks for --num-shards {k}: every shard of one "
            "--output must use the same --num-shards. Use the same --num-shards, or another --output; if those "
            "folders are left from an abandoned run, delete them (or start the whole output again with "
            "--overwrite and no --num-shards)"
        )
    mine = json.loads(json.dumps(run))
    me = f"shard {run['shard_id']} of {k}"
    for i in found.get(k, []):
        if i == run["shard_id"]:
            continue
        sdir = shard_dir(output, i, k)
        theirs = _read_run(sdir) or {}
        _refuse_other_shard(sdir, _runs_differ(mine, theirs, _IMAGE_SET_KEYS), me, "images",
                            "be given the same --dataset / --image-dir and the same images. Use another --output "
                            "for these images")
        _refuse_other_shard(sdir, _runs_differ(mine, theirs, _SETTING_KEYS), me, "settings",
                            "compute its proposals with the same --method and method flags (--max-boxes, --seed, "
                            "--sed-model, --alpha, --beta, --ss-resize, --ss-mode). Re-run with the settings of "
                            f"{os.path.join(sdir, 'run.json')}, or use another --output for these settings")


def _refuse_other_shard(sdir: str, diff, me: str, what: str, fix: str) -> None:
    """Raise when ``diff`` (this run vs the shard in ``sdir``) is not empty: ``what`` ("images" /
    "settings") differ; ``fix`` continues "every shard of one --output must ..."."""
    if not diff:
        return
    theirs = os.path.basename(sdir)
    raise ProposalStoreError(
        f"{os.path.join(sdir, 'run.json')} was started with other {what} than this run ({me}): "
        f"{_describe_diff(diff, 'this run', theirs)}. Every shard of one --output must {fix}; or, if {sdir} is the "
        "wrong one, delete it"
    )


def _append_log(output: str, lines: Sequence[str]) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(os.path.join(output, "generate.log"), "a") as f:
        for line in lines:
            f.write(f"[{stamp}] {line}\n")


def _check_shards_match(output: str, num_shards: int) -> None:
    """Refuse to merge shards whose run.json differ in images (dataset, whole image list), K or settings."""
    first, first_dir = None, None
    for i in range(num_shards):
        sdir = shard_dir(output, i, num_shards)
        run = _read_run(sdir)
        if run is None:
            continue
        if first is None:
            first, first_dir = run, sdir
            continue
        diff = _runs_differ(run, first, _IMAGE_SET_KEYS + ("num_shards",) + _SETTING_KEYS)
        if diff:
            raise ProposalStoreError(
                f"cannot merge {output}: {os.path.join(sdir, 'run.json')} differs from "
                f"{os.path.join(first_dir, 'run.json')} ("
                f"{_describe_diff(diff, os.path.basename(sdir), os.path.basename(first_dir))}): the shards come from "
                "other images or "
                f"other settings. Run the wrong shard again with the right --dataset / --image-dir and settings and "
                f"--overwrite (--num-shards {num_shards} --shard-id I), or use another --output"
            )


def merge_if_complete(output: str, num_shards: int, keep_shards: bool = False) -> Optional[str]:
    """Merge the shard stores into ``output`` once all ``num_shards`` are complete; None if some are missing
    (:func:`missing_shards` names them) or another process holds the merge lock.

    Raises:
        ProposalStoreError: the shards do not belong together (other images, K or settings), or none of their
            images could be read.
    """
    if os.path.isfile(os.path.join(output, "meta.json")):
        return output
    dirs = [shard_dir(output, i, num_shards) for i in range(num_shards)]
    if missing_shards(output, num_shards):
        return None
    _check_shards_match(output, num_shards)
    lock = os.path.join(output, ".merge.lock")
    if not _acquire_lock(lock):
        return None
    try:
        if os.path.isfile(os.path.join(output, "meta.json")):  # merged by the owner of a stale lock
            return output
        if sum(len(ProposalStore.open(d, validate=False)) for d in dirs) == 0:
            raise ProposalStoreError(
                f"none of the images of the {num_shards} shards could be read: no store was written "
                f"(see {os.path.join(output, 'generate.log')}). After fixing the images, run every shard again "
                "with --overwrite"
            )
        merge_stores(dirs, output)
        _append_log(output, [f"merged {num_shards} shard(s) into {output}"])
        if not keep_shards:
            for d in dirs:  # only the merged shards: never folders of another K
                shutil.rmtree(d, ignore_errors=True)
            try:
                os.rmdir(os.path.join(output, "shards"))
            except OSError:
                pass  # not empty
    finally:
        os.remove(lock)
    return output


def _lock_owner(lock: str) -> Optional[dict]:
    try:
        with open(lock) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _acquire_lock(lock: str) -> bool:
    """Create ``lock`` holding ``{"host", "pid"}`` atomically (a hard link of a finished temporary file).
    A lock whose owner is a dead process of this host is stale: it is removed (with a warning) and taken."""
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    tmp = f"{lock}.{me['host']}.{me['pid']}.tmp"
    with open(tmp, "w") as f:
        json.dump(me, f)
    try:
        for _ in range(2):
            try:
                os.link(tmp, lock)
                return True
            except FileExistsError:
                owner = _lock_owner(lock)
                if owner is None or owner.get("host") != me["host"] or _pid_alive(int(owner.get("pid", -1))):
                    where = "" if owner is None else f" (held by pid {owner.get('pid')} on {owner.get('host')})"
                    logger.warning(
                        "%s exists%s: another process is merging; if it died on another machine, delete the "
                        "lock and run again with --merge", lock, where,
                    )
                    return False
                logger.warning("%s was left by pid %s, which is gone (killed during a merge?): taking it over",
                               lock, owner.get("pid"))
                os.remove(lock)
        return False
    finally:
        os.remove(tmp)
