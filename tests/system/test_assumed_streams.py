"""A follower takes the streams its policy emits to for new, without reading them.

Most policies emit to new streams (a receipt per message here), so the read
of their versions before each batch finds them all empty.  A follower that
found so for ``_ASSUME_AFTER`` batches in a row (and a new follower) skips
that read: its commit appends version 1 to each stream, which a stream with
events refuses, and the batch is then made again with every stream read.
These tests check the read is skipped, that a stream with events is never
written over or decided on as if new, on every kind of store, and how the
follower goes back to skipping the read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen

import fes
from fes.edge import Application, Follower, SyncRunner
from fes.edge._follower import _ASSUME_AFTER
from fes.edge.stores import Database, open_database
from fes.edge.stores._sqlite._connections import Connections
from system import domain
from system.helpers import assert_exactly_once, send, step_while_queued


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"
    pg_url: str = request.getfixturevalue("pg_url")
    return pg_url


@pytest.fixture
def database(url: str) -> Iterator[Database]:
    with open_database(url) as opened:
        yield opened


def counting(store: Any, *names: str) -> dict[str, int]:
    """Count the calls of each of ``store``'s methods ``names`` (on this instance only)."""
    calls = dict.fromkeys(names, 0)
    for name in names:
        method: Callable[..., Any] = getattr(store, name)

        def counted(*args: Any, _name: str = name, _method: Any = method, **kw: Any) -> Any:
            calls[_name] += 1
            return _method(*args, **kw)

        setattr(store, name, counted)
    return calls


def pipeline(database: Database, batch_size: int) -> tuple[Application, Application, Follower]:
    """The source, the sink and the sink's follower, in one database."""
    source = Application(domain.source, store=database)
    sink = Application(domain.sink, store=database)
    return source, sink, Follower(sink, {"source": source}, batch_size=batch_size)


def numbers(app: Application, stream: str) -> list[int]:
    return [r.event.number for r in app.stream(stream)]


def test_a_follower_emitting_to_new_streams_reads_none_of_them(database: Database) -> None:
    source, sink, follower = pipeline(database, batch_size=50)
    calls = counting(sink.store, "stream_versions", "read_stream", "read_payloads")
    send(source, range(40))
    assert follower.step("source") == 40
    assert calls == {"stream_versions": 0, "read_stream": 0, "read_payloads": 0}
    assert (follower.reread, follower.conflicts) == (0, 0)
    assert_exactly_once(sink, source, expected={f"source:m-{n}@1" for n in range(40)})


def test_a_stream_taken_for_new_that_has_events_is_read_and_appended_to(
    database: Database,
) -> None:
    """The batch is made again reading its streams: nothing is lost, written over or doubled."""
    source, sink, follower = pipeline(database, batch_size=50)
    sink.execute(domain.receipts, "r-m-3", lambda state: [domain.Received(-3)])
    calls = counting(sink.store, "stream_versions")
    send(source, range(5))
    assert follower.step("source") == 5
    assert calls["stream_versions"] == 1  # the second making of the batch, and only it
    assert (follower.reread, follower.conflicts) == (1, 0)
    assert numbers(sink, "r-m-3") == [-3, 3]
    assert all(numbers(sink, f"r-m-{n}") == [n] for n in (0, 1, 2, 4))
    assert sink.store.last_tracked("source") == 5


def test_after_a_stream_with_events_it_reads_until_its_streams_are_new_again(
    database: Database,
) -> None:
    source, sink, follower = pipeline(database, batch_size=1)
    sink.execute(domain.receipts, "r-m-0", lambda state: [domain.Received(-1)])
    calls = counting(sink.store, "stream_versions")
    send(source, range(3 * _ASSUME_AFTER))
    reads = []
    while follower.step("source"):
        reads.append(calls["stream_versions"])
    # message 0: taken for new, had events, read; the next _ASSUME_AFTER batches read
    # their stream and find it new; the rest read nothing
    assert reads == [1, *range(2, _ASSUME_AFTER + 2)] + [_ASSUME_AFTER + 1] * (
        2 * _ASSUME_AFTER - 1
    )
    assert follower.reread == 1
    assert numbers(sink, "r-m-0") == [-1, 0]


