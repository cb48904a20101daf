"""SiameseViewMapper's one-pass view warp against hand-worked coordinates, and the mapper's knobs that the
content tests leave open: seeding by rank and by a seed of 0, evaluation mode without flip or swap, proposals
with a non-finite coordinate, crops cut at the region boxes (not the jittered queries), degenerate crop
boxes."""
import itertools
import types

import cv2
import numpy as np
import pytest
import torch

import siamese_detr.data.siamese_mapper as M
from siamese_detr.data.siamese_mapper import SiameseViewMapper, crop_regions

from test_siamese_mapper import smooth_texture

NO_AUG = dict(color_jitter=None, grayscale_prob=0.0, blur_prob=0.0)


def _coordinate_source(h, w):
    """float32 ``[h, w, 3]``: channel 0 = the pixel's column index, 1 = its row index, 2 = 7. Bilinear
    interpolation of these linear ramps returns the sampled (fractional) pixel coordinates exactly."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.dstack([xx, yy, np.full((h, w), 7.0, np.float32)])


def _geometry(flip, resized_hw=(15, 20)):
    """Two views of a resized image 15 x 20 (h x w). View 0 cuts x 4..8, y 2..6 at zoom (sx, sy) = (2, 1.5):
    8 x 6 (w x h) pixels; view 1 cuts x 10..14, y 5..9 at zoom (1.5, 2): 6 x 8 pixels."""
    return types.SimpleNamespace(
        resized_hw=resized_hw, flip=flip,
        view_boxes=np.array([[4.0, 2.0, 8.0, 6.0], [10.0, 5.0, 14.0, 9.0]]),
        view_scales=np.array([[2.0, 1.5], [1.5, 2.0]]),
        view_hw=np.array([[6, 8], [8, 6]]))


def test_view_warp_samples_hand_worked_source_coordinates():
    """Source 30 x 60 for a resized image 15 x 20: kx = 3, ky = 2 (different, so x and y cannot be mixed up).
    With pixel centres at half-integers, view pixel (u, r) of view 0 lies at resized coordinates
    X = 4 + (u + 0.5) / 2, Y = 2 + (r + 0.5) / 1.5, i.e. at source pixel index 3 X - 0.5 = 12.25 + 1.5 u and
    2 Y - 0.5 = 4 + 1/6 + 4 r / 3. Flipped, X is measured from the right edge of the resized image (20):
    source column 3 (20 - X) - 0.5 = 46.75 - 1.5 u; rows are never flipped. View 1 (x0 = 10, y0 = 5,
    zoom (1.5, 2)): column 3 (10 + (u + 0.5) / 1.5) - 0.5 = 30.5 + 2 u (flipped: 3 (10 - (u + 0.5) / 1.5)
    - 0.5 = 28.5 - 2 u), row 2 (5 + (r + 0.5) / 2) - 0.5 = 10 + r."""
    source = _coordinate_source(30, 60)
    u6, r6 = np.arange(6.0), np.arange(6.0)
    u8, r8 = np.arange(8.0), np.arange(8.0)
    expected = {
        (False, 0): (12.25 + 1.5 * u8, 4 + 1 / 6 + 4 * r6 / 3),
        (True, 0): (46.75 - 1.5 * u8, 4 + 1 / 6 + 4 * r6 / 3),
        (False, 1): (30.5 + 2 * u6, 10 + r8),
        (True, 1): (28.5 - 2 * u6, 10 + r8),
    }
    for (flip, v), (columns, rows) in expected.items():
        got = SiameseViewMapper._warp_view(source, _geometry(flip), v)
        assert got.shape == (len(rows), len(columns), 3), (flip, v)
        # OpenCV's warp quantises sample positions to 1/32 pixel
        np.testing.assert_allclose(got[:, :, 0], np.broadcast_to(columns, got.shape[:2]), atol=0.04)
        np.testing.assert_allclose(got[:, :, 1], np.broadcast_to(rows[:, None], got.shape[:2]), atol=0.04)
        np.testing.assert_allclose(got[:, :, 2], 7.0, atol=1e-4)


def test_view_warp_from_an_unresized_source_equals_the_resized_one():
    """The source is the image at any scale: warping from the resized image itself (k = 1) or from a copy 3x
    wider and 2x taller gives the same view (on a linear ramp, up to the warp's 1/32-pixel quantisation)."""
    yy, xx = np.mgrid[0:15, 0:20].astype(np.float32)
    resized = np.dstack([10 * xx, 10 * yy, 5 * xx + 3 * yy])
    # the ramp at 3x / 2x: pixel index i of the big image is at resized index (i + 0.5) / k - 0.5
    byy, bxx = np.mgrid[0:30, 0:60].astype(np.float32)
    bx, by = (bxx + 0.5) / 3 - 0.5, (byy + 0.5) / 2 - 0.5
    big = np.dstack([10 * bx, 10 * by, 5 * bx + 3 * by])
    for flip in (False, True):
        for v in range(2):
            a = SiameseViewMapper._warp_view(resized, _geometry(flip), v)
            b = SiameseViewMapper._warp_view(big, _geometry(flip), v)
            np.testing.assert_allclose(a[1:-1, 1:-1], b[1:-1, 1:-1], atol=0.5)


def test_view_warp_replicates_the_border_instead_of_darkening_it():
    """A view covering the whole resized image, enlarged 3x: its outer pixels sample half a source pixel
    beyond the image; a uniform image must stay uniform there (a constant border would blend in black)."""
    source = np.full((10, 12, 3), 200, np.uint8)
    geometry = types.SimpleNamespace(resized_hw=(10, 12), flip=False, view_boxes=np.array([[0.0, 0.0, 12.0, 10.0]] * 2),
                                     view_scales=np.array([[3.0, 3.0]] * 2), view_hw=np.array([[30, 36]] * 2))
    for flip in (False, True):
        geometry.flip = flip
        assert np.all(SiameseViewMapper._warp_view(source, geometry, 0) == 200)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("warp") / "im.png")
    cv2.imwrite(path, smooth_texture(90, 120))
    return path


