"""Given/when/then specifications: passing cases pass, failing ones explain themselves."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pyrsistent import pvector

import fes
from fes.examples.dogs import Dog, Registered, TrickAdded, add_trick, dogs, register
from fes.testing import Specification, given, given_policy
from fes.testing.specs import PolicySpecification, recorded

from .domains import counter, increment

FIDO = Registered("Fido")


def test_then_passes_when_the_events_match_and_returns_them() -> None:
    """then() returns the emitted events when they are exactly the expected ones."""
    spec = given(dogs, FIDO).when(add_trick, "sit")
    assert isinstance(spec, Specification)
    assert spec.then(TrickAdded("sit")) == [TrickAdded("sit")]


def test_then_passes_keyword_arguments() -> None:
    """Keyword arguments reach the command."""
    given(dogs, FIDO).when(add_trick, trick="sit").then(TrickAdded("sit"))


def test_then_nothing_passes_when_no_event_is_emitted() -> None:
    """A trick the dog knows already emits nothing."""
    given(dogs, FIDO, TrickAdded("sit")).when(add_trick, "sit").then_nothing()


def test_a_failing_then_shows_history_command_expected_and_actual() -> None:
    """The failure message shows the history, the command call, and both event lists."""
    with pytest.raises(AssertionError) as info:
        given(dogs, FIDO, TrickAdded("sit")).when(add_trick, "beg", **{}).then(TrickAdded("roll"))
    message = str(info.value)
    assert message == (
        "given dog:\n"
        "  1. Registered(name='Fido')\n"
        "  2. TrickAdded(trick='sit')\n"
        "when add_trick('beg')\n"
        "expected events:\n"
        "  1. TrickAdded(trick='roll')\n"
        "actual events:\n"
        "  1. TrickAdded(trick='beg')"
    )


def test_a_failing_then_nothing_shows_the_unexpected_events() -> None:
    """then_nothing() fails listing what was emitted; an empty history shows as nothing."""
    with pytest.raises(AssertionError) as info:
        given(dogs).when(register, name="Rex").then_nothing()
    message = str(info.value)
    assert "given dog:\n  (nothing)\nwhen register(name='Rex')" in message
    assert "expected events:\n  (nothing)\nactual events:\n  1. Registered(name='Rex')" in message


def test_then_reports_a_raised_fes_error_as_a_failure() -> None:
    """A command raising (here CommandError) where events were expected fails with the error."""
    with pytest.raises(AssertionError) as info:
        given(dogs).when(add_trick, "sit").then(TrickAdded("sit"))
    message = str(info.value)
    assert "expected events:\n  1. TrickAdded(trick='sit')" in message
    assert "but it raised CommandError: command 'add_trick' of aggregate 'dog'" in message
    assert isinstance(info.value.__cause__, fes.CommandError)


def test_then_folds_the_emitted_events() -> None:
    """then() also applies the events: one the projector cannot fold fails, naming why."""
    loose = fes.Aggregate("loose", 0, fes.projector((Registered, lambda s, e: s)))

    def emits_trick(state: Any) -> list[Any]:
        return [TrickAdded("sit")]

    with pytest.raises(AssertionError, match=r"do not apply.*'TrickAdded' in loose") as caught:
        given(loose).when(emits_trick).then(TrickAdded("sit"))
    assert isinstance(caught.value.__cause__, fes.errors.UnhandledEvent)


def test_then_without_when_is_a_usage_error() -> None:
    """Asking for events without a command is a TypeError telling to call when()."""
    with pytest.raises(TypeError, match=r"call \.when"):
        given(dogs).then()


# --- then_rejected ---------------------------------------------------------


def test_then_rejected_returns_the_rejection() -> None:
    """then_rejected() passes on a Rejected and returns it."""
    error = given(dogs, FIDO).when(register, "Rex").then_rejected()
    assert isinstance(error, fes.Rejected)
    assert "already registered" in str(error)


def test_then_rejected_with_a_matching_message() -> None:
    """match= is a regular expression searched in the message."""
    given(dogs, FIDO).when(register, "Rex").then_rejected(match=r"'Fido' is already")


def test_then_rejected_with_a_message_that_does_not_match() -> None:
    """A rejection whose message does not match fails, showing pattern and message."""
    with pytest.raises(AssertionError) as info:
        given(dogs, FIDO).when(register, "Rex").then_rejected(match="no such thing")
    message = str(info.value)
    assert "expected Rejected matching 'no such thing'" in message
    assert "but the message was: dog 'Fido' is already registered" in message


def test_then_rejected_of_another_error_type() -> None:
    """then_rejected(CommandError) catches that type; other FesErrors fail the spec."""
    given(dogs).when(add_trick, "sit").then_rejected(fes.CommandError, match="expects Dog")
    with pytest.raises(AssertionError) as info:
        given(dogs).when(add_trick, "sit").then_rejected()
    assert "expected Rejected, but it raised CommandError" in str(info.value)


def test_then_rejected_fails_when_the_command_succeeds() -> None:
    """A command that emits where a rejection was expected fails, listing the events."""
    with pytest.raises(AssertionError) as info:
        given(dogs, FIDO).when(add_trick, "sit").then_rejected()
    assert "expected Rejected, but it emitted:\n  1. TrickAdded(trick='sit')" in str(info.value)


def test_then_rejected_lets_foreign_errors_through() -> None:
    """A bug in a command (not a FesError) is not turned into a spec failure."""

    def buggy(dog: Dog) -> list[Any]:
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        given(dogs, FIDO).when(buggy).then_rejected()


# --- then_state ------------------------------------------------------------


def test_then_state_without_a_command_checks_the_folded_history() -> None:
    """then_state() without when() compares the state the history folds to."""
    assert given(dogs, FIDO).then_state(Dog("Fido")) == Dog("Fido")
    assert given(counter).state() == 0


def test_then_state_with_a_command_includes_its_events() -> None:
    """then_state() after when() folds the command's events onto the history."""
    given(dogs, FIDO).when(add_trick, "sit").then_state(Dog("Fido", pvector(["sit"])))
    given(counter).when(increment, 3).then_state(3)


