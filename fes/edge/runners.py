"""Runners: each follower applies its pure policy to its leaders' logs, exactly once.

A :class:`Follower` is the one step every runner shares.  For one leader it
reads the notifications after the position the follower last tracked, calls
the policy on each, asks the store once which of the streams the intents
name are still empty (:meth:`Batch.prefetch`), performs the intents into one
:class:`Batch` (a ``Do`` sees the events already pending in the batch) and
commits the new events together with the leader's new tracking position in
one transaction.
The store refuses a tracking position recorded before, so an upstream event
has its effect once, whatever crashes, restarts or rival instances do.  A
partitioned application (``fes.App(partitions=N)``) has N followers, each
taking the upstream streams that hash to it and tracking its own position.

Three runners drive followers and views (:mod:`fes.edge.projections`):

- :class:`SyncRunner` steps everything in this thread, in a fixed order,
  until nothing is left to do — deterministic, for tests and scripts;
- :class:`ThreadedRunner` gives each (follower, leader) pair and each view a
  thread that sleeps in the leader's ``store.wait``;
- :class:`fes.edge.processes.ProcessRunner` runs applications in separate
  OS processes, each opening the database from its URL.

:func:`run` starts a system and blocks until SIGINT or SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any, Protocol, Self

from fes.errors import (
    ConcurrencyError,
    ConfigurationError,
    DecodeError,
    DefinitionError,
    DuplicateTracking,
    EncodeError,
    FesError,
    PolicyError,
    StoreError,
)
from fes.events import Metadata, Recorded
from fes.policies import Directive, Do, Emit, Intent, Retry, Skip, Stop
from fes.system import App, System, app_of_unit, partition_of, tracking_key, unit_names

from .application import Application, Batch, check_count, check_store
from .projections import Projection
from .skips import SKIPS_STREAM, PolicySkipped, is_internal, skips
from .stores import open_database
from .stores.base import Database, StoredEvent, Tracking

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_POLL_INTERVAL",
    "Follower",
    "Runner",
    "SyncRunner",
    "ThreadedRunner",
    "lags",
    "run",
    "skipped",
]

logger = logging.getLogger("fes.runners")

#: Notifications a follower processes, at most, in one transaction.  Larger
#: batches mean fewer durable commits; the write lock is held only while the
#: batch's rows are inserted (a few milliseconds for 500), not while the
#: policy runs.  500 processed a backlog 20-30 % faster than 100 in W4.
DEFAULT_BATCH_SIZE = 500
#: Seconds a waiting worker sleeps at most before it looks at the log again.
DEFAULT_POLL_INTERVAL = 1.0


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class Follower:
    """The step of one follower application, shared by every runner.

    ``application`` is the follower; ``leaders`` maps each application it
    follows to an :class:`Application` reading that leader's store (its codec
    decodes the leader's events).  ``batch_size`` bounds how many
    notifications go into one transaction.

    A policy error stops only this follower (see :attr:`error`), after
    committing the effects of the notifications before the failed one; the
    application's ``on_error`` directive may instead retry it after a delay,
    or skip it, recording a :class:`PolicySkipped` in :data:`SKIPS_STREAM`.
    """

    def __init__(
        self,
        application: Application,
        leaders: Mapping[str, Application],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        partition: int = 0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        app = application.app
        if app.policy is None:
            raise DefinitionError(f"application {app.name!r} has no policy to follow with")
        check_count("batch_size", batch_size, 1)
        if not leaders:
            raise DefinitionError(f"application {app.name!r} follows no leader")
        if not 0 <= partition < app.partitions:
            raise ConfigurationError(
                f"application {app.name!r} has {app.partitions} partition(s); "
                f"there is no partition {partition}"
            )
        self.application = application
        self.app: App = app
        self.leaders: dict[str, Application] = dict(leaders)
        self.batch_size = batch_size
        self.partition = partition
        self.partitions = app.partitions
        #: The name each leader's position is tracked under (see :func:`fes.system.tracking_key`).
        self.tracking: dict[str, str] = {
            leader: tracking_key(leader, partition, app.partitions) for leader in self.leaders
        }
        self._monotonic = monotonic
        self._policy = app.policy
        self._aggregates = {a.name: a for a in app.aggregates}
        #: Why this follower stopped, or None while it runs.
        self.error: PolicyError | None = None
        #: Every policy failure seen, in order (retried, skipped or stopping).
        self.failures: list[PolicyError] = []
        #: The last tracked position seen, per leader.
        self.positions: dict[str, int] = dict.fromkeys(self.leaders, 0)
        #: How many notifications were processed, and batches retried after a conflict.
        self.processed = 0
        self.conflicts = 0
        # per leader (each leader is stepped by one thread at a time): position -> tries
        self._attempts: dict[str, dict[int, int]] = {leader: {} for leader in self.leaders}
        self._retry_at: dict[str, float] = {}

    @property
    def name(self) -> str:
        """The follower application's name."""
        return self.app.name

    @property
    def unit(self) -> str:
        """The application's name, with ``#i`` for partition i of a partitioned one."""
        return self.name if self.partitions == 1 else f"{self.name}#{self.partition}"

    def __repr__(self) -> str:
        return f"Follower({self.unit!r}, leaders={list(self.leaders)!r})"

    def check_layout(self) -> None:
        """Refuse to run if the store holds positions tracked under other partitions.

        Changing an application's number of partitions would start the new
        partitions from position 0 and process events a second time.
        """
        tracked = self.application.store.tracked()
        for leader in self.leaders:
            mine = {tracking_key(leader, i, self.partitions) for i in range(self.partitions)}
            other = sorted(
                key for key in tracked
                if (key == leader or key.startswith(leader + "#")) and key not in mine
            )
            if other:
                raise ConfigurationError(
                    f"application {self.name!r} tracks {leader!r} under {', '.join(other)}, "
                    f"which another number of partitions wrote; with {self.partitions} it "
                    "would process those events again. Keep the number of partitions, or "
                    "move the positions over before changing it"
                )

    # --- the step -------------------------------------------------------------

    def retry_at(self, leader: str) -> float | None:
        """The monotonic time before which ``leader``'s failed event is not retried."""
        return self._retry_at.get(leader)

    def step(self, leader: str) -> int:
        """Process the next batch of ``leader``'s notifications.

        Returns how many notifications were consumed (processed or
        skipped); 0 when caught up, stopped, or waiting to retry.
        """
        if self.error is not None:
            return 0
        deadline = self._retry_at.get(leader)
        if deadline is not None:
            if self._monotonic() < deadline:
                return 0
            del self._retry_at[leader]
        reader = self.leaders[leader]
        store = self.application.store
        key = self.tracking[leader]
        while True:
            previous = store.last_tracked(key)
            self.positions[leader] = previous
            rows = reader.store.read_log(previous, limit=self.batch_size)
            if not rows:
                return 0
            try:
                consumed = self._process(leader, reader, previous, rows)
            except (ConcurrencyError, DuplicateTracking) as conflict:
                # another writer moved a stream, or another instance of this follower
                # processed these notifications: start again from what the store holds
                self.conflicts += 1
                logger.debug("%s: %s; reading %r again", self.name, conflict, leader)
                continue
            self.processed += consumed
            return consumed

    def _process(
        self,
        leader: str,
        reader: Application,
        previous: int,
        rows: Sequence[StoredEvent],
    ) -> int:
        # The policy is pure, so it is called on every notification first; the
        # streams the intents act on are then read in one query, not one each.
        plans: list[tuple[StoredEvent, Recorded[Any] | None, Sequence[Intent] | Exception]] = []
        partitions, partition = self.partitions, self.partition
        for row in rows:
            if is_internal(row.topic) or (
                partitions > 1 and partition_of(row.stream, partitions) != partition
            ):
                plans.append((row, None, ()))  # fes's own event, or another partition's
                continue
            try:
                recorded = reader.recorded(row)
            except DecodeError as error:
                plans.append((row, None, error))
                break
            try:
                intents: Sequence[Intent] | Exception = tuple(self._policy(recorded))
            except Exception as error:
                intents = error
            plans.append((row, recorded, intents))
            if isinstance(intents, Exception):
                break
        batch = self.application.batch()
        batch.prefetch(
            intent.stream
            for _, _, intents in plans
            if not isinstance(intents, Exception)
            for intent in intents
            if isinstance(intent, Emit | Do)
        )
        done = previous
        consumed = 0
        for row, upstream, outcome in plans:
            if upstream is None:
                if isinstance(outcome, Exception):  # the row could not be decoded
                    self._commit(batch, leader, done, previous)
                    self._stop(PolicyError(self.name, leader, row.position, outcome))
                    return consumed
                done = row.position  # nothing for this policy: tracked, not processed
                consumed += 1
                continue
            # the batch encodes each event as it is added: an event it refuses
            # (EncodeError) is this notification's error, like any the policy raises
            mark = batch.savepoint()
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                self._perform(batch, leader, upstream, outcome)
            except Exception as error:
                if isinstance(error, StoreError) and not isinstance(error, EncodeError):
                    raise  # the store failed, not the policy: the runner tries the batch again
                batch.rollback(mark)
                self._commit(batch, leader, done, previous)
                return consumed + self._failed(leader, done, upstream, error)
            done = row.position
            consumed += 1
        self._commit(batch, leader, done, previous)
        tries = self._attempts[leader]
        if tries:
            for position in [p for p in tries if p <= done]:
                del tries[position]
        return consumed

    def _commit(self, batch: Batch, leader: str, done: int, previous: int) -> None:
        if done <= previous:
            return
        self.application.commit(batch, tracking=Tracking(self.tracking[leader], done, previous))
        self.positions[leader] = done

    def _perform(
        self, batch: Batch, leader: str, recorded: Recorded[Any], intents: Sequence[Intent]
    ) -> None:
        cause = f"{leader}:{recorded.id}"
        upstream = recorded.metadata
        metadata = Metadata(
            correlation_id=upstream.correlation_id or cause,
            causation_id=cause,
            headers=upstream.headers,
        )
        for intent in intents:
            if isinstance(intent, Emit):
                self._check_aggregate(intent.aggregate.name)
                batch.emit(intent.aggregate, intent.stream, intent.events, metadata)
            elif isinstance(intent, Do):
                self._check_aggregate(intent.aggregate.name)
                batch.execute(
                    intent.aggregate, intent.stream, intent.command, *intent.args,
                    metadata=metadata,
                )
            else:
                raise DefinitionError(
                    f"the policy of {self.name!r} returned {intent!r}; "
                    "an intent is fes.Emit or fes.Do"
                )

    def _check_aggregate(self, name: str) -> None:
        if name not in self._aggregates:
            known = ", ".join(repr(n) for n in self._aggregates) or "none"
            raise DefinitionError(
                f"the policy of {self.name!r} acts on aggregate {name!r}, which "
                f"{self.name!r} does not keep (it keeps {known})"
            )

    # --- failures -------------------------------------------------------------

    def _failed(
        self, leader: str, previous: int, recorded: Recorded[Any], error: BaseException
    ) -> int:
        """Report a policy error and follow the directive; 1 if the event was skipped."""
        position = recorded.position
        attempt = self._attempts[leader].get(position, 0) + 1
        self._attempts[leader][position] = attempt
        failure = PolicyError(self.name, leader, position, error)
        failure.__cause__ = error
        self.failures.append(failure)
        directive: Directive
        try:
            directive = self.app.on_error(error, recorded, attempt)
        except Exception as handler_error:
            logger.error("%s: on_error raised %s; stopping", self.name, _describe(handler_error))
            directive = Stop()
        if isinstance(directive, Retry):
            logger.warning("%s (attempt %d); retrying in %ss", failure, attempt, directive.delay)
            self._retry_at[leader] = self._monotonic() + max(directive.delay, 0.0)
            return 0
        if isinstance(directive, Skip):
            logger.warning("%s (attempt %d); skipping it", failure, attempt)
            self._skip(leader, previous, recorded, error, attempt)
            return 1
        if not isinstance(directive, Stop):
            logger.error("%s: on_error returned %r, not a directive", self.name, directive)
        self._stop(failure)
        return 0

    def _stop(self, failure: PolicyError) -> None:
        logger.error("%s; follower %r stopped", failure, self.name)
        self.error = failure

    def _skip(
        self,
        leader: str,
        previous: int,
        recorded: Recorded[Any],
        error: BaseException,
        attempts: int,
    ) -> None:
        cause = f"{leader}:{recorded.id}"
        note = PolicySkipped(
            leader, recorded.position, recorded.id, recorded.topic, _describe(error), attempts
        )
        metadata = Metadata(
            correlation_id=recorded.metadata.correlation_id or cause, causation_id=cause
        )
        tracking = Tracking(self.tracking[leader], recorded.position, previous)
        while True:
            batch = self.application.batch()
            batch.emit(skips, SKIPS_STREAM, [note], metadata)
            try:
                self.application.commit(batch, tracking=tracking)
            except ConcurrencyError:
                continue  # another leader's skip took the next version: take the one after
            except DuplicateTracking:
                pass  # another instance got there first
            break
        self._attempts[leader].pop(recorded.position, None)
        self.positions[leader] = recorded.position

    def resume(self) -> None:
        """Forget a stop, so the next step tries the failed event again."""
        self.error = None
        for tries in self._attempts.values():
            tries.clear()
        self._retry_at.clear()

    def lag(self) -> dict[str, int]:
        """Per leader, how far the leader's log reaches past what was tracked."""
        tracked = self.application.store.tracked()
        return {
            leader: max(reader.store.last_position() - tracked.get(self.tracking[leader], 0), 0)
            for leader, reader in self.leaders.items()
        }