def _same(a, b):
    return all(torch.equal(va[k], vb[k]) for va, vb in zip(a["views"], b["views"]) for k in va) \
        and a["flip"] == b["flip"]


def _small(**kwargs):
    return SiameseViewMapper(short_side_range=(64, 80), max_size=200, crop_size=16, **kwargs)


def test_seed_zero_is_a_seed_and_ranks_draw_different_samples(image_file, monkeypatch):
    """``seed=0`` fixes the samples (it must not fall back to ``torch.initial_seed()``, which differs per
    process), and two ranks with the same seed draw different samples."""
    d = {"file_name": image_file, "image_id": 0}
    outs = []
    for torch_seed in (11, 12):
        monkeypatch.setattr(M.torch, "initial_seed", lambda s=torch_seed: s)
        outs.append((_small(seed=0)(d), _small(seed=None)(d)))
    assert _same(outs[0][0], outs[1][0])
    assert not _same(outs[0][1], outs[1][1])  # seed=None does follow torch's seed
    by_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(M.comm, "get_rank", lambda r=rank: r)
        by_rank.append(_small(seed=5)(d))
    assert not _same(by_rank[0], by_rank[1])


def test_evaluation_mode_never_flips_nor_swaps(image_file):
    """``is_train=False`` turns the flip and the swap off whatever their probabilities: with both at 1 the
    output equals that of flip and swap at 0, and view 1 holds the outer box's top-left corner."""
    d = {"file_name": image_file, "image_id": 0}
    for seed in range(3):
        forced = _small(seed=seed, is_train=False, flip_prob=1.0, swap_prob=1.0)(d)
        plain = _small(seed=seed, is_train=False, flip_prob=0.0, swap_prob=0.0)(d)
        assert forced["flip"] is False and _same(forced, plain)
    # and in training the probabilities are used (both at 1: always flipped)
    assert _small(seed=0, flip_prob=1.0)(d)["flip"] is True


def test_proposals_with_any_non_finite_coordinate_are_dropped(image_file):
    """A proposal row with a NaN or inf coordinate (one bad row of a store) is dropped before sampling: only
    the one finite proposal becomes a region."""
    def source(dataset_dict, image):
        h, w = image.shape[:2]
        boxes = np.array([[np.nan, 0, w, h], [0, 0, np.inf, h], [0, 0, w, h]], np.float32)
        return boxes, np.array([3.0, 2.0, 1.0], np.float32)

    mapper = _small(seed=0, proposal_source=source, num_regions=4, **NO_AUG)
    for _ in range(3):
        out = mapper({"file_name": image_file, "image_id": 0})
        assert out["num_proposals"] == 1
        for view in out["views"]:
            assert torch.isfinite(view["region_boxes"]).all() and torch.isfinite(view["query_boxes"]).all()


def test_crops_are_cut_at_the_region_boxes_not_the_jittered_queries(image_file):
    """Without photometric augmentation the view image is the warped view itself, and crop k is that image
    cut at region box k (the targets), not at the jittered query box k (strong jitter: 0.3 of the box)."""
    mapper = _small(seed=1, query_jitter=0.3, crop_augment=False, **NO_AUG)
    out = mapper({"file_name": image_file, "image_id": 0})
    for view in out["views"]:
        image = np.ascontiguousarray(view["image"].numpy().transpose(1, 2, 0))
        assert not torch.allclose(view["query_boxes"], view["region_boxes"])
        boxes = view["region_boxes"].numpy().astype(np.float64)
        # the boxes come back as float32: a side on a whole pixel may have been just below or above it, so
        # each side is tried 1e-3 px either way; crop k must equal one of these cuts exactly
        best = np.full(len(boxes), np.inf)
        for shift in itertools.product((-1e-3, 0.0, 1e-3), repeat=4):
            ref = crop_regions(image, boxes + np.array(shift), 16)
            best = np.minimum(best, np.abs(view["crops"].numpy().astype(int) - ref).max(axis=(1, 2, 3)))
        assert np.all(best == 0), best


def test_crop_of_a_zero_width_box_is_its_one_pixel_column():
    """A box with x0 == x1 on a whole pixel still cuts at least one pixel (column 3 here), as documented."""
    yy, xx = np.mgrid[0:8, 0:10]
    image = np.dstack([xx * 20, yy * 20, xx + yy]).astype(np.uint8)
    crop = crop_regions(image, np.array([[3.0, 2.0, 3.0, 5.0]]), 3, channels_last=True)[0]
    assert crop.shape == (3, 3, 3)
    assert np.all(crop[:, :, 0] == 60)  # every sample from column 3
    assert np.array_equal(crop[:, :, 1], np.array([[40] * 3, [60] * 3, [80] * 3]))  # rows 2, 3, 4


def test_tau_zero_and_one_are_accepted_outside_refused():
    SiameseViewMapper(tau=0.0)
    SiameseViewMapper(tau=1.0)
    for tau in (-0.1, 1.1):
        with pytest.raises(ValueError, match="tau"):
            SiameseViewMapper(tau=tau)
