"""The PostgreSQL store: the conformance suite, and what only PostgreSQL promises.

Here: URLs and options, passwords kept out of messages, schemas and hostile
names, the tables it creates, NOTIFY, retries after lost connections, lock
and idle timeouts, and closing.  Ordering is in ``test_postgres_order.py``,
many writers and killed writers in ``test_postgres_concurrency.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pgserver import PgServer

from fes.edge.stores import Database, NewEvent, Tracking, open_database
from fes.edge.stores._postgres import (
    PostgresDatabase,
    PostgresStore,
    _connections,
    _listener,
)
from fes.edge.stores._postgres._sql import channel
from fes.edge.stores._postgres._store import (
    BATCH_MESSAGE_BYTES,
    BATCH_MESSAGE_EVENTS,
    ONE_MESSAGE_BYTES,
)
from fes.errors import (
    ConcurrencyError,
    DuplicateTracking,
    OutcomeUnknown,
    StoreError,
    StoreURLError,
)
from fes.testing.stores import StoreConformance
from fes.testing.stores import new_event as new

pytestmark = pytest.mark.postgres


_schemas = itertools.count(1)


@pytest.fixture(scope="module")
def conformance_url(pg_server: PgServer) -> str:
    """One database for the conformance tests, which each get a fresh schema in it.

    A schema is the whole of a PostgresDatabase (its tables, apps() and
    notification channels), and creating one costs milliseconds where
    CREATE DATABASE costs a large part of a second.
    """
    return pg_server.create_database(f"fes_conformance_{os.getpid()}")


class TestPostgres(StoreConformance):
    """The PostgreSQL store keeps every promise of the store protocol."""

    @pytest.fixture
    def database(self, conformance_url: str) -> Iterator[Database]:
        """A fresh, empty schema, opened through open_database."""
        database = open_database(f"{conformance_url}?schema=conformance_{next(_schemas)}")
        yield database
        database.close()


def with_password(url: str, password: str) -> str:
    return url.replace("postgres@", f"postgres:{password}@", 1)


def sql_rows(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def tables(url: str, schema: str) -> list[str]:
    rows = sql_rows(
        url, "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", schema
    )
    return [name for (name,) in rows]


# URLs and options -----------------------------------------------------------------------


def test_open_database_gives_a_postgres_database(pg_url: str) -> None:
    """open_database('postgresql://…') returns a PostgresDatabase with its options applied."""
    with open_database(pg_url + "?schema=tenant_1&pool_size=2", lock_timeout="2s") as database:
        assert isinstance(database, PostgresDatabase)
        assert database.schema == "tenant_1"
        store = database.store("shop")
        store.append([new("a", 1)])
        assert repr(store) == f"PostgresStore('shop', {database.url!r})"
    assert tables(pg_url, "tenant_1") == [
        "shop_events",
        "shop_snapshots",
        "shop_tracking",
        "shop_views",
    ]
    assert tables(pg_url, "public") == []


def test_schema_defaults_to_public(pg_url: str) -> None:
    """Without a schema option the tables go to public."""
    with PostgresDatabase(pg_url) as database:
        database.store("shop")
        assert database.schema == "public"
    assert "shop_events" in tables(pg_url, "public")


@pytest.mark.parametrize(
    "query, options, problem",
    [
        ("?colour=blue", {}, "unknown option 'colour'"),
        ("", {"colour": "blue"}, "unknown option 'colour'"),
        ("?pool_size=0", {}, "pool_size"),
        ("?pool_size=many", {}, "pool_size"),
        ("?lock_timeout=soon", {}, "lock_timeout"),
        ("?idle_in_transaction_session_timeout=-1", {}, "idle_in_transaction_session_timeout"),
        ("?poll_interval=0", {}, "poll_interval"),
        ("?listen=maybe", {}, "listen"),
        ("?retries=-1", {}, "retries"),
        ("?schema=", {}, "schema"),
        ("", {"schema": "s" * 64}, "schema"),
        ("?password=hunter2", {}, "unknown option 'password'"),
    ],
)
def test_bad_options_are_refused_without_the_password(
    query: str, options: dict[str, object], problem: str
) -> None:
    """Unknown or bad options raise StoreURLError naming them, with the password masked."""
    url = "postgresql://app:s3cr3t-pw@db.invalid:5432/shop" + query
    with pytest.raises(StoreURLError, match=problem) as caught:
        PostgresDatabase(url, **options)
    assert "s3cr3t-pw" not in str(caught.value) and "hunter2" not in str(caught.value)
    assert "app:***@db.invalid" in str(caught.value)


@pytest.mark.parametrize("url", ["sqlite:///x.db", "memory://", "postgresql+psycopg://u@h/d"])
def test_other_schemes_are_refused(url: str) -> None:
    """PostgresDatabase accepts only postgresql:// (and postgres://) URLs."""
    with pytest.raises(StoreURLError, match="not a PostgreSQL URL"):
        PostgresDatabase(url)


