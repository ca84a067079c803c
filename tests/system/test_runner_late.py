"""A follower whose leader shares its SQLite database commits holding the writer lock.

It reads and runs its policy first, then queues for the lock its writers of
this process share; what was committed while it queued (the leader's next
commits, in a burst) joins the batch before its one commit.  These tests
arrange the queueing deterministically: the test's thread holds the lock
(``Connections.hold``, so that its own appends take none) while the
follower's thread waits for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from fes.edge import Application, Follower, ThreadedRunner
from fes.edge.stores import open_database
from fes.edge.stores._sqlite._connections import Connections
from system import domain
from system.helpers import (
    assert_exactly_once,
    own_log,
    queued_for_writer,
    send,
    step_while_queued,
)


@pytest.fixture
def database(sqlite_url: str) -> Iterator[Connections]:
    opened = open_database(sqlite_url)
    assert isinstance(opened, Connections)
    try:
        yield opened
    finally:
        opened.close()


def _apps(database: Connections, sink: Any = domain.sink) -> tuple[Application, Application]:
    return Application(domain.source, store=database), Application(sink, store=database)


def _burst(source: Application, numbers: range, poison: tuple[int, ...] = ()) -> None:
    for number in numbers:  # one commit each, as one command at a time
        send(source, [number], poison=[number] if number in poison else [])


def test_what_is_committed_while_it_queues_joins_its_batch(
    database: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, sink = _apps(database)
    follower = Follower(sink, {"source": source})
    send(source, [0])
    # it read message 0; ten commits of one message each land while it queues
    consumed = step_while_queued(
        database, monkeypatch, follower, lambda: _burst(source, range(1, 11))
    )
    assert consumed == 11  # one batch, so one commit, not eleven
    assert sink.store.last_tracked("source") == source.store.last_position() == 11
    assert_exactly_once(sink, source, expected={f"source:m-{n}@1" for n in range(11)})
    assert follower.step("source") == 0


def test_without_the_lock_the_batch_is_what_was_read(
    database: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contrast: a follower given no lock to hold commits what it read, then the rest."""
    source, sink = _apps(database)
    follower = Follower(sink, {"source": source})
    follower.holds.clear()
    send(source, [0])
    assert follower.step("source") == 1
    _burst(source, range(1, 11))
    assert follower.step("source") == 10


def test_late_notifications_stop_before_one_that_fails(
    database: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failing one is left for the next step, which reports it as any step would."""
    source, sink = _apps(database)
    follower = Follower(sink, {"source": source})
    send(source, [0])
    consumed = step_while_queued(
        database, monkeypatch, follower, lambda: _burst(source, range(1, 6), poison=(3,))
    )
    assert consumed == 3 and follower.error is None  # messages 0, 1 and 2
    assert sink.store.last_tracked("source") == 3
    assert follower.step("source") == 0
    assert follower.error is not None and follower.error.position == 4  # message 3
    assert_exactly_once(sink, source, expected={f"source:m-{n}@1" for n in range(3)})


def test_late_notifications_keep_the_batch_size(
    database: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, sink = _apps(database)
    follower = Follower(sink, {"source": source}, batch_size=4)
    send(source, [0])
    consumed = step_while_queued(
        database, monkeypatch, follower, lambda: _burst(source, range(1, 11))
    )
    assert consumed == 4
    assert sink.store.last_tracked("source") == 4


def test_late_notifications_keep_the_batch_bytes(
    database: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, sink = _apps(database)
    send(source, [0])
    size = len(source.store.read_log()[0].payload)
    follower = Follower(sink, {"source": source}, batch_bytes=3 * size + size // 2)
    consumed = step_while_queued(
        database, monkeypatch, follower, lambda: _burst(source, range(1, 11))
    )
    assert consumed == 3
    assert sum(len(r.payload) for r in source.store.read_log(limit=consumed)) <= 3.5 * size


def test_a_batch_full_when_read_takes_nothing_late(
    database: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, sink = _apps(database)
    """A batch read full commits as a step given no lock does: there is no room for more."""
    follower = Follower(sink, {"source": source}, batch_size=2)
    send(source, [0, 1, 2])
    asked = queued_for_writer(database, monkeypatch)
    assert follower.step("source") == 2
    assert not asked.is_set()


def test_a_rival_that_commits_while_it_queues_leaves_each_event_once(
    database: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exactly-once rests on the tracking check inside the commit, lock or no lock."""
    source, sink = _apps(database)
    follower = Follower(sink, {"source": source})
    rival = Follower(Application(domain.sink, store=database), {"source": source})
    send(source, [0, 1])

    def rival_first() -> None:
        assert rival.step("source") == 2  # the rival processes messages 0 and 1 first
        _burst(source, range(2, 5))

    consumed = step_while_queued(database, monkeypatch, follower, rival_first)
    # its batch (messages 0 to 4) conflicts; it reads again from the rival's position
    assert follower.conflicts == 1
    assert consumed == 3  # messages 2 to 4
    assert_exactly_once(sink, source, expected={f"source:m-{n}@1" for n in range(5)})


def test_a_lone_event_is_processed_at_once(sqlite_url: str) -> None:
    """Nothing waits for a commit that may never come: one event is followed promptly."""
    with ThreadedRunner(domain.fixed_pipeline, sqlite_url, poll_interval=30.0) as runner:
        source, sink = runner.app("source"), runner.app("sink")
        send(source, [0])
        assert runner.wait_until_quiet(10)
        for number in range(1, 4):
            began = time.monotonic()
            send(source, [number])
            while sink.store.last_tracked("source") < number + 1:
                assert time.monotonic() - began < 5.0, "the lone event waited"
                time.sleep(0.001)
        assert len(own_log(sink)) == 4


def test_a_burst_through_a_threaded_runner_is_processed_exactly_once(sqlite_url: str) -> None:
    with ThreadedRunner(domain.fixed_pipeline, sqlite_url) as runner:
        source = runner.app("source")
        _burst(source, range(300))
        assert runner.wait_until_quiet(30)
        assert not runner.errors
        assert_exactly_once(
            runner.app("sink"), source, expected={f"source:m-{n}@1" for n in range(300)}
        )
