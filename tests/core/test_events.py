"""Events: the recorded envelope, schema declarations, upcasting and topics."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from attrs import frozen
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import PMap, pmap

import fes
from fes.events import (
    NO_METADATA,
    Metadata,
    Recorded,
    _slot_factory,
    new_metadata,
    new_recorded,
)

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_metadata_headers_become_an_immutable_map() -> None:
    """Headers given as a dict (or None) are stored as a pyrsistent map."""
    assert fes.Metadata(headers={"user": "ann"}).headers == pmap({"user": "ann"})
    assert fes.Metadata(headers=None).headers == pmap()
    assert fes.Metadata().headers == pmap()
    assert fes.Metadata() == NO_METADATA


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"correlation_id": 5}, "metadata's correlation_id must be a str or None, not 5"),
        ({"causation_id": b"x"}, "metadata's causation_id must be a str or None, not b'x'"),
        ({"headers": {"user": 7}}, "metadata headers must map str to str, not 'user' to 7"),
        ({"headers": {1: "ann"}}, "metadata headers must map str to str, not 1 to 'ann'"),
        ({"headers": ["user"]}, "metadata headers must be a mapping of str to str"),
    ],
)
def test_metadata_refuses_what_is_not_text(given: dict[str, Any], message: str) -> None:
    """Ids are str or None and headers map str to str: anything else is refused when made."""
    with pytest.raises(fes.errors.ConfigurationError, match=re.escape(message)):
        fes.Metadata(**given)


def test_recorded_id_is_stream_at_version() -> None:
    """A recorded event's id names its stream and version; metadata defaults to none."""
    recorded = fes.Recorded("payload", "dog-1", 3, 17, AT)
    assert recorded.id == "dog-1@3"
    assert recorded.metadata == NO_METADATA
    assert recorded.topic == ""


def test_spec_of_an_undecorated_class_is_the_default() -> None:
    """An event type without @fes.event has no topic, schema version 1 and no upcasters."""

    @frozen
    class Plain:
        x: int

    assert fes.spec_of(Plain) == fes.EventSpec()
    assert fes.spec_of(Plain).version == 1


def test_event_decorator_records_the_spec_and_returns_the_class() -> None:
    """@fes.event sets topic, version, upcasters and aliases on the class, which is unchanged."""

    def up(data: Mapping[str, Any]) -> Mapping[str, Any]:
        return data

    @frozen
    class Before:
        x: int

    After = fes.event("dogs.Moved", upcasters=[up], aliases=["old.Moved"])(Before)
    assert After is Before
    assert fes.spec_of(Before) == fes.EventSpec("dogs.Moved", 2, (up,), ("old.Moved",))


def test_a_subclass_does_not_inherit_its_base_class_spec() -> None:
    """A subclass is another event type: it does not silently reuse its base's topic."""

    @fes.event("base.topic")
    @frozen
    class Base:
        pass

    class Sub(Base):
        pass

    assert fes.spec_of(Base).topic == "base.topic"
    assert fes.spec_of(Sub) == fes.EventSpec()


@pytest.mark.parametrize("version", [0, -1])
def test_event_version_below_one_is_refused(version: int) -> None:
    """A schema version below 1 is refused at definition."""
    with pytest.raises(fes.errors.DefinitionError, match=f"must be >= 1, got {version}"):
        fes.event(version=version)


@pytest.mark.parametrize(("version", "count"), [(2, 0), (1, 1), (3, 1), (2, 2)])
def test_event_version_and_upcaster_count_must_agree(version: int, count: int) -> None:
    """An event at version n needs exactly n - 1 upcasters, and the error says so."""
    ups = [lambda d: d] * count
    with pytest.raises(fes.errors.DefinitionError) as info:
        fes.event(version=version, upcasters=ups)
    assert f"needs {version - 1} upcaster(s)" in str(info.value)
    assert f"got {count}" in str(info.value)


def _v1_to_v2(data: Mapping[str, Any]) -> Mapping[str, Any]:
    # version 2 split "name" into "first" and "last"
    first, _, last = data["name"].partition(" ")
    return {"first": first, "last": last}


def _v2_to_v3(data: Mapping[str, Any]) -> Mapping[str, Any]:
    # version 3 added "nickname"
    return {**data, "nickname": None}


@fes.event("people.Named", upcasters=[_v1_to_v2, _v2_to_v3])
@frozen
class Named:
    """A person was named (schema version 3)."""

    first: str
    last: str
    nickname: str | None


