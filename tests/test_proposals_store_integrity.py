"""Proposal store integrity: what ``ProposalStore.open`` refuses (each structural and box check on its own),
that it never unpickles, what ``get`` hands out, and what ``merge_stores`` / ``StoreWriter`` guarantee.

Every store here is tiny and hand-written: boxes xyxy absolute pixels, sizes (height, width). Each refusal test
breaks exactly ONE thing of an otherwise valid store, so a check that is dropped or loosened is noticed.
"""

import json
import os
import pickle

import numpy as np
import pytest

from siamese_detr.data.proposals import ProposalStore, ProposalStoreError, StoreWriter, merge_stores, write_store

from pickle_payload import Payload

# two images: "a" is 40 high x 60 wide with two boxes, "b" is 30 x 20 with one box
IDS = ["a", "b"]
BOXES = [np.array([[1, 2, 50, 30], [0, 0, 60, 40]], np.float32), np.array([[3, 4, 10, 25]], np.float32)]
SCORES = [np.array([0.9, 0.4], np.float32), np.array([0.7], np.float32)]
SIZES = [(40, 60), (30, 20)]


@pytest.fixture
def store_path(tmp_path):
    path = str(tmp_path / "s.proposals")
    write_store(path, IDS, BOXES, SCORES, SIZES, method="edgeboxes", params={"max_boxes": 2}, dataset="toy")
    ProposalStore.open(path)  # valid as written
    return path


def _edit_npy(path, name, fn):
    arr = np.load(os.path.join(path, name))
    arr = fn(arr)
    np.save(os.path.join(path, name), arr)


def _set(row, col, value):
    def fn(arr):
        arr[row, col] = value
        return arr

    return fn


@pytest.mark.parametrize(
    "row, col, value, why",
    [
        (0, 3, 1.0, "y2 < y1 (box 0 of 'a' has y1 = 2)"),
        (0, 2, 0.5, "x2 < x1 (box 0 of 'a' has x1 = 1)"),
        (2, 1, -0.5, "y1 < 0 by more than the 0.01 px tolerance"),
        (2, 0, -0.5, "x1 < 0 by more than the 0.01 px tolerance"),
        (2, 3, 30.5, "y2 below the image 'b' (height 30)"),
        (2, 2, 20.5, "x2 right of the image 'b' (width 20)"),
        (1, 3, np.inf, "a non-finite coordinate"),
    ],
)
def test_each_invalid_box_is_refused(store_path, row, col, value, why):
    """Rows of boxes.npy: 0, 1 belong to 'a' (40 x 60), 2 to 'b' (30 x 20); one coordinate made invalid."""
    _edit_npy(store_path, "boxes.npy", _set(row, col, value))
    with pytest.raises(ProposalStoreError, match=rf"boxes\.npy: 1 invalid boxes.*first: row {row} "):
        ProposalStore.open(store_path)


def test_a_non_finite_score_is_refused(store_path):
    """scores.npy must be finite too (a NaN score breaks every ranking that uses it)."""

    def fn(arr):
        arr[1] = np.nan
        return arr

    _edit_npy(store_path, "scores.npy", fn)
    with pytest.raises(ProposalStoreError, match=r"boxes\.npy: 1 invalid boxes.*first: row 1 "):
        ProposalStore.open(store_path)


def test_boxes_touching_the_image_border_within_tolerance_are_valid(tmp_path):
    """x1 = y1 = -0.005 and x2 = W + 0.005, y2 = H + 0.005 lie within the 0.01 px tolerance: accepted."""
    path = str(tmp_path / "edge.proposals")
    box = np.array([[-0.005, -0.005, 20.005, 30.005]], np.float32)
    write_store(path, ["e"], [box], [np.ones(1, np.float32)], [(30, 20)], method="random", params={})
    b, _ = ProposalStore.open(path).get("e")
    assert np.array_equal(b, box)


def test_offsets_must_start_at_zero(store_path):
    """offsets = [1, 3, 3] is non-decreasing and ends at a plausible total, but image 'a' would own rows 1:3."""
    _edit_npy(store_path, "offsets.npy", lambda off: np.array([1, 2, 3], off.dtype))
    with pytest.raises(ProposalStoreError, match=r"offsets\.npy: offsets must start at 0"):
        ProposalStore.open(store_path)


def test_duplicated_image_ids_are_refused(store_path):
    """image_ids.json ['a', 'a']: the second image's proposals could never be looked up."""
    with open(os.path.join(store_path, "image_ids.json"), "w") as f:
        json.dump(["a", "a"], f)
    with pytest.raises(ProposalStoreError, match=r"image_ids\.json: 1 duplicated image ids"):
        ProposalStore.open(store_path)


