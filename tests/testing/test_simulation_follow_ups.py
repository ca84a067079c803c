"""Follow-up inputs: commands drawn from a quiet system's state, then processed under faults."""

from __future__ import annotations

from typing import Any

import pytest
from attrs import evolve, frozen
from hypothesis import find, settings
from hypothesis import strategies as st

import fes
from fes.edge import Application, Batch
from fes.edge.stores import Tracking
from fes.testing.simulation import (
    Crash,
    Input,
    Quiesce,
    Run,
    SystemState,
    check_system,
    schedules,
    simulate,
)

BUDGET = settings(max_examples=60, database=None, deadline=None)


# --- invoicing: an order issues an invoice; paying it credits a ledger -----------------


@frozen
class Ordered:
    """A customer ordered something costing ``amount``."""

    amount: int


@frozen
class InvoiceIssued:
    """An invoice for an order."""

    order: str
    amount: int


@frozen
class InvoicePaid:
    """The customer paid the invoice."""

    amount: int


@frozen
class Invoice:
    """An invoice, paid or not."""

    amount: int
    paid: bool = False


@frozen
class Credited:
    """The ledger took in ``amount``."""

    amount: int


def order(state: Ordered | None, amount: int) -> list[Ordered]:
    """Order once per stream."""
    if state is not None:
        raise fes.Rejected("ordered already")
    return [Ordered(amount)]


def issue(invoice: Invoice | None, order_id: str, amount: int) -> list[InvoiceIssued]:
    """Issue the order's invoice, once: a second delivery changes nothing."""
    return [] if invoice is not None else [InvoiceIssued(order_id, amount)]


def pay(invoice: Invoice | None) -> list[InvoicePaid]:
    """Pay an issued invoice, once; there is nothing to pay before it is issued."""
    if invoice is None:
        raise fes.Rejected("no invoice was issued")
    if invoice.paid:
        raise fes.Rejected("paid already")
    return [InvoicePaid(invoice.amount)]


def _invoice(state: Invoice | None, event: InvoiceIssued | InvoicePaid) -> Invoice:
    if isinstance(event, InvoiceIssued):
        return Invoice(event.amount)
    assert state is not None
    return evolve(state, paid=True)


orders = fes.Aggregate("order", None, lambda state, event: event, events=[Ordered],
                       commands=[order])
invoices = fes.Aggregate("invoice", None, _invoice, events=[InvoiceIssued, InvoicePaid],
                         commands=[issue, pay])
ledger = fes.Aggregate("ledger", 0, lambda total, event: total + event.amount,
                       events=[Credited])


