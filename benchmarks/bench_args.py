"""Command-line checks shared by the benchmarks: a misused option stops the benchmark before anything is
built, with one line naming the option and the fix (not a traceback minutes later, nor a ZeroDivisionError
after the whole measurement)."""
import argparse


def at_least(minimum: int, why: str = ""):
    """An argparse ``type``: an integer ``>= minimum``; otherwise argparse's one-line usage error naming the
    value, the bound and ``why``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            reason = f" ({why})" if why else ""
            raise argparse.ArgumentTypeError(f"{value} is too small: give an integer >= {minimum}{reason}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """Refuse (``parser.error``) a ``--device`` that is neither ``cpu`` nor a CUDA device present here."""
    import torch

    if device == "cpu":
        return
    if not device.startswith("cuda"):
        parser.error(f"--device {device}: give cpu or cuda (cuda:N)")
    if not torch.cuda.is_available():
        parser.error(f"--device {device}: no CUDA device is available here; run with --device cpu")


def parse_device_benchmark_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Add the options shared by the benchmarks that measure in child processes (``--device``, cuda where
    available; ``--no-append``; the hidden ``--child``), parse ``argv`` and refuse a device that is not here
    (:func:`check_device`)."""
    import torch

    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="default: cuda where available, else cpu")
    parser.add_argument("--no-append", action="store_true", help="print only, do not touch RESULTS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_device(parser, args.device)
    return args
