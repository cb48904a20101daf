"""Proposal store: each array file with the wrong dtype or shape is refused naming that file and what it should
hold, and the sampled validation of a large store checks exactly ``sample_images`` distinct images."""
import os
import shutil

import numpy as np
import pytest

from siamese_detr.data.proposals import ProposalStore, ProposalStoreError, write_store
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
