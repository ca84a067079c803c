"""The simulated database: faults injected where a process meets its store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any

from fes.errors import ConcurrencyError, DuplicateTracking, StoreUnavailable
from fes.testing.simulation._edge import (
    MemoryDatabase,
    MemoryStore,
    NewEvent,
    Resealed,
    StoredEvent,
    StoredSnapshot,
    Tracking,
)


class _Crashed(BaseException):
    """The simulated process died: what it had not committed is lost.

    A BaseException, so that no ``except Exception`` of the code under test
    can mistake the death of its process for an error it handles.
    """


class _Faults:
    """What the scheduler has armed for the step in hand, and what it saw happen."""

    def __init__(self) -> None:
        self.now = 0
        self.crash: str | None = None  # the application whose next recording write is lost
        self.rival: tuple[str, Callable[[], None]] | None = None  # runs before that write
        self.stale: dict[tuple[str, str], int] = {}  # (app, leader) -> position, read once
        self.stale_views: dict[tuple[str, str], tuple[bytes, int] | None] = {}
        self.horizons: dict[str, tuple[int, int]] = {}  # app -> (visible up to, until step)
        self.recorded: dict[tuple[str, str], int] = {}  # (app, leader) -> last previous
        self.saved_before: dict[tuple[str, str], tuple[bytes, int] | None] = {}
        self.down: dict[str, int] = {}  # database -> the last step it is down in
        self.counts: Counter[str] = Counter()

    def check_up(self, database: str) -> None:
        """Raise :class:`StoreUnavailable` if ``database`` is down at this step."""
        until = self.down.get(database)
        if until is None:
            return
        if self.now > until:
            del self.down[database]
            return
        raise StoreUnavailable(
            f"database {database!r} is down (a simulated outage, through step {until + 1})"
        )

    def visible(self, app: str) -> int | None:
        held = self.horizons.get(app)
        if held is None:
            return None
        if self.now > held[1]:
            del self.horizons[app]
            return None
        return held[0]

    def disarm(self) -> None:
        self.crash = None
        self.rival = None
        self.stale.clear()
        self.stale_views.clear()


class _Store:
    """One application's memory store, seen through the faults armed for the step in hand."""

    def __init__(self, inner: MemoryStore, faults: _Faults, database: str) -> None:
        self._inner = inner
        self._faults = faults
        self.database = database

    @property
    def app(self) -> str:
        return self._inner.app

    def _up(self) -> None:
        # A down database refuses writes and reads of its log; reads of streams,
        # snapshots, views and tracking still answer, as when the outage strikes
        # between a unit's reads and its commit: the commit is what fails.
        self._faults.check_up(self.database)

    def _before_recording(self) -> None:
        faults = self._faults
        rival = faults.rival
        if rival is not None and rival[0] == self.app:
            faults.rival = None
            faults.counts["rivals"] += 1
            rival[1]()
        if faults.crash == self.app:
            faults.crash = None
            faults.counts["crashes"] += 1
            raise _Crashed(self.app)

    def _refusals(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except DuplicateTracking:
            self._faults.counts["duplicates refused"] += 1
            raise
        except ConcurrencyError:
            self._faults.counts["conflicts refused"] += 1
            raise

    def append(
        self, events: Sequence[NewEvent], *, tracking: Tracking | None = None
    ) -> list[int]:
        self._up()
        if tracking is not None:
            self._before_recording()
        positions: list[int] = self._refusals(
            lambda: self._inner.append(events, tracking=tracking)
        )
        if tracking is not None:
            self._faults.recorded[(self.app, tracking.leader)] = tracking.previous
        return positions

    def read_stream(
        self,
        stream: str,
        *,
        from_version: int | None = None,
        to_version: int | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[StoredEvent]:
        return self._inner.read_stream(
            stream, from_version=from_version, to_version=to_version, limit=limit,
            descending=descending,
        )

    def read_payloads(
        self, stream: str, *, from_version: int | None = None, to_version: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        return self._inner.read_payloads(
            stream, from_version=from_version, to_version=to_version
        )

    def reseal(self, rows: Sequence[Resealed]) -> None:
        self._up()
        self._inner.reseal(rows)

    def stream_version(self, stream: str) -> int:
        return self._inner.stream_version(stream)

    def stream_versions(self, streams: Collection[str]) -> dict[str, int]:
        return self._inner.stream_versions(streams)

    def read_log(
        self,
        after: int = 0,
        *,
        limit: int | None = None,
        topics: Collection[str] | None = None,
        to: int | None = None,
    ) -> list[StoredEvent]:
        self._up()
        horizon = self._faults.visible(self.app)
        if horizon is not None:
            to = horizon if to is None else min(to, horizon)
        return self._inner.read_log(after, limit=limit, topics=topics, to=to)

    def last_position(self) -> int:
        self._up()
        horizon = self._faults.visible(self.app)
        last = self._inner.last_position()
        return last if horizon is None else min(last, horizon)

    def wait(self, after: int, timeout: float) -> bool:
        return self.last_position() > after

    def save_snapshot(self, snapshot: StoredSnapshot) -> None:
        self._up()
        self._inner.save_snapshot(snapshot)

    def load_snapshot(
        self, stream: str, *, to_version: int | None = None
    ) -> StoredSnapshot | None:
        return self._inner.load_snapshot(stream, to_version=to_version)

    def delete_snapshots(self, *, keep: Collection[str]) -> int:
        self._up()
        return self._inner.delete_snapshots(keep=keep)

    def last_tracked(self, leader: str) -> int:
        stale = self._faults.stale.pop((self.app, leader), None)
        if stale is not None:
            self._faults.counts["redeliveries"] += 1
            return stale
        return self._inner.last_tracked(leader)

    def tracked(self) -> dict[str, int]:
        return self._inner.tracked()

    def save_view(self, name: str, payload: bytes, tracking: Tracking) -> None:
        self._up()
        self._before_recording()
        before = self._inner.load_view(name)
        self._refusals(lambda: self._inner.save_view(name, payload, tracking))
        self._faults.saved_before[(self.app, name)] = before

    def load_view(self, name: str) -> tuple[bytes, int] | None:
        key = (self.app, name)
        if key in self._faults.stale_views:
            self._faults.counts["redeliveries"] += 1
            return self._faults.stale_views.pop(key)
        return self._inner.load_view(name)


class _Database:
    """A memory database, named ``name``, whose stores are seen through the scheduler's faults."""

    def __init__(self, faults: _Faults, name: str) -> None:
        self.inner = MemoryDatabase()
        self.name = name
        self._faults = faults
        self._stores: dict[str, _Store] = {}

    @property
    def url(self) -> str:
        return "memory://"

    def store(self, app: str) -> _Store:
        found = self._stores.get(app)
        if found is None:
            found = self._stores[app] = _Store(self.inner.store(app), self._faults, self.name)
        return found

    def apps(self) -> list[str]:
        return self.inner.apps()

    def close(self) -> None:
        self.inner.close()
