"""The checks every store makes before it touches its tables.

They live in one place so that every store refuses the same inputs with the
same messages: an application name that cannot name tables, a stream id that
not every store can keep (see :func:`check_stream`), a version, position or
limit that is not an integer every store can hold, a batch whose versions are
not consecutive within a stream, a tracking position that does not move
forward.  Each check raises :class:`fes.errors.StoreError` and never touches stored
data.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from fes._ids import MAX_STREAM_ID, STREAM_ID_RULE, stream_keepable
from fes._ids import keepable_text as _keepable
from fes.edge.stores._base import NewEvent, Resealed, Tracking
from fes.errors import StoreError

__all__ = [
    "MAX_APP_NAME",
    "MAX_INTEGER",
    "MAX_STREAM_ID",
    "check_app_name",
    "check_batch",
    "check_integer",
    "check_keep",
    "check_log",
    "check_read",
    "check_reseal",
    "check_stream",
    "check_timeout",
    "check_topic",
    "check_tracking",
    "check_where",
    "not_stored",
    "stream_keepable",
]

#: The longest application name: leaves room for a table suffix within
#: PostgreSQL's 63-byte identifiers.
MAX_APP_NAME = 48
#: The largest integer SQLite's INTEGER and PostgreSQL's bigint hold; the
#: stores also use it as the bound of a read with no upper bound.
MAX_INTEGER = 2**63 - 1
_LOWEST, _HIGHEST = -(2**63), MAX_INTEGER


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


def _shown(value: object) -> str:
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:40]!r}... ({len(value)} characters)"
    return repr(value)


def check_stream(stream: object) -> None:
    """Refuse a stream id that not every store can keep.

    A stream id is a ``str`` of 1 to :data:`MAX_STREAM_ID` characters with
    no NUL character (PostgreSQL's text cannot hold one) and no lone
    surrogate (it has no UTF-8 form).  Refusing them in every store keeps an
    application that runs on ``memory://`` from failing on a database later.
    """
    if stream_keepable(stream):
        return
    raise StoreError(f"{STREAM_ID_RULE}, not {_shown(stream)}")


def check_integer(name: str, value: object, lowest: int = _LOWEST) -> None:
    """Refuse a version, position or limit that is not an int every store can hold."""
    if value.__class__ is int and lowest <= value <= _HIGHEST:
        return
    if isinstance(value, int) and not isinstance(value, bool) and lowest <= value <= _HIGHEST:
        return
    floor = "" if lowest == _LOWEST else f" of {lowest} or more"
    raise StoreError(f"{name} must be an integer{floor} that fits in 64 bits, not {value!r}")


def check_read(
    stream: object, from_version: object = None, to_version: object = None, limit: object = None
) -> None:
    """Refuse the arguments of a read of one stream that not every store takes."""
    check_stream(stream)
    if from_version is not None:
        check_integer("from_version", from_version)
    if to_version is not None:
        check_integer("to_version", to_version)
    if limit is not None:
        check_integer("limit", limit, 0)


def check_log(
    after: object, to: object = None, limit: object = None, topics: object = None
) -> None:
    """Refuse the arguments of a read of the log that not every store takes.

    ``topics`` must be a collection of topics: a lone ``str`` would be read
    as its characters.
    """
    check_integer("after", after)
    if to is not None:
        check_integer("to", to)
    if limit is not None:
        check_integer("limit", limit, 0)
    if topics is not None and (
        isinstance(topics, (str, bytes))
        or not isinstance(topics, Collection)
        or not all(isinstance(topic, str) for topic in topics)
    ):
        raise StoreError(f"topics must be a collection of topics (str), not {topics!r}")


def check_where(stream: object, version: object) -> None:
    """Refuse a snapshot's stream id, or its version unless it is 1 or more."""
    check_stream(stream)
    check_integer("a version", version, 1)


def check_keep(keep: object) -> list[str]:
    """The fingerprints ``delete_snapshots`` keeps, as a list; anything but strings refused.

    A string is refused whole: as a collection of its characters it would
    keep nothing and delete every snapshot.
    """
    if isinstance(keep, str | bytes) or not isinstance(keep, Collection):
        raise StoreError(
            f"keep is a collection of snapshot fingerprints (str), such as "
            f"{{'3f2a…'}}, not {keep!r}"
        )
    found = list(keep)
    for item in found:
        if not isinstance(item, str):
            raise StoreError(f"a snapshot fingerprint is a str, not {item!r}")
    return found


def check_batch(events: Sequence[NewEvent]) -> dict[str, int]:
    """Each stream of a batch with the first version the batch gives it, in batch order.

    Raises StoreError when a stream's versions within the batch are not
    consecutive (``1, 2, 3``; other streams' events may come in between) or
    start below 1: such a batch is malformed, whatever is stored.
    """
    if len(events) == 1:  # one command's event: the common case, checked inline
        only = events[0]
        if only.__class__ is not NewEvent:
            _check_row(only)
        version = only.version
        if version.__class__ is int and 1 <= version <= _HIGHEST:
            check_stream(only.stream)
            _check_fields(only)
            return {only.stream: version}
    firsts: dict[str, int] = {}
    following: dict[str, int] = {}
    for event in events:
        if event.__class__ is not NewEvent:
            _check_row(event)
        _check_fields(event)
        stream = event.stream
        version = event.version
        expected = following.get(stream)
        if expected is None:
            check_stream(stream)
            check_integer("a version", version)
            if version < 1:
                raise StoreError(
                    f"stream {stream!r}: version {version} is below 1; "
                    "stream versions start at 1; nothing was stored"
                )
            firsts[stream] = version
        elif version.__class__ is not int or version != expected:
            check_integer("a version", version)  # 2.0 equals 2, but is no version
            if version != expected:
                raise StoreError(
                    f"stream {stream!r}: versions in one append must be consecutive, "
                    f"but version {version} follows {expected - 1}; nothing was stored"
                )
        following[stream] = version + 1
    return firsts


def _check_row(event: object) -> None:
    if not isinstance(event, NewEvent):
        raise StoreError(f"append takes NewEvent rows, not {_shown(event)}; nothing was stored")


def check_topic(topic: object, then: str = "") -> None:
    """Refuse a topic that not every store keeps (``then`` ends the message)."""
    if not (isinstance(topic, str) and topic.__class__ is str and _keepable(topic)):
        raise StoreError(
            f"a topic must be a str with no NUL character or lone surrogate, not {_shown(topic)}"
            + then
        )


def _check_fields(event: NewEvent) -> None:
    """Refuse a row's topic, payload, timestamp or metadata that not every store keeps."""
    topic, payload, meta = event.topic, event.payload, event.meta
    check_topic(topic, "; nothing was stored")
    if not isinstance(payload, bytes) or (meta is not None and not isinstance(meta, bytes)):
        raise StoreError(
            f"a payload must be bytes, and metadata bytes or None, not {_shown(payload)} and "
            f"{_shown(meta)}; nothing was stored"
        )
    check_integer("a timestamp", event.timestamp)


def check_timeout(timeout: object) -> float:
    """A wait's timeout in seconds as a float: a real number, not NaN (below 0 counts as 0)."""
    if (
        isinstance(timeout, (int, float))
        and not isinstance(timeout, bool)
        and timeout == timeout  # not NaN
    ):
        return max(0.0, float(timeout))
    raise StoreError(f"a timeout must be a number of seconds, not {timeout!r}")


def check_tracking(tracking: Tracking) -> None:
    """Refuse a tracking record that does not move forward from ``previous``."""
    check_integer("a tracking position", tracking.position)
    check_integer("a tracking position", tracking.previous)
    if tracking.previous < 0 or tracking.position <= tracking.previous:
        raise StoreError(
            f"tracking of {tracking.leader!r} must move forward: position "
            f"{tracking.position} is not above previous {tracking.previous}; "
            "nothing was stored"
        )


def check_reseal(rows: Sequence[Resealed]) -> None:
    """Refuse a reseal that names one event twice or gives an event no payload."""
    seen: set[tuple[str, int]] = set()
    for row in rows:
        check_stream(row.stream)
        check_integer("a version", row.version)
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