def test_a_failing_then_state_shows_expected_and_actual() -> None:
    """A wrong state fails showing both states under the history."""
    with pytest.raises(AssertionError) as info:
        given(dogs, FIDO).then_state(Dog("Rex"))
    message = str(info.value)
    assert message.startswith("given dog:\n  1. Registered(name='Fido')\nexpected state:")
    assert "Dog(name='Rex'" in message
    assert "actual state:\n  Dog(name='Fido'" in message


# --- policies --------------------------------------------------------------


def count_registrations(rec: fes.Recorded[Any]) -> list[fes.Intent]:
    return [fes.Do(counter, "all-dogs", increment, (1,))]


counting = fes.on(Registered, count_registrations)


def test_given_policy_when_then() -> None:
    """A policy spec passes when the intents match; bare events are wrapped as recorded."""
    spec = given_policy(counting).when(FIDO)
    assert isinstance(spec, PolicySpecification)
    assert spec.then(fes.Do(counter, "all-dogs", increment, (1,))) == [
        fes.Do(counter, "all-dogs", increment, (1,))
    ]
    given_policy(counting).when(TrickAdded("sit")).then_nothing()


def test_given_policy_accepts_a_recorded_event() -> None:
    """A Recorded given to when() is passed on as is (then copies, to check purity)."""
    rec = recorded(FIDO, "dog-9", 3, 44)
    seen: list[fes.Recorded[Any]] = []
    given_policy(lambda r: seen.append(r) or []).when(rec).then_nothing()
    assert seen[0] is rec and seen[1:] == [rec, rec] and seen[1] is not rec


def test_a_failing_policy_spec_shows_event_and_both_intent_lists() -> None:
    """A wrong intent list fails, showing the upstream event and expected and actual intents."""
    with pytest.raises(AssertionError) as info:
        given_policy(counting).when(FIDO).then_nothing()
    message = str(info.value)
    assert message.startswith("the policy's intents differ:\n  1. extra:   Do on counter ")
    assert "when policy sees:\n  Registered(name='Fido')\n" in message
    assert "expected intents:\n  (nothing)\nactual intents:\n  1. Do on " in message
    assert "Aggregate(" not in message


def test_a_failing_policy_spec_shows_the_difference_first_and_compactly() -> None:
    """A changed intent is shown as expected/actual lines naming the aggregate, not its repr."""
    wrong = fes.Do(dogs, "dog-1", add_trick, ("sit",))
    right = fes.Do(dogs, "dog-1", add_trick, ("roll",))
    with pytest.raises(AssertionError) as info:
        given_policy(lambda r: [right]).when(FIDO).then(wrong)
    lines = str(info.value).splitlines()
    assert lines[1] == "  1. expected: Do on dog 'dog-1': add_trick('sit')"
    assert lines[2] == "     actual:   Do on dog 'dog-1': add_trick('roll')"


def test_a_policy_spec_without_an_event_is_a_usage_error() -> None:
    """then() before when() is a TypeError telling to call when()."""
    with pytest.raises(TypeError, match=r"call \.when"):
        given_policy(counting).then()


def test_recorded_helper_fills_defaults() -> None:
    """recorded() wraps a bare event at stream 'stream', version 1, position 1."""
    rec = recorded(FIDO)
    assert (rec.event, rec.stream, rec.version, rec.position) == (FIDO, "stream", 1, 1)


