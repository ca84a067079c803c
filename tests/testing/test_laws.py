"""The domain laws: they hold for the example domains and catch each planted impurity."""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
from attrs import define, evolve, frozen
from hypothesis import settings
from hypothesis import strategies as st
from pyrsistent import PMap, pmap

import fes
from fes.edge.codec import Codec
from fes.examples import bank, dogs
from fes.testing.laws import (
    check_laws,
    codec_roundtrips,
    combine_is_associative,
    command_is_pure,
    emitted_events_apply,
    neutral_is_identity,
    outcome,
    projector_is_pure,
    recorded_history,
    snapshot_equals_fold,
    view_rebuild_equals_incremental,
)

FAST = settings(max_examples=50, database=None, deadline=None)
#: For a planted bug check_laws must find: the same examples in every run, so
#: that a run whose 50 random examples happen to miss it (about one in 40
#: for the restless deposit) cannot fail the suite.
FINDING = settings(FAST, derandomize=True)


def _balances(state: PMap[str, int], record: fes.Recorded[Any]) -> PMap[str, int]:
    change = {bank.Deposited: 1, bank.Withdrawn: -1}.get(type(record.event))
    if change is None:
        return state
    return state.set(record.stream, state.get(record.stream, 0) + change * record.event.amount)


balances = fes.View("balances", pmap(), _balances)

OPENED = bank.AccountOpened("ann")
HISTORY = (OPENED, bank.Deposited(10), bank.Withdrawn(3))


def _copy_roundtrip(event: object) -> object:
    """A faithful round trip, field by field, as a codec should do."""
    return type(event)(**attrs.asdict(event, recurse=False))  # type: ignore[arg-type]


# --- the laws hold on the shipped domains -------------------------------------------


def test_bank_obeys_every_law() -> None:
    """The bank aggregate passes every law, with a view and a faithful round trip."""
    check_laws(bank.accounts, views=[balances], roundtrip=_copy_roundtrip)


def test_dogs_obey_every_law_composed_with_the_bank() -> None:
    """The dog school passes every law, composed with the bank for associativity."""
    check_laws(dogs.dogs, others=[bank.accounts], views=[balances])


def test_the_edge_codec_round_trips_every_bank_and_dog_event() -> None:
    """Events of both domains come back equal through the edge codec."""
    codec = Codec([bank.accounts, dogs.dogs])

    def through_codec(event: object) -> object:
        topic, payload = codec.encode(event, stream="s", version=1)
        return codec.decode(topic, payload, stream="s", version=1)

    # the codec stores integers as JSON numbers of at most 64 bits
    int64 = {int: st.integers(-(2**63), 2**63 - 1)}
    check_laws(bank.accounts, roundtrip=through_codec, overrides=int64, settings=FAST)
    check_laws(dogs.dogs, roundtrip=through_codec, settings=FAST)


# --- each law on hand-picked values ---------------------------------------------------


@define
class Tally:
    """A mutable state, so that a projector or command can mutate it."""

    count: int = 0
    seen: list[int] = attrs.Factory(list)


@frozen
class Counted:
    n: int


def _mutating_apply(state: Tally, event: Counted) -> Tally:
    state.seen.append(event.n)
    return Tally(state.count + 1, list(state.seen))


def _pure_apply(state: Tally, event: Counted) -> Tally:
    return Tally(state.count + 1, [*state.seen, event.n])


_ticks = itertools.count()


def _restless_apply(state: int, event: Counted) -> int:
    return state + event.n + next(_ticks)


def tally(apply: Any, *commands: Any, initial: Any = None) -> fes.Aggregate[Any]:
    return fes.Aggregate(
        "tally",
        initial=Tally() if initial is None else initial,
        apply=fes.projector((Counted, apply), name="tally"),
        events=[Counted],
        commands=list(commands),
    )


def test_a_projector_that_mutates_its_state_breaks_purity() -> None:
    """projector_is_pure notices a state changed in place."""
    projector_is_pure(tally(_pure_apply), Tally(), Counted(1))
    with pytest.raises(AssertionError, match="mutated its input"):
        projector_is_pure(tally(_mutating_apply), Tally(), Counted(1))


