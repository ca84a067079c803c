"""Laws of the aggregate combinators: combine, neutral, map_state, adapt, contramap_command."""

from __future__ import annotations

from typing import Any

import pytest
from attrs import frozen
from hypothesis import given
from hypothesis import strategies as st

import fes
from fes.examples import bank, dogs

from .domains import (
    DOMAINS,
    Incremented,
    account_histories,
    counter,
    counter_histories,
    dog_histories,
    domain_histories,
    interleavings,
    trick_count,
)

A, B, C = dogs.dogs, bank.accounts, counter


@st.composite
def three_histories(draw: st.DrawFn) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """A history of each of A, B, C and one interleaving of the three."""
    a, b, c = draw(dog_histories()), draw(account_histories()), draw(counter_histories)
    return a, b, c, draw(interleavings(a, b, c))


# --- neutral and identity --------------------------------------------------


def test_neutral_has_a_unit_state_and_nothing_else() -> None:
    """neutral owns no events, offers no commands and its state is ()."""
    assert fes.neutral.initial == ()
    assert fes.neutral.events == ()
    assert dict(fes.neutral.commands) == {}
    assert fes.neutral.apply((), object()) == ()


@given(domain_histories())
def test_neutral_is_a_right_and_left_identity(drawn: Any) -> None:
    """combine(a, neutral) and combine(neutral, a) fold like a, in their slot of the tuple."""
    aggregate, history = drawn
    expected = aggregate.fold(history)
    assert fes.combine(aggregate, fes.neutral).fold(history) == (expected, ())
    assert fes.combine(fes.neutral, aggregate).fold(history) == ((), expected)


@given(domain_histories())
def test_combine_of_one_is_a_one_tuple(drawn: Any) -> None:
    """combine(a) folds to the 1-tuple of a's state."""
    aggregate, history = drawn
    assert fes.combine(aggregate).fold(history) == (aggregate.fold(history),)


def test_combine_of_nothing_is_neutral_like() -> None:
    """combine() is named 'neutral', has state () and refuses every event."""
    empty = fes.combine()
    assert (empty.name, empty.initial, empty.events) == ("neutral", (), ())
    with pytest.raises(fes.errors.UnhandledEvent, match="in neutral"):
        empty.fold([dogs.Registered("x")])


# --- associativity ---------------------------------------------------------


def _left(state: tuple[tuple[Any, Any], Any]) -> tuple[Any, Any, Any]:
    (a, b), c = state
    return a, b, c


def _right(state: tuple[Any, tuple[Any, Any]]) -> tuple[Any, Any, Any]:
    a, (b, c) = state
    return a, b, c


@given(three_histories())
def test_combine_is_associative_up_to_regrouping(drawn: Any) -> None:
    """((a+b)+c), (a+(b+c)) and (a+b+c) fold any interleaving to the same regrouped state."""
    a, b, c, mixed = drawn
    flat = fes.combine(A, B, C).fold(mixed)
    assert flat == (A.fold(a), B.fold(b), C.fold(c))
    assert _left(fes.combine(fes.combine(A, B), C).fold(mixed)) == flat
    assert _right(fes.combine(A, fes.combine(B, C)).fold(mixed)) == flat


@given(dog_histories(), account_histories(), counter_histories, st.data())
def test_combined_state_does_not_depend_on_the_interleaving(
    a: list[Any], b: list[Any], c: list[Any], data: st.DataObject
) -> None:
    """Two interleavings of the same per-part histories fold to the same combined state."""
    combined = fes.combine(A, B, C)
    first = data.draw(interleavings(a, b, c))
    second = data.draw(interleavings(a, b, c))
    assert combined.fold(first) == combined.fold(second)


# --- routing ---------------------------------------------------------------

PARTS = [dogs.dogs, trick_count, bank.accounts, counter]


@st.composite
def parts_and_events(draw: st.DrawFn) -> tuple[list[fes.Aggregate[Any]], list[Any]]:
    """Some distinct parts, and an interleaving of domain histories cut to what they own."""
    parts = draw(st.lists(st.sampled_from(PARTS), min_size=1, max_size=4, unique_by=id))
    histories = [
        [e for e in draw(strategy) if any(p.owns(e) for p in parts)] for _, strategy in DOMAINS
    ]
    return parts, draw(interleavings(*histories))


@given(parts_and_events())
def test_combine_routes_each_event_to_its_owners_only(drawn: Any) -> None:
    """Each slot of combine(*parts) is its part's fold of exactly the events it owns."""
    parts, events = drawn
    combined = fes.combine(*parts)
    assert combined.fold(events) == tuple(
        part.fold([e for e in events if part.owns(e)]) for part in parts
    )


