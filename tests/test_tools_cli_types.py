"""``siamese_detr.utils.cli_types``: the argparse types of the tools' numeric options, at their boundaries."""
import argparse

import pytest

from siamese_detr.utils.cli_types import ExtendList, at_least_one, non_negative_seed, probability


@pytest.mark.parametrize("text", ["1.5", "2.0", "one", ""])
def test_at_least_one_takes_whole_numbers_only(text):
    """A count is a whole number as written: ``1.5`` is not silently truncated to 1 (nor ``2.0`` taken)."""
    with pytest.raises(argparse.ArgumentTypeError, match="expected a whole number"):
        at_least_one("images to draw")(text)


def test_at_least_one_boundary():
    parse = at_least_one("images to draw")
    assert parse("1") == 1 and parse(" 12 ") == 12
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be at least 1 \(images to draw\), got 0"):
        parse("0")


def test_a_seed_may_be_zero_not_negative():
    assert non_negative_seed("0") == 0 and non_negative_seed("7") == 7
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be at least 0 \(a seed\), got -1"):
        non_negative_seed("-1")


def test_probability_takes_both_ends_and_refuses_nan():
    parse = probability("detection scores")
    assert parse("0") == 0.0 and parse("1") == 1.0 and parse("0.5") == 0.5
    for text in ("nan", "-0.01", "1.01", "inf"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"must be in \[0, 1\] \(detection scores\)"):
            parse(text)


def test_extend_list_replaces_the_default_then_extends():
    """``--x a b --x c`` gives ``[a, b, c]``; the first use replaces a non-empty default; no use keeps it."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--x", action=ExtendList, nargs="+", default=["d"])
    assert parser.parse_args([]).x == ["d"]
    assert parser.parse_args(["--x", "a", "b"]).x == ["a", "b"]
    assert parser.parse_args(["--x", "a", "b", "--x", "c"]).x == ["a", "b", "c"]
