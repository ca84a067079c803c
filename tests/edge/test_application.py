"""The application service: load, fold, decide, append, on every store.

Each behaviour runs against the memory store and an SQLite file; those where
the store matters (conflicts, retries, snapshots) run against PostgreSQL too.
Time and ids come from injected functions, so every timestamp is known.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import sqlite3
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID

import pytest
from attrs import evolve, frozen
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyrsistent import pmap, pvector

import fes
from fes.edge import Application, Cipher, SyncRunner, _application
from fes.edge._clock import to_micros
from fes.edge.stores import Store, StoredSnapshot, Tracking
from fes.events import NO_METADATA, Metadata, micros_datetime, new_metadata
from fes.examples.bank import (
    Account,
    AccountOpened,
    Deposited,
    accounts,
    close,
    deposit,
    open_account,
    set_overdraft_limit,
    withdraw,
)
from fes.examples.dogs import (
    Dog,
    Registered,
    TrickAdded,
    add_trick,
    dogs,
    register,
    registered,
)

from .conftest import SCHOOL, Place

BANK = fes.App("bank", aggregates=[accounts])
CLUB = fes.App("club", aggregates=[dogs, accounts])

START = datetime(2024, 5, 1, 9, 30, 0, 123457, tzinfo=UTC)
START_MICROS = 1_714_555_800_123_457
KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
PEDIGREE = " son of ".join(["Champion Fidelio", "Champion Rex"] * 8)


# --- a projector that gives the stored events another meaning ------------------------


def _loud_registered(dog: Dog | None, event: Registered) -> Dog:
    return Dog(event.name.upper())


def _loud_trick(dog: Dog, event: TrickAdded) -> Dog:
    return evolve(dog, tricks=dog.tricks.append(event.trick.upper()))


#: Same name as ``dogs``, another projector: an impostor in ``SCHOOL``.
loud_dogs = evolve(dogs, apply=fes.projector(_loud_registered, _loud_trick, name="dog"))
LOUD_SCHOOL = fes.App("school", aggregates=[loud_dogs])


# --- test doubles ----------------------------------------------------------------------


class Clock:
    """A clock that moves only when told to, and counts how often it is read."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> datetime:
        self.reads += 1
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Read(NamedTuple):
    """One ``read_payloads`` call (a load's read) a spied store served."""

    stream: str
    from_version: int | None
    to_version: int | None
    rows: int


class SpyStore:
    """A store passing everything on to another, noting loads' reads; it can fail snapshots."""

    def __init__(self, inner: Store, *, fail_snapshots: bool = False) -> None:
        self.inner = inner
        self.fail_snapshots = fail_snapshots
        self.reads: list[Read] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_payloads(self, stream: str, **options: Any) -> list[tuple[int, str, bytes]]:
        rows = self.inner.read_payloads(stream, **options)
        self.reads.append(
            Read(stream, options.get("from_version"), options.get("to_version"), len(rows))
        )
        return rows

    def save_snapshot(self, snapshot: StoredSnapshot) -> None:
        if self.fail_snapshots:
            raise fes.errors.StoreError("the disk is full")
        self.inner.save_snapshot(snapshot)

    def take_reads(self) -> list[Read]:
        """The reads since the last call."""
        reads, self.reads = self.reads, []
        return reads


def spy(application: Application, *, fail_snapshots: bool = False) -> SpyStore:
    """Put a spy between an application and its store."""
    store = SpyStore(application.store, fail_snapshots=fail_snapshots)
    application.store = store  # type: ignore[assignment]
    return store


def racing(
    other: Application, stream: str, times: int
) -> tuple[Callable[[Dog, str], list[TrickAdded]], list[int]]:
    """``add_trick``, except that ``other`` appends to ``stream`` the first ``times`` calls.

    Returns the command and the list of versions (trick counts) it was called on,
    which stages a lost race deterministically, once per call.
    """
    seen: list[int] = []

    def add_trick_in_a_race(dog: Dog, trick: str) -> list[TrickAdded]:
        seen.append(len(dog.tricks))
        if len(seen) <= times:
            other.execute(dogs, stream, add_trick, f"interruption {len(seen)}")
        return add_trick(dog, trick)

    return add_trick_in_a_race, seen


def tricks(application: Application, stream: str) -> list[str]:
    """The tricks a dog knows, as the application reads them now."""
    state = application.get(dogs, stream)
    return [] if state is None else list(state.tricks)


# --- recording -------------------------------------------------------------------------


def test_execute_records_versions_from_one_and_increasing_positions(place: Place) -> None:
    """Each stream's events get versions 1..n, log positions increase, reads agree."""
    app = place.app(clock=Clock())
    recorded = [
        *app.execute(dogs, "fido", register, "Fido"),
        *app.execute(dogs, "rex", register, "Rex"),
        *app.execute(dogs, "fido", add_trick, "sit"),
        *app.execute(dogs, "rex", add_trick, "beg"),
        *app.execute(dogs, "fido", add_trick, "roll over"),
    ]
    assert [(r.stream, r.version, r.event) for r in recorded] == [
        ("fido", 1, Registered("Fido")),
        ("rex", 1, Registered("Rex")),
        ("fido", 2, TrickAdded("sit")),
        ("rex", 2, TrickAdded("beg")),
        ("fido", 3, TrickAdded("roll over")),
    ]
    assert [r.topic for r in recorded] == [
        "dog.Registered", "dog.Registered", "dog.TrickAdded", "dog.TrickAdded", "dog.TrickAdded",
    ]
    positions = [r.position for r in recorded]
    assert positions == sorted(set(positions)) and positions[0] >= 1
    # what execute returned is exactly what the store gives back
    assert app.stream("fido") == [r for r in recorded if r.stream == "fido"]
    assert app.stream("rex") == [r for r in recorded if r.stream == "rex"]
    assert app.log() == recorded
    assert app.store.last_position() == positions[-1]
    assert app.load(dogs, "fido") == (Dog("Fido", pvector(["sit", "roll over"])), 3)


@pytest.mark.parametrize(
    ("moment", "micros"),
    [
        (START, START_MICROS),
        # the same instant at another offset is stored as the same number
        (datetime(2024, 5, 1, 15, 0, 0, 123457, tzinfo=timezone(timedelta(hours=5, minutes=30))),
         START_MICROS),
        (datetime(1970, 1, 1, tzinfo=UTC), 0),
        (datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), -1),
        (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), 253_402_300_799_999_999),
    ],
    ids=["utc", "offset", "epoch", "before-epoch", "last"],
)
def test_timestamps_come_from_the_clock_to_the_microsecond(
    any_place: Place, moment: datetime, micros: int
) -> None:
    """An event's timestamp is the injected clock's instant, stored and read back exactly."""
    app = any_place.app(clock=Clock(moment))
    [recorded] = app.execute(dogs, "fido", register, "Fido")
    assert recorded.timestamp == moment
    assert recorded.timestamp.utcoffset() == timedelta(0)
    assert app.store.read_stream("fido")[0].timestamp == micros
    [read] = app.stream("fido")
    assert read.timestamp == moment and read.timestamp.utcoffset() == timedelta(0)
    assert app.log()[0].timestamp == moment


def test_each_commit_reads_the_clock_once_for_all_its_events(place: Place) -> None:
    """All events of one append share one timestamp; the next append has the next reading."""
    clock = Clock()
    app = place.app(clock=clock)
    batch = app.batch()
    batch.execute(dogs, "fido", register, "Fido")
    batch.execute(dogs, "fido", add_trick, "sit")
    batch.execute(dogs, "rex", register, "Rex")
    app.commit(batch)
    assert clock.reads == 1
    clock.advance(seconds=1, microseconds=1)
    app.execute(dogs, "rex", add_trick, "beg")
    later = START + timedelta(seconds=1, microseconds=1)
    assert [r.timestamp for r in app.log()] == [START] * 3 + [later]
    # read in another order, each row still gets its own timestamp
    assert [r.timestamp for r in app.stream("rex", descending=True)] == [later, START]
    assert [r.timestamp for r in app.stream("fido")] == [START, START]


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))]
        ),
    )
)
def test_microseconds_round_trip_every_aware_datetime(moment: datetime) -> None:
    """Converting an aware datetime to epoch microseconds and back gives the same instant."""
    micros = to_micros(moment)
    assert micros_datetime(micros) == moment
    assert to_micros(moment + timedelta(microseconds=1)) == micros + 1


def test_metadata_is_stored_and_read_back(place: Place) -> None:
    """Correlation, causation and headers round-trip; an event without any has none."""
    app = place.app()
    full = Metadata(
        correlation_id="request-42",
        causation_id="request-42",
        headers={"user": "ann", "note": "café ☕", "": ""},
    )
    headers_only = Metadata(headers={"user": "bob"})
    causation_only = Metadata(causation_id="school/fido@1")
    expected = [full, headers_only, causation_only, NO_METADATA]
    returned = [
        *app.execute(dogs, "fido", register, "Fido", metadata=full),
        *app.execute(dogs, "fido", add_trick, "sit", metadata=headers_only),
        *app.execute(dogs, "fido", add_trick, "beg", metadata=causation_only),
        *app.execute(dogs, "fido", add_trick, "roll"),
    ]
    assert [r.metadata for r in returned] == expected
    assert [r.metadata for r in app.stream("fido")] == expected
    assert [r.metadata for r in app.log()] == expected
    assert app.store.read_stream("fido")[3].meta is None  # nothing stored for no metadata
    assert app.get(dogs, "fido") == Dog("Fido", pvector(["sit", "beg", "roll"]))


def test_a_batch_keeps_each_commands_metadata(place: Place) -> None:
    """In a batch, every event carries the metadata of the command or emit that made it."""
    app = place.app()
    first, second = Metadata(correlation_id="a"), Metadata(correlation_id="b")
    batch = app.batch()
    batch.execute(dogs, "fido", register, "Fido", metadata=first)
    batch.emit(dogs, "fido", [TrickAdded("sit"), TrickAdded("beg")], metadata=second)
    batch.execute(dogs, "rex", register, "Rex")
    committed = app.commit(batch)
    assert [r.metadata for r in committed] == [first, second, second, NO_METADATA]
    assert [r.metadata for r in app.log()] == [first, second, second, NO_METADATA]


# --- reading at older versions ---------------------------------------------------------


@pytest.mark.parametrize("snapshot_every", [None, 1, 2, 3])
def test_get_and_load_at_older_versions(any_place: Place, snapshot_every: int | None) -> None:
    """get/load at version v give the state after v events, with or without snapshots."""
    app = any_place.app(snapshot_every=snapshot_every)
    app.execute(dogs, "fido", register, "Fido")
    for trick in ["sit", "beg", "roll", "play dead"]:
        app.execute(dogs, "fido", add_trick, trick)
    history = [
        None,
        Dog("Fido"),
        Dog("Fido", pvector(["sit"])),
        Dog("Fido", pvector(["sit", "beg"])),
        Dog("Fido", pvector(["sit", "beg", "roll"])),
        Dog("Fido", pvector(["sit", "beg", "roll", "play dead"])),
    ]
    reader = any_place.app(snapshot_every=snapshot_every)
    for version, state in enumerate(history):
        assert reader.get(dogs, "fido", version=version) == state
        assert reader.load(dogs, "fido", version=version) == (state, version)
    # a version beyond the stream's end is its current state
    assert reader.load(dogs, "fido", version=99) == (history[-1], 5)
    assert reader.load(dogs, "fido") == (history[-1], 5)
    assert reader.load(dogs, "nobody") == (None, 0)
    assert reader.load(dogs, "nobody", version=3) == (None, 0)


# --- ids -------------------------------------------------------------------------------


def test_name_id_is_stable_and_distinct_per_app_aggregate_and_name(tmp_path: Path) -> None:
    """name_id is a fixed UUID5 of app, aggregate and name, the same in every application."""
    school = Application(SCHOOL, "memory://", env={})
    club = Application(CLUB, f"sqlite:///{tmp_path / 'club.db'}", env={})
    try:
        # pinned: stream ids are stored, so they may never change
        assert school.name_id(dogs, "Fido") == "a24b1729-5b49-5e15-9ffa-eb4d8ee5b44d"
        again = Application(SCHOOL, "memory://", env={})
        assert again.name_id(dogs, "Fido") == school.name_id(dogs, "Fido")
        again.close()
        assert UUID(club.name_id(dogs, "Fido")).version == 5
        ids = {
            school.name_id(dogs, "Fido"),
            school.name_id(dogs, "Rex"),
            school.name_id(dogs, "fido"),
            club.name_id(dogs, "Fido"),
            club.name_id(accounts, "Fido"),
            club.name_id(accounts, "Rex"),
        }
        assert len(ids) == 6
        assert school.store.last_position() == 0  # deriving an id touches no store
        for name in [5, None, b"Fido"]:  # 5 would otherwise name the stream of "5"
            with pytest.raises(fes.errors.ConfigurationError, match="name_id needs a str name"):
                school.name_id(dogs, name)  # type: ignore[arg-type]
    finally:
        school.close()
        club.close()


