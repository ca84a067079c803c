"""The example domains, specified with given/when/then and property-tested."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given as hypothesis_given
from hypothesis import strategies as st
from pyrsistent import pvector

import fes
from fes.examples import bank, dogs, shop
from fes.examples.bank import (
    Account,
    AccountClosed,
    AccountOpened,
    Deposited,
    OverdraftLimitSet,
    Withdrawn,
    accounts,
)
from fes.examples.dogs import Dog, Registered, TrickAdded
from fes.testing import given, given_policy
from fes.testing.specs import recorded

# --- dogs ------------------------------------------------------------------


def test_a_new_dog_is_registered() -> None:
    """Registering on an empty stream records Registered and gives a dog with no tricks."""
    given(dogs.dogs).when(dogs.register, "Fido").then(Registered("Fido"))
    given(dogs.dogs).when(dogs.register, "Fido").then_state(Dog("Fido"))


def test_a_dog_cannot_be_registered_twice() -> None:
    """A second registration is rejected, naming the dog."""
    given(dogs.dogs, Registered("Fido")).when(dogs.register, "Rex").then_rejected(
        match="dog 'Fido' is already registered"
    )


@pytest.mark.parametrize("name", ["", "   "])
def test_a_dog_needs_a_name(name: str) -> None:
    """A blank name is rejected."""
    given(dogs.dogs).when(dogs.register, name).then_rejected(match="a dog needs a name")


def test_a_dog_learns_tricks_in_order() -> None:
    """Tricks are added in the order learned."""
    given(dogs.dogs, Registered("Fido"), TrickAdded("sit")).when(dogs.add_trick, "roll").then_state(
        Dog("Fido", pvector(["sit", "roll"]))
    )


def test_a_known_trick_changes_nothing() -> None:
    """Teaching a trick the dog knows emits nothing."""
    knows_sit = given(dogs.dogs, Registered("Fido"), TrickAdded("sit"))
    knows_sit.when(dogs.add_trick, "sit").then_nothing()


def test_a_trick_needs_a_name() -> None:
    """A blank trick is rejected."""
    given(dogs.dogs, Registered("Fido")).when(dogs.add_trick, " ").then_rejected(
        match="a trick needs a name"
    )


def test_an_unregistered_dog_cannot_learn() -> None:
    """add_trick on an empty stream is a CommandError, not an AttributeError."""
    given(dogs.dogs).when(dogs.add_trick, "sit").then_rejected(fes.CommandError)


@hypothesis_given(st.lists(st.sampled_from(["sit", "beg", "roll", "fetch"]), max_size=12))
def test_a_dog_knows_each_trick_once(lessons: list[str]) -> None:
    """However often tricks are taught, the dog knows each once, in first-taught order."""
    dog = dogs.dogs.fold([Registered("Fido")])
    for trick in lessons:
        dog = dogs.dogs.fold(fes.decide(dogs.dogs, dogs.add_trick, dog, trick), dog)
    assert dog is not None
    assert list(dog.tricks) == list(dict.fromkeys(lessons))


def test_the_dog_aggregate_definition() -> None:
    """The dog aggregate owns its two events and offers its two commands."""
    assert dogs.dogs.events == (Registered, TrickAdded)
    assert set(dogs.dogs.commands) == {"register", "add_trick"}
    assert dogs.dogs.topics() == {"dog.Registered": Registered, "dog.TrickAdded": TrickAdded}


# --- bank ------------------------------------------------------------------

OPEN = AccountOpened("ann")


def test_an_account_is_opened_once() -> None:
    """Opening gives an empty account; opening again is rejected."""
    given(accounts).when(bank.open_account, "ann").then_state(Account("ann"))
    given(accounts, OPEN).when(bank.open_account, "bob").then_rejected(match="already open")


def test_deposits_and_withdrawals_move_the_balance() -> None:
    """Deposits add and withdrawals subtract, in cents."""
    given(accounts, OPEN, Deposited(100)).when(bank.withdraw, 30).then(Withdrawn(30))
    given(accounts, OPEN, Deposited(100), Withdrawn(30)).then_state(Account("ann", balance=70))


@pytest.mark.parametrize("command", [bank.deposit, bank.withdraw])
@pytest.mark.parametrize("amount", [0, -5])
def test_amounts_must_be_positive(command: Any, amount: int) -> None:
    """Zero and negative amounts are rejected, naming the amount."""
    given(accounts, OPEN).when(command, amount).then_rejected(
        match=f"amount must be positive, got {amount}"
    )


def test_a_withdrawal_beyond_the_overdraft_limit_is_rejected() -> None:
    """Withdrawing past minus the limit is rejected with balance, limit and amount."""
    ten_and_five = given(accounts, OPEN, Deposited(10), OverdraftLimitSet(5))
    ten_and_five.when(bank.withdraw, 16).then_rejected(
        match="insufficient funds: balance 10, overdraft limit 5, withdrawal 16"
    )
    ten_and_five.when(bank.withdraw, 15).then(Withdrawn(15))


def test_overdraft_limit_rules() -> None:
    """A limit cannot be negative, nor leave the balance below minus the limit."""
    given(accounts, OPEN).when(bank.set_overdraft_limit, 50).then(OverdraftLimitSet(50))
    given(accounts, OPEN).when(bank.set_overdraft_limit, -1).then_rejected(
        match="cannot be negative, got -1"
    )
    given(accounts, OPEN, OverdraftLimitSet(50), Withdrawn(40)).when(
        bank.set_overdraft_limit, 30
    ).then_rejected(match="balance -40 is already below minus the new limit 30")


def test_closing_rules() -> None:
    """An account closes unless overdrawn; a closed account refuses everything."""
    given(accounts, OPEN).when(bank.close).then(AccountClosed())
    given(accounts, OPEN, OverdraftLimitSet(10), Withdrawn(5)).when(bank.close).then_rejected(
        match="cannot close an overdrawn account \\(balance -5\\)"
    )
    closed = given(accounts, OPEN, AccountClosed())
    closed.then_state(Account("ann", closed=True))
    for command, args in [
        (bank.deposit, (1,)),
        (bank.withdraw, (1,)),
        (bank.set_overdraft_limit, (1,)),
        (bank.close, ()),
    ]:
        closed.when(command, *args).then_rejected(match="the account is closed")


def test_commands_need_an_open_account() -> None:
    """Depositing to an account that was never opened is a CommandError."""
    given(accounts).when(bank.deposit, 5).then_rejected(fes.CommandError, match="'deposit'")


bank_commands = st.one_of(
    st.tuples(st.just(bank.deposit), st.integers(-10, 500)),
    st.tuples(st.just(bank.withdraw), st.integers(-10, 500)),
    st.tuples(st.just(bank.set_overdraft_limit), st.integers(-10, 300)),
    st.tuples(st.just(bank.close)),
)


@hypothesis_given(st.lists(bank_commands, max_size=25))
def test_the_balance_never_goes_below_minus_the_overdraft_limit(calls: list[Any]) -> None:
    """Whatever commands run, accepted ones keep balance >= -limit, and it sums the moves."""
    history: list[Any] = [OPEN]
    account = accounts.fold(history)
    for command, *args in calls:
        try:
            new = fes.decide(accounts, command, account, *args)
        except fes.Rejected:
            continue
        history.extend(new)
        account = accounts.fold(new, account)
        assert bank.balance_within_overdraft(account)
    assert account == accounts.fold(history)
    assert account is not None
    moves = sum(
        e.amount if isinstance(e, Deposited) else -e.amount
        for e in history
        if isinstance(e, Deposited | Withdrawn)
    )
    assert account.balance == moves


def test_the_invariant_holds_for_no_account() -> None:
    """An account that does not exist yet trivially satisfies the invariant."""
    assert bank.balance_within_overdraft(None)
    assert not bank.balance_within_overdraft(Account("x", balance=-1))


# --- shop ------------------------------------------------------------------

PLACED = shop.OrderPlaced("ann", "sku-1", 2, 3000)


def test_an_order_is_placed_once_with_sane_numbers() -> None:
    """place records OrderPlaced; a second placing, no quantity or a negative amount is refused."""
    given(shop.order).when(shop.place, "ann", "sku-1", 2, 3000).then(PLACED)
    given(shop.order, PLACED).when(shop.place, "bob", "x", 1, 1).then_rejected(
        match="placed already"
    )
    given(shop.order).when(shop.place, "ann", "x", 0, 1).then_rejected(match="at least 1, got 0")
    given(shop.order).when(shop.place, "ann", "x", 1, -1).then_rejected(
        match="cannot be negative, got -1"
    )


def test_an_open_order_is_paid_or_cancelled_once() -> None:
    """An open order can be paid or cancelled; a settled one ignores both."""
    given(shop.order, PLACED).when(shop.mark_paid, 3000).then_state(
        shop.Order("ann", "sku-1", 2, 3000, "paid")
    )
    given(shop.order, PLACED).when(shop.cancel, "no", True).then(
        shop.OrderCancelled("no", "sku-1", True)
    )
    paid = given(shop.order, PLACED, shop.OrderPaid(3000))
    paid.when(shop.mark_paid, 3000).then_nothing()
    paid.when(shop.cancel, "late", False).then_nothing()
    given(shop.order, PLACED, shop.OrderCancelled("no", "sku-1", False)).then_state(
        shop.Order("ann", "sku-1", 2, 3000, "cancelled")
    )


def test_stock_is_restocked_reserved_and_released() -> None:
    """Stock moves between available and held, once per order."""
    given(shop.stock).when(shop.restock, "sku-1", 5).then_state(shop.Stock("sku-1", 5))
    given(shop.stock).when(shop.restock, "sku-1", 0).then_rejected(match="got 0")
    five = given(shop.stock, shop.Restocked("sku-1", 5))
    five.when(shop.reserve, "o-1", "sku-1", 2, 100).then(
        shop.StockReserved("o-1", "sku-1", 2, 100)
    )
    five.when(shop.reserve, "o-1", "sku-1", 6, 100).then(
        shop.ReservationFailed("o-1", "sku-1", 6, 5)
    )
    five.when(shop.release, "o-1").then_nothing()
    held = given(shop.stock, shop.Restocked("sku-1", 5), shop.StockReserved("o-1", "sku-1", 2, 1))
    held.when(shop.reserve, "o-1", "sku-1", 2, 1).then_nothing()
    held.when(shop.release, "o-1").then(shop.StockReleased("o-1", 2))
    held.when(shop.release, "o-1").then_state(shop.Stock("sku-1", 5))


def test_reserving_unknown_stock_fails_and_creates_the_product() -> None:
    """Reserving a product never restocked fails with 0 available; releasing it does nothing."""
    given(shop.stock).when(shop.reserve, "o-1", "sku-9", 1, 1).then(
        shop.ReservationFailed("o-1", "sku-9", 1, 0)
    )
    given(shop.stock, shop.ReservationFailed("o-1", "sku-9", 1, 0)).then_state(
        shop.Stock("sku-9")
    )
    given(shop.stock, shop.StockReserved("o-1", "sku-9", 1, 1)).then_state(
        shop.Stock("sku-9", -1, shop.Stock("x").held.set("o-1", 1))
    )
    given(shop.stock).when(shop.release, "o-1").then_nothing()


def test_payments_are_taken_once_up_to_the_card_limit() -> None:
    """A payment is taken up to CARD_LIMIT, declined above it, and never charged twice."""
    given(shop.payment).when(shop.decline_or_take, "o-1", shop.CARD_LIMIT).then(
        shop.PaymentTaken("o-1", shop.CARD_LIMIT)
    )
    declined = shop.PaymentDeclined("o-1", shop.CARD_LIMIT + 1, "above the card limit of 50000")
    given(shop.payment).when(shop.decline_or_take, "o-1", shop.CARD_LIMIT + 1).then(declined)
    given(shop.payment, declined).then_state(shop.Payment("o-1", shop.CARD_LIMIT + 1, False))
    given(shop.payment, shop.PaymentTaken("o-1", 5)).when(
        shop.decline_or_take, "o-1", 5
    ).then_nothing()


def test_the_reservations_policy() -> None:
    """A placed order reserves stock; a cancellation of held stock releases it; else nothing."""
    given_policy(shop.on_order_event).when(recorded(PLACED, "o-1")).then(
        fes.Do(shop.stock, "stock-sku-1", shop.reserve, ("o-1", "sku-1", 2, 3000))
    )
    given_policy(shop.on_order_event).when(
        recorded(shop.OrderCancelled("declined", "sku-1", True), "o-1")
    ).then(fes.Do(shop.stock, "stock-sku-1", shop.release, ("o-1",)))
    given_policy(shop.on_order_event).when(
        shop.OrderCancelled("out of stock", "sku-1", False)
    ).then_nothing()
    given_policy(shop.on_order_event).when(shop.OrderPaid(1)).then_nothing()


def test_the_payments_policy() -> None:
    """A reservation asks for payment; other reservation events do nothing."""
    given_policy(shop.on_reservation_event).when(
        shop.StockReserved("o-1", "sku-1", 2, 3000)
    ).then(fes.Do(shop.payment, "o-1", shop.decline_or_take, ("o-1", 3000)))
    given_policy(shop.on_reservation_event).when(shop.Restocked("sku-1", 1)).then_nothing()


def test_the_orders_policy() -> None:
    """Outcomes settle the order: failed reservation or declined card cancel it, payment pays."""
    spec = given_policy(shop.on_outcome)
    spec.when(shop.ReservationFailed("o-1", "sku-1", 2, 1)).then(
        fes.Do(shop.order, "o-1", shop.cancel, ("out of stock (1 left)", False))
    )
    spec.when(shop.PaymentTaken("o-1", 10)).then(fes.Do(shop.order, "o-1", shop.mark_paid, (10,)))
    spec.when(shop.PaymentDeclined("o-1", 10, "nope")).then(
        fes.Do(shop.order, "o-1", shop.cancel, ("payment declined: nope", True))
    )
    spec.when(shop.StockReleased("o-1", 2)).then_nothing()


def test_the_shop_views() -> None:
    """Order statuses count open, paid and cancelled orders; revenue sums payments taken."""
    log = [
        recorded(PLACED, "o-1"),
        recorded(PLACED, "o-2"),
        recorded(PLACED, "o-3"),
        recorded(shop.OrderPaid(3000), "o-1"),
        recorded(shop.OrderCancelled("x", "sku-1", False), "o-2"),
        recorded(shop.PaymentTaken("o-1", 3000), "o-1"),
        recorded(shop.PaymentDeclined("o-2", 9, "x"), "o-2"),
    ]
    assert dict(shop.order_statuses.fold(log)) == {"placed": 1, "paid": 1, "cancelled": 1}
    assert shop.revenue.fold(log) == 3000


def test_the_shop_system_is_a_valid_cycle() -> None:
    """orders → reservations → payments → orders, and reservations → orders."""
    assert shop.system.edges == (
        ("orders", "reservations"),
        ("reservations", "payments"),
        ("payments", "orders"),
        ("reservations", "orders"),
    )
    assert shop.system.leaders("orders") == ("payments", "reservations")
    assert shop.stock_stream("sku-1") == "stock-sku-1"


def _run_shop(
    restocks: dict[str, int], placed: list[tuple[str, int, int]]
) -> tuple[dict[str, list[fes.Recorded[Any]]], dict[tuple[str, str], Any]]:
    """Run the shop system purely: follow every edge until no policy has anything to do."""
    logs: dict[str, list[fes.Recorded[Any]]] = {a.name: [] for a in shop.system.apps}
    states: dict[tuple[str, str], Any] = {}  # streams are per application

    def record(app: str, aggregate: fes.Aggregate[Any], stream: str, events: list[Any]) -> None:
        for item in events:
            version = sum(1 for r in logs[app] if r.stream == stream) + 1
            logs[app].append(recorded(item, stream, version, len(logs[app]) + 1))
            key = (app, stream)
            states[key] = aggregate.fold([item], states.get(key, aggregate.initial))

    def run(app: str, aggregate: fes.Aggregate[Any], stream: str, command: Any, *args: Any) -> None:
        state = states.get((app, stream), aggregate.initial)
        record(app, aggregate, stream, fes.decide(aggregate, command, state, *args))

    for sku, quantity in restocks.items():
        run("reservations", shop.stock, shop.stock_stream(sku), shop.restock, sku, quantity)
    for n, (sku, quantity, amount) in enumerate(placed):
        run("orders", shop.order, f"order-{n}", shop.place, "ann", sku, quantity, amount)
    cursors = dict.fromkeys(shop.system.edges, 0)
    moved = True
    while moved:
        moved = False
        for (leader, follower), done in cursors.items():
            if done == len(logs[leader]):
                continue
            moved = True
            cursors[leader, follower] = done + 1
            policy = shop.system.app(follower).policy
            assert policy is not None
            for intent in policy(logs[leader][done]):
                assert isinstance(intent, fes.Do)
                run(follower, intent.aggregate, intent.stream, intent.command, *intent.args)
    return logs, states


orders_placed = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.integers(1, 4),
        st.integers(0, shop.CARD_LIMIT * 2),
    ),
    max_size=6,
)


@hypothesis_given(st.dictionaries(st.sampled_from(["a", "b"]), st.integers(1, 8)), orders_placed)
def test_the_shop_settles_every_order_and_conserves_stock(
    restocks: dict[str, int], placed: list[tuple[str, int, int]]
) -> None:
    """Run purely, each order ends paid or cancelled, stock is conserved, revenue adds up."""
    logs, states = _run_shop(restocks, placed)
    orders = {f"order-{n}": (p, states["orders", f"order-{n}"]) for n, p in enumerate(placed)}
    paid = {o: p for o, (p, state) in orders.items() if state.status == "paid"}
    assert all(state.status in ("paid", "cancelled") for _, state in orders.values())
    assert all(amount <= shop.CARD_LIMIT for _, _, amount in paid.values())
    assert shop.revenue.fold(logs["payments"]) == sum(amount for _, _, amount in paid.values())
    statuses = shop.order_statuses.fold(logs["orders"])
    assert statuses.get("placed", 0) == 0
    assert statuses.get("paid", 0) == len(paid)
    for sku, quantity in restocks.items():
        level = states["reservations", shop.stock_stream(sku)]
        assert level.available + sum(level.held.values()) == quantity
        assert set(level.held) == {o for o, (s, _, _) in paid.items() if s == sku}