def test_an_event_owned_by_two_parts_reaches_both() -> None:
    """A TrickAdded updates the dog and the trick count; a Registered only the dog."""
    school = fes.combine(dogs.dogs, trick_count)
    state = school.fold([dogs.Registered("Fido"), dogs.TrickAdded("sit")])
    assert state == (dogs.Dog("Fido", dogs.Dog("x").tricks.append("sit")), 1)


def test_an_event_no_part_owns_is_unhandled_naming_the_combination() -> None:
    """Folding an event no part owns raises UnhandledEvent naming the combined aggregate."""
    with pytest.raises(fes.errors.UnhandledEvent, match="'Deposited' in dog\\+counter"):
        fes.combine(dogs.dogs, counter).fold([bank.Deposited(1)])


def test_combine_lists_every_owned_event_once() -> None:
    """The combination owns the union of its parts' events, in order, without repeats."""
    school = fes.combine(dogs.dogs, trick_count, counter)
    assert school.events == (dogs.Registered, dogs.TrickAdded, *counter.events)


def test_combine_names_and_versions() -> None:
    """The combination is named a+b unless named; its snapshot version adds the parts'."""
    assert fes.combine(A, B).name == "dog+account"
    assert fes.combine(A, B, name="office").name == "office"
    bumped = fes.Aggregate("c2", 0, counter.apply, counter.events, snapshot_version=5)
    assert fes.combine(A, bumped).snapshot_version == 6


def test_combine_refuses_two_parts_with_one_name() -> None:
    """Two parts called alike would give clashing command names and are refused."""
    with pytest.raises(fes.errors.DefinitionError, match="two parts are both named 'dog'"):
        fes.combine(dogs.dogs, dogs.dogs)


# --- commands of combined aggregates ---------------------------------------


def test_combined_commands_are_qualified_by_part() -> None:
    """Each part's commands appear as '<part>.<command>', keeping their names."""
    office = fes.combine(A, B)
    assert set(office.commands) == {
        "dog.register",
        "dog.add_trick",
        "account.open_account",
        "account.deposit",
        "account.withdraw",
        "account.set_overdraft_limit",
        "account.close",
    }
    assert office.commands["account.deposit"].__name__ == "deposit"


@given(dog_histories(), account_histories(), st.integers(1, 100))
def test_combined_commands_run_on_their_slot(dog: Any, account: Any, amount: int) -> None:
    """A lifted command sees only its part's state and decides as the part would."""
    office = fes.combine(A, B)
    state = office.fold([*dog, *account])
    dog_state, account_state = state
    lifted = office.commands["dog.add_trick"]
    expected = fes.decide(A, dogs.add_trick, dog_state, "beg")
    assert fes.decide(office, lifted, state, "beg") == expected
    if not account_state.closed:
        assert fes.decide(office, office.commands["account.deposit"], state, amount) == [
            bank.Deposited(amount)
        ]


def test_a_combined_command_on_an_empty_slot_is_a_command_error() -> None:
    """A lifted add_trick on a combination with no dog yet names the command and aggregate."""
    office = fes.combine(A, B)
    with pytest.raises(fes.CommandError) as info:
        fes.decide(office, office.commands["dog.add_trick"], office.initial, "sit")
    assert "command 'add_trick' of aggregate 'dog+account' expects Dog" in str(info.value)


def test_a_lifted_command_on_a_malformed_state_is_left_to_the_command() -> None:
    """A state too short for the slot is not inspected; the command's own error surfaces."""
    office = fes.combine(A, B)
    with pytest.raises(IndexError):
        fes.decide(office, office.commands["account.deposit"], (None,), 5)


# --- map_state -------------------------------------------------------------


def _to(account: bank.Account | None) -> tuple[Any, ...] | None:
    if account is None:
        return None
    return (account.owner, account.balance, account.overdraft_limit, account.closed)


def _back(row: tuple[Any, ...] | None) -> bank.Account | None:
    return None if row is None else bank.Account(*row)


rows = fes.map_state(bank.accounts, _to, _back)


@given(account_histories())
def test_map_state_with_an_iso_commutes_with_fold(history: list[Any]) -> None:
    """fold(map_state(a, to, back)) == to(fold(a)) for an isomorphism to/back."""
    assert rows.fold(history) == _to(bank.accounts.fold(history))


