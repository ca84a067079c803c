"""Whole-system simulation: run a System in memory under a scheduler that injects faults.

:func:`simulate` runs a :class:`fes.System` on an in-memory database with an
injected clock and id factory.  The inputs — commands on the system's
applications — are executed first, in order; then a *schedule*, a list of
steps, says which follower or view runs next, how many notifications its
batch may hold, and which fault strikes it:

- :class:`Run` — a plain step;
- :class:`Crash` — the process crashes after processing a batch and before
  recording it: the commit is dropped and the application restarts from its
  tracked position;
- :class:`Redeliver` — the batch recorded last is delivered again (the
  follower reads a stale tracking position): tracking must refuse it;
- :class:`Conflict` — another unit (another instance, when it is the same
  one) commits between this batch's load and its commit;
- :class:`Hold` — a slow leader: events it records from now on stay
  invisible to every reader for some steps.

After the schedule every follower and view runs until nothing is left (the
system is *quiet*).  The result is then compared with a fault-free run of
the same inputs by :class:`fes.edge.SyncRunner`: each application's streams
must hold the same events, in the same order, and each upstream event must
have caused the same effects — positions and timestamps may differ, as they
legitimately do between interleavings.  Each view stored must equal the
view rebuilt from its log, and the user's invariants (functions of a
read-only :class:`SystemState`) must hold.

The same seed gives the same run: the schedule (when not given) comes from
a seeded generator, timestamps from a clock that ticks one millisecond per
reading, ids from a counter.  :func:`check_system` lets Hypothesis generate
the inputs and the schedule, shrinks a failure to a short one, and raises an
``AssertionError`` that lists the inputs, the steps and what differed.

Requires Hypothesis (``pip install fes-events[testing]``).
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import hypothesis
from attrs import evolve, field, frozen
from hypothesis import Phase
from hypothesis import strategies as st

from fes.aggregates import Aggregate, Command
from fes.edge._application import Application
from fes.edge._follower import DEFAULT_BATCH_SIZE, Follower
from fes.edge._projections import Projection
from fes.edge._runners import SyncRunner
from fes.edge._skips import PolicySkipped
from fes.edge.stores._base import NewEvent, Resealed, StoredEvent, StoredSnapshot, Tracking
from fes.edge.stores._memory import MemoryDatabase, MemoryStore
from fes.errors import (
    CommandError,
    ConcurrencyError,
    ConfigurationError,
    DuplicateTracking,
    PolicyError,
    Rejected,
)
from fes.events import Recorded
from fes.system import System

__all__ = [
    "FAULTS",
    "Conflict",
    "Crash",
    "Hold",
    "Input",
    "Invariant",
    "Redeliver",
    "Run",
    "Simulation",
    "Step",
    "SystemState",
    "check_system",
    "schedules",
    "simulate",
    "units",
]

#: The faults a scheduler may inject, by name.
FAULTS: frozenset[str] = frozenset({"crash", "redeliver", "conflict", "slow"})

#: An invariant: ``state -> bool`` (False fails), or a function that raises AssertionError.
Invariant = Callable[["SystemState"], object]

#: Rounds of stepping every unit, at most, before a run counts as never quiet.
MAX_ROUNDS = 10_000

_START = datetime(2000, 1, 1, tzinfo=UTC)
_SHOWN_DIFFERENCES = 12  # a report lists this many differences; the rest are counted


# --- inputs --------------------------------------------------------------------------


def _args(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


def _name_of(value: object) -> str:
    return str(getattr(value, "name", None) or value)


def _command_label(command: object) -> str:
    return command if isinstance(command, str) else str(getattr(command, "__name__", command))


@frozen
class Input:
    """A command to execute on a stream of one of the system's applications.

    ``aggregate`` is an aggregate of ``app`` or its name; ``command`` a
    command function or the name under which the aggregate lists it.
    """

    app: str
    aggregate: str = field(converter=_name_of)
    stream: str
    command: Command | str
    args: tuple[Any, ...] = field(default=(), converter=_args)

    @classmethod
    def of(cls, value: Input | Sequence[Any]) -> Input:
        """An input from an :class:`Input` or ``(app, aggregate, stream, command, args)``."""
        if isinstance(value, Input):
            return value
        return cls(*value)

    def describe(self) -> str:
        """The input as one line: ``app/stream: command(args)``."""
        args = ", ".join(map(repr, self.args))
        return f"{self.app}/{self.stream}: {_command_label(self.command)}({args})"


# --- schedules -----------------------------------------------------------------------


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


#: One step of a schedule.
Step = Run | Crash | Redeliver | Conflict | Hold


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
) -> st.SearchStrategy[list[Step]]:
    """A Hypothesis strategy of schedules for ``system``: lists of steps.

    ``faults`` is True (all of :data:`FAULTS`), False (plain steps only) or
    the names of the faults to inject.  Steps shrink towards fewer, plain
    steps on the first units with batches of one.
    """
    chosen = _fault_set(faults)
    labels = units(system)
    if not labels:
        return st.just([])
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
    return st.lists(st.one_of(kinds), max_size=max_steps)


def _random_schedule(
    system: System, seed: int, faults: frozenset[str], length: int
) -> tuple[Step, ...]:
    """A schedule drawn from a generator seeded with ``seed``: the same seed, the same list."""
    labels = units(system)
    if not labels:
        return ()
    chance = random.Random(seed)
    leaders = _leaders(system)
    kinds = ["run"] * 3 + sorted(faults)
    steps: list[Step] = []
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
        else:
            steps.append(Run(unit, batch))
    return tuple(steps)


# --- the final state -----------------------------------------------------------------


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@frozen
class SystemState:
    """What a system's stores hold once it is quiet, read-only, for invariants and reports.

    ``logs`` holds each application's recorded events in log order,
    ``views`` each application's stored view states by view name, and
    ``errors`` why each stopped follower stopped.
    """

    system: System
    logs: Mapping[str, tuple[Recorded[Any], ...]] = field(converter=_frozen_map)
    views: Mapping[str, Mapping[str, Any]] = field(converter=_frozen_map)
    errors: Mapping[str, str] = field(converter=_frozen_map)

    def log(self, app: str) -> tuple[Recorded[Any], ...]:
        """Application ``app``'s recorded events, in log order."""
        self.system.app(app)  # names the known applications if there is no such one
        return self.logs.get(app, ())

    def streams(self, app: str, aggregate: Aggregate[Any] | str | None = None) -> list[str]:
        """The streams of ``app`` (of ``aggregate`` only, if given), sorted."""
        topics: Collection[str] | None = None
        if aggregate is not None:
            topics = self.system.app(app).aggregate(_name_of(aggregate)).topics()
        return sorted(
            {r.stream for r in self.log(app) if topics is None or r.topic in topics}
        )

    def events(self, app: str, stream: str) -> list[Any]:
        """The events of one stream of ``app``, in version order."""
        return [r.event for r in self.log(app) if r.stream == stream]

    def get(self, app: str, aggregate: Aggregate[Any] | str, stream: str) -> Any:
        """The state of one stream: its events folded by ``aggregate``."""
        chosen = self.system.app(app).aggregate(_name_of(aggregate))
        return chosen.fold(self.events(app, stream))

    def states(self, app: str, aggregate: Aggregate[Any] | str) -> dict[str, Any]:
        """The state of every stream of ``aggregate`` in ``app``, by stream."""
        return {s: self.get(app, aggregate, s) for s in self.streams(app, aggregate)}

    def view(self, app: str, name: str) -> Any:
        """The stored state of view ``name`` of ``app``."""
        try:
            return self.views[app][name]
        except KeyError:
            known = ", ".join(f"{a}/{v}" for a, vs in self.views.items() for v in vs) or "none"
            raise ConfigurationError(
                f"the system keeps no view {name!r} of {app!r}; it keeps {known}"
            ) from None


