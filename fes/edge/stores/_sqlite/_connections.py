"""Per-thread connections to an SQLite file: opening, pragmas, WAL, locks, errors.

:class:`Connections` is what a database shares with its stores: each
thread's connection (counted busy while an operation runs, so that ``close``
never closes one in use), the lock its writers queue on, the condition its
waiters sleep on, and the translation of sqlite3's errors into
:class:`fes.errors.StoreError`.  :class:`fes.edge.stores._sqlite.SQLiteDatabase`
is one; its stores use it through these methods only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from urllib.parse import quote

from fes.edge.stores._sqlite._sql import SCHEMA
from fes.errors import StoreError

__all__ = ["Connections", "Held", "end", "forget_after_fork", "is_busy"]


class Held:
    """A thread's connection, with what that thread alone writes about it.

    ``busy`` counts the operations running on it (more than one only when a
    signal handler runs one inside another), so that ``close()`` leaves a
    busy connection for its thread to close.  ``began`` is true while a
    transaction fes began may be open: one that an interrupt left open is
    rolled back by the next operation, never one a caller began on
    :meth:`SQLiteDatabase.connection`.  ``holding`` counts the holds of the
    database's writer lock the thread has taken for several operations (see
    :meth:`Connections.hold`): meanwhile its writes take no lock of their own.
    ``cursor`` is a cursor on the connection that appends use again and
    again, rather than make one for each statement.  The database holds
    these weakly, so a finished thread's connection goes with it.  (Slots:
    this is on the hot path, and attributes of a ``sqlite3.Connection``
    subclass are slow.)
    """

    __slots__ = ("__weakref__", "began", "busy", "conn", "cursor", "holding")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.cursor = conn.cursor()
        self.busy = 0
        self.began = False
        self.holding = 0


def end(held: Held, sql: str = "ROLLBACK") -> None:
    """End the transaction fes began on ``held``'s connection, if it is still open."""
    if held.began:
        if held.conn.in_transaction:
            held.conn.execute(sql)
        held.began = False


def is_busy(error: sqlite3.Error) -> bool:
    return error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


