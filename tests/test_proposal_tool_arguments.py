"""tools/generate_proposals.py: the argument errors left to the tool after argparse, one line each that names
the option and its value (worker and chunk counts, no image source, an image folder without images), and
``--merge`` of a store merged already (nothing to do, not an error)."""
import os

import pytest

from siamese_detr.data.image_folder import IMAGE_EXTENSIONS
from siamese_detr.data.proposals import ProposalStore
from test_proposal_tool_edge_cases import _args, _images, _tool

gen = _tool()


def _error_lines(err: str) -> list:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("option", ["--num-workers", "--chunk-size"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_a_worker_or_chunk_count_below_one_is_named_with_its_value(tmp_path, capsys, option, value):
    images, out = str(tmp_path / "imgs"), str(tmp_path / "out")
    _images(images, 2)
    assert gen.main(_args(images, out, option, value)) == 2
    assert _error_lines(capsys.readouterr().err) == [f"error: {option} must be at least 1, got {value}"]
    assert not os.path.exists(out)


def test_no_image_source_is_refused(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert gen.main(["--method", "random", "--output", out, "--no-progress"]) == 2
    assert _error_lines(capsys.readouterr().err) == ["error: give --dataset NAME or --image-dir DIR"]
    assert not os.path.exists(out)


def test_an_image_dir_without_images_names_the_extensions_and_any_archives(tmp_path, capsys):
    """At any depth: a folder holding only other files (and a sub-folder of them) lists what it looked for;
    one holding archives (ImageNet's train tar of tars) says to extract them, naming them."""
    folder, out = tmp_path / "imgs", str(tmp_path / "out")
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("x")
    (folder / "sub" / "labels.csv").write_text("x")
    assert gen.main(_args(str(folder), out)) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: --image-dir {str(folder)!r}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    assert "archives" not in line
    (folder / "n01440764.tar").write_bytes(b"")
    assert gen.main(_args(str(folder), out)) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "it holds archives (n01440764.tar): extract each into a folder of its own" in line
    assert not os.path.exists(out)


def test_merge_of_a_store_merged_already_does_nothing(tmp_path, capsys):
    """``--merge`` after the last shard merged (shard folders removed): the store is complete, so there is
    nothing to do (exit 0, the store unchanged); with ``--overwrite`` there is nothing to merge from (error)."""
    images, out = str(tmp_path / "imgs"), str(tmp_path / "out")
    _images(images, 3)
    assert gen.main(_args(images, out, "--num-shards", "2", "--shard-id", "0")) == 0
    assert gen.main(_args(images, out, "--num-shards", "2", "--shard-id", "1")) == 0
    assert not os.path.exists(os.path.join(out, "shards")) or not os.listdir(os.path.join(out, "shards"))
    before = {i: ProposalStore.open(out).get(i)[0].tolist() for i in ProposalStore.open(out).image_ids}
    capsys.readouterr()
    assert gen.main(["--output", out, "--merge"]) == 0
    after = ProposalStore.open(out)
    assert {i: after.get(i)[0].tolist() for i in after.image_ids} == before
    assert gen.main(["--output", out, "--merge", "--overwrite"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: nothing to merge:") and line.endswith("(they were removed after the merge)")
