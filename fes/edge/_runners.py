"""Runners: drive a system's followers and views, in this thread or in threads.

Two runners of this module drive followers (:mod:`fes.edge._follower`) and
views (:mod:`fes.edge._projections`):

- :class:`SyncRunner` steps everything in this thread, in a fixed order,
  until nothing is left to do — deterministic, for tests and scripts;
- :class:`ThreadedRunner` gives each (follower, leader) pair and each view a
  thread that sleeps in the leader's ``store.wait``.

:class:`fes.edge.ProcessRunner` runs applications in separate OS processes,
and :func:`fes.edge.run` starts a system and blocks until SIGINT or SIGTERM.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, NamedTuple, Protocol, Self

from fes.errors import (
    ConfigurationError,
    DecodeError,
    FesError,
    FollowerStopped,
    OutcomeUnknown,
    PolicyError,
    StoreUnavailable,
)
from fes.system import System, app_of_unit, tracking_key, unit_names

from ._application import Application, check_count
from ._follower import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_SIZE, Follower, describe
from ._placement import LaterDatabase, Placement, StoreArgument
from ._projections import Projection
from ._settings import prefixed
from ._skips import FollowerHalted, recorded_error, recorded_stops
from .stores._base import Database

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "Lag",
    "Runner",
    "SyncRunner",
    "ThreadedRunner",
    "lags",
]

logger = logging.getLogger("fes.runners")

#: Seconds a waiting worker sleeps at most before it looks at the log again.
DEFAULT_POLL_INTERVAL = 1.0


class Lag(NamedTuple):
    """How far one follower is behind one leader.

    ``tracked`` is the leader's position the follower has processed up to;
    ``last`` the leader's last position when looked at.  As a truth value a
    lag is true while the follower is behind, so ``any(runner.lags().values())``
    asks whether anything is left to process.
    """

    tracked: int
    last: int

    @property
    def behind(self) -> int:
        """How many positions of the leader's log are left to process (0 when caught up)."""
        return max(self.last - self.tracked, 0)

    def __bool__(self) -> bool:
        return self.behind > 0


def lags(
    stores: Database | Mapping[str, Database], system: System
) -> dict[tuple[str, str], Lag]:
    """For each (leader, follower) of ``system``: its :class:`Lag` (tracked, leader's last).

    ``stores`` is the database the whole system lives in, or a mapping from
    each application's name to its database (a runner's
    :attr:`Runner.databases`): the tracked position is read where the
    follower lives, the leader's last position where the leader lives.  A
    partitioned follower appears once per partition, as ``name#i``.
    """
    def database(name: str) -> Database:
        return stores[name] if isinstance(stores, Mapping) else stores

    found: dict[tuple[str, str], Lag] = {}
    last = {app.name: database(app.name).store(app.name).last_position() for app in system.apps}
    for follower in system.followers_all:
        tracked = database(follower.name).store(follower.name).tracked()
        for leader in system.leaders(follower.name):
            for i, unit in enumerate(unit_names(follower)):
                key = tracking_key(leader, i, follower.partitions)
                found[(leader, unit)] = Lag(tracked.get(key, 0), last[leader])
    return found


def _check_readable(application: Application) -> None:
    """Refuse an application whose newest stored event it cannot decode.

    A follower started without the keys its own events are sealed with would
    otherwise fail on its first command that reads them, batch after batch.
    """
    last = application.store.last_position()
    if not last:
        return
    rows = application.store.read_log(max(last - 1, 0), limit=1)
    if not rows:
        return
    try:
        application.recorded(rows[-1])
    except DecodeError as error:
        keys = f"{prefixed(application.name, 'FES_CIPHER_KEYS')} (or FES_CIPHER_KEYS)"
        raise ConfigurationError(
            f"{application.name!r} cannot read its own events ({type(error).__name__}: "
            f"{error}); a runner that writes to it needs the keys and types they were "
            f"written with: check {keys}"
        ) from error


def _chosen(apps: object) -> set[str]:
    """The names a runner's ``apps`` gives: one or more; an empty one is not "all"."""
    if isinstance(apps, str) or not isinstance(apps, Iterable):
        raise ConfigurationError(
            f"apps is a collection of application names, such as ['billing'], not {apps!r}"
        )
    chosen = set(apps)
    if not chosen:
        # a deploy script's unset variable must not run every application here
        raise ConfigurationError(
            "apps names no application: name one or more, or leave apps out (None) to "
            "run them all"
        )
    return chosen