def invoice_orders(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """Billing issues an invoice per order, on a stream of its own."""
    if isinstance(recorded.event, Ordered):
        args = (recorded.stream, recorded.event.amount)
        return [fes.Do(invoices, f"invoice-{recorded.stream}", issue, args)]
    return []


def credit_payments(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """The ledger appends a credit per payment: a duplicate delivery would count it twice."""
    if isinstance(recorded.event, InvoicePaid):
        return [fes.Emit(ledger, "all", [Credited(recorded.event.amount)])]
    return []


invoicing = fes.System(
    [
        fes.App("shop", aggregates=[orders]),
        fes.App("billing", aggregates=[invoices], policy=invoice_orders),
        fes.App("books", aggregates=[ledger], policy=credit_payments),
    ],
    pipes=[["shop", "billing", "books"]],
)

ORDERS = st.lists(st.integers(1, 50), min_size=1, max_size=3).map(
    lambda amounts: [Input("shop", "order", f"o{n}", "order", (a,)) for n, a in enumerate(amounts)]
)


def pay_issued_invoices(state: SystemState) -> list[Input]:
    """Pay every invoice billing issued: a command no input could name in advance."""
    return [
        Input("billing", "invoice", stream, "pay")
        for stream, invoice in state.states("billing", invoices).items()
        if not invoice.paid
    ]


def every_order_is_credited_once(final: SystemState) -> None:
    """Once the follow-ups ran, the ledger holds exactly the amounts ordered."""
    ordered = sum(state.amount for state in final.states("shop", orders).values())
    credited = final.get("books", ledger, "all")
    assert credited == ordered, f"credited {credited}, ordered {ordered}"


class SplitCommit(Application):
    """A broken edge: records a batch's events, then its tracking in a second transaction."""

    def commit(self, batch: Batch, *, tracking: Tracking | None = None) -> list[fes.Recorded[Any]]:
        """Commit the events alone, then the tracking position alone."""
        recorded = super().commit(batch)
        if tracking is not None:
            super().commit(self.batch(), tracking=tracking)
        return recorded


# --- tests ------------------------------------------------------------------------------


def test_a_follow_up_pays_the_invoices_a_policy_issued() -> None:
    """A follow-up runs on the quiet system, names streams a policy made, and is reported."""
    result = simulate(
        invoicing,
        inputs=[
            Input("shop", "order", "o1", "order", (30,)), ("shop", "order", "o2", "order", (5,))
        ],
        schedule=[Run("billing<-shop", 1), Quiesce(), Crash("books<-billing", 2)],
        follow_ups=[pay_issued_invoices],
        invariants=[every_order_is_credited_once],
    )
    assert result.ok, result.report()
    assert result.final.get("books", ledger, "all") == 35
    [followed] = result.followed_up
    assert followed.step == 1 and followed.name == "pay_issued_invoices"
    assert [i.stream for i in followed.inputs] == ["invoice-o1", "invoice-o2"]
    assert followed.outcomes == ("InvoicePaid(amount=30)", "InvoicePaid(amount=5)")
    report = result.report()
    assert "  2. every follower and view runs until nothing is left to do -> quiet; then" in report
    assert "     follow-up pay_issued_invoices gave 2 inputs:" in report
    assert "       1. billing/invoice-o1: pay() -> InvoicePaid(amount=30)" in report
    assert "crashing before it is recorded -> crashed before recording" in report


def test_follow_ups_left_over_run_after_the_schedule() -> None:
    """Follow-ups beyond the schedule's Quiesce steps run after it, each on a quiet system."""
    calls: list[int] = []

    def count_calls(state: SystemState) -> list[Input]:
        calls.append(len(state.log("books")))
        return []

    result = simulate(
        invoicing,
        inputs=[("shop", "order", "o1", "order", (7,))],
        schedule=[],
        follow_ups=[pay_issued_invoices, count_calls],
    )
    assert result.ok, result.report()
    # the second saw the credit of the first's payment: the system was quiet in between
    # (once in the fault-free run, once in the simulated one)
    assert calls == [1, 1]
    assert [f.step for f in result.followed_up] == [None, None]
    assert "  then follow-up pay_issued_invoices gave 1 input:" in result.report()
    assert "  then follow-up count_calls gave 0 inputs" in result.report()


def test_a_drawn_schedule_has_a_quiesce_step_per_follow_up() -> None:
    """A schedule drawn from a seed, or by Hypothesis, has one Quiesce per follow-up."""
    result = simulate(invoicing, inputs=[("shop", "order", "o1", "order", (7,))], seed=3,
                      steps=5, follow_ups=[pay_issued_invoices])
    assert sum(isinstance(s, Quiesce) for s in result.schedule) == 1
    assert len(result.schedule) == 11 and result.ok
    quick = settings(database=None, max_examples=50)
    drawn = find(schedules(invoicing, follow_ups=2, max_steps=3), lambda s: len(s) > 4,
                 settings=quick)
    assert sum(isinstance(s, Quiesce) for s in drawn) == 2


def test_follow_up_commands_are_processed_under_faults() -> None:
    """An edge bug only the follow-ups' effects expose is caught, and the correct edge passes."""
    counts = check_system(
        invoicing, ORDERS, [every_order_is_credited_once], follow_ups=[pay_issued_invoices],
        settings=BUDGET, seed=4,
    )
    assert counts["runs"] == 60 and counts["crashes"] > 0
    # without follow-ups nothing is paid and the ledger never works: the bug goes unseen
    check_system(invoicing, ORDERS, application=SplitCommit, settings=BUDGET, seed=4)
    with pytest.raises(AssertionError) as caught:
        check_system(
            invoicing, ORDERS, [every_order_is_credited_once], follow_ups=[pay_issued_invoices],
            application=SplitCommit, settings=BUDGET, seed=4,
        )
    message = str(caught.value)
    assert "follow-up pay_issued_invoices gave 1 input" in message
    assert "books/all: 2 events where the fault-free run has 1" in message
    assert "every_order_is_credited_once failed" in message


def test_a_follow_up_giving_other_inputs_than_the_fault_free_run_is_reported() -> None:
    """Follow-ups that see a different state give different inputs; that is a difference."""
    seen: list[int] = []

    def depends_on_the_run(state: SystemState) -> list[Input]:
        seen.append(1)
        # the first call is the fault-free run's, the second the simulated run's
        return [Input("shop", "order", f"late-{len(seen)}", "order", (1,))]

    result = simulate(invoicing, inputs=[], schedule=[], follow_ups=[depends_on_the_run])
    assert not result.ok
    assert any(
        "follow-up depends_on_the_run gave other inputs than in the fault-free run" in d
        for d in result.differences
    )


def test_a_follow_up_that_raises_is_a_failure_of_the_run() -> None:
    """A follow-up raising on the simulated run's state fails the run, naming it."""
    calls: list[int] = []

    def fragile(state: SystemState) -> list[Input]:
        calls.append(1)
        if len(calls) > 1:
            raise ValueError("no such invoice")
        return []

    result = simulate(invoicing, inputs=[], schedule=[], follow_ups=[fragile])
    assert result.failures == ("follow-up fragile raised ValueError: no such invoice",)
    with pytest.raises(AssertionError, match="follow-up fragile raised ValueError"):
        result.check()
