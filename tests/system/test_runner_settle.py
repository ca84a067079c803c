"""A ThreadedRunner's thread lets a write in progress end before it reads the log.

Over SQLite the writers of one process queue on the database's writer lock;
a view, or a follower whose leader lives in another database, about to read
a log while that lock is held (the leader's next commit, in a burst) waits
for the commit, so that it reads it in the same batch.  Waiting so holds no
batch: stop() does not wait for it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from fes.edge import Application, ThreadedRunner
from fes.edge.stores import open_database
from fes.edge.stores._sqlite._connections import Connections
from system import domain
from system.helpers import assert_exactly_once, own_log, send


def _connections(url: str) -> Connections:
    database = open_database(url)
    assert isinstance(database, Connections)
    return database


def test_settle_returns_at_once_when_nothing_is_written(sqlite_url: str) -> None:
    database = _connections(sqlite_url)
    try:
        assert not database.writing()
        began = time.monotonic()
        database.settle(10.0)
        assert time.monotonic() - began < 1.0
        assert not database.writing()  # the lock was given back
    finally:
        database.close()


@contextlib.contextmanager
def _held_writer(database: Connections) -> Iterator[threading.Event]:
    """Another thread holds the database's writer lock inside; set the event to end its write."""
    held, release = threading.Event(), threading.Event()

    def write() -> None:
        with database.writer:
            held.set()
            release.wait(10)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert held.wait(10)
        yield release
    finally:
        release.set()
        writer.join(10)


def test_settle_waits_for_the_write_in_progress(sqlite_url: str) -> None:
    database = _connections(sqlite_url)
    try:
        with _held_writer(database) as release:
            assert database.writing()
            threading.Timer(0.2, release.set).start()
            began = time.monotonic()
            database.settle(10.0)
            assert 0.1 < time.monotonic() - began < 5.0
        assert not database.writing()
    finally:
        database.close()


def test_settle_gives_up_after_its_timeout_and_takes_nothing(sqlite_url: str) -> None:
    database = _connections(sqlite_url)
    try:
        with _held_writer(database):
            began = time.monotonic()
            database.settle(0.05)
            assert time.monotonic() - began < 5.0
            assert database.writing()  # still the writer's
    finally:
        database.close()


def test_stop_does_not_wait_for_a_thread_settling(sqlite_url: str) -> None:
    """A thread waiting for a write in progress holds no batch, and steps no more once stopped.

    The sink lives in a database of its own: one sharing its leader's
    commits holding the writer lock instead (see test_runner_late.py).
    """
    database = _connections(sqlite_url)
    settling = threading.Event()
    settle = database.settle

    def watched(timeout: float) -> None:
        settling.set()
        settle(timeout)

    database.settle = watched  # type: ignore[method-assign]
    places = {"source": database, "sink": sqlite_url.replace("fes.db", "sink.db")}
    runner = ThreadedRunner(domain.pipeline, places, poll_interval=10.0).start()
    other = open_database(sqlite_url)  # another process's connections, as it were
    try:
        send(runner.app("source"), range(3))
        assert runner.wait_until_quiet(10)
        # a write of this process in progress for as long as the test likes; an
        # append from elsewhere wakes the sink's thread, which finds the write
        # in progress and waits for it, for up to 10 s
        with database.writer:
            settling.clear()
            send(Application(domain.source, store=other), [3])
            assert settling.wait(5)
            began = time.monotonic()
            runner.stop()
            assert time.monotonic() - began < 1.0
        time.sleep(0.3)
        assert len(own_log(runner.app("sink"))) == 3  # it did not step after all
    finally:
        runner.close()
        other.close()
        database.close()
    assert not runner.running


def test_a_burst_is_processed_exactly_once(sqlite_url: str) -> None:
    """The leader commits one message at a time while the sink follows: each once."""
    with ThreadedRunner(domain.pipeline, sqlite_url) as runner:
        source = runner.app("source")
        for number in range(200):
            send(source, [number])
        assert runner.wait_until_quiet(30)
        assert not runner.errors
        assert_exactly_once(
            runner.app("sink"), source, expected={f"source:m-{n}@1" for n in range(200)}
        )


def test_other_databases_have_nothing_to_settle() -> None:
    """In memory there is no writer lock to wait for: the runner steps as it did."""
    with ThreadedRunner(domain.pipeline, "memory://") as runner:
        send(runner.app("source"), range(20))
        assert runner.wait_until_quiet(10)
        assert len(own_log(runner.app("sink"))) == 20
