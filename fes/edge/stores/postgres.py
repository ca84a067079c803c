"""The PostgreSQL event store: one log shared by many processes and hosts.

Open it with a URL::

    postgresql://user:password@host:5432/dbname?schema=shop&pool_size=8

``schema`` (default ``public``) is created when missing; each application
gets four tables in it, ``{app}_events``, ``{app}_snapshots``,
``{app}_tracking`` and ``{app}_views``.  Every identifier is composed with
:class:`psycopg.sql.Identifier`, so no schema or application name can smuggle
SQL into a statement.  Query options (also accepted as keyword arguments of
:class:`PostgresDatabase`, which win over the URL):

``schema``
    the schema holding the tables (default ``public``).
``pool_size``
    the most connections the pool opens (default 5).
``pool_timeout``
    seconds to wait for a free connection (default 30).
``lock_timeout``
    how long an append waits for its application's log lock; PostgreSQL
    syntax, milliseconds or with a unit (default ``10s``; ``0`` waits forever).
``idle_in_transaction_session_timeout``
    the server ends a session that sits idle inside a transaction this long,
    so a stuck client cannot hold the log lock forever (default ``60s``).
``poll_interval``
    seconds between the checks :meth:`PostgresStore.wait` makes when no
    notification arrives (default 1).
``listen``
    ``false`` turns LISTEN off (needed behind a transaction-pooling proxy);
    :meth:`~PostgresStore.wait` then polls.
``retries``
    how often an operation that lost its connection is retried (default 3).

and the libpq options ``application_name``, ``connect_timeout``, ``host``,
``port``, ``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``, ``sslcrl``,
``passfile``, ``target_session_attrs`` and ``keepalives*``.  Anything else
raises :class:`fes.StoreURLError`.  The password never appears in
:attr:`PostgresDatabase.url`, reprs or error messages.

Global order: an EXCLUSIVE lock per insert transaction
-------------------------------------------------------

Positions come from an identity column, that is a sequence.  Sequences hand
out numbers when a row is inserted, not when its transaction commits, so two
concurrent writers can commit positions 8 and 7 in that order: a reader that
already followed the log to 8 would never see 7.  Every append therefore
starts its transaction with ``LOCK TABLE {app}_events IN EXCLUSIVE MODE``.
The lock conflicts with itself and with the row locks of INSERT, but not
with SELECT, so readers never wait.  A writer holds it from before it draws
its positions until after its commit is visible (PostgreSQL releases locks
after the transaction is marked committed), so the next writer draws higher
positions only once every lower one is committed or rolled back: positions
become visible in increasing order and a reader that has seen N never later
sees a new position below N.  The sequence keeps ``CACHE 1``; a per-session
cache would hand out numbers out of order.  Rolled-back appends leave gaps.

The price is one writer per application at a time, each holding the lock
for two round trips plus its commit.  The alternative, reading only below
the oldest running transaction id (``pg_snapshot_xmin``), lets writers run
in parallel but makes every reader wait for the slowest writer of the whole
database, and needs a transaction-id column and index.  The tests in
``tests/stores/test_postgres_order.py`` hold a writer's transaction open
after its insert and show that a reader never passes it, and that without
the lock one would.

An append takes three round trips.  ``BEGIN; LOCK TABLE …`` comes first, on
its own, because a statement's snapshot is taken when it starts: the version
check must run after the lock is granted to see the previous writer's
events.  Then one statement (binary parameters, prepared) does everything
else: the tracking compare-and-set, the versions of all streams of the
batch, one ``INSERT … SELECT FROM unnest(…) RETURNING`` of all events, which
inserts nothing unless every stream is at the expected version, and
``pg_notify``.  Then COMMIT, or ROLLBACK when a check failed.  No psycopg
pipeline: it ends with a flush request, after which the server stops timing
``idle_in_transaction_session_timeout`` and a stalled client could hold the
lock for ever.  Pooled connections use ``plan_cache_mode=force_generic_plan``:
planning the append's statement costs more than running it.

Lost connections
----------------

Reads, snapshot upserts and table creation are idempotent and retried.  A
write transaction is retried only when the connection failed before COMMIT
was sent: PostgreSQL commits nothing it has not been told to commit, and the
server rolls back the transaction of a vanished client.  Once COMMIT is sent
the outcome is unknown, so the store raises :class:`fes.StoreError` saying so
instead of risking a second copy of the events.

Notifications
-------------

Each append notifies the channel of its application (``fes:{schema}.{app}``,
or a digest when that is longer than PostgreSQL's 63-byte limit) in its own
transaction, so the notification is delivered only on commit.  One
dedicated connection per :class:`PostgresDatabase` listens, in a daemon
thread, and wakes the waiters of :meth:`PostgresStore.wait`; they also poll
every ``poll_interval``, so a lost notification delays them at most that.

Create a :class:`PostgresDatabase` in the process that uses it (after any
``fork``): connection pools do not survive forking.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import select
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
from attrs import frozen
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from fes.edge.stores.base import (
    ClosingDatabase,
    NewEvent,
    Resealed,
    StoredEvent,
    StoredSnapshot,
    Tracking,
    stored_event,
)
from fes.edge.stores.checks import (
    MAX_INTEGER,
    check_app_name,
    check_batch,
    check_integer,
    check_log,
    check_read,
    check_reseal,
    check_stream,
    check_timeout,
    check_tracking,
    check_where,
    not_stored,
)
from fes.edge.stores.urls import (
    option_bool,
    option_float,
    option_int,
    parse_url,
    redact,
    take_options,
)
from fes.errors import ConcurrencyError, DuplicateTracking, StoreError

__all__ = ["PostgresDatabase", "PostgresStore"]

#: The least time a wait gives the pool to hand out a connection, in seconds.
_LEAST_CONNECT_WAIT = 0.1


class _NoConnection(StoreError):
    """The pool handed out no connection in time."""

_T = TypeVar("_T")
_Conn = psycopg.Connection[TupleRow]

_LIBPQ_OPTIONS = (
    "application_name",
    "connect_timeout",
    "host",
    "keepalives",
    "keepalives_count",
    "keepalives_idle",
    "keepalives_interval",
    "passfile",
    "port",
    "sslcert",
    "sslcrl",
    "sslkey",
    "sslmode",
    "sslrootcert",
    "target_session_attrs",
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(ms|s|min|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_MAX_IDENTIFIER = 63  # bytes: PostgreSQL's NAMEDATALEN - 1
_LONGEST_SUFFIX = len("_snapshots")
_EVENTS_MARK = "fes events v1"  # table comment by which apps() recognises our tables
# The server ended the session: shutdown, crash, starting up, idle timeouts.
_DISCONNECT_STATES = frozenset({"57P01", "57P02", "57P03", "57P05", "25P03"})


@frozen
class _Settings:
    """The fes options of a database URL, read and checked."""

    schema: str = "public"
    pool_size: int = 5
    pool_timeout: float = 30.0
    lock_timeout_ms: int = 10_000
    idle_timeout_ms: int = 60_000
    poll_interval: float = 1.0
    listen: bool = True
    retries: int = 3


def _duration_ms(name: str, value: object) -> int:
    """Read a PostgreSQL duration: milliseconds, or a number with a unit."""
    match = None if isinstance(value, bool) else _DURATION.match(str(value))
    if match is None:
        raise ValueError("expected milliseconds or a number with unit ms, s, min, h or d")
    return round(float(match[1]) * _UNIT_MS[match[2] or "ms"])


def _schema_name(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError("expected a non-empty schema name")
    if len(value.encode()) > _MAX_IDENTIFIER:
        raise ValueError(f"a schema name holds at most {_MAX_IDENTIFIER} bytes")
    return value


def _text(name: str, value: object) -> str:
    return str(value)


_READERS: dict[str, Callable[[str, object], Any]] = {
    "idle_in_transaction_session_timeout": _duration_ms,
    "listen": option_bool,
    "lock_timeout": _duration_ms,
    "poll_interval": option_float(0.0),
    "pool_size": option_int(1),
    "pool_timeout": option_float(0.0),
    "retries": option_int(0),
    "schema": _schema_name,
    **{name: _text for name in _LIBPQ_OPTIONS},
}


def _parse(url: str, options: Mapping[str, object]) -> tuple[str, dict[str, Any], _Settings]:
    """Split a URL into a libpq URL, connection keywords and fes settings."""
    parsed = parse_url(url)
    if parsed.scheme not in ("postgresql", "postgres"):
        raise parsed.error("not a PostgreSQL URL: it must start with postgresql://")
    values = take_options(parsed, options, _READERS)
    defaults = _Settings()
    settings = _Settings(
        schema=values.get("schema", defaults.schema),
        pool_size=values.get("pool_size", defaults.pool_size),
        pool_timeout=values.get("pool_timeout", defaults.pool_timeout),
        lock_timeout_ms=values.get("lock_timeout", defaults.lock_timeout_ms),
        idle_timeout_ms=values.get(
            "idle_in_transaction_session_timeout", defaults.idle_timeout_ms
        ),
        poll_interval=values.get("poll_interval", defaults.poll_interval),
        listen=values.get("listen", defaults.listen),
        retries=values.get("retries", defaults.retries),
    )
    keywords: dict[str, Any] = {"application_name": "fes", "connect_timeout": "10"}
    keywords.update({k: v for k, v in values.items() if k in _LIBPQ_OPTIONS})
    keywords["autocommit"] = True
    # Generic plans: the store's statements are index lookups whatever their
    # parameters, and planning the append's statement afresh costs more than
    # running it.
    keywords["options"] = (
        f"-c lock_timeout={settings.lock_timeout_ms}"
        f" -c idle_in_transaction_session_timeout={settings.idle_timeout_ms}"
        " -c plan_cache_mode=force_generic_plan"
    )
    return f"{parsed.scheme}://{parsed.rest}", keywords, settings


def _password(url: str) -> str:
    """The URL's password, to scrub from messages that might echo it."""
    try:
        userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    except ValueError:
        return ""
    return unquote(userinfo.split(":", 1)[1]) if at and ":" in userinfo else ""


