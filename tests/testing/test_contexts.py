"""Derived arguments reuse what the state holds, and draw dates near each other."""

from __future__ import annotations

from datetime import date
from typing import Any, NewType
from uuid import UUID

from attrs import evolve, frozen
from hypothesis import find, settings
from hypothesis import strategies as st
from pyrsistent import pmap, pset

import fes
from fes.testing import check_aggregate, check_laws
from fes.testing.strategies import _values_in, argument_contexts

FAST = settings(max_examples=40, database=None, deadline=None, derandomize=True)
QUICK = settings(max_examples=200, database=None)


@frozen
class StayBooked:
    """A stay was booked."""

    arrive: date
    leave: date


@frozen
class StayCancelled:
    """The stay arriving that day was cancelled."""

    arrive: date


@frozen
class Room:
    """A room and its stays."""

    stays: tuple[StayBooked, ...] = ()


def book(room: Room, arrive: date, leave: date) -> list[StayBooked]:
    """Book 1 to 30 nights on a free room."""
    nights = (leave - arrive).days
    if not 1 <= nights <= 30:
        raise fes.Rejected(f"a stay is 1 to 30 nights, not {nights}")
    if any(arrive < s.leave and s.arrive < leave for s in room.stays):
        raise fes.Rejected("the room is taken")
    return [StayBooked(arrive, leave)]


def cancel(room: Room, arrive: date) -> list[StayCancelled]:
    """Cancel the stay arriving that day."""
    if not any(s.arrive == arrive for s in room.stays):
        raise fes.Rejected("no stay arrives that day")
    return [StayCancelled(arrive)]


def _booked(room: Room, event: StayBooked) -> Room:
    return evolve(room, stays=(*room.stays, event))


def _cancelled(room: Room, event: StayCancelled) -> Room:
    return evolve(room, stays=tuple(s for s in room.stays if s.arrive != event.arrive))


rooms = fes.Aggregate("room", Room(), fes.projector(_booked, _cancelled),
                      commands=[book, cancel], events=[StayBooked, StayCancelled])

STAY = StayBooked(date(2030, 1, 5), date(2030, 1, 9))


@frozen
class Counter:
    """A total."""

    total: int


def add(counter: Counter, amount: int) -> list[Counter]:
    """Add an amount (the event is the new total, for brevity)."""
    return [Counter(counter.total + amount)]


TicketId = NewType("TicketId", UUID)


@frozen
class Desk:
    """The open tickets of a help desk."""

    tickets: tuple[UUID, ...] = ()


counters = fes.Aggregate("counter", Counter(0), lambda _, event: event, commands=[add],
                         events=[Counter])


def test_a_hotel_with_derived_dates_is_exercised_without_args() -> None:
    """Two dates of one call are drawn near each other, and a cancel takes a booked day."""
    # derandomized, yet what Hypothesis draws also depends on the constants of
    # the modules loaded before (it reads their source): 40 examples were
    # seen to book no stay once in a whole-suite run, so this takes more
    enough = settings(FAST, max_examples=150)
    counts = check_aggregate(rooms, settings=enough)
    assert counts["book: accepted"] > 0 and counts["cancel: accepted"] > 0
    laws = check_laws(rooms, settings=enough)
    assert laws["event StayCancelled"] > 0


def test_the_values_of_a_state_are_found_by_type_in_order() -> None:
    """Values are collected from attrs fields, tuples and maps, by exact type, bools apart."""
    state = (Room((STAY,)), pmap({"k": 7}), [True, 3])
    found = _values_in(state)
    assert found[date] == [date(2030, 1, 5), date(2030, 1, 9)]
    assert found[str] == ["k"] and found[int] == [7, 3]
    assert bool not in found


def test_a_command_meeting_a_state_may_take_its_values() -> None:
    """cancel draws the arrival of the stay the room holds; with no stay it cannot."""
    contexts = argument_contexts(rooms)
    taken = find(contexts["cancel"](Room((STAY,))), lambda args: args == (STAY.arrive,),
                 settings=QUICK)
    assert taken == (STAY.arrive,)