@given(account_histories(), st.integers(1, 50))
def test_map_state_commands_decide_as_the_original(history: list[Any], amount: int) -> None:
    """A mapped command on to(state) decides exactly what the original does on state."""
    state = bank.accounts.fold(history)
    mapped = rows.commands["withdraw"]
    try:
        expected: Any = fes.decide(bank.accounts, bank.withdraw, state, amount)
    except fes.Rejected as exc:
        expected = str(exc)
    try:
        actual: Any = fes.decide(rows, mapped, _to(state), amount)
    except fes.Rejected as exc:
        actual = str(exc)
    assert actual == expected


def test_map_state_keeps_name_events_and_version_and_checks_the_inner_state() -> None:
    """The mapped aggregate keeps its identity; a mapped command sees back(state) when checked."""
    assert (rows.name, rows.events, rows.snapshot_version) == (
        "account",
        bank.accounts.events,
        1,
    )
    assert rows.initial is None
    assert rows.commands["deposit"].__name__ == "deposit"
    with pytest.raises(fes.CommandError, match="'deposit' of aggregate 'account' expects Account"):
        fes.decide(rows, rows.commands["deposit"], None, 5)


# --- adapt -----------------------------------------------------------------


@frozen
class Kennel:
    """An outer event wrapping a dog event."""

    event: Any


@frozen
class Fed:
    """A foreign outer event the dog aggregate knows nothing about."""

    food: str


def _inward(event: Any) -> Any:
    return event.event if isinstance(event, Kennel) else None


kennel = fes.adapt(dogs.dogs, inward=_inward, outward=Kennel, events=[Kennel, Fed], name="kennel")


@given(dog_histories(), st.lists(st.text(max_size=3).map(Fed), max_size=5), st.data())
def test_adapt_drops_foreign_events(history: list[Any], foreign: list[Any], data: Any) -> None:
    """Foreign events leave the state as it is; wrapped ones fold as the inner events."""
    outer = data.draw(interleavings([Kennel(e) for e in history], foreign))
    assert kennel.fold(outer) == dogs.dogs.fold(history)


def test_adapt_maps_emitted_events_outward() -> None:
    """An adapted command's events are the inner ones mapped outward."""
    assert fes.decide(kennel, kennel.commands["register"], None, "Rex") == [
        Kennel(dogs.Registered("Rex"))
    ]
    assert kennel.commands["register"].__name__ == "register"


def test_adapt_keeps_or_renames_and_owns_the_outer_events() -> None:
    """The adapted aggregate owns the outer types; its name defaults to the inner name."""
    assert kennel.name == "kennel"
    assert kennel.events == (Kennel, Fed)
    same = fes.adapt(dogs.dogs, inward=_inward, outward=Kennel, events=[Kennel])
    assert same.name == "dog"


def test_adapt_checks_the_inner_commands_state() -> None:
    """An adapted add_trick on no dog is a CommandError naming add_trick and the adapter."""
    with pytest.raises(fes.CommandError, match="'add_trick' of aggregate 'kennel'"):
        fes.decide(kennel, kennel.commands["add_trick"], None, "sit")


def test_adapted_aggregates_combine() -> None:
    """An adapted aggregate combines like any other: its slot sees its outer events."""
    both = fes.combine(kennel, counter)
    state = both.fold([Kennel(dogs.Registered("Rex")), Incremented(2), Fed("meat")])
    assert state == (dogs.Dog("Rex"), 2)


# --- contramap_command -----------------------------------------------------


def _euros(euros: int) -> tuple[int]:
    return (euros * 100,)


deposit_euros = fes.contramap_command(bank.deposit, _euros)


@given(st.integers(1, 1000))
def test_contramap_command_converts_arguments(euros: int) -> None:
    """A contramapped command decides as the original on the converted arguments."""
    account = bank.Account("ann")
    assert fes.decide(bank.accounts, deposit_euros, account, euros) == fes.decide(
        bank.accounts, bank.deposit, account, euros * 100
    )


def test_contramap_command_keeps_the_name_and_the_state_check() -> None:
    """The converted command is still called 'deposit' and refuses a missing account."""
    assert deposit_euros.__name__ == "deposit"
    with pytest.raises(fes.CommandError, match="'deposit' of aggregate 'account'"):
        fes.decide(bank.accounts, deposit_euros, None, 3)


def test_combined_parts_keep_their_topics() -> None:
    """Composing aggregates does not rename the topics their events are stored under."""
    from fes.examples.bank import Deposited, accounts
    from fes.examples.dogs import Registered, dogs

    both = fes.combine(dogs, accounts)
    assert both.topic_of(Registered) == dogs.topic_of(Registered) == "dog.Registered"
    assert both.topic_of(Deposited) == accounts.topic_of(Deposited)
    assert set(both.topics()) == set(dogs.topics()) | set(accounts.topics())
