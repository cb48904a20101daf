"""Behaviours a mutation review found without a test: the start-up store check's message when training images
are among the store's skipped (unreadable) ones; ``tools/visualize_views.py --seed`` reaching both the image
order and the mapper's draws; ``tools/generate_proposals.py``'s image-list comparison for stores written
before ``meta.json`` recorded ``image_list``; the range of the SimSiam views' scale and shift jitter."""
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from script_modules import forget_datasets, load_script

from siamese_detr.data.proposals import ProposalStoreError
from siamese_detr.data.proposals.shards import image_list_digest
from siamese_detr.data.proposals.store import write_store
from siamese_detr.data.proposals.store_settings import image_list_differs

ROOT = Path(__file__).resolve().parents[1]
KEY = "dataloader.train.mapper.proposal_source"


# ------------------------------------------------------------------ 1. training images the store skipped
@pytest.fixture
def catalog():
    """``register(name, records)`` into detectron2's catalog; every name registered is removed afterwards."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = []

    def register(name, records):
        names.append(name)
        DatasetCatalog.register(name, lambda: [dict(r) for r in records])
        MetadataCatalog.get(name)  # forget_datasets removes both
        return name

    yield register
    forget_datasets(names)


def _records(ids, size=(20, 30)):
    return [{"file_name": f"/imgs/{i}.jpg", "image_id": i, "height": size[0], "width": size[1]} for i in ids]


def _store_check(tmp_path, register, training):
    """A store of the set ``{a, b, bad}`` (``bad`` recorded as skipped, unreadable at generation), each 20 x 30,
    checked against that set while training reads ``training`` (records): ``check_proposal_store``'s error
    message, or None when it passes."""
    from omegaconf import OmegaConf

    from siamese_detr.engine.pretrain_checks import check_proposal_store

    made_for = register(f"mutl_store_set_{tmp_path.name}", _records(["a", "b", "bad"]))
    trained = register(f"mutl_training_{tmp_path.name}", training)
    path = str(tmp_path / "mutl.edgeboxes.proposals")
    box = np.array([[2.0, 3.0, 12.0, 15.0]], np.float32)
    write_store(path, ["a", "b"], [box, box], [np.ones(1, np.float32)] * 2, sizes=[(20, 30), (20, 30)],
                method="edgeboxes", dataset=made_for,
                skipped=[{"image_id": "bad", "file_name": "/imgs/elsewhere/bad_file.jpg", "reason": "cannot decode"}])
    cfg = OmegaConf.create({"dataloader": {"train": {
        "dataset": {"names": trained},
        "mapper": {"proposal_source": {"_target_": "siamese_detr.data.proposals.sources.StoreProposals",
                                       "path": path, "dataset": made_for}}}}})
    try:
        check_proposal_store(cfg)
    except ProposalStoreError as err:
        return str(err), made_for, trained, path
    return None, made_for, trained, path


def test_skipped_training_images_are_not_counted_as_missing(tmp_path, catalog):
    """Training reads ``bad`` (skipped by the generator: it has no proposals on purpose), ``c`` and ``d``
    (never seen by the store): 2 images are missing, the first ``['c', 'd']`` in the dataset's order; ``bad``
    is neither counted nor named. The message says which keys to set and the command for a new store."""
    message, made_for, trained, path = _store_check(tmp_path, catalog, _records(["bad", "c", "d"]))
    assert message is not None
    assert (f"the proposal store {path} ({KEY}.path) is the store of {KEY}.dataset={made_for}, but training reads "
            f"dataloader.train.dataset.names={trained}, and 2 of its images are not in the store (first: "
            "['c', 'd']). ") in message
    assert f"Point {KEY}.path to a store of the training images and set {KEY}.dataset={trained}" in message
    assert (f"python tools/generate_proposals.py --dataset {trained} --method edgeboxes --output NEW_STORE"
            in message)
    assert "'bad'" not in message


def test_skipped_and_resized_training_images_get_the_stores_own_size_message(tmp_path, catalog):
    """Training reads ``bad`` (skipped) and ``a`` at 25 x 30 (the store has it at 20 x 30): no image is missing,
    so the store's own message says what differs (which image, both sizes) and what to do, instead of
    calling ``bad`` missing."""
    training = _records(["bad"]) + _records(["a"], size=(25, 30))
    message, made_for, trained, path = _store_check(tmp_path, catalog, training)
    assert message is not None and "are not in the store" not in message
    assert (f"{os.path.join(path, 'sizes.npy')}: 1 images differ in size from dataset {trained!r} (first: id, "
            "store (h, w), dataset (h, w) = ('a', (20, 30), (25, 30)))") in message
    assert (f"keep it (it is the store of {made_for!r}) and generate one for {trained} into a new folder: "
            f"tools/generate_proposals.py --dataset {trained} --method edgeboxes --output NEW_STORE") in message


def test_training_images_all_stored_or_skipped_pass(tmp_path, catalog):
    message, *_ = _store_check(tmp_path, catalog, _records(["bad", "a"]))
    assert message is None


# ------------------------------------------------------------------ 2. visualize_views --seed
@pytest.fixture(scope="module")
def views_tool():
    return load_script(ROOT / "tools" / "visualize_views.py", "visualize_views_mutl")


def _folder(root, count):
    """``count`` 64 x 80 images of coloured rectangles (edges for the online EdgeBoxes), ``im0.png`` ..."""
    rng = np.random.default_rng(7)
    os.makedirs(root)
    for i in range(count):
        image = np.full((64, 80, 3), 40, np.uint8)
        for _ in range(6):
            x, y = (int(v) for v in rng.integers(0, (60, 44)))
            w, h = (int(v) for v in rng.integers(8, 20, 2))
            cv2.rectangle(image, (x, y), (x + w, y + h), tuple(int(c) for c in rng.integers(80, 255, 3)), -1)
        cv2.imwrite(os.path.join(root, f"im{i}.png"), image)
    return f"folder:{root}"


def _draw(tool, dataset, out, seed, num):
    assert tool.main(["--dataset", dataset, "--num-samples", str(num), "--output", str(out),
                      "--seed", str(seed)]) == 0
    return sorted(os.listdir(out))


def test_the_seed_reaches_the_views(tmp_path, views_tool):
    """One image, one sample: only the mapper's draws can differ. The same --seed draws the same views (the
    same picture, byte for byte); other seeds draw other views."""
    dataset = _folder(str(tmp_path / "one"), 1)
    try:
        pictures = {}
        for run, seed in enumerate([5, 5, 6, 7]):
            [name] = _draw(views_tool, dataset, tmp_path / f"out{run}", seed, 1)
            assert name == "views_000_im0.png"
            pictures[run] = (tmp_path / f"out{run}" / name).read_bytes()
    finally:
        forget_datasets([dataset])
    assert pictures[0] == pictures[1]
    assert len({pictures[0], pictures[2], pictures[3]}) == 3


def test_the_seed_picks_the_order_of_the_images(tmp_path, views_tool):
    """Four images, all drawn: the files name them in the order drawn. The same --seed gives the same order;
    over seeds 0..5 the first image drawn is not always the same one (the order comes from the seed)."""
    dataset = _folder(str(tmp_path / "four"), 4)
    try:
        orders = {}
        for seed in range(6):
            names = _draw(views_tool, dataset, tmp_path / f"out{seed}", seed, 4)
            assert [n[:10] for n in names] == [f"views_{k:03d}_" for k in range(4)]
            orders[seed] = [n[10:] for n in names]
            assert sorted(orders[seed]) == [f"im{i}.png" for i in range(4)]  # each image once
        again = _draw(views_tool, dataset, tmp_path / "again", 3, 4)
    finally:
        forget_datasets([dataset])
    assert [n[10:] for n in again] == orders[3]
    assert len({order[0] for order in orders.values()}) > 1


# ------------------------------------------------------------------ 3. stores without image_list in meta.json
def _old_store(tmp_path, keep_image_list=False):
    """A store of ``a.png``, ``b.png`` (stored) and ``c.png`` (skipped as unreadable), written by the project's
    writer with the ``image_list`` the generator records; then, unless kept, that key removed as in a store
    made before it was recorded. Returns (folder, meta.json as read back)."""
    out = str(tmp_path / "store")
    box = np.array([[1.0, 1.0, 5.0, 5.0]], np.float32)
    write_store(out, ["a.png", "b.png"], [box, box], [np.ones(1, np.float32)] * 2, sizes=[(8, 8), (8, 8)],
                method="random", dataset="/imgs",
                skipped=[{"image_id": "c.png", "file_name": "/imgs/other_name.png", "reason": "cannot decode"}],
                image_list={"num_images": 3, "sha1": image_list_digest(["a.png", "b.png", "c.png"])})
    meta_file = os.path.join(out, "meta.json")
    meta = json.load(open(meta_file))
    if not keep_image_list:
        del meta["image_list"]
        json.dump(meta, open(meta_file, "w"))
    return out, json.load(open(meta_file))


def _listed(*ids):
    return [{"image_id": i, "file_name": f"/imgs/{i}"} for i in ids]


def test_an_old_store_counts_its_skipped_images_and_ignores_the_order(tmp_path):
    """No ``image_list``: the store is compared by its ids, stored and skipped: the same three images, in any
    order, are the same set."""
    out, meta = _old_store(tmp_path)
    assert "image_list" not in meta
    assert image_list_differs(out, meta, _listed("a.png", "b.png", "c.png"), "/imgs") is None
    assert image_list_differs(out, meta, _listed("c.png", "a.png", "b.png"), "/imgs") is None


def test_an_old_store_names_the_new_and_the_gone_images(tmp_path):
    """Store set {a, b, c (skipped)}. Listed {a, d, e, f, g}: 4 new (first three d, e, f), 2 gone (b, c)."""
    out, meta = _old_store(tmp_path)
    assert image_list_differs(out, meta, _listed("g.png", "a.png", "f.png", "e.png", "d.png"), "/imgs") == (
        "the store was made from 3 images, /imgs lists 5 now (4 new, first: ['d.png', 'e.png', 'f.png']; 2 gone, "
        "first: ['b.png', 'c.png'])")
    assert image_list_differs(out, meta, _listed("a.png", "b.png"), "/imgs") == (
        "the store was made from 3 images, /imgs lists 2 now (1 gone, first: ['c.png'])")


def test_a_recorded_image_list_reordered_is_compared_by_its_ids(tmp_path):
    """With ``image_list`` recorded: the same ids in another order (another sha1) are still the same images;
    a new one is named."""
    out, meta = _old_store(tmp_path, keep_image_list=True)
    assert image_list_differs(out, meta, _listed("a.png", "b.png", "c.png"), "/imgs") is None
    assert image_list_differs(out, meta, _listed("b.png", "c.png", "a.png"), "/imgs") is None
    assert image_list_differs(out, meta, _listed("a.png", "b.png", "c.png", "n.png"), "/imgs") == (
        "the store was made from 3 images, /imgs lists 4 now (1 new, first: ['n.png'])")


# ------------------------------------------------------------------ 4. SimSiam views' jitter range
def test_simsiam_view_scale_and_shift_cover_exactly_the_documented_range(monkeypatch):
    """``region_scale=(1, 1)`` on a 100 x 100 image fixes the region: side 100, centre (50, 50). Each view is
    then a square of side ``100 * exp(u)``, u in [-0.2, 0.2] (0.8187 .. 1.2214 x 100), centred at
    ``50 + 100 * v`` on each axis, v in [-0.2, 0.2]. Over 2000 pairs (4000 views) the draws stay inside those
    bounds and come within 0.5% of both ends; the two views of a pair are drawn independently."""
    from siamese_detr.demo import backbone_pretrain as bp

    boxes = []

    def cut(image, box, size, flip=False):
        boxes.append(np.asarray(box, np.float64))
        return np.zeros((size, size, 3), np.uint8)

    monkeypatch.setattr(bp, "_cut", cut)
    jitter = 0.2
    v1, v2 = bp.simsiam_pairs(np.random.default_rng(0), [np.zeros((100, 100, 3), np.uint8)], 2000, 4,
                              (1.0, 1.0), jitter, 0.0)
    assert v1.shape == v2.shape == (2000, 4, 4, 3) and len(boxes) == 4000
    b = np.stack(boxes)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    assert np.allclose(w, h)  # square views
    scale = w / 100
    lo, hi = math.exp(-jitter), math.exp(jitter)  # 0.81873, 1.22140
    assert scale.min() >= lo - 1e-9 and scale.max() <= hi + 1e-9
    assert scale.min() < lo * 1.005 and scale.max() > hi / 1.005
    for centre in ((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2):
        shift = (centre - 50) / 100
        assert shift.min() >= -jitter - 1e-9 and shift.max() <= jitter + 1e-9
        assert shift.min() < -jitter + 0.002 and shift.max() > jitter - 0.002
    # independent views: the ratio of the two sizes of a pair spans well beyond one view's own range
    ratio = scale[0::2] / scale[1::2]
    assert ratio.min() < 0.75 and ratio.max() > 1 / 0.75
    assert np.abs(b[0::2, 0] - b[1::2, 0]).max() > 30


def test_the_unreadable_warning_names_the_datasets_own_skipped_images(tmp_path, catalog, caplog):
    """The store skipped ``bad``: a dataset with ``bad`` is warned of 1 image, named with its file and reason
    and what to do; a dataset without it (another set the same store serves) gets no such warning."""
    import logging

    with caplog.at_level(logging.WARNING, logger="siamese_detr.data.proposals.store"):
        message, made_for, trained, path = _store_check(tmp_path, catalog, _records(["a"]))
    assert message is None
    warned = [r.getMessage() for r in caplog.records if "unreadable at generation time" in r.getMessage()]
    assert warned == [
        f"{path}: 1 images of dataset {made_for!r} were unreadable at generation time and have no proposals "
        "(first: bad (/imgs/elsewhere/bad_file.jpg: cannot decode)); training skips them. To use them, replace "
        "the files and regenerate the store (--overwrite)"]
