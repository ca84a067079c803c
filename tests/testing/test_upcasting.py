"""The upcasting law: legacy payloads of each older schema version upcast, decode and fold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict

import pytest
from attrs import evolve, frozen
from hypothesis import settings
from hypothesis import strategies as st

import fes
from fes.errors import DefinitionError
from fes.testing.laws import check_laws, upcast_folds, upcasters_fold

FINDING = settings(max_examples=25, database=None, deadline=None, derandomize=True)

UNITS = {"kWh": 1000, "Wh": 1}


class ReadingV1(TypedDict):
    """A reading as stored at version 1: only a value, in kWh."""

    value: int


class ReadingV2(TypedDict):
    """A reading as stored at version 2: a value and its unit."""

    value: int
    unit: Literal["kWh", "Wh"]


def add_unit(old: ReadingV1) -> Mapping[str, Any]:
    """Version 1 to 2: readings were all in kWh."""
    return {**old, "unit": "kWh"}


def add_source(old: ReadingV2) -> Mapping[str, Any]:
    """Version 2 to 3: readings all came from the meter."""
    return {**old, "source": "meter"}


def _reading(*upcasters: Any) -> type:
    @fes.event("meter.reading", upcasters=upcasters)
    @frozen
    class Reading:
        value: int
        unit: str
        source: str

    return Reading


def _meter(reading: type) -> fes.Aggregate[int]:
    def apply(total: int, event: Any) -> int:
        return total + event.value * UNITS[event.unit]  # an unknown unit cannot fold

    def record(total: int, value: int) -> list[Any]:
        if value < 0:
            raise fes.Rejected("a reading is never negative")
        return [reading(value, "kWh", "meter")]

    return fes.Aggregate(
        name="meter", initial=0, apply=apply, events=[reading], commands=[record]
    )


METER = _meter(_reading(add_unit, add_source))


def test_correct_upcasters_pass_on_every_older_version() -> None:
    """Payloads of versions 1 and 2, drawn from the TypedDict annotations, all fold."""
    upcasters_fold(METER, settings=FINDING)


def test_the_meter_obeys_the_other_laws() -> None:
    """The planted domain is sound otherwise, so only its upcasters are on trial."""
    check_laws(METER, settings=FINDING)


def test_an_upcaster_dropping_a_field_is_caught_on_legacy_data() -> None:
    """An upcaster that loses the value fails to decode, naming the stored version."""

    def lossy(old: ReadingV2) -> Mapping[str, Any]:
        return {"unit": old["unit"], "source": "meter"}

    buggy = _meter(_reading(add_unit, lossy))
    with pytest.raises(AssertionError, match=r"upcasting law of .*Reading: a payload stored at "
                       r"version [12].*does not decode: TypeError.*value"):
        upcasters_fold(buggy, settings=FINDING)


def test_an_upcaster_writing_a_value_the_projector_refuses_is_caught() -> None:
    """An upcaster that misspells the unit decodes, but the projector cannot fold it."""

    def misspelt(old: ReadingV1) -> Mapping[str, Any]:
        return {**old, "unit": "kwh"}

    buggy = _meter(_reading(misspelt, add_source))
    with pytest.raises(AssertionError, match=r"version 1.*cannot fold: KeyError"):
        upcasters_fold(buggy, settings=FINDING)
    upcast_folds(buggy, buggy.events[0], 2, {"value": 1, "unit": "Wh"})  # version 2 is fine


def test_old_shapes_can_be_given_when_upcasters_are_not_annotated() -> None:
    """Unannotated upcasters take their stored shapes from old=, and are checked the same."""
    reading = _reading(lambda old: {**old, "unit": "kWh"}, lambda old: {**old, "source": "m"})
    meter = _meter(reading)
    with pytest.raises(DefinitionError, match=r"from version 1 .*old="):
        upcasters_fold(meter, settings=FINDING)
    shapes = {
        (reading, 1): st.fixed_dictionaries({"value": st.integers(0, 9)}),
        (reading, 2): st.fixed_dictionaries(
            {"value": st.integers(0, 9), "unit": st.sampled_from(sorted(UNITS))}
        ),
    }
    upcasters_fold(meter, old=shapes, settings=FINDING)
    broken = {**shapes, (reading, 2): st.fixed_dictionaries({"value": st.integers(0, 9)})}
    with pytest.raises(AssertionError, match="version 2"):
        upcasters_fold(meter, old=broken, settings=FINDING)


def test_nothing_to_check_is_refused() -> None:
    """An aggregate with no event above version 1 is refused rather than passed vacuously."""
    plain = evolve(METER, events=[])
    with pytest.raises(DefinitionError, match="no event type at a schema version above 1"):
        upcasters_fold(plain, settings=FINDING)
    with pytest.raises(DefinitionError, match="not an older schema version"):
        upcasters_fold(METER, old={(int, 1): st.just({})}, settings=FINDING)


# --- an event that cannot begin a stream -----------------------------------------


class ClosedV1(TypedDict):
    """A rental's close as stored at version 1: minutes only."""

    minutes: int


@fes.event("rental.opened")
@frozen
class Opened:
    bike: str


def _closed(upcaster: Any) -> type:
    @fes.event("rental.closed", upcasters=[upcaster])
    @frozen
    class Closed:
        minutes: int
        charge: int

    return Closed


@frozen
class Rental:
    bike: str
    minutes: int = 0
    charge: int = 0


def _rentals(closed: type) -> fes.Aggregate[Rental | None]:
    def opened(state: None, event: Opened) -> Rental:
        return Rental(event.bike)

    def was_closed(rental: Rental, event: Any) -> Rental:  # a Rental, never the initial None
        return evolve(rental, minutes=event.minutes, charge=event.charge)

    def open_rental(state: None, bike: str) -> list[Any]:
        return [Opened(bike)]

    def close(rental: Rental, minutes: int) -> list[Any]:
        return [closed(minutes, minutes * 2)]

    return fes.Aggregate(
        name="rental", initial=None, apply=fes.projector(opened, (closed, was_closed)),
        events=[Opened, closed], commands=[open_rental, close],
    )


def priced(old: ClosedV1) -> Mapping[str, Any]:
    """Version 1 to 2: a charge of two per minute."""
    return {**old, "charge": old["minutes"] * 2}


def test_an_event_that_cannot_begin_a_stream_is_folded_only_where_it_can_come() -> None:
    """A close is folded after an open, as its handler's annotation says, not on None.

    (It used to be folded on the initial state when the history held no close,
    failing with "'NoneType' object has no attribute ..." on correct upcasters.)
    """
    upcasters_fold(_rentals(_closed(priced)), settings=FINDING)


def test_a_bad_upcaster_of_such_an_event_is_still_caught() -> None:
    """Folding only where the event can come still finds an upcaster that drops a field."""
    def unpriced(old: ClosedV1) -> Mapping[str, Any]:
        return dict(old)  # forgets the charge

    with pytest.raises(AssertionError, match="does not decode"):
        upcasters_fold(_rentals(_closed(unpriced)), settings=FINDING)
