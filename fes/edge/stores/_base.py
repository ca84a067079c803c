"""The one protocol every event store implements, and the rows it moves.

Its semantics, which one conformance suite checks for every store, are
documented on :mod:`fes.edge.stores`, the public home of these names.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import partial
from types import TracebackType
from typing import NamedTuple, Protocol, Self, runtime_checkable

from attrs import frozen

__all__ = [
    "ClosingDatabase",
    "Database",
    "NewEvent",
    "Resealed",
    "Store",
    "StoredEvent",
    "StoredSnapshot",
    "Tracking",
]


class NewEvent(NamedTuple):
    """An encoded event to append: ``version`` is the version it will have."""

    stream: str
    version: int
    topic: str
    payload: bytes
    timestamp: int  # microseconds since the Unix epoch, UTC
    meta: bytes | None = None  # encoded metadata; None when there is none


# Rows are named tuples rather than attrs classes: they are built once per row
# read or written, on the hot path, and a tuple is built several times faster
# while staying immutable.
class StoredEvent(NamedTuple):
    """An encoded event as stored, with its position in the notification log."""

    position: int
    stream: str
    version: int
    topic: str
    payload: bytes
    timestamp: int
    meta: bytes | None = None


class Resealed(NamedTuple):
    """A stored event's payload and metadata sealed anew (under another key).

    ``stream``, ``version`` and ``topic`` name the stored event; its position
    and timestamp stay as they are.
    """

    stream: str
    version: int
    topic: str
    payload: bytes
    meta: bytes | None = None


#: Build a NewEvent from a 6-tuple in C, without the generated ``__new__``.
new_event = partial(tuple.__new__, NewEvent)
#: Build a StoredEvent from a 7-column row in C, without ``_make``'s Python call
#: and length check: for rows the stores select themselves, column by column.
stored_event = partial(tuple.__new__, StoredEvent)


@frozen
class Tracking:
    """A follower has processed ``leader``'s log up to ``position``.

    ``previous`` is the position the follower had tracked before this batch
    (0 for none): the store records ``position`` only if ``previous`` is
    still what it holds.
    """

    leader: str
    position: int
    previous: int


@frozen
class StoredSnapshot:
    """An encoded state of ``stream`` at ``version``, taken under ``fingerprint``."""

    stream: str
    version: int
    fingerprint: str
    payload: bytes
    timestamp: int


@runtime_checkable
class Store(Protocol):
    """One application's tables in a database."""

    @property
    def app(self) -> str:
        """The application whose tables these are."""
        ...

    def append(
        self, events: Sequence[NewEvent], *, tracking: Tracking | None = None
    ) -> list[int]:
        """Append atomically; return the new events' positions in order."""
        ...

    def read_stream(
        self,
        stream: str,
        *,
        from_version: int | None = None,
        to_version: int | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[StoredEvent]:
        """A stream's events with ``from_version <= version <= to_version``."""
        ...

    def read_payloads(
        self, stream: str, *, from_version: int | None = None, to_version: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """``(version, topic, payload)`` of a stream's events, in version order.

        What folding a stream needs and no more: :meth:`read_stream`'s events
        with ``from_version <= version <= to_version``, without the columns a
        fold does not use, so that loading an aggregate reads less.
        """
        ...

    def stream_version(self, stream: str) -> int:
        """The stream's current version (0 when it has no events)."""
        ...

    def stream_versions(self, streams: Collection[str]) -> dict[str, int]:
        """Each given stream's current version (0 for one with no events), in one read."""
        ...

    def read_log(
        self,
        after: int = 0,
        *,
        limit: int | None = None,
        topics: Collection[str] | None = None,
        to: int | None = None,
    ) -> list[StoredEvent]:
        """Events with ``after < position <= to``, in position order."""
        ...

    def last_position(self) -> int:
        """The highest position a reader can see now (0 for an empty log)."""
        ...

    def wait(self, after: int, timeout: float) -> bool:
        """Block until a position above ``after`` is visible, or ``timeout`` passes.

        Returns whether one is.  Positions start at 1, so an ``after`` below
        0 waits as 0 does, for any event.  Implementations wake early on
        appends they can observe (a condition, NOTIFY) and otherwise poll.
        """
        ...

    def reseal(self, rows: Sequence[Resealed]) -> None:
        """Replace stored events' payloads and metadata, atomically.

        The one change a store makes to an event once stored, for moving
        its ciphertext to a new key: each row names an event by stream,
        version and topic, and its position, topic and timestamp stay.  If
        any row names no stored event, :class:`fes.errors.StoreError` says which
        and nothing changes.
        """
        ...

    def save_snapshot(self, snapshot: StoredSnapshot) -> None:
        """Store a snapshot (replacing one of the same stream and version)."""
        ...

    def load_snapshot(
        self, stream: str, *, to_version: int | None = None
    ) -> StoredSnapshot | None:
        """The latest snapshot of ``stream`` at or below ``to_version``."""
        ...

    def delete_snapshots(self, *, keep: Collection[str]) -> int:
        """Delete every snapshot whose fingerprint is not in ``keep``, atomically; how many.

        For the snapshots of earlier definitions of the aggregates, which no
        aggregate reads any more (:func:`fes.edge.prune_snapshots` keeps those
        of the application's own).  A snapshot is only a shortcut: deleting
        one loses no event, and its stream is folded from its events.
        """
        ...

    def last_tracked(self, leader: str) -> int:
        """The last position of ``leader`` this application tracked (0 for none)."""
        ...

    def tracked(self) -> dict[str, int]:
        """Every leader this application tracks, with its last position."""
        ...

    def save_view(self, name: str, payload: bytes, tracking: Tracking) -> None:
        """Store a view's encoded state with the position it has reached, atomically.

        ``tracking.leader`` names the application the view follows; the
        compare-and-set rules of :meth:`append` apply.
        """
        ...

    def load_view(self, name: str) -> tuple[bytes, int] | None:
        """A view's encoded state and the position it reached, or None."""
        ...


@runtime_checkable
class Database(Protocol):
    """A database holding several applications' tables."""

    @property
    def url(self) -> str:
        """The URL this database was opened with (without any password)."""
        ...

    def store(self, app: str) -> Store:
        """The store of application ``app``, its tables created if missing."""
        ...

    def apps(self) -> list[str]:
        """The applications that have tables in this database."""
        ...

    def close(self) -> None:
        """Release connections; the database's stores are unusable after."""
        ...

    def __enter__(self) -> Self:
        """Use the database in a ``with`` block, which closes it at the end."""
        ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the database."""
        ...


class ClosingDatabase:
    """What every database implementation shares: a ``with`` block closes it."""

    def close(self) -> None:  # pragma: no cover - each database defines its own
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