def _is_disconnect(exc: BaseException, conn: _Conn | None) -> bool:
    """Whether ``exc`` means the connection is gone (rather than a refused statement)."""
    if not isinstance(exc, psycopg.Error):
        return False
    if conn is not None and conn.closed:
        return True
    state = exc.sqlstate
    if state is None:  # raised by the client: it lost the server
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in _DISCONNECT_STATES


def _check_app(app: str) -> None:
    """Refuse application names every store refuses, or that PostgreSQL would truncate."""
    check_app_name(app)
    if len(app.encode()) > _MAX_IDENTIFIER - _LONGEST_SUFFIX:
        raise StoreError(
            f"application name {app!r} is too long for PostgreSQL: at most "
            f"{_MAX_IDENTIFIER - _LONGEST_SUFFIX} bytes (table names hold 63)"
        )


def _channel(schema: str, app: str) -> str:
    """The NOTIFY channel of an application: readable when it fits in 63 bytes."""
    name = f"fes:{schema}.{app}"
    if len(name.encode()) <= _MAX_IDENTIFIER:
        return name
    return "fes:" + hashlib.blake2b(f"{schema}\x00{app}".encode(), digest_size=16).hexdigest()


class _Signal:
    """A generation counter that waiters block on; the listener bumps it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    def bump(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait_past(self, seen: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen, timeout)


def _readable(fds: list[int], timeout: float) -> set[int]:
    """Which of ``fds`` become readable within ``timeout`` seconds (poll: any fd number)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(timeout * 1000)}