def test_new_id_comes_from_the_injected_id_factory() -> None:
    """new_id is the id factory's next UUID as a string."""
    numbers = itertools.count(1)
    with Application(SCHOOL, "memory://", ids=lambda: UUID(int=next(numbers)), env={}) as app:
        assert app.new_id() == "00000000-0000-0000-0000-000000000001"
        assert app.new_id() == "00000000-0000-0000-0000-000000000002"
        assert next(numbers) == 3  # called exactly once per id


# --- commands that refuse --------------------------------------------------------------


def test_what_is_not_an_aggregate_is_refused_as_one(place: Place) -> None:
    """A name, or another object that is not an aggregate, is a DefinitionError."""
    app = place.app()
    for wrong in ["dog", None, register]:
        with pytest.raises(
            fes.errors.DefinitionError, match="one of the aggregates of application 'school'"
        ):
            app.get(wrong, "fido")  # type: ignore[arg-type]
        with pytest.raises(fes.errors.DefinitionError):
            app.execute(wrong, "fido", register, "Fido")  # type: ignore[arg-type]
    assert app.store.last_position() == 0


def test_name_id_refuses_what_is_not_an_aggregate(place: Place) -> None:
    """name_id("dog", ...) is a DefinitionError, as get and execute say."""
    with pytest.raises(
        fes.errors.DefinitionError, match="expected one of the aggregates of application 'school'"
    ):
        place.app().name_id("dog", "fido")  # type: ignore[arg-type]


def test_a_command_that_is_not_a_function_is_a_command_error(place: Place) -> None:
    """execute(dogs, stream, 42) names the aggregate; nothing is stored."""
    app = place.app()
    with pytest.raises(fes.CommandError, match="a command of aggregate 'dog' is a function"):
        app.execute(dogs, "fido", 42)  # type: ignore[arg-type]
    assert app.store.last_position() == 0


def test_a_batch_commits_only_through_the_application_that_made_it(tmp_path: Path) -> None:
    """A batch decided on one application's store is refused by another: nothing is stored."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    office_app = fes.App("office", aggregates=(dogs,))
    with Application(SCHOOL, url) as school, Application(office_app, url) as office:
        batch = school.batch()
        batch.execute(dogs, "dog-1", register, "Fido")
        with pytest.raises(
            fes.errors.ConfigurationError,
            match=r"batch\(\) \('office'\), not a batch of application 'school':",
        ) as refused:
            office.commit(batch)
        assert "pending" not in str(refused.value)  # (it used to show the batch's repr)
        for wrong in ([], None, batch.pending):
            with pytest.raises(
                fes.errors.ConfigurationError, match="a batch made by this very Application"
            ):
                office.commit(wrong)  # type: ignore[arg-type]
        with Application(SCHOOL, url) as twin, pytest.raises(
            fes.errors.ConfigurationError,
            # (it said "by this application's ('school') batch(), not a batch of application
            # 'school'", which reads as a contradiction)
            match="not a batch of another Application object of 'school'",
        ):
            twin.commit(batch)
        with pytest.raises(fes.errors.ConfigurationError, match="tracking must be a Tracking"):
            school.commit(batch, tracking=("up", 2, 1))  # type: ignore[arg-type]
        with pytest.raises(fes.errors.ConfigurationError, match="prefetch takes an iterable"):
            batch.prefetch(None)  # type: ignore[arg-type]
        assert school.store.last_position() == office.store.last_position() == 0
        school.commit(batch)
        assert office.stream("dog-1") == [] and len(school.stream("dog-1")) == 1


def test_a_committed_batch_takes_no_more(any_place: Place) -> None:
    """A second commit, a command, an emit, a look, a prefetch or a rollback is refused.

    (A second commit used to raise ConcurrencyError "expected version 1",
    and a rollback after the commit did nothing, silently.)
    """
    app = any_place.app()
    batch = app.batch()
    mark = batch.savepoint()
    batch.execute(dogs, "dog-1", register, "Fido")
    assert not batch.committed
    app.commit(batch)
    assert batch.committed
    said = "this batch was committed"
    with pytest.raises(fes.errors.ConfigurationError, match="committed already"):
        app.commit(batch)
    for after in (
        lambda: batch.execute(dogs, "dog-1", add_trick, "sit"),
        lambda: batch.execute(dogs, "dog-2", register, "Rex"),
        lambda: batch.emit(dogs, "dog-3", [Registered("Luna")]),
        lambda: batch.state(dogs, "dog-2"),
        lambda: batch.rollback(mark),
        lambda: batch.savepoint(),
        lambda: batch.prefetch(["dog-4"]),
    ):
        with pytest.raises(fes.errors.ConfigurationError, match=said):
            after()
    assert [r.version for r in app.stream("dog-1")] == [1] and app.stream("dog-2") == []
    assert batch.state(dogs, "dog-1") == app.get(dogs, "dog-1")  # still shown, as committed
    fresh = app.batch()  # the way on
    fresh.execute(dogs, "dog-1", add_trick, "sit")
    assert [r.version for r in app.commit(fresh)] == [2]


def test_a_ciphertext_copied_into_another_applications_table_is_refused(
    tmp_path: Path,
) -> None:
    """Two applications in one file, one keyring: swapping their rows fails to decrypt."""
    path = tmp_path / "fes.db"
    cipher = Cipher({"k": Cipher.generate_key()}, "k")
    office_app = fes.App("office", aggregates=(dogs,))
    with Application(SCHOOL, f"sqlite:///{path}", cipher=cipher) as school, Application(
        office_app, f"sqlite:///{path}", cipher=cipher
    ) as office:
        school.execute(dogs, "dog-1", register, "School secret")
        office.execute(dogs, "dog-1", register, "Office dog")
        with sqlite3.connect(path) as connection:
            (payload,) = connection.execute(
                "SELECT payload FROM school_events WHERE stream = 'dog-1'"
            ).fetchone()
            connection.execute(
                "UPDATE office_events SET payload = ? WHERE stream = 'dog-1'", (payload,)
            )
        connection.close()
        with pytest.raises(fes.errors.CipherError, match="authentication failed"):
            office.get(dogs, "dog-1")
        assert school.get(dogs, "dog-1") == Dog("School secret")


def _summed(total: int, event: Deposited) -> int:
    return total + event.amount


def test_a_snapshot_taken_from_another_initial_state_is_not_used(tmp_path: Path) -> None:
    """A release that changes only the initial state folds from the start, not the snapshot."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    totals = fes.Aggregate("total", 0, fes.projector(_summed, name="total"), events=[Deposited])
    richer = evolve(totals, initial=100)
    with Application(fes.App("bank", aggregates=[totals]), url, snapshot_every=2) as before:
        for _ in range(3):
            before.execute(totals, "acc", lambda total: [Deposited(10)])
        assert before.store.load_snapshot("acc") is not None
    with Application(fes.App("bank", aggregates=[richer]), url, snapshot_every=2) as after:
        assert after.get(richer, "acc") == 130  # trusting the snapshot would give 30


@pytest.mark.parametrize(
    "stream",
    [None, UUID(int=7), "", "a\x00b", "x" * 501],
    ids=["none", "uuid", "empty", "nul", "long"],
)
def test_a_bad_stream_id_is_a_store_error_and_stores_nothing(place: Place, stream: Any) -> None:
    """The same stream ids are refused on every store, before anything is read or stored."""
    app = place.app(snapshot_every=1, cache_size=10)
    with pytest.raises(fes.errors.StoreError, match="a stream id must be a str"):
        app.execute(dogs, stream, register, "Fido")
    with pytest.raises(fes.errors.StoreError, match="a stream id must be a str"):
        app.get(dogs, stream)
    batch = app.batch()
    with pytest.raises(fes.errors.StoreError, match="a stream id must be a str"):
        batch.execute(dogs, stream, register, "Fido")
    assert app.store.last_position() == 0


@pytest.mark.parametrize("version", [-1, "2", 2.0, 2**64], ids=["negative", "str", "float", "big"])
def test_a_bad_version_to_read_at_is_a_store_error(place: Place, version: Any) -> None:
    """A version to read a stream at is an int of 0 or more."""
    app = place.app()
    app.execute(dogs, "fido", register, "Fido")
    with pytest.raises(fes.errors.StoreError, match="version must be an integer of 0 or more"):
        app.get(dogs, "fido", version=version)
    assert app.get(dogs, "fido", version=0) is None


@pytest.mark.parametrize(
    ("read", "name"),
    [
        (lambda app: app.stream("fido", from_version=-1), "from_version"),
        (lambda app: app.stream("fido", to_version=-1), "to_version"),
        (lambda app: app.stream("fido", from_version="1"), "from_version"),
        (lambda app: app.log(after=-1), "after"),
        (lambda app: app.log(after=1.0), "after"),
    ],
    ids=["from_version", "to_version", "from_version str", "after", "after float"],
)
def test_reads_refuse_a_version_or_position_below_0(
    place: Place, read: Callable[[Application], object], name: str
) -> None:
    """stream() and log() refuse a negative bound as load() does, rather than read from the start.

    (``log(after=-5)`` and ``stream(s, from_version=-1)`` used to return the
    whole log or stream, where ``get(version=-1)`` and ``fes log --after -1``
    refused.)
    """
    app = place.app()
    app.execute(dogs, "fido", register, "Fido")
    with pytest.raises(fes.errors.StoreError, match=f"^{name} must be an integer of 0 or more"):
        read(app)
    assert [r.version for r in app.stream("fido", from_version=0, to_version=0)] == []
    assert [r.version for r in app.stream("fido", from_version=0)] == [1]
    assert [r.position for r in app.log(after=0)] == [1]


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ("trace-1", "it is not a fes.Metadata"),
        # Metadata(...) refuses these itself; made around its checks, the edge refuses them
        (new_metadata(7, None, pmap()), "its correlation_id is not a str"),  # type: ignore[arg-type]
        (new_metadata(None, b"c", pmap()), "its causation_id is not a str"),  # type: ignore[arg-type]
        (new_metadata(None, None, pmap({"n": 1})), "its headers are not all str: str"),
    ],
)
def test_metadata_that_would_not_read_back_is_refused(
    place: Place, metadata: Any, problem: str
) -> None:
    """Metadata is checked before anything is stored (in a batch, when added); good goes through."""
    app = place.app()
    with pytest.raises(
        fes.errors.StoreError, match=f"cannot store metadata .*: {problem}; nothing"
    ):
        app.execute(dogs, "fido", register, "Fido", metadata=metadata)
    batch = app.batch()
    with pytest.raises(fes.errors.EncodeError, match=problem):
        batch.execute(dogs, "fido", register, "Fido", metadata=metadata)
    assert len(batch) == 0
    app.commit(batch)
    assert app.store.last_position() == 0
    with pytest.raises(fes.errors.ConfigurationError, match="headers must be a mapping"):
        Metadata(headers="n=1")  # type: ignore[arg-type]
    app.execute(dogs, "fido", register, "Fido", metadata=Metadata("c", "d", {"n": "1"}))
    assert app.log()[0].metadata == Metadata("c", "d", {"n": "1"})


def test_log_refuses_topics_that_are_not_topics(place: Place) -> None:
    """One topic or an iterable of them; anything else is a StoreError."""
    app = place.app()
    app.execute(dogs, "fido", register, "Fido")
    with pytest.raises(fes.errors.StoreError, match="topics must be a topic or an iterable"):
        app.log(topics=5)  # type: ignore[arg-type]
    assert len(app.log(topics="dog.Registered")) == 1


def test_loading_another_aggregates_stream_names_the_stream(place: Place) -> None:
    """An event the aggregate does not own: the message names the stream, not a handler."""
    app = place.app(fes.App("mixed", aggregates=[dogs, accounts]))
    app.execute(dogs, "fido", register, "Fido")
    for load in [
        lambda: app.get(accounts, "fido"),
        lambda: app.execute(accounts, "fido", deposit, 5),
        lambda: app.batch().execute(accounts, "fido", deposit, 5),
    ]:
        with pytest.raises(fes.errors.UnhandledEvent) as caught:
            load()
        assert str(caught.value) == (
            "stream 'fido' holds an event of type 'Registered', which aggregate 'account' "
            "does not own: does the stream belong to another aggregate?"
        )
        assert caught.value.event_type is Registered
        assert caught.value.where == "account"
    assert app.store.last_position() == 1


