"""One Hypothesis state machine: a store under test against the memory store.

It drives the memory store (the model) and the store under test with the
same appends (fitting, conflicting and malformed, with and without
tracking), snapshots, views and reads, and checks after each step that both
hold the same data and gave the same answers.  Positions are compared by
rank, since a store may leave gaps in its log.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import hypothesis
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fes.edge.stores._base import (
    Database,
    NewEvent,
    Resealed,
    Store,
    StoredEvent,
    StoredSnapshot,
    Tracking,
)
from fes.edge.stores._memory import MemoryDatabase
from fes.errors import ConcurrencyError, DuplicateTracking, FesError

STREAMS = ("a", "b", "c", "ünï 🐕")
TOPICS = ("Opened", "Moved", "Closed")
LEADERS = ("up", "down")
VIEWS = ("totals", "counts")

_apps = itertools.count(1)

Outcome = tuple[str, Any]


def outcome(operation: Callable[[], Any]) -> Outcome:
    """What an operation did: its result, or the kind of fes error it raised."""
    try:
        return "ok", operation()
    except FesError as error:
        return type(error).__name__, error


def plain(event: StoredEvent) -> tuple[object, ...]:
    """An event without its position, which stores may number differently."""
    return (event.stream, event.version, event.topic, event.payload, event.timestamp, event.meta)


pieces = st.lists(
    st.tuples(
        st.sampled_from(STREAMS),
        st.integers(1, 4),  # how many events
        st.sampled_from([0, 0, 0, 0, -1, 1, -2]),  # how far from the stream's next version
        st.sampled_from(TOPICS),
        st.binary(max_size=8),
    ),
    max_size=4,
)


class StoresAgree(RuleBasedStateMachine):
    """The memory store and a store under test, side by side."""

    def __init__(self, database: Database) -> None:
        super().__init__()
        # Each run gets an application of its own, so runs can share a database.
        app = f"machine{next(_apps)}"
        self.model: Store = MemoryDatabase().store(app)
        self.real: Store = database.store(app)
        self.clock = 0

    def both(self, operation: Callable[[Store], Any]) -> tuple[Outcome, Outcome]:
        """Run ``operation`` on both stores and check they succeeded or failed alike."""
        expected, got = (
            outcome(lambda: operation(self.model)),
            outcome(lambda: operation(self.real)),
        )
        assert expected[0] == got[0], (expected, got)
        return expected, got

    def positions(self, store: Store) -> list[int]:
        return [e.position for e in store.read_log()]

    def mark(self, rank: int) -> tuple[int, int]:
        """The positions of the ``rank``-th event (0: before the first) in each store."""
        model, real = self.positions(self.model), self.positions(self.real)
        rank = min(rank, len(model))
        return (model[rank - 1] if rank else 0), (real[rank - 1] if rank else 0)

    def batch(
        self, spec: list[tuple[str, int, int, str, bytes]], malformed: bool
    ) -> list[NewEvent]:
        events: list[NewEvent] = []
        following: dict[str, int] = {}
        for stream, count, offset, topic, payload in spec:
            start = following.get(stream, self.model.stream_version(stream) + 1 + offset)
            for version in range(start, start + count):
                self.clock += 1
                events.append(NewEvent(stream, version, topic, payload, self.clock, None))
            following[stream] = start + count + (1 if malformed else 0)
        return events

    @rule(
        spec=pieces,
        malformed=st.sampled_from([False, False, False, True]),
        leader=st.none() | st.sampled_from(LEADERS),
        step=st.integers(-1, 3),
        stale=st.sampled_from([False, False, False, True]),
    )
    def append(
        self,
        spec: list[tuple[str, int, int, str, bytes]],
        malformed: bool,
        leader: str | None,
        step: int,
        stale: bool,
    ) -> None:
        events = self.batch(spec, malformed)
        tracking = None
        if leader is not None:
            held = self.model.last_tracked(leader)
            previous = max(held - 1, 0) if stale and held else (held + 1 if stale else held)
            tracking = Tracking(leader, held + step, previous)
        expected, got = self.both(lambda store: store.append(events, tracking=tracking))
        if expected[0] == "ok":
            assert len(got[1]) == len(expected[1]) == len(events)
            assert got[1] == sorted(set(got[1]))
            if events:
                assert got[1] == self.positions(self.real)[-len(events) :]
        if isinstance(got[1], ConcurrencyError):
            error = got[1]
            assert error.actual == self.model.stream_version(error.stream) != error.expected
        if isinstance(got[1], DuplicateTracking):
            assert (got[1].leader, got[1].position) == (expected[1].leader, expected[1].position)

    @rule(
        stream=st.sampled_from(STREAMS), version=st.integers(1, 12), payload=st.binary(max_size=4)
    )
    def save_snapshot(self, stream: str, version: int, payload: bytes) -> None:
        snapshot = StoredSnapshot(stream, version, "fp", payload, version)
        self.both(lambda store: store.save_snapshot(snapshot))

    @rule(stream=st.sampled_from(STREAMS), to_version=st.none() | st.integers(0, 12))
    def load_snapshot(self, stream: str, to_version: int | None) -> None:
        expected, got = self.both(lambda store: store.load_snapshot(stream, to_version=to_version))
        assert expected == got

    @rule(
        name=st.sampled_from(VIEWS),
        payload=st.binary(max_size=4),
        step=st.integers(0, 3),
        stale=st.booleans(),
    )
    def save_view(self, name: str, payload: bytes, step: int, stale: bool) -> None:
        loaded = self.model.load_view(name)
        held = 0 if loaded is None else loaded[1]
        previous = held + 1 if stale else held
        tracking = Tracking("up", held + step, previous)
        self.both(lambda store: store.save_view(name, payload, tracking))

    @rule(leader=st.sampled_from(LEADERS))
    def last_tracked(self, leader: str) -> None:
        expected, got = self.both(lambda store: store.last_tracked(leader))
        assert expected == got

    @rule(
        stream=st.sampled_from(STREAMS),
        low=st.none() | st.integers(-1, 12),
        high=st.none() | st.integers(-1, 12),
        limit=st.none() | st.integers(0, 5),
        descending=st.booleans(),
    )
    def read_stream(
        self, stream: str, low: int | None, high: int | None, limit: int | None, descending: bool
    ) -> None:
        expected, got = self.both(
            lambda store: store.read_stream(
                stream, from_version=low, to_version=high, limit=limit, descending=descending
            )
        )
        assert [plain(e) for e in expected[1]] == [plain(e) for e in got[1]]

    @rule(
        picks=st.lists(
            st.tuples(
                st.sampled_from(STREAMS),
                st.integers(0, 8),
                st.none() | st.sampled_from(TOPICS),
                st.binary(min_size=1, max_size=8),
                st.none() | st.binary(max_size=4),
            ),
            max_size=4,
        )
    )
    def reseal(self, picks: list[tuple[str, int, str | None, bytes, bytes | None]]) -> None:
        """Reseal events: mostly stored ones under their own topic, some that do not exist."""
        rows = []
        for stream, version, topic, payload, meta in picks:
            stored = self.model.read_stream(stream, from_version=version, to_version=version)
            if topic is None:
                topic = stored[0].topic if stored else TOPICS[0]
            rows.append(Resealed(stream, version, topic, payload, meta))
        self.both(lambda store: store.reseal(rows))
        expected, got = self.both(lambda store: store.read_log())
        assert [plain(e) for e in expected[1]] == [plain(e) for e in got[1]]

    @rule(
        stream=st.sampled_from(STREAMS),
        low=st.none() | st.integers(-1, 12),
        high=st.none() | st.integers(-1, 12),
    )
    def read_payloads(self, stream: str, low: int | None, high: int | None) -> None:
        expected, got = self.both(
            lambda store: store.read_payloads(stream, from_version=low, to_version=high)
        )
        assert [tuple(row) for row in expected[1]] == [tuple(row) for row in got[1]]

    @precondition(lambda self: self.model.last_position() > 0)
    @rule(
        after=st.integers(0, 40),
        to=st.none() | st.integers(0, 40),
        limit=st.none() | st.integers(0, 5),
        topics=st.none() | st.sets(st.sampled_from(TOPICS)),
    )
    def read_log(
        self, after: int, to: int | None, limit: int | None, topics: set[str] | None
    ) -> None:
        model_after, real_after = self.mark(after)
        model_to, real_to = self.mark(to) if to is not None else (None, None)
        expected = self.model.read_log(model_after, to=model_to, limit=limit, topics=topics)
        got = self.real.read_log(real_after, to=real_to, limit=limit, topics=topics)
        assert [plain(e) for e in expected] == [plain(e) for e in got]

    @invariant()
    def same_data(self) -> None:
        model_log, real_log = self.model.read_log(), self.real.read_log()
        assert [plain(e) for e in model_log] == [plain(e) for e in real_log]
        real_positions = [e.position for e in real_log]
        assert real_positions == sorted(set(real_positions))
        assert self.real.last_position() == (real_positions[-1] if real_positions else 0)
        for stream in STREAMS:
            assert self.real.stream_version(stream) == self.model.stream_version(stream)
        assert self.real.stream_versions(STREAMS) == self.model.stream_versions(STREAMS)
        assert self.real.tracked() == self.model.tracked()
        for name in VIEWS:
            assert self.real.load_view(name) == self.model.load_view(name)


#: How hard :func:`check_store` tries unless told otherwise.
DEFAULT_SETTINGS = hypothesis.settings(max_examples=60, stateful_step_count=25, deadline=None)


def check_store(database: Database, *, settings: hypothesis.settings | None = None) -> None:
    """Run :class:`StoresAgree` on ``database`` until Hypothesis finds a disagreement or gives up.

    Each run of the machine uses an application of its own (``machine1``,
    ``machine2``, ...), so the database may be shared by the runs; the
    caller opens and closes it.  Raises the failing step's ``AssertionError``
    (shrunk by Hypothesis) when the store and the model disagree.
    """

    class OnThisDatabase(StoresAgree):
        def __init__(self) -> None:
            super().__init__(database)

    run_state_machine_as_test(OnThisDatabase, settings=settings or DEFAULT_SETTINGS)
