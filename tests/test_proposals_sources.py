"""Proposal sources of the two-view mapper and the proposal-level randomness they rely on: which store a
``StoreProposals`` accepts (and what it sends to data-loader workers), the channels ``OnlineProposals`` hands to
the method, per-image seeds and box sizes of ``RandomProposals`` / ``random_boxes`` / ``image_seed``, and DETReg's
``select_proposals`` caps and refusals.

Boxes are xyxy absolute pixels; images HxWx3 uint8; expected values are computed from the documented rules.
"""

import cv2
import numpy as np
import pytest

from siamese_detr.data.proposals import (
    OnlineProposals,
    ProposalStoreError,
    RandomProposals,
    StoreProposals,
    write_store,
)
from siamese_detr.data.proposals.methods import compute_proposals, image_seed, random_boxes, stable_seed
from siamese_detr.data.proposals.selection import importance_probabilities, select_proposals


def _store(path, dataset="toy"):
    write_store(str(path), ["a", "b"], [np.array([[1, 1, 5, 5]], np.float32)] * 2,
                [np.ones(1, np.float32)] * 2, [(20, 30), (20, 30)], method="edgeboxes", params={}, dataset=dataset)
    return str(path)


def test_store_source_refuses_a_store_of_another_method(tmp_path):
    """The config asks for Selective Search proposals, the store holds EdgeBoxes: refused at first use."""
    src = StoreProposals(_store(tmp_path / "s"), method="selective_search")
    with pytest.raises(ProposalStoreError, match="holds 'edgeboxes' proposals, the config asks for 'selective_search'"):
        src({"image_id": "a"})
    assert StoreProposals(_store(tmp_path / "t"), method="edgeboxes")({"image_id": "a"})[0].shape == (1, 4)


def test_store_source_checks_its_dataset_at_first_open(tmp_path):
    """``dataset`` (records) given: an image of it without proposals is refused when the store is opened,
    even if the looked-up image is present."""
    records = [{"image_id": "a", "height": 20, "width": 30}, {"image_id": "new", "height": 20, "width": 30}]
    src = StoreProposals(_store(tmp_path / "s"), dataset=records)
    with pytest.raises(ProposalStoreError, match=r"1 image ids of the dataset have no proposals.*'new'"):
        src({"image_id": "a"})


def test_store_source_refuses_images_from_another_folder(tmp_path):
    """A store made with --image-dir A (meta.json dataset = A's absolute path) read with images of folder B:
    refused unless allow_other_folder; images under A pass."""
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    path = _store(tmp_path / "s", dataset=str(a))
    StoreProposals(path)({"image_id": "a", "file_name": str(a / "a.png")})
    with pytest.raises(ProposalStoreError, match="was generated from the images in"):
        StoreProposals(path)({"image_id": "a", "file_name": str(b / "a.png")})
    boxes, _ = StoreProposals(path, allow_other_folder=True)({"image_id": "a", "file_name": str(b / "a.png")})
    assert boxes.tolist() == [[1, 1, 5, 5]]


def test_store_source_sends_no_opened_store_to_loader_workers(tmp_path):
    """Data-loader workers receive the source pickled (spawn) or forked. Once the store is open in the main
    process, its memory maps must not travel in the pickle (they would arrive as full in-memory copies of
    boxes.npy in every worker): the pickle carries the path and settings, and the worker opens the store
    itself at its first lookup, with the same boxes."""
    import pickle

    path = write_store(str(tmp_path / "s"), ["a", "b"], [np.zeros((5000, 4), np.float32)] * 2,
                       [np.ones(5000, np.float32)] * 2, [(20, 30), (20, 30)], method="edgeboxes", params={})
    src = StoreProposals(path, method="edgeboxes")
    src({"image_id": "a"})
    assert src._store is not None  # opened here
    payload = pickle.dumps(src)
    assert len(payload) < 5000 * 4 * 4  # less than one image's boxes: no arrays inside
    worker = pickle.loads(payload)
    assert worker._store is None and worker.path == path and worker.method == "edgeboxes"
    boxes, scores = worker({"image_id": "b"})
    assert boxes.shape == (5000, 4) and scores.shape == (5000,)


