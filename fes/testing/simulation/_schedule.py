"""Schedules: the steps of a simulated run, the faults they inject, and how they are drawn."""

from __future__ import annotations

import random
from collections.abc import Collection

from attrs import frozen
from hypothesis import strategies as st

from fes.errors import ConfigurationError
from fes.system import System

#: The name of the one database of a system simulated without ``databases=``.
MAIN = "main"

#: The faults a scheduler may inject, by name.
FAULTS: frozenset[str] = frozenset({"crash", "redeliver", "conflict", "slow", "down"})


@frozen
class Run:
    """``unit`` processes one batch of at most ``batch`` notifications."""

    unit: str
    batch: int = 1

    def describe(self) -> str:
        """The step as a line of a report."""
        return f"{self.unit}: a batch of up to {self.batch}"


@frozen
class Crash:
    """``unit`` processes a batch, then its process crashes before recording it."""

    unit: str
    batch: int = 1

    def describe(self) -> str:
        """The step as a line of a report."""
        return f"{self.unit}: a batch of up to {self.batch}, crashing before it is recorded"


@frozen
class Redeliver:
    """The batch ``unit`` recorded last is delivered to it again (a stale position)."""

    unit: str
    batch: int = 1

    def describe(self) -> str:
        """The step as a line of a report."""
        return (
            f"{self.unit}: its last recorded batch delivered again, and batches of up "
            f"to {self.batch}"
        )


@frozen
class Conflict:
    """Between ``unit``'s load and its commit, a separate instance of ``rival`` commits."""

    unit: str
    rival: str
    batch: int = 1

    def describe(self) -> str:
        """The step as a line of a report."""
        return (
            f"{self.unit}: a batch of up to {self.batch}, while another instance of "
            f"{self.rival} commits first"
        )


@frozen
class Hold:
    """Events ``leader`` records from now on stay invisible to readers for ``steps`` steps."""

    leader: str
    steps: int = 3

    def describe(self) -> str:
        """The step as a line of a report."""
        plural = "" if self.steps == 1 else "s"
        return f"{self.leader}: new events held back for {self.steps} step{plural}"


@frozen
class Down:
    """Database ``database`` is down for ``steps`` steps: its stores refuse every read and write.

    The followers of its applications cannot record, commands on its
    applications fail, and the followers of its applications cannot read
    their log: each such step fails with :class:`fes.errors.StoreUnavailable`
    and is tried again later.  The database comes back after ``steps``
    steps, or when the system is run until quiet.
    """

    database: str
    steps: int = 3

    def describe(self) -> str:
        """The step as a line of a report."""
        plural = "" if self.steps == 1 else "s"
        return f"database {self.database!r} down for {self.steps} step{plural}"


@frozen
class Quiesce:
    """Every follower and view runs, without faults, until nothing is left to do.

    Then the next follow-up (see :func:`simulate`'s ``follow_ups``), if any,
    adds its inputs, drawn from the quiet system's state.
    """

    def describe(self) -> str:
        """The step as a line of a report."""
        return "every follower and view runs until nothing is left to do"


#: One step of a schedule.
Step = Run | Crash | Redeliver | Conflict | Hold | Down | Quiesce


def units(system: System) -> tuple[str, ...]:
    """The units a schedule can name: ``follower<-leader`` per pipe edge, ``app/view`` per view.

    The labels are those the runners use in their logs.
    """
    found = [f"{follower}<-{leader}" for leader, follower in system.edges]
    found.extend(f"{app.name}/{view.name}" for app in system.apps for view in app.views)
    return tuple(found)


def _leaders(system: System) -> tuple[str, ...]:
    """The applications whose logs someone reads: followed, or with views."""
    read = {leader for leader, _ in system.edges} | {a.name for a in system.apps if a.views}
    return tuple(a.name for a in system.apps if a.name in read)


def _fault_set(faults: bool | Collection[str]) -> frozenset[str]:
    if faults is True:
        return FAULTS
    if faults is False:
        return frozenset()
    chosen = frozenset(faults)
    unknown = sorted(chosen - FAULTS)
    if unknown:
        raise ConfigurationError(
            f"unknown fault {unknown[0]!r}; the faults are {', '.join(sorted(FAULTS))}"
        )
    return chosen


