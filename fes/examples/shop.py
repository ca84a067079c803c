"""A shop: orders, stock reservations and payments, three applications wired in a cycle.

``orders`` takes orders; ``reservations`` follows it and reserves stock for
each placed order; ``payments`` follows ``reservations`` and takes payment
for each reservation; ``orders`` follows both back, marking an order paid or
cancelled; and ``reservations`` releases the stock of an order cancelled
after it was reserved.  Every policy is a pure function of one recorded
event, so the whole system can be replayed, and every command returns
events (a refusal is an event too: a follower never needs to raise)::

    orders ──OrderPlaced──▶ reservations ──StockReserved──▶ payments
      ▲  ◀──ReservationFailed──┘  ▲                            │
      │                           └────────OrderCancelled──────┤
      └─────────────PaymentTaken / PaymentDeclined─────────────┘

Amounts are integers in cents.  A payment above :data:`CARD_LIMIT` is
declined, so a run shows every path: paid, out of stock, declined.
"""

from __future__ import annotations

from attrs import evolve, field, frozen
from pyrsistent import PMap, pmap

import fes

__all__ = [
    "CARD_LIMIT",
    "Order",
    "OrderCancelled",
    "OrderPaid",
    "OrderPlaced",
    "Payment",
    "PaymentDeclined",
    "PaymentTaken",
    "ReservationFailed",
    "Restocked",
    "Stock",
    "StockReleased",
    "StockReserved",
    "cancel",
    "decline_or_take",
    "mark_paid",
    "on_order_event",
    "on_outcome",
    "on_reservation_event",
    "order",
    "order_statuses",
    "orders",
    "payment",
    "payments",
    "place",
    "release",
    "reservations",
    "reserve",
    "restock",
    "revenue",
    "stock",
    "stock_stream",
    "system",
]

#: Payments above this many cents are declined.
CARD_LIMIT = 50_000


# --- orders -----------------------------------------------------------------


@frozen
class OrderPlaced:
    """A customer ordered ``quantity`` of ``sku`` for ``amount`` cents in all."""

    customer: str
    sku: str
    quantity: int
    amount: int


@frozen
class OrderPaid:
    """The order's payment was taken."""

    amount: int


@frozen
class OrderCancelled:
    """The order will not be fulfilled, for ``reason``; ``reserved`` if stock of ``sku`` is held."""

    reason: str
    sku: str
    reserved: bool


@frozen
class Order:
    """An order's state."""

    customer: str
    sku: str
    quantity: int
    amount: int
    status: str = "placed"


def _placed(order: Order | None, event: OrderPlaced) -> Order:
    return Order(event.customer, event.sku, event.quantity, event.amount)


def _paid(order: Order, event: OrderPaid) -> Order:
    return evolve(order, status="paid")


def _cancelled(order: Order, event: OrderCancelled) -> Order:
    return evolve(order, status="cancelled")


def place(
    order: Order | None, customer: str, sku: str, quantity: int, amount: int
) -> list[OrderPlaced]:
    """Place a new order."""
    if order is not None:
        raise fes.Rejected("the order was placed already")
    if quantity < 1:
        raise fes.Rejected(f"an order needs a quantity of at least 1, got {quantity}")
    if amount < 0:
        raise fes.Rejected(f"an amount cannot be negative, got {amount}")
    return [OrderPlaced(customer, sku, quantity, amount)]


def mark_paid(order: Order, amount: int) -> list[OrderPaid]:
    """Record the payment; an order already settled stays as it is."""
    return [OrderPaid(amount)] if order.status == "placed" else []


def cancel(order: Order, reason: str, reserved: bool) -> list[OrderCancelled]:
    """Cancel an order that is still open."""
    return [OrderCancelled(reason, order.sku, reserved)] if order.status == "placed" else []


order: fes.Aggregate[Order | None] = fes.Aggregate(
    name="order",
    initial=None,
    apply=fes.projector(_placed, _paid, _cancelled, name="order"),
    events=[OrderPlaced, OrderPaid, OrderCancelled],
    commands=[place, mark_paid, cancel],
)


# --- reservations -----------------------------------------------------------


@frozen
class Restocked:
    """``quantity`` more units of ``sku`` arrived."""

    sku: str
    quantity: int


@frozen
class StockReserved:
    """Units were set aside for an order (which costs ``amount``)."""

    order_id: str
    sku: str
    quantity: int
    amount: int


@frozen
class ReservationFailed:
    """An order could not be served from stock."""

    order_id: str
    sku: str
    wanted: int
    available: int


@frozen
class StockReleased:
    """An order's reserved units went back on the shelf."""

    order_id: str
    quantity: int


@frozen
class Stock:
    """One product's stock: units available and units held per order."""

    sku: str
    available: int = 0
    held: PMap[str, int] = field(factory=pmap)


def _restocked(stock: Stock | None, event: Restocked) -> Stock:
    current = stock or Stock(event.sku)
    return evolve(current, available=current.available + event.quantity)


def _reserved(stock: Stock | None, event: StockReserved) -> Stock:
    current = stock or Stock(event.sku)
    return evolve(
        current,
        available=current.available - event.quantity,
        held=current.held.set(event.order_id, event.quantity),
    )


def _failed(stock: Stock | None, event: ReservationFailed) -> Stock:
    return stock or Stock(event.sku)


def _released(stock: Stock, event: StockReleased) -> Stock:
    return evolve(
        stock, available=stock.available + event.quantity, held=stock.held.remove(event.order_id)
    )


def restock(stock: Stock | None, sku: str, quantity: int) -> list[Restocked]:
    """Add units of a product."""
    if quantity < 1:
        raise fes.Rejected(f"restock at least one unit, got {quantity}")
    return [Restocked(sku, quantity)]


