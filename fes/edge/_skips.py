"""Skipped upstream events: recorded, in the follower's own store, when a policy's error is skipped.

When an application's ``on_error`` answers :class:`fes.Skip`, the runner
records a :class:`PolicySkipped` event in the follower's reserved stream
:data:`SKIPS_STREAM`, in the same transaction as the tracking position that
moves past the failed event.  So a skip is exactly as durable as any effect
would have been, is never recorded twice, and can be listed later with
:func:`fes.edge.skipped`.

The event's topic starts with ``fes.``: every application's codec registers
it (see :data:`skips`), runners never hand it to policies and views never fold
it, so a skip in one application is invisible to the applications that
follow it.
"""

from __future__ import annotations

from attrs import frozen

from fes.aggregates import Aggregate
from fes.events import event

__all__ = [
    "INTERNAL_PREFIX",
    "SKIPS_STREAM",
    "PolicySkipped",
    "is_internal",
    "skips",
]

#: Topics under this prefix are fes's own and never reach policies or views.
INTERNAL_PREFIX = "fes."
#: The stream of a follower in which its skips are recorded.
SKIPS_STREAM = "fes.skipped"


@event(topic="fes.PolicySkipped")
@frozen
class PolicySkipped:
    """A follower skipped ``leader``'s event at ``position`` after its policy failed.

    ``event_id`` is the upstream event's ``stream@version``; ``error`` the
    failure as ``Type: message``; ``attempts`` how many times the policy
    was tried.
    """

    leader: str
    position: int
    event_id: str
    topic: str
    error: str
    attempts: int


def _count(total: int, skip: PolicySkipped) -> int:
    return total + 1


#: The aggregate of :data:`SKIPS_STREAM`: its state counts the skips.
skips: Aggregate[int] = Aggregate(
    name="fes.skips", initial=0, apply=_count, events=[PolicySkipped]
)


def is_internal(topic: str) -> bool:
    """Whether a stored topic is one of fes's own."""
    return topic.startswith(INTERNAL_PREFIX)
