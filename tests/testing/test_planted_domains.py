"""Seven planted bugs, each in a small domain of its own, each caught by the tool meant for it.

Every domain is written for the purpose, a few events, a projector and a
command or a policy.  Its correct version passes its check on each of 20
seeds (the ``seed=`` of the check, 0 to 19, with few examples per seed to
keep the file fast); its one planted bug fails the check, and the
``AssertionError`` names the law or invariant that caught it:

- a car park letting one car too many in (``<=`` where ``<`` is meant):
  ``check_aggregate`` and the invariant ``within_spaces``;
- a till whose refunds forget to take their amount off the total (drift):
  ``check_aggregate`` and the invariant ``total_is_the_open_sales``;
- a guest book whose projector writes into the previous state's dict:
  ``check_laws``, the projector purity law (``projector_is_pure``);
- a ticket machine stamping tickets with the clock: ``check_laws``, the
  purity law of commands (``command_is_pure``);
- a loyalty scheme whose follower, when its store refuses a redelivered
  batch, records the points anyway: ``check_system`` with only the
  ``redeliver`` fault;
- an insurer's policy that pays small claims and forgets the large ones:
  ``check_system`` and the invariant ``every_claim_is_decided``;
- a library book whose ``match`` projector has no case for a return:
  ``check_laws``, the projector law (``projector_keeps_state``).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from attrs import define, evolve, field, frozen
from hypothesis import settings
from hypothesis import strategies as st
from pyrsistent import PMap, pmap

import fes
from fes.edge import Application, Batch
from fes.edge.stores import Tracking
from fes.testing import check_aggregate, check_laws, given, given_policy, recorded
from fes.testing.simulation import Input, SystemState, check_system

#: The seeds every correct version passes on.
SEEDS = range(20)
#: Few examples per seed: 20 seeds of a check stay within a second or two.
PER_SEED = settings(max_examples=12, stateful_step_count=10, database=None, deadline=None)
#: Enough examples to find each planted bug, on a fixed seed.
FINDING = settings(max_examples=80, database=None, deadline=None)
#: Whole-system runs are dearer: fewer of them per seed (8 still sees both outcomes on each).
SYSTEM_PER_SEED = settings(max_examples=8, database=None, deadline=None)
SYSTEM_FINDING = settings(max_examples=40, database=None, deadline=None)


# --- 1. a boundary: a car park of SPACES spaces ------------------------------------------

SPACES = 3


@frozen
class Parked:
    """A car came in."""

    plate: str


@frozen
class Left:
    """A car went out."""

    plate: str


@frozen
class CarPark:
    """The plates of the cars inside."""

    cars: frozenset[str] = frozenset()


def parked(park: CarPark, event: Parked) -> CarPark:
    return CarPark(park.cars | {event.plate})


def left(park: CarPark, event: Left) -> CarPark:
    return CarPark(park.cars - {event.plate})


def enter(park: CarPark, plate: str) -> list[Parked]:
    """Let a car in while a space is free."""
    if plate in park.cars:
        raise fes.Rejected("that car is inside")
    if not len(park.cars) < SPACES:
        raise fes.Rejected("the car park is full")
    return [Parked(plate)]


def enter_one_too_many(park: CarPark, plate: str) -> list[Parked]:
    """The planted bug: ``<=`` where ``<`` is meant, so a full car park takes one more."""
    if plate in park.cars:
        raise fes.Rejected("that car is inside")
    if not len(park.cars) <= SPACES:
        raise fes.Rejected("the car park is full")
    return [Parked(plate)]


def leave(park: CarPark, plate: str) -> list[Left]:
    """Let a car out."""
    if plate not in park.cars:
        raise fes.Rejected("that car is not inside")
    return [Left(plate)]


def within_spaces(park: CarPark) -> bool:
    """Never more cars than spaces."""
    return len(park.cars) <= SPACES


car_park = fes.Aggregate(
    "car park", CarPark(), fes.projector(parked, left), events=[Parked, Left],
    commands={"enter": enter, "leave": leave},
)
PLATES = st.tuples(st.sampled_from(["A1", "B2", "C3", "D4", "E5"]))
CARS = {"enter": PLATES, "leave": PLATES}


@pytest.mark.parametrize("seed", SEEDS)
def test_the_car_park_keeps_within_its_spaces(seed: int) -> None:
    """The correct car park turns the fourth car away: the invariant holds, and it was full."""
    sizes: Counter[int] = Counter()

    def noting_the_size(park: CarPark) -> None:
        sizes[len(park.cars)] += 1

    exercised = check_aggregate(car_park, [within_spaces, noting_the_size], args=CARS,
                                settings=PER_SEED, seed=seed)
    assert exercised["enter: accepted"] > 0
    assert sizes[SPACES] > 0, f"the car park was never full: {sizes}"


def test_a_boundary_off_by_one_is_caught_by_the_invariant() -> None:
    """A fourth car let in breaks within_spaces, after exactly four entries."""
    buggy = evolve(car_park, commands={"enter": enter_one_too_many, "leave": leave})
    with pytest.raises(AssertionError) as caught:
        check_aggregate(buggy, [within_spaces], args=CARS, settings=FINDING, seed=0)
    message = str(caught.value)
    assert "invariant within_spaces (after 4 commands)" in message
    assert message.count("-> Parked(plate=") == 4, message


# --- 2. drift: a till whose total must be the sum of its open sales -----------------------


@frozen
class Sold:
    """A sale, with its receipt number and amount in cents."""

    receipt: int
    amount: int


@frozen
class Refunded:
    """A sale was refunded in full."""

    receipt: int


@frozen
class Till:
    """The open sales, by receipt, and the running total kept alongside them."""

    sales: PMap[int, int] = field(factory=pmap)
    total: int = 0


def sold(till: Till, event: Sold) -> Till:
    return Till(till.sales.set(event.receipt, event.amount), till.total + event.amount)


def refunded(till: Till, event: Refunded) -> Till:
    return Till(till.sales.remove(event.receipt), till.total - till.sales[event.receipt])


def refunded_forgetting_the_amount(till: Till, event: Refunded) -> Till:
    """The planted bug: the sale leaves the till, its amount stays in the total."""
    return Till(till.sales.remove(event.receipt), till.total)


def sell(till: Till, receipt: int, amount: int) -> list[Sold]:
    """Ring up a sale under a new receipt number."""
    if receipt in till.sales:
        raise fes.Rejected(f"receipt {receipt} is taken")
    if amount <= 0:
        raise fes.Rejected("a sale is for a positive amount")
    return [Sold(receipt, amount)]


def refund(till: Till, receipt: int) -> list[Refunded]:
    """Refund an open sale."""
    if receipt not in till.sales:
        raise fes.Rejected(f"no open sale {receipt}")
    return [Refunded(receipt)]


def total_is_the_open_sales(till: Till) -> None:
    """The running total is what the open sales add up to."""
    assert till.total == sum(till.sales.values()), (
        f"total {till.total}, open sales add up to {sum(till.sales.values())}"
    )


def _till(on_refund: Any = refunded) -> fes.Aggregate[Till]:
    return fes.Aggregate(
        "till", Till(), fes.projector(sold, on_refund), events=[Sold, Refunded],
        commands={"sell": sell, "refund": refund},
    )


RECEIPTS = st.integers(1, 3)
SALES = {"sell": st.tuples(RECEIPTS, st.integers(1, 500)), "refund": st.tuples(RECEIPTS)}


@pytest.mark.parametrize("seed", SEEDS)
def test_the_till_total_is_its_open_sales(seed: int) -> None:
    """The correct till takes a refund's amount off its total."""
    exercised = check_aggregate(_till(), [total_is_the_open_sales], args=SALES,
                                settings=PER_SEED, seed=seed)
    assert exercised["event Refunded"] > 0