@frozen
class Poked:
    times: int


def test_an_owned_event_the_projector_refuses_keeps_its_message(place: Place) -> None:
    """An owned event type the projector cannot fold: its message, and a note naming the stream."""
    refusing = [False]

    def strict(state: Any, event: Any) -> Any:  # comes to refuse what is stored
        if refusing[0]:
            raise fes.errors.UnhandledEvent(type(event), "picky")
        return event.times

    def poke(state: Any, times: int) -> list[Poked]:
        return [Poked(times)]

    picky = fes.Aggregate("picky", initial=0, apply=strict, events=(Poked,))
    app = place.app(fes.App("pokes", aggregates=[picky]))
    app.execute(picky, "box", poke, 2)
    refusing[0] = True
    with pytest.raises(fes.errors.UnhandledEvent, match="'Poked' in picky;") as caught:
        app.get(picky, "box")
    assert caught.value.__notes__ == [
        "while loading stream 'box' as aggregate 'picky': "
        "does the stream belong to another aggregate?"
    ]


def test_rejected_stores_nothing(place: Place) -> None:
    """A command raising Rejected propagates it and appends nothing, in execute or a batch."""
    clock = Clock()
    app = place.app(BANK, clock=clock)
    app.execute(accounts, "acc", open_account, "ann")
    app.execute(accounts, "acc", deposit, 100)
    before = app.store.last_position()
    reads = clock.reads
    with pytest.raises(fes.Rejected, match="insufficient funds: balance 100"):
        app.execute(accounts, "acc", withdraw, 101)
    with pytest.raises(fes.Rejected, match="already open"):
        app.execute(accounts, "acc", open_account, "bob")
    assert app.store.last_position() == before
    assert clock.reads == reads
    assert app.load(accounts, "acc") == (Account("ann", 100), 2)

    batch = app.batch()
    batch.execute(accounts, "acc", deposit, 5)
    with pytest.raises(fes.Rejected):
        batch.execute(accounts, "acc", withdraw, 1000)
    assert len(batch) == 1  # the refused command added nothing to the batch
    assert [r.event for r in app.commit(batch)] == [Deposited(5)]


def test_a_command_on_a_state_it_does_not_accept_is_a_command_error(place: Place) -> None:
    """A command given a state of the wrong type raises CommandError and stores nothing."""
    app = place.app(CLUB)
    with pytest.raises(fes.CommandError, match=r"'add_trick' of aggregate 'dog' expects Dog"):
        app.execute(dogs, "fido", add_trick, "sit")
    with pytest.raises(fes.CommandError, match="no state yet"):
        app.execute(accounts, "acc", deposit, 10)
    app.execute(dogs, "fido", register, "Fido")
    with pytest.raises(fes.CommandError, match="does not own"):
        app.execute(dogs, "fido", lambda dog: [AccountOpened("ann")])
    assert app.store.last_position() == 1
    assert app.stream("acc") == []


# --- optimistic concurrency ------------------------------------------------------------


def test_a_stale_batch_names_stream_and_versions_and_stores_nothing(any_place: Place) -> None:
    """Committing a batch decided on an old version raises ConcurrencyError; nothing is kept."""
    front, trainer = any_place.app(), any_place.app()
    front.execute(dogs, "fido", register, "Fido")
    batch = front.batch()
    batch.execute(dogs, "fido", add_trick, "sit")  # decided on version 1
    trainer.execute(dogs, "fido", add_trick, "beg")
    trainer.execute(dogs, "fido", add_trick, "roll")
    last = front.store.last_position()
    with pytest.raises(fes.ConcurrencyError) as caught:
        front.commit(batch)
    assert (caught.value.stream, caught.value.expected, caught.value.actual) == ("fido", 1, 3)
    assert "'fido' is at version 3" in str(caught.value)
    assert front.store.last_position() == last
    assert tricks(front, "fido") == ["beg", "roll"]
    assert tricks(trainer, "fido") == ["beg", "roll"]


def test_a_stale_stream_refuses_the_whole_batch(any_place: Place) -> None:
    """One stale stream in a batch stores nothing in any of its streams."""
    front, trainer = any_place.app(), any_place.app()
    front.execute(dogs, "bella", register, "Bella")
    front.execute(dogs, "luna", register, "Luna")
    batch = front.batch()
    batch.execute(dogs, "new", register, "New")  # a stream nobody wrote to
    batch.execute(dogs, "bella", add_trick, "sit")
    batch.execute(dogs, "luna", add_trick, "wave")
    batch.execute(dogs, "new", add_trick, "sit")
    trainer.execute(dogs, "bella", add_trick, "bow")
    last = front.store.last_position()
    with pytest.raises(fes.ConcurrencyError) as caught:
        front.commit(batch)
    assert (caught.value.stream, caught.value.expected, caught.value.actual) == ("bella", 1, 2)
    assert front.store.last_position() == last
    assert front.stream("new") == []
    assert front.load(dogs, "luna") == (Dog("Luna"), 1)
    assert tricks(front, "bella") == ["bow"]
    # a batch decided afresh goes through
    retry = front.batch()
    retry.execute(dogs, "bella", add_trick, "sit")
    retry.execute(dogs, "luna", add_trick, "wave")
    assert [(r.stream, r.version) for r in front.commit(retry)] == [("bella", 3), ("luna", 2)]


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_execute_retries_a_lost_race_up_to_retries_times(any_place: Place, retries: int) -> None:
    """execute reloads and decides again after each conflict, up to ``retries`` times."""
    front, trainer = any_place.app(retries=retries), any_place.app()
    front.execute(dogs, "bella", register, "Bella")
    command, seen = racing(trainer, "bella", times=retries)
    [recorded] = front.execute(dogs, "bella", command, "sit")
    # each attempt decided on the state the previous interruption left
    assert seen == list(range(retries + 1))
    assert (recorded.version, recorded.event) == (retries + 2, TrickAdded("sit"))
    assert tricks(front, "bella") == [f"interruption {n}" for n in range(1, retries + 1)] + ["sit"]


@pytest.mark.parametrize("retries", [0, 2])
def test_execute_raises_the_conflict_when_retries_run_out(any_place: Place, retries: int) -> None:
    """After ``retries`` lost retries, the last ConcurrencyError is raised and nothing stored.

    Its message says how many tries lost (the conflict alone reads as one),
    so that a log keeping only ``str(error)`` keeps that too.
    """
    front, trainer = any_place.app(retries=retries), any_place.app()
    front.execute(dogs, "bella", register, "Bella")
    command, seen = racing(trainer, "bella", times=retries + 1)
    with pytest.raises(fes.ConcurrencyError) as caught:
        front.execute(dogs, "bella", command, "sit")
    assert len(seen) == retries + 1
    assert (caught.value.expected, caught.value.actual) == (retries + 1, retries + 2)
    assert str(caught.value) == (
        f"stream 'bella' is at version {retries + 2}, but the append expected version "
        f"{retries + 1}; nothing was stored; execute's tries: {retries + 1} "
        f"(retries={retries}), another writer appended to the stream first each time"
    )
    assert not hasattr(caught.value, "__notes__")
    assert tricks(front, "bella") == [f"interruption {n}" for n in range(1, retries + 2)]


def test_execute_waits_a_random_moment_before_each_retry(
    any_place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before each retry, and only then, execute waits at random, up to a bound that grows.

    The bound is 4, 8, 16... times what the lost try took, and never more
    than 50 ms; the try that exhausts the retries raises at once.
    """
    bounds: list[float] = []
    waits: list[float] = []
    monkeypatch.setattr(_application, "_jitter", lambda low, high: bounds.append(high) or high / 2)
    monkeypatch.setattr(_application, "_sleep", waits.append)
    front, trainer = any_place.app(retries=2), any_place.app()
    front.execute(dogs, "bella", register, "Bella")
    fresh = front.new_id()
    trainer.execute(dogs, fresh, register, "Rex")
    with pytest.raises(fes.Rejected):  # the read-free first try lost: read, then refused
        front.execute(dogs, fresh, register, "Max")
    assert waits == []
    command, seen = racing(trainer, "bella", times=2)
    front.execute(dogs, "bella", command, "sit")
    assert len(seen) == 3 and len(bounds) == 2
    assert all(0 < bound <= _application.RETRY_WAIT_CAP for bound in bounds)
    assert waits == [bound / 2 for bound in bounds]
    front.execute(dogs, "luna", register, "Luna")
    command, seen = racing(trainer, "luna", times=3)
    with pytest.raises(fes.ConcurrencyError):
        front.execute(dogs, "luna", command, "sit")
    assert len(seen) == 3 and len(waits) == 4  # two more waits: none before raising


def test_threads_of_one_application_take_turns_on_a_stream(any_place: Place) -> None:
    """A thread runs its command on a stream while the application's other threads wait.

    The first thread's command lingers (half a second) for the second thread's
    command on the same stream to be appended meanwhile.  Were the threads
    not taking turns, it would be, and the first append would lose the race:
    with no retries, a ConcurrencyError.  Taking turns, the second thread
    waits; both commands are recorded, one after the other.  A command on
    another stream does not wait.
    """
    front = any_place.app(retries=0)
    # another stream, on another of the 256 locks (string hashes vary by process)
    turns = _application.TURNS
    luna = next(
        name for name in (f"luna {n}" for n in range(1000))
        if hash(name) % turns != hash("bella") % turns
    )
    front.execute(dogs, "bella", register, "Bella")
    front.execute(dogs, luna, register, "Luna")
    deciding, second_done, other_done = (threading.Event() for _ in range(3))
    results: dict[str, Any] = {}

    def lingering(dog: Dog, trick: str) -> list[TrickAdded]:
        deciding.set()
        results["other stream while deciding"] = other_done.wait(10)
        results["second while deciding"] = second_done.wait(0.5)
        return add_trick(dog, trick)

    def run(name: str, stream: str, command: Any, trick: str, done: threading.Event) -> None:
        try:
            results[name] = front.execute(dogs, stream, command, trick)
        except Exception as error:  # asserted on below
            results[name] = error
        done.set()

    first = threading.Thread(
        target=run, args=("first", "bella", lingering, "sit", threading.Event())
    )
    first.start()
    assert deciding.wait(5)
    second = threading.Thread(target=run, args=("second", "bella", add_trick, "beg", second_done))
    other = threading.Thread(target=run, args=("other", luna, add_trick, "wave", other_done))
    second.start()
    other.start()
    for thread in (first, second, other):
        thread.join(10)
    assert results["other stream while deciding"] is True
    assert results["second while deciding"] is False
    assert not any(isinstance(results[name], Exception) for name in ("first", "second", "other"))
    assert [r.version for r in results["first"]] == [2]
    assert [r.version for r in results["second"]] == [3]
    assert tricks(front, "bella") == ["sit", "beg"]
    assert tricks(front, luna) == ["wave"]


def test_threads_hammering_one_stream_need_no_retries(place: Place) -> None:
    """Four threads of one application, 25 commands each on one stream, with no retries."""
    front = place.app(retries=0)
    front.execute(dogs, "bella", register, "Bella")
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def hammer(thread: int) -> None:
        start.wait()
        for n in range(25):
            try:
                front.execute(dogs, "bella", add_trick, f"{thread}.{n}")
            except Exception as error:  # asserted on below
                failures.append(error)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(hammer, range(4)))
    assert failures == []
    learned = tricks(front, "bella")
    assert sorted(learned) == sorted(f"{t}.{n}" for t in range(4) for n in range(25))
    for t in range(4):  # each thread's commands in its order
        mine = [trick for trick in learned if trick.startswith(f"{t}.")]
        assert mine == [f"{t}.{n}" for n in range(25)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries must be an integer of 0 or more, got -1"),
        ({"retries": "3"}, "retries must be an integer of 0 or more, got '3'"),
        ({"retries": 1.5}, "retries must be an integer of 0 or more, got 1.5"),
        ({"cache_size": -1}, "cache_size must be an integer of 0 or more, got -1"),
        ({"cache_size": "10"}, "cache_size must be an integer of 0 or more"),
        ({"clock": "now"}, "clock must be a function, not 'now'"),
        ({"ids": 7}, "ids must be a function, not 7"),
        ({"store": 5}, "store must be a store URL or an open Database, not 5"),
        ({"app": "school"}, "an Application runs a fes.App, not 'school'"),
        ({"compress": 12}, "compress must be a bool or a zlib level"),
        ({"compress": "yes"}, "compress must be a bool or a zlib level"),
        ({"cipher": "k"}, "cipher must be a fes Cipher"),
        ({"env": [("FES_COMPRESS", "1")]}, "env must be a mapping"),
        ({"env": {"FES_CIPHER_KEYS": "a:not base64!"}}, "not valid base64"),
    ],
)
def test_bad_arguments_are_refused_before_a_database_is_opened(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    """Each argument is checked first: a refused Application leaves no file behind."""
    path = tmp_path / "fes.db"
    arguments: dict[str, Any] = {"app": SCHOOL, "store": f"sqlite:///{path}", "env": {}}
    arguments.update(options)
    with pytest.raises(fes.errors.ConfigurationError, match=message):
        Application(**arguments)
    assert not path.exists()


# --- batches ---------------------------------------------------------------------------


def test_a_batch_across_streams_is_appended_together(any_place: Place) -> None:
    """A committed batch stores all its streams' events, in batch order, in one append."""
    app = any_place.app()
    [first] = app.execute(dogs, "rex", register, "Rex")
    batch = app.batch()
    batch.execute(dogs, "fido", register, "Fido")
    batch.execute(dogs, "rex", add_trick, "sit")
    batch.execute(dogs, "fido", add_trick, "beg")
    batch.emit(dogs, "luna", [Registered("Luna")])
    assert len(batch) == 4
    assert app.get(dogs, "fido") is None  # nothing is stored before commit
    committed = app.commit(batch)
    # in the order they were added, as if each had been committed in turn
    assert [(r.stream, r.version, r.event) for r in committed] == [
        ("fido", 1, Registered("Fido")),
        ("rex", 2, TrickAdded("sit")),
        ("fido", 2, TrickAdded("beg")),
        ("luna", 1, Registered("Luna")),
    ]
    positions = [r.position for r in committed]
    assert positions == sorted(set(positions))
    assert app.log(after=first.position) == committed
    assert len({r.timestamp for r in committed}) == 1


#: What a batch is asked to do: add events to one of three streams (by a
#: command, or by emit, one or two at a time), look at a stream's state
#: (which makes its slot, empty, without adding), mark, or roll back to a mark.
BATCH_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("execute"), st.integers(0, 2), st.just(1)),
        st.tuples(st.just("emit"), st.integers(0, 2), st.integers(1, 2)),
        st.tuples(st.just("state"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("mark"), st.just(0), st.just(0)),
        st.tuples(st.just("rollback"), st.integers(0, 3), st.just(0)),
    ),
    max_size=25,
)
_BATCH_RUNS = itertools.count()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=BATCH_STEPS, existing=st.sets(st.integers(0, 2)))
def test_a_batch_records_its_events_in_the_order_they_were_added(
    any_place: Place, steps: list[tuple[str, int, int]], existing: set[int]
) -> None:
    """Whatever the streams, savepoints and rollbacks, the log keeps the order of addition.

    A follower's batch of many upstream events must record what it would
    have recorded one upstream event at a time, in the same order: a
    downstream follower of it then sees the same log whatever the batch size.
    (A batch used to record its events stream by stream.)
    """
    app = any_place.app()
    run = next(_BATCH_RUNS)
    streams = [f"dog-{run}-{i}" for i in range(3)]
    for i in existing:  # streams with events before the batch
        app.execute(dogs, streams[i], register, f"dog {i}")
    before = app.store.last_position()
    batch = app.batch()
    added: list[tuple[str, Any]] = []  # what the log must hold, in order
    marks: list[tuple[int, int]] = []  # (savepoint, how many were added then)
    tricks = itertools.count()
    for kind, which, many in steps:
        stream = streams[which % 3]
        if kind == "mark":
            marks.append((batch.savepoint(), len(added)))
        elif kind == "rollback":
            if marks:
                mark, held = marks[min(which, len(marks) - 1)]
                del marks[min(which, len(marks) - 1) + 1:]
                batch.rollback(mark)
                del added[held:]
        elif kind == "state":
            batch.state(dogs, stream)
        else:
            new: list[Any] = []
            if batch.state(dogs, stream) is None:
                new.append(Registered(f"dog {which}"))
            new += [TrickAdded(f"trick {next(tricks)}") for _ in range(many - len(new))]
            if kind == "emit":
                batch.emit(dogs, stream, new)
            elif isinstance(new[0], Registered):
                batch.execute(dogs, stream, register, new[0].name)
            else:
                batch.execute(dogs, stream, add_trick, new[0].trick)
            added += [(stream, event) for event in new]
    committed = app.commit(batch)
    assert [(r.stream, r.event) for r in committed] == added
    assert [(r.stream, r.event) for r in app.log(after=before)] == added
    assert [r.position for r in committed] == [r.position for r in app.log(after=before)]
    for stream in streams:  # each stream's versions run on from what it held
        versions = [r.version for r in app.stream(stream)]
        assert versions == list(range(1, len(versions) + 1))


