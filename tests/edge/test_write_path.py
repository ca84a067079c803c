"""The write path's shortcuts: a read-free first command, rows fes checked once, its clock.

An id that ``new_id()`` gave and nothing used is decided on without a read;
every way that guess can be wrong ends in the answer a read would have given.
Rows an application built go to fes's own stores without a second round of
checks, and to any other store through the protocol's ``append``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from attrs import frozen
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import pvector

import fes
from fes.edge import Application
from fes.edge._application import MINTED
from fes.edge._clock import stamp, to_micros, utc_now
from fes.edge.stores import Database, NewEvent, Store, Tracking
from fes.edge.stores._memory import MemoryDatabase
from fes.events import EPOCH, micros_datetime
from fes.examples.dogs import Dog, TrickAdded, add_trick, dogs, register

from .conftest import SCHOOL, Place


@pytest.fixture
def reads(place: Place) -> Iterator[tuple[Application, list[str]]]:
    """An application whose stream reads are counted (by stream id)."""
    app = place.app()
    seen: list[str] = []
    real = app.store.read_payloads

    def counted(stream: str, **options: Any) -> list[tuple[int, str, bytes]]:
        seen.append(stream)
        return real(stream, **options)

    app.store.read_payloads = counted  # type: ignore[method-assign]
    yield app, seen


def test_the_first_command_on_a_new_id_reads_nothing(
    reads: tuple[Application, list[str]],
) -> None:
    """execute on an id new_id() gave starts the stream without reading it; the next reads."""
    app, seen = reads
    fido = app.new_id()
    [recorded] = app.execute(dogs, fido, register, "Fido")
    assert (recorded.stream, recorded.version) == (fido, 1)
    assert seen == []
    app.execute(dogs, fido, add_trick, "sit")
    assert seen == [fido]
    assert app.get(dogs, fido) == Dog("Fido", tricks=pvector(["sit"]))


def test_an_id_a_batch_used_first_is_read_by_the_next_command(
    reads: tuple[Application, list[str]],
) -> None:
    """A batch's use spends the id: a later execute reads the stream, as for any other."""
    app, seen = reads
    fido = app.new_id()
    batch = app.batch()
    batch.execute(dogs, fido, register, "Fido")
    app.commit(batch)
    seen.clear()
    with pytest.raises(fes.Rejected, match="already registered"):
        app.execute(dogs, fido, register, "Rex")
    assert seen == [fido]


def test_a_new_id_used_elsewhere_first_gets_what_a_read_gives(place: Place) -> None:
    """Another application wrote the id first: a conflict, then the command on the real state.

    The guess's conflict is no retry: with retries=0 the command is refused
    by the domain, not by a ConcurrencyError; a command that refuses the
    initial state runs on the real one; nothing half-written is left.
    """
    app = place.app(retries=0)
    other = place.app()
    fido, rex, sam = app.new_id(), app.new_id(), app.new_id()
    for stream in (fido, rex, sam):
        other.execute(dogs, stream, register, "Fido")
    with pytest.raises(fes.Rejected, match="already registered"):
        app.execute(dogs, fido, register, "Fido")
    # add_trick refuses the initial state (None): the real state is a Dog
    [recorded] = app.execute(dogs, rex, add_trick, "sit")
    assert (recorded.stream, recorded.version) == (rex, 2)

    def only_later(dog: Dog | None, trick: str) -> list[TrickAdded]:
        return [] if dog is None else [TrickAdded(trick)]

    # no events on the initial state, one on the real state
    [recorded] = app.execute(dogs, sam, only_later, "roll")
    assert (recorded.stream, recorded.version) == (sam, 2)
    assert [r.version for r in app.log()] == [1, 1, 1, 2, 2]


def test_a_new_id_stays_fresh_for_one_command_when_it_has_none(place: Place) -> None:
    """A command with no events, or refused, on a new id leaves nothing and reads the next time."""
    app = place.app(retries=0)
    fido = app.new_id()
    with pytest.raises(fes.Rejected, match="needs a name"):
        app.execute(dogs, fido, register, " ")
    assert app.execute(dogs, fido, lambda dog: []) == []
    [recorded] = app.execute(dogs, fido, register, "Fido")
    assert recorded.version == 1
    assert app.store.last_position() == 1


def test_two_threads_on_one_new_id_record_one_registration(place: Place) -> None:
    """Both decide register on an empty stream; the unique version lets one append in."""
    app = place.app(retries=0)
    rounds = 20
    outcomes: list[str] = []
    for _ in range(rounds):
        fido = app.new_id()
        start = threading.Barrier(2)

        def run(stream: str = fido, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                app.execute(dogs, stream, register, "Fido")
                outcomes.append("recorded")
            except (fes.Rejected, fes.ConcurrencyError) as error:
                outcomes.append(type(error).__name__)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r.version for r in app.stream(fido)] == [1]
    assert outcomes.count("recorded") == rounds
    assert len(outcomes) == 2 * rounds