def test_a_total_drifting_from_its_sales_is_caught_by_the_invariant() -> None:
    """A refund that keeps its amount in the total fails total_is_the_open_sales."""
    with pytest.raises(AssertionError) as caught:
        check_aggregate(_till(refunded_forgetting_the_amount), [total_is_the_open_sales],
                        args=SALES, settings=FINDING, seed=0)
    message = str(caught.value)
    assert "invariant total_is_the_open_sales (after 2 commands)" in message
    assert "open sales add up to 0" in message


# --- 3. sharing: a guest book whose projector writes into the previous state --------------


@frozen
class Signed:
    """A guest signed the book."""

    guest: str


@define(eq=True)
class GuestBook:
    """How many times each guest signed (a plain dict, so sharing it is possible)."""

    signatures: dict[str, int]


def signed(book: GuestBook, event: Signed) -> GuestBook:
    return GuestBook({**book.signatures, event.guest: book.signatures.get(event.guest, 0) + 1})


def signed_in_place(book: GuestBook, event: Signed) -> GuestBook:
    """The planted bug: the new state shares the previous state's dict, changed in place."""
    counts = book.signatures
    counts[event.guest] = counts.get(event.guest, 0) + 1
    return GuestBook(counts)


def sign(book: GuestBook, guest: str) -> list[Signed]:
    """Sign the book."""
    return [Signed(guest)]


