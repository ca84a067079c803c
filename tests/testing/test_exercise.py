"""The checks say what they exercised, refuse to pass vacuously, and never hang silently."""

from __future__ import annotations

import time
from typing import Any

import pytest
from attrs import frozen
from hypothesis import settings

import fes
from fes.errors import DefinitionError
from fes.examples import bank
from fes.testing.laws import check_laws
from fes.testing.machines import check_aggregate, machine_for

#: Few examples, the same in every run: these tests are about what a run did.
FAST = settings(max_examples=40, database=None, deadline=None, derandomize=True)


@frozen
class Opened:
    """A safe was installed."""


@frozen
class Unlocked:
    """The right code opened the safe."""

    code: str


@frozen
class Safe:
    """A safe, open or not."""

    open: bool = False


def install(safe: Safe | None) -> list[Opened]:
    """Install a safe, once."""
    if safe is not None:
        raise fes.Rejected("already installed")
    return [Opened()]


def unlock(safe: Safe, code: str) -> list[Unlocked]:
    """Open the safe with its code; no drawn string is ever the code."""
    if code != "correct horse battery staple":
        raise fes.Rejected(f"wrong code {code!r}")
    return [Unlocked(code)]


def _apply(safe: Safe | None, event: Any) -> Safe:
    return Safe(open=isinstance(event, Unlocked))


safes: fes.Aggregate[Safe | None] = fes.Aggregate(
    "safe",
    initial=None,
    apply=_apply,
    commands=[install, unlock],
    events=[Opened, Unlocked],
)

RARE = {"unlock": "no test draws the code", Unlocked: "only the code unlocks"}


# --- vacuity --------------------------------------------------------------------


def test_check_aggregate_fails_when_a_command_is_never_accepted() -> None:
    """A command whose derived arguments never pass fails the check, naming it and the fix."""
    with pytest.raises(AssertionError) as caught:
        check_aggregate(safes, settings=FAST)
    message = str(caught.value)
    assert "command 'unlock' was never accepted" in message
    assert "event Unlocked was never produced" in message
    # the suggestion is shaped like unlock's own arguments: one str after the state
    assert "args={'unlock': st.tuples(st.sampled_from(['a', 'b', 'c']))}" in message
    assert "rare=" in message


#: The one floor a safe goes on.  Computed: Hypothesis also draws the constants it
#: reads in the source, so a floor written out would be drawn now and then.
VAULT = 2**20 + 3


def test_a_nearly_always_refused_command_is_named_as_a_likely_cause() -> None:
    """A command refused 90 % of the time or more is named: what the others need rarely arises."""

    def install_at(safe: Safe | None, floor: int) -> list[Opened]:
        """Install a safe on the vault's floor only; derived floors never are."""
        if safe is not None or floor != VAULT:
            raise fes.Rejected("only on the vault's floor")
        return [Opened()]

    picky = fes.Aggregate(
        "picky-safe", initial=None, apply=_apply, commands=[install_at, unlock],
        events=[Opened, Unlocked],
    )
    from hypothesis import strategies as st

    # 20 floors around the vault's: installing works now and then, unlock is never accepted
    floors = {"install_at": st.tuples(st.integers(VAULT - 10, VAULT + 9))}
    with pytest.raises(AssertionError) as caught:
        check_aggregate(picky, settings=FAST, args=floors)
    message = str(caught.value)
    assert "command 'unlock' was never accepted" in message
    assert "command 'install_at' was rejected" in message and "may rarely arise" in message
    assert "no command was accepted at all" not in message  # install_at was, now and then
    with pytest.raises(AssertionError) as caught:
        check_aggregate(picky, settings=FAST, rare=RARE)
    message = str(caught.value)
    assert "args={'install_at': st.tuples(st.integers(1, 10))}" in message
    # nothing was ever installed: the report says why unlock could not be reached
    assert "no command was accepted at all, so every command met only the initial" in message


def test_check_aggregate_passes_when_the_rare_command_is_declared() -> None:
    """Declaring the command and its event rare, with a reason, lets the check pass."""
    check_aggregate(safes, settings=FAST, rare=RARE)


def test_check_laws_fails_when_a_command_is_never_accepted() -> None:
    """check_laws applies the same vacuity check to the histories it draws."""
    with pytest.raises(AssertionError, match="command 'unlock' was never accepted"):
        check_laws(safes, settings=FAST)
    check_laws(safes, settings=FAST, rare=RARE)


def test_args_that_reach_the_command_make_the_check_pass() -> None:
    """Giving the command arguments it accepts is the other fix."""
    from hypothesis import strategies as st

    code = {"unlock": st.tuples(st.just("correct horse battery staple"))}
    check_aggregate(safes, settings=FAST, args=code)


def test_rare_refuses_unknown_names_and_missing_reasons() -> None:
    """A typo in rare= or an empty reason is a definition error, not a silent pass."""
    with pytest.raises(DefinitionError, match="neither a command nor an event type"):
        check_aggregate(safes, settings=FAST, rare={"unlokc": "typo"})
    with pytest.raises(DefinitionError, match="must give a reason"):
        check_aggregate(safes, settings=FAST, rare={"unlock": ""})


def test_a_failure_reports_what_the_run_exercised() -> None:
    """A failing check adds the counts of accepted and rejected commands to its report."""

    def broken(account: bank.Account | None) -> bool:
        return account is None or account.balance < 1

    with pytest.raises(AssertionError) as caught:
        check_aggregate(bank.accounts, [broken], settings=FAST)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "what the run exercised:" in notes
    assert "deposit: accepted" in notes


# --- the time budget ----------------------------------------------------------------


