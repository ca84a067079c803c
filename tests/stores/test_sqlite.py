"""The SQLite store: the conformance suite, its URL options, files, threads and processes."""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fes.edge.stores import Database, Resealed, SQLiteDatabase, Tracking, open_database
from fes.edge.stores._sqlite import SCHEMA, table_prefix
from fes.errors import ConcurrencyError, StoreError, StoreURLError
from fes.testing.stores import StoreConformance
from fes.testing.stores import new_event as new
from fes.testing.stores import new_snapshot as snapshot


class TestSQLite(StoreConformance):
    """The SQLite store keeps every promise of the store protocol."""

    @pytest.fixture
    def database(self, tmp_path: Path) -> Iterator[Database]:
        """A fresh SQLite file in the test's temporary directory."""
        database = open_database(f"sqlite:///{tmp_path}/conformance.db")
        yield database
        database.close()


def sqlite_db(path: Path, **options: object) -> SQLiteDatabase:
    """Open ``path`` through a URL, as users do."""
    database = open_database(f"sqlite:///{path}", **options)
    assert isinstance(database, SQLiteDatabase)
    return database


def pragma(database: SQLiteDatabase, name: str) -> object:
    """The value of a pragma on this thread's connection."""
    return database.connection().execute(f"PRAGMA {name}").fetchone()[0]


# URLs and options ---------------------------------------------------------------------


def test_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///name.db creates name.db in the current directory."""
    monkeypatch.chdir(tmp_path)
    with open_database("sqlite:///sub.db") as database:
        database.store("shop").append([new("a", 1)])
        assert database.url == "sqlite:///sub.db"
    assert (tmp_path / "sub.db").is_file()


def test_absolute_url_has_four_slashes(tmp_path: Path) -> None:
    """sqlite:////abs/path.db opens the absolute path."""
    path = tmp_path / "abs.db"
    with open_database(f"sqlite:///{path}") as database:
        assert database.url == f"sqlite:////{str(path).lstrip('/')}"
        database.store("shop")
    assert path.is_file()


def test_defaults_are_wal_full_and_five_seconds(tmp_path: Path) -> None:
    """By default the file is in WAL mode, synchronous=FULL, busy_timeout 5000 ms."""
    with sqlite_db(tmp_path / "d.db") as database:
        assert pragma(database, "journal_mode") == "wal"
        assert pragma(database, "synchronous") == 2
        assert pragma(database, "busy_timeout") == 5000
    raw = sqlite3.connect(tmp_path / "d.db")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_url_options_set_the_pragmas(tmp_path: Path) -> None:
    """?synchronous=normal&busy_timeout=1234 reaches every connection, in every thread."""
    url = f"sqlite:///{tmp_path}/o.db?synchronous=normal&busy_timeout=1234&poll_interval=0.5"
    with open_database(url) as database:
        assert isinstance(database, SQLiteDatabase)
        assert (pragma(database, "synchronous"), pragma(database, "busy_timeout")) == (1, 1234)
        found: list[object] = []
        thread = threading.Thread(
            target=lambda: found.append(
                (pragma(database, "synchronous"), pragma(database, "busy_timeout"))
            )
        )
        thread.start()
        thread.join()
        assert found == [(1, 1234)]
        assert database.poll_interval == 0.5


def test_keyword_options_override_the_url(tmp_path: Path) -> None:
    """open_database(url, synchronous="OFF") wins over ?synchronous=FULL."""
    with open_database(
        f"sqlite:///{tmp_path}/k.db?synchronous=FULL", synchronous="OFF", busy_timeout=10
    ) as database:
        assert isinstance(database, SQLiteDatabase)
        assert (pragma(database, "synchronous"), pragma(database, "busy_timeout")) == (0, 10)


