"""A match projector that forgets a case is caught by then, check_laws and check_aggregate."""

from __future__ import annotations

from typing import Any

import pytest
from attrs import evolve, frozen
from hypothesis import settings
from hypothesis import strategies as st

import fes
from fes.testing import given
from fes.testing.laws import check_laws, projector_keeps_state
from fes.testing.machines import check_aggregate

FAST = settings(max_examples=60, database=None, deadline=None, derandomize=True)


@frozen
class BookingRequested:
    """A guest asked for a room."""

    guest: str


@frozen
class BookingCancelled:
    """The guest cancelled."""


@frozen
class Booking:
    """A booking, live or cancelled."""

    guest: str
    cancelled: bool = False


def request(booking: Booking | None, guest: str) -> list[BookingRequested]:
    """Request a booking, once."""
    if booking is not None:
        raise fes.Rejected("already requested")
    return [BookingRequested(guest)]


def cancel(booking: Booking) -> list[BookingCancelled]:
    """Cancel a live booking."""
    if booking.cancelled:
        raise fes.Rejected("already cancelled")
    return [BookingCancelled()]


def forgetful(booking: Booking | None, event: Any) -> Booking | None:
    """A projector whose match has no case for BookingCancelled: it falls through to None."""
    match event:
        case BookingRequested(guest=guest):
            return Booking(guest)
    return None


def complete(booking: Booking | None, event: Any) -> Booking | None:
    """The same projector with every case."""
    match event:
        case BookingRequested(guest=guest):
            return Booking(guest)
        case BookingCancelled() if booking is not None:
            return evolve(booking, cancelled=True)
    return booking


def bookings(apply: Any) -> fes.Aggregate[Booking | None]:
    """The booking aggregate with the given projector."""
    return fes.Aggregate(
        "booking",
        initial=None,
        apply=apply,
        commands=[request, cancel],
        events=[BookingRequested, BookingCancelled],
    )


GUESTS = {"request": st.tuples(st.sampled_from(["Ada", "Grace"]))}


def test_then_fails_when_the_projector_loses_the_state() -> None:
    """then folds the new events with the real projector and refuses a state folded to None."""
    spec = given(bookings(forgetful), BookingRequested("Ada")).when(cancel)
    with pytest.raises(AssertionError, match="folds them back to None"):
        spec.then(BookingCancelled())
    given(bookings(complete), BookingRequested("Ada")).when(cancel).then(BookingCancelled())


def test_then_accepts_a_declared_terminal_event() -> None:
    """terminal=True says the events really end the aggregate."""
    spec = given(bookings(forgetful), BookingRequested("Ada")).when(cancel)
    spec.then(BookingCancelled(), terminal=True)


def test_then_fails_when_the_events_do_not_apply() -> None:
    """An event the projector cannot apply is an AssertionError telling the story."""

    def strict(booking: Booking | None, event: Any) -> Booking:
        if not isinstance(event, BookingRequested):
            raise ValueError(f"no case for {event!r}")
        return Booking(event.guest)

    spec = given(bookings(strict), BookingRequested("Ada")).when(cancel)
    with pytest.raises(AssertionError, match="do not apply"):
        spec.then(BookingCancelled())


def test_the_law_names_the_event_and_the_way_out() -> None:
    """projector_keeps_state fails on the lost case and passes on a declared terminal event."""
    aggregate = bookings(forgetful)
    with pytest.raises(AssertionError, match=r"terminal=\[BookingCancelled\]"):
        projector_keeps_state(aggregate, Booking("Ada"), BookingCancelled())
    projector_keeps_state(aggregate, Booking("Ada"), BookingCancelled(), [BookingCancelled])
    projector_keeps_state(aggregate, None, BookingRequested("Ada"))


def test_check_laws_finds_the_lost_case() -> None:
    """check_laws fails on the forgetful projector and passes the complete one."""
    with pytest.raises(AssertionError, match="projector law of 'booking'"):
        check_laws(bookings(forgetful), args=GUESTS, settings=FAST)
    check_laws(bookings(complete), args=GUESTS, settings=FAST)


def test_check_aggregate_finds_the_lost_case() -> None:
    """check_aggregate fails on the forgetful projector, telling the story, and passes the other."""
    with pytest.raises(AssertionError) as caught:
        check_aggregate(bookings(forgetful), args=GUESTS, settings=FAST)
    message = str(caught.value)
    assert "the projector lost the state applying the events of cancel" in message
    assert "when cancel()" in message
    check_aggregate(bookings(complete), args=GUESTS, settings=FAST)
    check_aggregate(
        bookings(forgetful), args=GUESTS, settings=FAST, terminal=[BookingCancelled]
    )
