"""The ways in: one run (:func:`simulate`), or many drawn by Hypothesis (:func:`check_system`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import hypothesis
from hypothesis import Phase
from hypothesis import strategies as st

from fes.system import System
from fes.testing.simulation._check import _check_invariants, _differences
from fes.testing.simulation._coverage import Coverage
from fes.testing.simulation._edge import Application
from fes.testing.simulation._inputs import Input, _execute
from fes.testing.simulation._report import FollowedUp, Simulation
from fes.testing.simulation._run import (
    ApplicationFactory,
    Databases,
    FollowUp,
    Reference,
    _reference,
    _Simulator,
    placement,
    refuse_partitions,
)
from fes.testing.simulation._schedule import (
    Quiesce,
    Step,
    _fault_set,
    _random_schedule,
    schedules,
)
from fes.testing.simulation._state import Invariant
from fes.testing.simulation._text import _label

#: Rounds of stepping every unit, at most, before a run counts as never quiet.
MAX_ROUNDS = 10_000


def simulate(
    system: System,
    *,
    inputs: Iterable[Input | Sequence[Any]],
    schedule: Iterable[Step] | None = None,
    seed: int = 0,
    invariants: Sequence[Invariant] = (),
    faults: bool | Collection[str] = True,
    steps: int = 30,
    ordered: bool = True,
    application: ApplicationFactory = Application,
    options: Mapping[str, Any] | None = None,
    max_rounds: int = MAX_ROUNDS,
    databases: Databases = None,
    follow_ups: Sequence[FollowUp] = (),
    expect_stops: bool = False,
) -> Simulation:
    """Run ``system`` on ``inputs`` under a schedule, and compare with the fault-free run.

    Without ``schedule``, one of ``steps`` steps is drawn from a generator
    seeded with ``seed``, injecting ``faults`` (True: all of
    :data:`FAULTS`; False: none; or their names).  ``seed`` also seeds the
    id factory, so the same arguments always give the same run.

    ``databases`` places the applications' stores in separate databases: a
    mapping of application names (``"*"`` for the rest) to database names,
    or ``"each"`` for one database per application; by default they share
    one, named ``"main"``.  A :class:`Down` step takes one database down
    for a few steps.

    ``follow_ups`` are functions of a quiet system's :class:`SystemState`
    that return more inputs (a payment for each invoice a policy issued):
    each runs at a :class:`Quiesce` step of the schedule, in order, or after
    the schedule when it has fewer (a drawn schedule has one per follow-up),
    and the fault-free run calls them at the same points, once quiet.

    ``ordered=False`` compares each stream's events as a multiset, for
    systems whose streams are written from several leaders in an order that
    legitimately depends on timing.  ``application`` builds each
    :class:`fes.edge.Application` (a subclass, to test a variant of the
    edge); ``options`` go to it and to the fault-free runner
    (``snapshot_every``, ``cache_size``, …).  A run that is not quiet
    after ``max_rounds`` rounds of every unit fails with an AssertionError.

    A follower that stops on a policy error fails the run, even when the
    fault-free run stops it too: in production it would stop, and wait for
    a fix, just the same.  Pass ``expect_stops=True`` where a stop is the
    behaviour under test; the stopped followers must still be the same.

    Returns a :class:`Simulation`; call its ``check()`` to raise on failure.
    """
    items = tuple(Input.of(item) for item in inputs)
    chosen = _fault_set(faults)
    where = placement(system, databases)
    plan = (
        _random_schedule(system, seed, chosen, steps, set(where.values()), len(follow_ups))
        if schedule is None
        else tuple(schedule)
    )
    settings = dict(options or {})
    expected = _reference(system, items, seed, settings, max_rounds, follow_ups)
    return _simulate(
        system, items, plan, expected, seed=seed, seeded=schedule is None,
        invariants=invariants, ordered=ordered, application=application, options=settings,
        max_rounds=max_rounds, databases=databases, follow_ups=follow_ups,
        expect_stops=expect_stops,
    )


def _simulate(
    system: System,
    items: tuple[Input, ...],
    plan: tuple[Step, ...],
    expected: Reference,
    *,
    seed: int,
    seeded: bool,
    invariants: Sequence[Invariant],
    ordered: bool,
    application: ApplicationFactory,
    options: dict[str, Any],
    max_rounds: int,
    databases: Databases,
    follow_ups: Sequence[FollowUp],
    expect_stops: bool = False,
) -> Simulation:
    """Run ``plan`` on ``items`` and compare with the fault-free run ``expected``."""
    sim = _Simulator(
        system, seed=seed, application=application, options=options, databases=databases
    )
    outcomes = tuple(_execute(sim.readers[item.app], system, item) for item in items)
    waiting = list(follow_ups)
    followed: list[FollowedUp] = []
    problems: list[str] = []
    trace: list[str] = []
    end = _part_end(plan, 0)
    for index, step in enumerate(plan):
        if not isinstance(step, Quiesce):
            trace.append(sim.perform(index, step, end))
            continue
        end = _part_end(plan, index + 1)
        sim.faults.now = index
        sim.drain(max_rounds)
        if waiting:
            followed.append(_follow_up(sim, waiting.pop(0), index, problems))
            trace.append("quiet; then a follow-up")
        else:
            trace.append("quiet")
    sim.drain(max_rounds)
    while waiting:
        followed.append(_follow_up(sim, waiting.pop(0), None, problems))
        sim.drain(max_rounds)
    final, broken = sim.state()
    differences = (
        *broken,
        *_differences(expected.state, final, ordered=ordered),
        *_followed_differences(expected.followed, followed),
    )
    return Simulation(
        seed=seed,
        seeded=seeded,
        inputs=items,
        outcomes=outcomes,
        schedule=plan,
        trace=tuple(trace),
        final=final,
        expected=expected.state,
        differences=differences,
        failures=(*problems, *_check_invariants(invariants, final)),
        counts=dict(sim.faults.counts),
        placement=sim.placement,
        followed_up=tuple(followed),
        impure=expected.impure,
        expect_stops=expect_stops,
    )


def _part_end(plan: Sequence[Step], start: int) -> int:
    """Where the part of ``plan`` from ``start`` ends: its next Quiesce, or the plan's end."""
    return next((i for i in range(start, len(plan)) if isinstance(plan[i], Quiesce)), len(plan))