class _Listener:
    """One connection that LISTENs on behalf of every store of a database.

    A daemon thread waits on the connection's socket and on a pipe that
    :meth:`signal` and :meth:`close` write to, so new channels are listened to
    at once.  After LISTEN (and after a reconnection) it wakes the channel's
    waiters, which then re-check the log: nothing committed while the channel
    was not listened to is missed.
    """

    _KEEPALIVE = 60.0  # seconds of silence after which the connection is probed

    def __init__(self, conninfo: str, keywords: Mapping[str, Any], poll: float) -> None:
        self._conninfo = conninfo
        self._keywords = dict(keywords)
        # Waiters poll while the listener is down, so retrying more often than
        # they poll gains nothing; but never wait more than a second to recover.
        self._reconnect = min(poll, 1.0)
        self._lock = threading.Lock()
        self._signals: dict[str, _Signal] = {}
        self._pending: set[str] = set()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def signal(self, channel: str) -> _Signal:
        """The signal bumped on each notification of ``channel``."""
        with self._lock:
            if self._closed:
                raise StoreError("the database is closed")
            found = self._signals.get(channel)
            if found is not None:
                return found
            signal = self._signals[channel] = _Signal()
            self._pending.add(channel)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fes-listen", daemon=True)
                self._thread.start()
        self._wake()
        return signal

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join(timeout=10)
            if thread.is_alive():
                return  # still connecting: leave it its pipe rather than a reused fd
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        # A full pipe already holds a pending wake-up; a closed one needs none.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass

    def _run(self) -> None:
        conn: _Conn | None = None
        while not self._closed:
            try:
                if conn is None:
                    conn = psycopg.connect(self._conninfo, **self._keywords)
                    with self._lock:
                        self._pending = set(self._signals)
                self._serve(conn)
            except Exception:  # waiters poll meanwhile; reconnect after a pause
                if conn is not None:
                    conn.close()
                conn = None
                for signal in list(self._signals.values()):
                    signal.bump()  # waiters re-check now and poll until we are back
                if _readable([self._wake_r], self._reconnect):
                    self._drain()
        if conn is not None:
            conn.close()

    def _serve(self, conn: _Conn) -> None:
        """Listen to new channels, then deliver notifications until woken."""
        with self._lock:
            pending, self._pending = self._pending, set()
        for channel in sorted(pending):
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        for channel in pending:
            self._signals[channel].bump()
        for notify in conn.notifies(timeout=0):
            found = self._signals.get(notify.channel)
            if found is not None:
                found.bump()
        if self._closed:
            return
        ready = _readable([conn.fileno(), self._wake_r], self._KEEPALIVE)
        if self._wake_r in ready:
            self._drain()
        if not ready:
            conn.execute("SELECT 1")


