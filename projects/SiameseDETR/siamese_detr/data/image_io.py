"""The one image reader of the project: every mapper and the proposal generator agree on which files are
readable images and decode them the same way.

:func:`read_image` is Detectron2's ``detection_utils.read_image`` (PIL, EXIF orientation applied, converted
to ``image_format``, ``uint8 [H, W, 3]``) with two differences:

* 16-bit images (PIL modes ``I;16*`` and ``I`` with values in 0..65535) are scaled to 8 bits
  (``round(v * 255 / 65535)``); Detectron2 clips them (a 16-bit value 4096 became 255, not 16).
  Floating-point (``F``) and wider integer pixels have no standard 8-bit mapping and are unreadable;
* an image is unreadable for any error PIL raises (not only ``OSError``: e.g. ``DecompressionBombError``,
  ``SyntaxError``, ``struct.error``) and when its size is degenerate: a side under
  :data:`MIN_IMAGE_SIDE` px or a long/short side ratio over :data:`MAX_ASPECT_RATIO` (such images made
  the augmentations produce huge or empty arrays and EdgeBoxes run for minutes).

``image_format`` must be one of :data:`IMAGE_FORMATS` ("BGR", "RGB"; :func:`check_image_format`): any other
value raises ``UserValueError`` naming it before the file is opened, so a config's wrong format is never
reported (and skipped) as an unreadable image. The mappers check it when they are built, the training tool
when it loads the config.

Training mappers return ``None`` for an unreadable image (Detectron2's ``MapDataset`` then draws another);
each file is logged once per process, not every epoch. When a mapper meets
:data:`MAX_CONSECUTIVE_UNREADABLE` unreadable images in a row it raises :class:`NoReadableImagesError`
(a dataset with no readable image would otherwise retry forever).
"""
import logging
from typing import Dict, Optional, Set, Tuple

import numpy as np
from detectron2.data import detection_utils
from PIL import Image, ImageOps

from ..utils.user_errors import UserError, UserValueError

__all__ = [
    "IMAGE_FORMATS",
    "MAX_ASPECT_RATIO",
    "MAX_CONSECUTIVE_UNREADABLE",
    "MIN_IMAGE_SIDE",
    "NoReadableImagesError",
    "UnreadableImageError",
    "check_image_format",
    "num_unreadable_images",
    "probe_image_size",
    "read_image",
    "read_image_checked",
    "read_image_or_none",
]

logger = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 16
MAX_ASPECT_RATIO = 20.0
MAX_CONSECUTIVE_UNREADABLE = 1000
# the formats read_image decodes to that every mapper, proposal source and model of the project handles: 3 uint8
# channels in one of the two orders their colour augmentation (OpenCV) and pixel statistics know. Of Detectron2's
# other formats, "L" gives 1 channel, "RGBA" / "CMYK" 4, "YUV-BT.601" floats, and PIL's "YCbCr", "HSV", "LAB"
# are no channel order these take.
IMAGE_FORMATS = ("BGR", "RGB")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

_num_unreadable = 0  # unreadable images skipped by any mapper of this process
_warned: Set[str] = set()  # files already logged by this process
_in_a_row: Dict[str, int] = {}  # unreadable images in a row, per reader


class UnreadableImageError(UserError, ValueError):
    """A file is missing, not an image, truncated, of an unsupported pixel type or of a degenerate size."""


class NoReadableImagesError(UserError, RuntimeError):
    """Too many unreadable images in a row: the dataset has no (or almost no) readable image."""


def check_image_format(value, name: str = "image_format") -> str:
    """``value`` when it is one of :data:`IMAGE_FORMATS`, else ``UserValueError``: "NAME must be 'BGR' or 'RGB'
    (...), got VALUE", where ``name`` says where the value came from (a config key, a mapper's argument). A
    grey-level image needs no format of its own: it is read as three equal channels."""
    if isinstance(value, str) and value in IMAGE_FORMATS:
        return value
    accepted = " or ".join(repr(f) for f in IMAGE_FORMATS)
    hint = ""
    if isinstance(value, str) and value.upper() in IMAGE_FORMATS:
        hint = f" (upper case: {value.upper()!r})"
    elif isinstance(value, str) and value.upper() in ("L", "GRAY", "GREY"):
        hint = " (a grey-level image is read as three equal channels in either order)"
    raise UserValueError(f"{name} must be {accepted} (the channel order images are decoded to), got {value!r}"
                         f"{hint}; the configs use 'BGR', the order of their model.input_format and pixel statistics.")


def num_unreadable_images() -> int:
    """Unreadable images skipped by the mappers of this process (dataloader workers count in their own)."""
    return _num_unreadable