def _follow_up(
    sim: _Simulator, follow_up: FollowUp, step: int | None, problems: list[str]
) -> FollowedUp:
    """Call ``follow_up`` on the quiet system and execute the inputs it gives."""
    name = _label(follow_up)
    state, _ = sim.state()
    try:
        items = tuple(Input.of(item) for item in follow_up(state))
    except Exception as error:
        problems.append(f"follow-up {name} raised {type(error).__name__}: {error}")
        items = ()
    outcomes = tuple(_execute(sim.readers[item.app], sim.system, item) for item in items)
    return FollowedUp(name, step, items, outcomes)


def _followed_differences(
    expected: Sequence[tuple[Input, ...]], followed: Sequence[FollowedUp]
) -> list[str]:
    """Each follow-up that gave other inputs than in the fault-free run."""
    found = []
    for want, done in zip(expected, followed, strict=True):
        if want != done.inputs:
            found.append(
                f"follow-up {done.name} gave other inputs than in the fault-free run:\n"
                f"      fault-free: {'; '.join(i.describe() for i in want) or '(none)'}\n"
                f"      simulated:  {'; '.join(i.describe() for i in done.inputs) or '(none)'}"
            )
    return found


class _Failed(AssertionError):
    """A simulated run that failed, carrying its result."""

    def __init__(self, result: Simulation) -> None:
        super().__init__(result.report())
        self.result = result


