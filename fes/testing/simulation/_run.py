"""The run: processes of the system stepped one at a time by a schedule, and the fault-free run."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from attrs import frozen

from fes.errors import ConfigurationError, PolicyError, StoreUnavailable
from fes.events import Recorded
from fes.system import System
from fes.testing._purity import impurity, policy_name
from fes.testing.simulation._edge import (
    DEFAULT_BATCH_SIZE,
    Application,
    Follower,
    MemoryStore,
    Projection,
    SyncRunner,
    is_internal,
)
from fes.testing.simulation._faults import _Crashed, _Database, _Faults
from fes.testing.simulation._inputs import Input, _execute
from fes.testing.simulation._schedule import (
    MAIN,
    Conflict,
    Crash,
    Down,
    Hold,
    Quiesce,
    Redeliver,
    Step,
)
from fes.testing.simulation._state import SystemState

_START = datetime(2000, 1, 1, tzinfo=UTC)


def _error_text(error: PolicyError) -> str:
    # the upstream position may differ between interleavings; the leader and the error not
    return f"on {error.leader}: {type(error.error).__name__}: {error.error}"


def _clock() -> Callable[[], datetime]:
    """A clock that ticks one millisecond each time it is read."""
    ticks = itertools.count()
    return lambda: _START + timedelta(milliseconds=next(ticks))


def _ids(seed: int) -> Callable[[], uuid.UUID]:
    """Ids from a counter, distinct per seed: the same seed gives the same ids."""
    counter = itertools.count(1)
    high = (seed & 0xFFFF_FFFF_FFFF_FFFF) << 64
    return lambda: uuid.UUID(int=high | next(counter))


ApplicationFactory = Callable[..., Application]

#: Where each application's store lives: a mapping of application names (or
#: ``"*"``, for every application not named) to database names, or ``"each"``.
Databases = Mapping[str, str] | str | None


def placement(system: System, databases: Databases) -> dict[str, str]:
    """Each application's database name, from ``databases`` (see :func:`simulate`)."""
    names = [a.name for a in system.apps]
    if databases is None:
        return dict.fromkeys(names, MAIN)
    if databases == "each":
        return {name: name for name in names}
    if isinstance(databases, str) or not isinstance(databases, Mapping):
        raise ConfigurationError(
            "databases must map application names (or '*') to database names, or be "
            f"'each', not {databases!r}"
        )
    unknown = sorted(set(databases) - {*names, "*"})
    if unknown:
        raise ConfigurationError(
            f"databases names application {unknown[0]!r}; this system's applications are "
            f"{', '.join(map(repr, names))} (and '*' for the rest)"
        )
    for value in databases.values():
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"a database name is a non-empty string, not {value!r}")
    rest = databases.get("*", MAIN)
    return {name: databases.get(name, rest) for name in names}


class _Process:
    """One running instance of an application: its follower and its views' projections."""

    def __init__(self, sim: _Simulator, name: str) -> None:
        app = sim.system.app(name)
        # building an Application builds its codec, the costliest part of a run; one
        # without a cache holds no state of its own, so a restart may keep it
        self.application = sim.application(app) if sim.caches else sim.readers[name]
        leaders = sim.system.leaders(name)
        self.follower: Follower | None = None
        if leaders:
            self.follower = Follower(
                self.application,
                {leader: sim.readers[leader] for leader in leaders},
                batch_size=DEFAULT_BATCH_SIZE,
                monotonic=sim.monotonic,
            )
        self.projections = {v.name: Projection(self.application, v) for v in app.views}

    def step(self, target: str, *, view: bool, batch: int) -> int:
        if view:
            projection = self.projections[target]
            projection.batch_size = batch
            return projection.step()
        assert self.follower is not None
        self.follower.batch_size = batch
        return self.follower.step(target)


def refuse_partitions(system: System) -> None:
    """Refuse a system with a partitioned application: the simulator runs one follower each.

    Raised before anything is drawn, by :func:`check_system` as by
    :func:`simulate`: inside Hypothesis it would read as a failing example.
    """
    partitioned = [a.name for a in system.apps if a.partitions > 1]
    if partitioned:
        raise ConfigurationError(
            f"the simulator runs each application as one follower, and "
            f"{', '.join(repr(n) for n in partitioned)} has partitions; simulate the "
            "system with partitions=1: fes.System([attrs.evolve(app, partitions=1) for app "
            "in system.apps], pipes=system.pipes)"
        )


