"""Export a proposal store to (and import it from) Detectron2's precomputed-proposal file.

Detectron2's format (``detectron2.data.build.load_proposals_into_dataset``) is a *pickled* dict::

    {"ids": list[str | int], "boxes": list[float32 [K, 4]], "objectness_logits": list[float32 [K]],
     "bbox_mode": BoxMode.XYXY_ABS}

Export writes it with ``pickle.dump`` (its only form). Import must unpickle, which can execute arbitrary code
from the file, so :func:`import_detectron2` refuses unless the caller passes ``allow_pickle=True`` (CLI:
``--trust-pickle``) for a file it trusts.
"""

from __future__ import annotations

import pickle
from typing import Dict, Optional, Tuple

import numpy as np

from .store import ProposalStore, write_store

__all__ = ["export_detectron2", "import_detectron2"]


def export_detectron2(store, output_file: str) -> str:
    """Write ``store`` (a :class:`ProposalStore` or its path) as a Detectron2 proposal file (XYXY_ABS).

    Store scores are non-increasing per image, so Detectron2's ``argsort()[::-1]`` keeps our order
    (ties aside).
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
    with open(output_file, "wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
    return output_file


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
            from its dicts. Without either, sizes are recorded as unknown (-1) and only box order/finiteness
            is validated.
    Boxes are sorted by descending objectness (as Detectron2 does when loading) and converted to XYXY_ABS.
    """
    if not allow_pickle:
        raise ValueError(
            f"{proposal_file} is a pickle file; loading a pickle can execute arbitrary code. Pass "
            "allow_pickle=True (CLI: --trust-pickle) only if you trust where the file comes from."
        )
    from detectron2.structures import BoxMode

    with open(proposal_file, "rb") as f:
        payload = pickle.load(f, encoding="latin1")  # explicit opt-in above
    payload = dict(payload)
    for old, new in (("indexes", "ids"), ("scores", "objectness_logits")):  # Detectron1 key names
        if old in payload:
            payload[new] = payload.pop(old)
    mode = BoxMode(payload.get("bbox_mode", BoxMode.XYXY_ABS))
    if dataset is not None and image_sizes is None:
        from detectron2.data import DatasetCatalog

        image_sizes = {
            str(d["image_id"]): (int(d["height"]), int(d["width"])) for d in DatasetCatalog.get(dataset)
        }
    ids = [str(i) for i in payload["ids"]]
    all_boxes, all_scores = [], []
    for b, s in zip(payload["boxes"], payload["objectness_logits"]):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        s = np.asarray(s, np.float32).reshape(-1)
        if mode != BoxMode.XYXY_ABS:
            b = BoxMode.convert(b, mode, BoxMode.XYXY_ABS)
        order = np.argsort(-s, kind="stable")
        all_boxes.append(np.asarray(b, np.float32)[order])
        all_scores.append(s[order])
    sizes = [tuple(image_sizes.get(i, (-1, -1))) for i in ids] if image_sizes else None
    write_store(
        output,
        ids,
        all_boxes,
        all_scores,
        sizes,
        method=method,
        params={"source_file": str(proposal_file)},
        dataset=dataset,
    )
    return ProposalStore.open(output)
