"""Policies: pure functions from a recorded upstream event to intents.

An intent is inert data that says what a follower should do; the edge
performs it.  :class:`Emit` appends events to a stream of one of the
follower's aggregates; :class:`Do` runs a command on one.  What to do when a
policy raises is a pure :data:`Directive` too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from attrs import field, frozen

from fes._shapes import _name_of
from fes.aggregates import Aggregate, Command
from fes.errors import DefinitionError
from fes.events import Recorded

__all__ = [
    "Directive",
    "Do",
    "Emit",
    "ErrorHandler",
    "Intent",
    "Policy",
    "Retry",
    "Skip",
    "Stop",
    "fan_out",
    "merge",
    "nothing",
    "on",
    "retry_then_stop",
    "stop_on_error",
    "when",
]

T = TypeVar("T")


def _events(value: Iterable[Any]) -> tuple[Any, ...]:
    """An :class:`Emit`'s events as a tuple; one bare event (or a string) is refused."""
    if value.__class__ is tuple:
        return value  # type: ignore[return-value,unused-ignore]
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise DefinitionError(
            f"Emit takes a list or tuple of events, not {value!r}; "
            "put a single event in a list: [event]"
        )
    return tuple(value)


def _args(value: Iterable[Any]) -> tuple[Any, ...]:
    """A :class:`Do`'s arguments as a tuple; a string or a bare value is refused.

    ``tuple("abc")`` would pass the command one letter per argument.
    """
    if value.__class__ is tuple:
        return value  # type: ignore[return-value,unused-ignore]
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise DefinitionError(
            f"Do takes the command's arguments after the state as a tuple (or list), "
            f"not {value!r}; "
            f"for one argument write ({value!r},)"
        )
    return tuple(value)


def _command(value: Command) -> Command:
    """A :class:`Do`'s command, refused when it is not a function (its name, say).

    Refused here, where the policy makes the intent, rather than when the
    follower runs it and stops.
    """
    if callable(value):
        return value
    raise DefinitionError(
        f"Do takes the command itself, a function of the state and its arguments, not "
        f"{value!r}" + (" (a name: give the function)" if isinstance(value, str) else "")
    )


@frozen
class Emit:
    """Append ``events`` to ``stream`` of the follower's ``aggregate``.

    The follower appends them after whatever the stream holds when it
    processes the upstream event, events pending in its batch included:
    the intent names no expected version.  Unlike :class:`Do`, no command
    decides on the stream's state, but the events must still apply to it.
    The follower folds them onto that state, and a projector that refuses
    them (raises) is a policy error: the application's ``on_error``
    handles it, and the default stops the follower with a
    :class:`fes.errors.PolicyError`.  The events are committed with the
    follower's tracking position, in one transaction; if another writer
    appends to the stream first, the commit conflicts and the follower
    processes the batch again from what the store holds.
    """

    aggregate: Aggregate[Any]
    stream: str
    events: tuple[Any, ...] = field(converter=_events)


@frozen
class Do:
    """Run ``command(state, *args)`` on ``stream`` of the follower's ``aggregate``.

    The state includes events already pending from the same batch.
    """

    aggregate: Aggregate[Any]
    stream: str
    command: Command = field(converter=_command)
    args: tuple[Any, ...] = field(default=(), converter=_args)


#: What a policy returns: inert data saying what the follower should do.
Intent = Emit | Do
#: A pure function from a recorded upstream event to the intents it causes.
Policy = Callable[[Recorded[Any]], Sequence[Intent]]


def nothing(recorded: Recorded[Any]) -> list[Intent]:
    """The policy that ignores every event."""
    return []


@frozen
class _On:
    kinds: tuple[type, ...]
    handler: Callable[[Recorded[Any]], Sequence[Intent]]

    @property
    def __name__(self) -> str:  # as messages name a policy: on(Kind, handler)
        kinds = ", ".join(kind.__name__ for kind in self.kinds)
        return f"on({kinds if len(self.kinds) == 1 else f'({kinds})'}, {_name_of(self.handler)})"

    def __call__(self, recorded: Recorded[Any]) -> Sequence[Intent]:
        if isinstance(recorded.event, self.kinds):
            result = self.handler(recorded)
            return result if result.__class__ is list else _checked(self.handler, result)
        return []


def on(
    kinds: type | tuple[type, ...], handler: Callable[[Recorded[Any]], Sequence[Intent]]
) -> Policy:
    """A policy that runs ``handler`` only for events of the given type(s)."""
    return _On(kinds if isinstance(kinds, tuple) else (kinds,), handler)


@frozen
class _When:
    predicate: Callable[[Recorded[Any]], bool]
    policy: Policy

    @property
    def __name__(self) -> str:
        return f"when({_name_of(self.predicate)}, {_name_of(self.policy)})"

    def __call__(self, recorded: Recorded[Any]) -> Sequence[Intent]:
        return _checked(self.policy, self.policy(recorded)) if self.predicate(recorded) else []