def skipped(application: Application) -> list[Recorded[PolicySkipped]]:
    """The upstream events an application's policy skipped, oldest first."""
    return application.stream(SKIPS_STREAM)


def lags(database: Database, system: System) -> dict[tuple[str, str], tuple[int, int]]:
    """For each (leader, follower) of ``system``: (tracked position, leader's last position).

    A partitioned follower appears once per partition, as ``name#i``.
    """
    found: dict[tuple[str, str], tuple[int, int]] = {}
    last = {app.name: database.store(app.name).last_position() for app in system.apps}
    for follower in system.followers_all:
        tracked = database.store(follower.name).tracked()
        for leader in system.leaders(follower.name):
            for i, unit in enumerate(unit_names(follower)):
                key = tracking_key(leader, i, follower.partitions)
                found[(leader, unit)] = (tracked.get(key, 0), last[leader])
    return found


# --- units of work: what a runner steps and waits on ----------------------------


class _Unit(Protocol):
    """One thing a runner keeps doing: a follower on one leader, or one view."""

    @property
    def label(self) -> str: ...

    @property
    def app(self) -> str: ...

    def step(self) -> int: ...

    def wait(self, timeout: float) -> None: ...

    @property
    def finished(self) -> bool: ...


class _Subscription:
    """A follower following one of its leaders."""

    def __init__(self, follower: Follower, leader: str) -> None:
        self.follower = follower
        self.leader = leader
        self.label = f"{follower.unit}<-{leader}"
        self.app = follower.name

    def step(self) -> int:
        return self.follower.step(self.leader)

    def wait(self, timeout: float) -> None:
        deadline = self.follower.retry_at(self.leader)
        if deadline is not None:
            time.sleep(max(min(deadline - time.monotonic(), timeout), 0.0))
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

    def step(self) -> int:
        return self.projection.step()

    def wait(self, timeout: float) -> None:
        self.projection.application.store.wait(self.projection.seen, timeout)

    @property
    def finished(self) -> bool:
        return False


