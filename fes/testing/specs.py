"""Given/when/then specifications for commands, projectors and policies.

::

    given(dogs, Registered("Fido")).when(add_trick, "roll").then(TrickAdded("roll"))
    given(dogs).when(add_trick, "roll").then_rejected(CommandError)
    given(dogs, Registered("Fido")).then_state(Dog("Fido"))
    given_policy(on_registered).when(recorded).then(Emit(...))

Each ``then…`` raises ``AssertionError`` with expected and actual side by
side, so plain pytest reports it readably.
"""

from __future__ import annotations

import pprint
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import attrs
from attrs import field, frozen

from fes._ids import STREAM_ID_RULE, stream_keepable
from fes.aggregates import Aggregate, Command, decide
from fes.errors import ConfigurationError, DefinitionError, FesError, Rejected
from fes.events import NO_METADATA, Metadata, Recorded
from fes.policies import Do, Emit, Intent, Policy
from fes.testing._purity import checked, policy_name
from fes.testing._purity import show_intent as _intent

__all__ = ["PolicySpecification", "Specification", "given", "given_policy", "recorded"]

S = TypeVar("S")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _show(items: Sequence[Any]) -> str:
    if not items:
        return "  (nothing)"
    return "\n".join(f"  {i + 1}. {pprint.pformat(x, width=88)}" for i, x in enumerate(items))


def _lost(before: Any, after: Any, initial: Any) -> bool:
    """Whether folding took ``before`` back to where the aggregate starts.

    That is None, or the initial state object itself when it is an attrs
    instance, from a state that was neither: what a ``match`` projector
    that forgot a case gives.  A state merely equal to the initial one (a
    counter back at 0) is a legitimate state, not a loss.
    """
    if before is None or before is initial:
        return False
    return after is None or (after is initial and attrs.has(type(initial)))


def _describe(spec: Specification[Any]) -> str:
    lines = [f"given {spec.aggregate.name}:", _show(spec.history)]
    if spec.command is not None:
        args = ", ".join([*map(repr, spec.args), *(f"{k}={v!r}" for k, v in spec.kwargs.items())])
        name = getattr(spec.command, "__name__", repr(spec.command))
        lines.append(f"when {name}({args})")
    return "\n".join(lines)


@frozen
class Specification(Generic[S]):
    """A history of an aggregate and, optionally, a command to run on it."""

    aggregate: Aggregate[S]
    history: tuple[Any, ...] = field(converter=tuple)
    command: Command | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(factory=dict)

    def when(self, command: Command, *args: Any, **kwargs: Any) -> Specification[S]:
        """Run ``command`` with ``args`` on the state the history folds to."""
        return Specification(self.aggregate, self.history, command, args, kwargs)

    def state(self) -> S:
        """The state the history folds to."""
        return self.aggregate.fold(self.history)

    def _decide(self) -> list[Any]:
        __tracebackhide__ = True
        if self.command is None:
            raise TypeError("this specification has no command: call .when(...) first")
        return decide(self.aggregate, self.command, self.state(), *self.args, **self.kwargs)

    def then(self, *expected: Any, terminal: bool = False) -> list[Any]:
        """Assert the command emits exactly ``expected`` and that they apply.

        The events are folded with the aggregate's own projector onto the
        state: it fails if they do not apply, or if they fold a state other
        than the initial one back to the initial value or None (what a
        ``match`` projector that forgot their case does), unless
        ``terminal=True`` says these events really end the aggregate.
        """
        __tracebackhide__ = True
        try:
            actual = self._decide()
        except FesError as exc:
            raise AssertionError(
                f"{_describe(self)}\nexpected events:\n{_show(expected)}\n"
                f"but it raised {type(exc).__name__}: {exc}"
            ) from exc
        if actual != list(expected):
            raise AssertionError(
                f"{_describe(self)}\nexpected events:\n{_show(expected)}\n"
                f"actual events:\n{_show(actual)}"
            )
        before = self.state()
        try:
            after = self.aggregate.fold(actual, before)
        except Exception as exc:
            raise AssertionError(
                f"{_describe(self)}\nthe events it emitted do not apply to the state "
                f"{before!r}: {type(exc).__name__}: {exc}"
            ) from exc
        initial = self.aggregate.initial
        if actual and not terminal and _lost(before, after, initial):
            raise AssertionError(
                f"{_describe(self)}\nthen {'; '.join(map(repr, actual))}\n"
                f"but the projector of {self.aggregate.name!r} folds them back to {after!r}, "
                "where the aggregate starts: the state is lost\n"
                "  (a match projector without a case for one of these events does this; "
                "if they really end the aggregate, write .then(..., terminal=True))"
            )
        return actual

    def then_nothing(self) -> None:
        """Assert the command emits no event."""
        __tracebackhide__ = True
        self.then()

    def then_rejected(
        self, error: type[BaseException] = Rejected, match: str | None = None
    ) -> BaseException:
        """Assert the command raises ``error`` (whose message matches ``match``)."""
        __tracebackhide__ = True
        try:
            actual = self._decide()
        except error as exc:
            if match is not None and not re.search(match, str(exc)):
                raise AssertionError(
                    f"{_describe(self)}\nexpected {error.__name__} matching {match!r}\n"
                    f"but the message was: {exc}"
                ) from exc
            return exc
        except FesError as exc:
            raise AssertionError(
                f"{_describe(self)}\nexpected {error.__name__}, "
                f"but it raised {type(exc).__name__}: {exc}"
            ) from exc
        raise AssertionError(
            f"{_describe(self)}\nexpected {error.__name__}, "
            f"but it emitted:\n{_show(actual)}"
        )

    def then_state(self, expected: S) -> S:
        """Assert the state after the history (and the command's events) is ``expected``."""
        __tracebackhide__ = True
        state = self.state()
        if self.command is not None:
            state = self.aggregate.fold(self._decide(), state)
        if state != expected:
            raise AssertionError(
                f"{_describe(self)}\nexpected state:\n  {pprint.pformat(expected, width=88)}\n"
                f"actual state:\n  {pprint.pformat(state, width=88)}"
            )
        return state


