"""PostgreSQL: positions become visible in commit order, proved with held-open writers.

A writer's transaction is held open between its INSERT and the end of its
COMMIT by a deferred constraint trigger on the events table (see
:class:`CommitGate`), which runs during COMMIT and waits for an advisory
lock the test holds.  With the EXCLUSIVE lock, a second writer queues behind
it and a reader sees neither; with the lock replaced by a no-op, the same
interleaving lets a reader see position 2 while position 1 is still
uncommitted, and a follower that moved past 2 never sees 1: the lock is
what the ordering rests on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from fes.edge.stores import NewEvent, StoredEvent
from fes.edge.stores._postgres import PostgresDatabase, PostgresStore
from fes.errors import StoreError

pytestmark = pytest.mark.postgres


def event(stream: str, version: int = 1) -> NewEvent:
    return NewEvent(stream, version, "Happened", stream.encode(), 0)


class Follower(threading.Thread):
    """Follows a store's log as a runner would: read after the last seen position."""

    def __init__(self, store: PostgresStore) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.seen: list[StoredEvent] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                stopping = self.stop.is_set()
                after = self.seen[-1].position if self.seen else 0
                self.seen.extend(self.store.read_log(after))
                if stopping:
                    return
        except BaseException as exc:  # pragma: no cover - reported by finish()
            self.error = exc

    def finish(self) -> list[StoredEvent]:
        self.stop.set()
        self.join(30)
        assert not self.is_alive() and self.error is None, self.error
        return self.seen


class Background(threading.Thread):
    """Runs one call in a thread and keeps its result or error."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> Any:
        self.join(30)
        assert not self.is_alive(), "the call did not finish"
        if self.error is not None:
            raise self.error
        return self.result


class CommitGate:
    """Stops appends of streams starting with ``prefix`` inside their COMMIT until opened.

    A deferred constraint trigger runs at COMMIT, after the INSERT drew its
    positions and while the append still holds the log's lock; it waits for
    an advisory lock that the gate's own connection holds until
    :meth:`open`.  With ``fail``, the trigger then raises, so the server
    rolls the append back.  Everything goes through SQL, none through the
    store's internals.
    """

    KEY = 4242

    def __init__(self, url: str, table: str, prefix: str, *, fail: bool = False) -> None:
        self.table = table
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SELECT pg_advisory_lock(%s)", (self.KEY,))
        then = "RAISE EXCEPTION 'the gate failed the commit';" if fail else ""
        self.conn.execute(
            "CREATE OR REPLACE FUNCTION fes_test_gate() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN PERFORM pg_advisory_xact_lock_shared({self.KEY}); {then} RETURN NULL; END $$"
        )
        self.conn.execute(
            psycopg.sql.SQL(
                "CREATE CONSTRAINT TRIGGER fes_test_gate AFTER INSERT ON {}"
                " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
                " WHEN (NEW.stream LIKE {}) EXECUTE FUNCTION fes_test_gate()"
            ).format(psycopg.sql.Identifier(table), psycopg.sql.Literal(prefix + "%"))
        )

    def open(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.KEY,))

    def close(self) -> None:
        self.conn.execute(
            psycopg.sql.SQL("DROP TRIGGER IF EXISTS fes_test_gate ON {}").format(
                psycopg.sql.Identifier(self.table)
            )
        )
        self.conn.close()


def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def waiting_on_lock(url: str, application: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type = 'Lock'",
            (application,),
        ).fetchone()
    return row is not None and row[0] > 0


def exclusive_lock_holders(url: str, table: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass"
            " AND mode = 'ExclusiveLock' AND granted",
            (table,),
        ).fetchone()
    return 0 if row is None else int(row[0])


@pytest.fixture
def three(pg_url: str) -> Iterator[tuple[PostgresStore, PostgresStore, PostgresStore]]:
    """Writers A and B and reader R on one application, each with its own pool."""
    with (
        PostgresDatabase(pg_url, application_name="fes-a") as a,
        PostgresDatabase(pg_url, application_name="fes-b") as b,
        PostgresDatabase(pg_url, application_name="fes-r") as r,
    ):
        yield a.store("orders"), b.store("orders"), r.store("orders")


def test_reader_never_passes_a_writer_whose_transaction_is_open(
    pg_url: str,
    three: tuple[PostgresStore, PostgresStore, PostgresStore],
) -> None:
    """While A holds its inserted batch uncommitted, B queues on the lock and no reader sees B."""
    a, b, reader = three
    gate = CommitGate(pg_url, "orders_events", "first")
    follower = Follower(reader)
    follower.start()

    first = Background(lambda: a.append([event("first"), event("first", 2)]))
    until(lambda: waiting_on_lock(pg_url, "fes-a"))
    assert exclusive_lock_holders(pg_url, "orders_events") == 1
    second = Background(lambda: b.append([event("second")]))
    until(lambda: waiting_on_lock(pg_url, "fes-b"))

    # A has drawn its positions but not committed; B waits for the lock.
    for _ in range(5):
        assert reader.read_log() == []
        assert reader.last_position() == 0
        assert not reader.wait(0, 0.05)
    assert second.is_alive()
    assert follower.seen == []

    gate.open()
    a_positions, b_positions = first.outcome(), second.outcome()
    gate.close()
    assert a_positions[0] < a_positions[1] < b_positions[0]
    log = reader.read_log()
    assert [(e.stream, e.version) for e in log] == [("first", 1), ("first", 2), ("second", 1)]
    assert [e.position for e in log] == [*a_positions, *b_positions]
    until(lambda: len(follower.seen) == 3)
    assert follower.finish() == log


def test_a_writer_rolled_back_after_drawing_positions_leaves_a_gap_not_a_skip(
    pg_url: str,
    three: tuple[PostgresStore, PostgresStore, PostgresStore],
) -> None:
    """A's batch fails after its INSERT; B, queued behind it, commits; followers skip nothing."""
    a, b, reader = three
    gate = CommitGate(pg_url, "orders_events", "doomed", fail=True)
    follower = Follower(reader)
    follower.start()
    first = Background(lambda: a.append([event("doomed"), event("doomed", 2)]))
    until(lambda: waiting_on_lock(pg_url, "fes-a"))
    second = Background(lambda: b.append([event("second")]))
    until(lambda: waiting_on_lock(pg_url, "fes-b"))
    assert reader.read_log() == []
    gate.open()
    with pytest.raises(StoreError, match="the gate failed the commit"):
        first.outcome()
    gate.close()
    (b_position,) = second.outcome()
    (c_position,) = b.append([event("third")])

    until(lambda: len(follower.seen) == 2)
    seen = follower.finish()
    assert [(e.stream, e.position) for e in seen] == [("second", b_position), ("third", c_position)]
    # The rolled-back batch drew positions 1 and 2: a gap, which is allowed.
    assert b_position == 3
    assert a.stream_version("doomed") == 0