def _comparable(item: Any) -> Any:
    # a skip names the upstream position and the attempts made, which differ between
    # interleavings and restarts; what was skipped and why does not
    if isinstance(item, PolicySkipped):
        return evolve(item, position=0, attempts=0)
    return item


def _contents(state: SystemState, ordered: bool) -> dict[str, dict[str, tuple[Any, ...]]]:
    """Per application, per stream, its events (sorted by their repr unless ``ordered``)."""
    found: dict[str, dict[str, tuple[Any, ...]]] = {}
    for app in state.system.apps:
        streams: dict[str, list[Any]] = {}
        for recorded in state.log(app.name):
            streams.setdefault(recorded.stream, []).append(_comparable(recorded.event))
        found[app.name] = {
            stream: tuple(events if ordered else sorted(events, key=repr))
            for stream, events in streams.items()
        }
    return found


def _effects(
    state: SystemState, ordered: bool
) -> dict[str, dict[str, tuple[tuple[str, Any], ...]]]:
    """Per follower, per upstream event (its causation id), the (stream, event) it caused."""
    found: dict[str, dict[str, tuple[tuple[str, Any], ...]]] = {}
    for app in state.system.followers_all:
        caused: dict[str, list[tuple[str, Any]]] = {}
        for recorded in state.log(app.name):
            cause = recorded.metadata.causation_id
            if cause is not None:
                caused.setdefault(cause, []).append(
                    (recorded.stream, _comparable(recorded.event))
                )
        # by stream, keeping each stream's order (unless unordered): the order of the
        # streams in a commit depends on the other causes that shared its batch
        key: Callable[[tuple[str, Any]], Any] = (
            (lambda pair: pair[0]) if ordered else (lambda pair: (pair[0], repr(pair[1])))
        )
        found[app.name] = {c: tuple(sorted(pairs, key=key)) for c, pairs in caused.items()}
    return found