def _guest_book(apply: Any = signed) -> fes.Aggregate[GuestBook]:
    return fes.Aggregate(
        "guest book", GuestBook({}), fes.projector(apply), events=[Signed], commands=[sign],
    )


GUESTS = {"sign": st.tuples(st.sampled_from(["ann", "bob"]))}


@pytest.mark.parametrize("seed", SEEDS)
def test_the_guest_book_leaves_earlier_states_alone(seed: int) -> None:
    """A projector building a new dict obeys every law."""
    check_laws(_guest_book(), args=GUESTS, settings=PER_SEED, seed=seed)


def test_a_projector_sharing_the_previous_state_is_caught_by_the_purity_law() -> None:
    """Counting a signature in the previous state's dict is reported as a mutated input."""
    with pytest.raises(AssertionError) as caught:
        check_laws(_guest_book(signed_in_place), args=GUESTS, settings=FINDING, seed=0)
    message = str(caught.value)
    assert "the projector of 'guest book' applying Signed(guest=" in message
    assert "mutated its input" in message


# --- 4. the clock: a ticket machine that must take the time as an argument ----------------


@frozen
class Stamped:
    """A ticket was stamped, valid until ``until``."""

    until: datetime


@frozen
class Ticket:
    """A ticket and, once stamped, its end of validity."""

    until: datetime | None = None


def stamped(ticket: Ticket, event: Stamped) -> Ticket:
    return Ticket(event.until)


VALID_FOR = timedelta(minutes=90)


def stamp(ticket: Ticket, now: datetime) -> list[Stamped]:
    """Stamp an unstamped ticket, valid for 90 minutes from ``now``, which the caller gives."""
    if ticket.until is not None:
        raise fes.Rejected("stamped already")
    return [Stamped(now + VALID_FOR)]


def stamp_by_the_clock(ticket: Ticket, now: datetime) -> list[Stamped]:
    """The planted bug: the argument is ignored and the clock read instead."""
    if ticket.until is not None:
        raise fes.Rejected("stamped already")
    return [Stamped(datetime.now(UTC) + VALID_FOR)]


tickets = fes.Aggregate("ticket", Ticket(), fes.projector(stamped), events=[Stamped],
                        commands={"stamp": stamp})
OPENING = datetime(2030, 1, 1, tzinfo=UTC)
TIMES = {"stamp": st.tuples(st.integers(0, 10_000).map(lambda s: OPENING + timedelta(seconds=s)))}


@pytest.mark.parametrize("seed", SEEDS)
def test_the_ticket_machine_stamps_the_time_it_is_given(seed: int) -> None:
    """A stamp computed from its argument obeys every law."""
    check_laws(tickets, args=TIMES, settings=PER_SEED, seed=seed)


