"""The follower step: policies' effects recorded exactly once, with tracking, in batches."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fes
from fes.edge import Application, Follower, SyncRunner, lags
from fes.edge.stores import Database, open_database
from system import domain
from system.helpers import assert_exactly_once, causes, dump, own_log, send, serve


def ids(app: Application) -> set[str]:
    """``app:stream@version`` of every event in an application's log."""
    return {f"{app.name}:{r.id}" for r in app.log()}


def test_pipeline_records_one_effect_per_upstream_event(database: Database) -> None:
    """Each upstream event causes exactly one downstream event, tracked to the leader's end."""
    with SyncRunner(domain.fixed_pipeline, database) as runner:
        send(runner.app("source"), range(250))
        consumed = runner.run_until_quiet()
        assert consumed == 250
        assert_exactly_once(runner.app("sink"), runner.app("source"),
                            expected=ids(runner.app("source")))
        assert runner.app("sink").store.last_tracked("source") == 250
        assert runner.run_until_quiet() == 0


def test_cycle_and_two_leaders_drain_to_the_expected_counts(database: Database) -> None:
    """A cycle (left ⇄ right) runs to quiescence; tally, following both, counts every event."""
    counts = [0, 1, 2, 5, 8]
    with SyncRunner(domain.rally, database) as runner:
        serve(runner.app("left"), counts)
        runner.run_until_quiet()
        left, right, tally = (runner.app(n) for n in ("left", "right", "tally"))
        assert (len(left.log()), len(right.log()), len(tally.log())) == (
            domain.expected_rally_events(counts)
        )
        # the Do commands of one batch saw the pending events: totals run 1..N without repeats
        totals = [r.event.total for r in tally.stream("all")]
        assert totals == list(range(1, len(totals) + 1))
        assert_exactly_once(tally, left, expected=ids(left))
        assert_exactly_once(tally, right, expected=ids(right))
        assert all(lag.behind == 0 and not lag for lag in runner.lags().values())


def test_metadata_links_each_effect_to_its_cause_and_the_chain() -> None:
    """causation_id names the upstream event; correlation_id the event that started the chain."""
    with SyncRunner(domain.rally, "memory://") as runner:
        serve(runner.app("left"), [3])
        runner.run_until_quiet()
        hits = runner.app("right").stream("ball-0") + runner.app("left").stream("ball-0")
        served = "left:ball-0@1"
        assert {r.metadata.correlation_id for r in hits if isinstance(r.event, domain.Hit)} == {
            served
        }
        first = runner.app("right").stream("ball-0")[0]
        assert first.metadata.causation_id == served
        second = runner.app("left").stream("ball-0")[1]
        assert second.metadata.causation_id == "right:ball-0@1"


@settings(max_examples=25)
@given(
    counts=st.lists(st.integers(0, 6), min_size=1, max_size=6),
    batch_size=st.integers(1, 7),
)
def test_batch_size_changes_nothing_but_the_number_of_transactions(
    counts: list[int], batch_size: int
) -> None:
    """Any batch size gives the same stores as batches of one notification."""
    dumps = []
    for size in (1, batch_size):
        with open_database("memory://") as database:
            with SyncRunner(domain.rally, database, batch_size=size) as runner:
                serve(runner.app("left"), counts)
                runner.run_until_quiet()
            dumps.append(dump(database, domain.rally))
    assert dumps[0] == dumps[1]


@settings(max_examples=30, deadline=None)
@given(
    orders=st.lists(
        st.lists(st.sampled_from("ABC"), min_size=1, max_size=3), min_size=1, max_size=6
    ),
    batch_size=st.integers(2, 20),
)
def test_batch_size_changes_no_log_and_no_stream_downstream(
    orders: list[list[str]], batch_size: int
) -> None:
    """A follower's batch logs its events in the order it would one notification at a time.

    The stock follower's batches go back to bins they left; the notes
    follower records each order's reservations in the order it reads them.
    Every log, and so every notes stream, is the same for any batch size.
    (Batches used to log stream by stream, so the notes of an order came
    in another order with larger batches.)
    """
    logs = []
    for size in (1, batch_size):
        with SyncRunner(domain.reserving, "memory://", batch_size=size) as runner:
            for number, bins in enumerate(orders):
                runner.app("orders").execute(
                    domain.order_book, f"order-{number}", domain.place, tuple(bins)
                )
            runner.run_until_quiet()
            logs.append({
                name: [(r.stream, r.version, r.event) for r in runner.app(name).log()]
                for name in ("stock", "notes")
            })
    assert logs[0] == logs[1]


def test_a_batch_commits_several_notifications_in_one_transaction() -> None:
    """With batch_size 10, 25 notifications take 3 commits, so tracking moves 10, 20, 25."""
    seen: list[int] = []
    with SyncRunner(domain.fixed_pipeline, "memory://", batch_size=10) as runner:
        send(runner.app("source"), range(25))
        follower = runner.followers["sink"]
        while follower.step("source"):
            seen.append(runner.app("sink").store.last_tracked("source"))
    assert seen == [10, 20, 25]