@pytest.mark.parametrize(
    "query, problem",
    [
        ("synchronous=SOMETIMES", "synchronous"),
        ("busy_timeout=soon", "busy_timeout"),
        ("busy_timeout=-5", "busy_timeout"),
        ("create=perhaps", "create"),
        ("poll_interval=0", "poll_interval"),
        ("journal_mode=DELETE", "unknown option 'journal_mode'"),
        ("busy_timeout=1&busy_timeout=2", "given twice"),
    ],
)
def test_bad_options_are_refused_naming_url_and_option(
    tmp_path: Path, query: str, problem: str
) -> None:
    """A bad option value or an unknown option raises StoreURLError before opening."""
    url = f"sqlite:///{tmp_path}/bad.db?{query}"
    with pytest.raises(StoreURLError) as caught:
        open_database(url)
    assert problem in str(caught.value) and "bad.db" in str(caught.value)
    assert not (tmp_path / "bad.db").exists()


@pytest.mark.parametrize(
    "url, problem",
    [
        ("sqlite://", "no file"),
        ("sqlite:///", "no file"),
        ("sqlite://host/x.db", "no host"),
        ("sqlite:///:memory:", "memory://"),
    ],
)
def test_urls_without_a_file_are_refused(url: str, problem: str) -> None:
    """An SQLite URL must name a file on this machine."""
    with pytest.raises(StoreURLError, match=problem):
        open_database(url)


def test_unknown_keyword_option_is_refused(tmp_path: Path) -> None:
    """A keyword option SQLite does not know raises StoreURLError listing the known ones."""
    with pytest.raises(StoreURLError, match=r"pool_size.*known options: busy_timeout"):
        open_database(f"sqlite:///{tmp_path}/x.db", pool_size=3)


# Files ----------------------------------------------------------------------------------


def test_data_survives_closing_and_reopening(tmp_path: Path) -> None:
    """Everything stored is there after the database is closed and opened again."""
    with sqlite_db(tmp_path / "p.db") as database:
        store = database.store("shop")
        store.append([new("a", 1), new("a", 2)], tracking=Tracking("up", 4, 0))
        store.save_view("v", b"V", Tracking("up", 4, 0))
        log = store.read_log()
    with sqlite_db(tmp_path / "p.db", create=False) as database:
        store = database.store("shop")
        assert store.read_log() == log
        assert store.tracked() == {"up": 4} and store.load_view("v") == (b"V", 4)
        assert database.apps() == ["shop"]


def test_positions_are_never_reused(tmp_path: Path) -> None:
    """After the last events are deleted by hand, new events still get higher positions."""
    path = tmp_path / "r.db"
    with sqlite_db(path) as database:
        last = database.store("shop").append([new("a", 1), new("a", 2), new("a", 3)])[-1]
    raw = sqlite3.connect(path)
    raw.execute('DELETE FROM "shop_events" WHERE version > 1')
    raw.commit()
    raw.execute("VACUUM")
    raw.close()
    with sqlite_db(path) as database:
        assert database.store("shop").append([new("a", 2)]) == [last + 1]


def test_tables_are_named_after_the_application(tmp_path: Path) -> None:
    """Each app has four tables named after it; case and reserved names are escaped."""
    path = tmp_path / "n.db"
    with sqlite_db(path) as database:
        for app in ("shop", "Shop", "sqlite_x", "a-b"):
            database.store(app)
    raw = sqlite3.connect(path)
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    raw.close()
    for prefix in ("shop", "^shop", "~sqlite_x", "a-b"):
        assert {f"{prefix}_{t}" for t in ("events", "snapshots", "tracking", "views")} <= tables
    assert table_prefix("OrderHistory") == "^order^history"


def test_create_false_refuses_a_missing_file(tmp_path: Path) -> None:
    """With create=false a missing file is an error, and no file is created."""
    with pytest.raises(StoreError, match="no file"):
        open_database(f"sqlite:///{tmp_path}/missing.db?create=false")
    assert not (tmp_path / "missing.db").exists()


def test_create_false_refuses_missing_tables(tmp_path: Path) -> None:
    """With create=false an application without tables is an error naming it."""
    with sqlite_db(tmp_path / "c.db") as database:
        database.store("shop")
    with sqlite_db(tmp_path / "c.db", create=False) as database:
        database.store("shop").append([new("a", 1)])
        with pytest.raises(StoreError, match="no tables for application 'billing'"):
            database.store("billing")
        assert database.apps() == ["shop"]


