"""The in-memory event store: the model every other store is checked against.

Each application's state is one value, swapped whole by a writer that holds
the database's one lock; a reader takes no lock and reads whichever value
was current when it started, so it always sees a consistent state.  A
condition on the same lock wakes :meth:`MemoryStore.wait` on every append.

Events live in append-only Python lists (the log, and one per stream) that
successive states share; a state holds how many events of the log it
contains (``size``), and a reader sees only those: a stream's visible
events are the prefix of its list at positions up to ``size``.  An append
adds to the lists and publishes a state with the new size, so its cost does
not grow with the events or streams held.  (Persistent vectors and maps,
used before, made every append allocate new container objects that reach
the whole history, and each collection of the garbage collector's young
generation walked them: the append cost grew tenfold from 1,000 to 100,000
streams.)  The rare :meth:`MemoryStore.reseal` copies the lists it changes,
so readers of earlier states keep their payloads.

The lock is always taken with ``with lock``, never ``with condition``:
CPython takes a lock and sets up its release in one step, whereas the
condition's ``__enter__`` is Python code that an interrupt (Ctrl-C) could
leave holding the lock for good.

Nothing is shared between two :class:`MemoryDatabase` objects, and nothing
outlives the process.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections.abc import Collection, Sequence
from functools import partial
from operator import attrgetter

from attrs import evolve, field, frozen
from pyrsistent import PMap, pmap

from fes.edge.stores._base import (
    ClosingDatabase,
    NewEvent,
    Resealed,
    StoredEvent,
    StoredSnapshot,
    Tracking,
)
from fes.edge.stores._checks import (
    check_app_name,
    check_batch,
    check_integer,
    check_keep,
    check_log,
    check_read,
    check_reseal,
    check_stream,
    check_timeout,
    check_tracking,
    check_where,
    not_stored,
)
from fes.errors import ConcurrencyError, DuplicateTracking, StoreError

__all__ = ["MemoryDatabase", "MemoryStore"]

_NO_EVENTS: list[StoredEvent] = []  # never appended to: a stream without events
#: A row to insert: stream, version, topic, payload, timestamp, meta.
Row = tuple[str, int, str, bytes, int, bytes | None]
_stored = partial(tuple.__new__, StoredEvent)  # from a 7-tuple, in C
_ROW = attrgetter("stream", "version", "topic", "payload", "timestamp", "meta")


def _own(data: bytes) -> bytes:
    """``data`` in a buffer of its own size.

    orjson's output keeps the whole buffer it wrote into (about 4 KiB for a
    payload of 40 bytes), and this store keeps payloads for good: 200,000
    small events held about 790 MiB.  The copy costs about 100 ns.
    """
    return bytes(memoryview(data))


def _position(event: StoredEvent) -> int:
    return event.position


@frozen
class _State:
    """One application's whole state: the first ``size`` events of ``log``, and the rest.

    Positions start at 1 and have no gaps (nothing is ever rolled back
    here), so the event at position ``p`` is ``log[p - 1]``; likewise a
    stream's event of version ``v`` is ``streams[stream][v - 1]``.  ``log``,
    ``streams`` and the lists in it are shared with later states, which
    append to them: only events at positions up to ``size`` belong to this one.
    """

    log: list[StoredEvent] = field(factory=list)
    size: int = 0
    streams: dict[str, list[StoredEvent]] = field(factory=dict)
    snapshots: PMap[str, PMap[int, StoredSnapshot]] = field(factory=pmap)
    tracking: PMap[str, int] = field(factory=pmap)
    views: PMap[str, tuple[bytes, int]] = field(factory=pmap)


def _visible(state: _State, stream: str) -> list[StoredEvent]:
    """The events of ``stream`` in ``state``: its list's prefix up to ``state.size``."""
    events = state.streams.get(stream, _NO_EVENTS)
    count = len(events)
    if count and events[count - 1].position > state.size:  # appended after this state
        count = bisect_right(events, state.size, hi=count, key=_position)
    return events[:count]


def _version(state: _State, stream: str) -> int:
    """The version of ``stream`` in ``state``, without copying its events."""
    events = state.streams.get(stream, _NO_EVENTS)
    count = len(events)
    if count and events[count - 1].position > state.size:
        count = bisect_right(events, state.size, hi=count, key=_position)
    return count


def _cas(current: int | None, tracking: Tracking) -> None:
    """Refuse ``tracking`` unless it moves on from what is held (``None``: nothing)."""
    if (current or 0) != tracking.previous:
        raise DuplicateTracking(tracking.leader, tracking.position)


