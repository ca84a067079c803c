"""The SQLite event store: one file, several applications, several processes.

Each application has four tables named after it (``"shop_events"``,
``"shop_snapshots"``, ``"shop_tracking"``, ``"shop_views"``) and a row in
``fes_apps``, so one file holds several applications.  The file is in WAL
mode, so readers never block the one writer and the writer never blocks
readers; every write runs in ``BEGIN IMMEDIATE``, which takes the write lock
up front (waiting up to ``busy_timeout``) and so can never fail half way for
want of it.

Positions are ``INTEGER PRIMARY KEY AUTOINCREMENT``: never reused, never
changed by VACUUM.  They are assigned under the write lock, so they increase
in commit order, and the positions of one append are contiguous.

Each thread has its own connection; a forked child opens its own rather than
use its parent's.  :meth:`SQLiteDatabase.close` never closes a connection
another thread is using (that would crash sqlite3): the thread closes it
when its operation ends.  :meth:`SQLiteStore.wait` wakes at once on appends made
through the same :class:`SQLiteDatabase` and polls for those of other
processes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection, Sequence
from operator import attrgetter
from typing import Any, TypeVar
from urllib.parse import quote, unquote

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
    StoreURL,
    option_bool,
    option_choice,
    option_float,
    option_int,
    take_options,
)
from fes.errors import ConcurrencyError, DuplicateTracking, StoreError

_T = TypeVar("_T")

__all__ = ["SQLiteDatabase", "SQLiteStore", "table_prefix"]

#: The schema version written to ``fes_apps``; a file from a newer fes is refused.
SCHEMA = 1

#: Streams per query in stream_versions: well under SQLite's limit on parameters.
_VERSIONS_CHUNK = 500
_COLUMNS = "position, stream, version, topic, payload, timestamp, meta"
_ROW = attrgetter("stream", "version", "topic", "payload", "timestamp", "meta")
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_OPTIONS = {
    "busy_timeout": option_int(0),
    "create": option_bool,
    "poll_interval": option_float(0.0),
    "synchronous": option_choice(*_SYNCHRONOUS),
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_prefix(app: str) -> str:
    """The prefix of ``app``'s table names.

    SQLite compares table names without regard to ASCII case, and reserves
    names starting with ``sqlite_``; so an upper-case letter ``X`` becomes
    ``^x`` and a name starting with ``sqlite`` gets a leading ``~``.  Neither
    character can occur in an application name, so different applications
    always get different tables.  Most names (``shop``, ``order-history``)
    are their own prefix.
    """
    prefix = "".join("^" + c.lower() if "A" <= c <= "Z" else c for c in app)
    return "~" + prefix if prefix.startswith("sqlite") else prefix


class _Held:
    """A thread's connection, with what that thread alone writes about it.

    ``busy`` counts the operations running on it (more than one only when a
    signal handler runs one inside another), so that ``close()`` leaves a
    busy connection for its thread to close.  ``began`` is true while a
    transaction fes began may be open: one that an interrupt left open is
    rolled back by the next operation, never one a caller began on
    :meth:`SQLiteDatabase.connection`.  The database holds these weakly, so
    a finished thread's connection goes with it.  (Slots: this is on the hot
    path, and attributes of a ``sqlite3.Connection`` subclass are slow.)
    """

    __slots__ = ("__weakref__", "began", "busy", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.busy = 0
        self.began = False


def _end(held: _Held, sql: str = "ROLLBACK") -> None:
    """End the transaction fes began on ``held``'s connection, if it is still open."""
    if held.began:
        if held.conn.in_transaction:
            held.conn.execute(sql)
        held.began = False


def _is_busy(error: sqlite3.Error) -> bool:
    return error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def _after_fork_in_child() -> None:
    """In a forked child: never use, nor close, the parent's connections.

    Closing them here could disturb the parent's locks and WAL, so they are
    kept, unused, for the child's lifetime; each thread opens afresh.
    """
    for database in list(_open):
        _inherited.append(database._forget_connections())
        # Another thread of the parent may have held these at the fork.
        database._lock = threading.Lock()
        database.writer = threading.Lock()
        database.wake_lock = threading.Lock()
        database.condition = threading.Condition(database.wake_lock)
        database.waiters = 0


