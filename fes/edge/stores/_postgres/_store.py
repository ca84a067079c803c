"""One application's tables in a PostgreSQL database: the store's operations.

An append takes three round trips: ``BEGIN; LOCK TABLE {app}_events IN
EXCLUSIVE MODE`` on its own (so that the next statement's snapshot, taken
when it starts, sees the previous writer's events), one statement that does
everything else, then COMMIT.  One small event with no tracking (a
command's, the common case) takes two: ``BEGIN``, then the lock, a plain
insert and COMMIT in one message, so that the lock is held only while the
server works.  Why the lock: ``docs/ordering.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any

import psycopg
from psycopg import ClientCursor

from fes.edge.stores._base import (
    NewEvent,
    Resealed,
    StoredEvent,
    StoredSnapshot,
    Tracking,
    new_event,
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
from fes.edge.stores._postgres._connections import Connections
from fes.edge.stores._postgres._listener import Listener
from fes.edge.stores._postgres._sql import (
    CONFLICT,
    EVENT_COLUMNS,
    NOTIFIED,
    TRACKED,
    Conn,
    Queries,
    batch_values,
    channel,
    stream_query,
)
from fes.errors import ConcurrencyError, DuplicateTracking, StoreError, StoreUnavailable

__all__ = ["PostgresStore"]

#: The least time a wait gives the pool to hand out a connection, in seconds.
_LEAST_CONNECT_WAIT = 0.1
_BEGIN = b"BEGIN"

#: A row fes's application built: a NewEvent's fields, in their order.
Row = tuple[str, int, str, bytes, int, bytes | None]


class PostgresStore:
    """One application's tables in a PostgreSQL database; get it from ``database.store(app)``.

    Safe to share between threads: each call borrows a pooled connection.
    """

    #: An application of fes hands this class's stores rows it built and
    #: checked (``_append_rows``), which are not checked again: marked on the
    #: class, so that neither a subclass nor a wrapper is taken for one.
    _takes_rows = True

    def __init__(
        self,
        app: str,
        schema: str,
        connections: Connections,
        queries: Queries,
        listener: Listener | None,
        poll_interval: float,
    ) -> None:
        self._app = app
        self._conns = connections
        self._q = queries
        self._listener = listener
        self._poll = poll_interval
        self._channel = channel(schema, app)
        self._appending = f"append to {app!r}"

    @property
    def app(self) -> str:
        """The application whose tables these are."""
        return self._app

    def __repr__(self) -> str:
        return f"PostgresStore({self._app!r}, {self._conns.url!r})"

    # -- writing ---------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent], *, tracking: Tracking | None = None) -> list[int]:
        """Append atomically; return the new events' positions in order."""
        firsts = check_batch(events)
        if tracking is not None:
            check_tracking(tracking)
        return self._write(list(events), firsts, tracking)

    def _append_rows(
        self, rows: Sequence[Row], firsts: dict[str, int], tracking: Tracking | None
    ) -> list[int]:
        """:meth:`append` of rows fes's application built and checked itself.

        Each row is a :class:`NewEvent`'s fields, in their order; ``firsts``
        holds each stream's first version in the rows.  The application
        checked each stream id, made every topic, payload and metadata with
        its codec and every timestamp with its clock, and checked
        ``tracking``: third-party callers use :meth:`append`, which checks
        all of that.
        """
        return self._write(list(map(new_event, rows)), firsts, tracking)

    def _append_first(self, row: Row, firsts: dict[str, int]) -> int:
        """:meth:`_append_rows` of one row, version 1 of its stream: its position."""
        return self._write([new_event(row)], firsts, None)[0]

    def _write(
        self, batch: list[NewEvent], firsts: dict[str, int], tracking: Tracking | None
    ) -> list[int]:
        """The append of checked events (see :meth:`append`)."""
        if tracking is None and not batch:
            self._conns.check_open("append")
            return []
        if tracking is None and len(batch) == 1 and _fits_one_message(batch[0]):
            # BEGIN on its own: a pooled connection found dead there is replaced
            # and the append retried, knowing nothing was sent.  Then the lock,
            # the insert and COMMIT in one message (see _append_one).
            return self._conns.run_begun(
                self._appending, self._begin_one, self._append_one, batch[0]
            )
        # a partial, not a lambda: a closure would make four of this method's
        # names cells, built on every append, the single-event path's too
        return self._conns.run(
            self._appending,
            partial(self._append, events=batch, firsts=firsts, tracking=tracking),
            idempotent=False,
            commit=self._commit,
        )

    def _append(
        self,
        conn: Conn,
        events: list[NewEvent],
        firsts: dict[str, int],
        tracking: Tracking | None,
    ) -> list[int]:
        """Run the append's transaction up to COMMIT; raise (to roll back) if a check failed.

        No pipeline: psycopg ends a pipeline with a flush request, after which
        the server no longer applies idle_in_transaction_session_timeout.
        """
        q = self._q
        cas: dict[str, object] = {}
        if tracking is not None:
            cas = {
                "leader": tracking.leader,
                "position": tracking.position,
                "previous": tracking.previous,
            }
        kind = "none" if tracking is None else "first" if tracking.previous == 0 else "next"
        if not events:
            conn.execute(b"BEGIN")
            held = conn.execute(q.track_first if kind == "first" else q.track_next, cas)
            if held.rowcount != 1:
                assert tracking is not None
                raise DuplicateTracking(tracking.leader, tracking.position)
            return []
        if tracking is None and len(events) == 1:  # too large for one message
            return self._append_large_one(conn, events[0])
        # built before the log's lock is taken, which every appender waits for
        if _fits_batch_message(events):
            values = batch_values(events, firsts, tracking)
            rows = self._append_message(conn, kind, values)
        else:  # values this large go as binary parameters, after the lock
            params = {
                "streams": list(firsts),
                "expected": [first - 1 for first in firsts.values()],
                "e_stream": [e.stream for e in events],
                "e_version": [e.version for e in events],
                "e_topic": [e.topic for e in events],
                "e_payload": [e.payload for e in events],
                "e_timestamp": [e.timestamp for e in events],
                "e_meta": [e.meta for e in events],
                "channel": self._channel,
                **cas,
            }
            conn.execute(q.begin_locked)
            rows = conn.execute(q.append[kind], params, binary=True).fetchall()
        at: dict[tuple[str, int], int] = {}
        actual: dict[str, int] = {}
        tracked = 0
        for position, stream, version in rows:
            if position == CONFLICT:
                actual[stream] = version
            elif position == TRACKED:
                tracked = version
            elif position != NOTIFIED:
                at[stream, version] = position
        if tracking is not None and tracked != 1:
            raise DuplicateTracking(tracking.leader, tracking.position)
        for stream, first in firsts.items():
            if stream in actual:
                raise ConcurrencyError(stream, first - 1, actual[stream])
        assert len(at) == len(events), "the insert stores all events or none"
        return [at[e.stream, e.version] for e in events]

    def _append_message(
        self, conn: Conn, kind: str, values: tuple[object, ...]
    ) -> list[tuple[Any, ...]]:
        """BEGIN, the lock and the append in one message; the append's result rows.

        The statement is prepared once per connection, in the message of its
        first append, after the lock (as :meth:`_begin_one` prepares a single
        event's).  A PREPARE outlives a rollback, so the connection counts it
        as prepared from the moment it is sent; if the server does not have
        it after all (the message failed before it, or other code on this
        connection deallocated it), nothing ran, and it is prepared again;
        if it has it when the connection thought not, nothing ran either, and
        the message goes again without the PREPARE.
        """
        q = self._q
        cursor = conn.batch_cursor
        if cursor is None:
            cursor = conn.batch_cursor = ClientCursor(conn)
        key = q.prepare_append[kind]
        if key in conn.prepared:
            try:
                cursor.execute(q.append_message[kind], values)
            except psycopg.errors.InvalidSqlStatementName:
                conn.execute(b"ROLLBACK")
                conn.prepared = conn.prepared - {key}
                return self._append_message(conn, kind, values)
        else:
            conn.prepared = conn.prepared | {key}
            try:
                cursor.execute(q.append_message_preparing[kind], values)
            except psycopg.errors.DuplicatePreparedStatement:
                # the session has it (prepared before it was last forgotten, by
                # a single event's append that lost its own): nothing ran
                conn.execute(b"ROLLBACK")
                return self._append_message(conn, kind, values)
        while cursor.nextset():  # past BEGIN's, the lock's (and PREPARE's) results
            pass
        return cursor.fetchall()

    def _append_large_one(self, conn: Conn, event: NewEvent) -> list[int]:
        """One event too large for one message: the same insert, its values as parameters."""
        params = {
            "stream": event.stream,
            "version": event.version,
            "topic": event.topic,
            "payload": event.payload,
            "timestamp": event.timestamp,
            "meta": event.meta,
            "channel": self._channel,
        }
        conn.execute(self._q.begin_locked)
        try:
            row = conn.execute(self._q.append_one, params, binary=True).fetchone()
        except psycopg.errors.UniqueViolation as clash:  # the version is taken
            conn.execute(b"ROLLBACK")
            raise self._refused(conn, event, clash) from None
        if row is None:  # the version before it is missing
            raise self._refused(conn, event)
        return [int(row[0])]

    def _begin_one(self, conn: Conn) -> bool:
        """Open a single event's append; whether it took the lock already.

        BEGIN is the round trip that finds a dead pooled connection in time.
        A connection that has not prepared the insert yet prepares it now,
        under the lock (preparing an insert takes a row lock on the table:
        taken before the table's lock, two appenders would deadlock), so its
        first append holds the lock across round trips, as a batch's does.
        BEGIN goes by the connection's own client-side cursor: one simple
        query, with none of a new cursor's set-up.
        """
        cursors = conn.one_cursors
        if cursors is None:
            cursors = conn.one_cursors = (ClientCursor(conn), ClientCursor(conn))
        if self._q.prepare_one in conn.prepared:
            cursors[0].execute(_BEGIN)
            return False
        conn.execute(self._q.begin_locked)
        conn.execute(self._q.prepare_one)  # lives as long as the session, whatever follows
        conn.prepared = conn.prepared | {self._q.prepare_one}
        return True

    def _append_one(self, conn: Conn, event: NewEvent, locked: bool) -> list[int]:
        """One event and no tracking: the lock, a plain insert and COMMIT, in one message.

        A command's append, the common case.  The insert is refused by the
        (stream, version) key (an error: the server aborts the transaction
        and skips its COMMIT), or by the look at the version before it (it
        inserts nothing, so its COMMIT commits nothing).  The three
        statements go to the server as one simple-protocol query (the insert
        as an EXECUTE of the statement :meth:`_begin_one` prepared, its
        values quoted by psycopg): the server has the whole transaction
        before it takes the lock, so the lock is never held while the server
        waits for this client, and writers queue only for each other's
        insert and flush.  With ``locked``, the lock is held already.
        """
        assert conn.one_cursors is not None, "_begin_one made them"
        cursor = conn.one_cursors[1]
        try:
            # a NewEvent's fields are the prepared insert's parameters, in order
            # (as a plain tuple, which psycopg takes without an abc check)
            params = tuple(event)
            if locked:
                cursor.execute(self._q.one_locked, params)
            else:
                cursor.execute(self._q.one_message, params)
                cursor.nextset()  # past the lock's result, to the insert's
        except psycopg.errors.InvalidSqlStatementName:
            # The session lost the statement (a DISCARD or DEALLOCATE by other
            # code on this connection): nothing ran, so prepare it and go again.
            conn.execute(b"ROLLBACK")
            conn.prepared = frozenset()
            return self._append_one(conn, event, self._begin_one(conn))
        except psycopg.errors.UniqueViolation as clash:  # the version is taken
            conn.execute(b"ROLLBACK")
            raise self._refused(conn, event, clash) from None
        row = cursor.fetchone()
        if row is None:  # the version before it is missing
            raise self._refused(conn, event)
        return [int(row[0])]

    def _refused(
        self, conn: Conn, event: NewEvent, clash: psycopg.Error | None = None
    ) -> ConcurrencyError | StoreError:
        """The conflict of a single event's refused insert, with the version found.

        ``clash``: the unique key that refused it; one that is not the
        (stream, version) key (the stream has no such version) is no
        conflict, but a store error.
        """
        found = conn.execute(self._q.versions, ([event.stream],)).fetchone()
        actual = 0 if found is None else int(found[1])
        if clash is not None and actual < event.version:
            return StoreError(
                f"could not {self._appending} on {self._conns.url}: {clash}; nothing was stored"
            )
        return ConcurrencyError(event.stream, event.version - 1, actual)

    def _commit(self, conn: Conn) -> None:
        """Send COMMIT: from here on a lost connection leaves the outcome unknown."""
        conn.execute(b"COMMIT")

    def reseal(self, rows: Sequence[Resealed]) -> None:
        """Replace stored events' payloads and metadata, atomically."""
        check_reseal(rows)
        if not rows:
            self._conns.check_open("reseal")
            return

        def work(conn: Conn) -> None:
            conn.execute(b"BEGIN")
            for row in rows:
                changed = conn.execute(
                    self._q.reseal, (row.payload, row.meta, row.stream, row.version, row.topic)
                ).rowcount
                if changed != 1:
                    raise not_stored(row)

        # Setting the same payloads twice is harmless: a lost COMMIT may be retried.
        self._conns.run(
            f"reseal events of {self._app!r}", work, idempotent=True, commit=self._commit
        )

    def save_snapshot(self, snapshot: StoredSnapshot) -> None:
        """Store a snapshot (replacing one of the same stream and version)."""
        check_where(snapshot.stream, snapshot.version)
        s = snapshot
        self._conns.run(
            f"save a snapshot of {s.stream!r}",
            lambda conn: conn.execute(
                self._q.save_snapshot, (s.stream, s.version, s.fingerprint, s.payload, s.timestamp)
            ),
            idempotent=True,
        )

    def delete_snapshots(self, *, keep: Collection[str]) -> int:
        """Delete every snapshot whose fingerprint is not in ``keep``, atomically; how many."""
        kept = check_keep(keep)
        return self._conns.run(
            f"delete snapshots of {self._app!r}",
            lambda conn: conn.execute(self._q.delete_snapshots, (kept,)).rowcount,
            idempotent=True,
        )

    def save_view(self, name: str, payload: bytes, tracking: Tracking) -> None:
        """Store a view's encoded state with the position it has reached, atomically."""
        check_tracking(tracking)

        def work(conn: Conn) -> None:
            conn.execute(b"BEGIN")
            params = {
                "name": name,
                "leader": tracking.leader,
                "position": tracking.position,
                "previous": tracking.previous,
                "payload": payload,
            }
            query = self._q.view_first if tracking.previous == 0 else self._q.view_next
            held = conn.execute(query, params)
            if held.rowcount != 1:
                raise DuplicateTracking(tracking.leader, tracking.position)

        self._conns.run(f"save view {name!r}", work, idempotent=False, commit=self._commit)

    # -- reading ---------------------------------------------------------------------

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
        if limit == 0:
            self._conns.check_open("read")
            return []
        key, build, params = stream_query(
            EVENT_COLUMNS, stream, from_version, to_version, descending, limit
        )
        return self._read_events(f"read stream {stream!r}", key, build, params)

    def read_payloads(
        self, stream: str, *, from_version: int | None = None, to_version: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """``(version, topic, payload)`` of a stream's events, in version order."""
        check_read(stream, from_version, to_version)
        key, build, params = stream_query(
            "version, topic, payload", stream, from_version, to_version
        )

        def work(conn: Conn) -> list[tuple[int, str, bytes]]:
            query = self._q.variant(key, build, conn)
            return conn.execute(query, params, binary=True).fetchall()

        return self._conns.run(f"read stream {stream!r}", work, idempotent=True)

    def stream_version(self, stream: str) -> int:
        """The stream's current version (0 when it has no events)."""
        check_stream(stream)
        rows = self._conns.run(
            f"read the version of stream {stream!r}",
            lambda conn: conn.execute(self._q.versions, ([stream],)).fetchall(),
            idempotent=True,
        )
        return int(rows[0][1])

    def stream_versions(self, streams: Collection[str]) -> dict[str, int]:
        """Each given stream's current version (0 for one with no events), in one read."""
        wanted = list(dict.fromkeys(streams))
        for stream in wanted:
            check_stream(stream)
        if not wanted:
            self._conns.check_open("read")
            return {}
        rows = self._conns.run(
            "read streams' versions",
            lambda conn: conn.execute(self._q.versions, (wanted,)).fetchall(),
            idempotent=True,
        )
        return {stream: int(version) for stream, version in rows}

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
        if limit == 0 or (topics is not None and not topics):
            self._conns.check_open("read")
            return []
        params: list[object] = [after]
        key = ["log"]
        if to is not None:
            key.append("to")
            params.append(to)
        if topics is not None:
            key.append("topics")
            params.append(list(topics))
        if limit is not None:
            key.append("limit")
            params.append(limit)

        def build() -> str:
            text = f"SELECT {EVENT_COLUMNS} FROM {{events}} WHERE position > %s"
            if "to" in key:
                text += " AND position <= %s"
            if "topics" in key:
                text += " AND topic = ANY(%s::text[])"
            text += " ORDER BY position"
            if "limit" in key:
                text += " LIMIT %s"
            return text

        return self._read_events(f"read the log of {self._app!r}", tuple(key), build, params)

    def _read_events(
        self, what: str, key: tuple[str, ...], build: Callable[[], str], params: list[object]
    ) -> list[StoredEvent]:
        def work(conn: Conn) -> list[StoredEvent]:
            query = self._q.variant(key, build, conn)
            rows = conn.execute(query, params, binary=True).fetchall()
            return list(map(stored_event, rows))

        return self._conns.run(what, work, idempotent=True)

    def last_position(self) -> int:
        """The highest position a reader can see now (0 for an empty log)."""
        return self._scalar(f"read the last position of {self._app!r}", self._q.last_position)

    def _scalar(
        self,
        what: str,
        query: bytes,
        params: tuple[object, ...] = (),
        timeout: float | None = None,
    ) -> int:
        def work(conn: Conn) -> int:
            row = conn.execute(query, params).fetchone()
            return 0 if row is None or row[0] is None else int(row[0])

        return self._conns.run(what, work, idempotent=True, timeout=timeout)

    def wait(self, after: int, timeout: float) -> bool:
        """Block until a position above ``after`` is visible, or ``timeout`` passes.

        Wakes on this application's notifications and checks at least every
        ``poll_interval`` seconds in case one was lost.  While no connection
        can be had (the server is away), it returns False when ``timeout``
        passes, rather than after ``pool_timeout``.
        """
        check_integer("after", after)
        after = max(after, 0)  # positions start at 1: the empty log has none above -1
        deadline = time.monotonic() + check_timeout(timeout)
        signal = None if self._listener is None else self._listener.signal(self._channel)
        poll = self._poll
        what = f"read the last position of {self._app!r}"
        while True:
            seen = signal.generation if signal is not None else 0
            # with the server away, give up on a connection when the wait ends
            # (at least a moment, so that a zero timeout can still look once)
            within = max(deadline - time.monotonic(), _LEAST_CONNECT_WAIT)
            try:
                if self._scalar(what, self._q.last_position, timeout=within) > after:
                    return True
            except StoreUnavailable as error:
                if not error.transient:
                    raise
                # the server is away or the pool busy: nothing seen, and a
                # server known to be down fails at once, so look again later
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._conns.closing.wait(min(remaining, poll))  # or until closed
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if signal is not None:
                signal.wait_past(seen, min(remaining, poll))
            else:
                self._conns.closing.wait(min(remaining, poll))  # or until closed

    def notified(self) -> int | None:
        """A count of this log's notifications received in this process; None without LISTEN.

        Taken before a read of the log, it lets :meth:`wait_notified` wait for
        the next commit without first asking the server whether one came.
        """
        if self._listener is None:
            return None
        return self._listener.signal(self._channel).generation

    def wait_notified(self, seen: int, timeout: float) -> bool:
        """Block until a notification after ``seen`` (see :meth:`notified`), or ``timeout``.

        Returns whether one came.  A notification says a commit added to the
        log, not that its events lie past any position: the caller reads to
        find out.  The listener counts one more when it starts listening, and
        again when it reconnects: what was committed meanwhile may be unread.
        A lost notification, or a listener that is down, makes it return
        False when ``timeout`` passes; a caller polls then, as :meth:`wait`
        does.
        """
        check_integer("seen", seen)
        timeout = check_timeout(timeout)
        if self._listener is None:
            self._conns.closing.wait(timeout)  # or until the database closes
            return False
        signal = self._listener.signal(self._channel)
        signal.wait_past(seen, timeout)
        return signal.generation != seen

    def load_snapshot(self, stream: str, *, to_version: int | None = None) -> StoredSnapshot | None:
        """The latest snapshot of ``stream`` at or below ``to_version``."""
        check_read(stream, to_version=to_version)
        limit = to_version if to_version is not None else MAX_INTEGER

        def work(conn: Conn) -> StoredSnapshot | None:
            row = conn.execute(self._q.load_snapshot, (stream, limit), binary=True).fetchone()
            if row is None:
                return None
            return StoredSnapshot(
                stream=row[0], version=row[1], fingerprint=row[2], payload=row[3], timestamp=row[4]
            )

        return self._conns.run(f"load a snapshot of {stream!r}", work, idempotent=True)

    def last_tracked(self, leader: str) -> int:
        """The last position of ``leader`` this application tracked (0 for none)."""
        return self._scalar(
            f"read the tracking of {leader!r} by {self._app!r}", self._q.last_tracked, (leader,)
        )

    def tracked(self) -> dict[str, int]:
        """Every leader this application tracks, with its last position."""
        rows = self._conns.run(
            f"read the tracking of {self._app!r}",
            lambda conn: conn.execute(self._q.tracked).fetchall(),
            idempotent=True,
        )
        return {leader: int(position) for leader, position in rows}

    def load_view(self, name: str) -> tuple[bytes, int] | None:
        """A view's encoded state and the position it reached, or None."""
        row = self._conns.run(
            f"load view {name!r}",
            lambda conn: conn.execute(self._q.load_view, (name,), binary=True).fetchone(),
            idempotent=True,
        )
        return None if row is None else (bytes(row[0]), int(row[1]))


#: The largest event (payload and metadata, in bytes) whose append goes in one
#: message: its values travel quoted in the query's text (bytes in hex), which
#: costs little for the small events of commands; a larger one goes as
#: parameters, in three round trips (``_append_large_one``).
ONE_MESSAGE_BYTES = 16 * 1024


def _fits_one_message(event: NewEvent) -> bool:
    return len(event.payload) + len(event.meta or b"") <= ONE_MESSAGE_BYTES


#: The most events, and stored bytes, a batch sends quoted in one message
#: (psycopg quotes each value; a larger batch goes as binary parameters).
BATCH_MESSAGE_EVENTS = 1_000
BATCH_MESSAGE_BYTES = 256 * 1024


def _fits_batch_message(events: Sequence[NewEvent]) -> bool:
    if len(events) > BATCH_MESSAGE_EVENTS:
        return False
    size = 0
    for event in events:
        size += len(event.payload) + len(event.meta or b"")
    return size <= BATCH_MESSAGE_BYTES

