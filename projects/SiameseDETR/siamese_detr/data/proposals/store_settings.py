"""Whether a complete proposal store was made with the settings a command of ``tools/generate_proposals.py`` asks
for: method, method parameters and images (another dataset or folder, or one that now lists other images).

A store's ``meta.json`` records them (``method``, ``params``, ``dataset``, ``image_list``); a store made otherwise
is refused by the tool unless ``--overwrite`` is given.
"""

import json
import os

from .detectron2_format import import_params
from .generate import image_list_digest, same_source
from .generate_arguments import method_params
from .store import ProposalStoreError


def read_meta(final_meta: str) -> dict:
    """The complete store's meta.json; a :class:`ProposalStoreError` naming the fix when it cannot be read."""
    try:
        with open(final_meta) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ProposalStoreError(f"cannot read {final_meta} ({e}): the store is corrupt; pass --overwrite to "
                                 "regenerate it, or choose another --output") from None


def image_list_differs(output: str, meta: dict, records, source: str):
    """How the images listed now differ from those the store was made from (None if the same set).

    The store's meta.json records the digest of the listed ids (``image_list``); a store made before it was
    recorded, or one whose list was reordered, is compared by its ids (stored + skipped as unreadable)."""
    listed = [r["image_id"] for r in records]
    recorded = meta.get("image_list")
    if isinstance(recorded, dict) and recorded.get("sha1") == image_list_digest(listed):
        return None
    try:
        with open(os.path.join(output, "image_ids.json")) as f:
            have = {str(i) for i in json.load(f)}
    except (OSError, ValueError):
        return None  # a corrupt store: opening it says so
    have |= {str(s.get("image_id")) for s in meta.get("skipped", [])}
    now = set(listed)
    if have == now:
        return None
    added, gone = sorted(now - have), sorted(have - now)
    parts = [f"{len(ids)} {what}, first: {ids[:3]}" for ids, what in ((added, "new"), (gone, "gone")) if ids]
    return f"the store was made from {len(have)} images, {source} lists {len(now)} now ({'; '.join(parts)})"


def settings_differ(args, final_meta: str, records):
    """Which of method / params / images differ between the complete store and this command (None if same).
    Images: another dataset or folder (a symlink to the same folder is the same), or the folder / dataset
    now lists other image ids."""
    if args.merge or not (args.dataset or args.image_dir):
        return None
    meta = read_meta(final_meta)
    wanted = {"method": args.method, "params": method_params(args),
              "images": args.dataset or os.path.abspath(args.image_dir)}
    have = {"method": meta.get("method"), "params": meta.get("params"), "images": meta.get("dataset")}
    diff = [f"{k}: store {have[k]!r}, asked {wanted[k]!r}" for k in ("method", "params")
            if json.loads(json.dumps(wanted[k])) != have[k]]
    if not same_source(have["images"], wanted["images"]):
        diff.append(f"images: store {have['images']!r}, asked {wanted['images']!r}")
    else:
        changed = image_list_differs(args.output, meta, records, args.dataset or args.image_dir)
        if changed:
            diff.append(f"images: {changed}")
    return "; ".join(diff) or None


def import_settings_differ(args, final_meta: str):
    """``--import-detectron2``: which of method / params (the file imported) / dataset differ between the
    complete store and this command (None if it holds this import already)."""
    meta = read_meta(final_meta)
    wanted = {"method": "detectron2_import", "params": import_params(args.import_detectron2), "dataset": args.dataset}
    have = {k: meta.get(k) for k in wanted}
    same = (have["method"] == wanted["method"] and have["dataset"] == wanted["dataset"]
            and isinstance(have["params"], dict)
            and same_source(os.path.abspath(str(have["params"].get("source_file"))),
                            os.path.abspath(wanted["params"]["source_file"])))
    if same:
        return None
    return "; ".join(f"{k}: store {have[k]!r}, asked {wanted[k]!r}" for k in wanted if have[k] != wanted[k])
