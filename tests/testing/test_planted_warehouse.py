"""Planted bugs in a small warehouse and its orders, each caught by the check meant for it.

The domain is written for the purpose: orders are placed; the warehouse
picks each order from the bin of its product, or records that it could
not; the order is then shipped or cancelled.  The correct version passes
every check; each planted bug is caught by the check meant for it:

- a policy that leaves some orders without an outcome, by ``check_system``
  with an invariant that every order ends shipped or cancelled;
- a ``match`` projector that forgets a case, by ``check_aggregate``;
- a decision drawing from ``random`` with a biased coin, by ``check_laws``;
- an upcaster that loses a field of old stored events, by ``upcasters_fold``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, TypedDict

import pytest
from attrs import evolve, field, frozen
from hypothesis import settings
from hypothesis import strategies as st
from pyrsistent import PMap, pmap

import fes
from fes.testing import check_aggregate, check_laws
from fes.testing.laws import upcasters_fold
from fes.testing.simulation import Input, SystemState, check_system

# pick draws from random in one planted bug, inside Hypothesis's draws
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module")

FINDING = settings(max_examples=60, database=None, deadline=None, derandomize=True)
SEEDS = range(5)

# --- the bins: stock per product ------------------------------------------------------


class ReceivedV1(TypedDict):
    """Received as stored at version 1: a count of units, before the field was renamed."""

    units: int


def units_to_quantity(old: ReceivedV1) -> Mapping[str, Any]:
    """Version 1 to 2: ``units`` was renamed ``quantity``."""
    return {"quantity": old["units"]}


def _received(*upcasters: Any) -> type:
    @fes.event("warehouse.received", upcasters=upcasters)
    @frozen
    class Received:
        """Units of the bin's product arrived."""

        quantity: int

    return Received


Received = _received(units_to_quantity)


@frozen
class Picked:
    """An order's units were taken from the bin."""

    order: str
    quantity: int


@frozen
class PickFailed:
    """An order could not be picked: too few units."""

    order: str
    wanted: int
    available: int


@frozen
class Restored:
    """A picked order's units went back into the bin."""

    order: str


@frozen
class Bin:
    """A bin: units on hand, and the units each picked order took."""

    on_hand: int = 0
    picked: PMap[str, int] = field(factory=pmap)


def apply_bin(state: Bin, event: Any) -> Bin:
    """The bin's projector, a match with a case per event."""
    match event:
        case Picked(order=order, quantity=quantity):
            return evolve(state, on_hand=state.on_hand - quantity,
                          picked=state.picked.set(order, quantity))
        case PickFailed():
            return state
        case Restored(order=order):
            return evolve(state, on_hand=state.on_hand + state.picked[order],
                          picked=state.picked.remove(order))
        case _:  # Received, of whatever class the upcasters were declared on
            return evolve(state, on_hand=state.on_hand + event.quantity)


def forgetful_bin(state: Bin, event: Any) -> Bin | None:
    """The planted bug: a match without the Restored case."""
    match event:
        case Picked(order=order, quantity=quantity):
            return evolve(state, on_hand=state.on_hand - quantity,
                          picked=state.picked.set(order, quantity))
        case PickFailed():
            return state
        case Received(quantity=quantity):
            return evolve(state, on_hand=state.on_hand + quantity)
    return None


def receive(state: Bin, quantity: int) -> list[Any]:
    """Take in units."""
    if quantity < 1:
        raise fes.Rejected("receive at least one unit")
    return [Received(quantity)]


def pick(state: Bin, order: str, quantity: int) -> list[Picked | PickFailed]:
    """Pick an order once; record a failure when too few units are on hand."""
    if order in state.picked:
        return []
    if quantity > state.on_hand:
        return [PickFailed(order, quantity, state.on_hand)]
    return [Picked(order, quantity)]


def careless_pick(state: Bin, order: str, quantity: int) -> list[Picked | PickFailed]:
    """The planted bug: a unit now and then counted as damaged, by a biased coin."""
    if order in state.picked:
        return []
    if quantity > state.on_hand or random.random() < 0.1:
        return [PickFailed(order, quantity, state.on_hand)]
    return [Picked(order, quantity)]


def restore(state: Bin, order: str) -> list[Restored]:
    """Put a picked order's units back."""
    if order not in state.picked:
        raise fes.Rejected(f"order {order!r} was not picked from this bin")
    return [Restored(order)]


def _bins(apply: Any = apply_bin, received: type = Received, picking: Any = pick) -> Any:
    return fes.Aggregate(
        "bin", Bin(), apply, events=[received, Picked, PickFailed, Restored],
        commands={"receive": receive, "pick": picking, "restore": restore},
    )


bins = _bins()

#: Arguments that reach every command: two orders, small quantities.
ORDERS = st.sampled_from(["o1", "o2"])
BIN_ARGS = {
    "receive": st.tuples(st.integers(1, 4)),
    "pick": st.tuples(ORDERS, st.integers(1, 3)),
    "restore": st.tuples(ORDERS),
}


# --- orders and the system ----------------------------------------------------------


@frozen
class Placed:
    """An order for ``quantity`` units of ``sku``."""

    sku: str
    quantity: int


@frozen
class Shipped:
    """The order left the warehouse."""


@frozen
class Cancelled:
    """The order will not ship."""

    reason: str


@frozen
class Order:
    """An order and where it stands."""

    sku: str
    quantity: int
    status: str = "placed"


def _order(state: Order | None, event: Any) -> Order:
    if isinstance(event, Placed):
        return Order(event.sku, event.quantity)
    assert state is not None
    return evolve(state, status="shipped" if isinstance(event, Shipped) else "cancelled")