def test_an_application_remembers_a_bounded_number_of_new_ids(place: Place) -> None:
    """Ids minted and never used cost bounded memory; a forgotten one is read as usual."""
    app = place.app()
    first = app.new_id()
    for _ in range(MINTED + 10):
        app.new_id()
    assert len(app._minted) <= MINTED
    [recorded] = app.execute(dogs, first, register, "Fido")
    assert recorded.version == 1


def test_an_id_factory_giving_no_keepable_id_is_refused_on_use(place: Place) -> None:
    """A bad id from an injected factory is not taken as fresh: the store refuses it on use."""
    app = place.app(ids=lambda: "bad\x00id")
    stream = app.new_id()
    with pytest.raises(fes.errors.StoreError, match="a stream id must be a str"):
        app.execute(dogs, stream, register, "Fido")
    assert app.store.last_position() == 0


def test_an_id_factory_repeating_itself_gets_what_a_read_gives(place: Place) -> None:
    """A deterministic factory giving one id twice: the second command sees the first's events."""
    app = place.app(ids=lambda: uuid.UUID(int=7), retries=0)
    app.execute(dogs, app.new_id(), register, "Fido")
    with pytest.raises(fes.Rejected, match="already registered"):
        app.execute(dogs, app.new_id(), register, "Fido")
    assert app.store.last_position() == 1


# --- checks made once -------------------------------------------------------------------


@fes.event(topic="dog.\x00born")
@frozen
class Born:
    name: str


def test_a_topic_no_store_can_keep_is_refused_when_the_application_is_built() -> None:
    """An event type whose topic has a NUL is refused at once, not at its first commit."""
    kennel = fes.Aggregate("kennel", None, lambda s, e: s, events=[Born])
    with pytest.raises(fes.errors.DefinitionError, match="cannot store its events: a topic"):
        Application(fes.App("kennel", aggregates=[kennel]), "memory://", env={})


def test_a_bad_tracking_position_is_refused_by_commit(place: Place) -> None:
    """commit checks a tracking position itself, since fes's stores take its rows as they are."""
    app = place.app()
    batch = app.batch()
    batch.execute(dogs, "fido", register, "Fido")
    with pytest.raises(fes.errors.StoreError, match="must move forward"):
        app.commit(batch, tracking=Tracking("leader", 3, 3))
    with pytest.raises(fes.errors.StoreError, match="tracking position must be an integer"):
        app.commit(batch, tracking=Tracking("leader", "4", 0))  # type: ignore[arg-type]
    assert app.store.last_position() == 0


class _Foreign:
    """A store that is not fes's own: the protocol's methods only, appends recorded."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.appended: list[Sequence[NewEvent]] = []

    def append(self, events: Sequence[NewEvent], *, tracking: Tracking | None = None) -> list[int]:
        self.appended.append(events)
        return self._inner.append(events, tracking=tracking)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)


class _ForeignDatabase(MemoryDatabase):
    def store(self, app: str) -> Any:
        return _Foreign(super().store(app))


def test_a_store_not_fes_own_gets_new_events_through_its_append() -> None:
    """Rows go to another store as NewEvent through append, which checks them."""
    database: Database = _ForeignDatabase()
    app = Application(SCHOOL, database, env={}, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    fido = app.new_id()
    app.execute(dogs, fido, register, "Fido")
    batch = app.batch()
    batch.execute(dogs, fido, add_trick, "sit")
    batch.execute(dogs, "rex", register, "Rex")
    recorded = app.commit(batch)
    store = app.store
    assert isinstance(store, _Foreign)
    assert [[type(e) for e in events] for events in store.appended] == [
        [NewEvent], [NewEvent, NewEvent]
    ]
    assert [(e.stream, e.version) for e in store.appended[1]] == [(fido, 2), ("rex", 1)]
    assert [(r.stream, r.version, r.position) for r in recorded] == [(fido, 2, 2), ("rex", 1, 3)]
    assert store.appended[1][0].timestamp == to_micros(datetime(2026, 1, 1, tzinfo=UTC))


def test_a_batch_over_streams_records_each_in_order(place: Place) -> None:
    """Several streams in one commit: rows, positions and envelopes line up, in the order added."""
    app = place.app()
    batch = app.batch()
    batch.execute(dogs, "fido", register, "Fido")
    batch.execute(dogs, "rex", register, "Rex")
    batch.execute(dogs, "fido", add_trick, "sit")
    batch.execute(dogs, "rex", add_trick, "beg")
    recorded = app.commit(batch)
    assert [(r.stream, r.version, r.position) for r in recorded] == [
        ("fido", 1, 1), ("rex", 1, 2), ("fido", 2, 3), ("rex", 2, 4)
    ]
    assert [r.event for r in recorded] == [r.event for r in app.log()]
    assert len({r.timestamp for r in recorded}) == 1


# --- the clock ----------------------------------------------------------------------------


@given(
    st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999)
    | st.integers(min_value=0, max_value=2**32 * 10**6)
)
def test_the_fast_datetime_of_microseconds_is_exact(micros: int) -> None:
    """micros_datetime gives the epoch plus exactly that many microseconds, in years 1 to 9999."""
    moment = micros_datetime(micros)
    assert moment == EPOCH + timedelta(microseconds=micros)
    assert moment.tzinfo is UTC
    assert to_micros(moment) == micros


@pytest.mark.parametrize("micros", [0, 1, 2**32 * 10**6 - 1, 2**32 * 10**6, 1_714_555_800_123_457])
def test_the_fast_datetime_is_exact_at_its_bounds(micros: int) -> None:
    """The float shortcut's last microsecond and the first beyond it are both exact."""
    assert to_micros(micros_datetime(micros)) == micros


