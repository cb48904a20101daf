"""Proposal store: round trip, merge, validation errors, Detectron2 proposal-file export/import."""

import json
import os
import pickle

import numpy as np
import pytest

from siamese_detr.data.proposals import (
    ProposalStore,
    ProposalStoreError,
    StoreProposals,
    export_detectron2,
    import_detectron2,
    merge_stores,
    write_store,
)


def _fake(n=6, seed=0, prefix="img"):
    rng = np.random.default_rng(seed)
    ids, boxes, scores, sizes = [], [], [], []
    for i in range(n):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        k = 0 if i == 2 else int(rng.integers(1, 9))  # image 2 has no proposals
        x1 = rng.uniform(0, w / 2, k)
        y1 = rng.uniform(0, h / 2, k)
        b = np.stack([x1, y1, x1 + rng.uniform(0, w / 2, k), y1 + rng.uniform(0, h / 2, k)], 1).astype(
            np.float32
        )
        ids.append(f"{prefix}{i}" if i % 2 else i)  # int and str ids mixed
        boxes.append(b.reshape(-1, 4))
        scores.append(np.sort(rng.random(k).astype(np.float32))[::-1])
        sizes.append((h, w))
    return ids, boxes, scores, sizes


@pytest.fixture
def store_dir(tmp_path):
    ids, boxes, scores, sizes = _fake()
    path = str(tmp_path / "a.proposals")
    write_store(path, ids, boxes, scores, sizes, method="edgeboxes", params={"max_boxes": 8}, dataset="toy")
    return path, (ids, boxes, scores, sizes)


def test_round_trip(store_dir):
    path, (ids, boxes, scores, sizes) = store_dir
    store = ProposalStore.open(path)
    assert len(store) == len(ids) and store.method == "edgeboxes" and store.params == {"max_boxes": 8}
    for i, image_id in enumerate(ids):
        assert image_id in store and str(image_id) in store
        b, s = store.get(image_id)
        assert b.dtype == np.float32 and b.shape == (len(boxes[i]), 4)
        assert np.array_equal(b, boxes[i]) and np.array_equal(s, scores[i])
        assert store.image_size(image_id) == sizes[i]
    assert "nope" not in store
    with pytest.raises(KeyError, match="not in proposal store"):
        store.get("nope")
    meta = json.load(open(os.path.join(path, "meta.json")))
    assert meta["format_version"] == 1 and meta["num_images"] == 6 and meta["counts"]["min"] == 0
    assert meta["num_boxes"] == sum(len(b) for b in boxes)
    # arrays are memory-mapped, readable without pickle
    assert isinstance(store._boxes, np.memmap)
    assert np.load(os.path.join(path, "offsets.npy"), allow_pickle=False)[-1] == meta["num_boxes"]


def test_merge_equals_concatenation(tmp_path):
    a, b = _fake(4, seed=1, prefix="a"), _fake(3, seed=2, prefix="b")
    b = (["b" + str(i) for i in b[0]],) + b[1:]
    pa, pb = str(tmp_path / "a"), str(tmp_path / "b")
    skipped_a = [{"image_id": "a-bad", "file_name": "a-bad.jpg", "reason": "corrupt"}]
    skipped_b = [{"image_id": "b-bad", "file_name": "b-bad.jpg", "reason": "unreadable"}]
    write_store(pa, *a, method="random", params={"seed": 0}, skipped=skipped_a)
    write_store(pb, *b, method="random", params={"seed": 0}, skipped=skipped_b)
    merged = ProposalStore.open(merge_stores([pa, pb], str(tmp_path / "m"), chunk_images=2))
    assert merged.image_ids == [str(i) for i in a[0] + b[0]]
    # every shard's skipped images, and the box counts of all images (not of one shard)
    assert merged.meta["skipped"] == skipped_a + skipped_b
    counts = [len(x) for x in a[1] + b[1]]
    assert merged.meta["counts"] == {"min": min(counts), "max": max(counts), "mean": pytest.approx(np.mean(counts))}
    assert merged.meta["num_boxes"] == sum(counts) and merged.meta["merged_from"] == 2
    for src in (a, b):
        for i, image_id in enumerate(src[0]):
            bx, sc = merged.get(image_id)
            assert np.array_equal(bx, src[1][i]) and np.array_equal(sc, src[2][i])
            assert merged.image_size(image_id) == src[3][i]
    write_store(str(tmp_path / "c"), *b, method="edgeboxes", params={})
    with pytest.raises(ProposalStoreError, match="different runs"):
        merge_stores([pa, str(tmp_path / "c")], str(tmp_path / "m2"))
    with pytest.raises(ProposalStoreError, match="same image id"):
        merge_stores([pa, pa], str(tmp_path / "m3"))