_TRACK_FIRST = (
    "INSERT INTO {tracking} (leader, position) VALUES (%(leader)s, %(position)s)"
    " ON CONFLICT (leader) DO NOTHING"
)
_TRACK_NEXT = (
    "UPDATE {tracking} SET position = %(position)s"
    " WHERE leader = %(leader)s AND position = %(previous)s"
)
# Markers in the first column of an append's result rows that are not positions.
_CONFLICT, _TRACKED, _NOTIFIED = -1, -2, -3


def _append_statement(tracking: str) -> str:
    """The one statement of an append, for tracking ``none``, ``first`` or ``next``.

    It runs after the lock is taken, so its snapshot sees every earlier
    append.  ``cur`` holds each stream's actual version; the insert inserts
    nothing unless all are as expected (and the tracking compare-and-set
    held), and ``note`` notifies only when something was inserted.  The
    result rows are the new positions, plus marker rows: each conflicting
    stream with its actual version, the tracking row count, the notification.
    """
    track = {
        "none": ("", ""),
        "first": (f", track AS ({_TRACK_FIRST} RETURNING 1)", " AND EXISTS (SELECT 1 FROM track)"),
        "next": (f", track AS ({_TRACK_NEXT} RETURNING 1)", " AND EXISTS (SELECT 1 FROM track)"),
    }[tracking]
    tracked = (
        f" UNION ALL SELECT {_TRACKED}, NULL, count(*) FROM track" if tracking != "none" else ""
    )
    return (
        "WITH cur AS ("
        " SELECT f.stream, f.expected,"
        "  COALESCE((SELECT max(e.version) FROM {events} e WHERE e.stream = f.stream), 0)"
        "  AS actual"
        " FROM unnest(%(streams)s::text[], %(expected)s::bigint[]) AS f(stream, expected))"
        ", ok AS (SELECT NOT EXISTS (SELECT 1 FROM cur WHERE expected <> actual) AS fine)"
        f"{track[0]}"
        ", ins AS ("
        " INSERT INTO {events} (stream, version, topic, payload, timestamp_us, meta)"
        " SELECT t.stream, t.version, t.topic, t.payload, t.timestamp_us, t.meta"
        " FROM unnest(%(e_stream)s::text[], %(e_version)s::bigint[], %(e_topic)s::text[],"
        "  %(e_payload)s::bytea[], %(e_timestamp)s::bigint[], %(e_meta)s::bytea[])"
        "  WITH ORDINALITY AS t(stream, version, topic, payload, timestamp_us, meta, ord)"
        f" WHERE (SELECT fine FROM ok){track[1]}"
        " ORDER BY t.ord"
        " RETURNING position, stream, version)"
        ", note AS (SELECT pg_notify(%(channel)s, '') FROM (SELECT 1 FROM ins LIMIT 1) AS one)"
        " SELECT position, stream, version FROM ins"
        f" UNION ALL SELECT {_CONFLICT}, stream, actual FROM cur WHERE expected <> actual"
        f"{tracked}"
        f" UNION ALL SELECT {_NOTIFIED}, NULL, NULL FROM note"
    )


