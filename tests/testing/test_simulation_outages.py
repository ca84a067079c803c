"""A system spread over several databases, one of them down for a while, still exactly once."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings

import fes
from fes.edge import Application, Batch
from fes.edge.stores import Tracking
from fes.errors import ConfigurationError
from fes.examples import shop
from fes.testing.simulation import Down, Quiesce, Run, check_system, simulate
from tests.testing.test_simulation import (
    EXAMPLE,
    REGISTRATIONS,
    SHOP_INPUTS,
    SHOP_INVARIANTS,
    counting,
)

BUDGET = settings(max_examples=60, database=None, deadline=None)

#: The shop over three databases, one per application.
SPREAD = {"orders": "orders-db", "reservations": "stock-db", "payments": "payments-db"}


class _HopefulStore:
    """A store that answers a follower's position from memory, set before the write succeeds."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.hoped: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def append(self, events: Any, *, tracking: Tracking | None = None) -> list[int]:
        """Remember the position about to be recorded, then record."""
        if tracking is not None:
            self.hoped[tracking.leader] = tracking.position  # the bug: before it is known
        positions: list[int] = self._inner.append(events, tracking=tracking)
        return positions

    def last_tracked(self, leader: str) -> int:
        """The remembered position, sparing a read of the store."""
        if leader in self.hoped:
            return self.hoped[leader]
        tracked: int = self._inner.last_tracked(leader)
        return tracked


class HopefulPosition(Application):
    """A broken edge: a follower's position is cached before its commit is known to succeed.

    A commit that fails (the database is down) leaves the cache ahead of the
    store, so the batch is never done again: its effects are lost.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = _HopefulStore(self.store)  # type: ignore[assignment]


class RetriedLater(Application):
    """A broken edge: a commit refused by a down database is kept and retried without tracking.

    The follower, told nothing failed, moves on; the retried events land
    after the database is back, and the batch, never tracked, is done again.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kept: list[Batch] = []

    def commit(self, batch: Batch, *, tracking: Tracking | None = None) -> list[fes.Recorded[Any]]:
        """Commit, first any batch kept; keep a batch a store error refused."""
        while self.kept:
            super().commit(self.kept[0])
            self.kept.pop(0)
        try:
            return super().commit(batch, tracking=tracking)
        except fes.errors.StoreUnavailable:
            self.kept.append(batch)
            return []


def test_the_shop_over_three_databases_passes_with_one_down_at_a_time() -> None:
    """The shop spread over three databases ends exactly once under outages and every fault."""
    counts = check_system(
        shop.system, SHOP_INPUTS, SHOP_INVARIANTS, databases=SPREAD, settings=BUDGET, seed=5
    )
    assert counts["runs"] == 60
    assert counts["outages"] > 0 and counts["store errors"] > 0


def test_a_down_database_stalls_its_followers_and_the_followers_of_its_log() -> None:
    """While reservations' database is down, its follower cannot record and payments cannot read."""
    result = simulate(shop.system, inputs=EXAMPLE, databases=SPREAD, schedule=[
        Down("stock-db", 2),
        Run("reservations<-orders", 4),
        Run("payments<-reservations", 4),
        Run("reservations<-orders", 4),
        Run("payments<-reservations", 4),
    ])
    assert result.ok, result.report()
    down = "failed: database 'stock-db' is down (a simulated outage, through step 3)"
    assert result.trace == (
        "down during steps 2-3 (reservations)",
        f"{down}; tried again later",
        f"{down}; tried again later",
        "processed 3",
        "processed 4",
    )
    assert dict(result.counts) == {"outages": 1, "store errors": 2}
    report = result.report()
    assert "databases: 'orders-db': orders; 'payments-db': payments; 'stock-db': reservations" in (
        report
    )
    assert "  1. database 'stock-db' down for 2 steps -> down during steps 2-3" in report
    assert result.placement == SPREAD