def slow_unlock(safe: Safe, code: str) -> list[Unlocked]:
    """Take minutes on any code longer than two characters."""
    if len(code) > 2:
        time.sleep(600)
    return [Unlocked(code)]


slow_safes = fes.Aggregate(
    "slow safe", initial=None, apply=_apply, commands={"install": install, "unlock": slow_unlock},
    events=[Opened, Unlocked],
)


def test_a_command_that_takes_minutes_fails_within_the_budget() -> None:
    """A command slower than the budget, twice, fails naming it, its arguments and the time."""
    start = time.monotonic()
    with pytest.raises(AssertionError) as caught:
        check_aggregate(slow_safes, settings=FAST, budget=0.2)
    assert time.monotonic() - start < 60
    message = str(caught.value)
    assert "time budget" in message
    assert "unlock(" in message and "over the budget of 0.2 s" in message
    assert "measured twice" in message and "budget=" in message


def test_check_laws_keeps_the_budget_too() -> None:
    """check_laws fails within the budget on a command that would take minutes."""
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"unlock\(.*over the budget of 0.2 s"):
        check_laws(slow_safes, settings=FAST, budget=0.2)
    assert time.monotonic() - start < 60


def test_a_passing_check_returns_what_it_exercised() -> None:
    """check_aggregate and check_laws return the counts of outcomes and events."""
    counts = check_aggregate(safes, settings=FAST, rare=RARE)
    assert counts["install: accepted"] > 0
    assert counts["unlock: accepted"] == 0 and counts["unlock: rejected"] > 0
    assert counts["event Opened"] == counts["install: accepted"]
    laws = check_laws(safes, settings=FAST, rare=RARE)
    assert laws["install: accepted"] > 0 and laws["event Unlocked"] == 0


def test_a_seed_makes_two_runs_try_the_same_examples() -> None:
    """The same seed gives the same counts, for check_aggregate and check_laws."""
    randomized = settings(max_examples=20, database=None, deadline=None)
    first = check_aggregate(safes, settings=randomized, rare=RARE, seed=7)
    assert check_aggregate(safes, settings=randomized, rare=RARE, seed=7) == first
    laws = check_laws(safes, settings=randomized, rare=RARE, seed=7)
    assert check_laws(safes, settings=randomized, rare=RARE, seed=7) == laws


def test_machine_for_testcase_reports_a_failure_without_the_explain_phase() -> None:
    """machine_for's TestCase skips Hypothesis's slow explain phase, even with user settings."""

    def never_open(safe: Safe | None) -> bool:
        return safe is None

    case = machine_for(safes, [never_open]).TestCase
    case.settings = settings(max_examples=50, database=None, deadline=None, derandomize=True)
    start = time.monotonic()
    with pytest.raises(AssertionError, match="invariant never_open"):
        case().runTest()
    assert time.monotonic() - start < 30


def test_the_budget_puts_back_a_timer_already_set() -> None:
    """A SIGALRM timer set before a check (pytest-timeout's, say) still runs afterwards."""
    import signal

    signal.setitimer(signal.ITIMER_REAL, 1000)
    try:
        check_aggregate(safes, settings=FAST, rare=RARE)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 900 < left < 1000
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def test_machine_for_testcase_fails_when_a_command_is_never_accepted() -> None:
    """The TestCase fails for vacuity as check_aggregate does; rare= lets it pass."""
    case = machine_for(safes).TestCase
    case.settings = FAST
    with pytest.raises(AssertionError) as caught:
        case().runTest()
    message = str(caught.value)
    assert "command 'unlock' was never accepted" in message
    assert "event Unlocked was never produced" in message and "rare=" in message
    declared = machine_for(safes, rare=RARE)
    declared.TestCase.settings = FAST
    declared.TestCase().runTest()
    assert declared.tally.accepted["install"] > 0 and declared.tally.accepted["unlock"] == 0


def test_machine_for_counts_each_testcase_run_afresh() -> None:
    """Each run of the TestCase counts from zero: a second run does not inherit the first's."""
    machine = machine_for(safes, rare=RARE)
    machine.TestCase.settings = FAST
    machine.TestCase().runTest()
    first = machine.tally.accepted["install"]
    machine.TestCase().runTest()
    assert machine.tally.accepted["install"] == first  # derandomized: the same runs, counted once


def test_machine_for_statistics_hold_only_what_the_commands_did() -> None:
    """--hypothesis-show-statistics shows the outcomes, not Hypothesis's retried rule draws."""
    from hypothesis.statistics import collector, describe_statistics

    shown: list[str] = []
    machine = machine_for(safes, rare=RARE)
    machine.TestCase.settings = settings(max_examples=60, database=None, deadline=None)
    with collector.with_value(lambda stats: shown.append(describe_statistics(stats))):
        machine.TestCase().runTest()
    # one report, of the machine's own run (not the vacuity search after it)
    assert len(shown) == 1
    assert "install: accepted" in shown[0] and "event Opened" in shown[0]
    # every wrong code is one reason, whatever quotes its repr holds
    rejections = [line for line in shown[0].splitlines() if "unlock: rejected" in line]
    assert [line.split("%, ")[1] for line in rejections] == [
        "unlock: rejected (Rejected: wrong code '…')"
    ]
    assert "Retried draw" not in shown[0] and "gave up" not in shown[0]


def test_machine_for_refuses_unknown_rare_names() -> None:
    """A typo in machine_for's rare= is refused when the machine is made, not when it runs."""
    with pytest.raises(DefinitionError, match="neither a command nor an event type"):
        machine_for(safes, rare={"unlokc": "typo"})