def test_recorded_helper_takes_a_time_and_metadata_for_policies_that_read_them() -> None:
    """A policy that reads when, or in answer to what, an event was recorded can be fed both."""
    at = datetime(2024, 5, 1, 9, 30, 0, 123_456, tzinfo=UTC)
    meta = fes.Metadata(correlation_id="order-7", headers={"user": "ann"})
    rec = recorded(FIDO, "dog-9", timestamp=at, metadata=meta)
    assert (rec.timestamp, rec.metadata) == (at, meta)

    def stamped(event: fes.Recorded[Registered]) -> list[fes.Intent]:
        name = f"{event.event.name} {event.timestamp:%H:%M} {event.metadata.correlation_id}"
        return [fes.Emit(dogs, "log", [Registered(name)])]

    given_policy(stamped).when(rec).then(fes.Emit(dogs, "log", [Registered("Fido 09:30 order-7")]))


def test_recorded_helper_gives_the_time_in_utc_as_a_store_does() -> None:
    """A time in another zone reaches the policy in UTC, as the same clock's would for real."""
    in_paris = datetime(2024, 5, 1, 11, 30, tzinfo=timezone(timedelta(hours=2)))
    rec = recorded(FIDO, timestamp=in_paris)
    assert rec.timestamp == in_paris
    assert (rec.timestamp.hour, rec.timestamp.tzinfo) == (9, UTC)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timestamp": datetime(2024, 5, 1)}, "must be a timezone-aware datetime, got datetime"),
        ({"timestamp": "2024-05-01"}, "must be a timezone-aware datetime, got '2024-05-01'"),
        ({"metadata": {"correlation_id": "x"}}, "must be a fes.Metadata, got {'correlation_id'"),
        ({"stream": ""}, "recorded()'s stream must be a non-empty str, got ''"),
        ({"stream": 7}, "recorded()'s stream must be a non-empty str, got 7"),
        ({"version": 0}, "recorded()'s version must be an integer of 1 or more, got 0"),
        ({"version": True}, "recorded()'s version must be an integer of 1 or more, got True"),
        ({"position": -1}, "recorded()'s position must be an integer of 1 or more, got -1"),
        ({"position": 1.0}, "recorded()'s position must be an integer of 1 or more, got 1.0"),
    ],
)
def test_recorded_helper_refuses_a_time_or_metadata_no_event_could_have(
    options: dict[str, Any], message: str
) -> None:
    """What no recorded event could have is a clear error.

    A naive or non-datetime time, metadata that is not a Metadata, an empty
    stream id, or a version or position below 1 (no store records one).
    """
    with pytest.raises(fes.errors.ConfigurationError, match=re.escape(message)):
        recorded(FIDO, **options)


def test_given_policy_refuses_a_bare_intent_as_the_runner_does() -> None:
    """A policy returning one fes.Emit (not a list) gets the runner's clear DefinitionError."""
    def bare(event: fes.Recorded[Registered]) -> Any:
        return fes.Emit(dogs, "d", [Registered("Rex")])

    with pytest.raises(
        fes.errors.DefinitionError, match=r"the policy 'bare' returned a bare fes\.Emit on 'dog'"
    ):
        given_policy(bare).when(Registered("Fido")).then()


@pytest.mark.parametrize(
    "name", ["Nul\x00Byte", "lone \ud800", "x" * 500, ""], ids=["nul", "surrogate", "long", "empty"]
)
def test_given_policy_refuses_a_stream_id_no_store_keeps(name: str) -> None:
    """An intent on a stream id no store keeps (built here from a name the policy was
    given) fails the spec with the rule and how to build one, as it would stop the
    follower; the same policy on an ordinary name passes."""
    def per_name(event: fes.Recorded[Registered]) -> list[fes.Intent]:
        return [fes.Do(counter, f"n:{event.event.name}" if event.event.name else "",
                       increment, (1,))]

    given_policy(per_name).when(Registered("Zoë 😀")).then(
        fes.Do(counter, "n:Zoë 😀", increment, (1,))
    )
    with pytest.raises(AssertionError, match=r"a stream no store keeps \(a stream id must be a "
                       r"str of 1 to 500 characters.*uuid5"):
        given_policy(per_name).when(Registered(name)).then(
            fes.Do(counter, f"n:{name}" if name else "", increment, (1,))
        )


def test_given_policy_refuses_what_is_not_an_intent_as_the_runner_does() -> None:
    """An item that is neither fes.Emit nor fes.Do is the runner's DefinitionError, not a diff.

    (It used to show only as "intents differ: extra: 'not an intent'".)
    """
    def stray(event: fes.Recorded[Registered]) -> Any:
        return [fes.Emit(dogs, "d", [Registered("Rex")]), "not an intent"]

    with pytest.raises(
        fes.errors.DefinitionError,
        match=r"the policy 'stray' returned 'not an intent' among its intents; an intent is",
    ):
        given_policy(stray).when(Registered("Fido")).then(fes.Emit(dogs, "d", [Registered("Rex")]))