class _Simulator:
    """Runs a schedule on one system, one step at a time, with the faults it names."""

    def __init__(
        self,
        system: System,
        *,
        seed: int,
        application: ApplicationFactory,
        options: Mapping[str, Any],
        databases: Databases = None,
    ) -> None:
        refuse_partitions(system)
        self.system = system
        self.faults = _Faults()
        self.placement = placement(system, databases)
        self.databases = {
            name: _Database(self.faults, name) for name in sorted(set(self.placement.values()))
        }
        self.time = 0.0
        clock, ids = _clock(), _ids(seed)
        self._make = application
        self._options = dict(options, clock=clock, ids=ids)
        self.readers = {a.name: self.application(a) for a in system.apps}
        self.caches = bool(options.get("cache_size"))
        self.units: dict[str, tuple[str, str, bool]] = {}
        for leader, follower in system.edges:
            self.units[f"{follower}<-{leader}"] = (follower, leader, False)
        for app in system.apps:
            for view in app.views:
                self.units[f"{app.name}/{view.name}"] = (app.name, view.name, True)
        self.processes: dict[str, _Process] = {}

    def application(self, app: Any) -> Application:
        database = self.databases[self.placement[app.name]]
        return self._make(app, store=database, **self._options)

    def inner(self, app: str) -> MemoryStore:
        """Application ``app``'s memory store itself, seen through no fault."""
        return self.databases[self.placement[app]].inner.store(app)

    def monotonic(self) -> float:
        return self.time

    def process(self, name: str) -> _Process:
        found = self.processes.get(name)
        if found is None:
            found = self.processes[name] = _Process(self, name)
        return found

    def unit(self, label: str) -> tuple[str, str, bool]:
        try:
            return self.units[label]
        except KeyError:
            raise ConfigurationError(
                f"the schedule names unit {label!r}; this system's units are "
                f"{', '.join(map(repr, self.units)) or 'none'}"
            ) from None

    def run(self, label: str, batch: int, process: _Process | None = None) -> int:
        app, target, view = self.unit(label)
        return (process or self.process(app)).step(target, view=view, batch=batch)

    def crash(self, app: str) -> None:
        self.processes.pop(app, None)  # restarted, from its store, on its next step

    def perform(self, index: int, step: Step, end: int | None = None) -> str:
        """Take one step; what it did, in a few words.

        ``end`` is the index of the step that ends this step's part of the
        schedule (a :class:`Quiesce`, or the schedule's end), where every
        outage and hold ends: the few words name no step past it.
        """
        faults = self.faults
        faults.now = index
        self.time += 1.0
        try:
            if isinstance(step, Hold):
                return f"held at position {self._hold(step, index)}"
            if isinstance(step, Down):
                return self._down(step, index, end)
            if isinstance(step, Quiesce):
                raise ConfigurationError("a Quiesce step is run by the simulation, not perform")
            app, target, view = self.unit(step.unit)
            rival_did: list[int] = []
            if isinstance(step, Crash):
                faults.crash = app
            elif isinstance(step, Redeliver):
                self._arm_redelivery(app, target, view)
            elif isinstance(step, Conflict):
                rival = _Process(self, self.unit(step.rival)[0])  # gone after its step
                faults.rival = (
                    app, lambda: rival_did.append(self.run(step.rival, step.batch, rival))
                )
            refused = faults.counts["duplicates refused"] + faults.counts["conflicts refused"]
            try:
                consumed = self.run(step.unit, step.batch)
            except _Crashed:
                self.crash(app)
                return "crashed before recording, restarted"
            except StoreUnavailable as error:
                # as a runner does: the process lives on, and tries again later
                faults.counts["store errors"] += 1
                return f"failed: {error}; tried again later"
            refused = (
                faults.counts["duplicates refused"] + faults.counts["conflicts refused"] - refused
            )
            did = f"processed {consumed}"
            if refused:
                did += f", {refused} stale commit{'' if refused == 1 else 's'} refused"
            if rival_did:
                did += f"; the rival processed {rival_did[0]}"
            return did
        finally:
            faults.disarm()

    def _down(self, step: Down, index: int, end: int | None) -> str:
        if step.database not in self.databases:
            raise ConfigurationError(
                f"the schedule takes down database {step.database!r}; this run's databases "
                f"are {', '.join(map(repr, self.databases))}"
            )
        # down for the next ``steps`` steps (this one does nothing else), and at
        # most to the end of this part of the schedule: the run going quiet
        # there brings every database back
        until = max(self.faults.down.get(step.database, -1), index + step.steps)
        cut = end is not None and until >= end
        if end is not None and cut:
            until = end - 1
        apps = ", ".join(a for a, d in self.placement.items() if d == step.database)
        if until == index:  # no step meets it: not counted as an outage
            return f"down for no step: back as the run goes quiet ({apps})"
        self.faults.counts["outages"] += 1
        self.faults.down[step.database] = until
        first, last = index + 2, until + 1  # as the report numbers steps, from 1
        during = f"step {first}" if first == last else f"steps {first}-{last}"
        back = ", then back as the run goes quiet" if cut else ""
        return f"down during {during}{back} ({apps})"

    def _hold(self, step: Hold, index: int) -> int:
        self.system.app(step.leader)  # names the known applications if it is unknown
        horizon = self.inner(step.leader).last_position()
        held = self.faults.horizons.get(step.leader)
        if held is not None and index <= held[1]:
            horizon, until = min(held[0], horizon), max(held[1], index + step.steps)
        else:
            until = index + step.steps
        self.faults.horizons[step.leader] = (horizon, until)
        self.faults.counts["holds"] += 1
        return horizon

    def _arm_redelivery(self, app: str, target: str, view: bool) -> None:
        faults = self.faults
        if view:
            if (app, target) in faults.saved_before:
                faults.stale_views[(app, target)] = faults.saved_before[(app, target)]
        elif (app, target) in faults.recorded:
            faults.stale[(app, target)] = faults.recorded[(app, target)]
            # a follower asks the store for its position only when it does not
            # know it: it must ask, for the store to answer with a stale one
            follower = self.process(app).follower
            if follower is not None:
                follower.forget_position(target)

    def drain(self, max_rounds: int) -> None:
        """Step every unit, in a fixed order and without faults, until nothing is left."""
        self.faults.horizons.clear()
        self.faults.down.clear()
        for _ in range(max_rounds):
            moved = sum(self.run(label, DEFAULT_BATCH_SIZE) for label in self.units)
            if moved:
                continue
            waits = [
                deadline
                for process in self.processes.values()
                if process.follower is not None and process.follower.error is None
                for leader in process.follower.leaders
                if (deadline := process.follower.retry_at(leader)) is not None
            ]
            if not waits:
                return
            self.time = max(self.time, min(waits))
        raise AssertionError(
            f"the simulated system was not quiet after {max_rounds} rounds of every unit: "
            "do its policies keep making work for each other?"
        )

    def state(self) -> tuple[SystemState, list[str]]:
        """The final state, and each stored view that differs from its rebuilt self."""
        logs: dict[str, tuple[Recorded[Any], ...]] = {}
        views: dict[str, dict[str, Any]] = {}
        broken: list[str] = []
        for app in self.system.apps:
            reader = self.readers[app.name]
            rows = self.inner(app.name).read_log(0)
            logs[app.name] = tuple(reader.recorded(r) for r in rows)
            views[app.name] = {}
            for view in app.views:
                projection = Projection(reader, view)
                stored, rebuilt = projection.state(), projection.rebuild()
                views[app.name][view.name] = stored
                if stored != rebuilt:
                    broken.append(
                        f"view {app.name}/{view.name} holds {stored!r}, but rebuilt from "
                        f"its log it is {rebuilt!r}: an event was folded twice or missed"
                    )
        errors = {
            name: _error_text(process.follower.error)
            for name, process in sorted(self.processes.items())
            if process.follower is not None and process.follower.error is not None
        }
        return SystemState(self.system, logs, views, errors), broken