def test_sizes_of_another_shape_are_refused(store_path):
    """sizes.npy must be [N, 2]: one row per image (here 3 rows for 2 images)."""
    _edit_npy(store_path, "sizes.npy", lambda s: np.concatenate([s, s[:1]]))
    with pytest.raises(ProposalStoreError, match=r"sizes\.npy: expected shape \(2, 2\), got \(3, 2\)"):
        ProposalStore.open(store_path)


def test_a_meta_json_without_format_version_is_refused(store_path):
    """A meta.json without format_version is not a store this code knows how to read."""
    meta_file = os.path.join(store_path, "meta.json")
    meta = json.load(open(meta_file))
    del meta["format_version"]
    json.dump(meta, open(meta_file, "w"))
    with pytest.raises(ProposalStoreError, match="format_version None"):
        ProposalStore.open(store_path)


@pytest.mark.parametrize("name", ["offsets.npy", "boxes.npy", "scores.npy", "sizes.npy"])
def test_opening_a_store_never_unpickles(store_path, tmp_path, name):
    """Stores are numpy arrays read with allow_pickle=False: an array file replaced by a pickle is refused as
    corrupt, and the pickle is never loaded (its code never runs)."""
    marker = tmp_path / "pwned"
    with open(os.path.join(store_path, name), "wb") as f:
        pickle.dump(Payload(str(marker)), f)
    with pytest.raises(ProposalStoreError, match=rf"{name.replace('.', '[.]')} is missing or corrupt"):
        ProposalStore.open(store_path)
    assert not marker.exists()


def test_unknown_sizes_match_any_dataset_size(tmp_path):
    """An image recorded with size (-1, -1) (e.g. an import without sizes) is not compared with the dataset's
    height/width; the one with a known size still is."""
    path = str(tmp_path / "u.proposals")
    write_store(path, ["u", "k"], [BOXES[1], BOXES[1]], [SCORES[1], SCORES[1]], [(-1, -1), (30, 20)],
                method="random", params={})
    store = ProposalStore.open(path)
    store.check_dataset([{"image_id": "u", "height": 480, "width": 640},
                         {"image_id": "k", "height": 30, "width": 20}])
    store.check_image("u", (480, 640))
    with pytest.raises(ProposalStoreError, match=r"1 images differ in size.*'k', \(30, 20\), \(31, 20\)"):
        store.check_dataset([{"image_id": "u", "height": 480, "width": 640},
                             {"image_id": "k", "height": 31, "width": 20}])


def test_get_returns_independent_writable_copies(store_path):
    """``get`` hands out copies: the caller (e.g. the mapper scaling boxes in place) may write to them, and the
    next lookup still sees the stored values."""
    store = ProposalStore.open(store_path)
    b, s = store.get("a")
    assert b.flags.writeable and s.flags.writeable
    b *= 2.0
    s[:] = 0.0
    b2, s2 = store.get("a")
    assert np.array_equal(b2, BOXES[0]) and np.array_equal(s2, SCORES[0])


def test_merge_refuses_shards_with_other_params(tmp_path):
    """Same method, other parameters (another --max-boxes): the shards come from different runs."""
    pa, pb = str(tmp_path / "a"), str(tmp_path / "b")
    write_store(pa, ["a"], BOXES[:1], SCORES[:1], SIZES[:1], method="edgeboxes", params={"max_boxes": 2})
    write_store(pb, ["b"], BOXES[1:], SCORES[1:], SIZES[1:], method="edgeboxes", params={"max_boxes": 512})
    with pytest.raises(ProposalStoreError, match="different runs"):
        merge_stores([pa, pb], str(tmp_path / "m"))
    assert not os.path.exists(tmp_path / "m" / "meta.json")


def test_merged_store_is_not_marked_as_a_shard(tmp_path):
    """The shards' meta.json say which shard they are; the merged store is the whole run (merged_from = K)."""
    pa, pb = str(tmp_path / "a"), str(tmp_path / "b")
    write_store(pa, ["a"], BOXES[:1], SCORES[:1], SIZES[:1], method="random", params={}, shard={"id": 0, "of": 2})
    write_store(pb, ["b"], BOXES[1:], SCORES[1:], SIZES[1:], method="random", params={}, shard={"id": 1, "of": 2})
    merged = ProposalStore.open(merge_stores([pa, pb], str(tmp_path / "m")))
    assert "shard" not in merged.meta and merged.meta["merged_from"] == 2
    assert merged.image_ids == ["a", "b"]


def test_a_store_being_rewritten_is_not_complete(store_path):
    """A StoreWriter over an existing store removes its meta.json first: if the rewrite dies before ``close``
    the folder must not open as the old, complete store (whose arrays are half overwritten)."""
    writer = StoreWriter(store_path, 1, 1)
    writer.append(np.zeros((1, 4), np.float32), np.zeros(1, np.float32), [1], [(5, 5)])
    del writer  # killed before close()
    with pytest.raises(ProposalStoreError, match=r"meta\.json is missing.*incomplete"):
        ProposalStore.open(store_path)
