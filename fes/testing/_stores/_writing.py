"""The conformance cases of writing: appends, conflicts, tracking, snapshots, views."""

from __future__ import annotations

import itertools
import threading

import pytest

from fes.edge.stores._base import (
    Database,
    Store,
    StoredSnapshot,
    Tracking,
)
from fes.edge.stores._checks import MAX_STREAM_ID
from fes.errors import ConcurrencyError, DuplicateTracking, StoreError
from fes.testing._stores._events import contents, new_event, new_snapshot, stored


class WritingCases:
    """Cases that change a store; mixed into :class:`fes.testing.stores.StoreConformance`."""

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
        database.store("shop").append([new_event("a", 1)])
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
            new_event("a", 1, "Opened", b"\x00\x01binary\xff", 1, b'{"c":"x"}'),
            new_event("a", 2, "Deposited", b"{}", 2, None),
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
            seen += store.append([new_event("a", version), new_event(f"b{version}", 1)])
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        assert [e.position for e in store.read_log()] == seen
        assert store.last_position() == seen[-1]

    def test_append_continues_a_stream(self, store: Store) -> None:
        """Appending version n+1 to a stream at version n succeeds."""
        store.append([new_event("a", 1)])
        store.append([new_event("a", 2), new_event("a", 3)])
        assert [e.version for e in store.read_stream("a")] == [1, 2, 3]

    def test_append_to_several_streams_is_one_atomic_batch(self, store: Store) -> None:
        """Interleaved streams in one append get positions in batch order."""
        store.append([new_event("b", 1)])
        batch = [
            new_event("a", 1),
            new_event("b", 2),
            new_event("a", 2),
            new_event("c", 1),
            new_event("b", 3),
        ]
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
        store.append([new_event("a", 1), new_event("a", 2), new_event("b", 1)])
        assert store.stream_versions(["a", "b", "nobody", "a"]) == {"a": 2, "b": 1, "nobody": 0}
        assert store.stream_versions(("b",)) == {"b": 1}
        assert store.stream_versions(set()) == {}
        assert store.stream_versions(["it's; DROP TABLE x", "ä/ö"]) == {
            "it's; DROP TABLE x": 0,
            "ä/ö": 0,
        }

    def test_stream_versions_of_more_streams_than_one_query_takes(self, store: Store) -> None:
        """Thousands of streams (beyond any parameter limit) are answered whole."""
        store.append([new_event(f"s{i}", v) for i in range(0, 2500, 7) for v in (1, 2)])
        asked = [f"s{i}" for i in range(2500)]
        versions = store.stream_versions(asked)
        assert versions == {s: 2 if int(s[1:]) % 7 == 0 else 0 for s in asked}

    def test_large_batch_round_trips(self, store: Store) -> None:
        """A 3,000-event append over many streams reads back whole and in order."""
        batch = [new_event(f"s{i % 30}", i // 30 + 1) for i in range(3000)]
        positions = store.append(batch)
        assert len(positions) == 3000 and positions == sorted(set(positions))
        assert store.read_log() == [stored(e, p) for e, p in zip(batch, positions, strict=True)]
        assert store.stream_version("s7") == 100

    def test_unicode_streams_topics_and_empty_payloads(self, store: Store) -> None:
        """Any text a stream id may be is one; empty payloads and metadata survive."""
        events = [
            new_event("ünïcødé/流/🐕", 1, "Émis/イベント", b"", meta=b""),
            new_event("with 'quotes' \"and\" ; -- sql", 1, "t", b""),
            new_event("\t\n\x7f\u2028\U0010ffff", 1, "", b"x"),
            new_event("流" * MAX_STREAM_ID, 1, "t", b"x"),
        ]
        positions = store.append(events)
        for event, position in zip(events, positions, strict=True):
            assert store.read_stream(event.stream) == [stored(event, position)]
        assert store.read_log(topics=["Émis/イベント"])[0].meta == b""

    def test_large_payload_round_trips(self, store: Store) -> None:
        """A 2 MB payload with every byte value reads back unchanged."""
        payload = bytes(range(256)) * 8192
        store.append([new_event("big", 1, payload=payload)])
        assert store.read_stream("big")[0].payload == payload

    def test_extreme_timestamps_round_trip(self, store: Store) -> None:
        """Timestamps before the epoch and far in the future are kept exactly."""
        events = [
            new_event("t", 1, timestamp=-62_135_596_800_000_000),
            new_event("t", 2, timestamp=2**62),
        ]
        store.append(events)
        assert [e.timestamp for e in store.read_stream("t")] == [e.timestamp for e in events]

    # Optimistic concurrency --------------------------------------------------------

    def test_appending_a_taken_version_conflicts(self, store: Store) -> None:
        """A second version 1 is refused, naming the stream and both versions."""
        store.append([new_event("a", 1)])
        with pytest.raises(ConcurrencyError) as caught:
            store.append([new_event("a", 1, payload=b"other")])
        assert (caught.value.stream, caught.value.expected, caught.value.actual) == ("a", 0, 1)
        assert "'a'" in str(caught.value)
        assert [e.payload for e in store.read_stream("a")] == [b"a/1"]

    def test_appending_past_the_end_conflicts(self, store: Store) -> None:
        """Skipping versions (appending 4 to a stream at 1) is refused as a conflict."""
        store.append([new_event("a", 1)])
        with pytest.raises(ConcurrencyError) as caught:
            store.append([new_event("a", 4)])
        assert (caught.value.expected, caught.value.actual) == (3, 1)
        with pytest.raises(ConcurrencyError) as caught:
            store.append([new_event("fresh", 2)])
        assert (caught.value.stream, caught.value.expected, caught.value.actual) == (
            "fresh",
            1,
            0,
        )
        assert store.stream_version("a") == 1 and store.stream_version("fresh") == 0

    def test_conflict_late_in_a_batch_stores_nothing(self, store: Store) -> None:
        """A 100-event batch whose 73rd event conflicts leaves the store as it was."""
        store.append([new_event("taken", 1), new_event("taken", 2)])
        before = contents(store)
        batch = [new_event(f"s{i}", 1) for i in range(72)]
        batch += [new_event("taken", 2)]
        batch += [new_event(f"t{i}", 1) for i in range(27)]
        with pytest.raises(ConcurrencyError) as caught:
            store.append(batch)
        assert caught.value.stream == "taken"
        assert contents(store) == before
        assert store.stream_version("s0") == 0 and store.stream_version("t26") == 0
        # The refused batch left no trace: the same new streams can be appended.
        assert len(store.append([new_event("s0", 1), new_event("t26", 1)])) == 2

    def test_conflict_in_one_stream_stores_no_other_stream(self, store: Store) -> None:
        """A multi-stream append with one stale stream stores none of the streams."""
        store.append([new_event("a", 1), new_event("b", 1)])
        with pytest.raises(ConcurrencyError) as caught:
            store.append([new_event("a", 2), new_event("b", 3), new_event("c", 1)])
        assert caught.value.stream == "b"
        assert [store.stream_version(s) for s in "abc"] == [1, 1, 0]

    def test_conflicts_with_several_stale_streams_name_one_of_them(self, store: Store) -> None:
        """When several streams are stale, the error names one of them, with its versions."""
        store.append([new_event("a", 1), new_event("b", 1)])
        with pytest.raises(ConcurrencyError) as caught:
            store.append([new_event("a", 1), new_event("b", 1)])
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
        store.append([new_event("other", 1)])
        before = contents(store)
        batch = [new_event("other", 2)] + [new_event("a", v) for v in versions]
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
                    store.append([new_event("race", version, payload=str(worker).encode())])
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
                    store.append([new_event(f"w{worker}-{i}", 1), new_event(f"w{worker}-{i}", 2)])
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

    # Tracking ----------------------------------------------------------------------

    def test_tracking_records_events_and_position_together(self, store: Store) -> None:
        """An append with tracking stores the events and the leader's position."""
        store.append([new_event("a", 1)], tracking=Tracking("orders", 7, 0))
        assert store.last_tracked("orders") == 7
        assert store.tracked() == {"orders": 7}
        assert store.stream_version("a") == 1
        store.append([new_event("a", 2)], tracking=Tracking("orders", 9, 7))
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
        store.append([new_event("a", 1)], tracking=Tracking("orders", 5, 0))
        before = contents(store)
        with pytest.raises(DuplicateTracking) as caught:
            store.append([new_event("b", 1)], tracking=Tracking("orders", 5, 0))
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
            store.append([new_event("b", 1)], tracking=Tracking("orders", 8, previous))
        assert contents(store) == before

    def test_previous_for_an_untracked_leader_is_refused(self, store: Store) -> None:
        """Claiming a previous position for a leader never tracked is refused."""
        with pytest.raises(DuplicateTracking):
            store.append([new_event("a", 1)], tracking=Tracking("orders", 8, 4))
        assert contents(store) == ([], {})

    def test_duplicate_tracking_wins_over_a_version_conflict(self, store: Store) -> None:
        """When both the tracking and a version are stale, DuplicateTracking is raised.

        A follower that lost a race to record an upstream event learns that the
        event was processed, rather than retrying a command that conflicts.
        """
        store.append([new_event("a", 1)], tracking=Tracking("orders", 5, 0))
        with pytest.raises(DuplicateTracking):
            store.append([new_event("a", 1)], tracking=Tracking("orders", 5, 0))

    def test_conflicting_events_do_not_record_tracking(self, store: Store) -> None:
        """A version conflict leaves the tracking position where it was."""
        store.append([new_event("a", 1)], tracking=Tracking("orders", 5, 0))
        with pytest.raises(ConcurrencyError):
            store.append([new_event("a", 1)], tracking=Tracking("orders", 6, 5))
        assert store.last_tracked("orders") == 5

    @pytest.mark.parametrize("position, previous", [(5, 5), (4, 5), (1, -1)])
    def test_tracking_that_does_not_move_forward_is_refused(
        self, store: Store, position: int, previous: int
    ) -> None:
        """A tracking position at or below its previous one is malformed, and refused."""
        store.append([], tracking=Tracking("orders", 5, 0))
        with pytest.raises(StoreError) as caught:
            store.append([new_event("a", 1)], tracking=Tracking("orders", position, previous))
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
                store.append([new_event(f"w{worker}", 1)], tracking=Tracking("orders", 1, 0))
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
        saved = new_snapshot("a", 3)
        store.save_snapshot(saved)
        assert store.load_snapshot("a") == saved

    def test_load_snapshot_gives_latest_at_or_below(self, store: Store) -> None:
        """load_snapshot picks the highest version not above to_version."""
        for version in (3, 10, 7):
            store.save_snapshot(new_snapshot("a", version))
        store.save_snapshot(new_snapshot("b", 20))
        loaded = store.load_snapshot
        assert loaded("a") == new_snapshot("a", 10)
        assert loaded("a", to_version=None) == new_snapshot("a", 10)
        assert loaded("a", to_version=9) == new_snapshot("a", 7)
        assert loaded("a", to_version=7) == new_snapshot("a", 7)
        assert loaded("a", to_version=3) == new_snapshot("a", 3)
        assert loaded("a", to_version=2) is None
        assert loaded("c") is None

    def test_delete_snapshots_keeps_only_the_fingerprints_given(self, store: Store) -> None:
        """Every snapshot of another fingerprint goes, in any stream; the count is returned."""
        older = StoredSnapshot("a", 2, "fp-old", b"old a", 2)
        kept = [new_snapshot("a", 4), new_snapshot("b", 1)]
        gone = [older, StoredSnapshot("b", 3, "fp-old", b"old b", 3),
                StoredSnapshot("c", 1, "fp-other", b"c", 1)]
        for snapshot in [*kept, *gone]:
            store.save_snapshot(snapshot)
        assert store.delete_snapshots(keep={"fp-1"}) == 3
        assert store.load_snapshot("a") == kept[0]
        assert store.load_snapshot("a", to_version=3) is None  # its older one went too
        assert store.load_snapshot("b") == kept[1]  # b's newer one was of fp-old
        assert store.load_snapshot("c") is None
        assert store.delete_snapshots(keep=["fp-1"]) == 0
        assert store.delete_snapshots(keep=()) == 2  # none kept: every one goes
        assert store.load_snapshot("a") is None and store.load_snapshot("b") is None

    def test_delete_snapshots_refuses_a_keep_that_is_not_fingerprints(self, store: Store) -> None:
        """A str (its characters) or a non-str fingerprint is refused, and nothing goes."""
        store.save_snapshot(new_snapshot("a", 1))
        for keep in ["fp-1", b"fp-1", None, [1]]:
            with pytest.raises(StoreError, match="fingerprint"):
                store.delete_snapshots(keep=keep)  # type: ignore[arg-type]
        assert store.load_snapshot("a") == new_snapshot("a", 1)

    def test_snapshot_of_the_same_version_is_replaced(self, store: Store) -> None:
        """Saving a snapshot again at the same version replaces it."""
        store.save_snapshot(new_snapshot("a", 3, b"old"))
        newer = StoredSnapshot("a", 3, "fp-2", b"new", 99)
        store.save_snapshot(newer)
        assert store.load_snapshot("a") == newer

    def test_snapshots_do_not_touch_the_log(self, store: Store) -> None:
        """Saving a snapshot appends no event and changes no stream version."""
        store.save_snapshot(new_snapshot("a", 3))
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