def _runner_state(system: System, runner: SyncRunner) -> SystemState:
    """What a fault-free runner's stores hold now."""
    logs = {app.name: tuple(runner.app(app.name).log(internal=True)) for app in system.apps}
    views = {
        app.name: {v.name: runner.view(app.name, v.name).state() for v in app.views}
        for app in system.apps
    }
    errors = {name: _error_text(error) for name, error in sorted(runner.errors.items())}
    return SystemState(system, logs, views, errors)


#: A follow-up: the inputs to add once the system is quiet, from what its stores hold.
FollowUp = Callable[[SystemState], Iterable[Input | Sequence[Any]]]


@frozen
class Reference:
    """The fault-free run: its final state, the inputs each follow-up gave in it, and
    each policy found not to be pure on an event it was given."""

    state: SystemState
    followed: tuple[tuple[Input, ...], ...] = ()
    impure: tuple[str, ...] = ()


def _impure_policies(system: System, state: SystemState) -> tuple[str, ...]:
    """Each follower's policy called twice on every event of its leaders: where it differs."""
    found: list[str] = []
    for app in system.followers_all:
        policy = app.policy
        if policy is None:
            continue
        name = f"{policy_name(policy)} (of {app.name!r})"
        for leader in system.leaders(app.name):
            for upstream in state.log(leader):
                if is_internal(upstream.topic):
                    continue
                problem = impurity(policy, upstream, name)
                if problem is not None:
                    found.append(problem)
                    break  # one event per policy tells it
    return tuple(found)


def _reference(
    system: System,
    inputs: Sequence[Input],
    seed: int,
    options: Mapping[str, Any],
    max_rounds: int,
    follow_ups: Sequence[FollowUp] = (),
) -> Reference:
    """The fault-free run: the inputs, then a :class:`SyncRunner` until quiet; each follow-up's
    inputs, then the runner until quiet again."""
    followed: list[tuple[Input, ...]] = []
    with SyncRunner(system, "memory://", clock=_clock(), ids=_ids(seed), **options) as runner:
        items: Sequence[Input] = inputs
        for follow_up in (None, *follow_ups):
            if follow_up is not None:
                items = tuple(Input.of(i) for i in follow_up(_runner_state(system, runner)))
                followed.append(items)
            for item in items:
                _execute(runner.app(item.app), system, item)
            runner.run_until_quiet(check=False, max_rounds=max_rounds)
            if not runner.is_quiet() and not runner.errors:
                raise AssertionError(
                    f"the fault-free run of the system was not quiet after {max_rounds} "
                    "rounds: do its policies keep making work for each other?"
                )
        final = _runner_state(system, runner)
    return Reference(final, tuple(followed), _impure_policies(system, final))
