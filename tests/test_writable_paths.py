"""Where files can be written (``siamese_detr.utils.writable`` and ``output_paths``) at the edges the tools'
tests leave open: a dangling link on the way or at the path, a file the process may not write, a folder
made as a file between the check and the write."""
import os

import pytest

from siamese_detr.utils import writable
from siamese_detr.utils.output_paths import check_output_file
from siamese_detr.utils.user_errors import UserOSError
from siamese_detr.utils.writable import file_problem, folder_problem, make_folder


def test_a_dangling_link_on_the_way_is_named_not_looked_through(tmp_path):
    """A link to nothing cannot hold files: the check stops there instead of judging the folder it is in."""
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "nowhere")
    assert folder_problem(link / "out") == f"cannot be made: {link} is not a folder"
    assert folder_problem(link) == "is not a folder"
    with pytest.raises(UserOSError, match=r"--output .*gone exists already: give a new file, or add --overwrite"):
        check_output_file(str(link))


def test_an_existing_file_the_process_may_not_write_is_named(tmp_path, monkeypatch):
    """As root every permission bit is ignored, so the refusal is stood in by ``os.access``."""
    target = tmp_path / "curves.png"
    target.write_bytes(b"x")
    monkeypatch.setattr(writable.os, "access", lambda path, mode: os.fspath(path) != str(target))
    assert file_problem(target) == "is not writable"
    assert file_problem(tmp_path / "other.png") is None


def test_a_folder_made_as_a_file_after_the_check_is_a_user_error(tmp_path, monkeypatch):
    def made_meanwhile(path, exist_ok=False):
        raise FileExistsError(17, "File exists", str(path))

    monkeypatch.setattr(writable.os, "makedirs", made_meanwhile)
    with pytest.raises(UserOSError, match=r"^the split folder .*/splits cannot be made \(File exists\); set "
                                          r"\$DETECTRON2_DATASETS"):
        make_folder(tmp_path / "splits", "the split folder", "set $DETECTRON2_DATASETS to a folder you can write to")


def test_an_image_extension_opencv_cannot_encode_is_a_user_error_naming_the_file(tmp_path):
    import numpy as np

    from siamese_detr.utils.output_paths import write_image

    target = tmp_path / "grid.xyz"
    with pytest.raises(UserOSError, match=rf"^cannot write {target}: .*extension"):
        write_image(str(target), np.zeros((8, 8, 3), np.uint8))
    assert not target.exists()
