"""What a follower knows of its own tracked position, and when it says it caught up.

A follower that committed a batch knows where the store's tracked position
is: its next step reads the leader's log from there without asking the
store, and an instance that moved the position meanwhile makes the batch's
commit conflict, after which the step reads the position again.  A step
that read fewer notifications than ``batch_size`` and consumed them all
reached the log's end as it was then: :meth:`Follower.caught_up` says so,
and a threaded runner then waits for the leader's next commit instead of
stepping again to find nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fes.edge import Application, Follower, ThreadedRunner
from fes.edge.stores import Database, open_database
from system import domain
from system.helpers import assert_exactly_once, send


@pytest.fixture
def database() -> Iterator[Database]:
    with open_database("memory://") as opened:
        yield opened


@pytest.fixture
def apps(database: Database) -> tuple[Application, Application]:
    """The pipeline's source and sink, on one database."""
    return Application(domain.source, store=database), Application(domain.sink, store=database)


def ids(count: int) -> set[str]:
    """The causation ids of the first ``count`` messages ``send`` sent."""
    return {f"source:m-{n}@1" for n in range(count)}


def counting(store: Any, name: str) -> list[int]:
    """Count the calls of ``store.name`` (on this instance only)."""
    calls: list[int] = []
    method: Callable[..., Any] = getattr(store, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return method(*args, **kwargs)

    setattr(store, name, counted)
    return calls


def test_a_follower_asks_for_its_position_once_while_its_batches_commit(
    apps: tuple[Application, Application],
) -> None:
    source, sink = apps
    follower = Follower(sink, {"source": source})
    asked = counting(sink.store, "last_tracked")
    send(source, range(3))
    assert follower.step("source") == 3
    assert len(asked) == 1  # new: it asks once
    send(source, range(3, 5))
    assert follower.step("source") == 2
    assert follower.step("source") == 0
    assert len(asked) == 1  # it committed both batches: it knows where they left it
    assert follower.positions["source"] == sink.store.last_tracked("source") == 5
    assert_exactly_once(sink, source, expected=ids(5))


def test_an_instance_that_moved_the_position_is_found_at_the_commit(
    database: Database, apps: tuple[Application, Application]
) -> None:
    """The position this follower knew is stale: its batch conflicts, and is read again."""
    source, sink = apps
    one = Follower(sink, {"source": source})
    other = Follower(Application(domain.sink, store=database), {"source": source})
    send(source, range(2))
    assert one.step("source") == 2  # one knows the position: 2
    send(source, range(2, 5))
    assert other.step("source") == 3  # the other moves it to 5
    send(source, range(5, 7))
    assert one.step("source") == 2  # reads from 2, conflicts, reads the position: 5
    assert one.conflicts == 1
    assert one.positions["source"] == sink.store.last_tracked("source") == 7
    assert_exactly_once(sink, source, expected=ids(7))


def test_a_short_read_consumed_whole_is_caught_up_and_a_full_one_is_not(
    apps: tuple[Application, Application],
) -> None:
    source, sink = apps
    follower = Follower(sink, {"source": source}, batch_size=3)
    assert follower.caught_up("source") is False  # not stepped yet
    send(source, range(5))
    assert follower.step("source") == 3
    assert follower.caught_up("source") is False  # a full batch: there may be more
    assert follower.step("source") == 2
    assert follower.caught_up("source") is True
    assert follower.step("source") == 0
    assert follower.caught_up("source") is True


def test_a_stopped_follower_asks_for_its_position_again_when_resumed(
    database: Database, apps: tuple[Application, Application]
) -> None:
    """After a stop, the position may have moved (a fixed instance took over): it asks."""
    source, sink = apps
    follower = Follower(sink, {"source": source})
    send(source, range(4), poison=[2])
    assert follower.step("source") == 2  # the two before the poisoned one
    assert follower.error is not None
    assert follower.caught_up("source") is False
    fixed = Application(domain.fixed_pipeline.apps[1], store=database)
    assert Follower(fixed, {"source": source}).step("source") == 2  # past the poison
    follower.resume()
    # read from where the fixed one left it: the poisoned message is not read again
    assert follower.step("source") == 0
    assert follower.error is None
    assert follower.caught_up("source") is True
    assert_exactly_once(sink, source, expected=ids(4))


@pytest.mark.postgres
def test_a_threaded_follower_on_postgres_reads_once_per_commit_and_waits_on_notify(
    pg_url: str,
) -> None:
    """Caught up, it waits for the leader's next notification: no empty read after each
    batch, no look at the log's last position before and after each wait."""
    with ThreadedRunner(domain.pipeline, pg_url, poll_interval=60) as runner:
        source, sink = runner.app("source"), runner.app("sink")
        send(source, range(2))
        assert runner.wait_until_quiet(timeout=30)
        leader = runner.applications["source"].store
        reads = counting(leader, "read_log")
        looks = counting(leader, "last_position")
        for number in range(2, 7):
            send(source, [number])
            deadline = time.monotonic() + 10  # a poll would take 60 s
            while sink.store.last_tracked("source") < number + 1:
                assert time.monotonic() < deadline, "the follower was not woken"
                time.sleep(0.01)
        time.sleep(0.2)  # nothing more to read: it stays asleep
        # one read per commit (a notification of the LISTEN may add one, at most)
        assert 5 <= len(reads) <= 6
        assert looks == []
        assert_exactly_once(sink, source, expected=ids(7))