def test_batch_execute_folds_the_pending_events(place: Place) -> None:
    """Commands in one batch see the events earlier commands added to the same stream."""
    app = place.app(BANK)
    batch = app.batch()
    batch.execute(accounts, "acc", open_account, "ann")  # the stream is empty in the store
    batch.execute(accounts, "acc", deposit, 100)
    with pytest.raises(fes.Rejected, match="balance 100"):
        batch.execute(accounts, "acc", withdraw, 150)
    batch.execute(accounts, "acc", set_overdraft_limit, 50)
    batch.execute(accounts, "acc", withdraw, 150)  # allowed only by the pending limit
    assert batch.state(accounts, "acc") == Account("ann", -50, 50)
    assert app.get(accounts, "acc") is None
    committed = app.commit(batch)
    assert [r.version for r in committed] == [1, 2, 3, 4]
    assert app.load(accounts, "acc") == (Account("ann", -50, 50), 4)


def test_batch_emit_refuses_events_that_do_not_fold(place: Place) -> None:
    """emit folds its events onto the pending state: an event the projector lacks is refused.

    An event of a type the aggregate does not own says so, as a command
    returning one does (it used to advise adding a handler to the aggregate).
    """
    app = place.app()
    batch = app.batch()
    with pytest.raises(
        fes.CommandError,
        match="emitted to stream 'fido' of aggregate 'dog' an event of type Deposited, which "
        "aggregate 'dog' does not own: emit it to a stream of the aggregate that owns it",
    ):
        batch.emit(dogs, "fido", [Registered("Fido"), Deposited(5)])
    with pytest.raises(fes.CommandError, match="type Deposited, which aggregate 'dog'"):
        batch.emit(dogs, "rex", [Deposited(5)])  # a new stream: its first events
    unowned = fes.Aggregate("loose", None, fes.projector(registered))
    loose = Application(fes.App("loose", aggregates=[unowned]), store="memory://")
    with loose, pytest.raises(fes.errors.UnhandledEvent, match="add a handler"):
        # it names no events it owns: a missing handler, as before
        loose.batch().emit(unowned, "fido", [Deposited(5)])
    for one in [Registered("Fido"), "Fido"]:  # one event, not a list of them
        with pytest.raises(fes.CommandError, match="emit takes an iterable of events"):
            batch.emit(dogs, "fido", one)  # type: ignore[arg-type]
    assert len(batch) == 0
    assert app.commit(batch) == []


def test_prefetch_starts_new_streams_without_reading_them(any_place: Place) -> None:
    """After prefetch, new streams start from the initial state; known ones load as usual."""
    app, rival = any_place.app(), any_place.app()
    app.execute(dogs, "rex", register, "Rex")
    batch = app.batch()
    batch.prefetch(["rex", "fido", "luna", "fido"])
    reads: list[str] = []
    original = app.store.read_payloads

    def spied(stream: str, **options: Any) -> list[tuple[int, str, bytes]]:
        reads.append(stream)
        return original(stream, **options)

    app.store.read_payloads = spied  # type: ignore[method-assign]
    try:
        batch.execute(dogs, "fido", register, "Fido")
        batch.execute(dogs, "rex", add_trick, "sit")
        assert batch.state(dogs, "rex") == Dog("Rex", pvector(["sit"]))
        assert reads == ["rex"]
        # a stream another writer creates after the prefetch still conflicts
        batch.execute(dogs, "luna", register, "Luna")
        rival.execute(dogs, "luna", register, "Not Luna")
        with pytest.raises(fes.ConcurrencyError) as caught:
            app.commit(batch)
    finally:
        del app.store.read_payloads
    assert (caught.value.stream, caught.value.expected, caught.value.actual) == ("luna", 0, 1)
    assert app.get(dogs, "fido") is None


def test_a_command_on_a_prefetched_stream_is_checked_and_undone_as_any(place: Place) -> None:
    """A new stream's slot is made with its first event: refusals leave no trace behind.

    Another application's aggregate is refused, a command that rejects adds
    nothing, a rollback takes the stream's first event back, and the
    stream then takes a command as a stream never used.
    """
    app = place.app(CLUB)
    stranger = evolve(accounts, name="dog")  # the name of one of its aggregates, not it
    batch = app.batch()
    batch.prefetch(["fido", "rex"])
    with pytest.raises(fes.errors.DefinitionError, match="not one of the aggregates of"):
        batch.execute(stranger, "fido", open_account, "ann")
    with pytest.raises(fes.Rejected, match="needs a name"):
        batch.execute(dogs, "fido", register, "")
    assert len(batch) == 0 and "fido" not in batch.pending
    mark = batch.savepoint()
    batch.execute(dogs, "fido", register, "Fido")
    assert batch.state(dogs, "fido") == Dog("Fido")
    batch.rollback(mark)
    assert len(batch) == 0 and "fido" not in batch.pending
    assert batch.execute(dogs, "fido", register, "Fido") == [Registered("Fido")]
    batch.execute(dogs, "fido", add_trick, "sit")
    with pytest.raises(fes.FesError, match="used as 'dog' and 'account'"):
        batch.emit(accounts, "fido", [])
    assert [(r.stream, r.version) for r in app.commit(batch)] == [("fido", 1), ("fido", 2)]
    assert app.get(dogs, "fido") == Dog("Fido", pvector(["sit"])) and app.get(dogs, "rex") is None


def test_prefetch_takes_one_stream_id_as_one_stream(place: Place) -> None:
    """A single id passed as a string is one stream, not one stream per letter."""
    app = place.app()
    asked: list[list[str]] = []
    original = app.store.stream_versions

    def spied(streams: Any) -> Any:
        asked.append(list(streams))
        return original(streams)

    app.store.stream_versions = spied  # type: ignore[method-assign]
    try:
        app.batch().prefetch("fido")
    finally:
        del app.store.stream_versions
    assert asked == [["fido"]]


def test_one_stream_cannot_be_two_aggregates_in_a_batch(place: Place) -> None:
    """A batch refuses to use one stream as two of the application's aggregates."""
    app = place.app(CLUB)
    batch = app.batch()
    batch.execute(dogs, "shared", register, "Fido")
    with pytest.raises(fes.FesError, match="used as 'dog' and 'account'"):
        batch.execute(accounts, "shared", open_account, "ann")


def test_a_committed_batch_cannot_be_committed_again(place: Place) -> None:
    """Committing the same batch twice is refused, saying so (it was a ConcurrencyError)."""
    app = place.app()
    batch = app.batch()
    batch.execute(dogs, "fido", register, "Fido")
    app.commit(batch)
    with pytest.raises(fes.errors.ConfigurationError, match="committed already"):
        app.commit(batch)
    assert len(app.stream("fido")) == 1


def test_a_rollback_takes_back_what_was_added_since_its_savepoint(place: Place) -> None:
    """Events, commands and new streams added after the mark are gone; earlier ones stay."""
    app = place.app()
    app.execute(dogs, "rex", register, "Rex")
    batch = app.batch()
    batch.execute(dogs, "fido", register, "Fido")
    mark = batch.savepoint()
    batch.execute(dogs, "fido", add_trick, "sit")
    batch.execute(dogs, "rex", add_trick, "roll")
    batch.emit(dogs, "luna", [Registered("Luna")])
    assert len(batch) == 4
    batch.rollback(mark)
    assert len(batch) == 1
    assert batch.state(dogs, "fido") == Dog("Fido", pvector())
    assert batch.state(dogs, "rex") == Dog("Rex", pvector())
    assert batch.state(dogs, "luna") is None
    recorded = app.commit(batch)
    assert [(r.stream, r.version) for r in recorded] == [("fido", 1)]