def place(state: Order | None, sku: str, quantity: int) -> list[Placed]:
    """Place an order once."""
    if state is not None:
        raise fes.Rejected("placed already")
    return [Placed(sku, quantity)]


def ship(state: Order) -> list[Shipped]:
    """Ship an open order."""
    return [Shipped()] if state.status == "placed" else []


def cancel(state: Order, reason: str) -> list[Cancelled]:
    """Cancel an open order."""
    return [Cancelled(reason)] if state.status == "placed" else []


orders = fes.Aggregate("order", None, _order, events=[Placed, Shipped, Cancelled],
                       commands=[place, ship, cancel])


def pick_placed_orders(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """The warehouse picks each placed order from its product's bin."""
    event = recorded.event
    if isinstance(event, Placed):
        return [fes.Do(bins, f"bin-{event.sku}", pick, (recorded.stream, event.quantity))]
    return []


def settle(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """Orders ship what was picked and cancel what could not be."""
    event = recorded.event
    if isinstance(event, Picked):
        return [fes.Do(orders, event.order, ship)]
    if isinstance(event, PickFailed):
        return [fes.Do(orders, event.order, cancel, ("out of stock",))]
    return []


def settle_picked_only(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """The planted bug: a failed pick is forgotten, and its order stays open for ever."""
    event = recorded.event
    if isinstance(event, Picked):
        return [fes.Do(orders, event.order, ship)]
    return []


def _system(settling: Any = settle) -> fes.System:
    return fes.System(
        [
            fes.App("orders", aggregates=[orders], policy=settling),
            fes.App("warehouse", aggregates=[bins], policy=pick_placed_orders),
        ],
        pipes=[["orders", "warehouse", "orders"]],
    )


def _inputs(stock: list[tuple[str, int]], wanted: list[tuple[str, int]]) -> list[Input]:
    return [
        Input("warehouse", "bin", f"bin-{sku}", "receive", (quantity,)) for sku, quantity in stock
    ] + [
        Input("orders", "order", f"order-{n}", "place", (sku, quantity))
        for n, (sku, quantity) in enumerate(wanted)
    ]


SKUS = st.sampled_from(["nut", "bolt"])
INPUTS = st.builds(
    _inputs,
    st.lists(st.tuples(SKUS, st.integers(1, 4)), max_size=2),
    st.lists(st.tuples(SKUS, st.integers(1, 3)), min_size=1, max_size=3),
)
SYSTEM_BUDGET = settings(max_examples=25, database=None, deadline=None)


def every_order_ships_or_is_cancelled(final: SystemState) -> None:
    """Once quiet, no order is left open."""
    open_orders = [s for s, o in final.states("orders", orders).items() if o.status == "placed"]
    assert not open_orders, f"orders left open: {', '.join(open_orders)}"


def units_are_never_negative(final: SystemState) -> bool:
    """No bin hands out more than it holds."""
    return all(b.on_hand >= 0 for b in final.states("warehouse", bins).values())


# --- the correct version passes -------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_the_correct_warehouse_passes_every_check(seed: int) -> None:
    """The correct bins and system pass the laws, the machine, the upcasters and the simulation."""
    check_laws(bins, args=BIN_ARGS, settings=FINDING, seed=seed)
    check_aggregate(bins, [lambda b: b.on_hand >= 0], args=BIN_ARGS, settings=FINDING, seed=seed)
    upcasters_fold(bins, settings=FINDING)
    check_system(
        _system(), INPUTS, [every_order_ships_or_is_cancelled, units_are_never_negative],
        settings=SYSTEM_BUDGET, seed=seed,
    )


# --- each planted bug is caught ---------------------------------------------------------


def test_a_policy_leaving_orders_open_is_caught_by_the_simulation() -> None:
    """Forgetting failed picks leaves orders open: the invariant names them, shrunk to one."""
    with pytest.raises(AssertionError) as caught:
        check_system(
            _system(settle_picked_only), INPUTS, [every_order_ships_or_is_cancelled],
            settings=SYSTEM_BUDGET, seed=1,
        )
    message = str(caught.value)
    assert "every_order_ships_or_is_cancelled failed: orders left open: order-0" in message
    assert "inputs (1):\n  1. orders/order-0: place(" in message  # no stock: the pick fails


def test_a_match_projector_forgetting_a_case_is_caught_by_check_aggregate() -> None:
    """A bin that folds to None on Restored fails the lost-state law, naming the event."""
    with pytest.raises(AssertionError) as caught:
        check_aggregate(_bins(apply=forgetful_bin), args=BIN_ARGS, settings=FINDING)
    message = str(caught.value)
    assert "the projector lost the state applying the events of restore" in message
    assert "Restored(order=" in message


def test_a_biased_coin_in_a_decision_is_caught_by_the_laws() -> None:
    """A pick failing one time in ten by random.random() fails the purity law."""
    with pytest.raises(AssertionError) as caught:
        check_laws(_bins(picking=careless_pick), args=BIN_ARGS, settings=FINDING)
    message = str(caught.value)
    assert "purity law of 'bin'" in message and "careless_pick(" in message
    assert "is not deterministic" in message


def test_an_upcaster_losing_a_field_is_caught_on_old_stored_events() -> None:
    """An upcaster that forgets to carry the count over fails on version 1 payloads."""

    def renamed_without_value(old: ReceivedV1) -> Mapping[str, Any]:
        return {"quantity": 0} if old["units"] < 0 else {}

    buggy = _bins(received=_received(renamed_without_value))
    with pytest.raises(AssertionError, match=r"version 1.*does not decode"):
        upcasters_fold(buggy, settings=FINDING)