def check_remote(urls: Mapping[str, str], remote: set[str], names: list[str]) -> None:
    """Refuse one HTTP leader's URL placing several applications: it serves one.

    ``--store http://…`` alone places every application there: each would be
    taken for a leader served elsewhere, and the runner would run nothing.
    """
    placed: dict[str, list[str]] = {}
    for name in names:  # in the system's order
        if name in remote:
            placed.setdefault(urls[name], []).append(name)
    for url, shared in placed.items():
        if len(shared) > 1:
            raise ConfigurationError(
                f"{url} is an HTTP leader, which serves one application, yet "
                f"{', '.join(map(repr, shared))} are all placed there: place the one it "
                "serves there (--store APP=URL, or {APP: URL}) and the others in a "
                "store of their own ('*')"
            )


def _seconds(name: str, value: object, *, zero: bool) -> float:
    """A duration in seconds: a real number, above 0 (or at 0, with ``zero``)."""
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (value >= 0 if zero else value > 0)  # False for NaN
    ):
        return float(value)
    least = "0 or more" if zero else "more than 0"
    raise ConfigurationError(f"{name} must be a number of seconds, {least}, not {value!r}")


# --- units of work: what a runner steps and waits on ----------------------------


class _Unit(Protocol):
    """One thing a runner keeps doing: a follower on one leader, or one view."""

    @property
    def label(self) -> str: ...

    @property
    def app(self) -> str: ...

    def step(self) -> int: ...

    def caught_up(self) -> bool: ...

    def wait(self, timeout: float) -> None: ...

    def writing(self) -> bool: ...

    def settle(self, timeout: float) -> None: ...

    def log_fields(self) -> dict[str, Any]: ...

    @property
    def finished(self) -> bool: ...


def _never() -> bool:
    return False


def _at_once(timeout: float) -> None:
    return None


def _in_flight(database: Database) -> tuple[Callable[[], bool], Callable[[float], None]]:
    """Whether a write of this process to ``database`` is in progress, and a wait for its end.

    An SQLite database's writers of one process queue on one lock: a unit
    about to read a log there first lets the write in progress end (see
    ``settle`` in :mod:`fes.edge.stores._sqlite._connections`).  Other
    databases have nothing to wait for here.
    """
    writing = getattr(database, "writing", None)
    settle = getattr(database, "settle", None)
    if callable(writing) and callable(settle):
        return writing, settle
    return _never, _at_once


class _Subscription:
    """A follower following one of its leaders."""

    def __init__(self, follower: Follower, leader: str) -> None:
        self.follower = follower
        self.leader = leader
        self.label = f"{follower.unit}<-{leader}"
        self.app = follower.name
        # a follower committing holding the writer lock takes the writes in
        # progress into its batch then: it need not let them end before reading
        self.writing, self.settle = (
            (_never, _at_once) if leader in follower.holds
            else _in_flight(follower.leaders[leader].database)
        )
        # the leader store's notified and wait_notified, if it has them; looked
        # up on the first step (a leader's store may be opened only on first use)
        self._counts: tuple[Callable[[], int | None], Callable[[int, float], bool]] | None = None
        self._looked = False
        self._seen: int | None = None

    def step(self) -> int:
        # the leader's notifications received so far, counted before the read:
        # a wait after a step that reached the log's end waits for the next one
        # (a store that counts them: PostgreSQL's), without asking the server first
        if not self._looked:
            store = self.follower.leaders[self.leader].store
            notified = getattr(store, "notified", None)
            wait_notified = getattr(store, "wait_notified", None)
            if callable(notified) and callable(wait_notified):
                self._counts = (notified, wait_notified)
            self._looked = True
        self._seen = None if self._counts is None else self._counts[0]()
        return self.follower.step(self.leader)

    def caught_up(self) -> bool:
        # Only over a store that counts notifications (PostgreSQL's), where the
        # empty read it spares is a round trip to the server: elsewhere reading
        # costs no more than the wait's own look, and the runner steps on as
        # before (measured in W4, over SQLite, waiting instead cost more)
        return self._counts is not None and self.follower.caught_up(self.leader)

    def log_fields(self) -> dict[str, Any]:
        return self.follower.log_fields(self.leader)

    def wait(self, timeout: float) -> None:
        deadline = self.follower.retry_at(self.leader)
        if deadline is not None:
            time.sleep(max(min(deadline - time.monotonic(), timeout), 0.0))
            return
        seen, self._seen = self._seen, None
        if seen is not None and self._counts is not None and self.follower.caught_up(
            self.leader
        ):
            # the last read reached the log's end, and whatever was committed
            # since is notified after ``seen``: no need to ask the server first
            # (a timeout, or a lost notification, ends in a step: a look, as a
            # polling wait's)
            self._counts[1](seen, timeout)
            return
        reader = self.follower.leaders[self.leader]
        reader.store.wait(self.follower.positions[self.leader], timeout)

    @property
    def finished(self) -> bool:
        return self.follower.error is not None