def _shown(events: Sequence[Any], limit: int = 6, *, show: Callable[[Any], str] = repr) -> str:
    if not events:
        return "(none)"
    shown = "; ".join(map(show, events[:limit]))
    return shown + (f"; … ({len(events) - limit} more)" if len(events) > limit else "")


def _in_stream(pair: tuple[str, Any]) -> str:
    return f"{pair[1]!r} in {pair[0]}"


def _differences(
    expected: SystemState, final: SystemState, *, ordered: bool
) -> list[str]:
    """What the simulated run holds that the fault-free run does not, as report lines."""
    found: list[str] = []
    want, got = _contents(expected, ordered), _contents(final, ordered)
    for app in expected.system.apps:
        streams_want, streams_got = want[app.name], got[app.name]
        for stream in sorted(set(streams_want) | set(streams_got)):
            a, b = streams_want.get(stream, ()), streams_got.get(stream, ())
            if a == b:
                continue
            first = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            found.append(
                f"{app.name}/{stream}: {len(b)} events where the fault-free run has {len(a)}; "
                f"they differ from event {first + 1}:\n"
                f"      fault-free: {_shown(a[first:])}\n"
                f"      simulated:  {_shown(b[first:])}"
            )
    want_effects, got_effects = _effects(expected, ordered), _effects(final, ordered)
    for app in expected.system.followers_all:
        a_causes, b_causes = want_effects[app.name], got_effects[app.name]
        for cause in sorted(set(a_causes) | set(b_causes)):
            a, b = a_causes.get(cause, ()), b_causes.get(cause, ())
            if a != b:
                found.append(
                    f"{app.name}: the effects of {cause} differ:\n"
                    f"      fault-free: {_shown(a, show=_in_stream)}\n"
                    f"      simulated:  {_shown(b, show=_in_stream)}"
                )
    if dict(expected.errors) != dict(final.errors):
        found.append(
            f"stopped followers differ: fault-free {dict(expected.errors) or 'none'}, "
            f"simulated {dict(final.errors) or 'none'}"
        )
    return found


def _error_text(error: PolicyError) -> str:
    # the upstream position may differ between interleavings; the leader and the error not
    return f"on {error.leader}: {type(error.error).__name__}: {error.error}"


# --- the simulated database: faults injected where a process meets its store -----------


class _Crashed(BaseException):
    """The simulated process died: what it had not committed is lost.

    A BaseException, so that no ``except Exception`` of the code under test
    can mistake the death of its process for an error it handles.
    """