def test_truncated_npy(store_dir):
    path, _ = store_dir
    f = os.path.join(path, "boxes.npy")
    data = open(f, "rb").read()
    open(f, "wb").write(data[: len(data) - 20])
    with pytest.raises(ProposalStoreError, match=r"boxes\.npy is missing or corrupt.*generate_proposals"):
        ProposalStore.open(path)


def _rewrite_boxes(path, fn):
    boxes = np.load(os.path.join(path, "boxes.npy"))
    fn(boxes)
    np.save(os.path.join(path, "boxes.npy"), boxes)


def test_nan_box_and_box_outside_image(store_dir):
    path, (ids, boxes, _, sizes) = store_dir
    _rewrite_boxes(path, lambda b: b.__setitem__((0, 1), np.nan))
    with pytest.raises(ProposalStoreError, match=r"boxes\.npy: 1 invalid boxes.*row 0"):
        ProposalStore.open(path)
    _rewrite_boxes(path, lambda b: b.__setitem__((0, 1), 0.0))
    ProposalStore.open(path)  # valid again
    h, w = sizes[1]
    row = len(boxes[0])  # first box of image 1

    def outside(b):
        b[row, 2] = w + 0.5

    _rewrite_boxes(path, outside)
    with pytest.raises(ProposalStoreError, match=r"outside the image.*'img1'"):
        ProposalStore.open(path)
    # within the tolerance of a hundredth of a pixel is fine
    _rewrite_boxes(path, lambda b: b.__setitem__((row, 2), w + 0.005))
    ProposalStore.open(path)


def test_structural_errors(store_dir):
    path, _ = store_dir
    off = np.load(os.path.join(path, "offsets.npy"))
    bad = off.copy()
    bad[2], bad[3] = bad[3], bad[2] - 1
    np.save(os.path.join(path, "offsets.npy"), bad)
    with pytest.raises(ProposalStoreError, match=r"offsets\.npy.*non-decreasing"):
        ProposalStore.open(path)
    np.save(os.path.join(path, "offsets.npy"), off)
    os.remove(os.path.join(path, "meta.json"))
    with pytest.raises(ProposalStoreError, match=r"meta\.json is missing.*incomplete"):
        ProposalStore.open(path)
    with pytest.raises(ProposalStoreError, match="does not exist"):
        ProposalStore.open(path + "-nothing")


def test_dataset_checks(store_dir):
    path, (ids, boxes, _, sizes) = store_dir
    dicts = [{"image_id": i, "height": h, "width": w} for i, (h, w) in zip(ids, sizes)]
    ProposalStore.open(path, dataset=dicts)
    with pytest.raises(ProposalStoreError, match=r"1 image ids of the dataset have no proposals.*'extra'"):
        ProposalStore.open(path, dataset=dicts + [{"image_id": "extra", "height": 5, "width": 5}])
    wrong = [dict(d) for d in dicts]
    wrong[0]["height"] += 1
    with pytest.raises(ProposalStoreError, match=r"sizes\.npy: 1 images differ in size"):
        ProposalStore.open(path, dataset=wrong)
    # images recorded as unreadable at generation time are accepted
    meta = json.load(open(os.path.join(path, "meta.json")))
    meta["skipped"] = [{"image_id": "extra", "file_name": "extra.jpg", "reason": "corrupt"}]
    json.dump(meta, open(os.path.join(path, "meta.json"), "w"))
    ProposalStore.open(path, dataset=dicts + [{"image_id": "extra", "height": 5, "width": 5}])


