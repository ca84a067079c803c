"""Small domains and Hypothesis strategies shared by the core tests.

The example domains (dogs, bank) come from :mod:`fes.examples`; the counter
here has a non-None initial state and a ``Cleared`` event that folds to None,
so the laws are checked where None is a real state, not just "no state yet".
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from hypothesis import strategies as st

import fes
from fes.examples import bank, dogs


@frozen
class Incremented:
    """The counter went up by ``by``."""

    by: int


@frozen
class Cleared:
    """The counter was cleared: its state becomes None."""


def incremented(count: int | None, event: Incremented) -> int:
    return (count or 0) + event.by


def cleared(count: int | None, event: Cleared) -> None:
    return None


def increment(count: int | None, by: int) -> list[Incremented]:
    """Count up by ``by``."""
    return [Incremented(by)]


counter: fes.Aggregate[int | None] = fes.Aggregate(
    name="counter",
    initial=0,
    apply=fes.projector(incremented, cleared, name="counter"),
    events=[Incremented, Cleared],
    commands=[increment],
)


def counted(count: int, event: dogs.TrickAdded) -> int:
    return count + 1


#: Counts tricks: it owns ``TrickAdded`` too, so the dog school's events go to two parts.
trick_count: fes.Aggregate[int] = fes.Aggregate(
    name="trick_count",
    initial=0,
    apply=fes.projector(counted),
    events=[dogs.TrickAdded],
)

names = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8)
amounts = st.integers(min_value=1, max_value=10_000)


@st.composite
def dog_histories(draw: st.DrawFn) -> list[Any]:
    """A dog's history: registered, then some tricks."""
    tricks = draw(st.lists(names.map(dogs.TrickAdded), max_size=8))
    return [dogs.Registered(draw(names)), *tricks]


@st.composite
def account_histories(draw: st.DrawFn) -> list[Any]:
    """An account's history: opened, then any later events (the projector checks no rule)."""
    later = draw(
        st.lists(
            st.one_of(
                amounts.map(bank.Deposited),
                amounts.map(bank.Withdrawn),
                st.integers(0, 1000).map(bank.OverdraftLimitSet),
                st.just(bank.AccountClosed()),
            ),
            max_size=8,
        )
    )
    return [bank.AccountOpened(draw(names)), *later]


counter_histories = st.lists(
    st.one_of(st.integers(-5, 5).map(Incremented), st.just(Cleared())), max_size=10
)

#: (aggregate, strategy of its histories) for every domain the laws run on.
DOMAINS: list[tuple[fes.Aggregate[Any], st.SearchStrategy[list[Any]]]] = [
    (dogs.dogs, dog_histories()),
    (bank.accounts, account_histories()),
    (counter, counter_histories),
]


@st.composite
def domain_histories(draw: st.DrawFn) -> tuple[fes.Aggregate[Any], list[Any]]:
    """One of the domains and a history of it."""
    aggregate, histories = draw(st.sampled_from(DOMAINS))
    return aggregate, draw(histories)


@st.composite
def interleavings(draw: st.DrawFn, *sequences: list[Any]) -> list[Any]:
    """Any merge of ``sequences`` that keeps the order within each of them."""
    labels = [i for i, seq in enumerate(sequences) for _ in seq]
    order = draw(st.permutations(labels))
    cursors = [iter(seq) for seq in sequences]
    return [next(cursors[i]) for i in order]
