"""The checks every store makes before it touches its tables.

They live in one place so that every store refuses the same inputs with the
same messages: an application name that cannot name tables, a batch whose
versions are not consecutive within a stream, a tracking position that does
not move forward, a negative limit.  Each check raises :class:`fes.StoreError`
and never touches stored data.
"""

from __future__ import annotations

from collections.abc import Sequence

from fes.edge.stores.base import NewEvent, Resealed, Tracking
from fes.errors import StoreError

__all__ = [
    "MAX_APP_NAME",
    "check_app_name",
    "check_batch",
    "check_limit",
    "check_reseal",
    "check_tracking",
    "not_stored",
]

#: The longest application name: leaves room for a table suffix within
#: PostgreSQL's 63-byte identifiers.
MAX_APP_NAME = 48


def check_app_name(app: str) -> str:
    """Return ``app`` if it can name an application's tables, else raise StoreError.

    Names are what :class:`fes.App` accepts (letters, digits, ``_`` and
    ``-``), at most 48 characters, so that every store can put them in its
    table names.
    """
    if (
        not isinstance(app, str)
        or not app
        or len(app) > MAX_APP_NAME
        or not app.replace("_", "").replace("-", "").isalnum()
    ):
        raise StoreError(
            f"application name {app!r} cannot name tables: use 1 to {MAX_APP_NAME} "
            "letters, digits, '_' or '-'"
        )
    return app


def check_batch(events: Sequence[NewEvent]) -> dict[str, int]:
    """Each stream of a batch with the first version the batch gives it, in batch order.

    Raises StoreError when a stream's versions within the batch are not
    consecutive (``1, 2, 3``; other streams' events may come in between) or
    start below 1: such a batch is malformed, whatever is stored.
    """
    if len(events) == 1:
        only = events[0]
        if only.version >= 1:
            return {only.stream: only.version}
    firsts: dict[str, int] = {}
    following: dict[str, int] = {}
    for event in events:
        stream = event.stream
        version = event.version
        expected = following.get(stream)
        if expected is None:
            if version < 1:
                raise StoreError(
                    f"stream {stream!r}: version {version} is below 1; "
                    "stream versions start at 1; nothing was stored"
                )
            firsts[stream] = version
        elif version != expected:
            raise StoreError(
                f"stream {stream!r}: versions in one append must be consecutive, "
                f"but version {version} follows {expected - 1}; nothing was stored"
            )
        following[stream] = version + 1
    return firsts


def check_tracking(tracking: Tracking) -> None:
    """Refuse a tracking record that does not move forward from ``previous``."""
    if tracking.previous < 0 or tracking.position <= tracking.previous:
        raise StoreError(
            f"tracking of {tracking.leader!r} must move forward: position "
            f"{tracking.position} is not above previous {tracking.previous}; "
            "nothing was stored"
        )


def check_limit(limit: int | None) -> None:
    """Refuse a negative ``limit``."""
    if limit is not None and limit < 0:
        raise StoreError(f"limit must be 0 or more, not {limit}")


def check_reseal(rows: Sequence[Resealed]) -> None:
    """Refuse a reseal that names one event twice or gives an event no payload."""
    seen: set[tuple[str, int]] = set()
    for row in rows:
        key = (row.stream, row.version)
        if key in seen:
            raise StoreError(
                f"stream {row.stream!r} version {row.version} is resealed twice in one call; "
                "nothing was changed"
            )
        seen.add(key)
        if not row.payload:
            raise StoreError(
                f"stream {row.stream!r} version {row.version}: a resealed payload cannot be "
                "empty; nothing was changed"
            )


def not_stored(row: Resealed) -> StoreError:
    """The error for a reseal row that names no stored event."""
    return StoreError(
        f"cannot reseal stream {row.stream!r} version {row.version}: no event of topic "
        f"{row.topic!r} is stored there; nothing was changed"
    )