def test_upcast_chains_every_step_from_version_one() -> None:
    """A version 1 mapping goes through both upcasters to the current shape."""
    assert fes.upcast(Named, {"name": "Ada Lovelace"}, 1) == {
        "first": "Ada",
        "last": "Lovelace",
        "nickname": None,
    }


def test_upcast_from_a_middle_version_runs_only_the_later_steps() -> None:
    """A version 2 mapping runs only the 2 → 3 upcaster."""
    assert fes.upcast(Named, {"first": "Ada", "last": "L"}, 2) == {
        "first": "Ada",
        "last": "L",
        "nickname": None,
    }


def test_upcast_at_the_current_version_returns_the_data_as_it_is() -> None:
    """A mapping already at the current version is returned untouched (the same object)."""
    data = {"first": "Ada", "last": "L", "nickname": "A"}
    assert fes.upcast(Named, data, 3) is data


@given(first=st.text(max_size=5), last=st.text(max_size=5))
def test_upcasting_composes_step_by_step(first: str, last: str) -> None:
    """Upcasting from v1 equals upcasting v1 → v2 by hand and then from v2."""
    stored = {"name": f"{first} {last}"}
    assert fes.upcast(Named, stored, 1) == fes.upcast(Named, _v1_to_v2(stored), 2)


@pytest.mark.parametrize("stored", [4, 0, -2])
def test_upcast_refuses_a_version_it_cannot_reach(stored: int) -> None:
    """A stored version newer than the code, or below 1, is an UpcastError naming both."""
    with pytest.raises(fes.errors.UpcastError) as info:
        fes.upcast(Named, {}, stored)
    assert "Named is at schema version 3" in str(info.value)
    assert f"stored version {stored}" in str(info.value)


def test_a_failing_upcaster_is_an_upcast_error_naming_the_versions() -> None:
    """An upcaster that raises becomes an UpcastError naming the step and the cause."""
    with pytest.raises(fes.errors.UpcastError) as info:
        fes.upcast(Named, {"not_name": 1}, 1)
    assert "upcasting Named from version 1 to 2 failed: KeyError" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)


# --- topics ----------------------------------------------------------------


@fes.event("shop.OrderPlaced", aliases=["orders.OrderCreated", "orders.Placed"])
@frozen
class OrderPlaced:
    """An order was placed; its class was renamed twice."""

    order: str


@frozen
class OrderShipped:
    """An order was shipped; it has no declared topic."""

    order: str


def _placed(state: int, event: OrderPlaced) -> int:
    return state + 1


def _shipped(state: int, event: OrderShipped) -> int:
    return state


orders = fes.Aggregate(
    "order",
    0,
    fes.projector(_placed, _shipped),
    events=[OrderPlaced, OrderShipped],
)


def test_topics_list_declared_default_and_alias_topics() -> None:
    """An aggregate's topics are the declared ones, the default ones and every alias."""
    assert orders.topics() == {
        "shop.OrderPlaced": OrderPlaced,
        "orders.OrderCreated": OrderPlaced,
        "orders.Placed": OrderPlaced,
        "order.OrderShipped": OrderShipped,
    }


def test_topic_of_is_the_declared_topic_or_aggregate_dot_class() -> None:
    """Events are written under their declared topic, else '<aggregate>.<class>'; never an alias."""
    assert orders.topic_of(OrderPlaced) == "shop.OrderPlaced"
    assert orders.topic_of(OrderShipped) == "order.OrderShipped"


def test_two_event_types_under_one_topic_are_refused() -> None:
    """An alias (or topic) naming two event types is refused when the aggregate is defined."""

    @fes.event(aliases=["order.OrderShipped"])
    @frozen
    class Returned:
        order: str

    with pytest.raises(fes.errors.DefinitionError, match=r"'order\.OrderShipped' names both"):
        fes.Aggregate(
            "order",
            0,
            fes.projector(_placed, _shipped, (Returned, _placed)),
            events=[OrderPlaced, OrderShipped, Returned],
        )


def test_two_event_types_declaring_one_topic_are_refused() -> None:
    """Two classes declaring the same explicit topic cannot both belong to one aggregate."""

    @fes.event("shop.OrderPlaced")
    @frozen
    class Impostor:
        order: str

    with pytest.raises(fes.errors.DefinitionError) as info:
        fes.Aggregate("order", 0, lambda s, e: s, events=[OrderPlaced, Impostor])
    assert "topic 'shop.OrderPlaced' names both OrderPlaced and " in str(info.value)
    assert str(info.value).endswith("Impostor")