def test_without_the_lock_a_reader_would_skip_an_event(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    three: tuple[PostgresStore, PostgresStore, PostgresStore],
) -> None:
    """Control: with LOCK replaced by a no-op, sequence numbers commit out of order.

    It patches the stores' private statement: no public option turns the
    lock off, and none should, since the lock is what this control shows
    the ordering needs.
    """
    a, b, reader = three
    for store in (a, b):  # the lock of a batch's append, and of a single event's
        monkeypatch.setattr(store._q, "begin_locked", b"BEGIN")
        monkeypatch.setattr(
            store._q, "one_message", b"SELECT 1; " + store._q.one_locked
        )
    gate = CommitGate(pg_url, "orders_events", "first")

    first = Background(lambda: a.append([event("first")]))
    until(lambda: waiting_on_lock(pg_url, "fes-a"))
    (b_position,) = Background(lambda: b.append([event("second")])).outcome()

    # B committed a higher position while A's lower one is still open.
    visible = reader.read_log()
    assert [e.position for e in visible] == [b_position]
    gate.open()
    (a_position,) = first.outcome()
    gate.close()
    assert a_position < b_position
    # A follower that had moved on to B's position never sees A's event.
    assert reader.read_log(after=b_position) == []
    assert [e.position for e in reader.read_log()] == [a_position, b_position]


def test_follower_sees_every_event_once_when_commits_are_delayed(pg_url: str) -> None:
    """Four writers that pause randomly in COMMIT never make a follower skip an event."""
    databases = [PostgresDatabase(pg_url, pool_size=2) for _ in range(4)]
    try:
        stores = [d.store("orders") for d in databases]
        # A deferred trigger runs at COMMIT, while the writer holds the log's lock.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION fes_test_pause() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN PERFORM pg_sleep(random() * 0.002); RETURN NULL; END $$"
            )
            conn.execute(
                "CREATE CONSTRAINT TRIGGER fes_test_pause AFTER INSERT ON orders_events"
                " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fes_test_pause()"
            )
        reader_db = PostgresDatabase(pg_url)
        reader = reader_db.store("orders")
        follower = Follower(reader)
        follower.start()

        def write(index: int, store: PostgresStore) -> list[int]:
            positions: list[int] = []
            for n in range(40):
                stream = f"w{index}-{n}"
                positions += store.append([event(stream), event(stream, 2)])
            return positions

        writers = [Background(lambda i=i, s=s: write(i, s)) for i, s in enumerate(stores)]
        appended = sorted(p for w in writers for p in w.outcome())
        until(lambda: len(follower.seen) >= len(appended))
        seen = follower.finish()
        assert [e.position for e in seen] == appended
        assert reader.read_log() == seen
        reader_db.close()
    finally:
        for database in databases:
            database.close()