def test_detectron2_export_import_round_trip(store_dir, tmp_path):
    from detectron2.data.build import load_proposals_into_dataset
    from detectron2.structures import BoxMode

    path, (ids, boxes, scores, sizes) = store_dir
    pkl = str(tmp_path / "props.pkl")
    export_detectron2(path, pkl)
    # Detectron2's own loader reads the file and sees our boxes in our order
    dicts = load_proposals_into_dataset([{"image_id": i} for i in ids], pkl)
    for d, b, s in zip(dicts, boxes, scores):
        assert d["proposal_bbox_mode"] == BoxMode.XYXY_ABS
        assert np.array_equal(d["proposal_boxes"], b) and np.array_equal(d["proposal_objectness_logits"], s)
    with pytest.raises(ValueError, match="allow_pickle=True.*--trust-pickle"):
        import_detectron2(pkl, str(tmp_path / "imported"))
    assert not os.path.exists(tmp_path / "imported")
    sizes_by_id = {str(i): hw for i, hw in zip(ids, sizes)}
    back = import_detectron2(pkl, str(tmp_path / "imported"), allow_pickle=True, image_sizes=sizes_by_id)
    assert back.image_ids == [str(i) for i in ids]
    for i, image_id in enumerate(ids):
        b, s = back.get(image_id)
        assert np.array_equal(b, boxes[i]) and np.array_equal(s, scores[i])
        assert back.image_size(image_id) == sizes[i]
    # a dataset it lacks an image of: the same file would import the same store, so the fix names another
    # proposal file or computing proposals (an imported store has no --method to give)
    dicts = [{"image_id": i, "height": h, "width": w} for i, (h, w) in zip(ids, sizes)]
    with pytest.raises(ProposalStoreError) as error:
        ProposalStore.open(str(tmp_path / "imported"), dataset=dicts + [{"image_id": "new", "height": 5, "width": 5}])
    message = str(error.value)
    assert f"imported from {pkl}, which does not match these images" in message
    assert "--dataset NAME --import-detectron2 NEW_FILE.pkl --trust-pickle --output NEW_STORE" in message
    assert "--method edgeboxes" in message
    assert f"--import-detectron2 {pkl}" not in message  # re-importing that file would fail the same way


def test_import_xywh_and_unsorted(tmp_path):
    from detectron2.structures import BoxMode

    payload = {
        "ids": [1],
        "boxes": [np.array([[1, 2, 3, 4], [0, 0, 5, 5]], np.float32)],
        "objectness_logits": [np.array([0.1, 0.9], np.float32)],
        "bbox_mode": BoxMode.XYWH_ABS,
    }
    pkl = tmp_path / "x.pkl"
    pickle.dump(payload, open(pkl, "wb"))
    store = import_detectron2(str(pkl), str(tmp_path / "s"), allow_pickle=True)
    b, s = store.get(1)
    assert np.allclose(s, [0.9, 0.1])
    assert np.array_equal(b, [[0, 0, 5, 5], [1, 2, 4, 6]])  # sorted by score, converted to xyxy
    assert store.image_size(1) == (-1, -1)


def test_store_source_is_picklable_and_lazy(store_dir):
    path, (ids, boxes, _, _) = store_dir
    src = StoreProposals(path)
    b, _ = src({"image_id": ids[1]}, None)
    assert np.array_equal(b, boxes[1])
    clone = pickle.loads(pickle.dumps(src))
    assert clone._store is None
    assert np.array_equal(clone({"image_id": ids[3]})[0], boxes[3])


def test_size_checks_compare_the_width_too(tmp_path):
    """An image stored as (height, width) = (100, 80): another width (same height) is another image size, for
    ``check_image`` and for ``check_dataset`` (so also ``ProposalStore.open(dataset=...)``); so is another
    height, and the recorded size passes."""
    path = str(tmp_path / "w.proposals")
    boxes = [np.array([[10, 20, 70, 90]], np.float32), np.array([[0, 0, 40, 30]], np.float32)]
    scores = [np.array([0.9], np.float32), np.array([0.5], np.float32)]
    write_store(path, ["tall", 7], boxes, scores, [(100, 80), (30, 40)], method="edgeboxes", params={})
    store = ProposalStore.open(path)
    assert store.image_size("tall") == (100, 80)
    store.check_image("tall", (100, 80))
    for hw in [(100, 90), (100, 79), (101, 80), (80, 100)]:
        with pytest.raises(ProposalStoreError, match=r"sizes\.npy: image 'tall'"):
            store.check_image("tall", hw)
    other = {"image_id": 7, "height": 30, "width": 40, "file_name": "7.jpg"}
    store.check_dataset([{"image_id": "tall", "height": 100, "width": 80, "file_name": "tall.jpg"}, other])
    for h, w in [(100, 90), (100, 79), (101, 80), (80, 100)]:
        records = [{"image_id": "tall", "height": h, "width": w, "file_name": "tall.jpg"}, other]
        with pytest.raises(ProposalStoreError, match=r"sizes\.npy: 1 images differ in size.*'tall', \(100, 80\)"):
            store.check_dataset(records)
        with pytest.raises(ProposalStoreError, match=r"1 images differ in size"):
            ProposalStore.open(path, dataset=records)
