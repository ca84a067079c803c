"""The ``fes`` command's argument types: each refuses a bad value as the command line is read.

A bad number, port or list of applications is a usage error (exit 2,
argparse's), said before the command opens a store or says it is running.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["UsageError", "count", "names", "port", "seconds", "seconds_or_zero", "size"]


class UsageError(Exception):
    """A value on the command line that only the loaded system can refuse (exit 2).

    Such as an application name the system does not have: said as argparse
    says a bad option, before anything is opened or started.
    """

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"argument {option}: {message}")


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None


def count(text: str) -> int:
    """A position, a limit or a number of processes: a whole number, 0 or more."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, not {value}")
    return value


def size(text: str) -> int:
    """A batch's or a page's size: a whole number, 1 or more."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, not {value}")
    return value


def port(text: str) -> int:
    """A TCP port: 0 (any free one) to 65535."""
    value = _whole(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, not {value}")
    return value


def _seconds(text: str, zero: bool) -> float:
    least = "0 or more" if zero else "above 0"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 if zero else value > 0) or value == math.inf:  # NaN fails both
        raise argparse.ArgumentTypeError(
            f"expected a finite number of seconds, {least}, not {text!r}"
        )
    return value


def seconds(text: str) -> float:
    """A wait in seconds: a finite number above 0 (``0.05``, ``2``)."""
    return _seconds(text, zero=False)


def seconds_or_zero(text: str) -> float:
    """A longest wait in seconds: a finite number, 0 (no wait) or more."""
    return _seconds(text, zero=True)


def names(text: str) -> list[str]:
    """Applications, comma-separated: at least one (a trailing comma is let pass).

    An empty list is refused rather than taken for "all": a deploy script
    whose variable is unset would otherwise run every application here.
    """
    found = [name.strip() for name in text.split(",") if name.strip()]
    twice = sorted({name for name in found if found.count(name) > 1})
    if twice:
        raise argparse.ArgumentTypeError(
            f"names {', '.join(map(repr, twice))} more than once, in {text!r}"
        )
    if not found:
        raise argparse.ArgumentTypeError(
            f"expected one or more application names, comma-separated, not {text!r} "
            "(leave --apps out to run them all)"
        )
    return found