class _Queries:
    """The fixed statements of one application's tables, rendered once."""

    def __init__(self, conn: _Conn, schema: str, app: str) -> None:
        def table(suffix: str) -> sql.Identifier:
            return sql.Identifier(schema, f"{app}{suffix}")

        self.names = {
            "schema": sql.Identifier(schema),
            "events": table("_events"),
            "snapshots": table("_snapshots"),
            "tracking": table("_tracking"),
            "views": table("_views"),
        }

        def q(text: str) -> bytes:
            return sql.SQL(text).format(**self.names).as_bytes(conn)

        self.begin_locked = q("BEGIN; LOCK TABLE {events} IN EXCLUSIVE MODE")
        self.versions = q(
            "SELECT s, COALESCE((SELECT max(e.version) FROM {events} e WHERE e.stream = s), 0)"
            " FROM unnest(%s::text[]) AS s"
        )
        self.append = {kind: q(_append_statement(kind)) for kind in ("none", "first", "next")}
        self.track_first = q(_TRACK_FIRST + " RETURNING 1")
        self.track_next = q(_TRACK_NEXT + " RETURNING 1")
        self.last_tracked = q("SELECT position FROM {tracking} WHERE leader = %s")
        self.tracked = q("SELECT leader, position FROM {tracking} ORDER BY leader")
        self.last_position = q("SELECT COALESCE(max(position), 0) FROM {events}")
        self.save_snapshot = q(
            "INSERT INTO {snapshots} (stream, version, fingerprint, payload, timestamp_us)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (stream, version) DO UPDATE SET"
            " fingerprint = EXCLUDED.fingerprint, payload = EXCLUDED.payload,"
            " timestamp_us = EXCLUDED.timestamp_us"
        )
        self.reseal = q(
            "UPDATE {events} SET payload = %s, meta = %s"
            " WHERE stream = %s AND version = %s AND topic = %s"
        )
        self.load_snapshot = q(
            "SELECT stream, version, fingerprint, payload, timestamp_us FROM {snapshots}"
            " WHERE stream = %s AND version <= %s ORDER BY version DESC LIMIT 1"
        )
        self.view_first = q(
            "INSERT INTO {views} (name, leader, position, payload)"
            " VALUES (%(name)s, %(leader)s, %(position)s, %(payload)s)"
            " ON CONFLICT (name) DO NOTHING"
        )
        self.view_next = q(
            "UPDATE {views} SET leader = %(leader)s, position = %(position)s,"
            " payload = %(payload)s WHERE name = %(name)s AND position = %(previous)s"
        )
        self.load_view = q("SELECT payload, position FROM {views} WHERE name = %s")
        self._variants: dict[tuple[str, ...], bytes] = {}
        self._variants_lock = threading.Lock()

    def variant(self, key: tuple[str, ...], build: Callable[[], str], conn: _Conn) -> bytes:
        """A statement whose clauses depend on the arguments, rendered once per shape."""
        with self._variants_lock:
            found = self._variants.get(key)
        if found is None:
            found = sql.SQL(build()).format(**self.names).as_bytes(conn)
            with self._variants_lock:
                self._variants[key] = found
        return found

    def ddl(self) -> list[sql.Composed]:
        """The statements creating the tables, idempotently."""
        texts = [
            "CREATE TABLE IF NOT EXISTS {events} ("
            " position bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,"
            " stream text NOT NULL, version bigint NOT NULL, topic text NOT NULL,"
            " payload bytea NOT NULL, timestamp_us bigint NOT NULL, meta bytea,"
            " UNIQUE (stream, version))",
            "CREATE TABLE IF NOT EXISTS {snapshots} ("
            " stream text NOT NULL, version bigint NOT NULL, fingerprint text NOT NULL,"
            " payload bytea NOT NULL, timestamp_us bigint NOT NULL,"
            " PRIMARY KEY (stream, version))",
            "CREATE TABLE IF NOT EXISTS {tracking} ("
            " leader text PRIMARY KEY, position bigint NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {views} ("
            " name text PRIMARY KEY, leader text NOT NULL, position bigint NOT NULL,"
            " payload bytea NOT NULL)",
        ]
        statements = [sql.SQL(text).format(**self.names) for text in texts]
        statements.append(
            sql.SQL("COMMENT ON TABLE {events} IS {mark}").format(
                events=self.names["events"], mark=sql.Literal(_EVENTS_MARK)
            )
        )
        return statements