def test_a_command_reading_the_clock_is_caught_by_the_purity_law() -> None:
    """Two runs of a stamp read two times: the purity law of commands names the command."""
    buggy = evolve(tickets, commands={"stamp": stamp_by_the_clock})
    with pytest.raises(AssertionError) as caught:
        check_laws(buggy, args=TIMES, settings=FINDING, seed=0)
    message = str(caught.value)
    assert "purity law of 'ticket'" in message and "stamp_by_the_clock(" in message
    assert "is not deterministic" in message


def test_a_specification_of_the_clock_reading_stamp_fails_too() -> None:
    """The specification written from the arguments shows the same bug by hand."""
    now = OPENING + timedelta(minutes=5)
    given(tickets).when(stamp, now).then(Stamped(now + VALID_FOR))
    buggy = evolve(tickets, commands={"stamp": stamp_by_the_clock})
    with pytest.raises(AssertionError):
        given(buggy).when(stamp_by_the_clock, now).then(Stamped(now + VALID_FOR))


# --- 5. redelivery: a loyalty scheme awarding points per purchase -------------------------


@frozen
class Purchased:
    """A customer bought for ``amount`` cents."""

    amount: int


@frozen
class Awarded:
    """Points were added to a customer's card."""

    points: int


def purchase(customer: Purchased | None, amount: int) -> list[Purchased]:
    """A purchase, every time: the scheme must award each one exactly once."""
    return [Purchased(amount)]


purchases = fes.Aggregate("customer", None, lambda state, event: event, events=[Purchased],
                          commands=[purchase])


def award(points: int, earned: int) -> list[Awarded]:
    """Add points; not idempotent by itself, so each purchase must reach it once."""
    return [Awarded(earned)]


cards = fes.Aggregate("card", 0, lambda points, event: points + event.points,
                      events=[Awarded], commands=[award])