def test_a_batch_lets_go_of_each_upstream_event_once_its_events_are_added() -> None:
    """Each upstream event and the intents made of it are let go as soon as the batch holds
    their events, not kept to the commit: the garbage collector counts and walks a batch's
    objects for as long as they live, and these were half of them."""
    alive: list[int] = []
    with SyncRunner(domain.pipeline, "memory://") as runner:
        sink = runner.app("sink")
        record = sink._record_untold

        def counted(*args: Any) -> Any:
            alive.append(sum(
                type(o) is fes.Recorded and o.stream.startswith("m-") for o in gc.get_objects()
            ))
            return record(*args)

        sink._record_untold = counted  # type: ignore[method-assign]
        send(runner.app("source"), range(200))
        assert runner.run_until_quiet() == 200
        assert_exactly_once(sink, runner.app("source"),
                            expected={f"source:m-{n}@1" for n in range(200)})
    # one commit, holding at most the last upstream event (still the loop's), not all 200
    assert alive in ([0], [1])


def test_restart_resumes_after_the_last_tracked_position(tmp_path: Path) -> None:
    """A new runner on the same file continues where the last one stopped: nothing twice."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with SyncRunner(domain.fixed_pipeline, url, batch_size=10) as runner:
        send(runner.app("source"), range(35))
        runner.followers["sink"].step("source")
        runner.followers["sink"].step("source")
    with SyncRunner(domain.fixed_pipeline, url, batch_size=10) as runner:
        assert runner.app("sink").store.last_tracked("source") == 20
        assert runner.run_until_quiet() == 15
        send(runner.app("source"), range(100, 110))
        assert runner.run_until_quiet() == 10
        assert_exactly_once(runner.app("sink"), runner.app("source"),
                            expected=ids(runner.app("source")))


def test_a_follower_ignores_fes_internal_events_of_its_leader() -> None:
    """A leader's skip records advance the follower's tracking but never reach its policy."""
    system = fes.System(
        [*domain.with_handler(lambda e, r, n: fes.Skip()).apps,
         fes.App("audit", aggregates=[domain.receipts], policy=domain.receive_anything)],
        pipes=[["source", "sink", "audit"]],
    )
    with SyncRunner(system, "memory://") as runner:
        send(runner.app("source"), range(3), poison=[1])
        runner.run_until_quiet()
        assert len(runner.app("sink").log()) == 2  # two receipts
        assert len(runner.app("sink").log(internal=True)) == 3  # and one skip record
        assert runner.app("audit").store.last_tracked("sink") == 3
        assert runner.app("audit").log() == []


def test_two_instances_of_one_follower_in_threads_never_duplicate(tmp_path: Path) -> None:
    """Two followers of the same application racing over one SQLite file: each effect once."""
    url = f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"
    with SyncRunner(domain.rally, url, batch_size=3) as writer:
        serve(writer.app("left"), [6] * 40)
    runners = [SyncRunner(domain.rally, url, batch_size=3) for _ in range(2)]
    start = threading.Barrier(2)

    def drain(runner: SyncRunner) -> None:
        start.wait()
        runner.run_until_quiet()

    threads = [threading.Thread(target=drain, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        runners[0].run_until_quiet()
        left, right, tally = (runners[0].app(n) for n in ("left", "right", "tally"))
        assert (len(left.log()), len(right.log()), len(tally.log())) == (
            domain.expected_rally_events([6] * 40)
        )
        assert_exactly_once(tally, left, expected=ids(left))
        assert_exactly_once(tally, right, expected=ids(right))
        assert max(causes(right).values()) == 1
        conflicts = sum(f.conflicts for r in runners for f in r.followers.values())
        assert conflicts > 0, "the two instances never met: the test proved nothing"
    finally:
        for runner in runners:
            runner.close()


def test_lags_reports_tracked_and_last_positions() -> None:
    """lags() gives (tracked, leader's last) for every pipe of the system."""
    with (
        open_database("memory://") as database,
        SyncRunner(domain.fixed_pipeline, database) as runner,
    ):
        send(runner.app("source"), range(5))
        assert lags(database, domain.fixed_pipeline) == {("source", "sink"): (0, 5)}
        runner.run_until_quiet()
        assert lags(database, domain.fixed_pipeline) == {("source", "sink"): (5, 5)}


def test_a_follower_refuses_an_app_without_policy_and_a_bad_batch_size() -> None:
    """Follower construction names what is wrong."""
    with open_database("memory://") as database:
        source = Application(domain.source, store=database)
        sink = Application(domain.sink, store=database)
        with pytest.raises(fes.errors.DefinitionError, match="no policy"):
            Follower(source, {"sink": sink})
        with pytest.raises(fes.errors.ConfigurationError, match="batch_size"):
            Follower(sink, {"source": source}, batch_size=0)


def test_a_batch_reads_the_versions_of_its_new_streams_in_one_query(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch creating 40 streams asks the store once which exist, and reads none of them.

    (Once the versions were found all new batch after batch, it asks nothing:
    see test_assumed_streams.py.  Here the follower has just found one that
    was not: message 40's receipt stream had events.)
    """
    with SyncRunner(domain.fixed_pipeline, "memory://", batch_size=50) as runner:
        _with_one_stream_not_new(runner)
        send(runner.app("source"), range(40))
        store = runner.app("sink").store
        calls: dict[str, int] = {"read_stream": 0, "read_payloads": 0, "stream_versions": 0}
        for name in calls:
            original = getattr(store, name)

            def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
                calls[_name] += 1
                return _original(*args)

            monkeypatch.setattr(store, name, counted)
        assert runner.run_until_quiet() == 40
        assert calls == {"read_stream": 0, "read_payloads": 0, "stream_versions": 1}
        assert len(own_log(runner.app("sink"))) == 2 + 40


def test_a_stream_created_after_the_versions_were_read_conflicts_and_is_redone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another writer creating a stream the batch thought new makes the batch start again."""
    with SyncRunner(domain.fixed_pipeline, "memory://") as runner:
        _with_one_stream_not_new(runner)
        send(runner.app("source"), range(3))
        sink = runner.app("sink")
        original = sink.store.stream_versions
        raced: list[bool] = []

        def racing(streams: Any) -> dict[str, int]:
            versions = original(streams)
            if not raced:  # the rival commits between the read and this batch's append
                raced.append(True)
                sink.execute(domain.receipts, "r-m-1", lambda state: [domain.Received(-1)])
            return versions

        monkeypatch.setattr(sink.store, "stream_versions", racing)
        runner.run_until_quiet()
        follower = runner.followers["sink"]
        assert follower.conflicts == 1
        assert [r.event.number for r in sink.stream("r-m-1")] == [-1, 1]
        assert [r.event.number for r in sink.stream("r-m-0")] == [0]
        assert sink.store.last_tracked("source") == 1 + 3


def _with_one_stream_not_new(runner: SyncRunner) -> None:
    """Make the sink's follower read the versions of its streams, as it does after finding
    one of the streams it took for new with events: message 40's receipt stream here."""
    sink = runner.app("sink")
    sink.execute(domain.receipts, "r-m-40", lambda state: [domain.Received(-40)])
    send(runner.app("source"), [40])
    runner.run_until_quiet()
    follower = runner.followers["sink"]
    assert (follower.reread, follower.conflicts) == (1, 0)
    assert [r.event.number for r in sink.stream("r-m-40")] == [-40, 40]


def test_an_event_whose_second_intent_fails_takes_back_its_first() -> None:
    """Every intent of a failing event is taken back; earlier events' effects stay, once each."""

    def two_intents(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
        number = recorded.event.number
        effects = [
            fes.Emit(domain.receipts, "shared", [domain.Received(number)]),
            fes.Emit(domain.receipts, f"own-{number}", [domain.Received(number)]),
        ]
        if number == 2:  # its second intent cannot be decided
            effects.append(fes.Do(domain.receipts, "shared", _refuse))
        return effects

    with SyncRunner(domain.with_handler(fes.stop_on_error, two_intents), "memory://",
                    batch_size=10) as runner:
        send(runner.app("source"), range(5))
        with pytest.raises(fes.errors.PolicyError, match="Rejected: no more"):
            runner.run_until_quiet()
        sink = runner.app("sink")
        assert [r.event.number for r in sink.stream("shared")] == [0, 1]
        assert sink.stream("own-2") == []
        assert sorted(r.stream for r in own_log(sink)) == ["own-0", "own-1", "shared", "shared"]
        assert sink.store.last_tracked("source") == 2


def test_a_failing_event_takes_back_two_intents_on_one_new_stream() -> None:
    """Two intents adding to one new stream, then a failing third: both are taken back (the
    first made the stream's slot, the second journaled an entry of its own), and the events
    of the notifications around it stay."""

    def twice(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
        number = recorded.event.number
        stream = f"twice-{number}"
        effects = [
            fes.Emit(domain.receipts, stream, (domain.Received(number),)),
            fes.Emit(domain.receipts, stream, (domain.Received(-number),)),
        ]
        if number == 7:  # its third intent cannot be decided
            effects.append(fes.Do(domain.receipts, stream, _refuse))
        return effects

    def skip(error: BaseException, recorded: fes.Recorded[Any], attempt: int) -> fes.Directive:
        return fes.Skip()

    with SyncRunner(domain.with_handler(skip, twice), "memory://", batch_size=10) as runner:
        send(runner.app("source"), range(40))
        assert runner.run_until_quiet() == 40
        sink = runner.app("sink")
        assert runner.followers["sink"].reread == 0  # no batch was made again
        for number in range(40):
            held = [r.event.number for r in sink.stream(f"twice-{number}")]
            assert held == ([] if number == 7 else [number, -number])
        assert sink.store.last_tracked("source") == 40


def _refuse(state: int) -> list[domain.Received]:
    raise fes.Rejected("no more")