_open: weakref.WeakSet[SQLiteDatabase] = weakref.WeakSet()
_inherited: list[object] = []
os.register_at_fork(after_in_child=_after_fork_in_child)


class SQLiteDatabase(ClosingDatabase):
    """An SQLite file holding several applications' tables.

    ``synchronous`` is the durability (``FULL``: a commit survives power
    loss; ``NORMAL``: it survives a crash of the process); ``busy_timeout``
    is how long, in milliseconds, a write waits for another writer;
    ``create=False`` refuses to create the file or missing tables;
    ``poll_interval`` is how often, in seconds, :meth:`SQLiteStore.wait`
    looks for other processes' appends.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: int = 5000,
        create: bool = True,
        poll_interval: float = 0.02,
        url: str | None = None,
    ) -> None:
        path = os.fspath(path)
        self._url = url if url is not None else f"sqlite:///{path}"
        if synchronous.upper() not in _SYNCHRONOUS:
            raise StoreError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        self.path = os.path.abspath(path)
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        self.create = create
        self.poll_interval = poll_interval
        # Held with ``with``, never through the condition: its Python-level
        # __enter__ could be interrupted (Ctrl-C) holding the lock for good.
        self.wake_lock = threading.Lock()
        self.condition = threading.Condition(self.wake_lock)
        self.generation = 0
        self.waiters = 0
        self.closed = False
        self._lock = threading.Lock()
        # Writers of this process queue on a lock of their own: SQLite's busy
        # handler sleeps in steps of milliseconds, which made threads of one
        # runner (a leader and its followers, one file) wait far longer than
        # the write they were waiting for.  Other processes still meet
        # SQLite's lock and busy timeout.
        self.writer = threading.Lock()
        self._local = threading.local()
        self._connections: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._stores: dict[str, SQLiteStore] = {}
        try:
            held = self.use()
            try:
                if create and not self._has_table(held.conn, "fes_apps"):
                    self._write(
                        held,
                        "CREATE TABLE IF NOT EXISTS fes_apps "
                        "(name TEXT PRIMARY KEY, schema INTEGER NOT NULL)",
                    )
            finally:
                self.release(held)
        except sqlite3.Error as error:
            self.close()
            raise StoreError(f"cannot open {self._url}: {error}") from None
        except BaseException:
            self.close()
            raise
        _open.add(self)

    @classmethod
    def from_url(cls, url: StoreURL, **options: Any) -> SQLiteDatabase:
        """Open the database a ``sqlite:///path`` URL names, with its options."""
        if url.rest in ("", "/"):
            raise url.error("it names no file: write sqlite:///path/to/file.db")
        if not url.rest.startswith("/"):
            raise url.error(
                "an SQLite URL has no host: write sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        path = unquote(url.rest[1:])
        if not path:
            raise url.error("it names no file: write sqlite:///path/to/file.db")
        if path == ":memory:":
            raise url.error("for a database in memory use memory://")
        values = take_options(url, options, _OPTIONS)
        return cls(path, url=url.safe, **values)

    def __repr__(self) -> str:
        return f"<SQLiteDatabase {self._url}>"

    @property
    def url(self) -> str:
        """The URL this database was opened with."""
        return self._url

    # Connections ------------------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use.

        Not guarded against :meth:`close` as fes's own operations are (see
        :meth:`use`): for a look at pragmas, say.
        """
        try:
            held: _Held = self._local.held
        except AttributeError:
            held = self._connect()
        return held.conn

    def use(self) -> _Held:
        """This thread's connection, counted busy until :meth:`release`; see :meth:`close`.

        A transaction fes began on it and an interrupt left open is rolled
        back first, unless an operation is already running on it in this
        thread (in a signal handler): that one's transaction is alive.
        """
        try:
            held: _Held = self._local.held
        except AttributeError:
            held = self._connect()
        held.busy += 1
        # close() sets closed before it looks at busy, and this looks at
        # closed after setting busy: under the GIL one of the two sees the other.
        if self.closed:
            self.release(held)
            raise self.closed_error()
        if held.began and held.conn.in_transaction and held.busy == 1:
            try:
                _end(held)
            except sqlite3.Error as error:
                self.release(held)
                raise self.error(error, "roll back an interrupted transaction") from None
            except BaseException:
                self.release(held)
                raise
        return held

    def release(self, held: _Held) -> None:
        """End an operation on ``held``; if the database was closed meanwhile, close it."""
        held.busy -= 1
        if self.closed:
            with self._lock:
                if not held.busy:
                    with contextlib.suppress(sqlite3.Error):
                        held.conn.close()

    def _connect(self) -> _Held:
        with self._lock:
            if self.closed:
                raise self.closed_error()
            mode = "rwc" if self.create else "rw"
            if not self.create and not os.path.exists(self.path):
                raise StoreError(
                    f"cannot open {self._url}: there is no file {self.path} (and create is false)"
                )
            try:
                conn = sqlite3.connect(
                    f"file:{quote(self.path)}?mode={mode}",
                    uri=True,
                    timeout=self.busy_timeout / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                    cached_statements=256,
                )
            except sqlite3.Error as error:
                raise StoreError(
                    f"cannot open {self._url}: {error} (is {os.path.dirname(self.path)} "
                    "an existing, writable directory?)"
                ) from None
            try:
                journal = self._wal(conn)
                if str(journal).lower() != "wal":
                    raise StoreError(
                        f"cannot put {self._url} in WAL mode (it stays in {journal!r} mode)"
                    )
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            except sqlite3.DatabaseError as error:
                conn.close()
                message = str(error)
                if "not a database" in message or "malformed" in message:
                    raise StoreError(
                        f"cannot open {self._url}: {self.path} is not an SQLite database, "
                        f"or it is corrupt ({message})"
                    ) from None
                raise self.error(error, "open it") from None
            except BaseException:
                conn.close()
                raise
            held = _Held(conn)
            self._connections.add(held)
            self._local.held = held
            return held

    def _wal(self, conn: sqlite3.Connection) -> object:
        """Put the file in WAL mode; the journal mode it is in after.

        SQLite answers "locked" at once, without its busy handler, when
        another connection holds a lock the switch needs (several processes
        opening a new file at once), so this retries until busy_timeout.
        """
        deadline = time.monotonic() + self.busy_timeout / 1000
        delay = 0.001
        while True:
            try:
                return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as error:
                remaining = deadline - time.monotonic()
                if not _is_busy(error):
                    raise
                if remaining <= 0:
                    raise StoreError(
                        f"cannot open {self._url}: other connections kept it locked for "
                        f"longer than busy_timeout={self.busy_timeout} ms, so fes could not "
                        "put it in WAL mode"
                    ) from None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.025)

    def _forget_connections(self) -> object:
        held = (self._local, list(self._connections))
        self._local = threading.local()
        self._connections = weakref.WeakSet()
        return held

    def closed_error(self) -> StoreError:
        """The error every operation on a closed database raises."""
        return StoreError(f"the database {self._url} is closed")

    def error(self, error: sqlite3.Error, doing: str) -> StoreError:
        """A StoreError saying what failed, translated from sqlite3's ``error``."""
        if self.closed:
            return self.closed_error()
        message = str(error)
        if "locked" in message or "busy" in message:
            return StoreError(
                f"{self._url} is locked: another connection held the write lock for longer "
                f"than busy_timeout={self.busy_timeout} ms, so fes could not {doing}; "
                "nothing was stored"
            )
        return StoreError(f"{self._url}: could not {doing}: {type(error).__name__}: {message}")

    @staticmethod
    def _has_table(conn: sqlite3.Connection, name: str) -> bool:
        row = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return bool(row[0])

    @staticmethod
    def _write(held: _Held, *statements: str, app: str | None = None) -> None:
        conn = held.conn
        # BEGIN inside the try: an interrupt just after it must roll back too.
        try:
            held.began = not conn.in_transaction
            conn.execute("BEGIN IMMEDIATE")
            for statement in statements:
                conn.execute(statement)
            if app is not None:
                conn.execute(
                    "INSERT INTO fes_apps (name, schema) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (app, SCHEMA),
                )
            _end(held, "COMMIT")
        except BaseException:
            _end(held)
            raise

    def notify(self) -> None:
        """Wake this database's waiters: something was committed.

        Appends skip the condition's lock when nobody waits.  That is safe
        because an appender bumps ``generation`` before it looks at
        ``waiters``, and a waiter counts itself before it compares
        ``generation``: one of the two always sees the other.
        """
        self.generation += 1
        if self.waiters:
            with self.wake_lock:
                self.condition.notify_all()

    # The Database protocol -------------------------------------------------------

    def store(self, app: str) -> SQLiteStore:
        """The store of ``app``, its tables created if missing (unless create is false)."""
        check_app_name(app)
        with self._lock:
            store = self._stores.get(app)
        if store is not None:
            return store
        store = SQLiteStore(self, app)
        try:
            self._prepare(store)
        except sqlite3.Error as error:
            raise self.error(error, f"create the tables of {app!r}") from None
        with self._lock:
            return self._stores.setdefault(app, store)

    def _prepare(self, store: SQLiteStore) -> None:
        held = self.use()
        try:
            self._prepare_on(held, store)
        finally:
            self.release(held)

    def _prepare_on(self, held: _Held, store: SQLiteStore) -> None:
        conn = held.conn
        names = store.tables
        found = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?, ?)",
            names,
        ).fetchone()[0]
        registered = (
            self._has_table(conn, "fes_apps")
            and conn.execute("SELECT schema FROM fes_apps WHERE name = ?", (store.app,)).fetchone()
        )
        if registered and registered[0] > SCHEMA:
            raise StoreError(
                f"the tables of {store.app!r} in {self._url} have schema {registered[0]}, "
                f"newer than this fes knows ({SCHEMA}): upgrade fes"
            )
        if found == len(names) and registered:
            return
        if not self.create:
            raise StoreError(
                f"{self._url} has no tables for application {store.app!r} "
                "(and create is false): open it with create=true to create them"
            )
        self._write(held, *store.schema, app=store.app)

    def apps(self) -> list[str]:
        """The applications that have tables in this database."""
        held = self.use()
        conn = held.conn
        try:
            if not self._has_table(conn, "fes_apps"):
                return []
            return [row[0] for row in conn.execute("SELECT name FROM fes_apps ORDER BY name")]
        except sqlite3.Error as error:
            raise self.error(error, "list its applications") from None
        finally:
            self.release(held)

    def close(self) -> None:
        """Close the database; every later operation, in any thread, raises StoreError.

        Connections no operation is using are closed at once.  One that
        another thread is using (closing it would crash sqlite3) is closed
        by that thread when its operation ends, which finishes normally.
        Closing twice is harmless.
        """
        with self._lock:
            self.closed = True
            connections = list(self._connections)
            self._forget_connections()
            for held in connections:
                if not held.busy:
                    with contextlib.suppress(sqlite3.Error):
                        held.conn.close()
        self.notify()