def test_a_savepoint_after_a_rollback_to_an_earlier_one_still_works(place: Place) -> None:
    """Marks nest: rolling back to the inner one, then the outer one, undoes each layer."""
    app = place.app()
    batch = app.batch()
    outer = batch.savepoint()
    batch.execute(dogs, "fido", register, "Fido")
    inner = batch.savepoint()
    batch.execute(dogs, "fido", add_trick, "sit")
    batch.rollback(inner)
    assert len(batch) == 1
    batch.rollback(outer)
    assert len(batch) == 0
    with pytest.raises(fes.errors.ConfigurationError, match="not a savepoint of this batch"):
        batch.rollback(inner)
    assert app.commit(batch) == []


def test_a_batch_refuses_another_batchs_mark_and_marks_it_never_gave(place: Place) -> None:
    """Marks belong to their batch: another's, or a number never given, takes nothing back.

    (A mark was the journal's length alone: another batch's mark emptied this
    one, silently, and 5 was said to be a savepoint "any more".)
    """
    app = place.app()
    one, other = app.batch(), app.batch()
    theirs = one.savepoint()
    other.execute(dogs, "fido", register, "Fido")
    _tricks(other, "sit")
    for mark in (theirs, 0, 1, 5, -1):
        with pytest.raises(
            fes.errors.ConfigurationError,
            match=r"is not a savepoint of this batch \(savepoint\(\) gives its marks\)$",
        ):
            other.rollback(mark)
    assert len(other) == 2
    mine = other.savepoint()
    with pytest.raises(fes.errors.ConfigurationError, match="not a savepoint of this batch"):
        one.rollback(mine)
    assert [r.event for r in app.commit(other)] == [Registered("Fido"), TrickAdded("sit")]


def _tricks(batch: Any, *tricks: str) -> None:
    for trick in tricks:
        batch.execute(dogs, "fido", add_trick, trick)


@pytest.mark.parametrize("marked_between", [0, 1, 2], ids=lambda n: f"{n}-savepoints-between")
def test_a_rollback_to_an_earlier_mark_takes_back_the_later_marks(
    place: Place, marked_between: int
) -> None:
    """A mark a rollback to an earlier one took back is refused, not cut to by its length.

    It used to be taken as the journal's length it held: with no savepoint
    since, rolling back to it did nothing; with one, it took back some of the
    events added after the rollback.
    """
    app = place.app()
    batch = app.batch()
    batch.execute(dogs, "fido", register, "Fido")
    m1 = batch.savepoint()
    _tricks(batch, "sit", "roll")
    m2 = batch.savepoint()
    batch.rollback(m1)
    for i in range(3):
        if i < marked_between:
            batch.savepoint()
        _tricks(batch, f"trick {i}")
    with pytest.raises(
        fes.errors.ConfigurationError,
        match="not a savepoint of this batch any more: a rollback to an earlier savepoint",
    ):
        batch.rollback(m2)
    assert len(batch) == 4  # nothing taken back
    batch.rollback(m1)  # the earlier mark still holds
    assert len(batch) == 1
    with pytest.raises(fes.errors.ConfigurationError, match="any more"):
        batch.rollback(m2)
    assert [r.event for r in app.commit(batch)] == [Registered("Fido")]


def test_marks_taken_after_a_rollback_work_and_earlier_ones_below_it_stay(place: Place) -> None:
    """A rollback takes back only the marks past its own; marks made since are good."""
    app = place.app()
    batch = app.batch()
    start = batch.savepoint()
    batch.execute(dogs, "fido", register, "Fido")
    low = batch.savepoint()
    _tricks(batch, "sit")
    high = batch.savepoint()
    _tricks(batch, "roll")
    batch.rollback(high)  # to the latest mark: low and high both hold
    batch.rollback(high)
    again = batch.savepoint()  # the same place as high
    _tricks(batch, "beg")
    batch.rollback(again)
    assert len(batch) == 2
    batch.rollback(low)
    with pytest.raises(fes.errors.ConfigurationError, match="any more"):
        batch.rollback(again)
    _tricks(batch, "fetch", "stay")
    later = batch.savepoint()
    _tricks(batch, "heel")
    batch.rollback(later)
    assert len(batch) == 3
    with pytest.raises(fes.errors.ConfigurationError, match="any more"):
        batch.rollback(high)  # at the length the batch has passed again
    batch.rollback(low)
    with pytest.raises(fes.errors.ConfigurationError, match="any more"):
        batch.rollback(later)
    batch.rollback(start)
    assert len(batch) == 0
    for stale in (low, high, again, later):
        with pytest.raises(fes.errors.ConfigurationError, match="any more"):
            batch.rollback(stale)
    assert app.commit(batch) == []


MARK_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 3)),
        st.tuples(st.just("mark"), st.just(0)),
        st.tuples(st.just("rollback"), st.integers(0, 12)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps=MARK_STEPS)
def test_savepoints_and_rollbacks_follow_a_model_of_a_list(
    steps: list[tuple[str, int]],
) -> None:
    """Against a list of what was added: a mark is good while the list still starts with
    what it held then (no rollback cut below it since); a rollback to a good mark
    cuts the list back to that, and one to any other is refused, changing nothing.
    """
    app = Application(SCHOOL, "memory://")
    batch = app.batch()
    added: list[str] = []  # what the batch must hold, each trick once
    marks: list[tuple[int, list[str]]] = []  # each mark, with what was added then
    tricks = itertools.count()
    for kind, which in steps:
        if kind == "add":
            new = [f"trick {next(tricks)}" for _ in range(which)]
            stream = f"dog-{which}"
            if batch.state(dogs, stream) is None:
                batch.execute(dogs, stream, register, stream)
                added.append(stream)
            _tricks_on(batch, stream, new)
            added += new
        elif kind == "mark":
            marks.append((batch.savepoint(), list(added)))
        elif marks:
            mark, held = marks[which % len(marks)]
            if added[: len(held)] == held:
                batch.rollback(mark)
                added = list(held)
            else:
                with pytest.raises(fes.errors.ConfigurationError, match="any more"):
                    batch.rollback(mark)
        assert len(batch) == len(added)
    recorded = app.commit(batch)
    assert [getattr(r.event, "trick", None) or r.stream for r in recorded] == added
    app.close()


def _tricks_on(batch: Any, stream: str, tricks: list[str]) -> None:
    for trick in tricks:
        batch.execute(dogs, stream, add_trick, trick)


def test_a_batch_refuses_an_unencodable_event_when_it_is_added(place: Place) -> None:
    """The emit that adds an event the codec cannot store raises; the batch is unchanged."""
    app = place.app()
    batch = app.batch()
    batch.execute(dogs, "fido", register, "Fido")
    with pytest.raises(fes.errors.EncodeError, match="cannot encode"):
        batch.emit(dogs, "rex", [Registered(7)])  # type: ignore[arg-type]
    assert len(batch) == 1
    assert [r.stream for r in app.commit(batch)] == ["fido"]


@pytest.mark.parametrize("stream", ["", "nul\x00", None, "x" * 501])
def test_a_batch_refuses_a_stream_id_no_store_can_keep(place: Place, stream: Any) -> None:
    """Emit and execute raise EncodeError, not a store error to retry; prefetch passes it over."""
    app = place.app()
    batch = app.batch()
    batch.prefetch([stream, "fido"])
    with pytest.raises(fes.errors.EncodeError, match="acts on a stream no store can keep"):
        batch.emit(dogs, stream, [Registered("Fido")])
    with pytest.raises(fes.errors.EncodeError, match="acts on a stream no store can keep"):
        batch.execute(dogs, stream, register, "Fido")
    assert len(batch) == 0


def test_events_encoded_in_a_batch_read_back_sealed_and_compressed(place: Place) -> None:
    """Encoded when added, stamped when committed: a ciphered, compressed batch reads back."""
    cipher = Cipher({"k": bytes(range(32))}, "k")
    app = place.app(cipher=cipher, compress=True)
    times = iter([datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)])
    app.clock = lambda: next(times)
    batch = app.batch()
    batch.execute(dogs, "fido", register, "Fido", metadata=Metadata("c", "d", {"n": "1"}))
    batch.execute(dogs, "fido", add_trick, "sit")
    recorded = app.commit(batch)
    assert [r.timestamp for r in recorded] == [datetime(2026, 1, 1, tzinfo=UTC)] * 2
    assert app.log() == recorded
    assert app.get(dogs, "fido") == Dog("Fido", pvector(["sit"]))


# --- snapshots -------------------------------------------------------------------------


def _fold_prefix(app: Application, stream: str, version: int) -> Any:
    return dogs.fold(r.event for r in app.stream(stream, to_version=version))


def test_a_snapshot_is_saved_when_the_version_crosses_a_multiple(any_place: Place) -> None:
    """With snapshot_every=3, an append that passes 3, 6, … saves the state at its new version."""
    clock = Clock()
    app = any_place.app(snapshot_every=3, clock=clock)
    latest: list[int | None] = []
    app.execute(dogs, "fido", register, "Fido")
    latest.append(getattr(app.store.load_snapshot("fido"), "version", None))
    for n in range(2, 8):
        clock.advance(seconds=1)
        app.execute(dogs, "fido", add_trick, f"trick {n}")
        latest.append(getattr(app.store.load_snapshot("fido"), "version", None))
    assert latest == [None, None, 3, 3, 3, 6, 6]

    numbers = itertools.count(8)

    def append(count: int) -> None:
        batch = app.batch()
        for _ in range(count):
            batch.execute(dogs, "fido", add_trick, f"trick {next(numbers)}")
        app.commit(batch)

    append(5)  # 7 → 12 passes 9 and 12: one snapshot, at 12
    append(2)  # 12 → 14 passes no multiple
    append(2)  # 14 → 16 passes 15: a snapshot at 16
    versions = []
    for bound in [2, 5, 8, 11, 13, 15, 16]:
        snapshot = app.store.load_snapshot("fido", to_version=bound)
        versions.append(None if snapshot is None else snapshot.version)
    assert versions == [None, 3, 6, 6, 12, 12, 16]
    for version in [3, 6, 12, 16]:
        snapshot = app.store.load_snapshot("fido", to_version=version)
        assert snapshot is not None
        assert snapshot.fingerprint == fes.fingerprint(dogs)
        state = app.codec.decode_state(dogs, snapshot.payload, stream="fido", version=version)
        assert state == _fold_prefix(app, "fido", version)
    assert app.store.load_snapshot("fido", to_version=3).timestamp == START_MICROS + 2_000_000


def test_loading_starts_from_the_latest_snapshot(any_place: Place) -> None:
    """A load folds only the events after the latest snapshot at or below the version asked."""
    writer = any_place.app(snapshot_every=4)
    writer.execute(dogs, "fido", register, "Fido")
    for n in range(2, 11):
        writer.execute(dogs, "fido", add_trick, f"trick {n}")
    reader = any_place.app(snapshot_every=4)
    reads = spy(reader)
    assert reader.load(dogs, "fido") == (_fold_prefix(writer, "fido", 10), 10)
    assert reads.take_reads() == [Read("fido", 9, None, 2)]
    assert reader.get(dogs, "fido", version=7) == _fold_prefix(writer, "fido", 7)
    assert reads.take_reads() == [Read("fido", 5, 7, 3)]
    assert reader.get(dogs, "fido", version=3) == _fold_prefix(writer, "fido", 3)
    assert reads.take_reads() == [Read("fido", None, 3, 3)]
    # without snapshot_every the application does not look at snapshots
    plain = any_place.app()
    plain_reads = spy(plain)
    assert plain.get(dogs, "fido") == _fold_prefix(writer, "fido", 10)
    assert plain_reads.take_reads() == [Read("fido", None, None, 10)]


def test_a_snapshot_under_the_current_fingerprint_is_trusted(place: Place) -> None:
    """Loading takes a matching snapshot's state as it is and folds the later events on it."""
    app = place.app(snapshot_every=100)
    app.execute(dogs, "fido", register, "Fido")
    app.execute(dogs, "fido", add_trick, "sit")
    app.execute(dogs, "fido", add_trick, "beg")
    planted = Dog("Planted", pvector(["fly"]))
    app.store.save_snapshot(
        StoredSnapshot(
            "fido", 2, fes.fingerprint(dogs),
            app.codec.encode_state(dogs, planted, stream="fido", version=2), 0,
        )
    )
    assert app.load(dogs, "fido") == (Dog("Planted", pvector(["fly", "beg"])), 3)
    assert app.get(dogs, "fido", version=1) == Dog("Fido")