def when(predicate: Callable[[Recorded[Any]], bool], policy: Policy) -> Policy:
    """A policy that runs ``policy`` only for events ``predicate`` accepts."""
    return _When(predicate, policy)


@frozen
class _Merged:
    policies: tuple[Policy, ...]

    @property
    def __name__(self) -> str:
        return f"merge({', '.join(map(_name_of, self.policies))})"

    def __call__(self, recorded: Recorded[Any]) -> Sequence[Intent]:
        intents: list[Intent] = []
        for policy in self.policies:
            intents.extend(_checked(policy, policy(recorded)))
        return intents


def merge(*policies: Policy) -> Policy:
    """One policy running several, their intents concatenated in order."""
    return _Merged(policies)


@frozen
class _FanOut:
    targets: Callable[[Recorded[Any]], Iterable[Any]]
    intent: Callable[[Recorded[Any], Any], Intent | Sequence[Intent]]

    @property
    def __name__(self) -> str:
        return f"fan_out({_name_of(self.targets)}, {_name_of(self.intent)})"

    def __call__(self, recorded: Recorded[Any]) -> Sequence[Intent]:
        intents: list[Intent] = []
        for target in self.targets(recorded):
            made = self.intent(recorded, target)
            if isinstance(made, (Emit, Do)):
                intents.append(made)
            else:
                intents.extend(_checked(self.intent, made))
        return intents


def fan_out(
    targets: Callable[[Recorded[Any]], Iterable[T]],
    intent: Callable[[Recorded[Any], T], Intent | Sequence[Intent]],
) -> Policy:
    """A policy making one intent (or several) for each target of an event."""
    return _FanOut(targets, intent)


# --- what to do when a policy raises ---------------------------------------


@frozen
class Retry:
    """Try the same upstream event again after ``delay`` seconds."""

    delay: float = 1.0


@frozen
class Skip:
    """Record the event as processed, with no effect, and note the skip."""


@frozen
class Stop:
    """Stop this follower; a restart resumes at the failed event."""


#: What an error handler returns: retry the event, skip it, or stop the follower.
Directive = Retry | Skip | Stop
#: Decides, purely, what to do about a policy's error on its n-th attempt.
ErrorHandler = Callable[[BaseException, Recorded[Any], int], Directive]


def stop_on_error(error: BaseException, recorded: Recorded[Any], attempt: int) -> Directive:
    """The default: stop the follower at the first error."""
    return Stop()


@frozen
class _RetryThenStop:
    attempts: int
    delay: float
    then: Directive

    def __call__(self, error: BaseException, recorded: Recorded[Any], attempt: int) -> Directive:
        return Retry(self.delay) if attempt < self.attempts else self.then


def retry_then_stop(
    attempts: int = 3, delay: float = 1.0, then: Directive | None = None
) -> ErrorHandler:
    """Retry, ``delay`` seconds apart, until attempt number ``attempts`` fails; then ``then``.

    Attempts count from 1, so ``attempts`` is the number of tries in all.
    """
    return _RetryThenStop(attempts, delay, Stop() if then is None else then)


def intents_of(policy: str, result: object) -> tuple[Intent, ...]:
    """A policy's result as a tuple of intents; a result of another shape is refused.

    A policy returns a list of intents; a bare ``Emit`` or ``Do``, ``None``
    or anything that is not iterable is a :class:`fes.errors.DefinitionError`
    naming ``policy`` (the policy as the caller names it: "the policy of
    'orders'" for a follower, "the policy 'reserve'" for a function), so
    that runners and ``given_policy`` explain the mistake alike instead of a
    ``TypeError``.
    """
    if isinstance(result, Emit | Do) or result is None or isinstance(result, str | bytes):
        raise _not_intents(policy, result)
    try:
        return tuple(result)  # type: ignore[arg-type]
    except TypeError:
        raise _not_intents(policy, result) from None


def _checked(function: Callable[..., Any], result: object) -> Sequence[Intent]:
    """What ``function``, a policy inside a combinator, returned: its intents, or refused.

    The refusal names ``function`` and points at its definition (see
    :func:`origin_of`), not at the combinator that called it.
    """
    if result.__class__ is list:
        return result
    try:
        return intents_of(f"the policy {_name_of(function)!r}", result)
    except DefinitionError as error:
        error.__dict__.setdefault("fes_origin", function)
        raise


def origin_of(error: BaseException) -> Callable[..., Any] | None:
    """The user's function a refused policy result came from, when a combinator knew it."""
    function = getattr(error, "__dict__", {}).get("fes_origin")
    return function if callable(function) else None


def _not_intents(policy: str, result: object) -> DefinitionError:
    if isinstance(result, Emit | Do):
        shown = f"a bare fes.{type(result).__name__} on {result.aggregate.name!r}"
    else:
        text = repr(result)
        shown = text if len(text) <= 80 else text[:77] + "..."
    return DefinitionError(
        f"{policy} returned {shown}; a policy returns a list of "
        "intents (fes.Emit or fes.Do), e.g. [fes.Do(...)], or [] for none"
    )