# --- runners ----------------------------------------------------------------------


class Runner:
    """What every runner shares: the system's applications on one database.

    ``store`` is a URL or an open :class:`Database` (not closed by the
    runner).  ``apps`` limits which applications' followers and views this
    runner drives (all by default): the others may run elsewhere, in other
    processes or on other hosts.  Keyword ``options`` go to every
    :class:`Application` (``compress``, ``cipher``, ``snapshot_every``,
    ``clock``, ``env``, …).
    """

    def __init__(
        self,
        system: System,
        store: str | Database = "memory://",
        *,
        apps: Collection[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
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
        check_store(store)
        self.system = system
        if isinstance(store, str):
            self.database: Database = open_database(store)
            self._owns_database = True
        else:
            self.database = store
            self._owns_database = False
        self.poll_interval = poll_interval
        try:
            chosen = set([a.name for a in system.apps] if apps is None else apps)
            for name in chosen:
                app_of_unit(system, name)
            self.applications: dict[str, Application] = {
                a.name: Application(a, store=self.database, **options) for a in system.apps
            }
            # keyed by unit: the application's name, or name#i for partition i
            self.followers: dict[str, Follower] = {
                unit: Follower(
                    self.applications[app.name],
                    {leader: self.applications[leader] for leader in system.leaders(app.name)},
                    batch_size=batch_size,
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
        except BaseException:
            self.close()
            raise
        units: list[_Unit] = []
        for follower in self.followers.values():
            units.extend(_Subscription(follower, leader) for leader in follower.leaders)
        units.extend(_ViewUnit(p) for p in self.projections.values())
        self._units: tuple[_Unit, ...] = tuple(units)

    def app(self, name: str) -> Application:
        """The application called ``name``, to execute commands and read state."""
        try:
            return self.applications[name]
        except KeyError:
            self.system.app(name)  # raises, naming the known applications
            raise

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
        """The followers stopped by a policy error, with the error."""
        return {n: f.error for n, f in self.followers.items() if f.error is not None}

    def lags(self) -> dict[tuple[str, str], int]:
        """For each (leader, follower) this runner drives, how far behind it is."""
        return {
            (leader, name): behind
            for name, follower in self.followers.items()
            for leader, behind in follower.lag().items()
        }

    def is_quiet(self) -> bool:
        """Whether every follower and view has processed everything visible now."""
        if any(self.lags().values()):
            return False
        return all(
            p.position() >= p.application.store.last_position()
            for p in self.projections.values()
        )

    def _snapshot(self) -> tuple[tuple[int, ...], bool]:
        positions = tuple(
            self.applications[a.name].store.last_position() for a in self.system.apps
        )
        return positions, self.is_quiet()

    def wait_until_quiet(self, timeout: float = 30.0, *, interval: float = 0.02) -> bool:
        """Wait until everything is processed and stays so across two looks.

        Two consecutive looks must find every log at the same position and
        nothing left to process: with cycles, one quiet look could be taken
        while a commit is adding new work.  Returns False after ``timeout``.
        Stopped followers count as quiet only once they are stopped.
        """
        deadline = time.monotonic() + timeout
        before: tuple[tuple[int, ...], bool] | None = None
        while True:
            now = self._snapshot()
            stuck = set(self.errors)
            quiet = now[1] or (stuck and self._quiet_except(stuck))
            if quiet and before is not None and before[0] == now[0]:
                return True
            before = now if quiet else None
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def _quiet_except(self, stopped: set[str]) -> bool:
        return all(
            behind == 0 for (_, name), behind in self.lags().items() if name not in stopped
        ) and all(
            p.position() >= p.application.store.last_position()
            for p in self.projections.values()
        )

    def close(self) -> None:
        """Close the database if this runner opened it."""
        if self._owns_database:
            self.database.close()

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

        A follower waiting to retry a failed event is waited for.  With
        ``check`` (the default), a follower stopped by a policy error is
        reported by raising its :class:`fes.PolicyError` once the others are
        drained; otherwise inspect :attr:`errors`.
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
        if check:
            for error in self.errors.values():
                raise error
        return total


class ThreadedRunner(Runner):
    """Runs a system in threads of this process: one per (follower, leader) and per view.

    A waiting thread sleeps in the leader store's ``wait``: woken at once by
    appends it can observe and otherwise every ``poll_interval`` seconds.  A
    store error (a database restarting, a lock timeout) is logged and the
    batch tried again after a back-off.  :meth:`stop` lets every thread
    finish the batch in hand, then joins them.
    """

    def __init__(self, system: System, store: str | Database = "memory://", **kwargs: Any):
        super().__init__(system, store, **kwargs)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Self:
        """Start the threads; returns the runner."""
        if self._threads:
            raise ConfigurationError("this runner was started already")
        for unit in self._units:
            thread = threading.Thread(
                target=self._loop, args=(unit,), name=f"fes {unit.label}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def _loop(self, unit: _Unit) -> None:
        backoff = 0.0
        while not self._stopping.is_set() and not unit.finished:
            try:
                moved = unit.step()
                if not moved:
                    unit.wait(self.poll_interval)
                backoff = 0.0
            except Exception as error:
                if self._stopping.is_set():
                    break
                backoff = min(max(backoff * 2, 0.05), 5.0)
                logger.warning("%s: %s; trying again in %.2fs", unit.label,
                               _describe(error), backoff, exc_info=not isinstance(error, FesError))
                self._stopping.wait(backoff)

    @property
    def running(self) -> bool:
        """Whether any thread still runs."""
        return any(t.is_alive() for t in self._threads)

    def request_stop(self) -> None:
        """Ask every thread to stop after its batch in hand (safe in a signal handler)."""
        self._stopping.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop every thread after its batch in hand, and wait for them."""
        self._stopping.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))

    def close(self) -> None:
        """Stop the threads, then close the database if this runner opened it."""
        if getattr(self, "_threads", None):
            self.stop()
        super().close()

    def __enter__(self) -> Self:
        self.start()
        return self


@contextlib.contextmanager
def _stop_signals(handler: Callable[[], None]) -> Iterator[None]:
    """Call ``handler`` on SIGINT and SIGTERM while the context is open (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(number: int, frame: FrameType | None) -> None:
        logger.info("received %s; stopping after the batches in hand", signal.Signals(number).name)
        handler()

    saved = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, previous in saved.items():
            signal.signal(number, previous)


def run(
    system: System | str,
    store: str | None = None,
    *,
    processes: int | None = None,
    apps: Collection[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    until: threading.Event | None = None,
    **options: Any,
) -> dict[str, PolicyError]:
    """Run ``system`` on the store at ``store`` until SIGINT or SIGTERM (or ``until`` is set).

    ``system`` is a :class:`fes.System` or ``"module:attribute"`` naming one.
    ``store`` defaults to ``FES_STORE_URL``, then ``sqlite:///fes.db``.  With
    ``processes`` (N >= 1) the applications run in N OS processes (see
    :class:`fes.edge.processes.ProcessRunner`); otherwise in threads of this
    process.  ``apps`` runs only those applications' followers and views, so
    one system can be spread over several hosts sharing one PostgreSQL.
    On a signal, every worker finishes the batch in hand, then this returns
    the followers that had stopped on a policy error.
    """
    url = store or os.environ.get("FES_STORE_URL") or "sqlite:///fes.db"
    stop = until or threading.Event()
    settings: dict[str, Any] = dict(
        apps=apps, batch_size=batch_size, poll_interval=poll_interval, **options
    )
    runner: ThreadedRunner | Any
    if processes:
        from .processes import ProcessRunner

        runner = ProcessRunner(system, url, processes=processes, **settings)
    else:
        if isinstance(system, str):
            from .processes import load_system

            system = load_system(system)
        runner = ThreadedRunner(system, url, **settings)
    with _stop_signals(stop.set):
        try:
            runner.start()
            while not stop.wait(0.5):
                pass
        finally:
            runner.stop()
            runner.close()
    return dict(runner.errors)
