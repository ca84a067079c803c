"""The purity law catches commands that read random, uuid4 or the clock."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from attrs import evolve, frozen
from hypothesis import settings
from hypothesis import strategies as st

import fes
from fes.examples import bank, shop
from fes.testing import given_policy, recorded
from fes.testing.laws import check_laws, command_is_pure
from fes.testing.simulation import Input, check_system

# histories run commands inside Hypothesis's draws, which warns of the planted random
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module")

# the law runs on each example's last command, and Hypothesis draws examples in runs
# of near copies: 60 examples, the same in every run, end with a deposit often enough
FINDING = settings(max_examples=60, database=None, deadline=None, derandomize=True)
QUICK = settings(max_examples=15, database=None, deadline=None)


def _with_deposit(extra: Callable[[], int]) -> fes.Aggregate[bank.Account]:
    """The bank, its deposit adding ``extra()`` to the amount."""

    def deposit(account: bank.Account, amount: int) -> list[bank.Deposited]:
        return [bank.Deposited(amount + extra())]

    return evolve(bank.accounts, commands={**bank.accounts.commands, "deposit": deposit})


def _from_random() -> int:
    return int(random.random() * 1_000_000)


def _from_uuid4() -> int:
    return uuid.uuid4().int % 1_000_000


def _from_clock() -> int:
    return int(datetime.now(UTC).timestamp() * 1_000_000) % 1_000_000


def _from_own_generator() -> int:
    return random.Random(42).randrange(1_000_000)


OPEN = bank.Account(owner="ann", balance=0)


@pytest.mark.parametrize("extra", [_from_random, _from_uuid4, _from_clock])
def test_check_laws_catches_a_command_reading_an_ambient_source(
    extra: Callable[[], int],
) -> None:
    """A deposit reading random, uuid4 or the clock fails the purity law, by name."""
    with pytest.raises(AssertionError) as failure:
        check_laws(_with_deposit(extra), settings=FINDING)
    message = str(failure.value)
    assert "purity law of 'account'" in message
    assert "deposit(" in message
    assert "not deterministic: it did Outcome(events=(Deposited(" in message
    assert ", then Outcome(events=(Deposited(" in message


def test_random_is_caught_whatever_the_callers_seed() -> None:
    """The law seeds random itself for each run, so the caller's seed changes nothing."""
    aggregate = _with_deposit(_from_random)
    random.seed(7)
    with pytest.raises(AssertionError, match=r"deposit\(5\) of 'account'.*not deterministic"):
        command_is_pure(aggregate, aggregate.commands["deposit"], OPEN, (5,))


@pytest.mark.parametrize("caller_seed", range(20))
def test_a_command_tossing_a_coin_is_caught_every_time(caller_seed: int) -> None:
    """A deposit refused on a coin toss is caught whatever the caller's seed, not half the time."""

    def deposit(account: bank.Account, amount: int) -> list[bank.Deposited]:
        if random.random() < 0.5:
            raise fes.Rejected("the coin said no")
        return [bank.Deposited(amount)]

    aggregate = evolve(bank.accounts, commands={"deposit": deposit})
    random.seed(caller_seed)
    with pytest.raises(AssertionError, match="Rejected: the coin said no"):
        command_is_pure(aggregate, deposit, OPEN, (5,))


def test_the_purity_law_restores_the_state_of_random() -> None:
    """The caller's random sequence is the same after the law as before it."""
    aggregate = _with_deposit(_from_own_generator)
    random.seed(3)
    expected = random.Random(3).random()
    command_is_pure(aggregate, aggregate.commands["deposit"], OPEN, (5,))
    assert random.random() == expected


def test_a_command_with_its_own_seeded_generator_is_pure() -> None:
    """A generator seeded from the command's inputs is deterministic, so it passes."""
    check_laws(_with_deposit(_from_own_generator), settings=QUICK, seed=1)


@pytest.mark.parametrize("seed", range(20))
def test_the_correct_bank_passes_the_laws_on_every_seed(seed: int) -> None:
    """The shipped bank, which reads no ambient source, passes on 20 seeds."""
    check_laws(bank.accounts, settings=QUICK, seed=seed)


# --- policies ---------------------------------------------------------------------