def reserve(
    stock: Stock | None, order_id: str, sku: str, quantity: int, amount: int
) -> list[StockReserved | ReservationFailed]:
    """Hold units for an order, or say why not; reserving twice changes nothing."""
    available = 0 if stock is None else stock.available
    if stock is not None and order_id in stock.held:
        return []
    if quantity > available:
        return [ReservationFailed(order_id, sku, quantity, available)]
    return [StockReserved(order_id, sku, quantity, amount)]


def release(stock: Stock | None, order_id: str) -> list[StockReleased]:
    """Put an order's held units back; an order holding nothing changes nothing."""
    if stock is None or order_id not in stock.held:
        return []
    return [StockReleased(order_id, stock.held[order_id])]


stock: fes.Aggregate[Stock | None] = fes.Aggregate(
    name="stock",
    initial=None,
    apply=fes.projector(_restocked, _reserved, _failed, _released, name="stock"),
    events=[Restocked, StockReserved, ReservationFailed, StockReleased],
    commands=[restock, reserve, release],
)


def stock_stream(sku: str) -> str:
    """The id of a product's stock stream: derived from the SKU, so policies can name it."""
    return f"stock-{sku}"


# --- payments ---------------------------------------------------------------


@frozen
class PaymentTaken:
    """The customer paid ``amount`` cents for an order."""

    order_id: str
    amount: int


@frozen
class PaymentDeclined:
    """The card was declined for an order."""

    order_id: str
    amount: int
    reason: str


@frozen
class Payment:
    """A payment's outcome."""

    order_id: str
    amount: int
    taken: bool


def _taken(payment: Payment | None, event: PaymentTaken) -> Payment:
    return Payment(event.order_id, event.amount, True)


def _declined(payment: Payment | None, event: PaymentDeclined) -> Payment:
    return Payment(event.order_id, event.amount, False)


def decline_or_take(
    payment: Payment | None, order_id: str, amount: int
) -> list[PaymentTaken | PaymentDeclined]:
    """Charge the card once: above the card limit it is declined."""
    if payment is not None:
        return []
    if amount > CARD_LIMIT:
        return [PaymentDeclined(order_id, amount, f"above the card limit of {CARD_LIMIT}")]
    return [PaymentTaken(order_id, amount)]


payment: fes.Aggregate[Payment | None] = fes.Aggregate(
    name="payment",
    initial=None,
    apply=fes.projector(_taken, _declined, name="payment"),
    events=[PaymentTaken, PaymentDeclined],
    commands=[decline_or_take],
)


# --- policies: each a pure function of one recorded event ---------------------


def on_order_event(recorded: fes.Recorded[object]) -> list[fes.Intent]:
    """Reservations: hold stock for a placed order; release it when the order is cancelled."""
    match recorded.event:
        case OrderPlaced(sku=sku, quantity=quantity, amount=amount):
            args = (recorded.stream, sku, quantity, amount)
            return [fes.Do(stock, stock_stream(sku), reserve, args)]
        case OrderCancelled(sku=sku, reserved=True):
            return [fes.Do(stock, stock_stream(sku), release, (recorded.stream,))]
        case _:
            return []


def on_reservation_event(recorded: fes.Recorded[object]) -> list[fes.Intent]:
    """Payments: charge the card once stock is held."""
    match recorded.event:
        case StockReserved(order_id=order_id, amount=amount):
            return [fes.Do(payment, order_id, decline_or_take, (order_id, amount))]
        case _:
            return []


def on_outcome(recorded: fes.Recorded[object]) -> list[fes.Intent]:
    """Orders: settle an order from its reservation's or its payment's outcome."""
    match recorded.event:
        case ReservationFailed(order_id=order_id, available=available):
            reason = f"out of stock ({available} left)"
            return [fes.Do(order, order_id, cancel, (reason, False))]
        case PaymentTaken(order_id=order_id, amount=amount):
            return [fes.Do(order, order_id, mark_paid, (amount,))]
        case PaymentDeclined(order_id=order_id, reason=reason):
            return [fes.Do(order, order_id, cancel, (f"payment declined: {reason}", True))]
        case _:
            return []


# --- views: pure folds of an application's own log -----------------------------


def _count_status(counts: PMap[str, int], recorded: fes.Recorded[object]) -> PMap[str, int]:
    def bump(table: PMap[str, int], key: str, by: int) -> PMap[str, int]:
        return table.set(key, table.get(key, 0) + by)

    match recorded.event:
        case OrderPlaced():
            return bump(counts, "placed", 1)
        case OrderPaid():
            return bump(bump(counts, "placed", -1), "paid", 1)
        case OrderCancelled():
            return bump(bump(counts, "placed", -1), "cancelled", 1)
        case _:
            return counts


def _add_revenue(total: int, recorded: fes.Recorded[object]) -> int:
    match recorded.event:
        case PaymentTaken(amount=amount):
            return total + amount
        case _:
            return total


#: How many orders are in each status (placed = still open).
order_statuses: fes.View[PMap[str, int]] = fes.View("statuses", pmap(), _count_status)
#: The cents taken in payments.
revenue: fes.View[int] = fes.View("revenue", 0, _add_revenue)


# --- the system -----------------------------------------------------------------

orders = fes.App("orders", aggregates=[order], policy=on_outcome, views=[order_statuses])
reservations = fes.App("reservations", aggregates=[stock], policy=on_order_event)
payments = fes.App("payments", aggregates=[payment], policy=on_reservation_event, views=[revenue])

system = fes.System(
    [orders, reservations, payments],
    pipes=[
        ["orders", "reservations", "payments", "orders"],
        ["reservations", "orders"],
    ],
)
