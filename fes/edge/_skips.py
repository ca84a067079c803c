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

A follower stopped by a policy error records a :class:`FollowerHalted` in
:data:`STOPS_STREAM` of its own store (where, why, when, on which host and
process), and a :class:`FollowerResumed` in the same transaction as its
first progress after it: so ``fes apps`` on any host can tell a stopped
follower from a slow one (:func:`current_stops`).  A view whose ``apply``
raises stops the same way: a :class:`ViewHalted` in the same stream, and a
:class:`ViewResumed` once it gets past that position
(:func:`current_view_stops`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from attrs import field, frozen

from fes.aggregates import Aggregate
from fes.events import Recorded, event

from .stores._base import Store

__all__ = [
    "INTERNAL_PREFIX",
    "SKIPS_STREAM",
    "STOPS_STREAM",
    "FollowerHalted",
    "FollowerResumed",
    "PolicySkipped",
    "ViewHalted",
    "ViewResumed",
    "current_stops",
    "current_view_stops",
    "follower_status",
    "recorded_stops",
    "recorded_view_stops",
    "stop_status",
    "is_internal",
    "skips",
    "stops_from_json",
    "view_stops_from_json",
]

#: Topics under this prefix are fes's own and never reach policies or views.
INTERNAL_PREFIX = "fes."
#: The stream of a follower in which its skips are recorded.
SKIPS_STREAM = "fes.skipped"
#: The stream of a follower in which its stops and resumptions are recorded.
STOPS_STREAM = "fes.stops"


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


@event(topic="fes.FollowerHalted")
@frozen
class FollowerHalted:
    """Follower ``unit`` stopped on ``leader``'s event at ``position`` after its policy failed.

    ``error`` is the failure as ``Type: message``; ``where`` the policy's
    ``file:line`` and ``traceback`` the whole traceback; ``at`` the time
    (ISO 8601, from the application's clock); ``host`` and ``pid`` the
    process that ran it.  Two records of one stop are equal whenever,
    wherever and through whichever calls they were made: ``traceback``,
    ``at``, ``host`` and ``pid`` are left out of comparisons (so a replayed
    or simulated run compares equal).
    """

    unit: str
    leader: str
    position: int
    error: str
    where: str
    traceback: str = field(eq=False)
    at: str = field(eq=False)
    host: str = field(eq=False)
    pid: int = field(eq=False)


@event(topic="fes.FollowerResumed")
@frozen
class FollowerResumed:
    """Follower ``unit`` made progress on ``leader`` again, past ``position``."""

    unit: str
    leader: str
    position: int


@event(topic="fes.ViewHalted")
@frozen
class ViewHalted:
    """View ``view`` stopped on its application's event at ``position``: its ``apply`` failed.

    The fields are those of :class:`FollowerHalted`, ``view`` for ``unit``
    and ``leader``; ``traceback``, ``at``, ``host`` and ``pid`` are left out
    of comparisons.
    """

    view: str
    position: int
    error: str
    where: str
    traceback: str = field(eq=False)
    at: str = field(eq=False)
    host: str = field(eq=False)
    pid: int = field(eq=False)


@event(topic="fes.ViewResumed")
@frozen
class ViewResumed:
    """View ``view`` made progress again, to ``position``."""

    view: str
    position: int


def current_view_stops(events: Iterable[object]) -> dict[str, ViewHalted]:
    """From :data:`STOPS_STREAM`'s events: each view stopped now, with its record."""
    stops: dict[str, ViewHalted] = {}
    for item in events:
        if isinstance(item, ViewHalted):
            stops[item.view] = item
        elif isinstance(item, ViewResumed):
            stops.pop(item.view, None)
    return stops


def stop_status(stop: FollowerHalted | ViewHalted) -> str:
    """A recorded stop for people: ``stopped at P: Type: message (since …, on host/pid)``."""
    return (
        f"stopped at {stop.position:,}: {stop.error} "
        f"(since {stop.at}, on {stop.host}/{stop.pid})"
    )


def current_stops(events: Iterable[object]) -> dict[tuple[str, str], FollowerHalted]:
    """From :data:`STOPS_STREAM`'s events: each (unit, leader) stopped now, with its record."""
    stops: dict[tuple[str, str], FollowerHalted] = {}
    for item in events:
        if isinstance(item, FollowerHalted):
            stops[(item.unit, item.leader)] = item
        elif isinstance(item, FollowerResumed):
            stops.pop((item.unit, item.leader), None)
    return stops


class _Reader(Protocol):
    """What :func:`recorded_stops` needs of an application (this module cannot import it)."""

    store: Store

    def stream(self, stream: str) -> list[Recorded[Any]]: ...


def recorded_stops(application: _Reader) -> dict[tuple[str, str], FollowerHalted]:
    """:func:`current_stops` of ``application``'s :data:`STOPS_STREAM`, read with its codec.

    Most followers never stopped: a stream with no events costs one look at
    its version, not a read.
    """
    if not application.store.stream_version(STOPS_STREAM):
        return {}
    return current_stops(r.event for r in application.stream(STOPS_STREAM))


def recorded_error(halted: FollowerHalted | ViewHalted) -> RuntimeError:
    """A recorded stop's error, to raise in a process that did not meet it.

    The original exception lives only in the process that stopped; the
    record keeps its text, where it was raised, and when and where it was
    recorded.
    """
    return RuntimeError(
        f"{halted.error} (at {halted.where}; recorded {halted.at} on {halted.host}, "
        f"pid {halted.pid})"
    )


def recorded_view_stops(application: _Reader) -> dict[str, ViewHalted]:
    """:func:`current_view_stops` of ``application``'s :data:`STOPS_STREAM`, read with its codec."""
    if not application.store.stream_version(STOPS_STREAM):
        return {}
    return current_view_stops(r.event for r in application.stream(STOPS_STREAM))


def _from_json(
    records: Iterable[tuple[str, object]], kinds: dict[str, Any]
) -> list[object] | None:
    """The records of ``kinds`` (by topic) made from plain JSON data; None if one is encoded.

    Records of other topics (the other kind of stop's) are passed over.
    """
    events: list[object] = []
    for topic, data in records:
        kind = kinds.get(topic)
        if kind is None:
            continue
        if not isinstance(data, dict):
            return None  # compressed or encrypted: only the application's codec reads it
        try:
            events.append(kind(**data))
        except TypeError:
            return None
    return events


def stops_from_json(
    records: Iterable[tuple[str, object]],
) -> dict[tuple[str, str], FollowerHalted] | None:
    """:func:`current_stops` of (topic, plain JSON data) records; None if one is encoded."""
    events = _from_json(
        records, {"fes.FollowerHalted": FollowerHalted, "fes.FollowerResumed": FollowerResumed}
    )
    return None if events is None else current_stops(events)


def view_stops_from_json(
    records: Iterable[tuple[str, object]],
) -> dict[str, ViewHalted] | None:
    """:func:`current_view_stops` of (topic, plain JSON data) records; None if one is encoded."""
    events = _from_json(records, {"fes.ViewHalted": ViewHalted, "fes.ViewResumed": ViewResumed})
    return None if events is None else current_view_stops(events)


def follower_status(
    stop: FollowerHalted | None,
    tracked: int | None,
    upstream: int | None,
    unknown: str | None = None,
) -> str:
    """A follower's state for people: ``caught up``, ``behind N``, ``stopped at P: …`` and so on.

    ``tracked`` is None when the follower has tracked nothing yet; ``upstream``
    (the leader's last position) is None when it could not be read, and
    ``unknown`` then says why.  A stop the follower has since moved past
    (another instance went on) is over.  A follower tracked beyond its
    leader's last position is ``ahead of its leader``: its leader's store
    is not the one it followed (a wrong URL, a restored backup), and the
    events of the positions it believes done would be skipped.
    Numbers are written as the tables beside them write theirs (``behind
    4,737``).
    """
    position = 0 if tracked is None else tracked
    if stop is not None and position < stop.position:
        return stop_status(stop)
    if upstream is None:
        return "unknown: " + (unknown or "its leader's last position cannot be read")
    if position > upstream:
        return (
            f"ahead of its leader: tracked {position:,}, leader's last {upstream:,} "
            "— is this the leader's store?"
        )
    behind = upstream - position
    if tracked is None:
        # nothing tracked: not caught up with a leader that holds events
        return f"not started: behind {behind:,}" if behind else "not started: nothing to follow yet"
    # "caught up", not "running": the store cannot tell whether a process is
    # serving it now, only that nothing is left and nothing has stopped it
    return "caught up" if not behind else f"behind {behind:,}"


def _count(
    total: int,
    note: PolicySkipped | FollowerHalted | FollowerResumed | ViewHalted | ViewResumed,
) -> int:
    return total + 1


#: The aggregate of fes's own streams (:data:`SKIPS_STREAM`, :data:`STOPS_STREAM`):
#: its state counts their events.
skips: Aggregate[int] = Aggregate(
    name="fes.skips",
    initial=0,
    apply=_count,
    events=[PolicySkipped, FollowerHalted, FollowerResumed, ViewHalted, ViewResumed],
)


def is_internal(topic: str) -> bool:
    """Whether a stored topic is one of fes's own."""
    return topic.startswith(INTERNAL_PREFIX)