def test_keyword_options_win_over_the_url(pg_url: str) -> None:
    """A keyword option replaces the URL's; durations take PostgreSQL units."""
    with PostgresDatabase(
        pg_url + "?schema=from_url&lock_timeout=100", schema="from_kw", lock_timeout="0.3s"
    ) as database:
        assert database.schema == "from_kw"
        store = database.store("shop")
        with psycopg.connect(pg_url) as holder:
            holder.execute("LOCK TABLE from_kw.shop_events IN EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(StoreError, match="lock_timeout=300ms"):
                store.append([new("a", 1)])
            assert time.monotonic() - started >= 0.25
    assert tables(pg_url, "from_url") == []
    assert "shop_events" in tables(pg_url, "from_kw")


def test_url_repr_and_connection_errors_hide_the_password(pg_url: str) -> None:
    """url, repr and the error for an unreachable server never contain the password."""
    port = int(pg_url.rsplit(":", 1)[1].split("/")[0])
    url = with_password(pg_url, "pa%3Ass-w0rd").replace(str(port), "1", 1)
    with PostgresDatabase(url, pool_timeout=1, connect_timeout=1) as database:
        assert "pa%3Ass-w0rd" not in database.url and "postgres:***@" in database.url
        assert "pa%3Ass" not in repr(database)
        with pytest.raises(StoreError) as caught:
            database.store("shop")
    message = str(caught.value)
    assert "pa%3Ass-w0rd" not in message and "pa:ss-w0rd" not in message
    assert "postgres:***@127.0.0.1:1/" in message


def test_the_password_reaches_libpq_decoded(pg_url: str) -> None:
    """The URL's percent-encoded password is what connections use, though url masks it.

    It reads a pooled connection's password through the private pool: the
    test server trusts every local connection, so a wrong password would
    still connect and only the connection itself can show what was sent.
    """
    with PostgresDatabase(with_password(pg_url, "p%40ss%3Aw%2Frd")) as database:
        database.store("shop").append([new("a", 1)])
        assert "p%40ss" not in database.url and "p@ss" not in database.url
        with database._connections._pool.connection() as conn:
            assert conn.info.password == "p@ss:w/rd"


# Schemas, tables and hostile names -------------------------------------------------------


def all_tables(url: str) -> set[tuple[str, str]]:
    """Every (schema, table) of the database, but the system catalogues'."""
    rows = sql_rows(
        url,
        "SELECT schemaname, tablename FROM pg_tables"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    return {(schema, table) for schema, table in rows}


@pytest.mark.parametrize(
    "schema",
    ['public"; DROP TABLE precious; --', "x'; DROP TABLE precious; --"],
    ids=["double-quote", "single-quote"],
)
def test_hostile_schema_name_is_quoted_not_executed(pg_url: str, schema: str) -> None:
    """A schema name full of SQL becomes a literal schema; every other table survives unchanged."""
    sql_rows(pg_url, "CREATE TABLE precious (id int)")
    sql_rows(pg_url, "INSERT INTO precious VALUES (42)")
    sql_rows(pg_url, "CREATE SCHEMA vault")
    sql_rows(pg_url, "CREATE TABLE vault.precious (id int)")
    sql_rows(pg_url, "INSERT INTO vault.precious VALUES (7)")
    before = all_tables(pg_url)
    assert before == {("public", "precious"), ("vault", "precious")}
    with PostgresDatabase(pg_url, schema=schema) as database:
        store = database.store("shop")
        store.append([new("a", 1)], tracking=Tracking("up", 1, 0))
        store.save_view("v", b"x", Tracking("up", 1, 0))
        assert store.read_stream("a")[0].payload == b"a/1"
        assert database.apps() == ["shop"]
        assert store.wait(0, 1)
    assert sql_rows(pg_url, "SELECT id FROM precious") == [(42,)]
    assert sql_rows(pg_url, "SELECT id FROM vault.precious") == [(7,)]
    created = {"shop_events", "shop_snapshots", "shop_tracking", "shop_views"}
    assert all_tables(pg_url) == before | {(schema, table) for table in created}


@pytest.mark.parametrize(
    "app",
    ['x"; DROP TABLE precious; --', "x_events; DROP TABLE precious", "é" * 30],
    ids=["quote", "semicolon", "too-many-bytes"],
)
def test_hostile_or_oversized_app_names_are_refused(pg_url: str, app: str) -> None:
    """App names that could not safely name tables raise StoreError and touch nothing."""
    sql_rows(pg_url, "CREATE TABLE precious (id int)")
    with PostgresDatabase(pg_url) as database, pytest.raises(StoreError, match="application name"):
        database.store(app)
    assert tables(pg_url, "public") == ["precious"]


def test_longest_allowed_app_name_works(pg_url: str) -> None:
    """A 48-character name (the limit of every store) fits PostgreSQL's identifiers."""
    app = "a" * 48
    with PostgresDatabase(pg_url) as database:
        database.store(app).append([new("x", 1)])
        assert database.apps() == [app]
        assert database.store(app).wait(0, 1)


def test_long_names_get_a_digest_channel_that_still_wakes_waiters(pg_url: str) -> None:
    """A schema and app too long for a readable channel name still get notifications."""
    schema, app = "s" * 60, "a" * 48
    with (
        PostgresDatabase(pg_url, schema=schema, poll_interval=60) as waiting,
        PostgresDatabase(pg_url, schema=schema) as writing,
    ):
        waiter = waiting.store(app)
        threading.Timer(0.3, lambda: writing.store(app).append([new("x", 1)])).start()
        started = time.monotonic()
        assert waiter.wait(0, 30)
        assert time.monotonic() - started < 5


def test_channel_names_fit_in_an_identifier_and_stay_distinct() -> None:
    """Channels are fes:{schema}.{app}, or a digest of both when that passes 63 bytes.

    It calls the private, pure function that names channels: a digest
    channel is visible from outside only to a listener that already knows it.
    """
    assert channel("public", "shop") == "fes:public.shop"
    long = channel("s" * 60, "a" * 48)
    assert long.startswith("fes:") and len(long.encode()) <= 63
    assert long != channel("s" * 60, "a" * 47)
    assert long != channel("s" * 59, "a" * 48)


def test_apps_ignores_unrelated_tables_and_other_schemas(pg_url: str) -> None:
    """apps() lists only fes applications of its own schema, not look-alike tables."""
    sql_rows(pg_url, "CREATE TABLE lookalike_events (id int)")
    with PostgresDatabase(pg_url) as public, PostgresDatabase(pg_url, schema="other") as other:
        public.store("shop")
        other.store("billing")
        assert public.apps() == ["shop"]
        assert other.apps() == ["billing"]
        # The same app name in two schemas is two separate applications.
        public.store("billing").append([new("a", 1)])
        assert other.store("billing").stream_version("a") == 0


def test_stores_in_several_processes_create_tables_once(pg_url: str) -> None:
    """Many databases opening the same new app at once all succeed (creation is serialised)."""
    databases = [PostgresDatabase(pg_url, pool_size=1) for _ in range(6)]
    barrier = threading.Barrier(len(databases))
    errors: list[BaseException] = []

    def open_store(database: PostgresDatabase) -> None:
        try:
            barrier.wait(10)
            database.store("shop").append([new(f"s{id(database)}", 1)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store, args=(d,)) for d in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for database in databases:
        database.close()
    assert errors == []
    assert sql_rows(pg_url, "SELECT count(*) FROM shop_events") == [(6,)]


def test_positions_follow_batch_order(pg_url: str) -> None:
    """Positions of one batch increase in the order of its events, across streams."""
    with PostgresDatabase(pg_url) as database:
        store = database.store("shop")
        batch = [new(f"s{i % 7}", i // 7 + 1) for i in range(500)]
        positions = store.append(batch)
        assert positions == list(range(positions[0], positions[0] + 500))
        assert [(e.stream, e.version) for e in store.read_log()] == [
            (e.stream, e.version) for e in batch
        ]


def test_missing_table_is_a_store_error(pg_url: str) -> None:
    """A table dropped behind the store's back gives a StoreError naming the problem."""
    with PostgresDatabase(pg_url) as database:
        store = database.store("shop")
        sql_rows(pg_url, "DROP TABLE shop_events")
        with pytest.raises(StoreError, match="shop_events"):
            store.read_log()
        with pytest.raises(StoreError, match="shop_events"):
            store.append([new("a", 1)])


# Notifications ----------------------------------------------------------------------------


def test_append_notifies_only_its_application_and_only_on_commit(pg_url: str) -> None:
    """A committed append notifies its app's channel once; a refused one notifies nobody."""
    with PostgresDatabase(pg_url) as database, psycopg.connect(pg_url, autocommit=True) as conn:
        shop = database.store("shop")
        database.store("billing")  # another application, whose channel must stay silent
        for name in ("fes:public.shop", "fes:public.billing"):
            conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(name)))
        shop.append([new("a", 1), new("b", 1)], tracking=Tracking("up", 1, 0))
        with pytest.raises(ConcurrencyError):
            shop.append([new("a", 1)])
        with pytest.raises(DuplicateTracking):
            shop.append([new("c", 1)], tracking=Tracking("up", 1, 0))
        received = [n.channel for n in conn.notifies(timeout=0.5)]
    assert received == ["fes:public.shop"]


def test_wait_wakes_on_notify_long_before_a_poll(pg_url: str) -> None:
    """With a 60 s poll interval, a waiter blocked on the log wakes within moments of another
    pool's append, and not before it."""
    with (
        PostgresDatabase(pg_url, poll_interval=60) as waiting,
        PostgresDatabase(pg_url) as writing,
    ):
        waiter, writer = waiting.store("shop"), writing.store("shop")
        assert waiter.wait(0, 0.2) is False  # starts the listener
        results: list[tuple[bool, float, float]] = []

        def wait() -> None:
            started = time.monotonic()
            woke = waiter.wait(0, 30)
            results.append((woke, started, time.monotonic()))

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.5)  # let it find nothing and block, to see that it does not return early
        appended = time.monotonic()
        writer.append([new("a", 1)])
        thread.join(30)
        assert not thread.is_alive()
    [(woke, started, returned)] = results
    assert woke is True
    assert returned >= appended  # it waited for the append
    assert returned - started >= 0.4
    assert returned - appended < 5.0  # a poll would take 60 s


def test_wait_polls_when_listen_is_off(pg_url: str) -> None:
    """With listen=false, wait still sees an append, within about one poll interval."""
    with (
        PostgresDatabase(
            pg_url, listen=False, poll_interval=0.2, application_name="fes-deaf"
        ) as waiting,
        PostgresDatabase(pg_url) as writing,
    ):
        waiter = waiting.store("shop")
        threading.Timer(0.3, lambda: writing.store("shop").append([new("a", 1)])).start()
        started = time.monotonic()
        assert waiter.wait(0, 10) is True
        assert time.monotonic() - started < 3.0
        sessions = sql_rows(
            pg_url, "SELECT query FROM pg_stat_activity WHERE application_name = 'fes-deaf'"
        )
        assert sessions and not [q for (q,) in sessions if "LISTEN" in q.upper()]


def test_wait_polls_when_a_notification_is_lost(pg_url: str) -> None:
    """An event committed without NOTIFY (a lost notification) wakes a waiter by polling."""
    with PostgresDatabase(pg_url, poll_interval=0.3) as database:
        store = database.store("shop")
        assert store.wait(0, 0.1) is False

        def insert_silently() -> None:
            sql_rows(
                pg_url,
                "INSERT INTO shop_events (stream, version, topic, payload, timestamp_us)"
                " VALUES ('quiet', 1, 't', '', 0)",
            )

        threading.Timer(0.2, insert_silently).start()
        started = time.monotonic()
        assert store.wait(0, 10) is True
        assert 0.1 < time.monotonic() - started < 3.0


def test_wait_survives_a_lost_listener_connection(pg_url: str) -> None:
    """After the listening connection is killed, the listener reconnects and wakes waiters."""
    with (
        PostgresDatabase(pg_url, poll_interval=30, application_name="fes-listener") as waiting,
        PostgresDatabase(pg_url) as writing,
    ):
        waiter = waiting.store("shop")
        assert waiter.wait(0, 0.2) is False
        # Terminate every backend of the waiting database: pool and listener.
        sql_rows(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'fes-listener'",
        )
        threading.Timer(1.5, lambda: writing.store("shop").append([new("a", 1)])).start()
        started = time.monotonic()
        assert waiter.wait(0, 60) is True
        # Far below the 30 s poll interval: a notification on the new connection woke it.
        assert time.monotonic() - started < 5



def test_wait_notified_wakes_on_a_notification_after_the_count_it_was_given(
    pg_url: str,
) -> None:
    """notified() counts this log's notifications; wait_notified blocks until one after
    the count it is given, and says False when the timeout passes with none."""
    with (
        PostgresDatabase(pg_url, poll_interval=60) as waiting,
        PostgresDatabase(pg_url) as writing,
    ):
        waiter, writer = waiting.store("shop"), writing.store("shop")
        first = waiter.notified()  # starts the listener, which counts its LISTEN as one:
        assert isinstance(first, int)  # whatever was committed before it may be unread
        assert waiter.wait_notified(first, 30) is True
        seen = waiter.notified()
        assert isinstance(seen, int) and seen != first
        started = time.monotonic()
        assert waiter.wait_notified(seen, 0.3) is False  # nothing committed
        assert time.monotonic() - started >= 0.25
        assert waiter.notified() == seen
        writing.store("other").append([new("x", 1)])  # another log's commit: not counted
        threading.Timer(0.3, lambda: writer.append([new("a", 1)])).start()
        started = time.monotonic()
        assert waiter.wait_notified(seen, 30) is True
        assert time.monotonic() - started < 5.0  # a poll would take 60 s
        after = waiter.notified()
        assert after is not None and after != seen
        # a notification that came before the wait began ends it at once
        writer.append([new("b", 1)])
        deadline = time.monotonic() + 5
        while waiter.notified() == after and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        assert waiter.wait_notified(after, 30) is True
        assert time.monotonic() - started < 0.5


@contextlib.contextmanager
def _listening(
    pg_url: str,
) -> Iterator[tuple[PostgresDatabase, PostgresStore, PostgresStore]]:
    """A database waiting on shop's log, its listener past its LISTEN's own count; its
    store, and a store of another database that writes to shop's log."""
    with (
        PostgresDatabase(pg_url, poll_interval=60) as waiting,
        PostgresDatabase(pg_url) as writing,
    ):
        waiter, writer = waiting.store("shop"), writing.store("shop")
        first = waiter.notified()
        assert isinstance(first, int)
        assert waiter.wait_notified(first, 30) is True  # the LISTEN's own count
        yield waiting, waiter, writer


def test_every_notification_is_counted_while_the_listener_runs_statements(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notification that arrives while the listener's own statement runs (its
    keepalive, here sent whenever nothing is to be read) is counted like any other: each
    commit of the log counts one, none lost between the listener's reads."""
    monkeypatch.setattr(_listener.Listener, "_KEEPALIVE", 0)
    with _listening(pg_url) as (_, waiter, writer):
        start = waiter.notified()
        assert isinstance(start, int)
        commits = 300
        for i in range(commits):
            writer.append([new(f"s{i}", 1)])  # a commit each: a notification each
        deadline = time.monotonic() + 10
        while waiter.notified() != start + commits and time.monotonic() < deadline:
            time.sleep(0.01)
        assert waiter.notified() == start + commits


def test_notifications_are_read_where_they_are_wanted(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While no thread waits, the listener's thread does not watch the connection: a
    thread that asks for the count reads what has arrived itself (a busy follower wakes
    no other thread per commit); a thread that waits is woken by the listener's thread,
    at once; and while nobody asks, the thread reads what has arrived now and then."""
    bumped_by: list[str] = []
    bump = _listener.Signal.bump

    def recording(signal: _listener.Signal, count: int = 1) -> None:
        bumped_by.extend([threading.current_thread().name] * count)
        bump(signal, count)

    monkeypatch.setattr(_listener.Signal, "bump", recording)
    monkeypatch.setattr(_listener.Listener, "_IDLE_READ", 60.0)
    with _listening(pg_url) as (waiting, waiter, writer):
        # after a wait the thread watches until something comes: a commit ends that
        listener = waiting._listener
        assert listener is not None
        deadline = time.monotonic() + 10
        for i in itertools.count():
            with listener._lock:
                if not listener._watching or time.monotonic() > deadline:
                    break
            writer.append([new(f"w{i}", 1)])
            time.sleep(0.05)
        assert not listener._watching
        start = waiter.notified()
        assert isinstance(start, int)
        del bumped_by[:]
        for i in range(50):
            writer.append([new(f"s{i}", 1)])
        deadline = time.monotonic() + 10
        while waiter.notified() != start + 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert waiter.notified() == start + 50
        assert set(bumped_by) == {threading.current_thread().name}  # the listener slept
        # a thread that waits is woken by the listener's thread, not by a read a minute on
        del bumped_by[:]
        threading.Timer(0.3, lambda: writer.append([new("late", 1)])).start()
        started = time.monotonic()
        assert waiter.wait_notified(start + 50, 30) is True
        assert time.monotonic() - started < 5.0
        assert bumped_by == ["fes-listen"]
        # nobody asks: the listener's thread reads now and then, so nothing piles up
        listener._IDLE_READ = 0.05
        listener._wake()
        signal = listener.signal(channel("public", "shop"))
        before = signal._generation  # read as it stands: only the thread bumps it
        del bumped_by[:]
        for i in range(20):
            writer.append([new(f"t{i}", 1)])
        deadline = time.monotonic() + 10
        while signal._generation != before + 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert signal._generation == before + 20
        assert set(bumped_by) == {"fes-listen"}


@pytest.mark.parametrize("listen", [True, False])
def test_closing_the_database_wakes_its_waiters_at_once(pg_url: str, listen: bool) -> None:
    """A thread asleep in wait or wait_notified (a runner's) ends when the database closes,
    not a poll interval later: woken by the listener, or, with listen off, in its poll."""
    database = PostgresDatabase(pg_url, poll_interval=60, listen=listen)
    store = database.store("shop")
    if listen:
        first = store.notified()
        assert first is not None and store.wait_notified(first, 30)  # listening
        seen = store.notified()
        assert seen is not None
    else:
        assert store.notified() is None
        seen = 0
    ended: list[tuple[str, object, float]] = []

    def run(name: str, wait: Callable[[], bool]) -> None:
        try:
            outcome: object = wait()
        except StoreError as error:
            outcome = error
        ended.append((name, outcome, time.monotonic()))

    threads = [
        threading.Thread(target=run, args=("wait", lambda: store.wait(0, 60))),
        threading.Thread(target=run, args=("notified", lambda: store.wait_notified(seen, 60))),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    assert ended == []  # both asleep
    closed = time.monotonic()
    database.close()
    for thread in threads:
        thread.join(10)
    assert sorted(name for name, _, _ in ended) == ["notified", "wait"]
    for name, outcome, at in ended:
        assert at - closed < 5.0, name
        if name == "wait":  # it looks at the log once more, and finds the database closed
            assert isinstance(outcome, StoreError) and "closed" in str(outcome)
        else:  # woken by a notification of the close; with listen off, nothing notified
            assert outcome is listen


def test_without_listen_nothing_is_notified_and_wait_notified_only_times_out(
    pg_url: str,
) -> None:
    with (
        PostgresDatabase(pg_url, listen=False, poll_interval=0.2) as deaf,
        PostgresDatabase(pg_url) as writing,
    ):
        store = deaf.store("shop")
        assert store.notified() is None
        writing.store("shop").append([new("a", 1)])
        started = time.monotonic()
        assert store.wait_notified(0, 0.2) is False
        assert time.monotonic() - started >= 0.15

# Lost connections and timeouts -------------------------------------------------------------


def terminate(url: str, application: str) -> int:
    rows = sql_rows(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = %s AND pid <> pg_backend_pid()",
        application,
    )
    return len(rows)


def test_reads_and_appends_retry_after_lost_connections(pg_url: str) -> None:
    """When the server drops every pooled connection, the next read and append still work."""
    with PostgresDatabase(pg_url, application_name="fes-retry", pool_size=3) as database:
        store = database.store("shop")
        store.append([new("a", 1)])
        assert terminate(pg_url, "fes-retry") >= 1
        assert store.read_stream("a")[0].version == 1
        assert terminate(pg_url, "fes-retry") >= 1
        assert store.append([new("a", 2)]) == [2]
        assert terminate(pg_url, "fes-retry") >= 1
        store.save_view("v", b"x", Tracking("up", 1, 0))
        assert [e.version for e in store.read_stream("a")] == [1, 2]
        assert store.load_view("v") == (b"x", 1)


def test_retries_are_bounded(pg_url: str) -> None:
    """With retries=0 a lost connection is reported at once, naming the URL, not retried."""
    with PostgresDatabase(pg_url, application_name="fes-noretry", retries=0) as database:
        store = database.store("shop")
        assert terminate(pg_url, "fes-noretry") >= 1
        with pytest.raises(StoreError, match="lost the connection to postgresql://"):
            store.read_log()
        assert store.read_log() == []  # the pool replaced the dead connection


@contextlib.contextmanager
def blocked_append(url: str, store: PostgresStore) -> Iterator[None]:
    """While inside, an append of ``store`` waits for the log's lock, holding its connection."""
    with psycopg.connect(url) as holder:
        holder.execute("LOCK TABLE shop_events IN EXCLUSIVE MODE")
        writer = threading.Thread(target=lambda: store.append([new("a", 1)]))
        writer.start()
        deadline = time.monotonic() + 10
        while not sql_rows(
            url,
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%%LOCK TABLE%%' AND pid <> pg_backend_pid()",
        ):
            assert time.monotonic() < deadline, "the append never waited for the lock"
            time.sleep(0.02)
        try:
            yield
        finally:
            holder.rollback()
            writer.join(10)


def test_a_busy_pool_times_out_with_a_clear_error(pg_url: str) -> None:
    """When every pooled connection is busy past pool_timeout, a StoreError says so."""
    with PostgresDatabase(pg_url, pool_size=1, pool_timeout=0.3) as database:
        store = database.store("shop")
        with (
            blocked_append(pg_url, store),
            pytest.raises(StoreError, match="pool_size"),
        ):
            store.read_log()
        assert store.stream_version("a") == 1


def test_wait_without_a_connection_returns_when_its_timeout_passes(pg_url: str) -> None:
    """No connection to be had (here: the pool's only one is taken): False at the timeout.

    It used to wait pool_timeout (30 s by default) and raise, whatever its timeout.
    """
    with PostgresDatabase(pg_url, pool_size=1, pool_timeout=30) as database:
        store = database.store("shop")
        with blocked_append(pg_url, store):
            start = time.monotonic()
            assert store.wait(0, 0.3) is False
            assert time.monotonic() - start < 5
        assert store.wait(0, 0.3) is True


def test_a_connection_lost_during_commit_is_reported_not_retried(pg_url: str) -> None:
    """If the connection dies once COMMIT was sent, append raises and does not retry."""
    with PostgresDatabase(pg_url, application_name="fes-commit") as database:
        store = database.store("shop")
        # A deferred trigger runs inside COMMIT: there it ends its own session.
        sql_rows(
            pg_url,
            "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5);"
            " RETURN NULL; END $$",
        )
        sql_rows(
            pg_url,
            "CREATE CONSTRAINT TRIGGER die AFTER INSERT ON shop_events"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die()",
        )
        with pytest.raises(OutcomeUnknown, match="unknown whether") as raised:
            store.append([new("a", 1)])
        # one line, saying what to do before the server's text of the lost connection
        said = str(raised.value)
        assert "\n" not in said
        assert said.startswith("unknown whether the attempt to append to 'shop' took effect: "
                               "the connection to postgresql://")
        advice = said.index("read what it writes (a stream's version) before trying again")
        assert advice < said.index("(the connection's error: ")
        sql_rows(pg_url, "DROP TRIGGER die ON shop_events")
        # The server rolled the transaction back: nothing is stored, let alone twice.
        assert store.read_stream("a") == []
        assert store.append([new("a", 1)]) != []


def test_lock_timeout_refuses_an_append_that_waits_too_long(pg_url: str) -> None:
    """An append that cannot get the log lock within lock_timeout fails and stores nothing."""
    with PostgresDatabase(pg_url, lock_timeout=200) as database:
        store = database.store("shop")
        with psycopg.connect(pg_url) as holder:
            holder.execute("LOCK TABLE shop_events IN EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(StoreError, match="lock_timeout=200ms"):
                store.append([new("a", 1)])
            assert time.monotonic() - started < 5
            holder.rollback()
        assert store.read_log() == []
        assert len(store.append([new("a", 1)])) == 1


def test_idle_transaction_timeout_frees_the_lock_of_a_stuck_writer(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer stuck before COMMIT holding the log lock is cut off by the server after
    idle_in_transaction_session_timeout, so another writer waits about that long, then goes on.

    It patches the store's private ``_commit``: the timeout is about a client
    that stalls between two statements of its transaction, and nothing a
    caller or the server can do makes the real client stall there.
    """
    with (
        PostgresDatabase(pg_url, idle_in_transaction_session_timeout="300ms") as stuck,
        PostgresDatabase(pg_url, lock_timeout="10s") as other,
    ):
        store, free = stuck.store("shop"), other.store("shop")
        original = store._commit
        holding, release = threading.Event(), threading.Event()

        def commit(conn: psycopg.Connection[Any]) -> None:
            holding.set()  # the INSERT is done: it holds the lock, idle in transaction
            release.wait(30)  # until the other writer is through, or the test gives up
            original(conn)

        monkeypatch.setattr(store, "_commit", commit)
        failures: list[BaseException] = []

        def append() -> None:
            try:
                # two events: a batch's append, whose statements go one by one
                store.append([new("stuck", 1), new("stuck", 2)])
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=append)
        thread.start()
        try:
            assert holding.wait(10), "the stuck writer never reached its COMMIT"
            started = time.monotonic()
            free.append([new("free", 1)])
            waited = time.monotonic() - started
        finally:
            release.set()
            thread.join(30)
        assert not thread.is_alive()
        # It waited for the stuck writer's lock until the server cut that writer off
        # (300 ms), and not until its own lock_timeout (10 s).
        assert 0.15 <= waited < 5, waited
        assert len(failures) == 1 and isinstance(failures[0], OutcomeUnknown), failures
        assert "unknown whether" in str(failures[0])
        assert [e.stream for e in free.read_log()] == ["free"]


def test_a_single_event_append_holds_the_lock_only_while_the_server_works(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One event's append sends the lock, the insert and COMMIT together: a stalled
    client holds no lock, and the server cuts it off after its idle timeout.

    It patches the store's private ``_append_one`` to stall just after the
    append's BEGIN, the only place such a client can stall; nothing a caller
    or the server can do makes the real client stall there.
    """
    with (
        PostgresDatabase(
            pg_url, idle_in_transaction_session_timeout="1s", pool_size=1
        ) as stuck,
        PostgresDatabase(pg_url, lock_timeout="10s") as other,
    ):
        store, free = stuck.store("shop"), other.store("shop")
        # A connection's first single-event append prepares its insert under
        # the lock; from the second on, the lock travels with the insert.
        store.append([new("warm", 1)])
        free.append([new("free", 1)])  # connected, and prepared, before the clock starts
        original = store._append_one
        holding, release = threading.Event(), threading.Event()

        def append_one(*args: Any, **kwargs: Any) -> list[int]:
            holding.set()  # BEGIN is done: idle in transaction, before the lock
            release.wait(30)
            return original(*args, **kwargs)

        monkeypatch.setattr(store, "_append_one", append_one)
        failures: list[BaseException] = []

        def append() -> None:
            try:
                store.append([new("stuck", 1)])
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=append)
        thread.start()
        try:
            assert holding.wait(10), "the stuck writer never began its transaction"
            started = time.monotonic()
            free.append([new("free", 2)])
            waited = time.monotonic() - started
            time.sleep(1.5)  # past the stuck session's idle timeout
        finally:
            release.set()
            thread.join(30)
        assert not thread.is_alive()
        # It did not queue behind the stuck writer (it would have until the server
        # cut that writer off, a second after its BEGIN).
        assert waited < 0.5, waited
        # The server ended the stuck transaction: the client cannot know what it got.
        assert len(failures) == 1 and isinstance(failures[0], OutcomeUnknown), failures
        assert "unknown whether" in str(failures[0])
        assert [(e.stream, e.version) for e in free.read_log()] == [
            ("warm", 1), ("free", 1), ("free", 2)
        ]


def test_a_single_event_append_prepares_again_a_statement_its_session_lost(
    pg_url: str,
) -> None:
    """Code that deallocates the session's prepared statements costs one more round trip."""
    with PostgresDatabase(pg_url, pool_size=1) as database:
        store = database.store("shop")
        store.append([new("a", 1)])
        # on the only connection, as the store's own requests get it
        database._connections.run(
            "deallocate", lambda conn: conn.execute("DEALLOCATE ALL"), idempotent=True
        )
        assert len(store.append([new("a", 2)])) == 1
        assert len(store.append([new("a", 3)])) == 1
        assert [e.version for e in store.read_stream("a")] == [1, 2, 3]


def test_single_event_appends_quote_every_value_they_send(pg_url: str) -> None:
    """The one-message append carries its values quoted in the query: any text and
    bytes, quotes, backslashes, percent signs and semicolons included, come back
    exactly; an event too large for one message goes as parameters, and both
    refuse a taken version the same way."""
    with PostgresDatabase(pg_url) as database:
        store = database.store("shop")
        tricky = "a'b\\c;%s %(x)s $$ -- \n \u00e9 \U0001f600"
        payload = bytes(range(256)) + b"'; DROP TABLE shop_events; --"
        meta = b"\x00\\'%s"
        (first,) = store.append([NewEvent(tricky, 1, tricky, payload, 7, meta)])
        big = os.urandom(ONE_MESSAGE_BYTES + 1)
        (second,) = store.append([NewEvent("big", 1, "Big", big, 8, None)])
        assert second > first
        (kept,) = store.read_stream(tricky)
        assert (kept.topic, kept.payload, kept.timestamp, kept.meta) == (tricky, payload, 7, meta)
        assert store.read_stream("big")[0].payload == big
        for stream in (tricky, "big"):
            with pytest.raises(ConcurrencyError) as caught:
                store.append([NewEvent(stream, 1, "Again", b"{}", 9, None)])
            assert (caught.value.expected, caught.value.actual) == (0, 1)
        assert [e.stream for e in store.read_log()] == [tricky, "big"]



def test_a_single_event_refused_by_another_key_is_no_conflict(pg_url: str) -> None:
    """A single event's insert refused by a unique key other than (stream, version) (here
    the position, taken by a row put in by hand) is a store error, not a conflict that a
    command would retry: the stream has no such version.  Nothing is stored."""
    with PostgresDatabase(pg_url) as database:
        store = database.store("keys")
        store.append([new("a", 1)])  # position 1
        sql_rows(
            pg_url,
            "INSERT INTO keys_events (position, stream, version, topic, payload, timestamp_us)"
            " OVERRIDING SYSTEM VALUE SELECT p, 'hand-' || p, 1, 'T', '', 0"
            " FROM generate_series(2, 9) AS p",
        )
        large = os.urandom(ONE_MESSAGE_BYTES + 1)  # too large for one message: parameters
        for event in (new("b", 1), NewEvent("c", 1, "Big", large, 1, None)):
            with pytest.raises(StoreError, match="nothing was stored") as caught:
                store.append([event])
            assert not isinstance(caught.value, ConcurrencyError)
            assert "keys_events_pkey" in str(caught.value)
            assert store.read_stream(event.stream) == []
        with pytest.raises(ConcurrencyError) as conflict:  # the version is taken: a conflict
            store.append([new("a", 1)])
        assert (conflict.value.expected, conflict.value.actual) == (0, 1)


def test_a_batch_append_prepares_again_a_statement_its_session_lost(pg_url: str) -> None:
    """Each kind of batch append (no tracking, first and next tracking) survives code
    that deallocates the session's prepared statements, and a lock that times out
    before the statement was ever prepared."""
    with PostgresDatabase(pg_url, pool_size=1, lock_timeout=200) as database:
        store = database.store("shop")
        store.append([new("a", 1), new("b", 1)])
        store.append([new("a", 2), new("c", 1)], tracking=Tracking("up", 1, 0))
        store.append([new("a", 3), new("d", 1)], tracking=Tracking("up", 2, 1))
        database._connections.run(
            "deallocate", lambda conn: conn.execute("DEALLOCATE ALL"), idempotent=True
        )
        store.append([new("a", 4), new("e", 1)])
        store.append([new("a", 5), new("f", 1)], tracking=Tracking("down", 1, 0))
        store.append([new("a", 6), new("g", 1)], tracking=Tracking("up", 3, 2))
        assert [e.version for e in store.read_stream("a")] == [1, 2, 3, 4, 5, 6]
        assert store.tracked() == {"up": 3, "down": 1}
        # only the single event's statement is lost: its append forgets every
        # statement, and the batch's, still there, is found prepared
        store.append([new("h", 1)])
        database._connections.run(
            "deallocate one",
            lambda conn: conn.execute(
                psycopg.sql.SQL("DEALLOCATE {}").format(store._q.names["one"])
            ),
            idempotent=True,
        )
        store.append([new("h", 2)])
        store.append([new("a", 7), new("i", 1)])
        assert [e.version for e in store.read_stream("a")] == [1, 2, 3, 4, 5, 6, 7]
    with (
        PostgresDatabase(pg_url, pool_size=1, lock_timeout=200) as database,
        psycopg.connect(pg_url) as blocker,
    ):
        store = database.store("other")
        blocker.execute("LOCK TABLE other_events IN EXCLUSIVE MODE")
        with pytest.raises(StoreError, match="lock_timeout"):  # before its PREPARE ran
            store.append([new("a", 1), new("b", 1)])
        blocker.rollback()
        assert len(store.append([new("a", 1), new("b", 1)])) == 2  # prepared after all
        assert [e.stream for e in store.read_log()] == ["a", "b"]


def test_batch_appends_quote_every_value_they_send(pg_url: str) -> None:
    """A batch's values go quoted in its message, unless the batch is too large for one:
    both keep any text and bytes exactly, and refuse a conflict alike."""
    with PostgresDatabase(pg_url) as database:
        store = database.store("shop")
        tricky = "a'b\\c;%s %(x)s $$ -- \n \u00e9 \U0001f600 {NULL} \"quoted\" ,"
        payload = bytes(range(256)) + b"'; DROP TABLE shop_events; --"
        small = [
            NewEvent(tricky, 1, tricky, payload, 7, b"\x00\\'%s{}"),
            NewEvent("empty", 1, "", b"", 8, None),
            NewEvent("null", 1, "NULL", b"NULL", 9, b"NULL"),
        ]
        many = [
            NewEvent(f"many-{i}", 1, "T", b"x", i, None) for i in range(BATCH_MESSAGE_EVENTS + 1)
        ]
        big = [NewEvent("big", 1, "Big", os.urandom(BATCH_MESSAGE_BYTES), 10, None),
               NewEvent("big2", 1, "Big", b"y", 11, None)]
        for batch in (small, many, big):
            positions = store.append(batch)
            assert len(positions) == len(batch)
            assert [
                (e.stream, e.version, e.topic, e.payload, e.timestamp, e.meta)
                for e in store.read_log(positions[0] - 1, limit=len(batch))
            ] == [tuple(event) for event in batch]
            with pytest.raises(ConcurrencyError) as caught:
                store.append([batch[1], NewEvent("fresh", 1, "T", b"", 1, None)])
            assert (caught.value.stream, caught.value.actual) == (batch[1].stream, 1)
        assert store.read_stream("fresh") == []


class _Odd(int):
    """An int subclass that renders itself as something else: stored as its value."""

    def __str__(self) -> str:
        return "1},{2"

    __repr__ = __str__
    __format__ = None  # type: ignore[assignment]


# any text a stream id or topic may hold (no NUL, no lone surrogate), drawing
# often on what array and string literals give a meaning to
_text = st.text(
    st.sampled_from(list("\"\\'{},; \tNUL$%()E")) | st.characters(
        blacklist_categories=("Cs",), blacklist_characters="\x00"
    )
)
_ids = itertools.count()


@pytest.fixture(scope="module")
def quoting_database(pg_server: PgServer) -> Iterator[Database]:
    database = open_database(pg_server.create_database(f"fes_quoting_{os.getpid()}"))
    yield database
    database.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    streams=st.lists(
        st.tuples(_text.filter(bool).map(lambda s: s[:40]), st.integers(1, 3)),
        min_size=1, max_size=6,
    ),
    topic=_text,
    payloads=st.lists(st.binary(max_size=40), min_size=12, max_size=12),
    metas=st.lists(st.none() | st.binary(max_size=20), min_size=12, max_size=12),
    odd=st.booleans(),
    tracked=st.sampled_from(["none", "first", "next"]),
)
@example(  # each character either literal gives a meaning to
    streams=[("a\\b\"c", 2), ("{NULL}", 1), ("'; --", 1)], topic=" ,E'\\x00\"",
    payloads=[b"\\x00\"'"] * 12, metas=[None, b""] * 6, odd=True, tracked="next",
)
def test_a_batch_message_keeps_any_value_exactly(
    quoting_database: Database,
    streams: list[tuple[str, int]],
    topic: str,
    payloads: list[bytes],
    metas: list[bytes | None],
    odd: bool,
    tracked: str,
) -> None:
    """A batch's arrays go as literals fes builds: any stream id, topic, payload,
    metadata, version and timestamp comes back exactly as appended, with tracking."""
    store = quoting_database.store("quoting")
    n = next(_ids)
    events: list[NewEvent] = []
    for i, (stream, count) in enumerate(dict(streams).items()):
        for version in range(1, count + 1):
            k = len(events)
            stamp = _Odd(k + n) if odd else k + n
            events.append(NewEvent(f"{n}-{i}-{stream}", _Odd(version) if odd else version,
                                   topic, payloads[k % 12], stamp, metas[k % 12]))
    leader, tracking = f"leader-{n}", None
    if tracked == "first":
        tracking = Tracking(leader, 1, 0)
    elif tracked == "next":
        store.append([], tracking=Tracking(leader, 1, 0))
        tracking = Tracking(leader, 2, 1)
    positions = store.append(events, tracking=tracking)
    stored = store.read_log(positions[0] - 1, limit=len(events))
    assert [(e.stream, e.version, e.topic, e.payload, e.timestamp, e.meta) for e in stored] == [
        (e.stream, int(e.version), e.topic, e.payload, int(e.timestamp), e.meta) for e in events
    ]
    assert store.last_tracked(leader) == (0 if tracking is None else tracking.position)


# Closing ------------------------------------------------------------------------------------


def test_close_releases_every_connection_and_the_listener(pg_url: str) -> None:
    """After close() no connection of the database remains and the listener thread ends."""
    before = threading.enumerate()
    database = PostgresDatabase(pg_url, application_name="fes-closing", pool_size=3)
    store = database.store("shop")
    store.append([new("a", 1)])
    assert store.wait(0, 1)
    assert store.wait(1, 0.1) is False
    listeners = [t for t in threading.enumerate() if t.name == "fes-listen" and t not in before]
    assert len(listeners) == 1
    database.close()
    assert not listeners[0].is_alive()
    deadline = time.monotonic() + 5
    while sql_rows(
        pg_url, "SELECT pid FROM pg_stat_activity WHERE application_name = 'fes-closing'"
    ):
        assert time.monotonic() < deadline, "connections left open"
        time.sleep(0.05)
    with pytest.raises(StoreError, match="closed"):
        store.wait(0, 0.1)


def test_store_is_usable_from_many_threads(pg_url: str) -> None:
    """One store shared by more threads than pool connections serves them all."""
    with PostgresDatabase(pg_url, pool_size=2) as database:
        store: PostgresStore = database.store("shop")
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for version in range(1, 21):
                    store.append([NewEvent(f"w{worker}", version, "t", b"", 0)])
                    store.read_stream(f"w{worker}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert store.last_position() == 120


def test_single_event_appends_of_two_apps_share_a_connection(pg_url: str) -> None:
    """One pooled session serves two applications' single-event appends in turn: it
    prepares each one's insert once and keeps its cursors for both."""
    with PostgresDatabase(pg_url, pool_size=1) as database:
        shop, bank = database.store("shop"), database.store("bank")
        for version in range(1, 4):
            shop.append([new("a", version)])
            bank.append([new("a", version)])
        with pytest.raises(ConcurrencyError):
            bank.append([new("a", 2)])
        shop.append([new("a", 4)])
        assert [e.version for e in shop.read_stream("a")] == [1, 2, 3, 4]
        assert [e.version for e in bank.read_stream("a")] == [1, 2, 3]
        prepared = database._connections.run(  # the only connection
            "look", lambda conn: conn.prepared, idempotent=True
        )
        assert len(prepared) == 2


# Parking: the connection a request finished with serves the next one --------------------


def backend(store: PostgresStore) -> int:
    """The server process of the connection a request of ``store`` gets."""
    return store._conns.run(
        "look", lambda conn: int(conn.info.backend_pid), idempotent=True
    )


def test_requests_in_a_row_keep_to_one_session_past_the_pool(pg_url: str) -> None:
    """A thread's requests one after another get the connection the last one
    finished with, without asking the pool, until _PARK_SECONDS send it back."""
    with PostgresDatabase(pg_url) as database:
        store = database.store("shop")
        store.append([new("a", 1)])
        pool = database._connections._pool
        asked = pool.get_stats()["requests_num"]
        first = backend(store)
        for version in range(2, 22):
            store.append([new("a", version)])
            assert store.stream_version("a") == version
        assert backend(store) == first
        assert pool.get_stats()["requests_num"] == asked


def test_a_parked_connection_goes_back_to_the_pool_in_time(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept from the pool no longer than _PARK_SECONDS, a connection still gets its
    reset, expiry and health checks."""
    monkeypatch.setattr(_connections, "_PARK_SECONDS", 0.0)
    with PostgresDatabase(pg_url) as database:
        store = database.store("shop")
        pool = database._connections._pool
        asked = pool.get_stats()["requests_num"]
        for version in range(1, 6):
            store.append([new("a", version)])
        assert pool.get_stats()["requests_num"] == asked + 5
        assert database._connections._parked == []


def test_a_request_waiting_for_the_pool_gets_a_finished_connection(pg_url: str) -> None:
    """With one connection, a request that waits for the pool gets it as soon as the
    request holding it finishes: it is not parked while someone waits."""
    with PostgresDatabase(pg_url, pool_size=1, pool_timeout=20) as database:
        store = database.store("shop")
        store.append([new("b", 1)])
        waited: list[float] = []
        with blocked_append(pg_url, store):  # holds the only connection
            reader = threading.Thread(
                target=lambda: (
                    started := time.monotonic(),
                    store.read_stream("b"),
                    waited.append(time.monotonic() - started),
                )
            )
            reader.start()
            time.sleep(0.3)  # the reader waits for the pool
            assert not waited
        reader.join(30)
        assert waited and waited[0] < 5, waited
        assert store.stream_version("a") == 1


def test_closing_closes_a_parked_connection(pg_url: str) -> None:
    """close() also closes the connection parked between requests."""
    database = PostgresDatabase(pg_url, application_name="fes-parked", pool_size=1)
    store = database.store("shop")
    store.append([new("a", 1)])
    assert database._connections._parked
    database.close()
    assert database._connections._parked == []
    deadline = time.monotonic() + 5
    while sql_rows(
        pg_url, "SELECT pid FROM pg_stat_activity WHERE application_name = 'fes-parked'"
    ):
        assert time.monotonic() < deadline, "the parked connection was left open"
        time.sleep(0.05)
    with pytest.raises(StoreError, match="closed"):
        store.append([new("a", 2)])