class Connections:
    """An SQLite file's connections, one per thread, and the locks its writers and waiters share.

    ``closed`` is set by the database's ``close``; every later operation raises.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str,
        busy_timeout: int,
        create: bool,
        poll_interval: float,
        url: str | None,
    ) -> None:
        path = os.fspath(path)
        self._url = url if url is not None else f"sqlite:///{path}"
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
        # Whether another connection of this process may be writing: while this
        # thread's is the only one, its writes take no writer lock (with no one
        # to queue behind, the lock only costs).  Set when a connection is
        # opened; a second thread opens its own before it writes, so a write
        # started without the lock meets at worst one that began with it, and
        # SQLite's lock puts the two in turn.
        self.shared = False
        self._local = threading.local()
        self._connections: weakref.WeakSet[Held] = weakref.WeakSet()

    @property
    def url(self) -> str:
        """The URL this database was opened with."""
        return self._url

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use.

        Not guarded against :meth:`close` as fes's own operations are (see
        :meth:`use`): for a look at pragmas, say.
        """
        try:
            held: Held = self._local.held
        except AttributeError:
            held = self._connect()
        return held.conn

    def use(self) -> Held:
        """This thread's connection, counted busy until :meth:`release`; see :meth:`close`.

        A transaction fes began on it and an interrupt left open is rolled
        back first, unless an operation is already running on it in this
        thread (in a signal handler): that one's transaction is alive.
        """
        try:
            held: Held = self._local.held
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
                end(held)
            except sqlite3.Error as error:
                self.release(held)
                raise self.error(error, "roll back an interrupted transaction") from None
            except BaseException:
                self.release(held)
                raise
        return held

    def release(self, held: Held) -> None:
        """End an operation on ``held``; if the database was closed meanwhile, close it."""
        held.busy -= 1
        if self.closed:
            self.release_closed(held)

    def release_closed(self, held: Held) -> None:
        """Close ``held``'s connection if no operation uses it: the database was closed."""
        with self._lock:
            if not held.busy:
                with contextlib.suppress(sqlite3.Error):
                    held.conn.close()

    def _connect(self) -> Held:
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
                # An empty file fes may not make tables in has nothing to read or
                # write, and switching it to WAL would write its header: it is left
                # as it is (a file that gets tables from another process is switched
                # there, and every connection follows).
                if self.create or conn.execute("PRAGMA page_count").fetchone()[0]:
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
            held = Held(conn)
            self._connections.add(held)
            self.shared = len(self._connections) > 1
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
                if not is_busy(error):
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
        self.shared = False
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
                f"{self._url} is locked: other connections kept the write lock for longer "
                f"than busy_timeout={self.busy_timeout} ms (one long transaction, or many "
                f"short ones, each begun while this one slept), so fes could not {doing}; "
                "nothing was stored. The threads of one process take turns when they "
                "share one Application or database object; processes that all write "
                "all the time are better served by PostgreSQL, which queues them"
            )
        return StoreError(f"{self._url}: could not {doing}: {type(error).__name__}: {message}")

    @staticmethod
    def has_table(conn: sqlite3.Connection, name: str) -> bool:
        row = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return bool(row[0])

    @staticmethod
    def write(held: Held, *statements: str, app: str | None = None) -> None:
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
            end(held, "COMMIT")
        except BaseException:
            end(held)
            raise

    def writing(self) -> bool:
        """Whether a thread of this process is writing to this database now.

        Seen by the writer lock, which writes take once another connection of
        this process shares the file (see ``shared``); before, no other thread
        has used the file.
        """
        return self.writer.locked()

    def settle(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, until the write in progress ends.

        A runner's thread calls it before it reads a log here: the commit in
        flight (the leader's next one, in a burst) is then read in the same
        batch, instead of costing a batch and a durable commit of its own.
        It returns at once when no write is in progress, so a lone event
        waits for nothing.  Only threads in which no signal handler runs (a
        runner's) may call it: the writer lock is taken and given back at once,
        and an interrupt in between would leave it taken.
        """
        writer = self.writer
        if writer.acquire(timeout=timeout):
            writer.release()

    def hold(self, timeout: float) -> Held | None:
        """Take the writer lock for this thread's next operations, until :meth:`unhold`.

        Waits at most ``timeout`` seconds for it (for ever if negative);
        None if it did not come.  Meanwhile the thread's writes take no lock
        of their own and no other thread of this process begins a write: a follower
        reading its leader's log here commits holding it, after what was
        committed while it queued (see :meth:`fes.edge.Follower.step`).
        SQLite's lock still guards against other processes.  A thread that
        holds it already holds it once more, each hold given back by its
        :meth:`unhold`.  Like :meth:`settle`, only for threads in which no
        signal handler runs.
        """
        held = self.use()
        if held.holding:
            held.holding += 1
            return held
        try:
            if not self.writer.acquire(timeout=timeout):
                self.release(held)
                return None
        except BaseException:
            self.release(held)
            raise
        held.holding = 1
        return held

    def unhold(self, held: Held) -> None:
        """Give back the hold :meth:`hold` returned."""
        held.holding -= 1
        try:
            self.release(held)
        finally:
            if not held.holding:
                self.writer.release()

    def notify(self) -> None:
        """Wake this database's waiters: something was committed.

        Appends skip the condition's lock when nobody waits.  That is safe
        because an appender bumps ``generation`` before it looks at
        ``waiters``, and a waiter counts itself before it compares
        ``generation``: one of the two always sees the other.
        """
        self.generation += 1
        if self.waiters:
            self.wake()

    def wake(self) -> None:
        """Wake this database's waiters (:meth:`notify` without the generation)."""
        with self.wake_lock:
            self.condition.notify_all()


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


_open: weakref.WeakSet[Connections] = weakref.WeakSet()
_inherited: list[object] = []


def forget_after_fork(connections: Connections) -> None:
    """Have a forked child leave alone the connections open now; see _after_fork_in_child."""
    _open.add(connections)


os.register_at_fork(after_in_child=_after_fork_in_child)