def test_an_outage_names_no_step_past_the_end_of_its_part() -> None:
    """An outage drawn near a part's end is reported as far as the run goes, no further."""
    result = simulate(shop.system, inputs=EXAMPLE, databases=SPREAD, schedule=[
        Down("stock-db", 5),
        Run("reservations<-orders", 4),
        Quiesce(),
        Run("reservations<-orders", 4),
        Down("stock-db", 3),
    ])
    assert result.ok, result.report()
    assert result.trace[0] == (
        "down during step 2, then back as the run goes quiet (reservations)"
    )
    assert result.trace[1] == (
        "failed: database 'stock-db' is down (a simulated outage, through step 2); "
        "tried again later"
    )
    assert result.trace[2:] == (
        "quiet",
        "processed 0",
        "down for no step: back as the run goes quiet (reservations)",
    )
    assert dict(result.counts)["outages"] == 1  # the last met no step


def test_an_outage_fails_commands_of_its_applications() -> None:
    """A command on an application of a down database fails with the store's error."""
    from fes.testing.simulation._faults import _Faults
    from fes.testing.simulation._run import _Simulator

    sim = _Simulator(shop.system, seed=0, application=Application, options={}, databases=SPREAD)
    sim.perform(0, Down("orders-db", 2))
    sim.faults.now = 1
    with pytest.raises(fes.errors.StoreUnavailable, match="database 'orders-db' is down"):
        sim.readers["orders"].execute(shop.order, "o1", shop.place, "ann", "apple", 1, 100)
    # the other databases serve meanwhile
    sim.readers["reservations"].execute(shop.stock, "stock-apple", shop.restock, "apple", 1)
    sim.faults.now = 3  # back
    sim.readers["orders"].execute(shop.order, "o1", shop.place, "ann", "apple", 1, 100)
    assert isinstance(sim.faults, _Faults) and not sim.faults.down


def test_a_position_cached_before_its_commit_loses_effects_across_an_outage() -> None:
    """Only the outage catches a follower whose position runs ahead of a failed commit."""
    message = _failure(HopefulPosition)
    assert "database 'db-counter' down for" in message
    assert "counter/all:" in message and "where the fault-free run has" in message


def test_a_commit_retried_without_tracking_doubles_effects_across_an_outage() -> None:
    """A commit kept through an outage and retried later doubles the batch's effects."""
    message = _failure(RetriedLater)
    assert "database 'db-counter' down for" in message
    assert "the effects of school:" in message


def test_the_counter_over_two_databases_passes_with_outages_alone() -> None:
    """The correct edge passes the same check: the outage itself loses and doubles nothing."""
    counts = check_system(
        counting, REGISTRATIONS, faults=["down"], databases=PLACED, settings=BUDGET, seed=6
    )
    assert counts["outages"] > 0 and counts["store errors"] > 0


PLACED = {"school": "db-school", "counter": "db-counter"}


def _failure(application: type[Application]) -> str:
    with pytest.raises(AssertionError) as caught:
        check_system(
            counting, REGISTRATIONS, faults=["down"], databases=PLACED,
            application=application, settings=BUDGET, seed=6,
        )
    return str(caught.value)


def test_databases_each_and_a_default_for_the_rest() -> None:
    """'each' gives every application its own database; '*' names the rest's."""
    each = simulate(counting, inputs=[], schedule=[], databases="each")
    assert dict(each.placement) == {"school": "school", "counter": "counter"}
    rest = simulate(shop.system, inputs=[], schedule=[], databases={"orders": "a", "*": "b"})
    assert dict(rest.placement) == {"orders": "a", "reservations": "b", "payments": "b"}
    one = simulate(counting, inputs=[], schedule=[])
    assert set(one.placement.values()) == {"main"} and "databases:" not in one.report()


def test_unknown_databases_and_applications_are_refused() -> None:
    """A placement naming no application, a bad name, or a Down of no database is refused."""
    with pytest.raises(ConfigurationError, match="application 'ordres'"):
        simulate(shop.system, inputs=[], schedule=[], databases={"ordres": "a"})
    with pytest.raises(ConfigurationError, match="non-empty string"):
        simulate(shop.system, inputs=[], schedule=[], databases={"orders": ""})
    with pytest.raises(ConfigurationError, match="or be 'each'"):
        simulate(shop.system, inputs=[], schedule=[], databases="all")
    with pytest.raises(ConfigurationError, match="database 'nope'; this run's databases"):
        simulate(shop.system, inputs=[], schedule=[Down("nope")], databases=SPREAD)
