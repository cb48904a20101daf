"""``argparse`` types of the tools' numeric options: the value is checked where it is parsed, and a wrong
one is a usage error (exit 2) that names the option and what it means. Also :class:`ExtendList`, the action
of the list options that may be repeated."""
import argparse
from typing import Callable

__all__ = ["ExtendList", "at_least_one", "non_negative_seed", "probability"]


def at_least_one(what: str) -> Callable[[str], int]:
    """An argparse type for a whole number >= 1; ``what`` says what it counts (e.g. "images to draw")."""
    return _whole_number_at_least(1, what)


def non_negative_seed(text: str) -> int:
    """An argparse type for ``--seed``: a whole number >= 0."""
    return _whole_number_at_least(0, "a seed")(text)


def _whole_number_at_least(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number ({what}), got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum} ({what}), got {value}")
        return value

    parse.__name__ = "whole number"  # what argparse names in "invalid <type> value"
    return parse


def probability(what: str) -> Callable[[str], float]:
    """An argparse type for a number in [0, 1] (not NaN); ``what`` says what it is (e.g. "detection scores")."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
        if not 0.0 <= value <= 1.0:  # NaN fails both comparisons
            raise argparse.ArgumentTypeError(f"must be in [0, 1] ({what}), got {text}")
        return value

    parse.__name__ = "number in [0, 1]"
    return parse


class ExtendList(argparse.Action):
    """Action of a list option (``nargs="+"`` / ``"*"``) that may be given more than once: ``--x a b --x c``
    gives ``[a, b, c]``, where argparse's default action keeps only the last use (``[c]``) without a word.
    The first use replaces the default; later uses extend it."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        given = list(values) if isinstance(values, (list, tuple)) else [values]
        if current is None or current is self.default:
            setattr(namespace, self.dest, given)
        else:
            setattr(namespace, self.dest, list(current) + given)
