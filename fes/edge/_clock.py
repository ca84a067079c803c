"""The edge's clock: the default time source and the exact microsecond form stores keep."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fes.errors import ConfigurationError
from fes.events import EPOCH

__all__ = ["stamp", "to_micros", "utc_now"]

_MICROSECOND = timedelta(microseconds=1)
_time_ns = time.time_ns


def utc_now() -> datetime:
    """The default clock: the current time in UTC."""
    return datetime.now(UTC)


def stamp(clock: Callable[[], datetime]) -> tuple[datetime | int, int]:
    """An append's time from ``clock``: what its envelopes carry, and the microseconds stored.

    The default clock (:func:`utc_now`) is read once, in integer
    microseconds, and the envelopes carry those: a :class:`fes.Recorded`
    makes the UTC datetime of exactly them when its timestamp is first read.
    Another clock's datetime is carried as it is if it is in UTC (read back,
    a timestamp is in UTC), and as its microseconds otherwise.
    """
    if clock is utc_now:
        micros = _time_ns() // 1000
        return micros, micros
    now = clock()
    micros = to_micros(now)
    return (now if now.tzinfo is UTC else micros), micros


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exactly."""
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ConfigurationError(f"the clock must give timezone-aware datetimes, got {moment!r}")
    return (moment - EPOCH) // _MICROSECOND