def points_per_purchase(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """One point per whole euro spent, on the customer's card."""
    return [fes.Do(cards, recorded.stream, award, (recorded.event.amount // 100,))]


loyalty = fes.System(
    [fes.App("till", aggregates=[purchases]),
     fes.App("loyalty", aggregates=[cards], policy=points_per_purchase)],
    pipes=[["till", "loyalty"]],
)


class AwardsAnyway(Application):
    """The planted bug: a follower's edge that, when tracking refuses a batch, records it anyway.

    It treats the refusal as a passing store error and commits the batch's
    events again without the tracking position, as a follower that is not
    idempotent where it must be.
    """

    def commit(self, batch: Batch, *, tracking: Tracking | None = None) -> list[fes.Recorded[Any]]:
        """Commit; on a refused tracking position, append the events without it."""
        try:
            return super().commit(batch, tracking=tracking)
        except fes.errors.DuplicateTracking:
            again = self.batch()
            for stream, slot in batch.pending.items():
                for item, meta in zip(slot.events, slot.metadata, strict=True):
                    again.emit(slot.aggregate, stream, [item], meta)
            return super().commit(again)


def _purchases(amounts: list[tuple[str, int]]) -> list[Input]:
    return [Input("till", "customer", who, "purchase", (amount,)) for who, amount in amounts]


PURCHASES = st.lists(
    st.tuples(st.sampled_from(["ann", "bob"]), st.integers(100, 900)), min_size=1, max_size=3,
).map(_purchases)


def points_are_what_was_spent(final: SystemState) -> None:
    """Each card holds one point per whole euro of its customer's purchases."""
    for customer in final.streams("till"):
        spent = sum(e.amount // 100 for e in final.events("till", customer))
        card = final.get("loyalty", "card", customer)
        assert card == spent, f"{customer}'s card holds {card} points for {spent} earned"


@pytest.mark.parametrize("seed", SEEDS)
def test_the_loyalty_scheme_awards_each_purchase_once_under_redelivery(seed: int) -> None:
    """Tracking refuses each redelivered batch, so the points are right."""
    struck = check_system(loyalty, PURCHASES, [points_are_what_was_spent], faults={"redeliver"},
                          settings=SYSTEM_PER_SEED, seed=seed)
    assert struck["runs"] == SYSTEM_PER_SEED.max_examples
    assert struck["redeliveries"] > 0 and struck["duplicates refused"] == struck["redeliveries"]


def test_a_double_award_under_redelivery_is_caught_by_the_simulation() -> None:
    """A redelivered batch recorded anyway awards its points twice, shrunk to one purchase."""
    with pytest.raises(AssertionError) as caught:
        check_system(loyalty, PURCHASES, [points_are_what_was_spent], faults={"redeliver"},
                     application=AwardsAnyway, settings=SYSTEM_FINDING, seed=0)
    message = str(caught.value)
    assert message.startswith("the simulated run differs from the fault-free run"), message
    assert "inputs (1):" in message
    assert "its last recorded batch delivered again" in message
    assert "loyalty/ann: 2 events where the fault-free run has 1" in message
    assert "points_are_what_was_spent failed: ann's card holds" in message


# --- 6. outcomes: an insurer decides every claim filed ------------------------------------

PAYOUT_LIMIT = 1_000


@frozen
class Filed:
    """A claim for ``amount``."""

    amount: int


@frozen
class Paid:
    """The claim was paid."""

    amount: int


@frozen
class Declined:
    """The claim was declined."""

    reason: str


@frozen
class Decision:
    """What the insurer decided on a claim."""

    outcome: str


def filed(claim: Filed | None, event: Filed) -> Filed:
    return event


def file_claim(claim: Filed | None, amount: int) -> list[Filed]:
    """File a claim once."""
    if claim is not None:
        raise fes.Rejected("filed already")
    return [Filed(amount)]


claims = fes.Aggregate("claim", None, filed, events=[Filed], commands={"file": file_claim})


def decided(decision: Decision | None, event: Paid | Declined) -> Decision:
    return Decision("paid" if isinstance(event, Paid) else "declined")


def pay(decision: Decision | None, amount: int) -> list[Paid]:
    """Pay an undecided claim."""
    return [Paid(amount)] if decision is None else []


def decline(decision: Decision | None, reason: str) -> list[Declined]:
    """Decline an undecided claim."""
    return [Declined(reason)] if decision is None else []


decisions = fes.Aggregate("decision", None, decided, events=[Paid, Declined],
                          commands=[pay, decline])


def assess(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """Pay a claim up to the limit, decline one above it."""
    amount = recorded.event.amount
    if amount <= PAYOUT_LIMIT:
        return [fes.Do(decisions, recorded.stream, pay, (amount,))]
    return [fes.Do(decisions, recorded.stream, decline, ("above the limit",))]


def assess_small_claims(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """The planted bug: a claim above the limit is neither paid nor declined."""
    amount = recorded.event.amount
    if amount <= PAYOUT_LIMIT:
        return [fes.Do(decisions, recorded.stream, pay, (amount,))]
    return []


def _insurer(policy: Any = assess) -> fes.System:
    return fes.System(
        [fes.App("claims", aggregates=[claims]),
         fes.App("assessors", aggregates=[decisions], policy=policy)],
        pipes=[["claims", "assessors"]],
    )


#: Claims on either side of the limit, and on it.
AMOUNTS = st.sampled_from([1, PAYOUT_LIMIT, PAYOUT_LIMIT + 1, 2 * PAYOUT_LIMIT])
CLAIMS = st.lists(AMOUNTS, min_size=1, max_size=3).map(
    lambda amounts: [Input("claims", "claim", f"claim-{n}", "file", (a,))
                     for n, a in enumerate(amounts)]
)


def every_claim_is_decided(final: SystemState) -> None:
    """Once quiet, every claim filed is paid or declined."""
    undecided = sorted(set(final.streams("claims")) - set(final.streams("assessors")))
    assert not undecided, f"claims without a decision: {', '.join(undecided)}"


@pytest.mark.parametrize("seed", SEEDS)
def test_the_insurer_decides_every_claim(seed: int) -> None:
    """The correct policy pays or declines each claim, under every fault; the runs saw both."""
    outcomes: Counter[str] = Counter()

    def noting_outcomes(final: SystemState) -> None:
        outcomes.update(d.outcome for d in final.states("assessors", decisions).values())

    struck = check_system(_insurer(), CLAIMS, [every_claim_is_decided, noting_outcomes],
                          settings=SYSTEM_PER_SEED, seed=seed)
    assert struck["runs"] == SYSTEM_PER_SEED.max_examples
    assert outcomes["paid"] > 0 and outcomes["declined"] > 0, outcomes


def test_a_policy_leaving_claims_undecided_is_caught_by_the_invariant() -> None:
    """Forgetting large claims leaves them undecided: the invariant names one, shrunk to it."""
    with pytest.raises(AssertionError) as caught:
        check_system(_insurer(assess_small_claims), CLAIMS, [every_claim_is_decided],
                     settings=SYSTEM_FINDING, seed=0)
    message = str(caught.value)
    assert "every_claim_is_decided failed: claims without a decision: claim-0" in message
    assert f"inputs (1):\n  1. claims/claim-0: file({PAYOUT_LIMIT + 1})" in message


def test_the_shrunk_claim_becomes_a_policy_specification() -> None:
    """The shrunk run, written as a specification: the correct policy passes, the buggy fails."""
    large = recorded(Filed(PAYOUT_LIMIT + 1), stream="claim-0")
    declined = fes.Do(decisions, "claim-0", decline, ("above the limit",))
    given_policy(assess).when(large).then(declined)
    with pytest.raises(AssertionError, match=r"(?s)missing: Do on decision .claim-0.: decline"):
        given_policy(assess_small_claims).when(large).then(declined)


# --- 7. a lost case: a library book with a hand-written match projector -------------------


@frozen
class Borrowed:
    """A member took the book out."""

    member: str


@frozen
class Returned:
    """The book came back."""


@frozen
class Book:
    """A book, with its borrower if it is out, and how many loans it has had."""

    borrower: str | None = None
    loans: int = 0


def on_loan(book: Book, event: Any) -> Book:
    """The book's projector: a match with a case per event."""
    match event:
        case Borrowed(member=member):
            return Book(member, book.loans + 1)
        case Returned():
            return evolve(book, borrower=None)
    raise fes.errors.DefinitionError(f"the book has no case for {event!r}")


def on_loan_forgetting_returns(book: Book, event: Any) -> Book | None:
    """The planted bug: no case for Returned, which falls through to None."""
    match event:
        case Borrowed(member=member):
            return Book(member, book.loans + 1)
    return None


def borrow(book: Book, member: str) -> list[Borrowed]:
    """Lend the book if it is in."""
    if book.borrower is not None:
        raise fes.Rejected(f"out with {book.borrower}")
    return [Borrowed(member)]


def give_back(book: Book) -> list[Returned]:
    """Return the book if it is out."""
    if book.borrower is None:
        raise fes.Rejected("the book is in")
    return [Returned()]


def _books(apply: Any = on_loan) -> fes.Aggregate[Book]:
    return fes.Aggregate("book", Book(), apply, events=[Borrowed, Returned],
                         commands={"borrow": borrow, "give_back": give_back})


MEMBERS = {"borrow": st.tuples(st.sampled_from(["ann", "bob"]))}


@pytest.mark.parametrize("seed", SEEDS)
def test_the_library_book_keeps_its_loans(seed: int) -> None:
    """A match with a case per event obeys every law."""
    check_laws(_books(), args=MEMBERS, settings=PER_SEED, seed=seed)


def test_a_match_projector_forgetting_a_case_is_caught_by_the_projector_law() -> None:
    """A return folds the book back to None: the projector law names the event."""
    with pytest.raises(AssertionError) as caught:
        check_laws(_books(on_loan_forgetting_returns), args=MEMBERS, settings=FINDING, seed=0)
    message = str(caught.value)
    assert "projector law of 'book': applying Returned() to Book(borrower=" in message
    assert "the state was lost" in message