def test_the_default_clock_stamps_the_datetime_it_stores() -> None:
    """A commit's envelope carries exactly the microseconds stored, from the system clock."""
    before = datetime.now(UTC)
    moment, micros = stamp(utc_now)
    after = datetime.now(UTC)
    assert moment == micros and to_micros(before) <= micros <= to_micros(after)
    app = Application(SCHOOL, "memory://", env={})
    [recorded] = app.execute(dogs, app.new_id(), register, "Fido")
    [stored] = app.store.read_log()
    assert recorded.timestamp.tzinfo is UTC
    assert to_micros(recorded.timestamp) == stored.timestamp
    assert recorded.timestamp == app.log()[0].timestamp


@pytest.mark.parametrize("offset", [0, 2])
def test_a_clock_of_its_own_stamps_its_moment_in_utc(offset: int) -> None:
    """A given clock's datetime is carried as it is in UTC, and as the same instant otherwise."""
    zone = timezone(timedelta(hours=offset)) if offset else UTC
    moment = datetime(2026, 5, 1, 12, 30, 0, 123_456, tzinfo=zone)
    app = Application(SCHOOL, "memory://", env={}, clock=lambda: moment)
    [recorded] = app.execute(dogs, app.new_id(), register, "Fido")
    [read] = app.log()
    for envelope in (recorded, read):
        assert envelope.timestamp == moment and envelope.timestamp.tzinfo is UTC
    if zone is UTC:
        assert recorded.timestamp is moment


def test_a_wrapper_put_in_as_the_store_sees_every_append(place: Place) -> None:
    """A store replaced after the application was built, wrapping fes's own, gets the appends."""
    app = place.app()
    wrapper = _Foreign(app.store)
    app.store = wrapper  # type: ignore[assignment]
    app.execute(dogs, app.new_id(), register, "Fido")
    batch = app.batch()
    batch.execute(dogs, "rex", register, "Rex")
    app.commit(batch, tracking=Tracking("leader", 1, 0))
    assert [len(events) for events in wrapper.appended] == [1, 1]
    assert app.store.last_tracked("leader") == 1


_CHECKED_BY = {
    "memory": "fes.edge.stores._memory",
    "sqlite": "fes.edge.stores._sqlite._store",
    "postgres": "fes.edge.stores._postgres._store",
}


def test_fes_own_stores_take_the_applications_rows_unchecked_and_check_any_other(
    any_place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On every store of fes's own, a command's and a follower's rows skip the batch's checks,
    which the application made already; the protocol's append still makes them.

    (PostgreSQL's store checked every row again, and built a NewEvent of each
    through the protocol: a sixth of fes's own work per command there.)
    """
    import importlib

    app = any_place.app()
    app.execute(dogs, app.new_id(), register, "Fido")  # the store's way is found here

    def refused(events: Sequence[NewEvent]) -> dict[str, int]:
        raise AssertionError("checked again")

    store_module = importlib.import_module(_CHECKED_BY[any_place.kind])
    monkeypatch.setattr(store_module, "check_batch", refused)
    fido = app.new_id()
    [first] = app.execute(dogs, fido, register, "Fido")  # a new stream's first event
    [second] = app.execute(dogs, fido, add_trick, "sit")  # one event on a stream
    batch = app.batch()
    batch.execute(dogs, "rex", register, "Rex")
    batch.execute(dogs, fido, add_trick, "paw")
    recorded = app.commit(batch, tracking=Tracking("leader", 1, 0))  # a follower's commit
    assert [(r.stream, r.version) for r in [first, second, *recorded]] == [
        (fido, 1), (fido, 2), ("rex", 1), (fido, 3)
    ]
    assert app.get(dogs, fido).tricks == pvector(["sit", "paw"])
    assert app.store.last_tracked("leader") == 1
    with pytest.raises(AssertionError, match="checked again"):
        app.store.append([NewEvent("x", 1, "dog.Registered", b'{"name":"X"}', 1)])