def test_dropped_tables_are_recreated_or_reported(tmp_path: Path) -> None:
    """An app whose tables were dropped by hand gets them back, or is refused if create=false."""
    path = tmp_path / "dropped.db"
    with sqlite_db(path) as database:
        database.store("shop")
    raw = sqlite3.connect(path)
    raw.execute('DROP TABLE "shop_views"')
    raw.commit()
    raw.close()
    with sqlite_db(path, create=False) as database, pytest.raises(StoreError, match="no tables"):
        database.store("shop")
    with sqlite_db(path) as database:
        database.store("shop").save_view("v", b"x", Tracking("up", 1, 0))


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    """Opening a file that is not an SQLite database raises StoreError naming it."""
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the tables you are looking for\n" * 100)
    with pytest.raises(StoreError, match="not an SQLite database") as caught:
        open_database(f"sqlite:///{path}")
    assert str(path) in str(caught.value)
    assert path.read_bytes().startswith(b"these are not")


def test_a_path_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    """A file in a directory that does not exist raises StoreError naming the directory."""
    with pytest.raises(StoreError, match="cannot open") as caught:
        open_database(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    assert str(tmp_path / "no" / "such" / "dir") in str(caught.value)


def test_a_path_under_a_file_is_refused(tmp_path: Path) -> None:
    """A path whose parent is a regular file cannot be opened: StoreError."""
    (tmp_path / "plain").write_text("x")
    with pytest.raises(StoreError, match="cannot open"):
        open_database(f"sqlite:///{tmp_path}/plain/x.db")


def test_tables_from_a_newer_fes_are_refused(tmp_path: Path) -> None:
    """An application registered with a newer schema version is refused, not misread."""
    path = tmp_path / "new.db"
    with sqlite_db(path) as database:
        database.store("shop")
    raw = sqlite3.connect(path)
    raw.execute("UPDATE fes_apps SET schema = ?", (SCHEMA + 1,))
    raw.commit()
    raw.close()
    with sqlite_db(path) as database, pytest.raises(StoreError, match="upgrade fes"):
        database.store("shop")


def test_a_locked_database_fails_after_busy_timeout_storing_nothing(tmp_path: Path) -> None:
    """While another connection holds the write lock, an append waits busy_timeout, then fails."""
    path = tmp_path / "l.db"
    with sqlite_db(path, busy_timeout=200) as database:
        store = database.store("shop")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"locked.*busy_timeout=200"):
            store.append([new("a", 1)])
        assert 0.15 <= time.monotonic() - started < 5
        assert store.read_log() == []  # readers are not blocked by the writer
        blocker.execute("ROLLBACK")
        blocker.close()
        assert store.append([new("a", 1)]) == [1]


def test_wait_sees_appends_of_another_connection(tmp_path: Path) -> None:
    """wait() notices an append made through another database object (polling)."""
    path = tmp_path / "w.db"
    with sqlite_db(path, poll_interval=0.01) as reader, sqlite_db(path) as writer:
        follower = reader.store("shop")
        threading.Timer(0.2, lambda: writer.store("shop").append([new("a", 1)])).start()
        started = time.monotonic()
        assert follower.wait(0, 20.0) is True
        assert time.monotonic() - started < 10


def test_each_thread_has_its_own_connection(tmp_path: Path) -> None:
    """Threads get distinct connections, and a finished thread's connection is released."""
    with sqlite_db(tmp_path / "t.db") as database:
        mine = database.connection()
        theirs: list[object] = []
        thread = threading.Thread(target=lambda: theirs.append(id(database.connection())))
        thread.start()
        thread.join()
        assert database.connection() is mine
        assert theirs and theirs[0] != id(mine)