def _coin_policy(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """Deposit a bonus on a coin toss: the same event, other intents."""
    if random.random() < 0.5:
        return [fes.Do(bank.accounts, recorded.stream, bank.deposit, (1,))]
    return []


def _random_policy(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """Deposit a random amount."""
    amount = 1 + int(random.random() * 1000)
    return [fes.Do(bank.accounts, recorded.stream, bank.deposit, (amount,))]


def _mutating_policy(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """Change the event it was given (a list inside it)."""
    recorded.event.notes.append("seen")
    return []


@pytest.mark.parametrize("policy", [_coin_policy, _random_policy])
@pytest.mark.parametrize("caller_seed", range(3))
def test_given_policy_catches_a_policy_using_random(policy: Any, caller_seed: int) -> None:
    """given_policy calls the policy twice under two seeds and names it and the event."""
    random.seed(caller_seed)
    with pytest.raises(AssertionError) as caught:
        given_policy(policy).when(recorded(bank.Deposited(5), "acc-1")).then()
    message = str(caught.value)
    assert f"policy {policy.__name__} is not deterministic on Deposited(amount=5)" in message
    assert "(stream 'acc-1', version 1): called under two seeds of random, it returned [" in message
    assert "Do on account 'acc-1': deposit(" in message  # compact, not a whole Aggregate
    assert "must not read random" in message


def test_a_combined_policy_is_named_by_what_it_combines() -> None:
    """fes.on, when, merge and fan_out read as written, not as their classes (`_On`)."""
    with pytest.raises(AssertionError) as caught:
        given_policy(fes.on(bank.Deposited, _coin_policy)).when(
            recorded(bank.Deposited(5), "acc-1")
        ).then()
    assert "policy on(Deposited, _coin_policy) is not deterministic" in str(caught.value)
    combined = fes.merge(
        fes.when(bool, _random_policy),
        fes.fan_out(lambda r: [r.stream], lambda r, s: []),
        fes.on((bank.Deposited, bank.Withdrawn), _random_policy),
    )
    here = "test_a_combined_policy_is_named_by_what_it_combines.<locals>.<lambda> at "
    at = f"test_nondeterminism.py:{_line_of(combined)}"
    assert combined.__name__ == (  # type: ignore[attr-defined]
        f"merge(when(bool, _random_policy), fan_out({here}{at}, {here}{at}), "
        "on((Deposited, Withdrawn), _random_policy))"
    )


def _line_of(merged: Any) -> int:
    return int(merged.policies[1].targets.__code__.co_firstlineno)


def test_given_policy_catches_a_policy_changing_its_event() -> None:
    """A policy that mutates the event it is given fails, showing the event before and after."""

    @frozen
    class Noted:
        notes: list[str]

    with pytest.raises(AssertionError, match=r"changed the event it was given, from Noted"):
        given_policy(_mutating_policy).when(Noted([])).then()


def test_given_policy_passes_a_pure_policy_and_keeps_random_as_it_was() -> None:
    """A pure policy passes, and the caller's random sequence is not disturbed."""
    random.seed(3)
    expected = random.Random(3).random()
    given_policy(shop.on_reservation_event).when(shop.Restocked("apple", 1)).then_nothing()
    assert random.random() == expected


def _random_system() -> fes.System:
    """The shop, its payments charging a random fee: a policy using random."""

    def charge_with_fee(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
        intents = shop.on_reservation_event(recorded)
        if intents and random.random() < 0.5:
            [do] = intents
            return [evolve(do, args=(do.args[0], do.args[1] + 1))]
        return intents

    payments = evolve(shop.payments, policy=charge_with_fee)
    return fes.System(
        [shop.orders, shop.reservations, payments],
        pipes=[["orders", "reservations", "payments", "orders"], ["reservations", "orders"]],
    )


def test_check_system_names_a_policy_using_random_and_the_event() -> None:
    """check_system calls each policy twice on every event it saw and fails naming it."""
    system = _random_system()
    inputs = [
        Input("reservations", "stock", "stock-apple", "restock", ("apple", 5)),
        Input("orders", "order", "o1", "place", ("ann", "apple", 1, 100)),
    ]
    with pytest.raises(AssertionError) as caught:
        check_system(system, st.just(inputs), settings=QUICK, seed=1)
    message = str(caught.value)
    assert message.startswith("the simulated run has 1 impure policy\n")
    assert "\npolicies:\n  - policy charge_with_fee" in message
    assert (
        "policy charge_with_fee (of 'payments') is not deterministic on StockReserved(" in message
    )
    assert "Do on payment 'o1': decline_or_take('o1', 10" in message
    # the shop's own policies are pure: the same check passes them
    check_system(shop.system, st.just(inputs), settings=QUICK, seed=1)


def test_a_biased_coin_needs_more_seeds_than_the_two_fixed_ones() -> None:
    """A one-in-ten coin agrees under the two fixed seeds; the seeds from also= show it."""

    def deposit(account: bank.Account, amount: int) -> list[bank.Deposited]:
        if random.random() < 0.1:
            raise fes.Rejected("the coin said no")
        return [bank.Deposited(amount)]

    aggregate = evolve(bank.accounts, commands={"deposit": deposit})
    command_is_pure(aggregate, deposit, OPEN, (5,))  # both fixed seeds toss above 0.1

    def tails(seed: int) -> bool:
        return random.Random(seed).random() < 0.1

    also = next(seed for seed in range(1000) if tails(seed))
    with pytest.raises(AssertionError, match="the coin said no"):
        command_is_pure(aggregate, deposit, OPEN, (5,), also)
