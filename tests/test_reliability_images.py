"""Issue 11 items 3 and 4: one lister and one reader for the generator and every mapper; odd images are
handled the same everywhere, logged once; no readable image is an error; evaluation never skips an image."""
import logging
import os

import cv2
import numpy as np
import pytest
from detectron2.data import MapDataset
from PIL import Image

from siamese_detr.data import image_io
from siamese_detr.data.dataset_checks import check_images_readable
from siamese_detr.data.detr_mapper import DetrDatasetMapper
from siamese_detr.data.image_folder import list_image_files, load_image_folder
from siamese_detr.data.image_io import NoReadableImagesError, UnreadableImageError, read_image
from siamese_detr.data.proposals import ProposalStore
from siamese_detr.data.proposals.generate import list_image_dir
from siamese_detr.data.siamese_mapper import SiameseViewMapper
from script_modules import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool():
    return load_script(os.path.join(ROOT, "tools", "generate_proposals.py"), "generate_proposals_rel")


def _noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(40, 220, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def odd_folder(tmp_path):
    """Good images and every kind of bad one; returns (root, {relative path: readable?})."""
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "good.png"), _noise(48, 64))
    cv2.imwrite(str(root / "sub" / "good.jpg"), _noise(40, 40, 1))
    Image.fromarray(_noise(32, 32, 2)[:, :, 0]).convert("P").save(root / "palette.gif")
    cv2.imwrite(str(root / "gray16.png"), (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16))
    Image.fromarray(np.zeros((32, 32), np.float32)).save(root / "float.tif")  # mode F
    cv2.imwrite(str(root / "tiny.png"), _noise(4, 4))  # degenerate: a side under 16 px
    cv2.imwrite(str(root / "sliver.png"), _noise(16, 800))  # degenerate: aspect ratio 50
    good = (root / "good.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("not an image")
    (root / "notes.txt").write_text("not listed")
    readable = {"good.png": True, "sub/good.jpg": True, "palette.gif": True, "gray16.png": True,
                "float.tif": False, "tiny.png": False, "sliver.png": False, "truncated.png": False,
                "empty.jpg": False, "text.jpg": False}
    return root, readable


def test_generator_and_image_folders_list_the_same_files_and_follow_symlinks(tmp_path, odd_folder):
    root, readable = odd_folder
    os.symlink(root / "sub", root / "linked")  # a symlinked folder
    os.symlink(root, root / "sub" / "loop")  # a symlink loop back to the root
    expected = sorted(list(readable) + ["linked/good.jpg"])
    assert list_image_files(str(root)) == expected
    assert [r["image_id"] for r in list_image_dir(str(root))] == expected
    assert list_image_dir(str(root)) == [{"file_name": d["file_name"], "image_id": d["image_id"]}
                                         for d in load_image_folder(str(root))]


def test_every_reader_agrees_on_which_images_are_readable(tmp_path, odd_folder):
    root, readable = odd_folder
    detr = DetrDatasetMapper(True, [])
    siamese = SiameseViewMapper(seed=0, short_side_range=(32, 48), max_size=64, crop_size=16)
    out = str(tmp_path / "store")
    assert _tool().main(["--image-dir", str(root), "--method", "random", "--max-boxes", "8", "--output", out,
                         "--no-progress"]) == 0
    store = ProposalStore.open(out)
    for rel, ok in readable.items():
        d = {"file_name": str(root / rel), "image_id": rel}
        assert (detr(dict(d)) is not None) == ok, rel
        assert (siamese(dict(d)) is not None) == ok, rel
        assert (rel in store) == ok, rel
        with pytest.raises(UnreadableImageError) if not ok else _no_error():
            DetrDatasetMapper(False, [])(dict(d))  # inference: raises instead of skipping
    assert sorted(s["image_id"] for s in store.skipped) == sorted(r for r, ok in readable.items() if not ok)


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    values = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    path = str(tmp_path / "g16.png")
    cv2.imwrite(path, values)
    image = read_image(path, "BGR")
    expected = np.floor(values.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3)
    assert all(np.array_equal(image[:, :, c], expected) for c in range(3))


def test_any_pil_error_makes_an_image_unreadable_not_a_crash(tmp_path, monkeypatch):
    path = str(tmp_path / "big.png")
    cv2.imwrite(path, _noise(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 px > 2 * 100: DecompressionBombError
    with pytest.raises(UnreadableImageError, match="DecompressionBomb"):
        read_image(path)
    assert DetrDatasetMapper(True, [])({"file_name": path, "image_id": 0}) is None


def test_a_skipped_image_is_logged_once(tmp_path, caplog):
    bad = str(tmp_path / "bad.jpg")
    open(bad, "w").write("x")
    mapper = DetrDatasetMapper(True, [])
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # three "epochs"
            assert mapper({"file_name": bad, "image_id": 0}) is None
    assert len([r for r in caplog.records if "bad.jpg" in r.getMessage()]) == 1 and mapper.num_unreadable == 3


def test_a_dataset_without_readable_images_stops_instead_of_retrying_forever(tmp_path, monkeypatch):
    """Detectron2's MapDataset retries other indices (for ImageNet, 1.28 M of them, then a cryptic
    ValueError); the reader stops after MAX_CONSECUTIVE_UNREADABLE in a row with a clear message."""
    monkeypatch.setattr(image_io, "MAX_CONSECUTIVE_UNREADABLE", 5)
    monkeypatch.setitem(image_io._in_a_row, "DetrDatasetMapper", 0)
    dicts = []
    for i in range(8):
        (tmp_path / f"{i}.jpg").write_text("x")
        dicts.append({"file_name": str(tmp_path / f"{i}.jpg"), "image_id": i})
    with pytest.raises(NoReadableImagesError, match="5 images drawn were all unreadable"):
        MapDataset(dicts, DetrDatasetMapper(True, []))[0]


def test_generator_refuses_a_folder_without_readable_images(tmp_path, capsys):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "store"
    assert _tool().main(["--image-dir", str(root), "--method", "random", "--output", str(out),
                         "--no-progress"]) == 1
    assert "none of the 3 images could be read" in capsys.readouterr().err
    assert not (out / "meta.json").exists()


def test_a_test_set_with_unreadable_images_is_refused_listing_them(tmp_path, odd_folder):
    root, readable = odd_folder
    dicts = [{"file_name": str(root / rel), "image_id": rel} for rel in readable]
    with pytest.raises(UnreadableImageError) as err:
        check_images_readable(dicts, name="my_test")
    bad = [rel for rel, ok in readable.items() if not ok]
    message = str(err.value)
    assert f"{len(bad)} of {len(readable)} images of my_test" in message
    assert all(os.path.basename(rel) in message for rel in bad)
    check_images_readable([d for d in dicts if readable[d["image_id"]]])  # the readable ones pass


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_header_probe_and_the_reader_agree_on_every_exif_orientation(tmp_path, orientation):
    """Orientations 5-8 turn a 20 x 40 image into 40 x 20 (5 and 7 transpose, 6 and 8 rotate), 1-4 keep it."""
    path = str(tmp_path / f"o{orientation}.jpg")
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.full((20, 40, 3), 128, np.uint8)).save(path, exif=exif)
    expected = (40, 20) if orientation >= 5 else (20, 40)
    assert image_io.probe_image_size(path) == expected == read_image(path).shape[:2]


@pytest.mark.parametrize("height, width, readable", [(16, 16, True), (15, 15, False), (16, 320, True),
                                                     (16, 321, False), (320, 16, True), (321, 16, False)])
def test_the_degenerate_size_limits_are_inclusive(height, width, readable):
    """A side of 16 px and a side ratio of 20 are still readable (MIN_IMAGE_SIDE, MAX_ASPECT_RATIO)."""
    assert (image_io.MIN_IMAGE_SIDE, image_io.MAX_ASPECT_RATIO) == (16, 20)
    if readable:
        image_io.check_image_shape(height, width)
    else:
        with pytest.raises(UnreadableImageError, match=f"degenerate size {height}x{width}"):
            image_io.check_image_shape(height, width)


def test_16_bit_white_and_32_bit_integer_pixels_in_0_65535_map_to_8_bits(tmp_path):
    """The 16-bit range is inclusive: 65535 (16-bit white) is 255, not an error. PIL mode ``I`` (32-bit integer,
    e.g. a TIFF) with values in 0..65535 is scaled like 16 bits: round(4096 * 255 / 65535) = round(15.94) = 16
    (a clip would give 255); a value outside 0..65535 (-5 or 70000) has no 8-bit mapping: unreadable."""
    white = str(tmp_path / "white16.png")
    cv2.imwrite(white, np.full((20, 20), 65535, np.uint16))
    assert Image.open(white).mode.startswith("I")
    assert (read_image(white) == 255).all()
    for name, value, expected in (("i4096.tif", 4096, 16), ("i0.tif", 0, 0), ("i65535.tif", 65535, 255)):
        Image.fromarray(np.full((20, 20), value, np.int32)).save(tmp_path / name)
        assert Image.open(tmp_path / name).mode == "I"
        image = read_image(str(tmp_path / name), "RGB")
        assert image.shape == (20, 20, 3) and (image == expected).all(), name
    for name, value in (("negative.tif", -5), ("wide.tif", 70000)):
        pixels = np.full((20, 20), 4096, np.int32)
        pixels[3, 7] = value  # one pixel out of range is enough
        Image.fromarray(pixels).save(tmp_path / name)
        with pytest.raises(UnreadableImageError, match="outside 0..65535"):
            read_image(str(tmp_path / name))


def test_the_header_probe_refuses_floating_point_pixels_as_the_reader_does(tmp_path):
    """``probe_image_size`` (the sampled-image check of the loaders) must not pass a mode-F image that every
    mapper then skips: both refuse it, with the same reason."""
    path = str(tmp_path / "float.tif")
    Image.fromarray(np.zeros((32, 32), np.float32)).save(path)
    with pytest.raises(UnreadableImageError, match="floating-point"):
        image_io.probe_image_size(path)
    with pytest.raises(UnreadableImageError, match="floating-point"):
        read_image(path)


def test_a_readable_image_resets_the_count_of_unreadable_images_in_a_row(tmp_path, monkeypatch):
    """Only MAX_CONSECUTIVE_UNREADABLE unreadable images *in a row* stop training: with the limit at 3,
    bad, bad, good, bad, bad passes (the good image resets the count to 0) and the next bad image is the 3rd
    in a row. The count is kept per reader: another reader's failures do not add to it."""
    monkeypatch.setattr(image_io, "MAX_CONSECUTIVE_UNREADABLE", 3)
    for reader in ("reset_test", "other_reader"):
        monkeypatch.setitem(image_io._in_a_row, reader, 0)
    bad = str(tmp_path / "bad.jpg")
    (tmp_path / "bad.jpg").write_text("x")
    good = str(tmp_path / "good.png")
    cv2.imwrite(good, _noise(32, 32))
    for path in (bad, bad, good, bad):
        image_io.read_image_or_none(path, "BGR", "reset_test")
    for _ in range(2):  # another reader's failures, below its own limit
        assert image_io.read_image_or_none(bad, "BGR", "other_reader") is None
    assert image_io.read_image_or_none(bad, "BGR", "reset_test") is None  # 2nd in a row
    with pytest.raises(NoReadableImagesError, match="last 3 images drawn"):
        image_io.read_image_or_none(bad, "BGR", "reset_test")


def test_a_test_image_repaired_between_evaluations_is_decoded_again(tmp_path):
    """check_images_readable caches each file's result by path, size and modification time (periodic
    evaluations decode once): a truncated image refused once and then restored is accepted at the next check."""
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), _noise(48, 64))
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    dicts = [{"file_name": str(path), "image_id": 0}]
    with pytest.raises(UnreadableImageError, match="1 of 1 images of fixed cannot be read"):
        check_images_readable(dicts, name="fixed")
    path.write_bytes(good)
    check_images_readable(dicts, name="fixed")  # no error: decoded again, not the cached failure
