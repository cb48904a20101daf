"""Reading images in mappers without letting one bad file stop a long run (``shared/DESIGN.md`` §3)."""
import logging
from typing import Optional

import numpy as np
from detectron2.data import detection_utils

logger = logging.getLogger(__name__)

_num_unreadable = 0  # unreadable images skipped by any mapper of this process


def num_unreadable_images() -> int:
    """Unreadable images skipped by the mappers of this process (dataloader workers count in their own)."""
    return _num_unreadable


def read_image_or_none(file_name: str, image_format: str, reader: str) -> Optional[np.ndarray]:
    """``detection_utils.read_image`` (EXIF orientation applied, converted to ``image_format``, HxWx3 uint8),
    or ``None`` with a counted warning naming ``reader`` and the file when it is missing, truncated, not an
    image or decodes to no pixels. A mapper returning that ``None`` makes Detectron2's ``MapDataset`` draw
    another sample."""
    global _num_unreadable
    try:
        image = detection_utils.read_image(file_name, format=image_format)
    except (OSError, ValueError, SyntaxError) as e:  # missing, zero-byte, truncated or not an image
        reason = f"{type(e).__name__}: {e}"
    else:
        if image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 1:
            return image
        reason = f"decoded to shape {image.shape}"
    _num_unreadable += 1
    logger.warning(f"{reader}: skipping unreadable image {file_name!r} ({reason}); "
                   f"{_num_unreadable} skipped in this process so far")
    return None