class _ViewUnit:
    """A view kept up to date with its application's log."""

    def __init__(self, projection: Projection[Any]) -> None:
        self.projection = projection
        self.label = f"{projection.application.name}/{projection.view.name}"
        self.app = projection.application.name
        self.writing, self.settle = _in_flight(projection.application.database)

    def step(self) -> int:
        return self.projection.step()

    def caught_up(self) -> bool:
        return False  # a view steps until a step finds nothing

    def log_fields(self) -> dict[str, Any]:
        return self.projection.log_fields()

    def wait(self, timeout: float) -> None:
        self.projection.application.store.wait(self.projection.seen, timeout)

    @property
    def finished(self) -> bool:
        return self.projection.error is not None

# --- runners ----------------------------------------------------------------------


class Runner:
    """What every runner shares: the system's applications, each on its database.

    ``store`` is where the applications live: a URL or an open
    :class:`Database` for all of them (an open database is not closed by
    the runner; the default, ``memory://``, suits tests), or a mapping from
    application name to URL or database, where ``"*"`` serves every
    application not named, for a system whose applications own their
    databases::

        {"orders": "postgresql://db-a/orders", "payments": "sqlite:///payments.db",
         "*": "sqlite:///rest.db"}

    None reads the environment as :func:`fes.edge.run` does, application
    by application: ``<APP>_FES_STORE_URL``, then ``FES_STORE_URL``, then
    ``sqlite:///fes.db``.  Each distinct URL is opened once.  A follower
    reads each leader's log from the leader's database (or, for an
    ``https://`` URL, from the service that serves it) and records its new
    events with its tracking position in its own.

    ``apps`` limits which applications' followers and views this runner
    drives (by default, all but leaders served over HTTP, which another
    service runs): the others may run elsewhere, in other processes or on
    other hosts (an empty ``apps`` is refused, not taken for all).  Only
    the stores of those applications and of the leaders they follow are
    opened at the start; another application's, when
    :meth:`app` asks for it.  ``batch_size`` and ``batch_bytes`` bound each follower's
    transactions by count and by stored bytes (see :class:`Follower`).
    ``poll_interval`` bounds, in seconds, each wait of a runner's threads
    before it reads its log again (see :class:`ThreadedRunner`; a
    :class:`SyncRunner` does not use it).  Keyword ``options`` go to every
    :class:`Application` (``compress``, ``cipher``, ``snapshot_every``,
    ``clock``, ``env``, …).
    """

    def __init__(
        self,
        system: System,
        store: StoreArgument = "memory://",
        *,
        apps: Collection[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        **options: Any,
    ) -> None:
        if not isinstance(system, System):
            raise ConfigurationError(f"a runner runs a fes.System, not {system!r}")
        if (
            not isinstance(poll_interval, int | float)
            or isinstance(poll_interval, bool)
            or not poll_interval > 0
        ):
            raise ConfigurationError(f"poll_interval must be positive, got {poll_interval!r}")
        check_count("batch_size", batch_size, 1)
        check_count("batch_bytes", batch_bytes, 1)
        self.system = system
        self.poll_interval = poll_interval
        names = [a.name for a in system.apps]
        self.placement = Placement(store, names, env=options.get("env"))
        try:
            remote = {name for name in names if self.placement.is_remote(name)}
            check_remote(self.placement.urls, remote, names)
            if apps is None:
                chosen = set(names) - remote
                if not chosen:
                    raise ConfigurationError(
                        "every application of this system is served by another service "
                        "over HTTP: there is nothing to run here (give the followers a "
                        "store of their own)"
                    )
            else:
                chosen = _chosen(apps)
                for name in chosen:
                    app_of_unit(system, name)
                served = sorted(
                    name for name in chosen if app_of_unit(system, name).name in remote
                )
                if served:
                    raise ConfigurationError(
                        f"{', '.join(map(repr, served))} is served by another service over "
                        "HTTP: it is read here as a leader, and runs where it is served"
                    )
            # the applications it drives and the leaders they read, opened now; any
            # other only when asked for (runner.app), so that a service running
            # one application needs no URL, and no access, but its own and its leaders'
            needed = {app_of_unit(system, unit).name for unit in chosen}
            needed |= {leader for name in needed for leader in system.leaders(name)}
            self._options = options
            # the applications it drives and writes to are opened now, so that a bad
            # URL or a store that is down stops the start; a leader it only reads is
            # opened on first read, so that a follower's service starts while the
            # leader's database is down, and waits for it as a runner waits for any
            # store (its name must still be placed)
            driven = {app_of_unit(system, unit).name for unit in chosen}
            self.applications: dict[str, Application] = {}
            for a in system.apps:
                if a.name not in needed:
                    continue
                place: Database = (
                    self.placement.database(a.name) if a.name in driven
                    else self._later(a.name)
                )
                self.applications[a.name] = Application(a, store=place, **options)
            for name in sorted(remote & set(self.applications)):
                # a leader served over HTTP: refuse now a reader that could not decode it
                check = getattr(self.applications[name].store, "check_decodable", None)
                try:
                    if check is not None:
                        check(self.applications[name])
                except StoreUnavailable as down:
                    if not down.transient:
                        raise
                    logger.warning("%s cannot be reached yet (%s); its followers will wait",
                                   name, describe(down), extra={"app": name})
            # keyed by unit: the application's name, or name#i for partition i
            self.followers: dict[str, Follower] = {
                unit: Follower(
                    self.applications[app.name],
                    {leader: self.applications[leader] for leader in system.leaders(app.name)},
                    batch_size=batch_size,
                    batch_bytes=batch_bytes,
                    partition=i,
                )
                for app in system.followers_all
                for i, unit in enumerate(unit_names(app))
                if app.name in chosen or unit in chosen
            }
            for follower in self.followers.values():
                follower.check_layout()
            # a partitioned application's views run with its partition 0
            self.projections: dict[tuple[str, str], Projection[Any]] = {
                (app.name, view.name): Projection(self.applications[app.name], view)
                for app in system.apps
                if app.name in chosen or unit_names(app)[0] in chosen
                for view in app.views
            }
            # an application this runner writes to must read its own events back
            # (a Do command folds them): refuse now one started without its keys
            for name in sorted({f.name for f in self.followers.values()}
                               | {app for app, _ in self.projections}):
                _check_readable(self.applications[name])
        except BaseException:
            self.close()
            raise
        units: list[_Unit] = []
        for follower in self.followers.values():
            units.extend(_Subscription(follower, leader) for leader in follower.leaders)
        units.extend(_ViewUnit(p) for p in self.projections.values())
        self._units: tuple[_Unit, ...] = tuple(units)

    def _later(self, name: str) -> Database:
        """The database of a leader this runner only reads, opened on its first read."""
        if name not in self.placement.places:
            self.placement.database(name)  # raises, naming what to set
        later: Database = LaterDatabase(self.placement, name)  # type: ignore[assignment]
        return later

    @property
    def database(self) -> Database:
        """The one database the whole system lives in.

        Raises :class:`fes.errors.ConfigurationError` when the applications
        are spread over several: then see :attr:`databases`.
        """
        single = self.placement.single
        if single is None:
            raise ConfigurationError(
                "this runner's applications live in several databases: "
                "use runner.databases[name] or runner.app(name).database"
            )
        return single

    @property
    def databases(self) -> dict[str, Database]:
        """Each application's database, by application name."""
        return {name: self.placement.database(name) for name in self.placement.places}

    def app(self, name: str) -> Application:
        """The application called ``name``, to execute commands and read state."""
        found = self.applications.get(name)
        if found is None:
            app = self.system.app(name)  # raises, naming the known applications
            found = Application(app, store=self.placement.database(name), **self._options)
            self.applications[name] = found
        return found

    def view(self, app: str, name: str) -> Projection[Any]:
        """The projection of view ``name`` of application ``app``."""
        try:
            return self.projections[(app, name)]
        except KeyError:
            known = ", ".join(f"{a}/{v}" for a, v in self.projections) or "none"
            raise ConfigurationError(
                f"this runner keeps no view {name!r} of {app!r}; it keeps {known}"
            ) from None

    @property
    def errors(self) -> dict[str, PolicyError]:
        """The followers stopped by a policy error, and the views (``app/view``) stopped
        by an error of their ``apply`` (a :class:`fes.errors.ViewError`), with the error.

        While this is not empty, no runner reports quiet: :meth:`is_quiet` is
        False, and :meth:`wait_until_quiet` raises :class:`fes.errors.FollowerStopped`.
        """
        found: dict[str, PolicyError] = {
            n: f.error for n, f in self.followers.items() if f.error is not None
        }
        for projection in self.projections.values():
            if projection.error is not None:
                found[projection.label] = projection.error
        return found

    def lags(self) -> dict[tuple[str, str], Lag]:
        """For each (leader, follower) this runner drives, its :class:`Lag`.

        The same shape as :func:`lags`: (tracked position, leader's last
        position), with ``.behind``; the follower's position is read where
        the follower lives, the leader's where the leader lives.
        """
        found: dict[tuple[str, str], Lag] = {}
        for name, follower in self.followers.items():
            tracked = follower.application.store.tracked()
            for leader, reader in follower.leaders.items():
                found[(leader, name)] = Lag(
                    tracked.get(follower.tracking[leader], 0), reader.store.last_position()
                )
        return found

    def is_quiet(self) -> bool:
        """Whether every follower and view has processed everything visible now.

        False while a follower or view this runner drives is stopped (see :attr:`errors`).
        """
        if self.errors or any(self.lags().values()):
            return False
        return all(
            p.position() >= p.application.store.last_position()
            for p in self.projections.values()
        )

    def wait_until_quiet(self, timeout: float = 30.0, *, interval: float = 0.02) -> bool:
        """Wait until everything is processed and stays so across two looks; True then.

        Two consecutive looks must find every log at the same position and
        nothing left to process: with cycles, one quiet look could be taken
        while a commit is adding new work.  Returns False after ``timeout``.

        A stopped follower or view is never quiet: once every other follower
        and view is, this raises :class:`fes.errors.FollowerStopped`, naming
        each stopped follower with its :class:`fes.errors.PolicyError`
        (leader, position, error) and each stopped view with its
        :class:`fes.errors.ViewError`.  It raises as well if ``timeout`` passes while
        one is stopped.
        """
        deadline = time.monotonic() + timeout
        before: tuple[int, ...] | None = None
        while True:
            positions = tuple(
                application.store.last_position()
                for application in list(self.applications.values())
            )
            stuck = self.errors
            quiet = self._quiet_except(set(stuck))
            if quiet and before == positions:
                if stuck:
                    raise FollowerStopped(stuck) from next(iter(stuck.values()))
                return True
            before = positions if quiet else None
            if time.monotonic() >= deadline:
                if stuck:
                    raise FollowerStopped(stuck) from next(iter(stuck.values()))
                return False
            time.sleep(interval)

    def wait_for(
        self,
        leader: str,
        position: int,
        timeout: float = 10.0,
        *,
        follower: str | None = None,
        interval: float = 0.02,
    ) -> bool:
        """Wait until the followers of ``leader`` have processed its event at ``position``.

        Returns True once every follower this runner drives that follows
        ``leader`` (see below for a runner that drives none) has tracked
        ``position`` or beyond in its tracking of ``leader``: the event at
        that position of the leader's log has had its effect in each of them
        (a follower whose policy ignores the event has processed it too).
        ``follower`` narrows the wait to one of them: an application's name
        (each of its partitions), or ``name#i`` for one partition.  Returns
        False when ``timeout`` seconds pass first; the tracked positions are
        read every ``interval`` seconds, where each follower lives.

        To read your own writes in a follower::

            recorded = runner.app("orders").execute(order, "order-1", place, "ann", "mug", 1, 800)
            if runner.wait_for("orders", recorded[-1].position, follower="reservations"):
                ...  # reservations has processed order-1's events

        Something must process meanwhile: the threads of a
        :class:`ThreadedRunner`, the workers of a
        :class:`fes.edge.ProcessRunner`.  A :class:`SyncRunner` steps only
        when told to (:meth:`SyncRunner.run_until_quiet`), so there this
        only reports: True at once if the followers are there already,
        else False after ``timeout``, unless another runner on the same
        stores processes meanwhile.  The counterpart for a view is
        :meth:`fes.edge.Projection.wait_for`.

        A runner that drives none of the followers of ``leader`` (a web
        process built with ``apps=`` naming the applications it takes
        commands for, its followers run by ``fes run`` elsewhere) waits on
        every follower of ``leader`` in the system instead: it reads their
        tracked positions, and the stops they recorded, in their stores,
        which it opens as :meth:`app` does.

        A wait that can tell nothing is refused with
        :class:`fes.errors.ConfigurationError`: ``leader`` is no application
        of the system, no application follows it, or ``follower`` is not one
        of those waited on; and so are a ``position`` that is not a positive
        integer, a negative ``timeout`` and an ``interval`` that is not
        positive.  If a follower waited on stops on a policy error before it
        gets there, this raises :class:`fes.errors.FollowerStopped`, naming
        it with its :class:`fes.errors.PolicyError`, as
        :meth:`wait_until_quiet` does (for a follower run elsewhere, the
        error is a ``RuntimeError`` carrying the recorded one's text, where
        and when it was recorded).
        """
        waited, driven = self._followers_of(leader, follower)
        check_count("position", position, 1)
        seconds = _seconds("timeout", timeout, zero=True)
        pause = _seconds("interval", interval, zero=False)
        deadline = time.monotonic() + seconds
        while True:
            behind = self._short_of(position, waited)
            if not behind:
                return True
            if driven:
                errors = self.errors
                stuck = {unit: errors[unit] for unit in behind if unit in errors}
            else:
                stuck = self._recorded_stops(leader, waited, behind)
            if stuck:
                raise FollowerStopped(stuck) from next(iter(stuck.values()))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(pause, remaining))

    def _followers_of(
        self, leader: str, follower: str | None
    ) -> tuple[dict[str, tuple[str, str]], bool]:
        """The units a wait_for waits on, each with its application and tracking key of
        ``leader``, narrowed to ``follower``, and whether this runner drives them.

        Those of the followers of ``leader`` this runner drives; when it drives
        none, every unit of every follower of ``leader`` in the system.
        Refused when there are none.
        """
        names = [app.name for app in self.system.apps]
        if not isinstance(leader, str) or leader not in names:
            raise ConfigurationError(
                f"{leader!r} is no application of this system; it has "
                f"{', '.join(map(repr, names))}"
            )
        following: dict[str, tuple[str, str]] = {
            unit: (found.name, found.tracking[leader])
            for unit, found in self.followers.items() if leader in found.leaders
        }
        driven = bool(following)
        if not driven:
            for name in self.system.followers(leader):
                app = self.system.app(name)
                for partition, unit in enumerate(unit_names(app)):
                    following[unit] = (name, tracking_key(leader, partition, app.partitions))
        if not following:
            raise ConfigurationError(
                f"no application of this system follows {leader!r}, so there is nothing "
                "to wait for"
            )
        if follower is None:
            return following, driven
        chosen = {
            unit: where for unit, where in following.items() if follower in (unit, where[0])
        }
        if not chosen:
            which = "that this runner drives" if driven else "in this system"
            raise ConfigurationError(
                f"{follower!r} is no follower of {leader!r} {which}; "
                f"those are {', '.join(map(repr, following))}"
            )
        return chosen, driven

    def _short_of(self, position: int, waited: Mapping[str, tuple[str, str]]) -> set[str]:
        """The units of ``waited`` whose tracked position is below ``position``."""
        tracked: dict[str, dict[str, int]] = {}  # by application: read once per look
        short: set[str] = set()
        for unit, (name, key) in waited.items():
            if name not in tracked:
                tracked[name] = self.app(name).store.tracked()
            if tracked[name].get(key, 0) < position:
                short.add(unit)
        return short

    def _recorded_stops(
        self, leader: str, waited: Mapping[str, tuple[str, str]], units: set[str]
    ) -> dict[str, PolicyError]:
        """The stops on ``leader`` of those of ``units`` this runner does not drive, as recorded
        in their applications' stores (where `fes apps` reads them too)."""
        stops: dict[str, Mapping[tuple[str, str], FollowerHalted | None]] = {}
        found: dict[str, PolicyError] = {}
        for unit in sorted(units):
            name = waited[unit][0]
            if name not in stops:
                stops[name] = recorded_stops(self.app(name))
            halted = stops[name].get((unit, leader))
            if halted is not None:
                failure = found[unit] = PolicyError(
                    unit, leader, halted.position, recorded_error(halted)
                )
                failure.traceback = halted.traceback
        return found

    def _quiet_except(self, stopped: set[str]) -> bool:
        return all(
            not lag for (_, name), lag in self.lags().items() if name not in stopped
        ) and all(
            p.position() >= p.application.store.last_position()
            for p in self.projections.values()
            if p.label not in stopped
        )

    def close(self) -> None:
        """Close the databases this runner opened (not those it was given)."""
        placement = getattr(self, "placement", None)
        if placement is not None:
            placement.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncRunner(Runner):
    """Runs a system in the calling thread, in a fixed order: deterministic.

    :meth:`run_until_quiet` steps every follower (one batch per leader) and
    every view, round after round, until a round does nothing.  Use it in
    tests and scripts::

        with SyncRunner(system, "memory://") as runner:
            runner.app("orders").execute(order, order_id, place, "ann", "sku", 1, 100)
            runner.run_until_quiet()
    """

    def step(self) -> int:
        """One round: one batch of each leader for each follower, then each view."""
        return sum(unit.step() for unit in self._units)

    def run_until_quiet(self, *, check: bool = True, max_rounds: int | None = None) -> int:
        """Process until nothing is left; return how many notifications were consumed.

        The count is summed over every follower (for each of its leaders) and
        every view: a notification that two of them take counts twice.
        ``Follower.processed`` counts one follower's alone.

        A follower waiting to retry a failed event is waited for.  With
        ``check`` (the default), followers stopped by a policy error (and
        views stopped by an error of their ``apply``) are reported, once the
        others are drained, by raising :class:`fes.errors.FollowerStopped` (a
        :class:`fes.errors.PolicyError` naming each of them); otherwise
        inspect :attr:`errors`.
        """
        total = 0
        rounds = 0
        while max_rounds is None or rounds < max_rounds:
            rounds += 1
            moved = self.step()
            total += moved
            if moved:
                continue
            waits = [
                deadline
                for follower in self.followers.values()
                if follower.error is None
                for leader in follower.leaders
                if (deadline := follower.retry_at(leader)) is not None
            ]
            if not waits:
                break
            time.sleep(max(min(waits) - time.monotonic(), 0.0))
        stopped = self.errors
        if check and stopped:
            raise FollowerStopped(stopped) from next(iter(stopped.values()))
        return total


