"""Whether a policy is pure: the same intents for the same event, whatever ``random`` holds.

Needs nothing but fes and the standard library, so that :func:`fes.testing.given_policy`
checks it without Hypothesis; :mod:`random` is imported only when a policy is checked.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable
from typing import Any

from fes.events import Recorded
from fes.policies import Do, Emit, Intent, Policy, intents_of

#: The two seeds of :mod:`random` a policy runs under, chosen so that the first
#: coin toss (``random.random() < 0.5``, ``getrandbits(1)``, ``choice`` of two)
#: comes out differently under each (the purity law of commands uses the same).
PURITY_SEEDS = (0x5EED, 0xD1CE)


def policy_name(policy: Callable[..., Any]) -> str:
    """A policy's name, for messages."""
    return str(getattr(policy, "__name__", None) or type(policy).__name__)


#: What a policy did: its intents, or the exception it raised.
Outcome = list[Intent] | Exception


def _seeded(seed: int, policy: Policy, upstream: Recorded[Any], name: str) -> Outcome:
    """What ``policy`` does with ``random`` seeded by ``seed``; ``random``'s state is put
    back after."""
    import random  # here: given_policy is part of the pure core, which imports no random

    saved = random.getstate()
    random.seed(seed)
    try:
        return list(intents_of(f"the policy {name!r}", policy(upstream)))
    except Exception as error:
        return error
    finally:
        random.setstate(saved)


def _seed_of(upstream: Recorded[Any]) -> int:
    """A seed of :mod:`random` that differs from event to event, the same in every run."""
    return zlib.crc32(f"{upstream.stream}@{upstream.version}#{upstream.position}".encode())


def _same(first: Outcome, second: Outcome) -> bool:
    if isinstance(first, Exception) or isinstance(second, Exception):
        return _told(first) == _told(second)
    return first == second


def impurity(policy: Policy, upstream: Recorded[Any], name: str | None = None) -> str | None:
    """Why ``policy`` is not pure on ``upstream``, or None if it is (see :func:`checked`)."""
    return checked(policy, upstream, name)[1]


def checked(
    policy: Policy, upstream: Recorded[Any], name: str | None = None
) -> tuple[Outcome, str | None]:
    """What ``policy`` did with ``upstream`` (given as is), and why it is not pure, if it is not.

    The policy is called twice, on the event as given and then on a fresh
    copy of it, with :mod:`random` seeded differently (and, if they agree, a
    third time under a seed taken from the event's stream, version and
    position, so that a biased coin is caught over many events) (Hypothesis seeds ``random`` the
    same way for every example, which would hide a policy that draws from
    it), and must return equal intents, or raise the same error, both
    times; and it must leave the event as it was.  A policy calling
    ``uuid.uuid4()`` or reading the clock finely differs between the two
    calls anyway.
    """
    label = name or policy_name(policy)
    try:
        pristine = copy.deepcopy(upstream)
    except Exception:  # an event that cannot be copied: call it as it is
        pristine = None
    first = _seeded(PURITY_SEEDS[0], policy, upstream, label)
    if pristine is not None and upstream != pristine:
        return first, (
            f"policy {label} changed the event it was given, from {pristine.event!r} "
            f"to {upstream.event!r}"
        )
    again = upstream if pristine is None else copy.deepcopy(pristine)
    second = _seeded(PURITY_SEEDS[1], policy, again, label)
    if _same(first, second):
        # a third seed, from the event's place: over many events, a biased coin
        # (random.random() < 0.1) comes up differently too
        again = upstream if pristine is None else copy.deepcopy(pristine)
        second = _seeded(_seed_of(upstream), policy, again, label)
    if _same(first, second):
        return first, None
    return first, (
        f"policy {label} is not deterministic on {upstream.event!r} "
        f"(stream {upstream.stream!r}, version {upstream.version}): "
        f"called under two seeds of random, it {_told(first)}, then {_told(second)}\n"
        "  (a policy must not read random, uuid4 or the clock: take such values from "
        "the event, or let a command's arguments carry them)"
    )


def _told(outcome: Outcome) -> str:
    if isinstance(outcome, Exception):
        return f"raised {type(outcome).__name__}: {outcome}"
    return f"returned [{'; '.join(map(show_intent, outcome))}]"


def show_intent(intent: Any) -> str:
    """An intent in one line, naming its aggregate instead of printing it whole."""
    if isinstance(intent, Emit):
        events = "; ".join(map(repr, intent.events)) or "(no events)"
        return f"Emit to {intent.aggregate.name} {intent.stream!r}: {events}"
    if isinstance(intent, Do):
        command = getattr(intent.command, "__name__", None) or repr(intent.command)
        args = ", ".join(map(repr, intent.args))
        return f"Do on {intent.aggregate.name} {intent.stream!r}: {command}({args})"
    return repr(intent)
