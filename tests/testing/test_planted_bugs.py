"""Planted bugs in small domains written for the purpose, each caught by the tool meant for it.

Each domain has a correct version, which passes, and one planted bug: an
off-by-one boundary (``<=`` for ``<``) caught by an invariant under
``check_aggregate``; a projector drifting with hidden state, and one
mutating a value shared with the previous state, caught by ``check_laws``.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from attrs import define, evolve, frozen
from hypothesis import settings
from hypothesis import strategies as st

import fes
from fes.testing import check_aggregate, check_laws

FINDING = settings(max_examples=60, database=None, deadline=None, derandomize=True)


# --- a boundary: a lift takes at most CAPACITY riders -----------------------------

CAPACITY = 3


@frozen
class Boarded:
    rider: str


@frozen
class Lift:
    riders: tuple[str, ...] = ()


def boarded(lift: Lift, event: Boarded) -> Lift:
    return Lift((*lift.riders, event.rider))


def board(lift: Lift, rider: str) -> list[Boarded]:
    if len(lift.riders) >= CAPACITY:
        raise fes.Rejected("the lift is full")
    return [Boarded(rider)]


def board_off_by_one(lift: Lift, rider: str) -> list[Boarded]:
    if len(lift.riders) > CAPACITY:  # the planted bug: <= where < was meant
        raise fes.Rejected("the lift is full")
    return [Boarded(rider)]


def within_capacity(lift: Lift) -> bool:
    return len(lift.riders) <= CAPACITY


lift = fes.Aggregate(
    name="lift", initial=Lift(), apply=fes.projector(boarded), events=[Boarded],
    commands=[board],
)
RIDERS = {"board": st.tuples(st.sampled_from(["ann", "bob"]))}


def test_the_lift_keeps_its_capacity() -> None:
    """The correct lift refuses a rider once full, so its invariant holds."""
    check_aggregate(lift, [within_capacity], args=RIDERS, settings=FINDING)


def test_an_off_by_one_boundary_is_caught_by_the_invariant() -> None:
    """Letting a fourth rider in breaks the invariant check_aggregate checks at each step."""
    buggy = evolve(lift, commands={"board": board_off_by_one})
    with pytest.raises(AssertionError, match=r"invariant within_capacity \(after 4 commands\)"):
        check_aggregate(buggy, [within_capacity], args=RIDERS, settings=FINDING)


# --- drift: a tally whose projector keeps hidden state ----------------------------


@frozen
class Counted:
    n: int


def count(total: int, n: int) -> list[Counted]:
    return [Counted(n)]


def counted(total: int, event: Counted) -> int:
    return total + event.n


tally = fes.Aggregate(
    name="tally", initial=0, apply=fes.projector(counted), events=[Counted], commands=[count],
)
SMALL = {"count": st.tuples(st.integers(0, 9))}


def test_the_tally_obeys_the_laws() -> None:
    """The correct tally folds from its events alone."""
    check_laws(tally, args=SMALL, settings=FINDING)


def test_a_drifting_projector_is_caught_by_the_laws() -> None:
    """A projector adding a hidden call counter drifts between two folds of one history."""
    calls = itertools.count()

    def drifting(total: int, event: Counted) -> int:
        return total + event.n + next(calls) % 2

    buggy = evolve(tally, apply=fes.projector(drifting))
    with pytest.raises(AssertionError, match=r"projector of .tally. .*not deterministic"):
        check_laws(buggy, args=SMALL, settings=FINDING)


# --- sharing: a shelf whose projector mutates the previous state's list -----------


@frozen
class Shelved:
    book: str


@define(eq=True)
class Shelf:
    books: list[str]


def shelve(shelf: Shelf, book: str) -> list[Shelved]:
    return [Shelved(book)]


def shelved(shelf: Shelf, event: Shelved) -> Shelf:
    return Shelf([*shelf.books, event.book])


def shelved_in_place(shelf: Shelf, event: Shelved) -> Shelf:
    books = shelf.books  # the planted bug: shared with the previous state, then mutated
    books.append(event.book)
    return Shelf(books)


def _shelf(apply: Any) -> fes.Aggregate[Shelf]:
    return fes.Aggregate(
        name="shelf", initial=Shelf([]), apply=fes.projector(apply), events=[Shelved],
        commands=[shelve],
    )


BOOKS = {"shelve": st.tuples(st.sampled_from(["emma", "ulysses"]))}


def test_the_shelf_obeys_the_laws() -> None:
    """A projector building a new list leaves every earlier state as it was."""
    check_laws(_shelf(shelved), args=BOOKS, settings=FINDING)


def test_a_projector_mutating_the_previous_state_is_caught_by_the_laws() -> None:
    """Appending to the previous state's list is reported as a mutated input."""
    with pytest.raises(AssertionError, match="mutated its input"):
        check_laws(_shelf(shelved_in_place), args=BOOKS, settings=FINDING)