def test_store_source_folder_check_is_by_path_components(tmp_path):
    """--image-dir lists sub-folders too: an image in A/sub passes. A sibling folder whose name only starts
    with A's (A2) is another folder and is refused."""
    a = tmp_path / "A"
    (a / "sub").mkdir(parents=True)
    (tmp_path / "A2").mkdir()
    path = _store(tmp_path / "s", dataset=str(a))
    boxes, _ = StoreProposals(path)({"image_id": "a", "file_name": str(a / "sub" / "a.png")})
    assert boxes.tolist() == [[1, 1, 5, 5]]
    with pytest.raises(ProposalStoreError, match="was generated from the images in"):
        StoreProposals(path)({"image_id": "a", "file_name": str(tmp_path / "A2" / "a.png")})


@pytest.fixture(scope="module")
def colour_image():
    """BGR image whose channels differ: a pure-red (BGR (0, 0, 255)) rectangle on a pure-blue background, and a
    green one: gray levels of red and blue differ (0.299 vs 0.114), so swapping channels changes the edges."""
    img = np.zeros((64, 80, 3), np.uint8)
    img[:] = (255, 0, 0)
    cv2.rectangle(img, (10, 8), (40, 35), (0, 0, 255), -1)
    cv2.rectangle(img, (45, 30), (70, 55), (0, 255, 0), -1)
    return img


def test_online_source_hands_bgr_to_the_method(colour_image):
    """The method takes BGR: a BGR mapper passes the image as is, an RGB mapper's image is flipped back."""
    want_b, want_s = compute_proposals(colour_image, "edgeboxes", 30)
    swapped_b, _ = compute_proposals(np.ascontiguousarray(colour_image[:, :, ::-1]), "edgeboxes", 30)
    assert not np.array_equal(want_b, swapped_b)  # the test can tell the channel orders apart
    for fmt, image in (("BGR", colour_image), ("RGB", np.ascontiguousarray(colour_image[:, :, ::-1]))):
        b, s = OnlineProposals("edgeboxes", max_boxes=30, image_format=fmt)({"image_id": 1}, image)
        assert np.array_equal(b, want_b) and np.array_equal(s, want_s), fmt


def test_online_source_accepts_a_grayscale_image(colour_image):
    """A 2-D (H, W) image is replicated to 3 channels: same proposals as the 3-channel gray image."""
    gray = cv2.cvtColor(colour_image, cv2.COLOR_BGR2GRAY)
    b, s = OnlineProposals("edgeboxes", max_boxes=20)({"image_id": 1}, gray)
    want_b, want_s = compute_proposals(np.repeat(gray[:, :, None], 3, axis=2), "edgeboxes", 20)
    assert np.array_equal(b, want_b) and np.array_equal(s, want_s)


def test_online_source_drops_a_fourth_channel(colour_image):
    """A 4-channel image (BGR + alpha, as an RGBA PNG can decode) gives the proposals of its first 3 channels."""
    alpha = np.full(colour_image.shape[:2] + (1,), 255, np.uint8)
    b, s = OnlineProposals("edgeboxes", max_boxes=20)({"image_id": 1}, np.concatenate([colour_image, alpha], axis=2))
    want_b, want_s = compute_proposals(colour_image, "edgeboxes", 20)
    assert np.array_equal(b, want_b) and np.array_equal(s, want_s)


def test_random_source_passes_its_minimum_box_size():
    """RandomProposals(min_size=m) draws random_boxes(..., min_size=m): no box side under m, and the boxes
    differ from those of the default 8 (the test can tell)."""
    src = RandomProposals(num_boxes=50, seed=3, min_size=20)
    boxes, _ = src({"image_id": 1, "height": 40, "width": 50})
    assert np.array_equal(boxes, random_boxes(40, 50, 50, seed=stable_seed(1, 3), min_size=20)[0])
    assert ((boxes[:, 2:] - boxes[:, :2]) >= 20).all()
    assert not np.array_equal(boxes, random_boxes(40, 50, 50, seed=stable_seed(1, 3), min_size=8)[0])