class PostgresDatabase(ClosingDatabase):
    """A PostgreSQL database (one schema of it) holding several applications' tables.

    ``PostgresDatabase("postgresql://user:pw@host/db?schema=shop", pool_size=8)``;
    the options are listed in the module's documentation.  It is also a
    context manager that closes it.
    """

    def __init__(self, url: str, **options: object) -> None:
        conninfo, keywords, self._settings = _parse(url, options)
        self._url = redact(url)
        self._secret = _password(url)
        self._conninfo = conninfo
        self._keywords = keywords
        self._stores: dict[str, PostgresStore] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._pool: ConnectionPool[_Conn] = ConnectionPool(
            conninfo,
            kwargs=keywords,
            min_size=1,
            max_size=self._settings.pool_size,
            timeout=self._settings.pool_timeout,
            num_workers=2,
            name=f"fes {self._url}",
            open=True,
        )
        self._listener = (
            _Listener(conninfo, keywords, self._settings.poll_interval)
            if self._settings.listen
            else None
        )

    @property
    def url(self) -> str:
        """The URL this database was opened with, its password replaced by ``***``."""
        return self._url

    @property
    def schema(self) -> str:
        """The schema holding the applications' tables."""
        return self._settings.schema

    def __repr__(self) -> str:
        return f"PostgresDatabase({self._url!r})"

    def store(self, app: str) -> PostgresStore:
        """The store of application ``app``, its tables created if missing."""
        _check_app(app)
        self._check_open(f"open the store of {app!r}")
        with self._lock:
            found = self._stores.get(app)
        if found is not None:
            return found
        store = self._run("create the tables of " + repr(app), self._create(app), idempotent=True)
        with self._lock:
            return self._stores.setdefault(app, store)

    def apps(self) -> list[str]:
        """The applications that have tables in this database's schema, sorted."""
        query = (
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')"
            " AND obj_description(c.oid, 'pg_class') = %s"
        )

        def work(conn: _Conn) -> list[str]:
            rows = conn.execute(query, (self._settings.schema, _EVENTS_MARK)).fetchall()
            return sorted(name.removesuffix("_events") for (name,) in rows)

        return self._run("list the applications", work, idempotent=True)

    def close(self) -> None:
        """Close the pool and the listener; the stores are unusable after."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._listener is not None:
            self._listener.close()
        self._pool.close()

    # -- internals -------------------------------------------------------------------

    def _create(self, app: str) -> Callable[[_Conn], PostgresStore]:
        schema = self._settings.schema

        def work(conn: _Conn) -> PostgresStore:
            queries = _Queries(conn, schema, app)
            tables = [f"{app}{s}" for s in ("_events", "_snapshots", "_tracking", "_views")]
            present = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = ANY(%s)",
                (schema, tables),
            ).fetchone()
            if present is None or present[0] != len(tables):
                with conn.transaction():
                    # Concurrent CREATE ... IF NOT EXISTS can still collide in the
                    # catalogues; one advisory lock per schema serialises creators.
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        ("fes schema " + schema,),
                    )
                    exists = conn.execute(
                        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
                    ).fetchone()
                    if exists is None:
                        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                    for statement in queries.ddl():
                        conn.execute(statement)
            return PostgresStore(self, app, queries)

        return work

    def _signal(self, channel: str) -> _Signal | None:
        return None if self._listener is None else self._listener.signal(channel)

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"could not {what} on {self._url}: {self._scrub(str(exc))}")

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise StoreError(f"could not {what}: the database {self._url} is closed")

    def _getconn(self, what: str, timeout: float | None = None) -> _Conn:
        self._check_open(what)
        try:
            return self._pool.getconn(timeout)
        except PoolTimeout:
            waited = self._settings.pool_timeout if timeout is None else timeout
            raise _NoConnection(
                f"could not {what}: no connection to {self._url} within "
                f"{waited:g}s ({self._reason()})"
            ) from None
        except PoolClosed:
            raise StoreError(f"could not {what}: the database {self._url} is closed") from None

    def _reason(self) -> str:
        """Why connecting fails, found by one direct attempt, without the password."""
        try:
            psycopg.connect(self._conninfo, **self._keywords).close()
        except psycopg.Error as exc:
            return self._scrub(str(exc)).strip() or type(exc).__name__
        return "all pooled connections are busy; raise pool_size or pool_timeout"

    def _run(
        self,
        what: str,
        work: Callable[[_Conn], _T],
        *,
        idempotent: bool,
        commit: Callable[[_Conn], None] | None = None,
        timeout: float | None = None,
    ) -> _T:
        """Run ``work`` with a pooled connection, retrying after lost connections.

        With ``commit``, ``work`` has opened a transaction that ``commit`` ends;
        a failure after COMMIT was sent is retried only if ``idempotent``.
        ``timeout`` bounds the wait for a connection (default: pool_timeout).
        """
        attempt = 0
        while True:
            conn = self._getconn(what, timeout)
            committing = False
            try:
                result = work(conn)
                if commit is not None:
                    committing = True
                    commit(conn)
                return result
            except Exception as exc:
                if not conn.closed and conn.pgconn.transaction_status in (
                    psycopg.pq.TransactionStatus.INTRANS,
                    psycopg.pq.TransactionStatus.INERROR,
                ):
                    try:
                        conn.rollback()
                    except psycopg.Error:
                        conn.close()
                if not _is_disconnect(exc, conn):
                    if isinstance(exc, psycopg.errors.LockNotAvailable):
                        raise StoreError(
                            f"could not {what} on {self._url}: another session (a writer, "
                            "or a schema change) held a lock it needs for longer than "
                            f"lock_timeout={self._settings.lock_timeout_ms}ms; nothing was "
                            "changed"
                        ) from exc
                    if isinstance(exc, psycopg.Error):
                        raise self._error(what, exc) from exc
                    raise
                # The server may have said goodbye before the socket closed:
                # close it so the pool does not hand it out again, and weed
                # out its idle siblings, which likely died with it (a restart).
                conn.close()
                self._pool.check()
                if committing and not idempotent:
                    raise StoreError(
                        f"lost the connection to {self._url} while committing, so it is "
                        f"unknown whether the attempt to {what} took effect: "
                        f"{self._scrub(str(exc)).strip()}"
                    ) from exc
                if attempt >= self._settings.retries:
                    raise StoreError(
                        f"could not {what}: lost the connection to {self._url} "
                        f"{attempt + 1} times: {self._scrub(str(exc)).strip()}"
                    ) from exc
            finally:
                self._pool.putconn(conn)
            time.sleep(0.05 * 2**attempt)
            attempt += 1


_EVENT_COLUMNS = "position, stream, version, topic, payload, timestamp_us, meta"


def _stream_query(
    columns: str,
    stream: str,
    from_version: int | None,
    to_version: int | None,
    descending: bool = False,
    limit: int | None = None,
) -> tuple[tuple[str, ...], Callable[[], str], list[object]]:
    """A SELECT of ``columns`` of one stream's events: its cache key, builder and parameters."""
    params: list[object] = [stream]
    key = [columns]
    clauses = ""
    if from_version is not None:
        key.append("from")
        params.append(from_version)
        clauses += " AND version >= %s"
    if to_version is not None:
        key.append("to")
        params.append(to_version)
        clauses += " AND version <= %s"
    key.append("desc" if descending else "asc")
    clauses += " ORDER BY version DESC" if descending else " ORDER BY version"
    if limit is not None:
        key.append("limit")
        params.append(limit)
        clauses += " LIMIT %s"

    def build() -> str:
        return f"SELECT {columns} FROM {{events}} WHERE stream = %s{clauses}"

    return tuple(key), build, params