def test_a_later_argument_may_be_drawn_near_an_earlier_one() -> None:
    """book's departure may be drawn a few days from its arrival, whatever the dates."""
    contexts = argument_contexts(rooms)
    near = find(contexts["book"](Room()), lambda a: 1 <= (a[1] - a[0]).days <= 30
                and a[0].year > 2000, settings=QUICK)
    assert 1 <= (near[1] - near[0]).days <= 30


def test_args_given_by_the_user_ignore_the_state() -> None:
    """A command named in args= draws from the strategy given, whatever the state holds."""
    only = st.tuples(st.just(date(1999, 1, 1)))
    contexts = argument_contexts(rooms, args={"cancel": only})
    assert contexts["cancel"](Room((STAY,))) is only


def test_a_type_overridden_by_the_user_is_never_reused() -> None:
    """overrides= keyed by a type keeps its values: no value of the state replaces them."""
    contexts = argument_contexts(rooms, overrides={date: st.just(date(1999, 1, 1))})
    drawn: Any = find(contexts["cancel"](Room((STAY,))), lambda args: True, settings=QUICK)
    assert drawn == (date(1999, 1, 1),)
    assert find(contexts["book"](Room((STAY,))), lambda args: True, settings=QUICK) == (
        date(1999, 1, 1), date(1999, 1, 1)
    )


def test_equal_states_give_their_values_in_one_order() -> None:
    """Sets and maps are read in sorted order: equal states built apart list values alike."""
    words = [f"w{n}" for n in range(40)]
    forwards = ({w: n for n, w in enumerate(words)}, frozenset([1, 9, 17]), pset(words))
    backwards = (
        {w: n for n, w in reversed(list(enumerate(words)))},
        frozenset([17, 9, 1]),  # 1, 9 and 17 share a slot: the set lists them as added
        pset(reversed(words)),
    )
    assert forwards == backwards
    assert [list(part) for part in forwards] != [list(part) for part in backwards]
    found = _values_in(forwards)
    assert found == _values_in(backwards)
    first = sorted(words)[:12]  # w0, w1, w10, ..., w19: keys in order, each before its value
    assert found[str] == first and found[int] == [words.index(w) for w in first]


def test_values_near_a_held_one_lie_a_few_steps_from_it() -> None:
    """Every way of taking an int gives the derived value, or a held one moved 3 at most."""
    held, derived = 10**18, -5
    context = argument_contexts(counters)["add"]
    taken = {context.resolve(((derived, how),), Counter(held))[0] for how in range(504)}
    assert taken == {derived} | set(range(held - 3, held + 4))


def test_the_choices_are_drawn_without_the_state() -> None:
    """One drawn choice gives arguments for any state: what is drawn cannot depend on it."""
    context = argument_contexts(rooms)["cancel"]
    derived = date(1999, 1, 1)
    shape = find(context.choices, lambda c: True, settings=QUICK)  # ((a date, how),)
    assert isinstance(shape[0][0], date) and isinstance(shape[0][1], int)
    drawn = ((derived, 2),)  # the third of six ways (a value held), the first value
    assert context.resolve(drawn, Room((STAY,))) == (STAY.arrive,)
    assert context.resolve(drawn, Room()) == (derived,)  # none held: the derived date


def test_an_id_of_a_new_type_is_taken_from_the_ids_the_state_holds() -> None:
    """An argument annotated NewType("TicketId", UUID) may be a UUID the state holds."""
    ticket = UUID("12345678-1234-5678-1234-567812345678")

    def close(desk: Desk, which: TicketId) -> list[Desk]:
        return [Desk(tuple(t for t in desk.tickets if t != which))]

    desks = fes.Aggregate("desk", Desk(), lambda _, event: event, commands=[close], events=[Desk])
    taken = find(argument_contexts(desks)["close"](Desk((ticket,))), lambda a: a == (ticket,),
                 settings=QUICK)
    assert taken == (ticket,)