class CountingLock:
    """A lock that counts the writes that take it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.taken = 0

    def __enter__(self) -> bool:
        self.taken += 1
        return self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def share(database: SQLiteDatabase) -> None:
    """Open a connection to ``database`` in another thread: its writers must queue from now."""
    thread = threading.Thread(target=database.connection)
    thread.start()
    thread.join()
    assert database.shared


def test_writes_take_the_writer_lock_once_a_second_connection_shares_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone, a thread's writes skip the lock (nobody to queue behind); after another
    thread opens a connection, every write takes it."""
    with sqlite_db(tmp_path / "w.db") as database:
        store = database.store("shop")
        lock = CountingLock()
        monkeypatch.setattr(database, "writer", lock)
        store.append([new("a", 1)])
        store.append([new("a", 2), new("b", 1)], tracking=Tracking("up", 1, 0))
        store.save_snapshot(snapshot("a", 2))
        assert lock.taken == 0 and not database.shared
        share(database)
        store.append([new("a", 3)])
        store.append([new("a", 4), new("c", 1)], tracking=Tracking("up", 2, 1))
        store.save_snapshot(snapshot("a", 4))
        assert lock.taken == 3
        assert [(e.stream, e.version) for e in store.read_log()] == [
            ("a", 1), ("a", 2), ("b", 1), ("a", 3), ("a", 4), ("c", 1)
        ]
        monkeypatch.undo()