def test_random_source_is_seeded_per_image_id():
    """RandomProposals(seed=s) gives image i random_boxes(h, w, K, seed=stable_seed(i, s)): other ids, other boxes."""
    src = RandomProposals(num_boxes=6, seed=3)
    got = {i: src({"image_id": i, "height": 40, "width": 50})[0] for i in (1, 2, "x")}
    for i, b in got.items():
        assert np.array_equal(b, random_boxes(40, 50, 6, seed=stable_seed(i, 3))[0])
    assert not np.array_equal(got[1], got[2]) and not np.array_equal(got[1], got["x"])


def test_random_boxes_reach_every_position_inside_the_image():
    """x1 ~ U{0 .. W - w}, y1 ~ U{0 .. H - h}: on a 10 x 12 (H x W) image with boxes of at least 8 px, the
    boxes of width 8 start at every x in {0, .., 4} (so some touch the right edge), height 8 at y in {0, 1, 2}."""
    boxes, _ = random_boxes(10, 12, 4000, seed=0, min_size=8)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert set(boxes[widths == 8, 0].tolist()) == {0, 1, 2, 3, 4}
    assert set(boxes[heights == 8, 1].tolist()) == {0, 1, 2}
    assert boxes[:, 2].max() == 12 and boxes[:, 3].max() == 10 and boxes[:, :2].min() == 0


def test_image_seed_depends_on_every_pixel():
    """Selective Search's ranking seed is a function of the pixels: one changed pixel, another seed; the same
    pixels (a copy), the same seed."""
    img = np.zeros((20, 30, 3), np.uint8)
    other = img.copy()
    other[19, 29, 2] = 1
    assert image_seed(img.copy()) == image_seed(img)
    assert image_seed(other) != image_seed(img)
    assert image_seed(img, seed=1) != image_seed(img)


def test_importance_sampling_cap_keeps_the_best_ranks():
    """max_sampled keeps the FIRST of the drawn indices (best ranks). With k = N = 10 every p_i is 1 for the
    first ranks (-log(i / 11) >= 1 for i <= 4), so ranks 0..3 are always drawn; a cap of 2 keeps [0, 1]."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        keep = select_proposals(rng, 10, 10, "importance", max_sampled=2)
        assert keep.tolist() == [0, 1]


def test_importance_probabilities_are_capped_at_one():
    """p_i = min(1, -log(i / (N + 1)) * k / N): with k = N = 5, p_1 = min(1, log 6) = 1, p_5 = log(6 / 5)."""
    p = importance_probabilities(5, 5)
    expected = np.minimum(1.0, -np.log(np.arange(1, 6) / 6.0))
    assert p.max() <= 1.0 and np.allclose(p, expected)
    assert p[0] == 1.0 and p[4] == pytest.approx(np.log(6 / 5))


def test_selection_refuses_k_under_one_and_a_total_under_the_candidates():
    """k = 0 would select nothing (a pretext with no target): refused naming k. importance_probabilities with N
    smaller than the candidate count would give the ranks past N + 1 negative "probabilities" (-log of a ratio
    over 1): refused."""
    from siamese_detr.utils.user_errors import UserValueError

    rng = np.random.default_rng(0)
    for policy in ("topk", "random", "importance"):
        with pytest.raises(UserValueError, match="k must be >= 1, got 0"):
            select_proposals(rng, 10, 0, policy)
    assert select_proposals(rng, 10, 1, "topk").tolist() == [0]
    with pytest.raises(ValueError, match=r"total \(5\) must be >= the number of candidates \(6\)"):
        importance_probabilities(6, 2, total=5)
    assert importance_probabilities(6, 2, total=6).shape == (6,)