class _Faults:
    """What the scheduler has armed for the step in hand, and what it saw happen."""

    def __init__(self) -> None:
        self.now = 0
        self.crash: str | None = None  # the application whose next recording write is lost
        self.rival: tuple[str, Callable[[], None]] | None = None  # runs before that write
        self.stale: dict[tuple[str, str], int] = {}  # (app, leader) -> position, read once
        self.stale_views: dict[tuple[str, str], tuple[bytes, int] | None] = {}
        self.horizons: dict[str, tuple[int, int]] = {}  # app -> (visible up to, until step)
        self.recorded: dict[tuple[str, str], int] = {}  # (app, leader) -> last previous
        self.saved_before: dict[tuple[str, str], tuple[bytes, int] | None] = {}
        self.counts: Counter[str] = Counter()

    def visible(self, app: str) -> int | None:
        held = self.horizons.get(app)
        if held is None:
            return None
        if self.now > held[1]:
            del self.horizons[app]
            return None
        return held[0]

    def disarm(self) -> None:
        self.crash = None
        self.rival = None
        self.stale.clear()
        self.stale_views.clear()


class _Store:
    """One application's memory store, seen through the faults armed for the step in hand."""

    def __init__(self, inner: MemoryStore, faults: _Faults) -> None:
        self._inner = inner
        self._faults = faults

    @property
    def app(self) -> str:
        return self._inner.app

    def _before_recording(self) -> None:
        faults = self._faults
        rival = faults.rival
        if rival is not None and rival[0] == self.app:
            faults.rival = None
            faults.counts["rivals"] += 1
            rival[1]()
        if faults.crash == self.app:
            faults.crash = None
            faults.counts["crashes"] += 1
            raise _Crashed(self.app)

    def _refusals(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except DuplicateTracking:
            self._faults.counts["duplicates refused"] += 1
            raise
        except ConcurrencyError:
            self._faults.counts["conflicts refused"] += 1
            raise

    def append(
        self, events: Sequence[NewEvent], *, tracking: Tracking | None = None
    ) -> list[int]:
        if tracking is not None:
            self._before_recording()
        positions: list[int] = self._refusals(
            lambda: self._inner.append(events, tracking=tracking)
        )
        if tracking is not None:
            self._faults.recorded[(self.app, tracking.leader)] = tracking.previous
        return positions

    def read_stream(
        self,
        stream: str,
        *,
        from_version: int | None = None,
        to_version: int | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[StoredEvent]:
        return self._inner.read_stream(
            stream, from_version=from_version, to_version=to_version, limit=limit,
            descending=descending,
        )

    def read_payloads(
        self, stream: str, *, from_version: int | None = None, to_version: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        return self._inner.read_payloads(
            stream, from_version=from_version, to_version=to_version
        )

    def reseal(self, rows: Sequence[Resealed]) -> None:
        self._inner.reseal(rows)

    def stream_version(self, stream: str) -> int:
        return self._inner.stream_version(stream)

    def stream_versions(self, streams: Collection[str]) -> dict[str, int]:
        return self._inner.stream_versions(streams)

    def read_log(
        self,
        after: int = 0,
        *,
        limit: int | None = None,
        topics: Collection[str] | None = None,
        to: int | None = None,
    ) -> list[StoredEvent]:
        horizon = self._faults.visible(self.app)
        if horizon is not None:
            to = horizon if to is None else min(to, horizon)
        return self._inner.read_log(after, limit=limit, topics=topics, to=to)

    def last_position(self) -> int:
        horizon = self._faults.visible(self.app)
        last = self._inner.last_position()
        return last if horizon is None else min(last, horizon)

    def wait(self, after: int, timeout: float) -> bool:
        return self.last_position() > after

    def save_snapshot(self, snapshot: StoredSnapshot) -> None:
        self._inner.save_snapshot(snapshot)

    def load_snapshot(
        self, stream: str, *, to_version: int | None = None
    ) -> StoredSnapshot | None:
        return self._inner.load_snapshot(stream, to_version=to_version)

    def last_tracked(self, leader: str) -> int:
        stale = self._faults.stale.pop((self.app, leader), None)
        if stale is not None:
            self._faults.counts["redeliveries"] += 1
            return stale
        return self._inner.last_tracked(leader)

    def tracked(self) -> dict[str, int]:
        return self._inner.tracked()

    def save_view(self, name: str, payload: bytes, tracking: Tracking) -> None:
        self._before_recording()
        before = self._inner.load_view(name)
        self._refusals(lambda: self._inner.save_view(name, payload, tracking))
        self._faults.saved_before[(self.app, name)] = before

    def load_view(self, name: str) -> tuple[bytes, int] | None:
        key = (self.app, name)
        if key in self._faults.stale_views:
            self._faults.counts["redeliveries"] += 1
            return self._faults.stale_views.pop(key)
        return self._inner.load_view(name)


class _Database:
    """A memory database whose stores are seen through the scheduler's faults."""

    def __init__(self, faults: _Faults) -> None:
        self.inner = MemoryDatabase()
        self._faults = faults
        self._stores: dict[str, _Store] = {}

    @property
    def url(self) -> str:
        return "memory://"

    def store(self, app: str) -> _Store:
        found = self._stores.get(app)
        if found is None:
            found = self._stores[app] = _Store(self.inner.store(app), self._faults)
        return found

    def apps(self) -> list[str]:
        return self.inner.apps()

    def close(self) -> None:
        self.inner.close()


# --- the run -------------------------------------------------------------------------


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


def _execute(application: Application, system: System, item: Input) -> str:
    aggregate = system.app(item.app).aggregate(item.aggregate)
    command = item.command
    if isinstance(command, str):
        try:
            command = aggregate.commands[command]
        except KeyError:
            raise ConfigurationError(
                f"aggregate {aggregate.name!r} has no command {command!r}; it has "
                f"{', '.join(map(repr, aggregate.commands)) or 'none'}"
            ) from None
    try:
        recorded = application.execute(aggregate, item.stream, command, *item.args)
    except (Rejected, CommandError) as refusal:
        return f"refused ({type(refusal).__name__}: {refusal})"
    return _shown([r.event for r in recorded]) if recorded else "(no events)"


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


class _Simulator:
    """Runs a schedule on one system, one step at a time, with the faults it names."""

    def __init__(
        self,
        system: System,
        *,
        seed: int,
        application: ApplicationFactory,
        options: Mapping[str, Any],
    ) -> None:
        partitioned = [a.name for a in system.apps if a.partitions > 1]
        if partitioned:
            raise ConfigurationError(
                f"the simulator runs each application as one follower, and "
                f"{', '.join(repr(n) for n in partitioned)} has partitions; simulate the "
                "system with partitions=1 (attrs.evolve(app, partitions=1))"
            )
        self.system = system
        self.faults = _Faults()
        self.database = _Database(self.faults)
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
        return self._make(app, store=self.database, **self._options)

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

    def perform(self, index: int, step: Step) -> str:
        """Take one step; what it did, in a few words."""
        faults = self.faults
        faults.now = index
        self.time += 1.0
        try:
            if isinstance(step, Hold):
                return f"held at position {self._hold(step, index)}"
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

    def _hold(self, step: Hold, index: int) -> int:
        self.system.app(step.leader)  # names the known applications if it is unknown
        horizon = self.database.inner.store(step.leader).last_position()
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

    def drain(self, max_rounds: int) -> None:
        """Step every unit, in a fixed order and without faults, until nothing is left."""
        self.faults.horizons.clear()
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
            rows = self.database.inner.store(app.name).read_log(0)
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


def _reference(
    system: System,
    inputs: Sequence[Input],
    seed: int,
    options: Mapping[str, Any],
    max_rounds: int,
) -> SystemState:
    """The fault-free run: the inputs, then a :class:`SyncRunner` until quiet."""
    with SyncRunner(system, "memory://", clock=_clock(), ids=_ids(seed), **options) as runner:
        for item in inputs:
            _execute(runner.app(item.app), system, item)
        runner.run_until_quiet(check=False, max_rounds=max_rounds)
        if not runner.is_quiet() and not runner.errors:
            raise AssertionError(
                f"the fault-free run of the system was not quiet after {max_rounds} rounds: "
                "do its policies keep making work for each other?"
            )
        logs = {
            app.name: tuple(runner.app(app.name).log()) for app in system.apps
        }
        views = {
            app.name: {v.name: runner.view(app.name, v.name).state() for v in app.views}
            for app in system.apps
        }
        errors = {name: _error_text(error) for name, error in sorted(runner.errors.items())}
    return SystemState(system, logs, views, errors)


# --- results -------------------------------------------------------------------------


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
    ``holds``).
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

    @property
    def ok(self) -> bool:
        """Whether the run matched the fault-free run and every invariant held."""
        return not self.differences and not self.failures

    def report(self) -> str:
        """The run as text: verdict, inputs, schedule steps, then what differed."""
        if self.ok:
            head = "the simulated run matches the fault-free run and every invariant holds"
        else:
            problems = []
            if self.differences:
                problems.append("differs from the fault-free run")
            if self.failures:
                count = len(self.failures)
                problems.append(f"breaks {count} invariant{'' if count == 1 else 's'}")
            head = f"the simulated run {' and '.join(problems)}"
        lines = [head]
        lines.append(f"inputs ({len(self.inputs)}):")
        lines.extend(
            f"  {i}. {item.describe()} -> {outcome}"
            for i, (item, outcome) in enumerate(zip(self.inputs, self.outcomes, strict=True), 1)
        )
        count = len(self.schedule)
        drawn = f", drawn from seed {self.seed}" if self.seeded else ""
        lines.append(f"schedule ({count} step{'' if count == 1 else 's'}{drawn}):")
        lines.extend(
            f"  {i}. {step.describe()} -> {did}"
            for i, (step, did) in enumerate(zip(self.schedule, self.trace, strict=True), 1)
        )
        lines.append("  then every follower and view ran until nothing was left to do")
        if self.differences:
            lines.append("differences:")
            lines.extend(f"  - {d}" for d in self.differences[:_SHOWN_DIFFERENCES])
            hidden = len(self.differences) - _SHOWN_DIFFERENCES
            if hidden > 0:
                lines.append(f"  … and {hidden} more (see .differences)")
        if self.failures:
            lines.append("invariants:")
            lines.extend(f"  - {f}" for f in self.failures)
        return "\n".join(lines)

    def check(self) -> None:
        """Raise an AssertionError with :meth:`report` unless the run is :attr:`ok`."""
        if not self.ok:
            raise AssertionError(self.report())


def _label(func: object) -> str:
    return str(getattr(func, "__name__", None) or getattr(func, "__qualname__", None) or func)


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_invariants(invariants: Sequence[Invariant], state: SystemState) -> list[str]:
    failures = []
    for check in invariants:
        name = _label(check)
        try:
            result = check(state)
        except AssertionError as exc:
            # the first line: pytest's rewritten asserts add the whole state after it
            said = str(exc).partition("\n")[0]
            failures.append(f"{name} failed" + (f": {_cut(said)}" if said else ""))
            continue
        except Exception as exc:
            failures.append(f"{name} raised {type(exc).__name__}: {_cut(str(exc))}")
            continue
        if result is not None and not result:
            failures.append(f"{name} failed")
    return failures


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
) -> Simulation:
    """Run ``system`` on ``inputs`` under a schedule, and compare with the fault-free run.

    Without ``schedule``, one of ``steps`` steps is drawn from a generator
    seeded with ``seed``, injecting ``faults`` (True: all of
    :data:`FAULTS`; False: none; or their names).  ``seed`` also seeds the
    id factory, so the same arguments always give the same run.

    ``ordered=False`` compares each stream's events as a multiset, for
    systems whose streams are written from several leaders in an order that
    legitimately depends on timing.  ``application`` builds each
    :class:`fes.edge.Application` (a subclass, to test a variant of the
    edge); ``options`` go to it and to the fault-free runner
    (``snapshot_every``, ``cache_size``, …).  A run that is not quiet
    after ``max_rounds`` rounds of every unit fails with an AssertionError.

    Returns a :class:`Simulation`; call its ``check()`` to raise on failure.
    """
    items = tuple(Input.of(item) for item in inputs)
    chosen = _fault_set(faults)
    plan = (
        _random_schedule(system, seed, chosen, steps) if schedule is None else tuple(schedule)
    )
    settings = dict(options or {})
    expected = _reference(system, items, seed, settings, max_rounds)
    return _simulate(
        system, items, plan, expected, seed=seed, seeded=schedule is None,
        invariants=invariants, ordered=ordered, application=application, options=settings,
        max_rounds=max_rounds,
    )


def _simulate(
    system: System,
    items: tuple[Input, ...],
    plan: tuple[Step, ...],
    expected: SystemState,
    *,
    seed: int,
    seeded: bool,
    invariants: Sequence[Invariant],
    ordered: bool,
    application: ApplicationFactory,
    options: dict[str, Any],
    max_rounds: int,
) -> Simulation:
    """Run ``plan`` on ``items`` and compare with the fault-free run ``expected``."""
    sim = _Simulator(system, seed=seed, application=application, options=options)
    outcomes = tuple(_execute(sim.readers[item.app], system, item) for item in items)
    trace = tuple(sim.perform(index, step) for index, step in enumerate(plan))
    sim.drain(max_rounds)
    final, broken = sim.state()
    differences = (*broken, *_differences(expected, final, ordered=ordered))
    return Simulation(
        seed=seed,
        seeded=seeded,
        inputs=items,
        outcomes=outcomes,
        schedule=plan,
        trace=trace,
        final=final,
        expected=expected,
        differences=differences,
        failures=tuple(_check_invariants(invariants, final)),
        counts=dict(sim.faults.counts),
    )


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
) -> Counter[str]:
    """Simulate ``system`` on generated inputs and schedules; raise on the first failure.

    ``inputs`` is a Hypothesis strategy of input lists (:class:`Input`s or
    ``(app, aggregate, stream, command, args)`` tuples); schedules of at
    most ``max_steps`` steps come from :func:`schedules` with ``faults``.
    Each run must end with the same streams and effects as the fault-free
    run, and every invariant must hold (see :func:`simulate`).  A failure is
    shrunk by Hypothesis to few inputs and steps and raised as an
    ``AssertionError`` whose message lists the inputs, the steps and what
    differed.  Returns how often each fault struck over all the runs, and
    how many ``runs`` there were, as a :class:`collections.Counter`.

    ``settings`` defaults to the current Hypothesis profile without a
    deadline; one failure is reported and the explain phase is skipped.
    ``seed`` fixes Hypothesis's search, so two calls try the same runs.
    """
    totals: Counter[str] = Counter()
    plans = schedules(system, faults=faults, max_steps=max_steps)
    app_options = dict(options or {})
    # shrinking tries many schedules on the same inputs: their fault-free run is one
    references: dict[tuple[Input, ...], SystemState] = {}

    def reference(items: tuple[Input, ...]) -> SystemState:
        try:
            found = references.get(items)
        except TypeError:  # an argument that cannot be hashed: no memo
            return _reference(system, items, 0, app_options, MAX_ROUNDS)
        if found is None:
            if len(references) >= 256:
                references.clear()
            found = references[items] = _reference(
                system, items, 0, app_options, MAX_ROUNDS
            )
        return found

    def simulated(inputs: Sequence[Input | Sequence[Any]], schedule: list[Step]) -> None:
        items = tuple(Input.of(item) for item in inputs)
        result = _simulate(
            system, items, tuple(schedule), reference(items), seed=0, seeded=False,
            invariants=invariants, ordered=ordered, application=application,
            options=app_options, max_rounds=MAX_ROUNDS,
        )
        if not result.ok:
            raise _Failed(result)
        totals.update(result.counts)
        totals["runs"] += 1

    # Hypothesis keys its example database by the test function, the same one for
    # every system: tell systems apart (as its own state machines do), by stable names
    key = (tuple(a.name for a in system.apps), system.edges, sorted(_fault_set(faults)))
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
    return totals
