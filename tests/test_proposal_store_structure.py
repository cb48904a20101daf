"""Proposal store: each array file with the wrong dtype or shape is refused naming that file and what it should
hold, and the sampled validation of a large store checks exactly ``sample_images`` distinct images; meta.json's
image count must be the ids' count; the chunked writer refuses counts that do not add up."""
import json
import os
import shutil

import numpy as np
import pytest

from siamese_detr.data.proposals import ProposalStore, ProposalStoreError, write_store
from siamese_detr.data.proposals.store import StoreWriter
from test_proposal_store import _fake


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory):
    ids, boxes, scores, sizes = _fake()
    path = str(tmp_path_factory.mktemp("stores") / "clean.proposals")
    write_store(path, ids, boxes, scores, sizes, method="edgeboxes", params={"max_boxes": 8}, dataset="toy")
    return path, len(ids), sum(len(b) for b in boxes)


def _corrupted_copy(clean, tmp_path, file, change):
    path = str(tmp_path / "corrupt.proposals")
    shutil.copytree(clean, path)
    np.save(os.path.join(path, file), change(np.load(os.path.join(path, file))))
    return path


CORRUPTIONS = [  # (file, change, the message after "<file>: ", with n = images, t = boxes)
    ("offsets.npy", lambda a: a.astype(np.float64), "expected an integer array of shape ({n1},), got float64 ({n1},)"),
    ("offsets.npy", lambda a: a[:-1], "expected an integer array of shape ({n1},), got int64 ({n},)"),
    ("offsets.npy", lambda a: a + 1, "offsets must start at 0 and be non-decreasing"),
    ("boxes.npy", lambda a: a.astype(np.float64), "expected float32 ({t}, 4), got float64 ({t}, 4)"),
    ("boxes.npy", lambda a: a[:, :3], "expected float32 ({t}, 4), got float32 ({t}, 3)"),
    ("scores.npy", lambda a: a[:-1], "expected float32 ({t},), got float32 ({t1},)"),
    ("scores.npy", lambda a: a.astype(np.float16), "expected float32 ({t},), got float16 ({t},)"),
    ("sizes.npy", lambda a: a[:-1], "expected shape ({n}, 2), got ({n_1}, 2)"),
]


@pytest.mark.parametrize("file, change, what", CORRUPTIONS, ids=[f"{c[0]}-{i}" for i, c in enumerate(CORRUPTIONS)])
def test_an_array_of_the_wrong_dtype_or_shape_is_named(clean_store, tmp_path, file, change, what):
    clean, n, t = clean_store
    path = _corrupted_copy(clean, tmp_path, file, change)
    with pytest.raises(ProposalStoreError) as err:
        ProposalStore.open(path)
    expected = what.format(n=n, n1=n + 1, n_1=n - 1, t=t, t1=t - 1)
    assert str(err.value).startswith(f"{os.path.join(path, file)}: {expected}; regenerate it")


def test_the_sampled_validation_checks_exactly_the_requested_number_of_images(tmp_path):
    """8 images of 2 boxes each; one invalid box (NaN) in image i, for each i in turn: the full check finds
    every one; a check of 3 sampled images finds it for exactly 3 of the 8 images."""
    n = 8
    ids = [f"im{i}" for i in range(n)]
    boxes = [np.array([[1, 1, 5, 5], [2, 2, 9, 9]], np.float32) for _ in range(n)]
    scores = [np.array([0.9, 0.1], np.float32) for _ in range(n)]
    path = str(tmp_path / "s.proposals")
    write_store(path, ids, boxes, scores, [(10, 10)] * n, method="edgeboxes", params={}, dataset="toy")
    ProposalStore.open(path).validate(full=False, sample_images=3)  # a clean store passes
    clean = np.load(os.path.join(path, "boxes.npy"))
    caught_sampled, caught_full = [], []
    for i in range(n):
        bad = clean.copy()
        bad[2 * i, 0] = np.nan
        np.save(os.path.join(path, "boxes.npy"), bad)
        store = ProposalStore.open(path, validate=False)
        for full, caught in ((False, caught_sampled), (True, caught_full)):
            try:
                store.validate(full=full, sample_images=3)
            except ProposalStoreError as e:
                assert f"row {2 * i}" in str(e), str(e)
                caught.append(i)
    assert caught_full == list(range(n))
    assert len(caught_sampled) == 3


def test_a_meta_json_counting_other_images_than_image_ids_json_is_named(clean_store, tmp_path):
    """meta.json's num_images is one less than image_ids.json holds: refused naming meta.json and both counts."""
    clean, n, _ = clean_store
    path = str(tmp_path / "meta.proposals")
    shutil.copytree(clean, path)
    meta_file = os.path.join(path, "meta.json")
    with open(meta_file) as f:
        meta = json.load(f)
    meta["num_images"] = n - 1
    with open(meta_file, "w") as f:
        json.dump(meta, f)
    with pytest.raises(ProposalStoreError) as err:
        ProposalStore.open(path)
    assert str(err.value).startswith(f"{meta_file}: num_images={n - 1} but image_ids.json has {n} ids; regenerate it")


def test_the_chunked_writer_refuses_counts_that_do_not_add_up(tmp_path):
    """StoreWriter: a chunk whose boxes or scores are not as many as its counts say, and a close with fewer images
    or ids than announced, raise ValueError naming the numbers; such a store never gets its meta.json."""
    path = str(tmp_path / "w.proposals")
    boxes, scores = np.zeros((3, 4), np.float32), np.ones(3, np.float32)
    writer = StoreWriter(path, num_images=2, num_boxes=3)
    with pytest.raises(ValueError, match="append: 3 boxes / 2 scores but counts sum to 3"):
        writer.append(boxes, scores[:2], [1, 2])
    with pytest.raises(ValueError, match="append: 2 boxes / 3 scores but counts sum to 3"):
        writer.append(boxes[:2], scores, [1, 2])
    writer = StoreWriter(path, num_images=3, num_boxes=3)
    writer.append(boxes, scores, [1, 2])  # 2 of the 3 images announced
    with pytest.raises(ValueError, match="wrote 2/3 images, 3/3 boxes, got 3 ids"):
        writer.close(["a", "b", "c"], "edgeboxes", {})
    writer = StoreWriter(path, num_images=2, num_boxes=3)
    writer.append(boxes, scores, [1, 2])
    with pytest.raises(ValueError, match="wrote 2/2 images, 3/3 boxes, got 3 ids"):
        writer.close(["a", "b", "c"], "edgeboxes", {})
    assert not os.path.exists(os.path.join(path, "meta.json"))
    writer.close(["a", "b"], "edgeboxes", {})
    assert ProposalStore.open(path).get("b")[0].shape == (2, 4)
