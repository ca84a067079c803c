"""One application's tables in an SQLite file: the store's operations.

Reads run on the calling thread's connection; every write runs in ``BEGIN
IMMEDIATE``, under the database's writer lock once another connection of
this process shares the file, so that writers of one process queue on a
Python lock rather than on SQLite's busy handler.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any, TypeVar

from fes.edge.stores._base import (
    NewEvent,
    Resealed,
    StoredEvent,
    StoredSnapshot,
    Tracking,
    stored_event,
)
from fes.edge.stores._checks import (
    MAX_INTEGER,
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
from fes.edge.stores._sqlite._connections import Connections, Held, end
from fes.edge.stores._sqlite._sql import ROW, VERSIONS_CHUNK, Statements
from fes.errors import ConcurrencyError, DuplicateTracking, StoreError

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")
#: What a write takes when it needs no writer lock: the thread holds it already
#: (Connections.hold), or no other connection of this process shares the file.
_HOLDING = contextlib.nullcontext()
#: A row to insert: stream, version, topic, payload, timestamp, meta.
Row = tuple[str, int, str, bytes, int, bytes | None]


class SQLiteStore:
    """One application's tables in an SQLite file."""

    #: The application appends through :meth:`_append_rows` (see it).
    _takes_rows = True

    def __init__(self, database: Connections, app: str) -> None:
        self._database = database
        self._app = app
        self._sql = sql = Statements(app)
        self.tables = sql.tables
        self.schema = sql.schema
        # :meth:`_append_rows` of one row, version 1 of its stream (``firsts``),
        # returning its position: the path of the first event of a stream the
        # application's new_id() gave, with no list of rows or positions to
        # make, and (a partial) no frame of its own.
        self._append_first: Callable[[Row, dict[str, int]], int] = partial(
            self._appended, self._insert_first
        )

    def __repr__(self) -> str:
        return f"<SQLiteStore {self._app!r} in {self._database.url}>"

    @property
    def app(self) -> str:
        """The application whose tables these are."""
        return self._app

    # Writing ----------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent], *, tracking: Tracking | None = None) -> list[int]:
        """Append atomically; return the new events' positions in order."""
        firsts = check_batch(events)
        if tracking is not None:
            check_tracking(tracking)
        elif not events:
            return []
        return self._append_rows(list(map(ROW, events)), firsts, tracking)

    def _append_rows(
        self, rows: Sequence[Row], firsts: dict[str, int], tracking: Tracking | None
    ) -> list[int]:
        """:meth:`append` of rows fes's application built and checked itself.

        Each row is ``(stream, version, topic, payload, timestamp, meta)``, in
        the insert's order; ``firsts`` holds each stream's first version in the
        rows, which are consecutive from it.  The application checked each
        stream id once, made every topic, payload and metadata with its codec
        (topics checked when it was built), and every timestamp with its clock;
        ``tracking``, when given, has been checked.  Third-party callers use
        :meth:`append`, which checks all of that.
        """
        return self._appended(self._insert, rows, firsts, tracking)

    def _appended(
        self,
        insert: Callable[[Held, Any, dict[str, int], Tracking | None], _T],
        rows: Any,
        firsts: dict[str, int],
        tracking: Tracking | None = None,
    ) -> _T:
        """``insert``'s transaction on this thread's connection, under the writer lock if need be.

        ``insert`` is :meth:`_insert` or :meth:`_insert_first`, given ``rows``,
        ``firsts`` and ``tracking`` as :meth:`_append_rows` describes them.
        """
        database = self._database
        # what database.use() does, inline on this hot path: its checks (a closed
        # database, a transaction an interrupt left open) only when they may apply
        try:
            held = database._local.held
        except AttributeError:
            held = database.use()
        else:
            held.busy += 1
            if held.began or database.closed:
                held.busy -= 1
                held = database.use()
        try:
            if held.holding or not database.shared:
                # No other connection of this process to queue behind (or this
                # thread holds the writer lock already, Connections.hold):
                # SQLite's own lock is all there is to take.
                done = insert(held, rows, firsts, tracking)
            else:
                # ``with``: CPython takes the lock and sets up its release in one
                # step, so an interrupt (Ctrl-C) cannot leave it held.
                with database.writer:
                    done = insert(held, rows, firsts, tracking)
        except sqlite3.IntegrityError as error:
            raise self._conflict(held.conn, firsts, error) from None
        except sqlite3.Error as error:
            raise database.error(error, f"append to {self._app!r}") from None
        finally:
            # database.release(held), inline
            held.busy -= 1
            if database.closed:
                database.release_closed(held)
        # database.notify(), inline: the generation first, then the waiters
        database.generation += 1
        if database.waiters:
            database.wake()
        return done

    def _insert(
        self, held: Held, rows: Sequence[Row], firsts: dict[str, int], tracking: Tracking | None
    ) -> list[int]:
        """:meth:`_append_rows`'s transaction: the positions of the rows inserted."""
        conn = held.conn
        # BEGIN inside the try: an interrupt just after it must roll back too.
        try:
            held.began = not conn.in_transaction
            cursor = held.cursor
            cursor.execute("BEGIN IMMEDIATE")
            if tracking is not None:
                self._track(conn, tracking)
            for stream, first in firsts.items():
                # A first version of 1 needs no look: if the stream has
                # events, the unique (stream, version) refuses the insert.
                if first != 1:
                    current = conn.execute(self._sql.version, (stream,)).fetchone()[0] or 0
                    if current != first - 1:
                        raise ConcurrencyError(stream, first - 1, current)
            count = len(rows)
            positions: list[int] = []
            if count == 1:
                # (after an insert into a rowid table, lastrowid is an int)
                positions.append(cursor.execute(self._sql.insert, rows[0]).lastrowid)  # type: ignore[arg-type]
            elif count:
                conn.executemany(self._sql.insert, rows)
                last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                # In one write transaction AUTOINCREMENT hands out consecutive rowids.
                positions = list(range(last - count + 1, last + 1))
            cursor.execute("COMMIT")
            held.began = False
        except BaseException:
            end(held)
            raise
        return positions

    def _insert_first(
        self, held: Held, row: Row, firsts: dict[str, int], tracking: Tracking | None
    ) -> int:
        """The transaction of ``_append_first`` (see ``__init__``): the row's rowid.

        A first version needs no look: if the stream has events, the unique
        (stream, version) refuses the insert.  (``firsts`` and ``tracking``
        are :meth:`_appended`'s: ``_append_first`` gives no tracking.)
        """
        cursor = held.cursor
        try:
            held.began = not held.conn.in_transaction
            cursor.execute("BEGIN IMMEDIATE")
            # (after an insert into a rowid table, lastrowid is an int)
            position: int = cursor.execute(self._sql.insert, row).lastrowid  # type: ignore[assignment]
            cursor.execute("COMMIT")
            held.began = False
        except BaseException:
            end(held)
            raise
        return position

    def _track(self, conn: sqlite3.Connection, tracking: Tracking) -> None:
        if tracking.previous == 0:
            done = conn.execute(self._sql.track_first, (tracking.leader, tracking.position))
        else:
            done = conn.execute(
                self._sql.track_next, (tracking.position, tracking.leader, tracking.previous)
            )
        if done.rowcount != 1:
            raise DuplicateTracking(tracking.leader, tracking.position)

    def _conflict(
        self, conn: sqlite3.Connection, firsts: dict[str, int], error: sqlite3.Error
    ) -> StoreError:
        """The error for an insert the unique (stream, version) refused, after rollback."""
        if "UNIQUE" in str(error):
            try:
                for stream, first in firsts.items():
                    current = conn.execute(self._sql.version, (stream,)).fetchone()[0] or 0
                    if current != first - 1:
                        return ConcurrencyError(stream, first - 1, current)
            except sqlite3.Error as again:
                return self._database.error(again, f"append to {self._app!r}")
        return self._database.error(error, f"append to {self._app!r}")

    def reseal(self, rows: Sequence[Resealed]) -> None:
        """Replace stored events' payloads and metadata, atomically."""
        check_reseal(rows)

        def work(conn: sqlite3.Connection) -> None:
            for row in rows:
                changed = conn.execute(
                    self._sql.reseal, (row.payload, row.meta, row.stream, row.version, row.topic)
                ).rowcount
                if changed != 1:
                    raise not_stored(row)

        self._write(f"reseal events of {self._app!r}", work)

    def save_snapshot(self, snapshot: StoredSnapshot) -> None:
        """Store a snapshot (replacing one of the same stream and version)."""
        check_where(snapshot.stream, snapshot.version)
        row = (
            snapshot.stream,
            snapshot.version,
            snapshot.fingerprint,
            snapshot.payload,
            snapshot.timestamp,
        )
        self._write_one("save a snapshot", self._sql.snapshot_save, row)

    def delete_snapshots(self, *, keep: Collection[str]) -> int:
        """Delete every snapshot whose fingerprint is not in ``keep``, atomically; how many."""
        kept = tuple(dict.fromkeys(check_keep(keep)))
        sql = self._sql.snapshot_delete
        if kept:
            sql += f" WHERE fingerprint NOT IN ({', '.join('?' * len(kept))})"
        return self._write_one(f"delete snapshots of {self._app!r}", sql, kept)

    def save_view(self, name: str, payload: bytes, tracking: Tracking) -> None:
        """Store a view's encoded state with the position it has reached, atomically."""
        check_tracking(tracking)
        row: tuple[Any, ...]
        if tracking.previous == 0:
            sql, row = self._sql.view_first, (name, payload, tracking.position)
        else:
            sql, row = self._sql.view_next, (payload, tracking.position, name, tracking.previous)
        if self._write_one(f"save view {name!r}", sql, row) != 1:
            raise DuplicateTracking(tracking.leader, tracking.position)

    def _write_one(self, doing: str, sql: str, row: tuple[Any, ...]) -> int:
        """Run one statement in a write transaction; the number of rows it changed."""
        return self._write(doing, lambda conn: int(conn.execute(sql, row).rowcount))

    def _write(self, doing: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in a write transaction under the write lock.

        Committed if ``work`` returns, rolled back if it raises.  (``append``
        does the same inline, on the hot path, and tells conflicts apart.)
        """
        database = self._database
        held = database.use()
        conn = held.conn
        try:
            with _HOLDING if held.holding or not database.shared else database.writer:
                try:
                    held.began = not conn.in_transaction
                    conn.execute("BEGIN IMMEDIATE")
                    result = work(conn)
                    end(held, "COMMIT")
                except BaseException:
                    end(held)
                    raise
        except sqlite3.Error as error:
            raise database.error(error, doing) from None
        finally:
            database.release(held)
        return result

    # Reading ----------------------------------------------------------------------

    def _rows(self, doing: str, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        database = self._database
        held = database.use()
        try:
            return held.conn.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise database.error(error, doing) from None
        finally:
            database.release(held)

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
        rows = self._rows(
            "read a stream",
            self._sql.stream_descending if descending else self._sql.stream,
            (
                stream,
                0 if from_version is None else from_version,
                MAX_INTEGER if to_version is None else to_version,
                -1 if limit is None else limit,
            ),
        )
        return list(map(stored_event, rows))

    def read_payloads(
        self, stream: str, *, from_version: int | None = None, to_version: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """``(version, topic, payload)`` of a stream's events, in version order."""
        check_read(stream, from_version, to_version)
        return self._rows(
            "read a stream",
            self._sql.payloads,
            (
                stream,
                0 if from_version is None else from_version,
                MAX_INTEGER if to_version is None else to_version,
            ),
        )

    def stream_version(self, stream: str) -> int:
        """The stream's current version (0 when it has no events)."""
        check_stream(stream)
        rows = self._rows("read a stream's version", self._sql.version, (stream,))
        return rows[0][0] or 0

    def stream_versions(self, streams: Collection[str]) -> dict[str, int]:
        """Each given stream's current version (0 for one with no events), in one read."""
        wanted = list(dict.fromkeys(streams))
        for stream in wanted:
            check_stream(stream)
        versions = dict.fromkeys(wanted, 0)
        chunks = [wanted[i : i + VERSIONS_CHUNK] for i in range(0, len(wanted), VERSIONS_CHUNK)]
        held = self._database.use()
        conn = held.conn
        # One read transaction, so that every chunk sees the same moment;
        # inside one already, the chunks share it.
        several = len(chunks) > 1 and not conn.in_transaction
        try:
            try:
                if several:
                    held.began = True
                    conn.execute("BEGIN")
                for chunk in chunks:
                    sql = self._sql.versions.format(", ".join("?" * len(chunk)))
                    versions.update(conn.execute(sql, chunk).fetchall())
            finally:
                if several:
                    end(held, "COMMIT")
        except sqlite3.Error as error:
            raise self._database.error(error, "read streams' versions") from None
        finally:
            self._database.release(held)
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
        bounds = (after, MAX_INTEGER if to is None else to)
        size = -1 if limit is None else limit
        if topics is None:
            rows = self._rows("read the log", self._sql.log, (*bounds, size))
        else:
            wanted = sorted(set(topics))
            if not wanted:
                return []
            sql = self._sql.log_topics.format(", ".join("?" * len(wanted)))
            rows = self._rows("read the log", sql, (*bounds, *wanted, size))
        return list(map(stored_event, rows))

    def last_position(self) -> int:
        """The highest position a reader can see now (0 for an empty log)."""
        return self._rows("read the last position", self._sql.last, ())[0][0] or 0

    def wait(self, after: int, timeout: float) -> bool:
        """Block until a position above ``after`` is visible, or ``timeout`` passes.

        Appends through this database wake it at once; other processes'
        appends are seen within ``poll_interval``.
        """
        check_integer("after", after)
        after = max(after, 0)  # positions start at 1: the empty log has none above -1
        database = self._database
        condition = database.condition
        deadline = time.monotonic() + check_timeout(timeout)
        while True:
            generation = database.generation
            if self.last_position() > after:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with database.wake_lock:
                database.waiters += 1
                try:
                    if database.generation == generation and not database.closed:
                        condition.wait(min(remaining, database.poll_interval))
                finally:
                    database.waiters -= 1

    def load_snapshot(self, stream: str, *, to_version: int | None = None) -> StoredSnapshot | None:
        """The latest snapshot of ``stream`` at or below ``to_version``."""
        check_read(stream, to_version=to_version)
        rows = self._rows(
            "load a snapshot",
            self._sql.snapshot_load,
            (stream, MAX_INTEGER if to_version is None else to_version),
        )
        return StoredSnapshot(*rows[0]) if rows else None

    def last_tracked(self, leader: str) -> int:
        """The last position of ``leader`` this application tracked (0 for none)."""
        rows = self._rows("read a tracking position", self._sql.tracked_one, (leader,))
        return int(rows[0][0]) if rows else 0

    def tracked(self) -> dict[str, int]:
        """Every leader this application tracks, with its last position."""
        return dict(self._rows("read tracking positions", self._sql.tracked_all, ()))

    def load_view(self, name: str) -> tuple[bytes, int] | None:
        """A view's encoded state and the position it reached, or None."""
        rows = self._rows(f"load view {name!r}", self._sql.view_load, (name,))
        return (rows[0][0], rows[0][1]) if rows else None