class SQLiteStore:
    """One application's tables in an SQLite file."""

    def __init__(self, database: SQLiteDatabase, app: str) -> None:
        self._database = database
        self._app = app
        prefix = table_prefix(app)
        suffixes = ("_events", "_snapshots", "_tracking", "_views")
        self.tables = tuple(prefix + suffix for suffix in suffixes)
        events, snapshots, tracking, views = (_quote(t) for t in self.tables)
        self.schema = (
            f"CREATE TABLE IF NOT EXISTS {events} ("
            "position INTEGER PRIMARY KEY AUTOINCREMENT, "
            "stream TEXT NOT NULL, version INTEGER NOT NULL, topic TEXT NOT NULL, "
            "payload BLOB NOT NULL, timestamp INTEGER NOT NULL, meta BLOB, "
            "UNIQUE (stream, version))",
            f"CREATE TABLE IF NOT EXISTS {snapshots} ("
            "stream TEXT NOT NULL, version INTEGER NOT NULL, fingerprint TEXT NOT NULL, "
            "payload BLOB NOT NULL, timestamp INTEGER NOT NULL, "
            "PRIMARY KEY (stream, version)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {tracking} ("
            "leader TEXT PRIMARY KEY, position INTEGER NOT NULL) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {views} ("
            "name TEXT PRIMARY KEY, payload BLOB NOT NULL, position INTEGER NOT NULL)",
        )
        self._insert = (
            f"INSERT INTO {events} (stream, version, topic, payload, timestamp, meta) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        self._version = f"SELECT max(version) FROM {events} WHERE stream = ?"
        self._versions = (
            f"SELECT stream, max(version) FROM {events} WHERE stream IN ({{}}) GROUP BY stream"
        )
        stream = f"SELECT {_COLUMNS} FROM {events} WHERE stream = ? AND version >= ? "
        self._stream = stream + "AND version <= ? ORDER BY version LIMIT ?"
        self._stream_descending = stream + "AND version <= ? ORDER BY version DESC LIMIT ?"
        self._reseal = (
            f"UPDATE {events} SET payload = ?, meta = ? WHERE stream = ? AND version = ? "
            "AND topic = ?"
        )
        self._payloads = (
            f"SELECT version, topic, payload FROM {events} WHERE stream = ? AND version >= ? "
            "AND version <= ? ORDER BY version"
        )
        self._log = (
            f"SELECT {_COLUMNS} FROM {events} WHERE position > ? AND position <= ? "
            "ORDER BY position LIMIT ?"
        )
        self._log_topics = (
            f"SELECT {_COLUMNS} FROM {events} WHERE position > ? AND position <= ? "
            "AND topic IN ({}) ORDER BY position LIMIT ?"
        )
        self._last = f"SELECT max(position) FROM {events}"
        self._track_first = (
            f"INSERT INTO {tracking} (leader, position) VALUES (?, ?) ON CONFLICT DO NOTHING"
        )
        self._track_next = f"UPDATE {tracking} SET position = ? WHERE leader = ? AND position = ?"
        self._tracked_one = f"SELECT position FROM {tracking} WHERE leader = ?"
        self._tracked_all = f"SELECT leader, position FROM {tracking} ORDER BY leader"
        self._snapshot_save = (
            f"INSERT OR REPLACE INTO {snapshots} "
            "(stream, version, fingerprint, payload, timestamp) VALUES (?, ?, ?, ?, ?)"
        )
        self._snapshot_load = (
            f"SELECT stream, version, fingerprint, payload, timestamp FROM {snapshots} "
            "WHERE stream = ? AND version <= ? ORDER BY version DESC LIMIT 1"
        )
        self._view_first = (
            f"INSERT INTO {views} (name, payload, position) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
        )
        self._view_next = (
            f"UPDATE {views} SET payload = ?, position = ? WHERE name = ? AND position = ?"
        )
        self._view_load = f"SELECT payload, position FROM {views} WHERE name = ?"

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
        database = self._database
        held = database.use()
        conn = held.conn
        try:
            # ``with``: CPython takes the lock and sets up its release in one
            # step, so an interrupt (Ctrl-C) cannot leave it held.
            with database.writer:
                # BEGIN inside the try: an interrupt just after it must roll back too.
                try:
                    held.began = not conn.in_transaction
                    conn.execute("BEGIN IMMEDIATE")
                    if tracking is not None:
                        self._track(conn, tracking)
                    version = self._version
                    for stream, first in firsts.items():
                        # A first version of 1 needs no look: if the stream has
                        # events, the unique (stream, version) refuses the insert.
                        if first != 1:
                            current = conn.execute(version, (stream,)).fetchone()[0] or 0
                            if current != first - 1:
                                raise ConcurrencyError(stream, first - 1, current)
                    count = len(events)
                    if count == 1:
                        last = conn.execute(self._insert, _ROW(events[0])).lastrowid
                    elif count:
                        conn.executemany(self._insert, map(_ROW, events))
                        last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                    conn.execute("COMMIT")
                    held.began = False
                except BaseException:
                    _end(held)
                    raise
        except sqlite3.IntegrityError as error:
            raise self._conflict(conn, firsts, error) from None
        except sqlite3.Error as error:
            raise database.error(error, f"append to {self._app!r}") from None
        finally:
            database.release(held)
        database.notify()
        if not count:
            return []
        assert last is not None
        # Under the write lock AUTOINCREMENT hands out consecutive rowids.
        return list(range(last - count + 1, last + 1))

    def _track(self, conn: sqlite3.Connection, tracking: Tracking) -> None:
        if tracking.previous == 0:
            done = conn.execute(self._track_first, (tracking.leader, tracking.position))
        else:
            done = conn.execute(
                self._track_next, (tracking.position, tracking.leader, tracking.previous)
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
                    current = conn.execute(self._version, (stream,)).fetchone()[0] or 0
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
                    self._reseal, (row.payload, row.meta, row.stream, row.version, row.topic)
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
        self._write_one("save a snapshot", self._snapshot_save, row)

    def save_view(self, name: str, payload: bytes, tracking: Tracking) -> None:
        """Store a view's encoded state with the position it has reached, atomically."""
        check_tracking(tracking)
        row: tuple[Any, ...]
        if tracking.previous == 0:
            sql, row = self._view_first, (name, payload, tracking.position)
        else:
            sql, row = self._view_next, (payload, tracking.position, name, tracking.previous)
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
            with database.writer:
                try:
                    held.began = not conn.in_transaction
                    conn.execute("BEGIN IMMEDIATE")
                    result = work(conn)
                    _end(held, "COMMIT")
                except BaseException:
                    _end(held)
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
            self._stream_descending if descending else self._stream,
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
            self._payloads,
            (
                stream,
                0 if from_version is None else from_version,
                MAX_INTEGER if to_version is None else to_version,
            ),
        )

    def stream_version(self, stream: str) -> int:
        """The stream's current version (0 when it has no events)."""
        check_stream(stream)
        rows = self._rows("read a stream's version", self._version, (stream,))
        return rows[0][0] or 0

    def stream_versions(self, streams: Collection[str]) -> dict[str, int]:
        """Each given stream's current version (0 for one with no events), in one read."""
        wanted = list(dict.fromkeys(streams))
        for stream in wanted:
            check_stream(stream)
        versions = dict.fromkeys(wanted, 0)
        chunks = [wanted[i : i + _VERSIONS_CHUNK] for i in range(0, len(wanted), _VERSIONS_CHUNK)]
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
                    sql = self._versions.format(", ".join("?" * len(chunk)))
                    versions.update(conn.execute(sql, chunk).fetchall())
            finally:
                if several:
                    _end(held, "COMMIT")
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
            rows = self._rows("read the log", self._log, (*bounds, size))
        else:
            wanted = sorted(set(topics))
            if not wanted:
                return []
            sql = self._log_topics.format(", ".join("?" * len(wanted)))
            rows = self._rows("read the log", sql, (*bounds, *wanted, size))
        return list(map(stored_event, rows))

    def last_position(self) -> int:
        """The highest position a reader can see now (0 for an empty log)."""
        return self._rows("read the last position", self._last, ())[0][0] or 0

    def wait(self, after: int, timeout: float) -> bool:
        """Block until a position above ``after`` is visible, or ``timeout`` passes.

        Appends through this database wake it at once; other processes'
        appends are seen within ``poll_interval``.
        """
        check_integer("after", after)
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
            self._snapshot_load,
            (stream, MAX_INTEGER if to_version is None else to_version),
        )
        return StoredSnapshot(*rows[0]) if rows else None

    def last_tracked(self, leader: str) -> int:
        """The last position of ``leader`` this application tracked (0 for none)."""
        rows = self._rows("read a tracking position", self._tracked_one, (leader,))
        return int(rows[0][0]) if rows else 0

    def tracked(self) -> dict[str, int]:
        """Every leader this application tracks, with its last position."""
        return dict(self._rows("read tracking positions", self._tracked_all, ()))

    def load_view(self, name: str) -> tuple[bytes, int] | None:
        """A view's encoded state and the position it reached, or None."""
        rows = self._rows(f"load view {name!r}", self._view_load, (name,))
        return (rows[0][0], rows[0][1]) if rows else None