def test_stored_snapshots_keep_their_bytes(place: Place) -> None:
    """A snapshot taken through fes.snapshots.take is stored in the format stored before."""
    app = place.app()
    app.execute(dogs, "fido", register, "Fido")
    app.execute(dogs, "fido", add_trick, "sit")
    app.take_snapshot(dogs, "fido")
    stored = app.store.load_snapshot("fido")
    assert stored is not None
    assert (stored.stream, stored.version) == ("fido", 2)
    assert stored.payload == b'{"name":"Fido","tricks":["sit"]}'


@pytest.mark.parametrize(
    "payload",
    [b'{"name": 5, "tricks": []}', b'{"tricks": []}', b"\x8f", b"not json", b""],
)
def test_a_snapshot_that_does_not_decode_is_passed_over(
    place: Place, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot under the current fingerprint that fails to decode: the events are folded."""
    app = place.app(snapshot_every=100)
    app.execute(dogs, "fido", register, "Fido")
    app.execute(dogs, "fido", add_trick, "sit")
    app.store.save_snapshot(StoredSnapshot("fido", 2, fes.fingerprint(dogs), payload, 0))
    with caplog.at_level(logging.WARNING, logger="fes"):
        assert app.load(dogs, "fido") == (Dog("Fido", pvector(["sit"])), 2)
    assert "ignoring a snapshot" in caplog.text and "'fido' version 2" in caplog.text


def test_take_snapshot_saves_the_current_state(any_place: Place) -> None:
    """take_snapshot stores the state at the current version now; an empty stream gets none."""
    app = any_place.app(clock=Clock())
    app.execute(dogs, "fido", register, "Fido")
    app.execute(dogs, "fido", add_trick, "sit")
    assert app.store.load_snapshot("fido") is None
    assert app.take_snapshot(dogs, "fido") == 2
    snapshot = app.store.load_snapshot("fido")
    assert snapshot is not None
    assert (snapshot.version, snapshot.fingerprint, snapshot.timestamp) == (
        2, fes.fingerprint(dogs), START_MICROS,
    )
    state = app.codec.decode_state(dogs, snapshot.payload, stream="fido", version=2)
    assert state == Dog("Fido", pvector(["sit"]))
    assert app.take_snapshot(dogs, "nobody") == 0
    assert app.store.load_snapshot("nobody") is None


def test_a_snapshot_with_a_stale_fingerprint_is_ignored(
    any_place: Place, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot taken by another projector is not used; the state is folded from the start.

    That is logged (at INFO, once per aggregate), as the docs promise.
    """
    quiet = any_place.app(snapshot_every=2)
    quiet.execute(dogs, "fido", register, "Fido")
    for trick in ["sit", "beg", "roll", "wave"]:
        quiet.execute(dogs, "fido", add_trick, trick)
    assert quiet.store.load_snapshot("fido").version == 4
    loud = any_place.app(LOUD_SCHOOL, snapshot_every=2)
    reads = spy(loud)
    with caplog.at_level(logging.INFO, logger="fes"):
        for _ in range(2):
            assert loud.get(loud_dogs, "fido") == Dog(
                "FIDO", pvector(["SIT", "BEG", "ROLL", "WAVE"])
            )
    said = [r.getMessage() for r in caplog.records if "another definition" in r.getMessage()]
    assert said == [
        "ignoring snapshots of aggregate 'dog' that another definition of it made (first on "
        "stream 'fido', version 4): such a stream is folded from its events until a snapshot "
        "of this definition is taken (the old ones stay stored until prune_snapshots, or fes "
        "prune, deletes them)"
    ]
    assert reads.take_reads() == [Read("fido", None, None, 5)] * 2  # no cache: read twice
    # now the loud release writes a snapshot of its own; the quiet one must ignore it
    loud.execute(loud_dogs, "fido", add_trick, "bow")
    latest = quiet.store.load_snapshot("fido")
    assert (latest.version, latest.fingerprint) == (6, fes.fingerprint(loud_dogs))
    assert quiet.get(dogs, "fido") == Dog("Fido", pvector(["sit", "beg", "roll", "wave", "bow"]))
    assert quiet.get(dogs, "fido", version=5) == Dog(
        "Fido", pvector(["sit", "beg", "roll", "wave"])
    )


def test_a_failing_snapshot_save_does_not_fail_execute(
    place: Place, caplog: pytest.LogCaptureFixture
) -> None:
    """If saving a snapshot raises, the events stay stored, execute returns, a warning is logged."""
    app = place.app(snapshot_every=2)
    spy(app, fail_snapshots=True)
    app.execute(dogs, "fido", register, "Fido")
    with caplog.at_level(logging.WARNING, logger="fes"):
        recorded = app.execute(dogs, "fido", add_trick, "sit")
    assert [r.version for r in recorded] == [2]
    assert app.load(dogs, "fido") == (Dog("Fido", pvector(["sit"])), 2)
    assert app.store.load_snapshot("fido") is None
    [record] = [r for r in caplog.records if r.name == "fes"]
    assert record.levelno == logging.WARNING
    assert "snapshot of 'fido' at version 2 in 'school'" in record.getMessage()
    assert record.exc_info is not None and "the disk is full" in str(record.exc_info[1])


BANK_COMMANDS = st.one_of(
    st.tuples(st.just(deposit), st.integers(-10, 200)),
    st.tuples(st.just(withdraw), st.integers(-10, 300)),
    st.tuples(st.just(set_overdraft_limit), st.integers(-10, 300)),
    st.tuples(st.just(close), st.none()),
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    every=st.integers(1, 5),
    batches=st.lists(st.lists(BANK_COMMANDS, min_size=1, max_size=4), max_size=10),
    data=st.data(),
)
def test_get_with_snapshots_equals_the_fold_of_the_whole_stream(
    any_place: Place, every: int, batches: list[list[tuple[Any, int | None]]], data: st.DataObject
) -> None:
    """For any bank history and snapshot_every=k, get() (at any version) equals the full fold."""
    app = Application(BANK, any_place.database, snapshot_every=every, env={})
    stream = app.new_id()
    app.execute(accounts, stream, open_account, "ann")
    for commands in batches:
        batch = app.batch()
        for command, argument in commands:
            args = () if argument is None else (argument,)
            with contextlib.suppress(fes.Rejected):  # a refused command adds nothing
                batch.execute(accounts, stream, command, *args)
        app.commit(batch)
    history = [r.event for r in app.stream(stream)]
    version = len(history)
    snapshot = app.store.load_snapshot(stream)
    reads = spy(app)
    assert app.load(accounts, stream) == (accounts.fold(history), version)
    # only the events after the snapshot were read
    start = 0 if snapshot is None else snapshot.version
    assert reads.take_reads() == [Read(stream, start + 1 if start else None, None, version - start)]
    older = data.draw(st.integers(0, version), label="older version")
    assert app.get(accounts, stream, version=older) == accounts.fold(history[:older])
    assert (snapshot is not None) == (version >= every)
    if snapshot is not None:
        # the latest snapshot was taken by the append that passed the last multiple of k
        assert version - every < snapshot.version <= version
        state = app.codec.decode_state(
            accounts, snapshot.payload, stream=stream, version=snapshot.version
        )
        assert state == accounts.fold(history[: snapshot.version])


# --- aggregates the application does not know ------------------------------------------


def test_an_aggregate_not_in_the_app_is_refused(place: Place) -> None:
    """get, load, execute, take_snapshot and batches refuse an aggregate the App lacks."""
    app = place.app(snapshot_every=1, cache_size=10)
    app.execute(dogs, "fido", register, "Fido")
    for impostor in [loud_dogs, accounts]:
        with pytest.raises(
            fes.errors.DefinitionError, match="not one of the aggregates of application 'school'"
        ):
            app.get(impostor, "fido")
        with pytest.raises(fes.errors.DefinitionError):
            app.load(impostor, "fido", version=1)
        with pytest.raises(fes.errors.DefinitionError):
            app.execute(impostor, "fido", add_trick, "sit")
        with pytest.raises(fes.errors.DefinitionError):
            app.take_snapshot(impostor, "fido")
        with pytest.raises(fes.errors.DefinitionError):
            app.batch().execute(impostor, "fido", add_trick, "sit")
    assert app.store.last_position() == 1
    # an equal definition (not the same object) is the same aggregate
    assert app.get(evolve(dogs), "fido") == Dog("Fido")


def test_a_batch_refuses_an_impostor_on_a_stream_it_already_holds(place: Place) -> None:
    """An aggregate of the same name but another projector is refused on a pending stream too."""
    app = place.app(snapshot_every=1, cache_size=10)
    batch = app.batch()
    batch.execute(dogs, "fido", register, "Fido")
    with pytest.raises(fes.errors.DefinitionError):
        batch.execute(loud_dogs, "fido", add_trick, "sit")
    with pytest.raises(fes.errors.DefinitionError):
        batch.emit(loud_dogs, "fido", [TrickAdded("sit")])
    with pytest.raises(fes.errors.DefinitionError):
        batch.state(loud_dogs, "fido")
    app.commit(batch)
    assert app.get(dogs, "fido") == Dog("Fido")
    snapshot = app.store.load_snapshot("fido")
    assert app.codec.decode_state(dogs, snapshot.payload, stream="fido", version=1) == Dog("Fido")


# --- the cache -------------------------------------------------------------------------


def test_the_cache_reuses_states_and_reads_only_later_events(place: Place) -> None:
    """A cached state is returned as is, after asking the store for events past its version."""
    app = place.app(cache_size=10)
    app.execute(dogs, "fido", register, "Fido")
    app.execute(dogs, "fido", add_trick, "sit")
    reads = spy(app)
    first = app.get(dogs, "fido")  # cached by the appends: no full read
    assert reads.take_reads() == [Read("fido", 3, None, 0)]
    assert app.get(dogs, "fido") is first
    assert reads.take_reads() == [Read("fido", 3, None, 0)]
    # reading an older version bypasses the cache and leaves it alone
    assert app.get(dogs, "fido", version=1) == Dog("Fido")
    assert reads.take_reads() == [Read("fido", None, 1, 1)]
    assert app.get(dogs, "fido") is first
    # without a cache every read folds the whole stream into a new state
    plain = place.app()
    assert plain.get(dogs, "fido") == first and plain.get(dogs, "fido") is not first


def test_the_cache_fast_forwards_over_events_of_another_application(any_place: Place) -> None:
    """Events another application appended are folded onto the cached state on the next read."""
    cached, other = any_place.app(cache_size=10), any_place.app()
    other.execute(dogs, "fido", register, "Fido")
    reads = spy(cached)
    assert cached.load(dogs, "fido") == (Dog("Fido"), 1)
    assert reads.take_reads() == [Read("fido", None, None, 1)]
    other.execute(dogs, "fido", add_trick, "sit")
    other.execute(dogs, "fido", add_trick, "beg")
    assert cached.load(dogs, "fido") == (Dog("Fido", pvector(["sit", "beg"])), 3)
    assert reads.take_reads() == [Read("fido", 2, None, 2)]
    assert cached.load(dogs, "fido") == (Dog("Fido", pvector(["sit", "beg"])), 3)
    assert reads.take_reads() == [Read("fido", 4, None, 0)]
    # a command runs on the fast-forwarded state
    [recorded] = cached.execute(dogs, "fido", add_trick, "roll")
    assert recorded.version == 4
    assert reads.take_reads() == [Read("fido", 4, None, 0)]


def test_a_conflict_drops_the_cached_entry(any_place: Place) -> None:
    """After a ConcurrencyError the stream is loaded afresh rather than from the cache."""
    cached, other = any_place.app(cache_size=10), any_place.app()
    cached.execute(dogs, "fido", register, "Fido")
    cached.execute(dogs, "rex", register, "Rex")
    batch = cached.batch()
    batch.execute(dogs, "fido", add_trick, "sit")
    batch.execute(dogs, "rex", add_trick, "sit")
    other.execute(dogs, "fido", add_trick, "beg")
    with pytest.raises(fes.ConcurrencyError):
        cached.commit(batch)
    reads = spy(cached)
    assert cached.load(dogs, "fido") == (Dog("Fido", pvector(["beg"])), 2)
    assert cached.load(dogs, "rex") == (Dog("Rex"), 1)
    assert reads.take_reads() == [Read("fido", None, None, 2), Read("rex", None, None, 1)]


def test_the_cache_keeps_the_most_recently_used_states(place: Place) -> None:
    """cache_size bounds the cache; the least recently used stream is loaded afresh."""
    app = place.app(cache_size=2)
    for name in ["a", "b", "c"]:
        app.execute(dogs, name, register, name.upper())
    reads = spy(app)  # a was evicted when c was cached
    app.get(dogs, "c")
    app.get(dogs, "b")  # now b is the most recently used
    app.get(dogs, "a")  # a full read, which evicts c, not b
    app.get(dogs, "b")
    app.get(dogs, "c")
    assert [(r.stream, r.from_version) for r in reads.take_reads()] == [
        ("c", 2), ("b", 2), ("a", None), ("b", 2), ("c", None),
    ]


def test_a_committed_batch_updates_the_cache(place: Place) -> None:
    """After a commit the cache holds the batch's state at its new version."""
    app = place.app(cache_size=10)
    batch = app.batch()
    batch.execute(dogs, "fido", register, "Fido")
    batch.execute(dogs, "fido", add_trick, "sit")
    app.commit(batch)
    reads = spy(app)
    assert app.get(dogs, "fido") is batch.state(dogs, "fido")
    assert reads.take_reads() == [Read("fido", 3, None, 0)]


# --- configuration ---------------------------------------------------------------------


def test_the_store_url_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit store beats <APP>_FES_STORE_URL, which beats FES_STORE_URL, then fes.db."""
    general = f"sqlite:///{tmp_path / 'general.db'}"
    own = f"sqlite:///{tmp_path / 'own.db'}"
    both = {"FES_STORE_URL": general, "SCHOOL_FES_STORE_URL": own}
    cases = [
        (SCHOOL, None, {"FES_STORE_URL": general}, general),
        (SCHOOL, None, both, own),
        (SCHOOL, "memory://", both, "memory://"),
        (fes.App("my-school", aggregates=[dogs]), None, {**both, "MY_SCHOOL_FES_STORE_URL": own},
         own),
        (fes.App("my-school", aggregates=[dogs]), None, both, general),
    ]
    for app, store, env, url in cases:
        with Application(app, store, env=env) as application:
            assert application.database.url == url
    assert (tmp_path / "general.db").exists() and (tmp_path / "own.db").exists()
    monkeypatch.chdir(tmp_path)
    with Application(SCHOOL, env={}) as fallback:
        assert fallback.database.url == "sqlite:///fes.db"
        fallback.execute(dogs, "fido", register, "Fido")
    assert (tmp_path / "fes.db").exists()
    monkeypatch.setenv("FES_STORE_URL", "memory://")
    with Application(SCHOOL) as from_os:  # env defaults to os.environ
        assert from_os.database.url == "memory://"


def test_a_bad_store_url_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    """A URL that cannot be understood raises StoreURLError, a ConfigurationError."""
    target = tmp_path / "school.db"
    for url in ["school.db", "ftp://host/school", f"sqlite:///{target}?synchronous=fast"]:
        with pytest.raises(fes.errors.StoreURLError) as caught:
            Application(SCHOOL, url, env={})
        assert isinstance(caught.value, fes.errors.ConfigurationError)
    with pytest.raises(fes.errors.StoreURLError, match="no scheme"):
        Application(SCHOOL, env={"SCHOOL_FES_STORE_URL": "school.db"})
    assert not target.exists()


@pytest.mark.parametrize(
    ("env", "compressed"),
    [
        ({"FES_COMPRESS": "1"}, True),
        ({"FES_COMPRESS": "TRUE"}, True),
        ({"FES_COMPRESS": "yes"}, True),
        ({"FES_COMPRESS": "on"}, True),
        ({"FES_COMPRESS": "0"}, False),
        ({"FES_COMPRESS": "no"}, False),
        ({"FES_COMPRESS": ""}, False),
        ({}, False),
        ({"FES_COMPRESS": "0", "SCHOOL_FES_COMPRESS": "1"}, True),
        ({"FES_COMPRESS": "1", "SCHOOL_FES_COMPRESS": "off"}, False),
    ],
)
def test_fes_compress_turns_compression_on(env: dict[str, str], compressed: bool) -> None:
    """FES_COMPRESS (or <APP>_FES_COMPRESS, which wins) says whether payloads are compressed."""
    with Application(SCHOOL, "memory://", env=env) as app:
        app.execute(dogs, "champion", register, PEDIGREE)
        payload = app.store.read_stream("champion")[0].payload
        assert (payload[:1] == b"\x81") is compressed
        assert app.get(dogs, "champion") == Dog(PEDIGREE)


def test_an_explicit_compress_argument_beats_the_environment() -> None:
    """compress=False is obeyed even when FES_COMPRESS says yes."""
    with Application(SCHOOL, "memory://", compress=False, env={"FES_COMPRESS": "1"}) as app:
        app.execute(dogs, "champion", register, PEDIGREE)
        assert app.store.read_stream("champion")[0].payload.startswith(b"{")


BOTH = {"FES_SNAPSHOT_EVERY": "5", "SCHOOL_FES_SNAPSHOT_EVERY": "2"}


@pytest.mark.parametrize(
    ("own", "env", "given", "expected"),
    [
        (None, BOTH, None, 2),  # the application's own variable first
        (None, {"FES_SNAPSHOT_EVERY": "5"}, None, 5),
        (None, BOTH, 7, 7),  # the argument wins
        (None, {"FES_SNAPSHOT_EVERY": ""}, None, None),  # empty: unset
        (2, {}, None, 2),  # the App's own, with nothing else said
        (2, {"FES_SNAPSHOT_EVERY": "5"}, None, 5),  # the environment overrides it
        (2, {}, 7, 7),
    ],
)
def test_the_snapshot_interval_is_the_argument_else_the_environment_else_the_apps(
    own: int | None, env: dict[str, str], given: int | None, expected: int | None
) -> None:
    """snapshot_every=, else FES_SNAPSHOT_EVERY (prefixed first), else App(snapshot_every=).

    (A clinic trial's web process loaded whole streams: the snapshot setting
    was in fes run's environment only; the App's own reaches every process.)
    """
    school = fes.App("school", aggregates=[dogs], snapshot_every=own)
    with Application(school, "memory://", snapshot_every=given, env=env) as app:
        assert app.snapshot_every == expected
        app.execute(dogs, "fido", register, "Fido")
        app.execute(dogs, "fido", add_trick, "sit")
        snapshot = app.store.load_snapshot("fido")
        assert (snapshot and snapshot.version) == (2 if expected == 2 else None)


def test_the_apps_own_snapshot_interval_serves_a_runners_followers() -> None:
    """App(snapshot_every=N) snapshots in the applications a runner builds too."""
    def tally(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
        return [fes.Emit(dogs, "tally", [TrickAdded(recorded.event.name)])]

    follower = fes.App("tallies", aggregates=[dogs], policy=tally, snapshot_every=3)
    system = fes.System([fes.App("school", aggregates=[dogs]), follower],
                        pipes=[["school", "tallies"]])
    with SyncRunner(system, "memory://", env={}) as runner:
        runner.app("tallies").execute(dogs, "tally", register, "Tally")
        for name in ("a", "b", "c"):
            runner.app("school").execute(dogs, f"dog-{name}", register, name)
        runner.run_until_quiet()
        assert runner.app("tallies").snapshot_every == 3
        # one batch took the tally from version 1 to 4, past 3: snapshotted at its end
        assert runner.app("tallies").store.load_snapshot("tally").version == 4
        assert runner.app("school").store.load_snapshot("dog-a") is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"env": {"FES_SNAPSHOT_EVERY": "often"}}, "FES_SNAPSHOT_EVERY must be an integer"),
        ({"env": {"SCHOOL_FES_SNAPSHOT_EVERY": "2.5"}}, "must be an integer, got '2.5'"),
        ({"env": {"FES_SNAPSHOT_EVERY": "0"}}, "of 1 or more, got 0"),
        ({"env": {"FES_SNAPSHOT_EVERY": "-3"}}, "of 1 or more, got -3"),
        ({"snapshot_every": 0, "env": {}}, "of 1 or more, got 0"),
        ({"snapshot_every": "3", "env": {}}, "of 1 or more, got '3'"),
        ({"snapshot_every": 2.5, "env": {}}, "of 1 or more, got 2.5"),
    ],
)
def test_a_bad_snapshot_interval_is_a_configuration_error(
    options: dict[str, Any], message: str
) -> None:
    """A snapshot interval that is not a positive integer is refused."""
    with pytest.raises(fes.errors.ConfigurationError, match=message):
        Application(SCHOOL, "memory://", **options)


@pytest.mark.parametrize("word", ["9", "yes-please", "enabled"])
def test_fes_compress_must_be_a_true_or_false_word(word: str) -> None:
    """FES_COMPRESS=9 (or any other word) is refused, not taken silently as off."""
    with pytest.raises(
        fes.errors.ConfigurationError, match="FES_COMPRESS must be a true or false word"
    ):
        Application(SCHOOL, "memory://", env={"FES_COMPRESS": word})


@pytest.mark.parametrize(
    "clock",
    [lambda: datetime(2024, 5, 1, 9, 30), lambda: "2024-05-01T09:30:00Z"],
    ids=["naive", "str"],
)
def test_a_naive_clock_is_a_configuration_error(place: Place, clock: Any) -> None:
    """A clock giving datetimes without a timezone is refused at the append; nothing is stored."""
    app = place.app(clock=clock)
    with pytest.raises(fes.errors.ConfigurationError, match="timezone-aware"):
        app.execute(dogs, "fido", register, "Fido")
    batch = app.batch()
    batch.execute(dogs, "rex", register, "Rex")
    with pytest.raises(fes.errors.ConfigurationError):
        app.commit(batch)
    assert app.store.last_position() == 0


# --- compression and encryption --------------------------------------------------------


def test_compression_end_to_end(place: Place) -> None:
    """Compressed events and snapshots are zlib in the store and read by any application."""
    app = place.app(compress=True, snapshot_every=2)
    app.execute(dogs, "champion", register, PEDIGREE)
    app.execute(dogs, "champion", add_trick, "sit")
    big, small = app.store.read_stream("champion")
    plain = b'{"name":"' + PEDIGREE.encode() + b'"}'
    assert big.payload != plain and big.payload[:1] == b"\x81"
    assert zlib.decompress(big.payload[1:]) == plain
    assert len(big.payload) < len(plain) / 4
    assert small.payload == b'{"trick":"sit"}'  # compressing would not make it smaller
    snapshot = app.store.load_snapshot("champion")
    assert snapshot.payload[:1] == b"\x81"
    expected = Dog(PEDIGREE, pvector(["sit"]))
    assert place.app(snapshot_every=2).get(dogs, "champion") == expected
    assert place.app().get(dogs, "champion") == expected


def test_encryption_end_to_end(place: Place) -> None:
    """Encrypted payloads hide their content; only a cipher holding the key reads them."""
    cipher = Cipher({"k1": KEY}, current="k1")
    app = place.app(cipher=cipher, compress=True, snapshot_every=2)
    app.execute(dogs, "secret", register, "Mystery")
    app.execute(dogs, "secret", add_trick, PEDIGREE)
    rows = app.store.read_stream("secret")
    assert rows[0].payload[:4] == b"\x82\x02k1" and b"Mystery" not in rows[0].payload
    assert rows[1].payload[:4] == b"\x83\x02k1"  # compressed, then encrypted
    assert b"Champion" not in rows[1].payload
    snapshot = app.store.load_snapshot("secret")
    assert snapshot.payload[:4] == b"\x83\x02k1" and b"Mystery" not in snapshot.payload
    expected = Dog("Mystery", pvector([PEDIGREE]))
    assert place.app(cipher=Cipher({"k1": KEY}, current="k1")).get(dogs, "secret") == expected
    assert place.app(cipher=cipher, snapshot_every=2).get(dogs, "secret") == expected
    wrong_key = place.app(cipher=Cipher({"k1": OTHER_KEY}, current="k1"))
    with pytest.raises(fes.errors.CipherError, match="authentication failed"):
        wrong_key.get(dogs, "secret")
    other_id = place.app(cipher=Cipher({"k2": KEY}, current="k2"))
    with pytest.raises(fes.errors.CipherError, match="not in the keyring"):
        other_id.get(dogs, "secret")
    with pytest.raises(fes.errors.CipherError, match="no cipher"):
        place.app().get(dogs, "secret")
    with pytest.raises(fes.errors.CipherError):
        wrong_key.log()


def test_a_writer_with_the_wrong_key_under_a_known_id_stores_nothing(
    any_place: Place,
) -> None:
    """A keyring copied with its key mistyped, under the id the store's events were sealed
    with: the writer's first append is refused, nothing stored, where it would have stored
    events that no reader with the right key could open (a trial's follower then stopped
    for good). The right key still reads and writes everything."""
    right = any_place.app(cipher=Cipher({"k1": KEY}, current="k1"))
    right.execute(dogs, "rex", register, "Rex")
    right.execute(dogs, "rex", add_trick, "sit")
    wrong = any_place.app(cipher=Cipher({"k1": OTHER_KEY}, current="k1"))
    with pytest.raises(fes.errors.ConfigurationError) as refused:
        wrong.execute(dogs, wrong.new_id(), register, "Fido")
    assert str(refused.value) == (
        "'school' will not append under key id 'k1': its key for that id opens none of the "
        "newest events sealed under it (2 tried; the newest is 'dog.TrickAdded' at stream "
        f"'rex' version 2, position {right.store.last_position()}). It is not the key they "
        "were sealed with (or they were altered), and what it sealed no reader with their "
        "key could open: check the keyring (SCHOOL_FES_CIPHER_KEYS or FES_CIPHER_KEYS, or "
        "the cipher passed in); nothing was stored"
    )
    batch = wrong.batch()
    batch.emit(dogs, "fido", [Registered("Fido")])
    with pytest.raises(fes.errors.ConfigurationError, match="will not append"):
        wrong.commit(batch)  # and again: nothing cleared the key
    assert [(r.stream, r.version) for r in right.log()] == [("rex", 1), ("rex", 2)]
    right.execute(dogs, "rex", add_trick, "roll")
    assert right.get(dogs, "rex") == Dog("Rex", pvector(["sit", "roll"]))


def test_a_writer_tries_its_key_only_on_events_sealed_under_its_id(place: Place) -> None:
    """A key rotated to (a new id) has nothing under it to try, and one altered row among
    the newest does not refuse the right key: the other rows open under it."""
    old = place.app(cipher=Cipher({"k1": KEY}, current="k1"))
    for name in ("a", "b", "c"):
        old.execute(dogs, name, register, name.upper())
    rotated = place.app(cipher=Cipher({"k1": KEY, "k2": OTHER_KEY}, current="k2"))
    rotated.execute(dogs, "d", register, "D")
    assert rotated.store.read_stream("d")[0].payload[:4] == b"\x82\x02k2"
    mistyped = place.app(cipher=Cipher({"k1": KEY, "k2": KEY}, current="k2"))
    with pytest.raises(fes.errors.ConfigurationError, match=r"opens none .* \(1 tried;"):
        mistyped.execute(dogs, "e", register, "E")
    assert old.store.last_position() == rotated.store.last_position()
    [newest] = old.store.read_stream("c")
    altered = newest.payload[:-1] + bytes([newest.payload[-1] ^ 1])
    assert old.codec.opens(
        "dog.Registered", altered, stream="c", version=1
    ) is False and old.codec.opens("dog.Registered", newest.payload, stream="c", version=1)
    assert old.codec.opens("dog.Registered", b'{"name":"C"}', stream="c", version=1) is None
    assert place.app().codec.opens("dog.Registered", newest.payload, stream="c", version=1) is None


def test_one_altered_row_does_not_refuse_a_writer_with_the_right_key(tmp_path: Path) -> None:
    """Tampering with the newest event does not stop writers: the rows before it open."""
    path = tmp_path / "fes.db"
    with Application(SCHOOL, f"sqlite:///{path}", cipher=Cipher({"k1": KEY}, "k1")) as app:
        for name in ("a", "b", "c"):
            app.execute(dogs, name, register, name.upper())
    with sqlite3.connect(path) as connection:
        (payload,) = connection.execute(
            "SELECT payload FROM school_events WHERE stream = 'c'"
        ).fetchone()
        connection.execute(
            "UPDATE school_events SET payload = ? WHERE stream = 'c'",
            (payload[:-1] + bytes([payload[-1] ^ 1]),),
        )
    connection.close()
    with Application(SCHOOL, f"sqlite:///{path}", cipher=Cipher({"k1": KEY}, "k1")) as app:
        app.execute(dogs, "d", register, "D")
        assert app.get(dogs, "d") == Dog("D")


def test_encrypted_metadata_end_to_end(place: Place) -> None:
    """With a cipher, an event's headers and ids are stored encrypted and read back whole."""
    app = place.app(cipher=Cipher({"k1": KEY}, current="k1"))
    meta = Metadata("checkout-9", "web:request-9", {"user": "ann@example.com"})
    [recorded] = app.execute(dogs, "rex", register, "Rex", metadata=meta)
    [row] = app.store.read_stream("rex")
    assert row.meta is not None and row.meta[:4] == b"\x82\x02k1"
    assert b"ann@example.com" not in row.meta and b"checkout-9" not in row.meta
    assert app.log() == [recorded] and recorded.metadata == meta
    with pytest.raises(fes.errors.CipherError, match="no cipher"):
        place.app().log()


def test_the_cipher_can_come_from_the_environment(place: Place) -> None:
    """FES_CIPHER_KEYS in env= encrypts, readable by an explicit cipher with that key."""
    encoded = base64.b64encode(KEY).decode()
    app = place.app(env={"FES_CIPHER_KEYS": f"k1:{encoded}"})
    app.execute(dogs, "secret", register, "Mystery")
    assert app.store.read_stream("secret")[0].payload[:4] == b"\x82\x02k1"
    reader = place.app(cipher=Cipher({"k1": KEY}, current="k1"))
    assert reader.get(dogs, "secret") == Dog("Mystery")


# --- lifecycle -------------------------------------------------------------------------


def test_close_closes_a_database_the_application_opened(place: Place) -> None:
    """close() (or leaving ``with``) closes a database opened from a URL; twice is harmless."""
    with Application(SCHOOL, place.url, env={}) as app:
        app.execute(dogs, "fido", register, "Fido")
    with pytest.raises(fes.errors.StoreError):
        app.get(dogs, "fido")
    app.close()
    with pytest.raises(fes.errors.StoreError):
        app.execute(dogs, "rex", register, "Rex")


def test_close_leaves_a_database_passed_in_open(place: Place) -> None:
    """An application given an open database does not close it: others may be using it."""
    first = Application(SCHOOL, place.database, env={})
    first.execute(dogs, "fido", register, "Fido")
    first.close()
    first.close()
    second = Application(SCHOOL, place.database, env={})
    assert second.get(dogs, "fido") == Dog("Fido")
    assert place.database.store("school").last_position() == 1


def test_a_closed_application_refuses_work_on_a_database_still_open(place: Place) -> None:
    """After close(), commands, loads and reads are refused, though the database serves others.

    (They used to go on, as if close() had not been called.)
    """
    app = Application(SCHOOL, place.database, env={})
    app.execute(dogs, "fido", register, "Fido")
    empty = app.batch()
    app.close()
    fresh = app.new_id()
    refusals: list[Callable[[], object]] = [
        lambda: app.execute(dogs, fresh, register, "Rex"),  # the read-free first try
        lambda: app.execute(dogs, "fido", add_trick, "sit"),
        lambda: app.get(dogs, "fido"),
        lambda: app.take_snapshot(dogs, "fido"),
        app.batch,
        lambda: empty.execute(dogs, "fido", add_trick, "sit"),
        lambda: app.stream("fido"),
        lambda: app.log(),
    ]
    for refused in refusals:
        with pytest.raises(fes.errors.StoreError, match="application 'school' is closed"):
            refused()
    with pytest.raises(fes.errors.StoreError, match="application 'school' is closed"), app:
        pass
    others = Application(SCHOOL, place.database, env={})
    assert others.get(dogs, "fido") == Dog("Fido")
    assert others.get(dogs, fresh) is None
    assert place.database.store("school").last_position() == 1


def test_an_empty_batch_stores_nothing_and_does_not_read_the_clock(place: Place) -> None:
    """Committing a batch without events returns [] without touching the clock or the log."""
    clock = Clock()
    app = place.app(clock=clock, snapshot_every=1)
    app.execute(dogs, "fido", register, "Fido")
    app.execute(dogs, "fido", add_trick, "sit")
    reads, last = clock.reads, app.store.last_position()
    assert app.commit(app.batch()) == []
    batch = app.batch()
    assert batch.execute(dogs, "fido", add_trick, "sit") == []  # known already: no event
    assert batch.emit(dogs, "rex", []) == []
    assert app.commit(batch) == []
    assert app.execute(dogs, "fido", add_trick, "sit") == []
    assert clock.reads == reads
    assert app.store.last_position() == last
    assert app.store.load_snapshot("fido").version == 2


def test_an_empty_batch_with_tracking_records_the_position(place: Place) -> None:
    """With tracking, even a batch without events records the follower's position, once."""
    app = place.app()
    assert app.commit(app.batch(), tracking=Tracking("upstream", 3, 0)) == []
    assert app.store.last_tracked("upstream") == 3
    assert app.store.last_position() == 0
    with pytest.raises(fes.errors.DuplicateTracking):
        app.commit(app.batch(), tracking=Tracking("upstream", 3, 0))


# --- log() and stream() ----------------------------------------------------------------


@pytest.fixture
def history(place: Place) -> Application:
    """An application with five events over two streams, one minute apart."""
    clock = Clock()
    app = place.app(clock=clock)
    steps = [
        ("fido", register, "Fido"),
        ("rex", register, "Rex"),
        ("fido", add_trick, "sit"),
        ("fido", add_trick, "beg"),
        ("rex", add_trick, "roll"),
    ]
    for stream, command, argument in steps:
        app.execute(dogs, stream, command, argument, metadata=Metadata(correlation_id=argument))
        clock.advance(minutes=1)
    return app


def test_log_decodes_every_event_in_position_order(history: Application) -> None:
    """log() gives every recorded event, decoded, with its envelope."""
    log = history.log()
    assert [(r.stream, r.version, r.event) for r in log] == [
        ("fido", 1, Registered("Fido")),
        ("rex", 1, Registered("Rex")),
        ("fido", 2, TrickAdded("sit")),
        ("fido", 3, TrickAdded("beg")),
        ("rex", 2, TrickAdded("roll")),
    ]
    assert [r.timestamp for r in log] == [START + timedelta(minutes=n) for n in range(5)]
    assert [r.metadata.correlation_id for r in log] == ["Fido", "Rex", "sit", "beg", "roll"]
    assert [r.id for r in log] == ["fido@1", "rex@1", "fido@2", "fido@3", "rex@2"]
    assert [history.recorded(row) for row in history.store.read_log()] == log


def test_log_after_limit_and_topics(history: Application) -> None:
    """log() takes the events after a position, at most ``limit``, of some ``topics`` only."""
    log = history.log()
    positions = [r.position for r in log]
    assert history.log(after=positions[1]) == log[2:]
    assert history.log(after=positions[-1]) == []
    assert history.log(limit=2) == log[:2]
    assert history.log(after=positions[0], limit=2) == log[1:3]
    assert history.log(limit=0) == []
    registered = history.log(topics=["dog.Registered"])
    assert [r.event for r in registered] == [Registered("Fido"), Registered("Rex")]
    tricks_after_first = history.log(
        after=positions[2], topics=(t for t in ["dog.TrickAdded"]), limit=1
    )
    assert tricks_after_first == [log[3]]
    assert history.log(topics=[]) == []
    assert history.log(topics=["dog.Registered", "dog.TrickAdded"]) == log


@pytest.mark.parametrize(
    "topics", ["dog.Registerd", ["dog.Registered", "dogs.TrickAdded"], ("Registered",)], ids=repr
)
def test_log_refuses_a_topic_the_codec_does_not_know(
    history: Application, topics: str | list[str]
) -> None:
    """A misspelt topic is an UnknownTopic naming the registered ones, not a quiet empty log.

    (A trial's log(topics="rental.Closed") returned nothing, as if no rental had closed.)
    """
    with pytest.raises(fes.errors.UnknownTopic, match=r"registered topics: dog\.Registered"):
        history.log(topics=topics)
    # fes's own records are asked for by their topics, known to no codec
    assert history.log(topics=["fes.FollowerHalted", "fes.PolicySkipped"]) == []


def test_stream_versions_limit_and_descending(history: Application) -> None:
    """stream() selects by version range, limits, and reads newest first when descending."""
    fido = history.stream("fido")
    assert [r.version for r in fido] == [1, 2, 3]
    assert history.stream("fido", from_version=2) == fido[1:]
    assert history.stream("fido", to_version=2) == fido[:2]
    assert history.stream("fido", from_version=2, to_version=2) == [fido[1]]
    assert history.stream("fido", limit=2) == fido[:2]
    assert history.stream("fido", descending=True) == fido[::-1]
    assert history.stream("fido", descending=True, limit=1) == [fido[2]]
    assert history.stream("fido", descending=True, to_version=2) == [fido[1], fido[0]]
    assert history.stream("fido", from_version=4) == []
    assert history.stream("nobody") == []
    assert [r.event for r in fido] == [Registered("Fido"), TrickAdded("sit"), TrickAdded("beg")]
