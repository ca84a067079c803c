"""The edge's clock: the default time source and the exact microsecond form stores keep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fes.errors import ConfigurationError

__all__ = ["EPOCH", "from_micros", "to_micros", "utc_now"]

#: The Unix epoch in UTC: stores keep timestamps as microseconds since it.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def utc_now() -> datetime:
    """The default clock: the current time in UTC."""
    return datetime.now(UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exactly."""
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ConfigurationError(f"the clock must give timezone-aware datetimes, got {moment!r}")
    return (moment - EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the Unix epoch."""
    return EPOCH + timedelta(microseconds=micros)