def check_system(
    system: System,
    inputs: st.SearchStrategy[Sequence[Input | Sequence[Any]]],
    invariants: Sequence[Invariant] = (),
    *,
    faults: bool | Collection[str] = True,
    settings: hypothesis.settings | None = None,
    max_steps: int = 20,
    ordered: bool = True,
    seed: int | None = None,
    application: ApplicationFactory = Application,
    options: Mapping[str, Any] | None = None,
    databases: Databases = None,
    follow_ups: Sequence[FollowUp] = (),
    expect_stops: bool = False,
    rare: Mapping[Any, str] | None = None,
) -> Counter[str]:
    """Simulate ``system`` on generated inputs and schedules; raise on the first failure.

    ``inputs`` is a Hypothesis strategy of input lists (:class:`Input`s or
    ``(app, aggregate, stream, command, args)`` tuples); schedules of at
    most ``max_steps`` steps come from :func:`schedules` with ``faults``.
    Each run must end with the same streams and effects as the fault-free
    run, and every invariant must hold (see :func:`simulate`, which also
    describes ``databases`` and ``follow_ups``).  A failure is
    shrunk by Hypothesis to few inputs and steps and raised as an
    ``AssertionError`` whose message lists the inputs, the steps and what
    differed.  A run in which a follower stops on a policy error fails too,
    unless ``expect_stops`` (see :func:`simulate`).  Returns how often each
    fault struck over all the runs, and how many ``runs`` there were, as a
    :class:`collections.Counter`.

    A check that exercised too little fails too, with an ``AssertionError``
    that says what and why: when no input of any run stored an event (each
    was refused, or decided no events), when a command given in the inputs
    was never accepted (refused every time: the message gives the reason
    most often met), or when the system has policies and none of them led
    to an event in any run.  The strategy of ``inputs`` then never reached
    what the check is for.  A command refused on purpose is named in
    ``rare``, by name (or, if no aggregate offers it, by its function), with
    why: ``rare={"cancel": "no booking is ever made"}``.

    ``settings`` defaults to the current Hypothesis profile without a
    deadline; one failure is reported and the explain phase is skipped.
    ``seed`` fixes Hypothesis's search, so two calls try the same runs.
    """
    __tracebackhide__ = True
    refuse_partitions(system)
    totals: Counter[str] = Counter()
    where = placement(system, databases)
    plans = schedules(
        system, faults=faults, max_steps=max_steps, databases=set(where.values()),
        follow_ups=len(follow_ups),
    )
    app_options = dict(options or {})
    coverage = Coverage(system, rare)  # what the runs exercised
    # shrinking tries many schedules on the same inputs: their fault-free run is one
    references: dict[tuple[Input, ...], Reference] = {}

    def reference(items: tuple[Input, ...]) -> Reference:
        try:
            found = references.get(items)
        except TypeError:  # an argument that cannot be hashed: no memo
            return _reference(system, items, 0, app_options, MAX_ROUNDS, follow_ups)
        if found is None:
            if len(references) >= 256:
                references.clear()
            found = references[items] = _reference(
                system, items, 0, app_options, MAX_ROUNDS, follow_ups
            )
        return found

    def simulated(inputs: Sequence[Input | Sequence[Any]], schedule: list[Step]) -> None:
        __tracebackhide__ = True
        items = tuple(Input.of(item) for item in inputs)
        result = _simulate(
            system, items, tuple(schedule), reference(items), seed=0, seeded=False,
            invariants=invariants, ordered=ordered, application=application,
            options=app_options, max_rounds=MAX_ROUNDS, databases=databases,
            follow_ups=follow_ups, expect_stops=expect_stops,
        )
        if not result.ok:
            raise _Failed(result)
        totals.update(result.counts)
        totals["runs"] += 1
        coverage.add(result)

    # Hypothesis keys its example database by the test function, the same one for
    # every system: tell systems apart (as its own state machines do), by stable names
    key = (
        tuple(a.name for a in system.apps), system.edges, sorted(_fault_set(faults)),
        sorted(where.items()), len(follow_ups),
    )
    simulated._hypothesis_internal_add_digest = repr(key).encode()  # type: ignore[attr-defined]
    chosen = settings if settings is not None else hypothesis.settings(deadline=None)
    phases = [phase for phase in chosen.phases if phase is not Phase.explain]
    test = hypothesis.given(inputs, plans)(simulated)
    test = hypothesis.settings(chosen, report_multiple_bugs=False, phases=phases)(test)
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    try:
        test()
    except _Failed as failure:
        # a plain AssertionError: the report says it all, the private class would not
        error = AssertionError(str(failure))
        error.__notes__ = list(getattr(failure, "__notes__", []))
        raise error from None
    too_little = coverage.failure()
    if too_little is not None:
        raise AssertionError(too_little)
    return totals
