"""SiameseViewMapper on small real image files: contract, content correspondence, seeding, edge cases,
and the pretraining data configs."""

import os
import types

import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.ops import box_iou as tv_box_iou
from torchvision.ops import roi_align

import siamese_detr.data.siamese_mapper as M
from siamese_detr.data.siamese_mapper import SiameseViewMapper, simsiam_augment
from siamese_detr.data.views import view_to_original

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_AUG = dict(color_jitter=None, grayscale_prob=0.0, blur_prob=0.0)


def smooth_texture(h, w, seed=0):
    """Smooth, non-repetitive colour texture (so resampling differences stay small)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, size=(max(h // 16, 2), max(w // 16, 2), 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("mapper_images")
    paths = {}
    bgr = smooth_texture(300, 400)
    paths["color"] = str(d / "color.png")
    cv2.imwrite(paths["color"], bgr)
    paths["gray"] = str(d / "gray.png")
    Image.fromarray(smooth_texture(120, 90, 1)[:, :, 0]).save(paths["gray"])
    paths["rgba"] = str(d / "rgba.png")
    rgba = np.dstack([smooth_texture(100, 130, 2), np.full((100, 130), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(paths["rgba"])
    paths["exif"] = str(d / "exif.jpg")  # stored 60 (h) x 80 (w); orientation 6 = rotate 90 deg -> 80 x 60
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth_texture(60, 80, 3)).save(paths["exif"], exif=exif)
    paths["tiny"] = str(d / "tiny.png")
    cv2.imwrite(paths["tiny"], smooth_texture(20, 30, 4))
    paths["corrupt"] = str(d / "corrupt.jpg")
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 10)
    paths["empty"] = str(d / "empty.png")
    (d / "empty.png").write_bytes(b"")
    paths["missing"] = str(d / "missing.png")
    return paths


def check_contract(out, n, crop_size, fmt_hw=None):
    assert set(["image_id", "file_name", "height", "width", "num_proposals", "views"]) <= set(out)
    assert len(out["views"]) == 2
    for v in out["views"]:
        img = v["image"]
        assert img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3
        hv, wv = img.shape[1:]
        assert v["region_boxes"].dtype == torch.float32 and v["region_boxes"].shape == (n, 4)
        assert v["query_boxes"].dtype == torch.float32 and v["query_boxes"].shape == (n, 4)
        assert v["crops"].dtype == torch.uint8 and v["crops"].shape == (n, 3, crop_size, crop_size)
        assert v["view_box"].dtype == torch.float32 and v["view_box"].shape == (4,)
        assert v["view_scale"].dtype == torch.float32 and v["view_scale"].shape == (2,)
        vb, sc = v["view_box"], v["view_scale"]
        # the cut pixels resized to the view's size (the outer box's, the same for both views)
        assert abs(float((vb[2] - vb[0]) * sc[0]) - wv) < 1e-3 and abs(float((vb[3] - vb[1]) * sc[1]) - hv) < 1e-3
        assert torch.all(sc >= 1.0)
        for boxes in (v["region_boxes"], v["query_boxes"]):
            assert (
                torch.all(boxes[:, :2] >= 0) and torch.all(boxes[:, 2] <= wv) and torch.all(boxes[:, 3] <= hv)
            )
    assert 1 <= out["num_proposals"] <= n - 1
    assert out["views"][0]["image"].shape == out["views"][1]["image"].shape


def test_contract_shapes_and_iou(images):
    """Output contract, and the two views' IoU >= tau measured by torchvision (not by the package's own
    ``views.box_iou``): view boxes are xyxy absolute pixels of the resized image, as ``box_iou`` expects."""
    mapper = SiameseViewMapper(seed=0, tau=0.6)
    for i in range(4):
        out = mapper({"file_name": images["color"], "image_id": 5})
        check_contract(out, 10, 128)
        assert (out["height"], out["width"], out["image_id"]) == (300, 400, 5)
        v1, v2 = out["views"]
        iou = tv_box_iou(v1["view_box"][None].double(), v2["view_box"][None].double())
        assert iou.shape == (1, 1) and float(iou) >= 0.6 - 1e-6
        assert 320 <= min(out["resized_height"], out["resized_width"]) <= 480


def _roi(image_chw_uint8, boxes, size):
    src = image_chw_uint8[None].float()
    return roi_align(src, [torch.as_tensor(boxes, dtype=torch.float32)], size, 1.0, 4, aligned=True)


def _original_regions(out, v):
    hw, rhw = (out["height"], out["width"]), (out["resized_height"], out["resized_width"])
    view = out["views"][v]
    return view_to_original(
        view["region_boxes"].numpy(), view["view_box"].numpy(), hw, rhw, out["flip"], view["view_scale"].numpy()
    )


def test_resized_views_show_the_same_content_at_region_boxes(images):
    """Warp a known pattern: region k sampled from view 1 and from view 2 (different zooms) and from the
    original image at the box ``view_to_original`` maps it to all agree (pixel content checks that mapping;
    ``test_views.py`` checks it against a hand-written inverse too); the zoom lies in the official range."""
    original = torch.from_numpy(cv2.imread(images["color"])).permute(2, 0, 1)
    mapper = SiameseViewMapper(seed=1, crop_size=32, tau=0.5, short_side_range=(400, 400), max_size=1000, **NO_AUG)
    rng = np.random.default_rng(0)
    zooms = []
    for _ in range(6):
        out = mapper({"file_name": images["color"], "image_id": 0})
        v1, v2 = out["views"]
        zooms += [float(v1["view_scale"][0]), float(v2["view_scale"][0])]
        a = _roi(v1["image"], v1["region_boxes"], 24)
        b = _roi(v2["image"], v2["region_boxes"], 24)
        ref = _roi(original, _original_regions(out, 0), 24)
        if out["flip"]:
            ref = ref.flip(-1)
        same = (a - b).abs().mean(dim=(1, 2, 3))
        to_ref = (a - ref).abs().mean(dim=(1, 2, 3))
        shuffled = (a - b[torch.as_tensor(rng.permutation(10))]).abs().mean(dim=(1, 2, 3))
        assert same.max() < 6.0 and to_ref.max() < 6.0
        assert same.mean() < 0.4 * shuffled.mean()
        assert np.allclose(_original_regions(out, 0), _original_regions(out, 1), atol=1e-3)
    assert min(zooms) >= 1.18 - 0.01 and max(zooms) <= 1.45 + 0.01


def test_crops_come_from_the_unaugmented_view_and_get_their_own_augmentation(images):
    """Views turned grey (grayscale p=1): with the crop augmentation off, the crops keep their colours and
    equal the resized un-augmented region (roi of the original image); with it on, each crop is grey."""
    original = torch.from_numpy(cv2.imread(images["color"])).permute(2, 0, 1)
    gray_views = dict(color_jitter=None, grayscale_prob=1.0, blur_prob=0.0)
    mapper = SiameseViewMapper(seed=2, crop_size=32, crop_augment=False, **gray_views)
    for _ in range(4):
        out = mapper({"file_name": images["color"], "image_id": 0})
        for v, view in enumerate(out["views"]):
            img = view["image"]
            assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
            crops = view["crops"].float()
            ref = _roi(original, _original_regions(out, v), 32)
            if out["flip"]:
                ref = ref.flip(-1)
            assert (crops - ref).abs().mean(dim=(1, 2, 3)).max() < 8.0
            assert (crops[:, 0] - crops[:, 1]).abs().mean() > 5.0  # still in colour
    # own augmentation per crop: grayscale p=1 also applies to every crop
    out = SiameseViewMapper(seed=2, crop_size=32, **gray_views)({"file_name": images["color"], "image_id": 0})
    for view in out["views"]:
        assert torch.equal(view["crops"][:, 0], view["crops"][:, 1])
    # crop colour jitter draws per crop: with jitter only, crops of the same box differ between views
    jitter = dict(color_jitter=(0.4, 0.4, 0.4, 0.1), color_jitter_prob=1.0, grayscale_prob=0.0, blur_prob=0.0)
    out = SiameseViewMapper(seed=3, crop_size=32, **jitter)({"file_name": images["color"], "image_id": 0})
    c = out["views"][0]["crops"].float()
    ratios = (c.mean(dim=(1, 2, 3)) / _roi(original, _original_regions(out, 0), 32).mean(dim=(1, 2, 3))).numpy()
    assert np.ptp(ratios) > 0.02


def test_seeding_same_seed_same_sample_different_workers_differ(images, monkeypatch):
    d = {"file_name": images["color"], "image_id": 1}
    a, b = SiameseViewMapper(seed=3), SiameseViewMapper(seed=3)
    for _ in range(2):
        oa, ob = a(d), b(d)
        for va, vb in zip(oa["views"], ob["views"]):
            for key in va:
                assert torch.equal(va[key], vb[key])
    # successive calls of one mapper differ
    assert not torch.equal(a(d)["views"][0]["view_box"], a(d)["views"][0]["view_box"])

    outs = []
    for worker_id in (0, 1):
        monkeypatch.setattr(M, "get_worker_info", lambda wid=worker_id: types.SimpleNamespace(id=wid))
        outs.append(SiameseViewMapper(seed=3)(d))
    key = [
        (tuple(o["views"][0]["view_box"].tolist()), tuple(o["views"][1]["view_box"].tolist()), o["flip"])
        for o in outs
    ]
    assert key[0] != key[1]


def test_unreadable_files_return_none_and_are_counted(images, caplog):
    caplog.set_level("WARNING")
    mapper = SiameseViewMapper(seed=0)
    for key in ("corrupt", "empty", "missing"):
        assert mapper({"file_name": images[key], "image_id": key}) is None
    assert mapper.num_unreadable == 3
    assert mapper({"file_name": images["color"], "image_id": 0}) is not None
    assert mapper.num_unreadable == 3
    assert "corrupt.jpg" in caplog.text and "empty.png" in caplog.text


@pytest.mark.parametrize(
    "key,hw", [("gray", (120, 90)), ("rgba", (100, 130)), ("exif", (80, 60)), ("tiny", (20, 30))]
)
def test_gray_rgba_exif_and_tiny_images(images, key, hw):
    mapper = SiameseViewMapper(seed=0, crop_size=128)
    out = mapper({"file_name": images[key], "image_id": key})
    check_contract(out, 10, 128)
    assert (out["height"], out["width"]) == hw  # EXIF orientation applied: 60x80 stored -> 80x60
    if key == "gray":  # without colour jitter a grey input stays grey
        gray = SiameseViewMapper(seed=0, **NO_AUG)({"file_name": images[key], "image_id": key})
        img = gray["views"][0]["image"]
        assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])


def test_no_proposal_in_overlap_skips_and_counts(images, caplog):
    def far_away(dataset_dict, image):  # boxes in a 2-pixel corner strip: never inside the overlap by 5 %
        return np.array([[0, 0, 2, 2], [1, 1, 3, 3]], np.float32), np.array([1.0, 0.5], np.float32)

    caplog.set_level("WARNING")
    mapper = SiameseViewMapper(seed=0, proposal_source=far_away, is_train=False)
    for _ in range(12):
        assert mapper({"file_name": images["color"], "image_id": 0}) is None
    assert mapper.num_no_proposals == 12 and mapper.num_unreadable == 0
    assert caplog.text.count("no proposal lies in the views' overlap") == 2  # at the 1st and the 10th


def test_few_proposals_are_padded_with_cyclic_copies_and_eval_mode(images):
    def one_box(dataset_dict, image):  # the whole image: clamped to the overlap it is the intersection
        h, w = image.shape[:2]
        return np.array([[0, 0, w, h]], np.float32), np.array([1.0], np.float32)

    mapper = SiameseViewMapper(seed=0, proposal_source=one_box, is_train=False)
    for _ in range(3):
        out = mapper({"file_name": images["color"], "image_id": 0})
        check_contract(out, 10, 128)
        assert out["num_proposals"] == 1 and out["flip"] is False
        for view in out["views"]:
            rb = view["region_boxes"]
            size = torch.cat([rb[1, 2:] - rb[1, :2]] * 2)
            assert torch.all((rb[2:] - rb[1]).abs() <= 0.1 * size + 1e-3)  # copies of proposal 1
            assert torch.all(rb[:, :2] >= rb[0, :2] - 1e-3) and torch.all(rb[:, 2:] <= rb[0, 2:] + 1e-3)
        # eval mode: no swap, view 1 holds the outer top-left corner
        assert torch.all(out["views"][0]["view_box"][:2] <= out["views"][1]["view_box"][:2])


def test_random_regions_when_no_proposal_source(images):
    mapper = SiameseViewMapper(seed=0, proposal_source=None)
    for _ in range(3):
        out = mapper({"file_name": images["color"], "image_id": 0})
        check_contract(out, 10, 128)
        for view in out["views"]:
            rb = view["region_boxes"]
            w, h = rb[:, 2] - rb[:, 0], rb[:, 3] - rb[:, 1]
            area0 = w[0] * h[0]
            k = out["num_proposals"]
            assert torch.all(w[1 : 1 + k] * h[1 : 1 + k] >= 0.05 * area0 * 0.97)


def test_rgb_format_is_channel_reversed_bgr(images):
    d = {"file_name": images["color"], "image_id": 0}
    bgr = SiameseViewMapper(seed=4, image_format="BGR", **NO_AUG)(d)
    rgb = SiameseViewMapper(seed=4, image_format="RGB", **NO_AUG)(d)
    assert torch.equal(bgr["views"][0]["image"].flip(0), rgb["views"][0]["image"])
    with pytest.raises(ValueError):
        SiameseViewMapper(image_format="L")


def test_simsiam_augment_steps():
    img = smooth_texture(40, 50, 5)
    rng = np.random.default_rng(0)
    gray = simsiam_augment(rng, img, color_jitter=None, grayscale_prob=1.0, blur_prob=0.0)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(
        gray[..., 0], cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    )
    same = simsiam_augment(rng, img, color_jitter=(0, 0, 0, 0), grayscale_prob=0.0, blur_prob=0.0)
    assert np.array_equal(same, img)
    # brightness only: one multiplicative factor in [0.6, 1.4] for every pixel (up to rounding)
    bright = simsiam_augment(
        rng, img, color_jitter=(0.4, 0, 0, 0), color_jitter_prob=1.0, grayscale_prob=0, blur_prob=0
    )
    mask = (img > 40) & (bright < 250)
    f = np.median(bright[mask] / img[mask])
    assert 0.6 <= f <= 1.4
    assert np.all(np.abs(bright[mask].astype(float) - f * img[mask]) <= 1.0 + 0.01 * img[mask])
    blurred = simsiam_augment(rng, img, color_jitter=None, grayscale_prob=0, blur_prob=1.0)
    assert blurred.shape == img.shape and blurred.std() <= img.std() + 1e-6


class _FixedDraws:
    """Stands in for the ``numpy.random.Generator`` given to ``simsiam_augment``, so the drawn factors are
    known without re-implementing the sampling: a probability draw ``uniform()`` is 0 (every step whose
    probability is > 0 runs), a ranged draw ``uniform(lo, hi)`` returns ``lo + t (hi - lo)`` and is recorded,
    ``permutation`` gives the identity order of the jitter ops (brightness, contrast, saturation, hue)."""

    def __init__(self, t):
        self.t, self.ranges = t, []

    def uniform(self, low=None, high=None):
        if low is None:
            return 0.0
        self.ranges.append((low, high))
        return low + self.t * (high - low)

    def permutation(self, n):
        return np.arange(n)


def _jitter_images():
    """A smooth texture with a sharp saturated rectangle, and uniform noise (every colour, every chroma)."""
    texture = smooth_texture(40, 50, 5)
    texture[10:25, 12:30] = (250, 30, 120)
    return [texture, np.random.default_rng(11).integers(0, 256, (24, 26, 3), dtype=np.uint8)]


def _torchvision(image, image_format, fn, factor):
    """``fn`` (a torchvision.transforms.functional op) on the same uint8 pixels, in and out of ``image_format``."""
    rgb = image[..., ::-1] if image_format == "BGR" else image
    out = fn(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))), factor).numpy().transpose(1, 2, 0)
    return out[..., ::-1] if image_format == "BGR" else out


@pytest.mark.parametrize("image_format", ["BGR", "RGB"])
@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation"])
def test_color_jitter_factors_match_torchvision(op, t, image_format):
    """Brightness, contrast and saturation with strength 0.4 at the factor ``1 - 0.4 + t * 0.8`` (the ends
    and the inside of U[0.6, 1.4]) equal torchvision's ``adjust_*`` on the same uint8 image up to 1 grey
    level: torchvision truncates its blend (and its grey image) to uint8 where the code rounds, and its grey
    weights are 0.2989/0.587/0.114 (OpenCV: 0.299/0.587/0.114); the grey image enters scaled by
    |1 - f| <= 0.4, so the two differ by < 1.5 levels before rounding, i.e. by at most 1 after."""
    strength = {"brightness": (0.4, 0, 0, 0), "contrast": (0, 0.4, 0, 0), "saturation": (0, 0, 0.4, 0)}[op]
    fn = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
          "saturation": TF.adjust_saturation}[op]
    factor = 0.6 + 0.8 * t
    for image in _jitter_images():
        if image_format == "RGB":
            image = np.ascontiguousarray(image[..., ::-1])
        draws = _FixedDraws(t)
        got = M.simsiam_augment(draws, image, image_format, color_jitter=strength, color_jitter_prob=1.0,
                                grayscale_prob=0.0, blur_prob=0.0)
        assert draws.ranges == [(0.6, 1.4)]  # one factor, drawn from U[1 - 0.4, 1 + 0.4]
        expected = _torchvision(image, image_format, fn, factor)
        assert got.dtype == np.uint8 and got.shape == image.shape
        assert np.abs(got.astype(int) - expected).max() <= 1
        assert np.abs(got.astype(int) - image).max() > 20  # the factor did change the image


@pytest.mark.parametrize("image_format", ["BGR", "RGB"])
@pytest.mark.parametrize("strength,t", [(0.1, 0.75), (0.1, 0.25), (0.5, 0.9), (0.5, 0.05)])
def test_color_jitter_hue_matches_torchvision(strength, t, image_format):
    """Hue with strength h at the shift ``-h + 2 h t`` turns (+-18 deg, +72 deg and -81 deg here: whole
    OpenCV hue units of 2 deg, so the code rotates by exactly that) equals torchvision's ``adjust_hue``
    within ``2 + chroma / 60`` grey levels per pixel (chroma = max - min channel of the input pixel):
    OpenCV's uint8 HSV keeps the hue in 2 deg steps (<= 1 deg off) and the middle channel moves by
    chroma / 60 per degree, plus <= 0.5 for the uint8 saturation, 0.5 for OpenCV's rounding and 1 for
    torchvision's truncation back to uint8. Rotating the wrong way, or by a different amount, misses by
    tens of levels on the saturated pixels."""
    shift = -strength + 2 * strength * t
    for image in _jitter_images():
        if image_format == "RGB":
            image = np.ascontiguousarray(image[..., ::-1])
        draws = _FixedDraws(t)
        got = M.simsiam_augment(draws, image, image_format, color_jitter=(0, 0, 0, strength),
                                color_jitter_prob=1.0, grayscale_prob=0.0, blur_prob=0.0)
        assert draws.ranges == [(-strength, strength)]
        expected = _torchvision(image, image_format, TF.adjust_hue, shift)
        chroma = image.max(axis=-1).astype(int) - image.min(axis=-1)
        error = np.abs(got.astype(int) - expected).max(axis=-1)
        assert np.all(error <= 2 + chroma / 60)
        assert np.abs(got.astype(int) - image).max() > 40  # the shift did change the colours


def _gaussian_blur_reference(image, sigma):
    """Separable Gaussian blur in float64, written out: OpenCV's documented kernel for ``ksize=(0, 0)`` on
    8-bit images, ``ksize = round(2 * 3 sigma + 1) | 1`` taps of ``exp(-x^2 / (2 sigma^2))`` normalised,
    borders reflected without repeating the edge pixel (``BORDER_REFLECT_101``, numpy's "reflect")."""
    ksize = int(np.floor(2 * 3 * sigma + 1 + 0.5)) | 1
    x = np.arange(ksize) - ksize // 2
    kernel = np.exp(-x * x / (2 * sigma * sigma))
    kernel /= kernel.sum()
    out = image.astype(np.float64)
    r = ksize // 2
    padded = np.pad(out, ((0, 0), (r, r), (0, 0)), mode="reflect")
    out = sum(kernel[i] * padded[:, i : i + image.shape[1]] for i in range(ksize))
    padded = np.pad(out, ((r, r), (0, 0), (0, 0)), mode="reflect")
    return sum(kernel[i] * padded[i : i + image.shape[0]] for i in range(ksize))


@pytest.mark.parametrize("t", [0.2, 0.5, 1.0])
def test_gaussian_blur_at_the_drawn_sigma(t):
    """Blur only: sigma drawn from U[0.1, 2.0] (0.48, 1.05 and 2.0 here: 5, 7 and 13 taps) and the result
    equals a float64 Gaussian blur at that sigma within 1.5 grey levels: 0.5 for OpenCV's rounding to uint8,
    the rest for its 8-bit path's fixed-point kernel (8 fractional bits per tap). Measured <= 0.99 on this
    image, while a sigma 5 % off misses by >= 2.9 and a 5 x 5 kernel at sigma 2 by far more."""
    image = _jitter_images()[0]
    draws = _FixedDraws(t)
    got = M.simsiam_augment(draws, image, color_jitter=None, grayscale_prob=0.0, blur_prob=1.0)
    assert draws.ranges == [(0.1, 2.0)]
    sigma = 0.1 + 1.9 * t
    assert got.dtype == np.uint8 and got.shape == image.shape
    assert np.abs(got - _gaussian_blur_reference(image, sigma)).max() <= 1.5


@pytest.mark.parametrize("name", ["pretrain_builtin", "pretrain_coco", "pretrain_imagenet"])
def test_pretrain_configs_load(name):
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(os.path.join(REPO, "configs", "common", "data", f"{name}.py"))
    mapper_cfg = cfg.dataloader.train.mapper
    assert cfg.dataloader.train.aspect_ratio_grouping is False
    assert cfg.dataloader.train.dataset.filter_empty is False
    expected = {
        "pretrain_builtin": ((160, 224), 320),
        "pretrain_coco": ((480, 800), 1333),
        "pretrain_imagenet": ((320, 480), 600),
    }[name]
    assert (tuple(mapper_cfg.short_side_range), mapper_cfg.max_size) == expected


def test_builtin_pretrain_config_instantiates_and_yields_a_batch():
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(os.path.join(REPO, "configs", "common", "data", "pretrain_builtin.py"))
    cfg.dataloader.train.num_workers = 0
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.mapper.seed = 0
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert len(batch) == 2
    for out in batch:
        check_contract(out, 10, 64)
        assert min(out["resized_height"], out["resized_width"]) <= 224


@pytest.mark.parametrize("short_side", [(400, 480), (100, 140)])  # enlarging / shrinking base resize
def test_one_pass_view_warp_equals_resize_flip_cut_resize(short_side):
    """The view is resampled in one warp; reference: base resize, flip, integer cut, resize (two passes)."""
    image = smooth_texture(300, 400, 7)
    mapper = SiameseViewMapper(seed=0, short_side_range=short_side, max_size=1000)
    flips = set()
    for i in range(6):
        geometry = mapper.policy.sample(np.random.default_rng(i), image.shape[:2], np.array([[0, 0, 400, 300.0]]))
        flips.add(geometry.flip)
        rh, rw = geometry.resized_hw
        interp = cv2.INTER_AREA if rh < 300 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (rw, rh), interpolation=interp)
        if geometry.flip:
            resized = resized[:, ::-1]
        source = mapper._resize(image, geometry)
        for v in range(2):
            x0, y0, x1, y1 = (int(c) for c in geometry.view_boxes[v])
            out_h, out_w = (int(c) for c in geometry.view_hw[v])
            cut = np.ascontiguousarray(resized[y0:y1, x0:x1])
            ref = cv2.resize(cut, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
            got = mapper._warp_view(source, geometry, v)
            assert got.shape == ref.shape
            diff = np.abs(got.astype(np.float64) - ref)[2:-2, 2:-2]  # borders: replicate vs clamp
            assert diff.mean() < 0.8 and np.percentile(diff, 99) < 4.0  # a 1-px offset gives ~3.6 / 11
    assert flips == {True, False}


class _RecordingDraws:
    """A real ``numpy.random.Generator`` whose ranged draws ``uniform(lo, hi)`` are recorded: with distinct
    strengths per jitter op, the ranges tell which op drew its factor, in which order."""

    def __init__(self, seed):
        self.rng, self.ranges = np.random.default_rng(seed), []

    def uniform(self, low=None, high=None):
        if low is None:
            return self.rng.uniform()
        self.ranges.append((low, high))
        return self.rng.uniform(low, high)

    def permutation(self, n):
        return self.rng.permutation(n)


def test_color_jitter_applies_the_four_ops_in_a_random_order():
    """torchvision ``ColorJitter`` applies brightness, contrast, saturation and hue in a fresh random order per
    call (``torch.randperm(4)``): each op exactly once per call, and over 24 seeds several different orders,
    each op coming first in some of them. The op of each draw is known from its range (strengths 0.1 / 0.2 /
    0.3 / 0.05 give U[0.9, 1.1], U[0.8, 1.2], U[0.7, 1.3], U[-0.05, 0.05])."""
    op_of = {(0.9, 1.1): "b", (0.8, 1.2): "c", (0.7, 1.3): "s", (-0.05, 0.05): "h"}
    image = _jitter_images()[0]
    orders = []
    for seed in range(24):
        draws = _RecordingDraws(seed)
        got = M.simsiam_augment(draws, image, color_jitter=(0.1, 0.2, 0.3, 0.05), color_jitter_prob=1.0,
                                grayscale_prob=0.0, blur_prob=0.0)
        assert got.shape == image.shape and got.dtype == np.uint8
        order = "".join(op_of[tuple(round(v, 6) for v in r)] for r in draws.ranges)
        assert sorted(order) == ["b", "c", "h", "s"], order
        orders.append(order)
    assert len(set(orders)) >= 6, orders
    assert {order[0] for order in orders} == {"b", "c", "s", "h"}, orders
