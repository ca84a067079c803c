"""The conformance suite every event store passes.

How to use it: subclass :class:`StoreConformance` in a ``test_*.py`` file
and override one fixture, ``database``, that yields a fresh, empty
:class:`~fes.edge.stores.base.Database` for each test::

    class TestSQLite(StoreConformance):
        @pytest.fixture
        def database(self, tmp_path: Path) -> Iterator[Database]:
            db = open_database(f"sqlite:///{tmp_path}/conformance.db")
            yield db
            db.close()

Some tests close the database themselves; ``close()`` must be harmless the
second time.  Every test uses only the ``Database`` and ``Store`` protocols.

The state machine in ``test_state_machine.py`` checks stores against the
memory store.  It takes its databases from :data:`MACHINE_DATABASES`: add a
``pytest.param(factory, id=..., marks=...)`` whose ``factory(request)``
returns a database (``request`` is the test's pytest ``FixtureRequest``, so
a factory may ask for fixtures such as ``pg_url`` with
``request.getfixturevalue``).  The test opens it once, gives every run of
the machine an application of its own, and closes it at the end.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fes.edge.stores import open_database
from fes.edge.stores.base import (
    Database,
    NewEvent,
    Resealed,
    Store,
    StoredEvent,
    StoredSnapshot,
    Tracking,
)
from fes.edge.stores.checks import MAX_STREAM_ID
from fes.errors import ConcurrencyError, DuplicateTracking, FesError, StoreError

__all__ = ["MACHINE_DATABASES", "StoreConformance", "new"]


def new(
    stream: str,
    version: int,
    topic: str = "Happened",
    payload: bytes | None = None,
    timestamp: int | None = None,
    meta: bytes | None = None,
) -> NewEvent:
    """A new event whose payload and timestamp tell where it came from."""
    return NewEvent(
        stream=stream,
        version=version,
        topic=topic,
        payload=f"{stream}/{version}".encode() if payload is None else payload,
        timestamp=1_700_000_000_000_000 + version if timestamp is None else timestamp,
        meta=meta,
    )


def stored(event: NewEvent, position: int) -> StoredEvent:
    """What ``event`` should read back as, at ``position``."""
    return StoredEvent(
        position=position,
        stream=event.stream,
        version=event.version,
        topic=event.topic,
        payload=event.payload,
        timestamp=event.timestamp,
        meta=event.meta,
    )


def snapshot(stream: str, version: int, payload: bytes | None = None) -> StoredSnapshot:
    """A snapshot whose payload tells where it came from."""
    return StoredSnapshot(
        stream=stream,
        version=version,
        fingerprint="fp-1",
        payload=f"state of {stream} at {version}".encode() if payload is None else payload,
        timestamp=1_700_000_000_000_000 + version,
    )


def contents(store: Store) -> tuple[list[StoredEvent], dict[str, int]]:
    """Everything an append can change: the log and the tracking positions."""
    return store.read_log(), store.tracked()


def _sqlite(request: pytest.FixtureRequest) -> Database:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return open_database(f"sqlite:///{tmp_path}/machine.db?synchronous=OFF")


def _postgres(request: pytest.FixtureRequest) -> Database:
    url: str = request.getfixturevalue("pg_url")
    return open_database(url)


#: The databases the state machine checks against the memory model.
MACHINE_DATABASES: list[Any] = [
    pytest.param(_sqlite, id="sqlite"),
    pytest.param(_postgres, id="postgres", marks=pytest.mark.postgres),
]

DatabaseFactory = Callable[[pytest.FixtureRequest], Database]


class StoreConformance:
    """Every operation and promise of the store protocol, for one store."""

    @pytest.fixture
    def database(self) -> Iterator[Database]:
        """A fresh, empty database; each store's test class overrides this."""
        raise NotImplementedError("override the database fixture")
        yield  # pragma: no cover

    @pytest.fixture
    def store(self, database: Database) -> Store:
        """The store of an application called ``shop``."""
        return database.store("shop")

    # The protocol --------------------------------------------------------------------

    def test_database_and_store_satisfy_the_protocols(
        self, database: Database, store: Store
    ) -> None:
        """A database is a Database, its stores are Stores that know their app."""
        assert isinstance(database, Database)
        assert isinstance(store, Store)
        assert store.app == "shop"
        assert isinstance(database.url, str) and "://" in database.url

    def test_store_of_the_same_app_shares_the_data(self, database: Database) -> None:
        """Two calls to store(app) give views of the same tables."""
        database.store("shop").append([new("a", 1)])
        assert database.store("shop").stream_version("a") == 1

    def test_empty_store_reads_empty(self, store: Store) -> None:
        """A new store has no events, no positions, no snapshots, tracking or views."""
        assert store.read_log() == []
        assert store.read_stream("a") == []
        assert store.stream_version("a") == 0
        assert store.last_position() == 0
        assert store.load_snapshot("a") is None
        assert store.last_tracked("leader") == 0
        assert store.tracked() == {}
        assert store.load_view("v") is None

    # Appending and reading --------------------------------------------------------

    def test_append_then_read_back_every_field(self, store: Store) -> None:
        """Events read back exactly as appended, with the positions append returned."""
        events = [
            new("a", 1, "Opened", b"\x00\x01binary\xff", 1, b'{"c":"x"}'),
            new("a", 2, "Deposited", b"{}", 2, None),
        ]
        positions = store.append(events)
        assert len(positions) == 2 and 0 < positions[0] < positions[1]
        expected = [stored(e, p) for e, p in zip(events, positions, strict=True)]
        assert store.read_stream("a") == expected
        assert store.read_log() == expected
        assert store.stream_version("a") == 2
        assert store.last_position() == positions[-1]

    def test_append_nothing_stores_nothing(self, store: Store) -> None:
        """An empty append returns no positions and changes nothing."""
        assert store.append([]) == []
        assert store.read_log() == [] and store.last_position() == 0

    def test_positions_increase_across_appends(self, store: Store) -> None:
        """Every append's positions are above all earlier ones, and the log is in their order."""
        seen: list[int] = []
        for version in range(1, 6):
            seen += store.append([new("a", version), new(f"b{version}", 1)])
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        assert [e.position for e in store.read_log()] == seen
        assert store.last_position() == seen[-1]

    def test_append_continues_a_stream(self, store: Store) -> None:
        """Appending version n+1 to a stream at version n succeeds."""
        store.append([new("a", 1)])
        store.append([new("a", 2), new("a", 3)])
        assert [e.version for e in store.read_stream("a")] == [1, 2, 3]

    def test_append_to_several_streams_is_one_atomic_batch(self, store: Store) -> None:
        """Interleaved streams in one append get positions in batch order."""
        store.append([new("b", 1)])
        batch = [new("a", 1), new("b", 2), new("a", 2), new("c", 1), new("b", 3)]
        positions = store.append(batch)
        assert positions == sorted(positions)
        assert [(e.stream, e.version) for e in store.read_log(after=positions[0] - 1)] == [
            ("a", 1),
            ("b", 2),
            ("a", 2),
            ("c", 1),
            ("b", 3),
        ]
        assert [store.stream_version(s) for s in "abc"] == [2, 3, 1]

    def test_stream_versions_reads_many_streams_at_once(self, store: Store) -> None:
        """stream_versions gives every asked stream's version, 0 for unknown ones."""
        store.append([new("a", 1), new("a", 2), new("b", 1)])
        assert store.stream_versions(["a", "b", "nobody", "a"]) == {"a": 2, "b": 1, "nobody": 0}
        assert store.stream_versions(("b",)) == {"b": 1}
        assert store.stream_versions(set()) == {}
        assert store.stream_versions(["it's; DROP TABLE x", "ä/ö"]) == {
            "it's; DROP TABLE x": 0,
            "ä/ö": 0,
        }

    def test_stream_versions_of_more_streams_than_one_query_takes(self, store: Store) -> None:
        """Thousands of streams (beyond any parameter limit) are answered whole."""
        store.append([new(f"s{i}", v) for i in range(0, 2500, 7) for v in (1, 2)])
        asked = [f"s{i}" for i in range(2500)]
        versions = store.stream_versions(asked)
        assert versions == {s: 2 if int(s[1:]) % 7 == 0 else 0 for s in asked}

    def test_large_batch_round_trips(self, store: Store) -> None:
        """A 3,000-event append over many streams reads back whole and in order."""
        batch = [new(f"s{i % 30}", i // 30 + 1) for i in range(3000)]
        positions = store.append(batch)
        assert len(positions) == 3000 and positions == sorted(set(positions))
        assert store.read_log() == [stored(e, p) for e, p in zip(batch, positions, strict=True)]
        assert store.stream_version("s7") == 100

    def test_unicode_streams_topics_and_empty_payloads(self, store: Store) -> None:
        """Any text a stream id may be is one; empty payloads and metadata survive."""
        events = [
            new("ünïcødé/流/🐕", 1, "Émis/イベント", b"", meta=b""),
            new("with 'quotes' \"and\" ; -- sql", 1, "t", b""),
            new("\t\n\x7f\u2028\U0010ffff", 1, "", b"x"),
            new("流" * MAX_STREAM_ID, 1, "t", b"x"),
        ]
        positions = store.append(events)
        for event, position in zip(events, positions, strict=True):
            assert store.read_stream(event.stream) == [stored(event, position)]
        assert store.read_log(topics=["Émis/イベント"])[0].meta == b""

    def test_large_payload_round_trips(self, store: Store) -> None:
        """A 2 MB payload with every byte value reads back unchanged."""
        payload = bytes(range(256)) * 8192
        store.append([new("big", 1, payload=payload)])
        assert store.read_stream("big")[0].payload == payload

    def test_extreme_timestamps_round_trip(self, store: Store) -> None:
        """Timestamps before the epoch and far in the future are kept exactly."""
        events = [new("t", 1, timestamp=-62_135_596_800_000_000), new("t", 2, timestamp=2**62)]
        store.append(events)
        assert [e.timestamp for e in store.read_stream("t")] == [e.timestamp for e in events]

    # Optimistic concurrency --------------------------------------------------------

    def test_appending_a_taken_version_conflicts(self, store: Store) -> None:
        """A second version 1 is refused, naming the stream and both versions."""
        store.append([new("a", 1)])
        with pytest.raises(ConcurrencyError) as caught:
            store.append([new("a", 1, payload=b"other")])
        assert (caught.value.stream, caught.value.expected, caught.value.actual) == ("a", 0, 1)
        assert "'a'" in str(caught.value)
        assert [e.payload for e in store.read_stream("a")] == [b"a/1"]

    def test_appending_past_the_end_conflicts(self, store: Store) -> None:
        """Skipping versions (appending 4 to a stream at 1) is refused as a conflict."""
        store.append([new("a", 1)])
        with pytest.raises(ConcurrencyError) as caught:
            store.append([new("a", 4)])
        assert (caught.value.expected, caught.value.actual) == (3, 1)
        with pytest.raises(ConcurrencyError) as caught:
            store.append([new("fresh", 2)])
        assert (caught.value.stream, caught.value.expected, caught.value.actual) == (
            "fresh",
            1,
            0,
        )
        assert store.stream_version("a") == 1 and store.stream_version("fresh") == 0

    def test_conflict_late_in_a_batch_stores_nothing(self, store: Store) -> None:
        """A 100-event batch whose 73rd event conflicts leaves the store as it was."""
        store.append([new("taken", 1), new("taken", 2)])
        before = contents(store)
        batch = [new(f"s{i}", 1) for i in range(72)]
        batch += [new("taken", 2)]
        batch += [new(f"t{i}", 1) for i in range(27)]
        with pytest.raises(ConcurrencyError) as caught:
            store.append(batch)
        assert caught.value.stream == "taken"
        assert contents(store) == before
        assert store.stream_version("s0") == 0 and store.stream_version("t26") == 0
        # The refused batch left no trace: the same new streams can be appended.
        assert len(store.append([new("s0", 1), new("t26", 1)])) == 2

    def test_conflict_in_one_stream_stores_no_other_stream(self, store: Store) -> None:
        """A multi-stream append with one stale stream stores none of the streams."""
        store.append([new("a", 1), new("b", 1)])
        with pytest.raises(ConcurrencyError) as caught:
            store.append([new("a", 2), new("b", 3), new("c", 1)])
        assert caught.value.stream == "b"
        assert [store.stream_version(s) for s in "abc"] == [1, 1, 0]

    def test_conflicts_with_several_stale_streams_name_one_of_them(self, store: Store) -> None:
        """When several streams are stale, the error names one of them, with its versions."""
        store.append([new("a", 1), new("b", 1)])
        with pytest.raises(ConcurrencyError) as caught:
            store.append([new("a", 1), new("b", 1)])
        assert caught.value.stream in ("a", "b")
        assert (caught.value.expected, caught.value.actual) == (0, 1)

    @pytest.mark.parametrize(
        "versions",
        [[1, 3], [2, 1], [1, 1], [0], [-1, 0], [1, 2, 4]],
        ids=["gap", "backwards", "repeated", "zero", "negative", "late-gap"],
    )
    def test_malformed_batch_is_refused_and_stores_nothing(
        self, store: Store, versions: list[int]
    ) -> None:
        """A stream whose versions in one batch are not consecutive from 1 up is refused."""
        store.append([new("other", 1)])
        before = contents(store)
        batch = [new("other", 2)] + [new("a", v) for v in versions]
        with pytest.raises(StoreError) as caught:
            store.append(batch)
        assert not isinstance(caught.value, ConcurrencyError)
        assert "'a'" in str(caught.value)
        assert contents(store) == before

    def test_threads_racing_for_a_version_have_one_winner(self, store: Store) -> None:
        """Eight threads appending the same next version: exactly one wins each round."""
        threads = 8
        barrier = threading.Barrier(threads)
        outcomes: list[tuple[int, int, str]] = []
        lock = threading.Lock()

        def race(worker: int) -> None:
            for version in range(1, 6):
                barrier.wait(timeout=30)
                try:
                    store.append([new("race", version, payload=str(worker).encode())])
                    outcome = "won"
                except ConcurrencyError:
                    outcome = "lost"
                with lock:
                    outcomes.append((version, worker, outcome))

        runners = [threading.Thread(target=race, args=(w,)) for w in range(threads)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join(timeout=60)
        assert len(outcomes) == 5 * threads
        winners = {v: [w for (vv, w, o) in outcomes if vv == v and o == "won"] for v in range(1, 6)}
        assert all(len(w) == 1 for w in winners.values()), winners
        assert [e.payload for e in store.read_stream("race")] == [
            str(winners[v][0]).encode() for v in range(1, 6)
        ]

    def test_concurrent_writers_give_a_reader_every_position_once_in_order(
        self, store: Store
    ) -> None:
        """A reader following the log while four threads append sees each event once, in order."""
        writers, appends = 4, 60
        done = threading.Event()
        seen: list[int] = []
        errors: list[BaseException] = []

        def write(worker: int) -> None:
            try:
                for i in range(appends):
                    store.append([new(f"w{worker}-{i}", 1), new(f"w{worker}-{i}", 2)])
            except BaseException as error:  # reported below
                errors.append(error)

        def follow() -> None:
            after = 0
            while not (done.is_set() and store.last_position() <= after):
                for event in store.read_log(after, limit=7):
                    seen.append(event.position)
                    after = event.position
                store.wait(after, 0.01)

        reader = threading.Thread(target=follow)
        reader.start()
        runners = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join(timeout=60)
        done.set()
        reader.join(timeout=60)
        assert errors == []
        assert all(a < b for a, b in itertools.pairwise(seen))
        assert seen == [e.position for e in store.read_log()]
        assert len(seen) == writers * appends * 2

    # Reading streams --------------------------------------------------------------

    def test_read_stream_bounds_limit_and_direction(self, store: Store) -> None:
        """read_stream honours from_version, to_version, limit and descending together."""
        store.append([new("a", v) for v in range(1, 11)] + [new("b", 1)])
        everything = store.read_stream("a")
        bounds = [None, -1, 0, 1, 2, 5, 10, 11]
        for low in bounds:
            for high in bounds:
                for limit in (None, 0, 1, 3, 20):
                    for descending in (False, True):
                        expected = [
                            e
                            for e in everything
                            if (low is None or e.version >= low)
                            and (high is None or e.version <= high)
                        ]
                        if descending:
                            expected.reverse()
                        if limit is not None:
                            expected = expected[:limit]
                        got = store.read_stream(
                            "a",
                            from_version=low,
                            to_version=high,
                            limit=limit,
                            descending=descending,
                        )
                        assert got == expected, (low, high, limit, descending)

    def test_read_payloads_are_read_streams_fold_columns(self, store: Store) -> None:
        """read_payloads gives (version, topic, payload) of read_stream's events, in order."""
        store.append(
            [new("a", v, topic=f"t{v % 3}", payload=b"x" * v) for v in range(1, 8)]
            + [new("b", 1)]
        )
        bounds = [None, -1, 0, 1, 4, 7, 8]
        for low in bounds:
            for high in bounds:
                expected = [
                    (e.version, e.topic, e.payload)
                    for e in store.read_stream("a", from_version=low, to_version=high)
                ]
                got = store.read_payloads("a", from_version=low, to_version=high)
                assert [tuple(row) for row in got] == expected, (low, high)
                assert all(type(row[2]) is bytes for row in got)
        assert store.read_payloads("nope") == []
        assert store.read_payloads("A") == []

    def test_read_stream_descending_with_limit_gives_the_latest(self, store: Store) -> None:
        """descending=True, limit=2 gives the stream's last two events, newest first."""
        store.append([new("a", v) for v in range(1, 6)])
        assert [e.version for e in store.read_stream("a", descending=True, limit=2)] == [5, 4]

    def test_read_stream_of_unknown_stream_is_empty(self, store: Store) -> None:
        """A stream that was never written reads as empty, at version 0."""
        store.append([new("a", 1)])
        assert store.read_stream("nope") == []
        assert store.read_stream("A") == []
        assert store.stream_version("nope") == 0

    def test_negative_limit_is_refused(self, store: Store) -> None:
        """A negative limit raises StoreError for streams and for the log."""
        with pytest.raises(StoreError, match="limit"):
            store.read_stream("a", limit=-1)
        with pytest.raises(StoreError, match="limit"):
            store.read_log(limit=-1)

    # Reading the log --------------------------------------------------------------

    def test_read_log_after_to_limit_and_topics(self, store: Store) -> None:
        """read_log honours after, to, limit and topics together."""
        topics = ["Opened", "Deposited", "Closed"]
        store.append([new(f"s{i % 4}", i // 4 + 1, topics[i % 3]) for i in range(24)])
        everything = store.read_log()
        positions = [e.position for e in everything]
        marks = [None, 0, positions[0], positions[5], positions[-1], positions[-1] + 5]
        for after in marks:
            for to in marks:
                for limit in (None, 0, 1, 4, 100):
                    for wanted in (None, [], ["Closed"], ["Opened", "Closed"], ["Nope"]):
                        expected = [
                            e
                            for e in everything
                            if e.position > (after or 0)
                            and (to is None or e.position <= to)
                            and (wanted is None or e.topic in wanted)
                        ]
                        if limit is not None:
                            expected = expected[:limit]
                        got = store.read_log(
                            after if after is not None else 0,
                            to=to,
                            limit=limit,
                            topics=wanted,
                        )
                        assert got == expected, (after, to, limit, wanted)

    def test_read_log_topics_accepts_any_collection(self, store: Store) -> None:
        """topics may be a set, tuple or frozenset, and duplicates do not repeat events."""
        store.append([new("a", 1, "X"), new("a", 2, "Y"), new("a", 3, "X")])
        for topics in ({"X"}, ("X", "X"), frozenset(["X"])):
            assert [e.version for e in store.read_log(topics=topics)] == [1, 3]

    def test_last_position_tracks_the_log(self, store: Store) -> None:
        """last_position is 0 for an empty log and the highest position after appends."""
        assert store.last_position() == 0
        last = store.append([new("a", 1), new("b", 1)])[-1]
        assert store.last_position() == last == store.read_log()[-1].position

    # Tracking ----------------------------------------------------------------------

    def test_tracking_records_events_and_position_together(self, store: Store) -> None:
        """An append with tracking stores the events and the leader's position."""
        store.append([new("a", 1)], tracking=Tracking("orders", 7, 0))
        assert store.last_tracked("orders") == 7
        assert store.tracked() == {"orders": 7}
        assert store.stream_version("a") == 1
        store.append([new("a", 2)], tracking=Tracking("orders", 9, 7))
        assert store.last_tracked("orders") == 9

    def test_tracking_with_no_events_records_the_position(self, store: Store) -> None:
        """A follower that had nothing to say still records how far it got."""
        assert store.append([], tracking=Tracking("orders", 3, 0)) == []
        assert store.last_tracked("orders") == 3
        assert store.append([], tracking=Tracking("orders", 4, 3)) == []
        assert store.tracked() == {"orders": 4}
        assert store.read_log() == []

    def test_duplicate_tracking_is_refused_and_stores_nothing(self, store: Store) -> None:
        """Recording the same upstream position twice raises DuplicateTracking, storing nothing."""
        store.append([new("a", 1)], tracking=Tracking("orders", 5, 0))
        before = contents(store)
        with pytest.raises(DuplicateTracking) as caught:
            store.append([new("b", 1)], tracking=Tracking("orders", 5, 0))
        assert (caught.value.leader, caught.value.position) == ("orders", 5)
        assert contents(store) == before
        assert store.stream_version("b") == 0

    @pytest.mark.parametrize(
        "previous",
        [0, 3, 6],
        ids=["none-claimed", "older", "newer"],
    )
    def test_stale_previous_is_refused_and_stores_nothing(
        self, store: Store, previous: int
    ) -> None:
        """Tracking from a previous the store no longer holds is refused; nothing is stored."""
        store.append([], tracking=Tracking("orders", 5, 0))
        before = contents(store)
        with pytest.raises(DuplicateTracking):
            store.append([new("b", 1)], tracking=Tracking("orders", 8, previous))
        assert contents(store) == before

    def test_previous_for_an_untracked_leader_is_refused(self, store: Store) -> None:
        """Claiming a previous position for a leader never tracked is refused."""
        with pytest.raises(DuplicateTracking):
            store.append([new("a", 1)], tracking=Tracking("orders", 8, 4))
        assert contents(store) == ([], {})

    def test_duplicate_tracking_wins_over_a_version_conflict(self, store: Store) -> None:
        """When both the tracking and a version are stale, DuplicateTracking is raised.

        A follower that lost a race to record an upstream event learns that the
        event was processed, rather than retrying a command that conflicts.
        """
        store.append([new("a", 1)], tracking=Tracking("orders", 5, 0))
        with pytest.raises(DuplicateTracking):
            store.append([new("a", 1)], tracking=Tracking("orders", 5, 0))

    def test_conflicting_events_do_not_record_tracking(self, store: Store) -> None:
        """A version conflict leaves the tracking position where it was."""
        store.append([new("a", 1)], tracking=Tracking("orders", 5, 0))
        with pytest.raises(ConcurrencyError):
            store.append([new("a", 1)], tracking=Tracking("orders", 6, 5))
        assert store.last_tracked("orders") == 5

    @pytest.mark.parametrize("position, previous", [(5, 5), (4, 5), (1, -1)])
    def test_tracking_that_does_not_move_forward_is_refused(
        self, store: Store, position: int, previous: int
    ) -> None:
        """A tracking position at or below its previous one is malformed, and refused."""
        store.append([], tracking=Tracking("orders", 5, 0))
        with pytest.raises(StoreError) as caught:
            store.append([new("a", 1)], tracking=Tracking("orders", position, previous))
        assert "orders" in str(caught.value)
        assert contents(store) == ([], {"orders": 5})

    def test_leaders_are_tracked_independently(self, store: Store) -> None:
        """Each leader has its own tracking position."""
        store.append([], tracking=Tracking("orders", 5, 0))
        store.append([], tracking=Tracking("payments", 2, 0))
        store.append([], tracking=Tracking("payments", 3, 2))
        assert store.tracked() == {"orders": 5, "payments": 3}
        assert store.last_tracked("orders") == 5

    def test_threads_racing_to_track_one_position_have_one_winner(self, store: Store) -> None:
        """Several followers recording the same upstream position: exactly one succeeds."""
        threads = 6
        barrier = threading.Barrier(threads)
        results: list[str] = []

        def race(worker: int) -> None:
            barrier.wait(timeout=30)
            try:
                store.append([new(f"w{worker}", 1)], tracking=Tracking("orders", 1, 0))
                results.append("won")
            except DuplicateTracking:
                results.append("lost")

        runners = [threading.Thread(target=race, args=(w,)) for w in range(threads)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join(timeout=60)
        assert sorted(results) == ["lost"] * (threads - 1) + ["won"]
        assert len(store.read_log()) == 1

    # Snapshots ----------------------------------------------------------------------

    def test_snapshot_round_trips(self, store: Store) -> None:
        """A saved snapshot loads back with every field."""
        saved = snapshot("a", 3)
        store.save_snapshot(saved)
        assert store.load_snapshot("a") == saved

    def test_load_snapshot_gives_latest_at_or_below(self, store: Store) -> None:
        """load_snapshot picks the highest version not above to_version."""
        for version in (3, 10, 7):
            store.save_snapshot(snapshot("a", version))
        store.save_snapshot(snapshot("b", 20))
        loaded = store.load_snapshot
        assert loaded("a") == snapshot("a", 10)
        assert loaded("a", to_version=None) == snapshot("a", 10)
        assert loaded("a", to_version=9) == snapshot("a", 7)
        assert loaded("a", to_version=7) == snapshot("a", 7)
        assert loaded("a", to_version=3) == snapshot("a", 3)
        assert loaded("a", to_version=2) is None
        assert loaded("c") is None

    def test_snapshot_of_the_same_version_is_replaced(self, store: Store) -> None:
        """Saving a snapshot again at the same version replaces it."""
        store.save_snapshot(snapshot("a", 3, b"old"))
        newer = StoredSnapshot("a", 3, "fp-2", b"new", 99)
        store.save_snapshot(newer)
        assert store.load_snapshot("a") == newer

    def test_snapshots_do_not_touch_the_log(self, store: Store) -> None:
        """Saving a snapshot appends no event and changes no stream version."""
        store.save_snapshot(snapshot("a", 3))
        assert store.read_log() == [] and store.stream_version("a") == 0

    # Views --------------------------------------------------------------------------

    def test_view_round_trips_with_its_position(self, store: Store) -> None:
        """A saved view loads back with the position it reached."""
        store.save_view("totals", b"\x00state", Tracking("orders", 4, 0))
        assert store.load_view("totals") == (b"\x00state", 4)
        store.save_view("totals", b"", Tracking("orders", 9, 4))
        assert store.load_view("totals") == (b"", 9)

    def test_view_compare_and_set_refuses_stale_saves(self, store: Store) -> None:
        """Saving a view from a stale previous position raises and keeps the stored state."""
        store.save_view("totals", b"one", Tracking("orders", 4, 0))
        for stale in (Tracking("orders", 4, 0), Tracking("orders", 6, 0), Tracking("orders", 8, 2)):
            with pytest.raises(DuplicateTracking):
                store.save_view("totals", b"two", stale)
        assert store.load_view("totals") == (b"one", 4)
        with pytest.raises(DuplicateTracking):
            store.save_view("other", b"x", Tracking("orders", 8, 3))
        assert store.load_view("other") is None

    def test_view_that_does_not_move_forward_is_refused(self, store: Store) -> None:
        """A view save whose position is not above previous is malformed and refused."""
        store.save_view("totals", b"one", Tracking("orders", 4, 0))
        with pytest.raises(StoreError):
            store.save_view("totals", b"two", Tracking("orders", 4, 4))
        assert store.load_view("totals") == (b"one", 4)

    def test_views_are_independent_of_each_other_and_of_tracking(self, store: Store) -> None:
        """Views keep their own positions: neither other views nor tracked() see them."""
        store.save_view("a", b"A", Tracking("orders", 4, 0))
        store.save_view("b", b"B", Tracking("orders", 2, 0))
        assert store.load_view("a") == (b"A", 4) and store.load_view("b") == (b"B", 2)
        assert store.tracked() == {}
        store.append([], tracking=Tracking("orders", 1, 0))
        assert store.load_view("a") == (b"A", 4)

    # Applications -------------------------------------------------------------------

    def test_apps_lists_applications_with_tables(self, database: Database) -> None:
        """apps() lists, sorted, each application whose store was opened, once."""
        assert database.apps() == []
        database.store("shop")
        database.store("billing")
        database.store("shop")
        assert database.apps() == ["billing", "shop"]

    def test_applications_do_not_see_each_others_data(self, database: Database) -> None:
        """Events, versions, tracking, snapshots and views of one app are invisible to another."""
        shop, billing = database.store("shop"), database.store("billing")
        shop.append([new("a", 1), new("a", 2)], tracking=Tracking("up", 3, 0))
        shop.save_snapshot(snapshot("a", 2))
        shop.save_view("v", b"shop", Tracking("up", 3, 0))
        assert billing.read_log() == [] and billing.last_position() == 0
        assert billing.read_stream("a") == [] and billing.stream_version("a") == 0
        assert billing.tracked() == {} and billing.last_tracked("up") == 0
        assert billing.load_snapshot("a") is None and billing.load_view("v") is None
        assert billing.wait(0, 0.05) is False
        billing.append([new("a", 1)], tracking=Tracking("up", 1, 0))
        billing.save_view("v", b"billing", Tracking("up", 1, 0))
        assert shop.stream_version("a") == 2 and shop.last_tracked("up") == 3
        assert shop.load_view("v") == (b"shop", 3)

    def test_app_names_differing_in_case_or_punctuation_are_separate(
        self, database: Database
    ) -> None:
        """'Shop', 'shop', 'sh-op' and 'sh_op' are four applications with their own data."""
        names = ["Shop", "shop", "sh-op", "sh_op", "SHOP"]
        for index, name in enumerate(names):
            database.store(name).append([new("a", v) for v in range(1, index + 2)])
        for index, name in enumerate(names):
            assert database.store(name).stream_version("a") == index + 1
        assert database.apps() == sorted(names)

    @pytest.mark.parametrize(
        "name",
        ["", "a b", 'a"b', "a;b", "a.b", "a/b", "x" * 200, "shop\x00", "a'b"],
        ids=["empty", "space", "quote", "semicolon", "dot", "slash", "long", "nul", "apostrophe"],
    )
    def test_bad_app_names_are_refused(self, database: Database, name: str) -> None:
        """A name that cannot safely name tables raises StoreError naming it."""
        with pytest.raises(StoreError, match="application name"):
            database.store(name)
        assert database.apps() == []

    def test_app_names_may_look_like_sql_or_internal_tables(self, database: Database) -> None:
        """Names like 'sqlite_master', 'fes_apps', 'select' or '9lives' are ordinary apps."""
        names = ["sqlite_master", "sqlite", "fes", "fes_apps", "select", "9lives", "_x", "-x"]
        for name in names:
            database.store(name).append([new(name, 1)])
        for name in names:
            assert [e.stream for e in database.store(name).read_log()] == [name]
        assert database.apps() == sorted(names)

    # Waiting -----------------------------------------------------------------------

    def test_wait_returns_at_once_when_there_is_something(self, store: Store) -> None:
        """wait(after) is True without waiting when a position above after is visible."""
        store.append([new("a", 1)])
        started = time.monotonic()
        assert store.wait(0, 10.0) is True
        assert time.monotonic() - started < 5.0

    def test_wait_times_out(self, store: Store) -> None:
        """wait returns False after about timeout seconds when nothing is appended."""
        last = store.append([new("a", 1)])[-1]
        started = time.monotonic()
        assert store.wait(last, 0.3) is False
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 5.0
        assert store.wait(last, 0) is False

    def test_wait_wakes_on_an_append(self, store: Store) -> None:
        """A waiter wakes soon after another thread appends, long before its timeout."""

        def append_later() -> None:
            time.sleep(0.2)
            store.append([new("a", 1)])

        writer = threading.Thread(target=append_later)
        started = time.monotonic()
        writer.start()
        try:
            assert store.wait(0, 30.0) is True
        finally:
            writer.join()
        assert time.monotonic() - started < 10.0

    # Resealing ---------------------------------------------------------------------

    def test_reseal_replaces_only_payload_and_meta(self, store: Store) -> None:
        """Resealed events keep position, topic and timestamp; other events are untouched."""
        store.append([new("a", 1, meta=b"m1"), new("b", 1), new("a", 2, topic="Other")])
        before = store.read_log()
        store.reseal(
            [
                Resealed("a", 2, "Other", b"sealed-2", b"meta-2"),
                Resealed("a", 1, "Happened", b"sealed-1"),
            ]
        )
        after = store.read_log()
        assert [(e.position, e.stream, e.version, e.topic, e.timestamp) for e in after] == [
            (e.position, e.stream, e.version, e.topic, e.timestamp) for e in before
        ]
        assert [(e.payload, e.meta) for e in after] == [
            (b"sealed-1", None), (b"b/1", None), (b"sealed-2", b"meta-2")
        ]
        assert store.read_stream("a") == [after[0], after[2]]
        assert [tuple(row) for row in store.read_payloads("a")] == [
            (1, "Happened", b"sealed-1"),
            (2, "Other", b"sealed-2"),
        ]
        store.append([new("a", 3)])  # the stream goes on as before
        assert store.stream_version("a") == 3

    def test_reseal_naming_no_stored_event_changes_nothing(self, store: Store) -> None:
        """A wrong stream, version or topic anywhere in the call: StoreError, nothing changed."""
        store.append([new("a", 1), new("a", 2)])
        before = store.read_log()
        good = Resealed("a", 1, "Happened", b"new")
        for bad in [
            Resealed("a", 3, "Happened", b"x"),
            Resealed("a", 0, "Happened", b"x"),
            Resealed("nope", 1, "Happened", b"x"),
            Resealed("a", 2, "Other", b"x"),
        ]:
            with pytest.raises(StoreError, match=f"version {bad.version}.*nothing was changed"):
                store.reseal([good, bad])
            assert store.read_log() == before

    def test_reseal_refuses_a_malformed_call(self, store: Store) -> None:
        """One event twice, or an empty payload, is refused before anything changes."""
        store.append([new("a", 1)])
        before = store.read_log()
        with pytest.raises(StoreError, match="twice"):
            store.reseal([Resealed("a", 1, "Happened", b"x"), Resealed("a", 1, "Happened", b"y")])
        with pytest.raises(StoreError, match="empty"):
            store.reseal([Resealed("a", 1, "Happened", b"")])
        assert store.read_log() == before
        store.reseal([])
        assert store.read_log() == before

    # Bad input ----------------------------------------------------------------------

    @pytest.mark.parametrize(
        "stream",
        [None, 5, b"a", uuid.UUID(int=1), "", "a\x00b", "a\ud800b", "x" * (MAX_STREAM_ID + 1)],
        ids=["none", "int", "bytes", "uuid", "empty", "nul", "surrogate", "too-long"],
    )
    def test_a_bad_stream_id_is_refused_by_every_operation(
        self, store: Store, stream: Any
    ) -> None:
        """A stream id not every store can keep is refused, in reads and writes alike."""
        store.append([new("ok", 1)])
        store.save_snapshot(snapshot("ok", 1))
        before = contents(store)
        bad = NewEvent(stream, 1, "Happened", b"p", 1, None)
        operations: list[Callable[[], object]] = [
            lambda: store.append([bad]),
            lambda: store.append([new("ok", 2), bad]),
            lambda: store.append([bad], tracking=Tracking("orders", 1, 0)),
            lambda: store.read_stream(stream),
            lambda: store.read_payloads(stream),
            lambda: store.stream_version(stream),
            lambda: store.stream_versions(["ok", stream]),
            lambda: store.save_snapshot(StoredSnapshot(stream, 1, "fp-1", b"s", 1)),
            lambda: store.load_snapshot(stream),
            lambda: store.reseal([Resealed(stream, 1, "Happened", b"x")]),
        ]
        for operation in operations:
            with pytest.raises(StoreError, match="a stream id must be a str of 1 to 500"):
                operation()
        assert contents(store) == before
        assert store.load_snapshot("ok") == snapshot("ok", 1)

    @pytest.mark.parametrize(
        "value", ["1", 1.0, True, 2**63, -(2**63) - 1], ids=["str", "float", "bool", "big", "small"]
    )
    def test_a_bad_version_position_or_limit_is_refused(self, store: Store, value: Any) -> None:
        """Versions, positions and limits are ints of 64 bits, in every store."""
        store.append([new("a", 1)])
        before = contents(store)
        operations: list[Callable[[], object]] = [
            lambda: store.append([NewEvent("a", value, "Happened", b"p", 1, None)]),
            lambda: store.append([new("a", 2), NewEvent("a", value, "Happened", b"p", 1, None)]),
            # 2.0 equals the 2 expected after 1, but is no int
            lambda: store.append([new("b", 1), NewEvent("b", 2.0, "Happened", b"p", 1, None)]),
            lambda: store.append([new("a", 2)], tracking=Tracking("orders", value, 0)),
            lambda: store.append([new("a", 2)], tracking=Tracking("orders", 2**62, value)),
            lambda: store.read_stream("a", from_version=value),
            lambda: store.read_stream("a", to_version=value),
            lambda: store.read_stream("a", limit=value),
            lambda: store.read_payloads("a", from_version=value),
            lambda: store.read_payloads("a", to_version=value),
            lambda: store.read_log(value),
            lambda: store.read_log(to=value),
            lambda: store.read_log(limit=value),
            lambda: store.wait(value, 0.0),
            lambda: store.save_snapshot(StoredSnapshot("a", value, "fp-1", b"s", 1)),
            lambda: store.load_snapshot("a", to_version=value),
            lambda: store.reseal([Resealed("a", value, "Happened", b"x")]),
            lambda: store.save_view("v", b"s", Tracking("orders", value, 0)),
        ]
        for operation in operations:
            with pytest.raises(StoreError, match="must be an integer"):
                operation()
        assert contents(store) == before
        assert store.load_snapshot("a") is None
        assert store.load_view("v") is None

    def test_topics_must_be_a_collection_not_one_topic(self, store: Store) -> None:
        """A lone str would be read as a set of one-letter topics: it is refused."""
        store.append([new("a", 1, topic="H")])
        for wrong in ("H", ["H", 5], [type]):
            with pytest.raises(StoreError, match="topics must be a collection"):
                store.read_log(topics=wrong)  # type: ignore[arg-type]
        assert [e.stream for e in store.read_log(topics=["H"])] == ["a"]

    @pytest.mark.parametrize("timeout", [None, "1", float("nan"), True], ids=repr)
    def test_wait_refuses_a_timeout_that_is_no_number(self, store: Store, timeout: Any) -> None:
        """A timeout is a number of seconds (NaN blocked for ever on some stores)."""
        with pytest.raises(StoreError, match="a timeout must be a number of seconds"):
            store.wait(0, timeout)

    def test_wait_takes_an_infinite_timeout(self, store: Store) -> None:
        """inf waits until something is appended (memory raised OverflowError)."""
        store.append([new("a", 1)])
        assert store.wait(0, float("inf")) is True

    @pytest.mark.parametrize(
        "fields",
        [
            {"topic": None},
            {"topic": "a\x00b"},
            {"topic": "a\ud800"},
            {"topic": 5},
            {"payload": "text"},
            {"payload": None},
            {"timestamp": 2**70},
            {"timestamp": 1.5},
            {"timestamp": "1"},
            {"meta": "text"},
        ],
        ids=lambda fields: "-".join(f"{k}={v!r}"[:20] for k, v in fields.items()),
    )
    def test_a_row_no_store_can_keep_is_refused(self, store: Store, fields: dict[str, Any]) -> None:
        """Topic, payload, timestamp and metadata are checked alike in every store."""
        store.append([new("a", 1)])
        before = contents(store)
        bad = new("a", 2)._replace(**fields)
        for batch in ([bad], [new("b", 1), bad], [bad, new("b", 1)]):
            with pytest.raises(StoreError, match=r"nothing was stored|must be an integer"):
                store.append(batch)
        with pytest.raises(StoreError, match="NewEvent rows"):
            store.append([tuple(new("a", 2))])  # type: ignore[list-item]
        assert contents(store) == before

    # Closing -----------------------------------------------------------------------

    def test_closed_database_refuses_to_work(self, database: Database) -> None:
        """After close(), stores raise StoreError; closing again is harmless."""
        store = database.store("shop")
        store.append([new("a", 1)])
        database.close()
        database.close()
        operations: list[Callable[[], object]] = [
            lambda: store.append([new("a", 2)]),
            lambda: store.read_stream("a"),
            lambda: store.read_payloads("a"),
            lambda: store.reseal([Resealed("a", 1, "Happened", b"x")]),
            lambda: store.reseal([]),
            lambda: store.stream_versions(["a"]),
            lambda: store.stream_versions([]),
            store.read_log,
            store.last_position,
            lambda: store.save_snapshot(snapshot("a", 1)),
            lambda: database.store("other"),
        ]
        for operation in operations:
            with pytest.raises(StoreError):
                operation()

    def test_every_refusal_is_a_fes_error(self, store: Store) -> None:
        """Conflicts, duplicates and malformed input all derive from FesError."""
        store.append([new("a", 1)], tracking=Tracking("up", 1, 0))
        refusals: list[Callable[[], object]] = [
            lambda: store.append([new("a", 1)]),
            lambda: store.append([], tracking=Tracking("up", 1, 0)),
            lambda: store.append([new("b", 1), new("b", 3)]),
            lambda: store.read_log(limit=-5),
        ]
        for refusal in refusals:
            with pytest.raises(FesError):
                refusal()