def given(aggregate: Aggregate[S], *history: Any) -> Specification[S]:
    """Start a specification: ``aggregate`` has already recorded ``history``."""
    return Specification(aggregate, history)


def recorded(
    event: Any,
    stream: str = "stream",
    version: int = 1,
    position: int = 1,
    *,
    timestamp: datetime = _EPOCH,
    metadata: Metadata = NO_METADATA,
) -> Recorded[Any]:
    """Wrap a bare event as a recorded one, for feeding policies in tests.

    ``timestamp`` (the Unix epoch unless given) must be timezone-aware, and
    the policy gets it in UTC, as every recorded event's comes from a store;
    ``metadata`` is what a policy reads of the event's correlation,
    causation and headers.  ``stream`` is a non-empty str, and ``version``
    and ``position`` count from 1, as in every store.
    """
    if not isinstance(timestamp, datetime) or timestamp.tzinfo is None:
        raise ConfigurationError(
            f"recorded()'s timestamp must be a timezone-aware datetime, got {timestamp!r}"
        )
    if not isinstance(metadata, Metadata):
        raise ConfigurationError(f"recorded()'s metadata must be a fes.Metadata, got {metadata!r}")
    if not isinstance(stream, str) or not stream:
        raise ConfigurationError(f"recorded()'s stream must be a non-empty str, got {stream!r}")
    for name, number in (("version", version), ("position", position)):
        # as a store records them: versions and positions count from 1
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise ConfigurationError(
                f"recorded()'s {name} must be an integer of 1 or more, got {number!r}"
            )
    at = timestamp.astimezone(UTC)
    return Recorded(event, stream, version, position, at, "", metadata)


def _show_intents(intents: Sequence[Any]) -> str:
    if not intents:
        return "  (nothing)"
    return "\n".join(f"  {i}. {_intent(x)}" for i, x in enumerate(intents, 1))


def _intent_difference(expected: Sequence[Any], actual: Sequence[Any]) -> str:
    """Position by position, only where the two lists differ."""
    lines = []
    for i in range(max(len(expected), len(actual))):
        if i >= len(actual):
            lines.append(f"  {i + 1}. missing: {_intent(expected[i])}")
        elif i >= len(expected):
            lines.append(f"  {i + 1}. extra:   {_intent(actual[i])}")
        elif expected[i] != actual[i]:
            lines.append(f"  {i + 1}. expected: {_intent(expected[i])}")
            lines.append(f"     actual:   {_intent(actual[i])}")
    return "\n".join(lines)


@frozen
class PolicySpecification:
    """A policy and, optionally, the upstream event it is given."""

    policy: Policy
    upstream: Recorded[Any] | None = None

    def when(self, event: Any) -> PolicySpecification:
        """Feed the policy one upstream event (bare, or already ``Recorded``)."""
        rec = event if isinstance(event, Recorded) else recorded(event)
        return PolicySpecification(self.policy, rec)

    def then(self, *expected: Intent) -> list[Intent]:
        """Assert the policy returns exactly the ``expected`` intents, and is pure.

        The policy is given the event as is, then called a second time on a
        copy of it, with :mod:`random` seeded differently: it fails, naming the policy and the
        event, if the two calls differ (a policy reading ``random``, ``uuid4``
        or the clock) or if the first changed the event.  It fails too on an
        intent whose stream id no store keeps (one with a NUL character, say,
        built from text the policy was given), where the follower would stop.
        """
        __tracebackhide__ = True
        if self.upstream is None:
            raise TypeError("this specification has no event: call .when(...) first")
        outcome, problem = checked(self.policy, self.upstream, policy_name(self.policy))
        if problem is not None:
            raise AssertionError(problem)
        if isinstance(outcome, Exception):
            raise outcome
        actual = outcome
        for intent in actual:
            if not isinstance(intent, Emit | Do):  # as the follower refuses it
                raise DefinitionError(
                    f"the policy {policy_name(self.policy)!r} returned {intent!r} among its "
                    "intents; an intent is fes.Emit or fes.Do"
                )
            if not stream_keepable(intent.stream):  # as the follower's batch refuses it
                raise AssertionError(
                    f"the policy {policy_name(self.policy)!r} returned {_intent(intent)}, on a "
                    f"stream no store keeps ({STREAM_ID_RULE}): its follower would stop "
                    "there. Build an id from text the policy does not control as a digest "
                    "of it, such as str(uuid.uuid5(namespace, text))"
                )
        if actual != list(expected):
            raise AssertionError(
                f"the policy's intents differ:\n{_intent_difference(expected, actual)}\n"
                f"when policy sees:\n  {pprint.pformat(self.upstream.event, width=88)}\n"
                f"expected intents:\n{_show_intents(expected)}\n"
                f"actual intents:\n{_show_intents(actual)}"
            )
        return actual

    def then_nothing(self) -> None:
        """Assert the policy ignores the event."""
        __tracebackhide__ = True
        self.then()


def given_policy(policy: Policy) -> PolicySpecification:
    """Start a policy specification."""
    return PolicySpecification(policy)