def _to_8bit(image: Image.Image) -> Image.Image:
    if image.mode == "F":
        raise UnreadableImageError("floating-point pixels (PIL mode F) have no standard 8-bit mapping")
    if image.mode not in _SIXTEEN_BIT_MODES:
        return image
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise UnreadableImageError(f"{image.mode} pixels outside 0..65535 (32-bit images are not supported)")
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")


def check_image_shape(height: int, width: int) -> None:
    """Raise :class:`UnreadableImageError` for a degenerate size (see the module docstring)."""
    if min(height, width) < MIN_IMAGE_SIDE:
        raise UnreadableImageError(f"degenerate size {height}x{width} (a side under {MIN_IMAGE_SIDE} px)")
    if max(height, width) > MAX_ASPECT_RATIO * min(height, width):
        raise UnreadableImageError(
            f"degenerate size {height}x{width} (long/short side ratio over {MAX_ASPECT_RATIO:g})"
        )


def probe_image_size(file_name: str) -> Tuple[int, int]:
    """``(height, width)`` after EXIF orientation, from the file header, with the checks that need no pixels
    (pixel type, degenerate size). Raises :class:`UnreadableImageError`.

    JPEG and most formats are not decoded; a PNG without an EXIF chunk before its pixel data is (Pillow reads
    the whole file to look for an ``eXIf`` chunk after them, as :func:`read_image` does), so that both agree
    on the orientation."""
    try:
        with open(file_name, "rb") as f:
            image = Image.open(f)
            width, height = image.size
            mode = image.mode
            orientation = image.getexif().get(0x0112, 1)
    except Exception as e:
        raise UnreadableImageError(f"{type(e).__name__}: {e}".strip()) from e
    if orientation in (5, 6, 7, 8):  # transposed or rotated by 90 degrees
        height, width = width, height
    if mode == "F":
        raise UnreadableImageError("floating-point pixels (PIL mode F) have no standard 8-bit mapping")
    check_image_shape(height, width)
    return height, width


def read_image(file_name: str, image_format: str = "BGR") -> np.ndarray:
    """Decode ``file_name`` to ``uint8 [H, W, 3]`` in ``image_format`` ("BGR" or "RGB"; EXIF-rotated).

    Raises:
        UnreadableImageError: with the reason (the original exception's type and message).
        UserValueError: ``image_format`` is not one of :data:`IMAGE_FORMATS` (checked before the file is
            opened: the mistake is the caller's, not the file's).
    """
    check_image_format(image_format)
    try:
        with open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_8bit(image)
            array = detection_utils.convert_PIL_to_numpy(image, image_format)
    except UnreadableImageError:
        raise
    except Exception as e:  # missing, zero-byte, truncated, not an image, decompression bomb, ...
        raise UnreadableImageError(f"{type(e).__name__}: {e}".strip()) from e
    if array.ndim != 3 or array.shape[2] != 3:
        raise UnreadableImageError(f"decoded to shape {array.shape}")
    check_image_shape(*array.shape[:2])
    return array


def read_image_checked(file_name: str, image_format: str = "BGR") -> Tuple[Optional[np.ndarray], Optional[str]]:
    """``(image, None)`` or ``(None, reason)``; never raises for a bad file (a bad ``image_format`` raises, see
    :func:`read_image`)."""
    try:
        return read_image(file_name, image_format), None
    except UnreadableImageError as e:
        return None, str(e)


def read_image_or_none(file_name: str, image_format: str, reader: str) -> Optional[np.ndarray]:
    """:func:`read_image`, or ``None`` with a counted warning naming ``reader`` and the file (logged once per
    file per process). A mapper returning that ``None`` makes Detectron2's ``MapDataset`` draw another sample.

    Raises:
        NoReadableImagesError: the :data:`MAX_CONSECUTIVE_UNREADABLE`-th unreadable image in a row of ``reader``.
    """
    global _num_unreadable
    image, reason = read_image_checked(file_name, image_format)
    if image is not None:
        _in_a_row[reader] = 0
        return image
    _num_unreadable += 1
    _in_a_row[reader] = _in_a_row.get(reader, 0) + 1
    if file_name not in _warned:
        _warned.add(file_name)
        logger.warning(f"{reader}: skipping unreadable image {file_name!r} ({reason}); "
                       f"{len(_warned)} different files skipped in this process so far")
    if _in_a_row[reader] >= MAX_CONSECUTIVE_UNREADABLE:
        raise NoReadableImagesError(
            f"{reader}: the last {_in_a_row[reader]} images drawn were all unreadable (last: {file_name!r}: "
            f"{reason}): the dataset has no readable image, or its paths are wrong (check DETECTRON2_DATASETS)"
        )
    return None
