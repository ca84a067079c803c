"""The outcome of one simulated run, and its report as text."""

from __future__ import annotations

from collections.abc import Mapping

from attrs import field, frozen

from fes.testing.simulation._inputs import Input
from fes.testing.simulation._schedule import Step
from fes.testing.simulation._state import SystemState, _frozen_map

_SHOWN_DIFFERENCES = 12  # a report lists this many differences; the rest are counted


@frozen
class FollowedUp:
    """What one follow-up did: its name, the inputs it gave and what each did.

    ``step`` is the index of the :class:`Quiesce` step after which it ran, or
    None when it ran after the schedule.
    """

    name: str
    step: int | None
    inputs: tuple[Input, ...]
    outcomes: tuple[str, ...]

    def lines(self, indent: str) -> list[str]:
        """The follow-up as report lines."""
        count = len(self.inputs)
        head = f"{indent}follow-up {self.name} gave {count} input{'' if count == 1 else 's'}"
        lines = [head + (":" if count else "")]
        pad = " " * (len(indent) + 2)
        lines.extend(
            f"{pad}{i}. {item.describe()} -> {outcome}"
            for i, (item, outcome) in enumerate(zip(self.inputs, self.outcomes, strict=True), 1)
        )
        return lines


@frozen
class Simulation:
    """The outcome of one simulated run, compared with the fault-free run.

    ``seeded`` says whether the schedule was drawn from ``seed`` (rather
    than given); ``outcomes`` says what each input did and ``trace`` what each step of
    the schedule did; ``differences`` what the
    simulated stores hold that the fault-free ones do not (and each stored
    view that is not its log's fold); ``failures`` which invariants failed
    and why; ``counts`` how often each fault struck (``crashes`` that lost
    a commit, ``redeliveries``, ``duplicates refused`` and ``conflicts
    refused`` by the store, ``rivals`` run inside another's commit,
    ``holds``, ``outages`` and the ``store errors`` steps met while a
    database was down); ``placement`` the database each application's store
    is in; ``followed_up`` what each follow-up did; ``impure`` each policy
    that, called twice on an event of the fault-free run under two seeds of
    :mod:`random`, did not give the same intents; ``expect_stops`` whether
    a follower stopped on a policy error leaves the run :attr:`ok`.
    """

    seed: int
    seeded: bool
    inputs: tuple[Input, ...]
    outcomes: tuple[str, ...]
    schedule: tuple[Step, ...]
    trace: tuple[str, ...]
    final: SystemState
    expected: SystemState
    differences: tuple[str, ...]
    failures: tuple[str, ...]
    counts: Mapping[str, int] = field(converter=_frozen_map)
    placement: Mapping[str, str] = field(converter=_frozen_map, factory=dict)
    followed_up: tuple[FollowedUp, ...] = ()
    impure: tuple[str, ...] = ()
    expect_stops: bool = False

    @property
    def ok(self) -> bool:
        """Whether the run matched the fault-free run and held every invariant.

        And no follower stopped on a policy error, unless :attr:`expect_stops`.
        """
        return (
            not self.differences and not self.failures and not self.impure
            and (self.expect_stops or not self.final.errors)
        )

    def report(self) -> str:
        """The run as text: verdict, inputs, schedule steps, then what differed."""
        stopped = self.final.errors
        if self.ok:
            head = "the simulated run matches the fault-free run and every invariant holds"
            if stopped:
                # the same stop in both runs is no difference, but it is not "all well"
                head += ", but followers stopped on a policy error in both (see stopped:)"
        else:
            problems = []
            if self.differences:
                problems.append("differs from the fault-free run")
            if self.failures:
                count = len(self.failures)
                problems.append(f"breaks {count} invariant{'' if count == 1 else 's'}")
            if self.impure:
                count = len(self.impure)
                problems.append(f"has {count} impure polic{'y' if count == 1 else 'ies'}")
            if stopped and not self.expect_stops:
                count = len(stopped)
                problems.append(
                    f"stops {count} follower{'' if count == 1 else 's'} on a policy error "
                    "(see stopped:; pass expect_stops=True if that is the behaviour under test)"
                )
            head = f"the simulated run {' and '.join(problems)}"
        lines = [head]
        lines.append(f"inputs ({len(self.inputs)}):")
        lines.extend(
            f"  {i}. {item.describe()} -> {outcome}"
            for i, (item, outcome) in enumerate(zip(self.inputs, self.outcomes, strict=True), 1)
        )
        databases = sorted(set(self.placement.values()))
        if len(databases) > 1:
            lines.append("databases: " + "; ".join(
                f"{name!r}: {', '.join(a for a, d in self.placement.items() if d == name)}"
                for name in databases
            ))
        count = len(self.schedule)
        drawn = f", drawn from seed {self.seed}" if self.seeded else ""
        lines.append(f"schedule ({count} step{'' if count == 1 else 's'}{drawn}):")
        after = {f.step: f for f in self.followed_up if f.step is not None}
        for i, (step, did) in enumerate(zip(self.schedule, self.trace, strict=True)):
            lines.append(f"  {i + 1}. {step.describe()} -> {did}")
            if i in after:
                lines.extend(after[i].lines("     "))
        quiet = "  then every follower and view ran until nothing was left to do" + (
            ", except the stopped followers" if stopped else ""
        )
        lines.append(quiet)
        for late in (f for f in self.followed_up if f.step is None):
            lines.extend(late.lines("  then "))
            lines.append(quiet)
        if stopped:
            lines.append("stopped:")
            lines.extend(f"  - {name}: {why}" for name, why in sorted(stopped.items()))
        if self.differences:
            lines.append("differences:")
            lines.extend(f"  - {d}" for d in self.differences[:_SHOWN_DIFFERENCES])
            hidden = len(self.differences) - _SHOWN_DIFFERENCES
            if hidden > 0:
                lines.append(f"  … and {hidden} more (see .differences)")
        if self.impure:
            lines.append("policies:")
            lines.extend(f"  - {p}" for p in self.impure)
        if self.failures:
            lines.append("invariants:")
            lines.extend(f"  - {f}" for f in self.failures)
        return "\n".join(lines)

    def check(self) -> None:
        """Raise an AssertionError with :meth:`report` unless the run is :attr:`ok`."""
        if not self.ok:
            raise AssertionError(self.report())