def test_a_stream_a_do_decides_on_is_read_even_when_an_emit_names_it() -> None:
    """A command decides on its stream's state: the state of a stream taken for new is a
    guess, and a decision to append nothing would not be checked by the commit."""

    def note_then_count(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
        return [
            fes.Emit(domain.receipts, "shared", ()),  # names the stream, appends nothing
            fes.Do(domain.receipts, "shared", count_if_started),
        ]

    system = domain.with_handler(fes.stop_on_error, note_then_count)
    with SyncRunner(system, "memory://") as runner:
        sink = runner.app("sink")
        sink.execute(domain.receipts, "shared", lambda state: [domain.Received(-1)])
        send(runner.app("source"), range(2))
        runner.run_until_quiet()
        # on the initial state (0) the command appends nothing: it saw 1, then 2
        assert numbers(sink, "shared") == [-1, 1, 2]
        assert runner.followers["sink"].reread == 0  # read at once, not after a try


def count_if_started(state: int) -> list[domain.Received]:
    return [domain.Received(state)] if state else []


def test_a_do_in_the_late_notifications_on_a_stream_taken_for_new_waits_for_the_next_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower committing under SQLite's writer lock takes in what was committed while it
    queued; a command there on a stream its batch took for new is left to the next step,
    which reads the stream."""

    def policy(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
        if recorded.event.number == 0:
            return [fes.Emit(domain.receipts, "shared", ())]
        return [fes.Do(domain.receipts, "shared", count_if_started)]

    sink_app = fes.App("sink", aggregates=[domain.receipts], policy=policy,
                       on_error=fes.stop_on_error)
    database = open_database(f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL")
    assert isinstance(database, Connections)
    try:
        source = Application(domain.source, store=database)
        sink = Application(sink_app, store=database)
        follower = Follower(sink, {"source": source})
        assert "source" in follower.holds
        sink.execute(domain.receipts, "shared", lambda state: [domain.Received(-1)])
        send(source, [0])
        # message 1 is committed while the follower, having read message 0, queues
        consumed = step_while_queued(database, monkeypatch, follower, lambda: send(source, [1]))
        assert consumed == 1  # message 0 only: message 1's command waits
        assert follower.step("source") == 1
        assert follower.error is None
        assert numbers(sink, "shared") == [-1, 1]
    finally:
        database.close()


@frozen
class Opened:
    """A tally is opened: its count starts at 0."""

    by: str


@frozen
class Counted:
    """One more on an opened tally; refused on one never opened."""

    number: int


def _tallied(state: int | None, event: Opened | Counted) -> int:
    if isinstance(event, Opened):
        return 0
    if state is None:
        raise ValueError(f"counted {event.number} on a tally never opened")
    return state + 1


tallies: fes.Aggregate[int | None] = fes.Aggregate(
    "tally", None, fes.projector(_tallied), events=[Opened, Counted]
)


def count_on(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """Count each message on its tally, which must have been opened."""
    return [fes.Emit(tallies, f"t-{recorded.stream}", [Counted(recorded.event.number)])]


def tally_system() -> fes.System:
    counter = fes.App("sink", aggregates=[tallies], policy=count_on, on_error=fes.stop_on_error)
    return fes.System([domain.source, counter], pipes=[["source", "sink"]])


def test_events_that_apply_only_to_the_stream_as_stored_are_appended(database: Database) -> None:
    """Folded on the initial state, Counted is refused: the stream had events, so the
    batch is made again with them read, and nothing fails."""
    with SyncRunner(tally_system(), database) as runner:
        sink = runner.app("sink")
        sink.execute(tallies, "t-m-1", lambda state: [Opened("ann")])
        send(runner.app("source"), range(1, 2))
        runner.run_until_quiet()
        follower = runner.followers["sink"]
        assert (follower.reread, follower.failures, follower.error) == (1, [], None)
        assert [r.event for r in sink.stream("t-m-1")] == [Opened("ann"), Counted(1)]


def test_a_policy_error_on_a_new_stream_taken_for_new_is_reported_once(
    database: Database,
) -> None:
    """The stream the refused events go to is new: the failure is the policy's own,
    found as it would be with the stream read, and the batch is not made again."""
    with SyncRunner(tally_system(), database) as runner:
        sink = runner.app("sink")
        calls = counting(sink.store, "stream_versions")
        send(runner.app("source"), range(1, 2))
        with pytest.raises(fes.errors.FollowerStopped, match="never opened"):
            runner.run_until_quiet()
        follower = runner.followers["sink"]
        assert follower.reread == 0
        assert len(follower.failures) == 1
        assert calls["stream_versions"] == 1  # the look that found the stream new
        assert sink.stream("t-m-1") == []