def schedules(
    system: System,
    *,
    faults: bool | Collection[str] = True,
    max_steps: int = 20,
    max_batch: int = 4,
    databases: Collection[str] = (MAIN,),
    follow_ups: int = 0,
) -> st.SearchStrategy[list[Step]]:
    """A Hypothesis strategy of schedules for ``system``: lists of steps.

    ``faults`` is True (all of :data:`FAULTS`), False (plain steps only) or
    the names of the faults to inject; ``databases`` the names a
    :class:`Down` step may take down.  With ``follow_ups``, a schedule has
    that many :class:`Quiesce` steps, each after a part of up to
    ``max_steps`` steps.  Steps shrink towards fewer, plain steps on the
    first units with batches of one.
    """
    chosen = _fault_set(faults)
    labels = units(system)
    if not labels:
        return st.just([Quiesce()] * follow_ups)
    unit = st.sampled_from(labels)
    batch = st.integers(1, max(max_batch, 1))
    kinds: list[st.SearchStrategy[Step]] = [st.builds(Run, unit, batch)]
    if "crash" in chosen:
        kinds.append(st.builds(Crash, unit, batch))
    if "redeliver" in chosen:
        kinds.append(st.builds(Redeliver, unit, batch))
    if "conflict" in chosen:
        kinds.append(st.builds(Conflict, unit, unit, batch))
    if "slow" in chosen and _leaders(system):
        kinds.append(st.builds(Hold, st.sampled_from(_leaders(system)), st.integers(1, 5)))
    if "down" in chosen and databases:
        # drawn as a unit and a count, as a Run is, so that the shrinker can turn
        # an outage into a plain step (one database alone is no draw at all)
        names = sorted(databases)
        kinds.append(st.builds(
            lambda _, index, steps: Down(names[index], steps),
            unit, st.integers(0, len(names) - 1), st.integers(1, 5),
        ))
    part = st.lists(st.one_of(kinds), max_size=max_steps)
    if not follow_ups:
        return part
    return st.lists(part, min_size=follow_ups + 1, max_size=follow_ups + 1).map(_joined)


def _joined(parts: list[list[Step]]) -> list[Step]:
    """The parts of a schedule, one :class:`Quiesce` between each two."""
    steps: list[Step] = list(parts[0])
    for part in parts[1:]:
        steps.append(Quiesce())
        steps.extend(part)
    return steps


def _random_schedule(
    system: System,
    seed: int,
    faults: frozenset[str],
    length: int,
    databases: Collection[str] = (MAIN,),
    follow_ups: int = 0,
) -> tuple[Step, ...]:
    """A schedule drawn from a generator seeded with ``seed``: the same seed, the same list.

    ``length`` steps, and with ``follow_ups`` that many more parts of
    ``length`` steps, each after a :class:`Quiesce`.
    """
    labels = units(system)
    if not labels:
        return (Quiesce(),) * follow_ups
    chance = random.Random(seed)
    leaders = _leaders(system)
    names = sorted(databases)
    kinds = ["run"] * 3 + sorted(faults)
    steps: list[Step] = []
    for part in range(follow_ups + 1):
        if part:
            steps.append(Quiesce())
        for _ in range(length):
            kind = chance.choice(kinds)
            unit = chance.choice(labels)
            batch = chance.randint(1, 4)
            if kind == "crash":
                steps.append(Crash(unit, batch))
            elif kind == "redeliver":
                steps.append(Redeliver(unit, batch))
            elif kind == "conflict":
                steps.append(Conflict(unit, chance.choice(labels), batch))
            elif kind == "slow" and leaders:
                steps.append(Hold(chance.choice(leaders), chance.randint(1, 5)))
            elif kind == "down" and names:
                steps.append(Down(chance.choice(names), chance.randint(1, 5)))
            else:
                steps.append(Run(unit, batch))
    return tuple(steps)
