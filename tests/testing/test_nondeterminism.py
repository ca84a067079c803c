"""The purity law catches commands that read random, uuid4 or the clock."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from attrs import evolve
from hypothesis import settings

import fes
from fes.examples import bank
from fes.testing.laws import check_laws, command_is_pure

# histories run commands inside Hypothesis's draws, which warns of the planted random
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module")

FINDING = settings(max_examples=30, database=None, deadline=None, derandomize=True)
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