class PostgresStore:
    """One application's tables in a PostgreSQL database; get it from ``database.store(app)``.

    Safe to share between threads: each call borrows a pooled connection.
    """

    def __init__(self, database: PostgresDatabase, app: str, queries: _Queries) -> None:
        self._db = database
        self._app = app
        self._q = queries
        self._channel = _channel(database.schema, app)

    @property
    def app(self) -> str:
        """The application whose tables these are."""
        return self._app

    def __repr__(self) -> str:
        return f"PostgresStore({self._app!r}, {self._db.url!r})"

    # -- writing ---------------------------------------------------------------------

    def append(
        self, events: Sequence[NewEvent], *, tracking: Tracking | None = None
    ) -> list[int]:
        """Append atomically; return the new events' positions in order."""
        firsts = check_batch(events)
        if tracking is not None:
            check_tracking(tracking)
        elif not events:
            self._db._check_open("append")
            return []
        batch = list(events)
        return self._db._run(
            f"append to {self._app!r}",
            lambda conn: self._append(conn, batch, firsts, tracking),
            idempotent=False,
            commit=self._commit,
        )

    def _append(
        self,
        conn: _Conn,
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
        # built before the log's lock is taken, which every appender waits for
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
            if position == _CONFLICT:
                actual[stream] = version
            elif position == _TRACKED:
                tracked = version
            elif position != _NOTIFIED:
                at[stream, version] = position
        if tracking is not None and tracked != 1:
            raise DuplicateTracking(tracking.leader, tracking.position)
        for stream, first in firsts.items():
            if stream in actual:
                raise ConcurrencyError(stream, first - 1, actual[stream])
        assert len(at) == len(events), "the insert stores all events or none"
        return [at[e.stream, e.version] for e in events]

    def _commit(self, conn: _Conn) -> None:
        """Send COMMIT: from here on a lost connection leaves the outcome unknown."""
        conn.execute(b"COMMIT")

    def reseal(self, rows: Sequence[Resealed]) -> None:
        """Replace stored events' payloads and metadata, atomically."""
        check_reseal(rows)
        if not rows:
            self._db._check_open("reseal")
            return

        def work(conn: _Conn) -> None:
            conn.execute(b"BEGIN")
            for row in rows:
                changed = conn.execute(
                    self._q.reseal, (row.payload, row.meta, row.stream, row.version, row.topic)
                ).rowcount
                if changed != 1:
                    raise not_stored(row)

        # Setting the same payloads twice is harmless: a lost COMMIT may be retried.
        self._db._run(f"reseal events of {self._app!r}", work, idempotent=True, commit=self._commit)

    def save_snapshot(self, snapshot: StoredSnapshot) -> None:
        """Store a snapshot (replacing one of the same stream and version)."""
        check_where(snapshot.stream, snapshot.version)
        s = snapshot
        self._db._run(
            f"save a snapshot of {s.stream!r}",
            lambda conn: conn.execute(
                self._q.save_snapshot, (s.stream, s.version, s.fingerprint, s.payload, s.timestamp)
            ),
            idempotent=True,
        )

    def save_view(self, name: str, payload: bytes, tracking: Tracking) -> None:
        """Store a view's encoded state with the position it has reached, atomically."""
        check_tracking(tracking)

        def work(conn: _Conn) -> None:
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

        self._db._run(f"save view {name!r}", work, idempotent=False, commit=self._commit)

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
            self._db._check_open("read")
            return []
        key, build, params = _stream_query(
            _EVENT_COLUMNS, stream, from_version, to_version, descending, limit
        )
        return self._read_events(f"read stream {stream!r}", key, build, params)

    def read_payloads(
        self, stream: str, *, from_version: int | None = None, to_version: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """``(version, topic, payload)`` of a stream's events, in version order."""
        check_read(stream, from_version, to_version)
        key, build, params = _stream_query(
            "version, topic, payload", stream, from_version, to_version
        )

        def work(conn: _Conn) -> list[tuple[int, str, bytes]]:
            query = self._q.variant(key, build, conn)
            return conn.execute(query, params, binary=True).fetchall()

        return self._db._run(f"read stream {stream!r}", work, idempotent=True)

    def stream_version(self, stream: str) -> int:
        """The stream's current version (0 when it has no events)."""
        check_stream(stream)
        rows = self._db._run(
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
            self._db._check_open("read")
            return {}
        rows = self._db._run(
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
            self._db._check_open("read")
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
            text = f"SELECT {_EVENT_COLUMNS} FROM {{events}} WHERE position > %s"
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
        def work(conn: _Conn) -> list[StoredEvent]:
            query = self._q.variant(key, build, conn)
            rows = conn.execute(query, params, binary=True).fetchall()
            return list(map(stored_event, rows))

        return self._db._run(what, work, idempotent=True)

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
        def work(conn: _Conn) -> int:
            row = conn.execute(query, params).fetchone()
            return 0 if row is None or row[0] is None else int(row[0])

        return self._db._run(what, work, idempotent=True, timeout=timeout)

    def wait(self, after: int, timeout: float) -> bool:
        """Block until a position above ``after`` is visible, or ``timeout`` passes.

        Wakes on this application's notifications and checks at least every
        ``poll_interval`` seconds in case one was lost.  While no connection
        can be had (the server is away), it returns False when ``timeout``
        passes, rather than after ``pool_timeout``.
        """
        check_integer("after", after)
        deadline = time.monotonic() + check_timeout(timeout)
        signal = self._db._signal(self._channel)
        poll = self._db._settings.poll_interval
        what = f"read the last position of {self._app!r}"
        while True:
            seen = signal.generation if signal is not None else 0
            # with the server away, give up on a connection when the wait ends
            # (at least a moment, so that a zero timeout can still look once)
            within = max(deadline - time.monotonic(), _LEAST_CONNECT_WAIT)
            try:
                if self._scalar(what, self._q.last_position, timeout=within) > after:
                    return True
            except _NoConnection:  # the server is away or the pool busy: nothing seen
                if deadline - time.monotonic() <= 0:
                    return False
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if signal is not None:
                signal.wait_past(seen, min(remaining, poll))
            else:
                time.sleep(min(remaining, poll))

    def load_snapshot(
        self, stream: str, *, to_version: int | None = None
    ) -> StoredSnapshot | None:
        """The latest snapshot of ``stream`` at or below ``to_version``."""
        check_read(stream, to_version=to_version)
        limit = to_version if to_version is not None else MAX_INTEGER

        def work(conn: _Conn) -> StoredSnapshot | None:
            row = conn.execute(self._q.load_snapshot, (stream, limit), binary=True).fetchone()
            if row is None:
                return None
            return StoredSnapshot(
                stream=row[0], version=row[1], fingerprint=row[2], payload=row[3], timestamp=row[4]
            )

        return self._db._run(f"load a snapshot of {stream!r}", work, idempotent=True)

    def last_tracked(self, leader: str) -> int:
        """The last position of ``leader`` this application tracked (0 for none)."""
        return self._scalar(
            f"read the tracking of {leader!r} by {self._app!r}", self._q.last_tracked, (leader,)
        )

    def tracked(self) -> dict[str, int]:
        """Every leader this application tracks, with its last position."""
        rows = self._db._run(
            f"read the tracking of {self._app!r}",
            lambda conn: conn.execute(self._q.tracked).fetchall(),
            idempotent=True,
        )
        return {leader: int(position) for leader, position in rows}

    def load_view(self, name: str) -> tuple[bytes, int] | None:
        """A view's encoded state and the position it reached, or None."""
        row = self._db._run(
            f"load view {name!r}",
            lambda conn: conn.execute(self._q.load_view, (name,), binary=True).fetchone(),
            idempotent=True,
        )
        return None if row is None else (bytes(row[0]), int(row[1]))
