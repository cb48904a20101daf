"""Export a proposal store to (and import it from) Detectron2's precomputed-proposal file.

Detectron2's format (``detectron2.data.build.load_proposals_into_dataset``) is a *pickled* dict::

    {"ids": list[str | int], "boxes": list[float32 [K, 4]], "objectness_logits": list[float32 [K]],
     "bbox_mode": BoxMode.XYXY_ABS}

Export writes it with ``pickle.dump`` (its only form). Import must unpickle, which can execute arbitrary code
from the file, so :func:`import_detectron2` refuses unless the caller passes ``allow_pickle=True`` (CLI:
``--trust-pickle``) for a file it trusts. The file is validated (boxes; with a dataset, its ids and image
sizes) before anything is written (:func:`read_detectron2`, then :func:`write_imported`).
"""

from __future__ import annotations

import filecmp
import os
import pickle
from typing import Dict, Optional, Tuple

import numpy as np

from .store import _BOX_TOLERANCE, ProposalStore, write_store
from ...utils.user_errors import UserValueError

__all__ = ["export_detectron2", "import_detectron2", "read_detectron2", "write_imported", "import_params"]


def export_detectron2(store, output_file: str, keep_other: bool = False) -> str:
    """Write ``store`` (a :class:`ProposalStore` or its path) as a Detectron2 proposal file (XYXY_ABS).

    Store scores are non-increasing per image, so Detectron2's ``argsort()[::-1]`` keeps our order
    (ties aside). Written to ``output_file + ".tmp"``, then renamed: a failed write leaves no partial file.
    With ``keep_other``, an existing ``output_file`` is left as it is: when its bytes are those of this export
    (a finished command run again) nothing is written, otherwise UserValueError names it.
    """
    from detectron2.structures import BoxMode

    if not isinstance(store, ProposalStore):
        store = ProposalStore.open(store)
    boxes, logits = [], []
    for image_id in store.image_ids:
        b, s = store.get(image_id)
        boxes.append(b)
        logits.append(s)
    payload = {
        "ids": list(store.image_ids),
        "boxes": boxes,
        "objectness_logits": logits,
        "bbox_mode": BoxMode.XYXY_ABS,
    }
    tmp = f"{output_file}.tmp"  # as the store's json files: a failed write leaves no half file at output_file
    try:
        with open(tmp, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        if keep_other and os.path.exists(output_file):
            same = os.path.isfile(output_file) and filecmp.cmp(tmp, output_file, shallow=False)
            os.remove(tmp)
            if not same:
                raise UserValueError(
                    f"{output_file!r} exists already with other content and is kept: delete it or choose another path"
                )
            return output_file
        os.replace(tmp, output_file)
    except BaseException:
        if os.path.isfile(tmp):
            os.remove(tmp)
        raise
    return output_file


def read_detectron2(
    proposal_file: str,
    allow_pickle: bool = False,
    image_sizes: Optional[Dict[str, Tuple[int, int]]] = None,
    dataset: Optional[str] = None,
) -> dict:
    """Unpickle and validate a Detectron2 proposal file; nothing is written.

    Returns ``{"ids", "boxes", "scores", "sizes"}`` ready for :func:`write_store` (boxes XYXY_ABS float32 sorted
    by descending objectness, as Detectron2 does when loading; sizes None when unknown).

    Raises:
        ValueError: no ``allow_pickle``, not a proposal file, invalid boxes, or (given ``dataset`` or
            ``image_sizes``) ids or image sizes that do not match the dataset.
    """
    if not allow_pickle:
        raise UserValueError(
            f"{proposal_file} is a pickle file; loading a pickle can execute arbitrary code. Pass "
            "allow_pickle=True (CLI: --trust-pickle) only if you trust where the file comes from."
        )
    from detectron2.structures import BoxMode

    with open(proposal_file, "rb") as f:
        try:
            payload = pickle.load(f, encoding="latin1")  # explicit opt-in above
        except (pickle.UnpicklingError, EOFError) as e:
            raise UserValueError(f"{proposal_file} is not a Detectron2 proposal file (not a readable pickle: "
                                 f"{type(e).__name__}: {e})") from None
    if not isinstance(payload, dict):
        raise UserValueError(f"{proposal_file} is not a Detectron2 proposal file (a dict with ids, boxes, "
                             f"objectness_logits), it holds a {type(payload).__name__}")
    payload = dict(payload)
    for old, new in (("indexes", "ids"), ("scores", "objectness_logits")):  # Detectron1 key names
        if old in payload:
            payload[new] = payload.pop(old)
    absent = [k for k in ("ids", "boxes", "objectness_logits") if k not in payload]
    if absent:
        raise UserValueError(f"{proposal_file} is not a Detectron2 proposal file: no {', '.join(absent)} (it has "
                             f"{sorted(map(str, payload))[:8]})")
    mode = BoxMode(payload.get("bbox_mode", BoxMode.XYXY_ABS))
    ids = [str(i) for i in payload["ids"]]
    if not len(ids) == len(payload["boxes"]) == len(payload["objectness_logits"]):
        raise UserValueError(f"{proposal_file}: {len(ids)} ids, {len(payload['boxes'])} box lists and "
                             f"{len(payload['objectness_logits'])} score lists: they must have one entry per image")
    if len(set(ids)) != len(ids):
        raise UserValueError(f"{proposal_file}: {len(ids) - len(set(ids))} image ids occur more than once")
    if dataset is not None and image_sizes is None:
        image_sizes = _dataset_sizes(proposal_file, ids, dataset)
    all_boxes, all_scores = [], []
    for image_id, b, s in zip(ids, payload["boxes"], payload["objectness_logits"]):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        s = np.asarray(s, np.float32).reshape(-1)
        if len(b) != len(s):
            raise UserValueError(f"{proposal_file}: image {image_id!r} has {len(b)} boxes but {len(s)} scores")
        if mode != BoxMode.XYXY_ABS:
            b = BoxMode.convert(b, mode, BoxMode.XYXY_ABS)
        order = np.argsort(-s, kind="stable")
        all_boxes.append(np.asarray(b, np.float32)[order])
        all_scores.append(s[order])
    sizes = [tuple(image_sizes.get(i, (-1, -1))) for i in ids] if image_sizes else None
    _validate_boxes(proposal_file, ids, all_boxes, all_scores, sizes, dataset)
    return {"ids": ids, "boxes": all_boxes, "scores": all_scores, "sizes": sizes}


def _dataset_sizes(proposal_file: str, ids, dataset: str) -> Dict[str, Tuple[int, int]]:
    """{id: (height, width)} of ``dataset``; its ids and the file's must be the same set."""
    from detectron2.data import DatasetCatalog

    dicts = DatasetCatalog.get(dataset)
    known = {str(d["image_id"]) for d in dicts}
    extra = [i for i in ids if i not in known]
    absent = sorted(known - set(ids))
    if extra or absent:
        parts = []
        if extra:
            parts.append(f"{len(extra)} of its {len(ids)} ids are not images of the dataset (first: {extra[:5]})")
        if absent:
            parts.append(f"{len(absent)} of the dataset's {len(known)} images have no entry (first: {absent[:5]})")
        raise UserValueError(
            f"{proposal_file}: the ids do not match dataset {dataset!r}: {'; '.join(parts)}. The file was made for "
            "another dataset: give the --dataset it was made for (or none, and sizes are recorded as unknown)"
        )
    return {str(d["image_id"]): (int(d["height"]), int(d["width"])) for d in dicts if "height" in d and "width" in d}


def _validate_boxes(proposal_file, ids, boxes, scores, sizes, dataset) -> None:
    """The checks :meth:`ProposalStore.validate` applies, before anything is written."""
    bad_box, outside = [], []
    for k, (image_id, b, s) in enumerate(zip(ids, boxes, scores)):
        if not len(b):
            continue
        wrong = (~np.isfinite(b).all(1) | ~np.isfinite(s) | (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
                 | (b[:, :2] < -_BOX_TOLERANCE).any(1))
        if wrong.any():
            bad_box.append((image_id, b[int(np.flatnonzero(wrong)[0])].tolist()))
            continue
        h, w = sizes[k] if sizes else (-1, -1)
        if h > 0 and w > 0:
            out = (b[:, 2] > w + _BOX_TOLERANCE) | (b[:, 3] > h + _BOX_TOLERANCE)
            if out.any():
                outside.append((image_id, b[int(np.flatnonzero(out)[0])].tolist(), (h, w)))
    if bad_box:
        raise UserValueError(
            f"{proposal_file}: {len(bad_box)} images have invalid boxes (non-finite, x2 < x1 / y2 < y1, or negative); "
            f"first: image {bad_box[0][0]!r} box {bad_box[0][1]}"
        )
    if outside:
        where = f"dataset {dataset!r}" if dataset else "the given image sizes"
        raise UserValueError(
            f"{proposal_file}: the image sizes do not match {where}: boxes of {len(outside)} images lie outside "
            f"the image (first: image {outside[0][0]!r} box {outside[0][1]}, (height, width) = {outside[0][2]}). "
            "The file was made for another dataset or for resized images: give the --dataset it was made for"
        )


def import_detectron2(
    proposal_file: str,
    output: str,
    allow_pickle: bool = False,
    image_sizes: Optional[Dict[str, Tuple[int, int]]] = None,
    dataset: Optional[str] = None,
    method: str = "detectron2_import",
) -> ProposalStore:
    """Convert a Detectron2 proposal file into a store at ``output`` and open it.

    Args:
        allow_pickle: must be True: the file is a pickle, and unpickling an untrusted file runs its code.
        image_sizes: {str(image_id): (height, width)}; or ``dataset`` = a registered dataset name to read them
            from its dicts (its ids must be the file's). Without either, sizes are recorded as unknown (-1) and
            only box order/finiteness is validated.
    Boxes are sorted by descending objectness (as Detectron2 does when loading) and converted to XYXY_ABS.
    The file is read and validated before anything is written (:func:`read_detectron2`); meta.json is written
    last and removed again if the written store does not open, so a failed import never looks complete.
    """
    data = read_detectron2(proposal_file, allow_pickle=allow_pickle, image_sizes=image_sizes, dataset=dataset)
    return write_imported(data, output, proposal_file, dataset=dataset, method=method)


def import_params(proposal_file: str) -> dict:
    """The ``params`` an import records in meta.json."""
    return {"source_file": str(proposal_file)}


def write_imported(data: dict, output: str, proposal_file: str, dataset: Optional[str] = None,
                   method: str = "detectron2_import") -> ProposalStore:
    """Write what :func:`read_detectron2` returned as a store at ``output`` and open it."""
    write_store(
        output,
        data["ids"],
        data["boxes"],
        data["scores"],
        data["sizes"],
        method=method,
        params=import_params(proposal_file),
        dataset=dataset,
    )
    try:
        return ProposalStore.open(output)
    except BaseException:
        meta = os.path.join(output, "meta.json")
        if os.path.exists(meta):
            os.remove(meta)  # not a complete store
        raise
