"""Policies: pure functions from a recorded event to intents, and error directives."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fes
from fes.examples.bank import AccountOpened, Deposited, accounts, deposit
from fes.examples.dogs import Registered, TrickAdded, dogs
from fes.testing.specs import recorded

from .domains import counter, increment

REGISTERED = recorded(Registered("Fido"), "dog-1", 1, 10)
TRICK = recorded(TrickAdded("sit"), "dog-1", 2, 11)
OPENED = recorded(AccountOpened("ann"), "acc-1", 1, 12)


def count_it(rec: fes.Recorded[Any]) -> list[fes.Intent]:
    return [fes.Do(counter, "all", increment, (1,))]


def emit_deposit(rec: fes.Recorded[Any]) -> list[fes.Intent]:
    return [fes.Emit(accounts, "acc-1", [Deposited(1)])]


def test_intents_are_plain_comparable_data() -> None:
    """Emit and Do store their fields as tuples and compare by value."""
    emit = fes.Emit(dogs, "dog-1", [Registered("x")])
    assert emit.events == (Registered("x"),)
    assert emit == fes.Emit(dogs, "dog-1", (Registered("x"),))
    do = fes.Do(accounts, "acc-1", deposit, [5])
    assert do.args == (5,)
    assert fes.Do(accounts, "acc-1", deposit).args == ()


@pytest.mark.parametrize("events", [Registered("x"), "x", b"x", None])
def test_an_emit_of_one_bare_event_or_a_string_is_refused(events: Any) -> None:
    with pytest.raises(fes.errors.DefinitionError, match=r"list or tuple of events.*\[event\]"):
        fes.Emit(dogs, "dog-1", events)


@pytest.mark.parametrize("args", ["acc-2", b"x", 5, None])
def test_a_do_whose_arguments_are_a_string_or_a_bare_value_is_refused(args: Any) -> None:
    """``tuple("acc-2")`` would pass the command one letter per argument."""
    with pytest.raises(
        fes.errors.DefinitionError, match=r"as a tuple \(or list\), not .*for one argument write"
    ):
        fes.Do(accounts, "acc-1", deposit, args)
    assert fes.Do(accounts, "acc-1", deposit, [5]).args == (5,)  # a list is taken


@pytest.mark.parametrize("command", ["deposit", None, 5])
def test_a_do_whose_command_is_not_a_function_is_refused(command: Any) -> None:
    """A command's name is refused when the intent is made, not when a follower runs it.

    (It used to be accepted, and stopped the follower with a CommandError.)
    """
    with pytest.raises(fes.errors.DefinitionError, match=r"Do takes the command itself"):
        fes.Do(accounts, "acc-1", command, (5,))


def test_nothing_ignores_every_event() -> None:
    """The nothing policy returns no intent."""
    assert fes.nothing(REGISTERED) == []


def test_on_runs_only_for_the_given_type() -> None:
    """on(Type, handler) runs handler for events of that type and ignores the rest."""
    policy = fes.on(Registered, count_it)
    assert policy(REGISTERED) == count_it(REGISTERED)
    assert policy(TRICK) == []


def test_on_accepts_several_types() -> None:
    """on((A, B), handler) runs for either type."""
    policy = fes.on((Registered, TrickAdded), count_it)
    assert policy(REGISTERED) == policy(TRICK) == count_it(REGISTERED)
    assert policy(OPENED) == []


def test_when_runs_only_if_the_predicate_accepts() -> None:
    """when(predicate, policy) runs the policy only for accepted recorded events."""
    policy = fes.when(lambda rec: rec.position > 10, count_it)
    assert policy(REGISTERED) == []
    assert policy(TRICK) == count_it(TRICK)


def test_merge_concatenates_intents_in_order() -> None:
    """merge(p, q) returns p's intents followed by q's; merge() is nothing."""
    policy = fes.merge(fes.on(Registered, count_it), emit_deposit, count_it)
    counted, emitted = count_it(REGISTERED), emit_deposit(REGISTERED)
    assert policy(REGISTERED) == [*counted, *emitted, *counted]
    assert policy(TRICK) == [*emit_deposit(TRICK), *count_it(TRICK)]
    assert fes.merge()(TRICK) == []


policies = st.sampled_from([fes.nothing, count_it, emit_deposit, fes.on(Registered, count_it)])
records = st.sampled_from([REGISTERED, TRICK, OPENED])


@given(st.lists(policies, max_size=4), st.lists(policies, max_size=4), records)
def test_merge_is_associative_with_nothing_as_identity(
    first: list[Any], second: list[Any], rec: fes.Recorded[Any]
) -> None:
    """merge(merge(p..), merge(q..)) == merge(p.., q..), and nothing adds no intent."""
    flat = fes.merge(*first, *second)(rec)
    assert fes.merge(fes.merge(*first), fes.merge(*second))(rec) == flat
    assert fes.merge(fes.nothing, *first, *second, fes.nothing)(rec) == flat


def test_fan_out_makes_intents_per_target() -> None:
    """fan_out calls intent once per target; single intents and lists are both accepted."""

    def one(rec: fes.Recorded[Any], stream: str) -> fes.Intent:
        return fes.Do(counter, stream, increment, (1,))

    def two(rec: fes.Recorded[Any], stream: str) -> list[fes.Intent]:
        return [fes.Emit(accounts, stream, [Deposited(1)]), fes.Emit(accounts, stream, [])]

    def streams(rec: fes.Recorded[Any]) -> list[str]:
        return [f"{rec.stream}/a", f"{rec.stream}/b"]

    assert fes.fan_out(streams, one)(REGISTERED) == [
        fes.Do(counter, "dog-1/a", increment, (1,)),
        fes.Do(counter, "dog-1/b", increment, (1,)),
    ]
    assert fes.fan_out(streams, two)(REGISTERED) == [
        fes.Emit(accounts, "dog-1/a", [Deposited(1)]),
        fes.Emit(accounts, "dog-1/a", []),
        fes.Emit(accounts, "dog-1/b", [Deposited(1)]),
        fes.Emit(accounts, "dog-1/b", []),
    ]
    assert fes.fan_out(lambda rec: [], one)(REGISTERED) == []


def test_fan_out_accepts_an_emit_too() -> None:
    """An intent function returning a single Emit contributes that one intent."""
    policy = fes.fan_out(lambda rec: ["x"], lambda rec, s: fes.Emit(accounts, s, []))
    assert policy(REGISTERED) == [fes.Emit(accounts, "x", [])]


# --- error directives ------------------------------------------------------

BOOM = RuntimeError("boom")


@given(st.integers(1, 100))
def test_stop_on_error_always_stops(attempt: int) -> None:
    """The default error handler stops at every attempt."""
    assert fes.stop_on_error(BOOM, REGISTERED, attempt) == fes.Stop()


def test_retry_then_stop_progression() -> None:
    """retry_then_stop(3, 0.5) retries after attempts 1 and 2, then stops at attempt 3."""
    handler = fes.retry_then_stop(3, 0.5)
    assert [handler(BOOM, REGISTERED, n) for n in (1, 2, 3, 4)] == [
        fes.Retry(0.5),
        fes.Retry(0.5),
        fes.Stop(),
        fes.Stop(),
    ]


def test_retry_then_skip() -> None:
    """retry_then_stop(then=Skip()) skips the event once the attempts are used up."""
    handler = fes.retry_then_stop(2, then=fes.Skip())
    assert handler(BOOM, REGISTERED, 1) == fes.Retry(1.0)
    assert handler(BOOM, REGISTERED, 2) == fes.Skip()


@given(st.integers(0, 20), st.integers(1, 40))
def test_retry_then_stop_tries_attempts_times_in_all(attempts: int, attempt: int) -> None:
    """Attempts count from 1; it retries exactly while attempt < attempts."""
    directive = fes.retry_then_stop(attempts)(BOOM, REGISTERED, attempt)
    assert directive == (fes.Retry() if attempt < attempts else fes.Stop())


def test_directives_have_defaults() -> None:
    """Retry waits one second by default; Skip and Stop carry nothing."""
    assert fes.Retry().delay == 1.0
    assert fes.Skip() == fes.Skip()
    assert fes.Stop() != fes.Skip()


def test_a_raising_policy_raises_to_its_caller() -> None:
    """Combinators add no error handling: the edge sees the policy's own exception."""

    def broken(rec: fes.Recorded[Any]) -> list[fes.Intent]:
        raise BOOM

    with pytest.raises(RuntimeError, match="boom"):
        fes.merge(fes.nothing, fes.on(Registered, broken))(REGISTERED)
