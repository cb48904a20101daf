"""Checks of the mappers' image format and of the pretraining mappers' sizes and counts, made when the mapper is
built (at start-up), so that a wrong value is one error naming its config key (``dataloader.train.mapper.KEY``)
instead of an OpenCV or numpy traceback from a data-loader worker at the first sample (or, for the image
format, every image skipped as unreadable)."""
from typing import Sequence, Tuple

from .image_io import check_image_format
from ..utils.user_errors import UserValueError

__all__ = ["at_least_one", "checked_image_format", "size_range"]

_KEY = "dataloader.train.mapper."


def _whole(mapper: str, key: str, value, meaning: str) -> int:
    if isinstance(value, bool) or not float(value).is_integer():
        raise UserValueError(f"{mapper}: {_KEY}{key} ({meaning}) must be a whole number, got {value!r}")
    return int(value)


def checked_image_format(mapper: str, value, section: str = "train") -> str:
    """``value`` when it is an image format the mappers handle (:data:`~.image_io.IMAGE_FORMATS`), else
    ``UserValueError`` naming ``mapper``'s argument and its config key ``dataloader.<section>.mapper.image_format``
    (``section``: "train" or "test")."""
    return check_image_format(value, f"{mapper}: image_format (dataloader.{section}.mapper.image_format)")


def at_least_one(mapper: str, key: str, value, meaning: str) -> int:
    """``value`` as an int >= 1, else ``UserValueError`` naming ``dataloader.train.mapper.<key>`` and ``meaning``
    (e.g. "the side of the region crops, in pixels")."""
    number = _whole(mapper, key, value, meaning)
    if number < 1:
        raise UserValueError(f"{mapper}: {_KEY}{key} ({meaning}) must be at least 1, got {value!r}")
    return number


def size_range(mapper: str, key: str, value: Sequence, meaning: str) -> Tuple[int, int]:
    """``value`` as ``(low, high)`` whole numbers with ``1 <= low <= high`` (both ends drawn), else
    ``UserValueError`` naming the key, e.g. ``short_side_range=[200,100]``."""
    pair = tuple(value)
    if len(pair) != 2:
        raise UserValueError(f"{mapper}: {_KEY}{key} ({meaning}) must be [low, high], got {list(pair)}")
    low, high = (_whole(mapper, key, v, meaning) for v in pair)
    if not 1 <= low <= high:
        raise UserValueError(f"{mapper}: {_KEY}{key} ({meaning}) must be [low, high] with 1 <= low <= high, got "
                             f"{list(pair)}")
    return low, high