def test_applications_given_one_database_object_queue_on_its_writer_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two applications of two threads on one database object: their writes take its lock
    (as the tutorial advises, instead of each opening the file and meeting SQLite's)."""
    import fes
    from fes.edge import Application
    from fes.examples.dogs import dogs, register

    school = fes.App("school", aggregates=[dogs])
    with sqlite_db(tmp_path / "a.db") as database:
        lock = CountingLock()
        monkeypatch.setattr(database, "writer", lock)
        front, back = Application(school, store=database), Application(school, store=database)
        front.execute(dogs, front.new_id(), register, "Rex")
        assert lock.taken == 0  # alone so far
        other = threading.Thread(target=lambda: back.execute(dogs, back.new_id(), register, "Io"))
        other.start()
        other.join(10)
        front.execute(dogs, front.new_id(), register, "Ada")
        assert lock.taken == 2 and database.shared
        front.close()
        back.close()
        assert not database.closed  # the applications leave it to its owner
        assert len(database.store("school").read_log()) == 3
        monkeypatch.undo()


def test_threads_joining_a_lone_writer_lose_and_double_nothing(tmp_path: Path) -> None:
    """Threads open connections while the first one writes without the lock: the writes
    that began without it and those that take it are all stored, each once."""
    with sqlite_db(tmp_path / "j.db", synchronous="NORMAL") as database:
        store = database.store("shop")  # this thread's connection: the lone one
        failures: list[BaseException] = []

        def write(stream: str, first: int, last: int) -> None:
            try:
                for version in range(first, last + 1):
                    store.append([new(stream, version)])
            except BaseException as error:  # reported below
                failures.append(error)

        write("lone", 1, 1)
        assert not database.shared  # written without the lock
        joiners = [threading.Thread(target=write, args=(f"t{n}", 1, 50)) for n in range(4)]
        for thread in joiners:
            thread.start()
        write("lone", 2, 400)  # while they connect and write
        for thread in joiners:
            thread.join(60)
        assert not failures
        stored = [(e.stream, e.version) for e in store.read_log()]
        assert sorted(stored) == sorted(
            [("lone", v) for v in range(1, 401)]
            + [(f"t{n}", v) for n in range(4) for v in range(1, 51)]
        )


def _append_in_forked_child(database: SQLiteDatabase) -> None:
    store = database.store("shop")
    store.append([new("child", 1)])


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    """A child forked after the database was opened can use it; the parent still can too."""
    with sqlite_db(tmp_path / "f.db") as database:
        store = database.store("shop")
        store.append([new("parent", 1)])
        child = multiprocessing.get_context("fork").Process(
            target=_append_in_forked_child, args=(database,)
        )
        child.start()
        child.join(30)
        assert child.exitcode == 0
        store.append([new("parent", 2)])
        assert [(e.stream, e.version) for e in store.read_log()] == [
            ("parent", 1),
            ("child", 1),
            ("parent", 2),
        ]


# Interrupts, closing and opening -------------------------------------------------------


def interrupt() -> None:
    """Ctrl-C, arriving now."""
    raise KeyboardInterrupt


class Hooked(sqlite3.Connection):
    """A connection that calls a hook, once, just before or just after a statement runs.

    ``before`` and ``after`` map the start of a statement to its hook; a hook
    of :func:`interrupt` is Ctrl-C arriving at that precise moment.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before: dict[str, Callable[[], object]] = {}
        self.after: dict[str, Callable[[], object]] = {}

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        """Run ``sql``, calling its hooks around it."""
        self._hook(self.before, sql)
        cursor = super().execute(sql, parameters)
        self._hook(self.after, sql)
        return cursor

    def cursor(self, factory: Any = None) -> sqlite3.Cursor:
        """A cursor whose statements call the hooks too (the store's appends use one)."""
        return super().cursor(factory or HookedCursor)

    @staticmethod
    def _hook(hooks: dict[str, Callable[[], object]], sql: str) -> None:
        for start in list(hooks):
            if sql.startswith(start):
                hooks.pop(start)()


class HookedCursor(sqlite3.Cursor):
    """A cursor of a :class:`Hooked` connection: its statements call the connection's hooks."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        """Run ``sql``, calling its connection's hooks around it."""
        conn = self.connection
        assert isinstance(conn, Hooked)
        conn._hook(conn.before, sql)
        super().execute(sql, parameters)
        conn._hook(conn.after, sql)
        return self


@pytest.fixture
def hooked(monkeypatch: pytest.MonkeyPatch) -> Callable[[SQLiteDatabase], Hooked]:
    """Make every connection opened a Hooked one; gives the calling thread's."""
    connect = sqlite3.connect

    def connect_hooked(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(*args, **{**kwargs, "factory": Hooked})

    monkeypatch.setattr(sqlite3, "connect", connect_hooked)

    def connection(database: SQLiteDatabase) -> Hooked:
        conn = database.connection()
        assert isinstance(conn, Hooked)
        return conn

    return connection


def write_lock_is_free(path: Path) -> bool:
    """Whether another connection can take the write lock at once."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


WRITES: dict[str, Callable[[SQLiteDatabase], object]] = {
    "append": lambda db: db.store("shop").append([new("a", 2)]),
    "reseal": lambda db: db.store("shop").reseal([Resealed("a", 1, "Happened", b"x")]),
    "save_snapshot": lambda db: db.store("shop").save_snapshot(snapshot("a", 1)),
    "create tables": lambda db: db.store("other"),
}


@pytest.mark.parametrize("write", WRITES)
def test_an_interrupt_just_after_begin_rolls_back(
    tmp_path: Path, hooked: Callable[[SQLiteDatabase], Hooked], write: str
) -> None:
    """Ctrl-C just after BEGIN IMMEDIATE returns leaves no transaction and no write lock."""
    path = tmp_path / "i.db"
    with sqlite_db(path) as database:
        database.store("shop").append([new("a", 1)])
        conn = hooked(database)
        conn.after["BEGIN IMMEDIATE"] = interrupt
        with pytest.raises(KeyboardInterrupt):
            WRITES[write](database)
        assert not conn.in_transaction
        assert write_lock_is_free(path)
        WRITES[write](database)


def test_the_next_operation_rolls_back_a_transaction_an_interrupt_left_open(
    tmp_path: Path, hooked: Callable[[SQLiteDatabase], Hooked]
) -> None:
    """A second Ctrl-C that stops the rollback itself: the next operation rolls back."""
    path = tmp_path / "r.db"
    with sqlite_db(path) as database:
        store = database.store("shop")
        conn = hooked(database)
        conn.after["INSERT"] = interrupt
        conn.before["ROLLBACK"] = interrupt
        with pytest.raises(KeyboardInterrupt):
            store.append([new("a", 1, payload=b"interrupted")])
        assert conn.in_transaction and not write_lock_is_free(path)
        assert store.read_log() == []
        assert not conn.in_transaction and write_lock_is_free(path)
        assert store.append([new("a", 1)]) == [1]


def test_an_operation_inside_another_leaves_its_transaction_alone(
    tmp_path: Path, hooked: Callable[[SQLiteDatabase], Hooked]
) -> None:
    """A read run in the middle of an append (by a signal handler) does not roll it back."""
    with sqlite_db(tmp_path / "n.db") as database:
        store = database.store("shop")
        conn = hooked(database)
        seen: list[object] = []
        conn.after["INSERT"] = lambda: seen.append(store.read_log())
        assert store.append([new("a", 1)], tracking=Tracking("up", 1, 0)) == [1]
        assert seen == [[]]
        assert len(store.read_log()) == 1 and store.tracked() == {"up": 1}


def test_a_transaction_the_caller_began_is_left_alone(tmp_path: Path) -> None:
    """fes rolls back only transactions it began: one begun on connection() is the caller's."""
    with sqlite_db(tmp_path / "u.db") as database:
        store = database.store("shop")
        conn = database.connection()
        conn.execute("BEGIN")
        assert store.read_log() == []
        assert conn.in_transaction
        conn.execute("ROLLBACK")


class InterruptedLock:
    """A lock that Ctrl-C interrupts just after ``acquire()`` returns, as it can.

    ``with`` takes it whole, as CPython does a real lock's: no interrupt
    can come between taking it and the block that releases it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def acquire(self) -> bool:
        self.lock.acquire()
        raise KeyboardInterrupt

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


class InterruptedCondition(threading.Condition):
    """A condition whose ``with`` Ctrl-C interrupts just after it takes the lock, as it can."""

    def __enter__(self) -> bool:
        super().__enter__()
        raise KeyboardInterrupt


def test_an_interrupt_never_leaves_a_lock_of_the_database_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C at the worst moment leaves neither the writers' lock nor the waiters' held.

    It replaces the database's locks and condition: a KeyboardInterrupt just
    after a lock is taken cannot be timed from outside, only planted.
    """
    database = sqlite_db(tmp_path / "k.db")
    try:
        store = database.store("shop")
        store.append([new("a", 1)])
        share(database)  # so that writes take the writers' lock
        writer = InterruptedLock()
        waking = threading.Lock()
        monkeypatch.setattr(database, "writer", writer)
        monkeypatch.setattr(database, "wake_lock", waking, raising=False)
        monkeypatch.setattr(database, "condition", InterruptedCondition(waking))
        monkeypatch.setattr(database, "waiters", 1)  # so that appends notify
        operations: list[Callable[[], object]] = [
            lambda: store.append([new("a", 2)]),
            lambda: store.save_snapshot(snapshot("a", 1)),
            lambda: store.wait(5, 0.05),
        ]
        for operation in operations:
            with contextlib.suppress(KeyboardInterrupt):
                operation()
            assert not writer.lock.locked() and not waking.locked()
        assert len(store.read_log()) == 2 and store.load_snapshot("a") == snapshot("a", 1)
    finally:
        monkeypatch.undo()  # the real locks, for close()
        database.close()


def test_close_leaves_a_connection_in_use_to_its_thread(
    tmp_path: Path, hooked: Callable[[SQLiteDatabase], Hooked]
) -> None:
    """close() in the middle of another thread's read: the read finishes, then that thread
    closes its connection; idle connections close at once; every later operation is refused."""
    database = sqlite_db(tmp_path / "c.db")
    store = database.store("shop")
    store.append([new("a", 1)])
    reading, closed, idle_done = threading.Event(), threading.Event(), threading.Event()
    found: dict[str, Any] = {}

    def reader() -> None:
        conn = found["busy"] = hooked(database)
        conn.before["SELECT"] = lambda: (reading.set(), closed.wait(10))
        found["log"] = store.read_log()
        try:
            store.read_log()
        except StoreError as error:
            found["error"] = str(error)

    def idler() -> None:
        found["idle"] = hooked(database)
        store.read_log()
        idle_done.set()
        closed.wait(10)

    threads = [threading.Thread(target=reader), threading.Thread(target=idler)]
    threads[1].start()
    assert idle_done.wait(10)
    threads[0].start()
    assert reading.wait(10)
    mine = database.connection()
    database.close()
    for conn in (mine, found["idle"]):
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
    closed.set()
    for thread in threads:
        thread.join(10)
    assert [e.stream for e in found["log"]] == ["a"]
    assert found["error"] == f"the database {database.url} is closed"
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        found["busy"].execute("SELECT 1")
    with pytest.raises(StoreError, match="is closed"):
        store.read_log()


def test_opening_a_new_file_waits_for_the_lock_wal_mode_needs(tmp_path: Path) -> None:
    """SQLite refuses WAL mode at once while another connection holds the lock; fes waits
    busy_timeout for it, then says what happened."""
    path = tmp_path / "new.db"
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # on a new file, still in rollback-journal mode
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"kept it locked .* busy_timeout=200 ms.* WAL mode"):
            sqlite_db(path, busy_timeout=200)
        assert 0.15 <= time.monotonic() - started < 5
        threading.Timer(0.1, blocker.execute, ("ROLLBACK",)).start()
        with sqlite_db(path) as database:
            assert pragma(database, "journal_mode") == "wal"
    finally:
        blocker.close()


# Several threads and processes ----------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    from fes.edge.stores import open_database
    from fes.edge.stores import NewEvent
    from fes.errors import ConcurrencyError

    path, mode, worker, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = open_database(f"sqlite:///{path}?synchronous=NORMAL&busy_timeout=30000").store("shop")

    def event(stream, version, payload=b""):
        return NewEvent(stream, version, "Happened", payload, 0)

    def say(*words):
        # one write per line: print() writes each word apart when stdout is
        # unbuffered (PYTHONUNBUFFERED), so a kill could cut a line in two
        sys.stdout.write(" ".join(map(str, words)) + chr(10))
        sys.stdout.flush()

    if mode == "append":
        for i in range(count):
            size = 1 + i % 3
            store.append([event(f"{worker}-{i}", v) for v in range(1, size + 1)])
    elif mode == "race":
        while True:
            version = store.stream_version("race") + 1
            if version > count:
                break
            try:
                store.append([event("race", version, worker.encode())])
                say("won", version)
            except ConcurrencyError:
                pass
    elif mode == "batches":
        batch = 0
        while True:
            counter = store.stream_version(f"counter-{worker}")
            say("begin", batch)
            store.append(
                [event(f"{worker}-{batch}-{i % 4}", i // 4 + 1) for i in range(199)]
                + [event(f"counter-{worker}", counter + 1)]
            )
            batch += 1
            if batch == 1:
                say("ready")
    """
)


def start_worker(path: Path, mode: str, worker: str, count: int) -> subprocess.Popen[str]:
    """A Python process running WORKER against ``path``."""
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path), mode, worker, str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


FOLLOW_LIMIT = 50


class Follower:
    """Reads the log as it grows, until ``done`` and nothing more.

    Keeps the positions seen and, for each read that returned events, whether
    ``done`` was still unset when it returned, how many events it returned and
    the last position among them.
    """

    def __init__(self, database: SQLiteDatabase, done: threading.Event) -> None:
        self.store = database.store("shop")
        self.done = done
        self.seen: list[int] = []
        self.reads: list[tuple[bool, int, int]] = []
        self.errors: list[BaseException] = []

    def __call__(self) -> None:
        try:
            after = 0
            while True:
                finished = self.done.is_set()
                events = self.store.read_log(after, limit=FOLLOW_LIMIT)
                if events:
                    live = not self.done.is_set()
                    self.reads.append((live, len(events), events[-1].position))
                for event in events:
                    self.seen.append(event.position)
                    after = event.position
                if finished and not events:
                    return
                if not events:
                    self.store.wait(after, 0.02)
        except BaseException as exc:
            self.errors.append(exc)

    def reads_while_writing(self, last: int) -> list[int]:
        """The last positions of reads that saw the whole log, before it reached ``last``.

        A read that returned fewer than FOLLOW_LIMIT events saw every event
        committed then; if it ended below the final ``last``, a writer had yet
        to commit.
        """
        return [p for live, n, p in self.reads if live and n < FOLLOW_LIMIT and p < last]


def test_threads_and_processes_append_while_a_reader_follows(tmp_path: Path) -> None:
    """Three processes and three threads append to one file; a follower reading as they write
    sees every position once."""
    path = tmp_path / "many.db"
    with sqlite_db(path, synchronous="NORMAL", busy_timeout=30000) as database:
        store = database.store("shop")
        done = threading.Event()
        follower = Follower(database, done)
        reader = threading.Thread(target=follower)
        reader.start()
        processes = [start_worker(path, "append", f"p{n}", 150) for n in range(3)]
        errors: list[BaseException] = []

        def write(worker: str) -> None:
            try:
                for i in range(150):
                    store.append([new(f"{worker}-{i}", v) for v in range(1, 2 + i % 3)])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        for process in processes:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
        done.set()
        reader.join(timeout=120)
        assert not any(t.is_alive() for t in [*threads, reader])
        assert errors == [] and follower.errors == []
        log = store.read_log()
    expected_events = 6 * sum(1 + i % 3 for i in range(150))
    assert len(log) == expected_events
    assert [e.position for e in log] == list(range(1, expected_events + 1))
    assert follower.seen == [e.position for e in log]
    during = follower.reads_while_writing(expected_events)
    assert len(during) >= 2, f"the follower read only after the writers: {follower.reads}"


def test_processes_racing_on_one_stream_have_one_winner_per_version(tmp_path: Path) -> None:
    """Four processes and the test race to append each next version: each version is won once."""
    path = tmp_path / "race.db"
    target = 120
    with sqlite_db(path, synchronous="NORMAL", busy_timeout=30000) as database:
        store = database.store("shop")
        processes = [start_worker(path, "race", f"p{n}", target) for n in range(4)]
        mine: list[int] = []
        while (version := store.stream_version("race") + 1) <= target:
            try:
                store.append([new("race", version, payload=b"main")])
                mine.append(version)
            except ConcurrencyError:
                pass
        won: dict[str, list[int]] = {"main": mine}
        for n, process in enumerate(processes):
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            won[f"p{n}"] = [int(line.split()[1]) for line in out.splitlines()]
        events = store.read_stream("race")
    claimed = sorted(v for versions in won.values() for v in versions)
    assert claimed == list(range(1, target + 1))
    assert [e.version for e in events] == claimed
    for worker, versions in won.items():
        assert all(events[v - 1].payload == worker.encode() for v in versions)


@pytest.mark.slow
def test_killing_a_writer_never_leaves_part_of_a_batch(tmp_path: Path) -> None:
    """A writer killed with SIGKILL twenty times mid-stream leaves only whole 200-event batches."""
    path = tmp_path / "kill.db"
    rng = random.Random(20)
    with sqlite_db(path) as database:
        store = database.store("shop")
    last_begun: dict[int, int] = {}
    for run in range(20):
        process = start_worker(path, "batches", f"r{run}", 0)
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert lines[-1].strip() == "ready", process.communicate()[1]
        time.sleep(rng.uniform(0.0, 0.1))
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
        # Read the rest through the same buffered stream readline() used:
        # communicate() would read the pipe beneath it and miss what it buffered.
        out = process.stdout.read()
        process.stdout.close()
        assert process.stderr is not None
        process.stderr.close()
        # only whole lines: the kill may come in the middle of one
        whole = "".join(lines).splitlines() + out.split("\n")[:-1]
        begun = [line for line in whole if line.startswith("begin ")]
        last_begun[run] = int(begun[-1].split()[1])
    with sqlite_db(path) as database:
        store = database.store("shop")
        raw = database.connection()
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        log = store.read_log()
        batches: dict[str, int] = {}
        for event in log:
            run, batch = event.stream.split("-")[:2]
            if run != "counter":
                batches[f"{run}-{batch}"] = batches.get(f"{run}-{batch}", 0) + 1
        assert set(batches.values()) == {199}
        interrupted = 0
        for run in range(20):
            done = sum(1 for key in batches if key.startswith(f"r{run}-"))
            assert store.stream_version(f"counter-r{run}") == done >= 1
            assert last_begun[run] in (done - 1, done)
            interrupted += last_begun[run] == done
        assert [e.position for e in log] == list(range(1, len(log) + 1))
    # Most kills land inside an append (begun, never committed): the test
    # really exercises interrupted transactions.
    assert interrupted >= 5


def test_an_append_after_the_connection_changed_uses_the_new_one(tmp_path: Path) -> None:
    """The cursor an append keeps is dropped once the thread's connection is another one."""
    with sqlite_db(tmp_path / "c.db") as database:
        store = database.store("shop")
        assert store.append([new("a", 1)]) == [1]
        first = database.connection()
        kept = database._forget_connections()  # as in a forked child: a new connection next
        assert store.append([new("a", 2)]) == [2]
        assert database.connection() is not first
        assert [e.version for e in store.read_stream("a")] == [1, 2]
        assert kept is not None
        first.close()