@given(
    stream=st.text(min_size=1, max_size=8),
    version=st.integers(1, 2**40),
    position=st.integers(1, 2**40),
    topic=st.text(max_size=8),
    correlation=st.none() | st.text(max_size=8),
)
def test_the_fast_envelope_is_the_envelope(
    stream: str, version: int, position: int, topic: str, correlation: str | None
) -> None:
    """new_recorded builds exactly what Recorded(...) builds: equal, frozen, same repr.

    Both ways: the sealed blank new_recorded uses here, and the slot writer
    it falls back to where ``__class__`` cannot be assigned.
    """
    moment = datetime(2026, 1, 2, tzinfo=UTC)
    meta = Metadata(correlation_id=correlation)
    plain = Recorded("payload", stream, version, position, moment, topic, meta)
    for make in (new_recorded, _SLOTS):
        fast = make("payload", stream, version, position, moment, topic, meta)
        assert type(fast) is Recorded
        assert fast == plain
        assert hash(fast) == hash(plain)
        assert repr(fast) == repr(plain)
        assert attrs.asdict(fast, recurse=False) == attrs.asdict(plain, recurse=False)
        assert pickle.loads(pickle.dumps(fast)) == plain
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            fast.version = 0  # type: ignore[misc]


_SLOTS = _slot_factory()


@given(
    micros=st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999)
    | st.integers(min_value=0, max_value=2**32 * 10**6 + 10)
)
def test_an_envelope_stamped_in_microseconds_is_the_envelope_of_their_datetime(
    micros: int,
) -> None:
    """The edge's envelopes hold the stored microseconds until their timestamp is read.

    Every way of looking at one, each on a fresh envelope, sees the datetime
    of exactly those microseconds: reading it, equality, hashing, repr,
    asdict, pickling, evolve and pattern matching; the first read keeps it.
    """
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    plain = Recorded("payload", "s", 1, 2, moment, "t", NO_METADATA)
    for make in (new_recorded, _SLOTS):
        def fresh() -> Recorded[Any]:
            return make("payload", "s", 1, 2, micros, "t", NO_METADATA)  # noqa: B023

        read = fresh().timestamp
        assert read == moment and read.tzinfo is UTC and type(read) is datetime
        assert fresh() == plain and plain == fresh()
        assert hash(fresh()) == hash(plain)
        assert repr(fresh()) == repr(plain)
        assert attrs.asdict(fresh(), recurse=False) == attrs.asdict(plain, recurse=False)
        assert pickle.loads(pickle.dumps(fresh())) == plain
        assert attrs.evolve(fresh(), version=1) == plain
        match fresh():
            case Recorded(timestamp=matched):
                assert matched == moment
        kept = fresh()
        assert kept.timestamp is kept.timestamp
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            kept.timestamp = moment  # type: ignore[misc]


def test_an_envelope_built_with_a_datetime_keeps_that_very_datetime() -> None:
    """A datetime given (a user's clock, or Recorded(...)) is the one read back."""
    assert Recorded("payload", "s", 1, 2, AT).timestamp is AT
    assert new_recorded("payload", "s", 1, 2, AT, "t", NO_METADATA).timestamp is AT


def test_new_recorded_seals_a_blank() -> None:
    """The envelope's fast way is the one taken here (CPython allows the __class__ swap)."""
    assert "s_event" in _SLOTS.__code__.co_freevars
    assert "s_event" not in new_recorded.__code__.co_freevars


@given(
    correlation=st.none() | st.text(max_size=8),
    causation=st.none() | st.text(max_size=8),
    headers=st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3),
)
def test_the_fast_metadata_is_the_metadata(
    correlation: str | None, causation: str | None, headers: dict[str, str]
) -> None:
    """new_metadata builds what Metadata(...) builds: equal, hash-equal, frozen, same repr."""
    plain = Metadata(correlation, causation, headers)
    fast = new_metadata(correlation, causation, pmap(headers))
    assert type(fast) is Metadata
    assert fast == plain and hash(fast) == hash(plain) and repr(fast) == repr(plain)
    assert isinstance(fast.headers, PMap)
    assert pickle.loads(pickle.dumps(fast)) == plain
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.causation_id = "x"  # type: ignore[misc]