class MemoryStore:
    """One application's events, snapshots, tracking and views, in memory."""

    #: The application appends through :meth:`_append_rows` (see it).
    _takes_rows = True

    def __init__(self, database: MemoryDatabase, app: str) -> None:
        self._database = database
        self._app = app
        self._state = _State()

    def __repr__(self) -> str:
        return f"<MemoryStore {self._app!r}>"

    @property
    def app(self) -> str:
        """The application whose tables these are."""
        return self._app

    def _read(self) -> _State:
        if self._database.closed:
            raise self._database.closed_error()
        return self._state

    def append(self, events: Sequence[NewEvent], *, tracking: Tracking | None = None) -> list[int]:
        """Append atomically; return the new events' positions in order."""
        firsts = check_batch(events)
        if tracking is not None:
            check_tracking(tracking)
        elif not events:
            self._read()
            return []
        return self._append_rows(list(map(_ROW, events)), firsts, tracking)

    def _append_rows(
        self, rows: Sequence[Row], firsts: dict[str, int], tracking: Tracking | None
    ) -> list[int]:
        """:meth:`append` of rows fes's application built and checked itself.

        Each row is ``(stream, version, topic, payload, timestamp, meta)``;
        ``firsts`` holds each stream's first version in the rows, which are
        consecutive from it (see the SQLite store's ``_append_rows``).
        """
        database = self._database
        with database.lock:
            state = self._read()
            if tracking is not None:
                _cas(state.tracking.get(tracking.leader), tracking)
            # under the lock the current state holds every event of the lists
            streams = state.streams
            for stream, first in firsts.items():
                current = len(streams.get(stream, _NO_EVENTS))
                if current != first - 1:
                    raise ConcurrencyError(stream, first - 1, current)
            log = state.log
            start = state.size + 1
            stored = [
                _stored((position, stream, version, topic, _own(payload), timestamp,
                         None if meta is None else _own(meta)))
                for position, (stream, version, topic, payload, timestamp, meta)
                in enumerate(rows, start)
            ]
            log.extend(stored)
            for event in stored:
                found = streams.get(event[1])
                if found is None:
                    streams[event[1]] = [event]
                else:
                    found.append(event)
            position = start + len(stored) - 1
            new = evolve(state, size=position)
            if tracking is not None:
                new = evolve(new, tracking=new.tracking.set(tracking.leader, tracking.position))
            self._state = new
            database.condition.notify_all()
        return list(range(start, position + 1))

    def _append_first(self, row: Row, firsts: dict[str, int]) -> int:
        """:meth:`_append_rows` of one row, version 1 of its stream: its position."""
        return self._append_rows([row], firsts, None)[0]

    def reseal(self, rows: Sequence[Resealed]) -> None:
        """Replace stored events' payloads and metadata, atomically."""
        check_reseal(rows)
        with self._database.lock:
            state = self._read()
            # copy what changes: readers of earlier states keep their payloads
            log = state.log[: state.size]
            copied: dict[str, list[StoredEvent]] = {}
            for row in rows:
                events = copied.get(row.stream)
                if events is None:
                    events = list(state.streams.get(row.stream, _NO_EVENTS))
                if not 1 <= row.version <= len(events):
                    raise not_stored(row)
                old = events[row.version - 1]
                if old.topic != row.topic:
                    raise not_stored(row)
                new = old._replace(
                    payload=_own(row.payload), meta=None if row.meta is None else _own(row.meta)
                )
                events[row.version - 1] = new
                copied[row.stream] = events
                log[old.position - 1] = new
            self._state = evolve(state, log=log, streams={**state.streams, **copied})

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
        check_read(stream, from_version, to_version, limit)
        events = _visible(self._read(), stream)
        low = 0 if from_version is None else max(from_version - 1, 0)
        high = len(events) if to_version is None else max(min(to_version, len(events)), 0)
        chosen = events[low:high]
        if descending:
            chosen = chosen[::-1]
        if limit is not None:
            chosen = chosen[:limit]
        return list(chosen)

    def read_payloads(
        self, stream: str, *, from_version: int | None = None, to_version: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """``(version, topic, payload)`` of a stream's events, in version order."""
        return [
            (e.version, e.topic, e.payload)
            for e in self.read_stream(stream, from_version=from_version, to_version=to_version)
        ]

    def stream_version(self, stream: str) -> int:
        """The stream's current version (0 when it has no events)."""
        check_stream(stream)
        return _version(self._read(), stream)

    def stream_versions(self, streams: Collection[str]) -> dict[str, int]:
        """Each given stream's current version (0 for one with no events), in one read."""
        state = self._read()
        versions = {}
        for stream in streams:
            check_stream(stream)
            versions[stream] = _version(state, stream)
        return versions

    def read_log(
        self,
        after: int = 0,
        *,
        limit: int | None = None,
        topics: Collection[str] | None = None,
        to: int | None = None,
    ) -> list[StoredEvent]:
        """Events with ``after < position <= to``, in position order."""
        check_log(after, to, limit, topics)
        state = self._read()
        log, size = state.log, state.size
        low = max(after, 0)
        high = size if to is None else max(min(to, size), 0)
        if topics is None:
            chosen = log[low:high]
            return list(chosen if limit is None else chosen[:limit])
        wanted = frozenset(topics)
        found: list[StoredEvent] = []
        if limit == 0:
            return found
        for index in range(low, high):
            event = log[index]
            if event.topic in wanted:
                found.append(event)
                if len(found) == limit:
                    break
        return found

    def last_position(self) -> int:
        """The highest position a reader can see now (0 for an empty log)."""
        return self._read().size

    def wait(self, after: int, timeout: float) -> bool:
        """Block until a position above ``after`` is visible, or ``timeout`` passes."""
        check_integer("after", after)
        after = max(after, 0)  # positions start at 1: the empty log has none above -1
        seconds = check_timeout(timeout)
        self._read()
        database = self._database
        with database.lock:
            database.condition.wait_for(
                lambda: database.closed or self._state.size > after,
                None if seconds == math.inf else seconds,  # a lock takes no infinite timeout
            )
        return self._read().size > after

    def save_snapshot(self, snapshot: StoredSnapshot) -> None:
        """Store a snapshot (replacing one of the same stream and version)."""
        check_where(snapshot.stream, snapshot.version)
        with self._database.lock:
            state = self._read()
            snapshot = evolve(snapshot, payload=_own(snapshot.payload))
            versions = state.snapshots.get(snapshot.stream, pmap())
            snapshots = state.snapshots.set(
                snapshot.stream, versions.set(snapshot.version, snapshot)
            )
            self._state = evolve(state, snapshots=snapshots)

    def delete_snapshots(self, *, keep: Collection[str]) -> int:
        """Delete every snapshot whose fingerprint is not in ``keep``, atomically; how many."""
        kept = set(check_keep(keep))
        with self._database.lock:
            state = self._read()
            snapshots = state.snapshots
            deleted = 0
            for stream, versions in state.snapshots.items():
                left = pmap({v: s for v, s in versions.items() if s.fingerprint in kept})
                if len(left) != len(versions):
                    deleted += len(versions) - len(left)
                    snapshots = snapshots.set(stream, left) if left else snapshots.remove(stream)
            if deleted:
                self._state = evolve(state, snapshots=snapshots)
        return deleted

    def load_snapshot(self, stream: str, *, to_version: int | None = None) -> StoredSnapshot | None:
        """The latest snapshot of ``stream`` at or below ``to_version``."""
        check_read(stream, to_version=to_version)
        versions = self._read().snapshots.get(stream)
        if not versions:
            return None
        eligible = [v for v in versions if to_version is None or v <= to_version]
        return versions[max(eligible)] if eligible else None

    def last_tracked(self, leader: str) -> int:
        """The last position of ``leader`` this application tracked (0 for none)."""
        return self._read().tracking.get(leader, 0)

    def tracked(self) -> dict[str, int]:
        """Every leader this application tracks, with its last position."""
        return dict(self._read().tracking)

    def save_view(self, name: str, payload: bytes, tracking: Tracking) -> None:
        """Store a view's encoded state with the position it has reached, atomically."""
        check_tracking(tracking)
        with self._database.lock:
            state = self._read()
            held = state.views.get(name)
            _cas(None if held is None else held[1], tracking)
            views = state.views.set(name, (_own(payload), tracking.position))
            self._state = evolve(state, views=views)

    def load_view(self, name: str) -> tuple[bytes, int] | None:
        """A view's encoded state and the position it reached, or None."""
        return self._read().views.get(name)


class MemoryDatabase(ClosingDatabase):
    """A fresh, process-local database: ``memory://``.

    Every instance is empty and independent of every other; its data lives
    as long as the object.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.condition = threading.Condition(self.lock)
        self.closed = False
        self._stores: PMap[str, MemoryStore] = pmap()

    def __repr__(self) -> str:
        return f"<MemoryDatabase apps={self.apps() if not self.closed else 'closed'}>"

    @property
    def url(self) -> str:
        """The URL this database was opened with: ``memory://``."""
        return "memory://"

    def closed_error(self) -> StoreError:
        """The error every operation on a closed database raises."""
        return StoreError(f"the database {self.url} is closed")

    def store(self, app: str) -> MemoryStore:
        """The store of application ``app``, created empty if missing."""
        check_app_name(app)
        with self.lock:
            if self.closed:
                raise self.closed_error()
            store = self._stores.get(app)
            if store is None:
                store = MemoryStore(self, app)
                self._stores = self._stores.set(app, store)
            return store

    def apps(self) -> list[str]:
        """The applications that have tables in this database."""
        if self.closed:
            raise self.closed_error()
        return sorted(self._stores)

    def close(self) -> None:
        """Make the database unusable and wake every waiter; closing twice is harmless."""
        with self.lock:
            self.closed = True
            self.condition.notify_all()
