"""A follower whose command refuses an upstream event it has already seen: hot-standby tests.

``guard`` follows ``source`` and counts each message in one stream
(``seen``) with a ``Do`` command that refuses a position it counted
before, as a domain rule would.  Two instances of ``guard`` race over the
same store: the one that loses a batch meets state that already holds the
winner's effects, so its command refuses.  Importable by name from worker
processes.
"""

from __future__ import annotations

from attrs import frozen

import fes
from system import domain


@frozen
class Tallied:
    """Upstream position ``position`` was counted."""

    position: int


def _tallied(state: int, event: Tallied) -> int:
    return max(state, event.position)


#: The highest upstream position counted.
tally: fes.Aggregate[int] = fes.Aggregate("tally", 0, fes.projector(_tallied), events=[Tallied])


def count_once(state: int, position: int) -> list[Tallied]:
    """Count upstream ``position``, refusing one counted before."""
    if position <= state:
        raise fes.Rejected(f"position {position} was counted already (at {state})")
    return [Tallied(position)]


def guard_policy(recorded: fes.Recorded[object]) -> list[fes.Intent]:
    """Count every message of ``source`` once, in the one stream ``seen``."""
    return [fes.Do(tally, "seen", count_once, (recorded.position,))]


guarded = fes.System(
    [domain.source, fes.App("guard", aggregates=[tally], policy=guard_policy)],
    pipes=[["source", "guard"]],
)