def test_a_projector_that_is_not_deterministic_breaks_purity() -> None:
    """projector_is_pure notices two applications that disagree."""
    with pytest.raises(AssertionError, match="not deterministic"):
        projector_is_pure(tally(_restless_apply, initial=0), 0, Counted(1))


def test_a_projector_that_raises_breaks_purity_with_the_error() -> None:
    """A projector error is reported with the state and event it met."""
    with pytest.raises(AssertionError, match=r"raised UnhandledEvent"):
        projector_is_pure(bank.accounts, None, Counted(1))


def count(state: Tally, n: int) -> list[Counted]:
    return [Counted(n)]


def count_mutating(state: Tally, n: int) -> list[Counted]:
    state.count += 1
    return [Counted(n)]


def count_restless(state: Tally, n: int) -> list[Counted]:
    return [Counted(n + next(_ticks))]


def count_crashing(state: Tally, n: int) -> list[Counted]:
    return [Counted(n // state.count)]


def test_commands_that_mutate_or_wander_break_purity() -> None:
    """command_is_pure notices a mutated state, a changing result and a stray exception."""
    agg = tally(_pure_apply, count, count_mutating, count_restless, count_crashing)
    assert command_is_pure(agg, count, Tally(), (1,)).events == (Counted(1),)
    with pytest.raises(AssertionError, match="mutated its input"):
        command_is_pure(agg, count_mutating, Tally(), (1,))
    with pytest.raises(AssertionError, match="not deterministic"):
        command_is_pure(agg, count_restless, Tally(), (1,))
    with pytest.raises(AssertionError, match=r"count_crashing\(1\) raised ZeroDivisionError"):
        command_is_pure(agg, count_crashing, Tally(), (1,))


def test_a_refusal_is_an_outcome_not_a_failure() -> None:
    """A Rejected command has a refusal outcome, the same every time."""
    account = bank.Account("ann")
    done = command_is_pure(bank.accounts, bank.withdraw, account, (5,))
    assert done.events == () and done.refused is not None
    assert done.refused.startswith("Rejected: insufficient funds")
    assert outcome(bank.withdraw, account, (5,)) == done


def test_emitted_events_must_be_owned_and_apply() -> None:
    """emitted_events_apply refuses a foreign event and one whose handler fails."""
    account = bank.Account("ann")
    assert emitted_events_apply(bank.accounts, bank.deposit, account, (5,)).balance == 5

    def gift(state: bank.Account) -> list[Any]:
        return [dogs.Registered("Rex")]

    with pytest.raises(AssertionError, match="does not own"):
        emitted_events_apply(bank.accounts, gift, account, ())

    def broken(state: Tally, event: Counted) -> Tally:
        raise KeyError(event.n)

    with pytest.raises(AssertionError, match=r"do not apply.*KeyError"):
        emitted_events_apply(tally(broken, count), count, Tally(), (3,))


def test_snapshot_law_catches_a_projector_with_hidden_state() -> None:
    """Folding from a snapshot differs from a full fold when the projector keeps a counter."""
    for at in range(len(HISTORY) + 1):
        snapshot_equals_fold(bank.accounts, HISTORY, at)
    restless = tally(_restless_apply, initial=0)
    with pytest.raises(AssertionError, match="snapshot law"):
        snapshot_equals_fold(restless, [Counted(1), Counted(2)], 1)


def test_identity_law_holds_for_the_bank_with_commands() -> None:
    """combine with neutral on either side folds and decides like the bank alone."""
    neutral_is_identity(bank.accounts, HISTORY, ("withdraw", (2,)))
    neutral_is_identity(bank.accounts, HISTORY, ("withdraw", (200,)))
    neutral_is_identity(bank.accounts, (), ("open_account", ("bob",)))


def test_identity_law_catches_an_event_type_missing_from_events() -> None:
    """An aggregate that folds an event it does not list cannot be composed: the law says so."""
    forgetful = evolve(bank.accounts, events=[bank.AccountOpened])
    with pytest.raises(AssertionError, match="identity law"):
        neutral_is_identity(forgetful, HISTORY)


def test_associativity_holds_for_three_domains_interleaved() -> None:
    """Regrouping a combination of bank, dogs and a tally changes only the tuple shape."""
    history = [OPENED, dogs.Registered("Rex"), Counted(2), bank.Deposited(5)]
    combine_is_associative(bank.accounts, dogs.dogs, tally(_pure_apply), history)


def test_associativity_catches_an_event_type_missing_from_events() -> None:
    """A part that cannot fold the events it is given breaks the law with a message."""
    forgetful = evolve(bank.accounts, events=[bank.AccountOpened])
    with pytest.raises(AssertionError, match="associativity law"):
        combine_is_associative(forgetful, dogs.dogs, tally(_pure_apply), HISTORY)


def test_recorded_history_interleaves_streams_in_log_order() -> None:
    """Records get per-stream versions, increasing positions and the aggregate's topics."""
    records = recorded_history(bank.accounts, [HISTORY, (OPENED,)], [0, 1, 0, 0])
    assert [(r.stream, r.version, r.position) for r in records] == [
        ("account-1", 1, 1), ("account-2", 1, 2), ("account-1", 2, 3), ("account-1", 3, 4)
    ]
    assert records[1].topic == bank.accounts.topic_of(bank.AccountOpened)
    assert records[0].timestamp < records[1].timestamp


def test_view_law_catches_a_view_that_mutates_its_initial_state() -> None:
    """A view appending to its (shared) initial list differs between rebuild and pieces."""
    records = recorded_history(bank.accounts, [HISTORY], [0, 0, 0])
    view_rebuild_equals_incremental(balances, records, [1, 2])

    def hoard(state: list[Any], record: fes.Recorded[Any]) -> list[Any]:
        state.append(record.event)
        return state

    hoarder = fes.View("hoarder", [], hoard)
    with pytest.raises(AssertionError, match="view law of 'hoarder'"):
        view_rebuild_equals_incremental(hoarder, records, [1])


def test_codec_law_catches_a_lossy_round_trip() -> None:
    """A round trip that loses a field is reported with both values."""
    codec_roundtrips(bank.Deposited(5), _copy_roundtrip)
    with pytest.raises(AssertionError, match=r"Deposited\(amount=5\) came back as"):
        codec_roundtrips(bank.Deposited(5), lambda e: bank.Deposited(0))
    with pytest.raises(AssertionError, match="raised ValueError"):
        codec_roundtrips(bank.Deposited(5), lambda e: int("x"))


# --- check_laws finds planted impurities on its own -----------------------------------


def test_check_laws_finds_a_command_that_is_not_deterministic() -> None:
    """A deposit that adds a hidden counter's value is caught and named."""

    def deposit(account: bank.Account, amount: int) -> list[bank.Deposited]:
        return [bank.Deposited(amount + next(_ticks))]

    restless = evolve(bank.accounts, commands={**bank.accounts.commands, "deposit": deposit})
    with pytest.raises(AssertionError, match=r"deposit\(.*not deterministic"):
        check_laws(restless, settings=FINDING)


def test_check_laws_finds_a_lossy_codec() -> None:
    """A round trip that drops the owner is caught on a drawn history."""

    def lossy(event: object) -> object:
        return bank.AccountOpened("") if isinstance(event, bank.AccountOpened) else event

    with pytest.raises(AssertionError, match="codec round trip: AccountOpened"):
        check_laws(bank.accounts, roundtrip=lossy, settings=FINDING)


def test_check_laws_finds_a_view_with_hidden_state() -> None:
    """A view counting its calls in a closure differs between rebuild and pieces."""
    calls = itertools.count()
    counting = fes.View("counting", 0, lambda n, r: next(calls))
    with pytest.raises(AssertionError, match="view law of 'counting'"):
        check_laws(dogs.dogs, views=[counting], settings=FINDING)


def test_a_fingerprint_that_changes_between_two_computations_is_its_own_law() -> None:
    """A projector keeping a tally in what it closes over changes its own fingerprint."""

    @frozen
    class Ticked:
        pass

    calls: list[int] = []

    def tick(total: int, event: Ticked) -> int:
        calls.append(total)  # hidden state: the fingerprint digests what is closed over
        return total + 1

    def start(total: int) -> list[Ticked]:
        return [Ticked()]

    clock = fes.Aggregate("clock", 0, tick, events=[Ticked], commands=[start])
    with pytest.raises(AssertionError, match=r"fingerprint law of 'clock': its fingerprint "
                       r"changed between two computations"):
        check_laws(clock, settings=settings(max_examples=30, database=None, deadline=None))
