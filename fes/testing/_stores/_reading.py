"""The conformance cases of reading, waiting, resealing, bad input and closing."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from fes.edge.stores._base import (
    Database,
    NewEvent,
    Resealed,
    Store,
    StoredSnapshot,
    Tracking,
)
from fes.edge.stores._checks import MAX_STREAM_ID
from fes.errors import FesError, StoreError
from fes.testing._stores._events import contents, new_event, new_snapshot


class ReadingCases:
    """Cases that read a store or refuse bad calls; mixed into ``StoreConformance``."""

    # Reading streams --------------------------------------------------------------

    def test_read_stream_bounds_limit_and_direction(self, store: Store) -> None:
        """read_stream honours from_version, to_version, limit and descending together."""
        store.append([new_event("a", v) for v in range(1, 11)] + [new_event("b", 1)])
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
            [new_event("a", v, topic=f"t{v % 3}", payload=b"x" * v) for v in range(1, 8)]
            + [new_event("b", 1)]
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
        store.append([new_event("a", v) for v in range(1, 6)])
        assert [e.version for e in store.read_stream("a", descending=True, limit=2)] == [5, 4]

    def test_read_stream_of_unknown_stream_is_empty(self, store: Store) -> None:
        """A stream that was never written reads as empty, at version 0."""
        store.append([new_event("a", 1)])
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
        store.append([new_event(f"s{i % 4}", i // 4 + 1, topics[i % 3]) for i in range(24)])
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
        store.append([new_event("a", 1, "X"), new_event("a", 2, "Y"), new_event("a", 3, "X")])
        for topics in ({"X"}, ("X", "X"), frozenset(["X"])):
            assert [e.version for e in store.read_log(topics=topics)] == [1, 3]

    def test_last_position_tracks_the_log(self, store: Store) -> None:
        """last_position is 0 for an empty log and the highest position after appends."""
        assert store.last_position() == 0
        last = store.append([new_event("a", 1), new_event("b", 1)])[-1]
        assert store.last_position() == last == store.read_log()[-1].position

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
        shop.append([new_event("a", 1), new_event("a", 2)], tracking=Tracking("up", 3, 0))
        shop.save_snapshot(new_snapshot("a", 2))
        shop.save_view("v", b"shop", Tracking("up", 3, 0))
        assert billing.read_log() == [] and billing.last_position() == 0
        assert billing.read_stream("a") == [] and billing.stream_version("a") == 0
        assert billing.tracked() == {} and billing.last_tracked("up") == 0
        assert billing.load_snapshot("a") is None and billing.load_view("v") is None
        assert billing.delete_snapshots(keep=()) == 0  # the shop's stays
        assert shop.load_snapshot("a") == new_snapshot("a", 2)
        assert billing.wait(0, 0.05) is False
        billing.append([new_event("a", 1)], tracking=Tracking("up", 1, 0))
        billing.save_view("v", b"billing", Tracking("up", 1, 0))
        assert shop.stream_version("a") == 2 and shop.last_tracked("up") == 3
        assert shop.load_view("v") == (b"shop", 3)

    def test_app_names_differing_in_case_or_punctuation_are_separate(
        self, database: Database
    ) -> None:
        """'Shop', 'shop', 'sh-op' and 'sh_op' are four applications with their own data."""
        names = ["Shop", "shop", "sh-op", "sh_op", "SHOP"]
        for index, name in enumerate(names):
            database.store(name).append([new_event("a", v) for v in range(1, index + 2)])
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
            database.store(name).append([new_event(name, 1)])
        for name in names:
            assert [e.stream for e in database.store(name).read_log()] == [name]
        assert database.apps() == sorted(names)

    # Waiting -----------------------------------------------------------------------

    def test_wait_returns_at_once_when_there_is_something(self, store: Store) -> None:
        """wait(after) is True without waiting when a position above after is visible."""
        store.append([new_event("a", 1)])
        started = time.monotonic()
        assert store.wait(0, 10.0) is True
        assert time.monotonic() - started < 5.0

    def test_wait_times_out(self, store: Store) -> None:
        """wait returns False after about timeout seconds when nothing is appended."""
        last = store.append([new_event("a", 1)])[-1]
        started = time.monotonic()
        assert store.wait(last, 0.3) is False
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 5.0
        assert store.wait(last, 0) is False

    def test_wait_below_zero_waits_for_any_event(self, store: Store) -> None:
        """An empty log has no position above -1: wait(-1) waits as wait(0) does.

        (It used to answer True at once on an empty store: the empty log's
        last position, 0, is above -1.)
        """
        assert store.wait(-1, 0) is False
        assert store.wait(-(2**63), 0.05) is False
        store.append([new_event("a", 1)])
        assert store.wait(-1, 0) is True

    def test_wait_wakes_on_an_append(self, store: Store) -> None:
        """A waiter wakes soon after another thread appends, long before its timeout."""

        def append_later() -> None:
            time.sleep(0.2)
            store.append([new_event("a", 1)])

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
        store.append(
            [new_event("a", 1, meta=b"m1"), new_event("b", 1), new_event("a", 2, topic="Other")]
        )
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
            (b"sealed-1", None),
            (b"b/1", None),
            (b"sealed-2", b"meta-2"),
        ]
        assert store.read_stream("a") == [after[0], after[2]]
        assert [tuple(row) for row in store.read_payloads("a")] == [
            (1, "Happened", b"sealed-1"),
            (2, "Other", b"sealed-2"),
        ]
        store.append([new_event("a", 3)])  # the stream goes on as before
        assert store.stream_version("a") == 3

    def test_reseal_naming_no_stored_event_changes_nothing(self, store: Store) -> None:
        """A wrong stream, version or topic anywhere in the call: StoreError, nothing changed."""
        store.append([new_event("a", 1), new_event("a", 2)])
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
        store.append([new_event("a", 1)])
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
    def test_a_bad_stream_id_is_refused_by_every_operation(self, store: Store, stream: Any) -> None:
        """A stream id not every store can keep is refused, in reads and writes alike."""
        store.append([new_event("ok", 1)])
        store.save_snapshot(new_snapshot("ok", 1))
        before = contents(store)
        bad = NewEvent(stream, 1, "Happened", b"p", 1, None)
        operations: list[Callable[[], object]] = [
            lambda: store.append([bad]),
            lambda: store.append([new_event("ok", 2), bad]),
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
        assert store.load_snapshot("ok") == new_snapshot("ok", 1)

    @pytest.mark.parametrize(
        "value", ["1", 1.0, True, 2**63, -(2**63) - 1], ids=["str", "float", "bool", "big", "small"]
    )
    def test_a_bad_version_position_or_limit_is_refused(self, store: Store, value: Any) -> None:
        """Versions, positions and limits are ints of 64 bits, in every store."""
        store.append([new_event("a", 1)])
        before = contents(store)
        operations: list[Callable[[], object]] = [
            lambda: store.append([NewEvent("a", value, "Happened", b"p", 1, None)]),
            lambda: store.append(
                [new_event("a", 2), NewEvent("a", value, "Happened", b"p", 1, None)]
            ),
            # 2.0 equals the 2 expected after 1, but is no int
            lambda: store.append(
                [new_event("b", 1), NewEvent("b", 2.0, "Happened", b"p", 1, None)]  # type: ignore[arg-type]
            ),
            lambda: store.append([new_event("a", 2)], tracking=Tracking("orders", value, 0)),
            lambda: store.append([new_event("a", 2)], tracking=Tracking("orders", 2**62, value)),
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
        store.append([new_event("a", 1, topic="H")])
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
        store.append([new_event("a", 1)])
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
        store.append([new_event("a", 1)])
        before = contents(store)
        bad = new_event("a", 2)._replace(**fields)
        for batch in ([bad], [new_event("b", 1), bad], [bad, new_event("b", 1)]):
            with pytest.raises(StoreError, match=r"nothing was stored|must be an integer"):
                store.append(batch)
        with pytest.raises(StoreError, match="NewEvent rows"):
            store.append([tuple(new_event("a", 2))])  # type: ignore[list-item]
        assert contents(store) == before

    # Closing -----------------------------------------------------------------------

    def test_closed_database_refuses_to_work(self, database: Database) -> None:
        """After close(), stores and store() raise StoreError; closing again is harmless."""
        store = database.store("shop")
        store.append([new_event("a", 1)])
        database.close()
        database.close()
        operations: list[Callable[[], object]] = [
            lambda: store.append([new_event("a", 2)]),
            lambda: store.read_stream("a"),
            lambda: store.read_payloads("a"),
            lambda: store.reseal([Resealed("a", 1, "Happened", b"x")]),
            lambda: store.reseal([]),
            lambda: store.stream_versions(["a"]),
            lambda: store.stream_versions([]),
            store.read_log,
            store.last_position,
            lambda: store.save_snapshot(new_snapshot("a", 1)),
            lambda: database.store("other"),
            lambda: database.store("shop"),  # opened before the close, too
        ]
        for operation in operations:
            with pytest.raises(StoreError):
                operation()

    def test_every_refusal_is_a_fes_error(self, store: Store) -> None:
        """Conflicts, duplicates and malformed input all derive from FesError."""
        store.append([new_event("a", 1)], tracking=Tracking("up", 1, 0))
        refusals: list[Callable[[], object]] = [
            lambda: store.append([new_event("a", 1)]),
            lambda: store.append([], tracking=Tracking("up", 1, 0)),
            lambda: store.append([new_event("b", 1), new_event("b", 3)]),
            lambda: store.read_log(limit=-5),
        ]
        for refusal in refusals:
            with pytest.raises(FesError):
                refusal()