class ThreadedRunner(Runner):
    """Runs a system in threads of this process: one per (follower, leader) and per view.

    A thread with nothing to do sleeps in its leader store's ``wait`` (a
    view's, in its application's store) for at most ``poll_interval``
    seconds (default 1), then reads the log again.  Appends it can observe
    wake it at once: those made through the same open database in this
    process, and, over PostgreSQL, those its LISTEN connection is notified
    of.  The others (another process's, over SQLite; every one, over
    PostgreSQL with ``listen=false``) the store's ``wait`` finds by polling,
    every ``poll_interval`` of the store URL (SQLite's default 0.02 s,
    PostgreSQL's 1 s): such an append is read within about the smaller of
    the two intervals.  Over PostgreSQL with LISTEN, a follower's thread
    that has read to the end of its leader's log waits for the next
    notification and does not poll: a notification that is lost delays an
    event by the runner's ``poll_interval`` at most.

    Over SQLite, a follower whose leader's log is in its own database
    commits holding the lock its writers of this process queue on, and
    takes into that batch first what was committed while it queued (the
    leader's next commits, in a burst); a thread about to read a log in
    another database while a write of this process to it is in progress
    first lets that write end, and reads it in the same batch.  A
    store error (a database restarting, a lock timeout) is logged and the
    batch tried again after a back-off.  :meth:`stop` lets every thread
    finish the batch in hand, then joins them.

    ``apps``, ``batch_size``, ``batch_bytes`` and ``options`` are those of
    :class:`Runner`.
    """

    def __init__(
        self,
        system: System,
        store: StoreArgument = "memory://",
        *,
        apps: Collection[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        **options: Any,
    ) -> None:
        super().__init__(
            system, store, apps=apps, batch_size=batch_size, batch_bytes=batch_bytes,
            poll_interval=poll_interval, **options,
        )
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # threads asleep in a store's wait: they hold no batch, so stop() does
        # not wait for them (a wait lasts up to poll_interval), and they do
        # nothing more once they wake
        self._asleep: set[threading.Thread] = set()

    def start(self) -> Self:
        """Start the threads; returns the runner."""
        if self._threads:
            raise ConfigurationError(
                "this runner was started already; to start again after stop(), build a new "
                "one on the same store: it takes up each follower at its tracked position"
            )
        for unit in self._units:
            thread = threading.Thread(
                target=self._loop, args=(unit,), name=f"fes {unit.label}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def _loop(self, unit: _Unit) -> None:
        backoff = 0.0
        away = False  # a store is unavailable: said once, and once when it is back
        failed = False  # another failure was said: and once when a step goes through
        me = threading.current_thread()
        while not self._stopping.is_set() and not unit.finished:
            try:
                if unit.writing():
                    # A write of this process to the log is in progress (the
                    # leader's next commit, in a burst): read it in this batch
                    # rather than in one, and a commit, of its own.  Waiting so
                    # holds no batch, like a wait: stop() does not wait for it.
                    self._asleep.add(me)
                    try:
                        if not self._stopping.is_set():
                            unit.settle(self.poll_interval)
                    finally:
                        self._asleep.discard(me)
                    if self._stopping.is_set():
                        break
                moved = unit.step()
                if away:
                    # the warning's level: a log showing one shows the other
                    logger.warning("%s: the store is available again; carrying on", unit.label,
                                   extra=unit.log_fields())
                elif failed:
                    # (after a commit of unknown outcome: the tracking position, stored
                    # with the batch's events, showed this step what that one did)
                    logger.warning("%s: the step after the failure above went through; "
                                   "carrying on", unit.label, extra=unit.log_fields())
                away = failed = False
                # a step that found the log's end (a short read) waits for the
                # next commit: stepping again at once would read nothing
                if not moved or unit.caught_up():
                    self._asleep.add(me)
                    try:
                        if not self._stopping.is_set():  # stop() may have looked already
                            unit.wait(self.poll_interval)
                    finally:
                        self._asleep.discard(me)
                backoff = 0.0
            except Exception as error:
                if self._stopping.is_set():
                    break
                backoff = min(max(backoff * 2, 0.05), 5.0)
                if isinstance(error, StoreUnavailable) and error.transient:
                    logger.log(
                        logging.DEBUG if away else logging.WARNING,
                        "%s: %s; trying again every few seconds, and saying so once it is "
                        "back", unit.label, describe(error), extra=unit.log_fields(),
                    )
                    away = True
                elif isinstance(error, OutcomeUnknown):
                    # said as this runner acts on it: the step's position is stored
                    # in its transaction, and read again by the next step
                    logger.warning(
                        "%s: unknown whether the step's commit took effect (the connection "
                        "to %s was lost while committing: %s); its position was committed "
                        "with it, so the next step sees which; trying again in %.2fs",
                        unit.label, error.url, error.reason, backoff,
                        extra=unit.log_fields(),
                    )
                    failed = True
                else:
                    logger.warning("%s: %s; trying again in %.2fs", unit.label, describe(error),
                                   backoff, exc_info=not isinstance(error, FesError),
                                   extra=unit.log_fields())
                    failed = True
                self._stopping.wait(backoff)

    @property
    def running(self) -> bool:
        """Whether any thread still runs."""
        return any(t.is_alive() for t in self._threads)

    def request_stop(self) -> None:
        """Ask every thread to stop after its batch in hand (safe in a signal handler)."""
        self._stopping.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop every thread after its batch in hand, and wait for those.

        A thread asleep in a store's wait holds no batch: it is not waited
        for, and it ends as soon as its wait does, doing nothing more (at
        once when :meth:`close` closes the stores).
        """
        self._stopping.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread in self._asleep:
                continue
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))

    def close(self) -> None:
        """Stop the threads, then close the database if this runner opened it."""
        threads = getattr(self, "_threads", None)
        if threads:
            self.stop()
        super().close()
        if threads:
            # closing the stores wakes the threads still asleep in their waits
            deadline = time.monotonic() + self.poll_interval
            for thread in threads:
                thread.join(max(deadline - time.monotonic(), 0))

    def __enter__(self) -> Self:
        self.start()
        return self
