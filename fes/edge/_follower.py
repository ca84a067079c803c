"""The follower: one application applying its pure policy to a leader's log, exactly once.

A :class:`Follower` is the one step every runner shares.  For one leader it
reads the notifications after the position the follower last tracked, calls
the policy on each, asks the store once which of the streams the intents
name are still empty (:meth:`Batch.prefetch`; or, for the streams only
``Emit`` names, takes them for new while they have been: see
:meth:`Follower._prepare`), performs the intents into one
:class:`Batch` (a ``Do`` sees the events already pending in the batch) and
commits the new events together with the leader's new tracking position in
one transaction.
The store refuses a tracking position recorded before, so an upstream event
has its effect once, whatever crashes, restarts or rival instances do.  A
partitioned application (``fes.App(partitions=N)``) has N followers, each
taking the upstream streams that hash to it and tracking its own position.

A notification's effects go into the batch between a savepoint and, if the
policy fails on it (or the batch refuses one of its events), a rollback: the
path is runner -> follower -> policy -> batch -> commit, nothing else.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from operator import attrgetter
from typing import Any, Protocol

from fes.errors import (
    ConcurrencyError,
    ConfigurationError,
    DecodeError,
    DefinitionError,
    DuplicateTracking,
    EncodeError,
    OutcomeUnknown,
    PolicyError,
    StoreError,
    UpcastError,
)
from fes.events import NO_METADATA, Metadata, Recorded, new_metadata
from fes.policies import Directive, Do, Emit, Intent, Retry, Skip, Stop, intents_of, origin_of
from fes.system import App, foreign_tracking, partition_of, tracking_key

from . import _telemetry
from ._application import Application, check_count
from ._batch import Batch
from ._settings import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_SIZE
from ._skips import (
    INTERNAL_PREFIX,
    SKIPS_STREAM,
    STOPS_STREAM,
    FollowerHalted,
    FollowerResumed,
    PolicySkipped,
    recorded_stops,
    skips,
)
from .stores._base import StoredEvent, Tracking
from .stores._checks import check_tracking

__all__ = [
    "DEFAULT_BATCH_BYTES", "DEFAULT_BATCH_SIZE", "Follower", "Hold", "describe", "skipped",
]

#: A follower's records (policy failures, retries, skips, stops): a child of
#: ``fes.runners``, so that policy failures can be routed apart from the runners'
#: own.  Each carries the fields of :meth:`Follower.log_fields` (``extra=``).
logger = logging.getLogger("fes.runners.follower")


_FES = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reraise(error: Exception, headers: Mapping[str, str]) -> None:
    raise error


def describe(error: BaseException) -> str:
    """An error as its type's name and its message, for logs and skip records."""
    return f"{type(error).__name__}: {error}"


def stop_fields(error: BaseException, clock: Callable[[], datetime]) -> dict[str, Any]:
    """What a stop record (a follower's or a view's) says of ``error``, and when and where.

    The error with its notes (which intent failed, when a command or projector
    raised), its own traceback (not what the runner was handling meanwhile),
    the time by ``clock``, the host and the process.
    """
    return {
        "error": describe(error) + "".join(
            f" ({note})" for note in getattr(error, "__notes__", ())
        ),
        "traceback": "".join(traceback.format_exception(error, chain=False)),
        "at": clock().isoformat(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def origin(error: BaseException, fallback: Callable[..., Any] | None = None) -> str:
    """Where user code raised ``error``: the innermost frame outside fes, as ``file:line``.

    An error fes raised from a user's one (an upcaster's, in an UpcastError)
    is looked through to its cause.  An error fes raised about the user's
    code (a policy's result of the wrong shape) has no such frame: then
    ``fallback``'s definition; without one, where fes raised it (the codec,
    for an event that cannot be decoded).
    """
    frames = traceback.extract_tb(error.__traceback__)
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        for frame in reversed(traceback.extract_tb(cause.__traceback__)):
            name = frame.filename
            if not name.startswith("<") and not os.path.abspath(name).startswith(_FES + os.sep):
                return f"{frame.filename}:{frame.lineno}"
        cause = cause.__cause__
    # a combinator (fes.on, when, merge, fan_out) names the function inside it
    code = getattr(origin_of(error) or fallback, "__code__", None)
    if code is not None:
        return f"{code.co_filename}:{code.co_firstlineno}"
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


_payload = attrgetter("payload")


def _within(rows: Sequence[StoredEvent], budget: int) -> Sequence[StoredEvent]:
    """The first of ``rows`` whose payloads add up to at most ``budget`` bytes; at least one."""
    if sum(map(len, map(_payload, rows))) <= budget:
        return rows  # nearly always: summed in C, not row by row
    total = 0
    for taken, row in enumerate(rows):
        total += len(row.payload)
        if total > budget:
            return rows[:max(taken, 1)]
    return rows


#: The plans of the rows read, one entry each, up to a failure (see
#: Follower._plan): each row's upstream event (None: fes's own, another
#: partition's, or unreadable), and the policy's intents, or what failed.  Two
#: lists beside the rows, not a tuple per row: a batch's objects live until its
#: commit, and each one more is one more for the garbage collector to count and walk.
_Plans = tuple[list[Recorded[Any] | None], list[Sequence[Intent] | Exception]]


#: The headers of no metadata: most upstream events carry these (checked by identity first).
_NO_HEADERS = NO_METADATA.headers
#: The intents that act on a stream, which a batch's prefetch reads at once.
_ACTING = (Emit, Do)


class Hold(Protocol):
    """A database whose writers of this process queue on a lock one thread can hold.

    :meth:`hold` takes it (waiting at most ``timeout`` seconds, for ever if
    negative; None if it did not come) for the calling thread's next
    operations, whose writes then take no lock of their own, until
    :meth:`unhold` gives it back (see ``hold`` in
    :mod:`fes.edge.stores._sqlite._connections`).
    """

    #: Bumped after each commit of this process to the database.
    generation: int

    def hold(self, timeout: float) -> Any: ...

    def unhold(self, held: Any) -> None: ...


class _Moved(Exception):
    """The tracked position moved under this batch: another instance processed it."""


#: What means another writer moved first: the follower reads again, nothing failed.
_CONFLICTS = (ConcurrencyError, DuplicateTracking, _Moved)

#: What a follower's commit of unknown outcome leaves its caller to do.
_STEP_AGAIN = (
    "stepping the follower again is safe (run_until_quiet, say): it reads its tracking "
    "position first, and so sees which"
)


def _shown(intent: object) -> str:
    """An intent as a failure's note names it: its kind, aggregate, stream (and command)."""
    aggregate = getattr(getattr(intent, "aggregate", None), "name", "?")
    stream = getattr(intent, "stream", "?")
    if isinstance(intent, Emit):
        return f"Emit to {aggregate!r} stream {stream!r}"
    if isinstance(intent, Do):
        command = getattr(intent.command, "__name__", repr(intent.command))
        return f"Do {command} on {aggregate!r} stream {stream!r}"
    return repr(intent)


class _Assumed(Exception):
    """A batch that took streams for new unread failed: it is made again, reading them."""


#: After how many batches in a row whose emitted streams a read found all new a
#: follower takes them for new unread (see Follower._prepare).
_ASSUME_AFTER = 8


class Follower:
    """The step of one follower application, shared by every runner.

    ``application`` is the follower; ``leaders`` maps each application it
    follows to an :class:`Application` reading that leader's store (its codec
    decodes the leader's events).  ``batch_size`` bounds how many
    notifications go into one transaction, and ``batch_bytes`` the sum of
    their stored payloads' sizes (a batch takes at least one notification).
    The log is read ``batch_size`` rows at a time and cut at ``batch_bytes``:
    this bounds what a batch decodes, the events it makes and encodes, and
    its commit; not the one read, which holds up to ``batch_size`` payloads
    until the cut lets the rest go.

    A policy error stops only this follower (see :attr:`error`), after
    committing the effects of the notifications before the failed one; the
    application's ``on_error`` directive may instead retry it after a delay,
    or skip it, recording a :class:`PolicySkipped` in :data:`SKIPS_STREAM`.

    A runner keeps its followers in ``runner.followers``, by unit (the
    application's name, with ``#i`` for partition ``i``).  What each has
    done in this process: :attr:`processed` notifications, :attr:`conflicts`
    (batches read again after another writer moved first), :attr:`reread`
    (batches made again because a stream taken for new had events, see
    :meth:`_prepare`), :attr:`failures` and :attr:`error`.
    """

    def __init__(
        self,
        application: Application,
        leaders: Mapping[str, Application],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        partition: int = 0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        app = application.app
        if app.policy is None:
            raise DefinitionError(f"application {app.name!r} has no policy to follow with")
        check_count("batch_size", batch_size, 1)
        check_count("batch_bytes", batch_bytes, 1)
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
        self.batch_bytes = batch_bytes
        self.partition = partition
        self.partitions = app.partitions
        #: The name each leader's position is tracked under (see :func:`fes.system.tracking_key`).
        self.tracking: dict[str, str] = {
            leader: tracking_key(leader, partition, app.partitions) for leader in self.leaders
        }
        self._monotonic = monotonic
        self._policy = app.policy
        self._aggregates = {a.name: a for a in app.aggregates}
        self._plain_causes = application.codec._plain_causes
        # the aggregates a batch of the application takes as they are (Batch._emit_own)
        self._own = {
            name: a for name, a in self._aggregates.items()
            if application._aggregates.get(name) is a
        }
        #: Why this follower stopped, or None while it runs.
        self.error: PolicyError | None = None
        #: Every policy failure seen, in order (retried, skipped or stopping).
        self.failures: list[PolicyError] = []
        #: The last tracked position seen, per leader.
        self.positions: dict[str, int] = dict.fromkeys(self.leaders, 0)
        #: How many notifications were processed, and batches retried after a conflict.
        self.processed = 0
        self.conflicts = 0
        #: How many batches that took their emitted streams for new were made
        #: again, reading them: one of them had events (see :meth:`_prepare`).
        self.reread = 0
        # per leader, how many batches in a row found every emitted stream new
        # (a follower starts out taking them for new)
        self._new_streams: dict[str, int] = dict.fromkeys(self.leaders, _ASSUME_AFTER)
        # per leader (each leader is stepped by one thread at a time): position -> tries
        self._attempts: dict[str, dict[int, int]] = {leader: {} for leader in self.leaders}
        self._retry_at: dict[str, float] = {}
        # per leader, the stop of this unit the store holds and has not cleared
        # (read from STOPS_STREAM on the first commit or stop)
        self._halted: dict[str, FollowerHalted | None] | None = None
        # leaders whose log was seen to reach this follower's tracked position
        self._verified: set[str] = set()
        # leaders whose tracked position is known to be positions[leader]: this
        # follower read it, or wrote it, and nothing it did since failed.  The
        # next step reads from there without asking the store; another instance
        # that moved it meanwhile makes the batch's commit conflict, and the
        # step then reads it again (see step)
        self._known: set[str] = set()
        # leaders whose last step's read reached the end of the log as it was
        # then, and whose rows were all consumed (see caught_up)
        self._ended: set[str] = set()
        #: The leaders whose log is in this follower's own database, when that
        #: database's writers of this process queue on a lock one thread can
        #: hold (SQLite's; see :class:`Hold`): each batch from one of them is
        #: committed holding it (see :meth:`step`).
        self.holds: dict[str, Hold] = {}
        database = application.database
        if callable(getattr(database, "hold", None)) and callable(
            getattr(database, "unhold", None)
        ):
            for name, reader in self.leaders.items():
                if reader.database is database:
                    self.holds[name] = database  # type: ignore[assignment]

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

    def log_fields(self, leader: str, position: int | None = None) -> dict[str, Any]:
        """The structured fields of this follower's log records (``extra=``).

        ``app`` (the application), ``follower`` (the unit: ``name#i`` for a
        partition), ``leader`` and ``position`` (the leader's notification
        concerned, or the position tracked so far), for a JSON formatter
        or a filter to read as attributes of the :class:`logging.LogRecord`.
        """
        return {
            "app": self.name,
            "follower": self.unit,
            "leader": leader,
            "position": self.positions.get(leader, 0) if position is None else position,
        }

    def check_layout(self) -> None:
        """Refuse to run if the store holds positions tracked under other partitions.

        Changing an application's number of partitions would start the new
        partitions from position 0 and process events a second time.
        """
        tracked = self.application.store.tracked()
        for leader in self.leaders:
            other = foreign_tracking(tracked, leader, self.partitions)
            if other:
                raise ConfigurationError(
                    f"application {self.name!r} tracks {leader!r} under {', '.join(other)}, "
                    f"which another number of partitions wrote; with {self.partitions} it "
                    "would process those events again. Keep the number of partitions: fes "
                    "cannot yet move tracked positions from one number to another"
                )

    # --- the step -------------------------------------------------------------

    def retry_at(self, leader: str) -> float | None:
        """The monotonic time before which ``leader``'s failed event is not retried."""
        return self._retry_at.get(leader)

    def step(self, leader: str) -> int:
        """Process the next batch of ``leader``'s notifications.

        Returns how many notifications were consumed (processed or
        skipped); 0 when caught up, stopped, or waiting to retry.

        For a leader in :attr:`holds`, the batch's commit is made holding
        the database's writer lock, and the notifications committed between
        the read and the taking of the lock (the leader's, in a burst) join
        the batch first, up to its bounds: they cost no commit of their own.
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
        hold = self.holds.get(leader)
        # known: trusted until this step ends well (a failure, a conflict or a
        # store error may have left the store elsewhere)
        known = leader in self._known
        self._known.discard(leader)
        self._ended.discard(leader)
        while True:
            if known:
                previous = self.positions[leader]
                known = False  # a conflict below reads it from the store
            else:
                previous = store.last_tracked(key)
                if previous != self.positions[leader]:
                    # another instance moved it (or this one is new): the stop records it
                    # may have written since this one looked are read again
                    self._halted = None
                self.positions[leader] = previous
            seen = -1 if hold is None else hold.generation
            read = reader.store.read_log(previous, limit=self.batch_size)
            rows = _within(read, self.batch_bytes)
            if not rows:
                if previous and leader not in self._verified:
                    self._check_behind_leader(leader, reader, previous)
                if self.error is None:
                    self._known.add(leader)
                    self._ended.add(leader)
                return 0
            telemetry = _telemetry.active()
            # a batch cut short, by count or by bytes, has no room for more
            late = hold if len(rows) == len(read) < self.batch_size else None
            try:
                if telemetry is None:
                    consumed = self._process(leader, reader, previous, rows, late, seen)
                else:  # in a span, and counted
                    consumed = telemetry.batch(
                        self, leader, previous, len(rows), _CONFLICTS,
                        partial(self._process, leader, reader, previous, rows, late, seen),
                    )
            except _CONFLICTS as conflict:
                # another writer moved a stream, or another instance of this follower
                # processed these notifications: start again from what the store holds
                self.conflicts += 1
                logger.debug("%s: %s; reading %r again", self.name, conflict, leader,
                             extra=self.log_fields(leader, previous))
                continue
            self.processed += consumed
            if (
                self.error is None
                and leader not in self._retry_at
                and self.positions[leader] >= rows[-1].position
            ):
                # every row consumed (and any the hold let in after them): a
                # short read reached the log's end as it was then
                self._known.add(leader)
                if len(rows) == len(read) < self.batch_size:
                    self._ended.add(leader)
            return consumed

    def forget_position(self, leader: str) -> None:
        """Make the next step of ``leader`` ask the store for the tracked position.

        A follower otherwise trusts the position its own last batch left,
        and finds out that another instance moved it only when its next
        commit conflicts.  The simulation's redelivery fault uses this: the
        store then answers with a stale position, as a failed-over replica
        might.
        """
        self._known.discard(leader)

    def caught_up(self, leader: str) -> bool:
        """Whether the last step reached the end of ``leader``'s log, as it was when read.

        True after a step that read fewer notifications than ``batch_size``
        (all within ``batch_bytes``) and consumed them all, or read none: a
        threaded runner over PostgreSQL then waits for the leader's next
        notification rather than stepping again at once to find nothing.
        False after a failure or a conflict.
        """
        return leader in self._ended

    def _check_behind_leader(self, leader: str, reader: Application, previous: int) -> None:
        """Stop if this follower tracked ``leader`` past the end of the leader's log.

        That log is not the one it followed: a wrong store for the leader, or
        one restored from an older backup.  Going on would skip the new
        log's events up to the tracked position, silently.
        """
        last = reader.store.last_position()
        if last >= previous:
            self._verified.add(leader)
            return
        error = ConfigurationError(
            f"{self.unit!r} has processed {leader!r} up to position {previous}, but the "
            f"log of {leader!r} it reads ends at position {last}: this is not the log it "
            "followed (a wrong store for the leader, or one restored from an older "
            "backup). Going on would skip that log's events up to position "
            f"{previous}; point it at the leader's store"
        )
        self._stop(PolicyError(self.name, leader, previous, error))

    def _process(
        self,
        leader: str,
        reader: Application,
        previous: int,
        rows: Sequence[StoredEvent],
        hold: Hold | None = None,
        seen: int = -1,
    ) -> int:
        # With ``hold``, the commit is made holding it, after what was committed
        # since the read (the database's generation then was ``seen``).
        plans, streams, emitted = self._plan(reader, rows)
        if emitted and self._new_streams[leader] >= _ASSUME_AFTER:
            # the last batches' emitted streams were all new: take these for new too
            batch = self.application.batch()
            try:
                self._prepare(batch, leader, streams, emitted)
                return self._fill(batch, leader, reader, previous, rows, plans, hold, seen)
            except _Assumed:
                pass
            except ConcurrencyError as conflict:
                if conflict.stream not in batch._assumed:
                    raise  # another writer moved a stream this batch read
            # a stream taken for new had events (or the batch failed with one taken
            # so): nothing was stored; the plans again (the first making let go of
            # what it used, see _fill), every stream read
            self._new_streams[leader] = 0
            self.reread += 1
            plans, streams, emitted = self._plan(reader, rows)
        batch = self.application.batch()
        self._prepare(batch, leader, streams, emitted)
        return self._fill(batch, leader, reader, previous, rows, plans, hold, seen)

    def _prepare(self, batch: Batch, leader: str, streams: list[str], emitted: list[str]) -> None:
        """Read in one query which of ``streams`` are new, or take ``emitted`` for new.

        Most policies emit their events to new streams (a certificate per
        registration, say), so the read finds them empty every time.  Once
        it has found every stream the batches' ``Emit`` intents name empty
        for :data:`_ASSUME_AFTER` batches in a row, the next batches take
        them for new without it (:meth:`Batch._assume_fresh`), one query
        (over PostgreSQL, one round trip) fewer per batch.  What keeps that
        safe: the commit appends version 1 to each of them, which a stream
        with events refuses, and nothing is stored; :meth:`_process` then
        makes the batch again with every stream read.  A ``Do`` decides on
        its stream's state, so its streams are always read.
        """
        if self._new_streams[leader] >= _ASSUME_AFTER:
            batch._assume_fresh(emitted)
            if len(emitted) < len(streams):
                # a Do's streams, read (with none, nothing is left to read: an
                # emitted id no store keeps is not taken for new, and prefetch skips it)
                batch.prefetch([s for s in streams if s not in batch._assumed])
            return
        batch.prefetch(streams)
        if emitted:
            fresh = batch._fresh
            if all(s in fresh for s in emitted):
                self._new_streams[leader] += 1
            else:
                self._new_streams[leader] = 0

    def _fill(
        self,
        batch: Batch,
        leader: str,
        reader: Application,
        previous: int,
        rows: Sequence[StoredEvent],
        plans: _Plans,
        hold: Hold | None,
        seen: int,
    ) -> int:
        """:meth:`_process` into ``batch``, whose streams :meth:`_prepare` readied."""
        done = previous
        consumed = 0  # and the index of the row in hand
        telemetry = _telemetry.active()
        upstreams, outcomes = plans
        # the plans end at a failure: the rows after it are not taken
        for row, upstream, outcome in zip(rows, upstreams, outcomes, strict=False):
            if upstream is None:
                if isinstance(outcome, Exception):  # the row could not be decoded
                    self._commit(batch, leader, done, previous)
                    failure = PolicyError(self.name, leader, row.position, outcome)
                    failure.__cause__ = outcome
                    self._stop(failure)
                    return consumed
                done = row.position  # nothing for this policy: tracked, not processed
                consumed += 1
                continue
            # the batch encodes each event as it is added: an event it refuses
            # (EncodeError) is this notification's error, like any the policy raises
            mark = batch._mark()  # savepoint(): this batch is open, the follower made it
            try:
                if telemetry is None:  # _handle, without its call
                    if isinstance(outcome, Exception):
                        raise outcome
                    self._perform(batch, leader, upstream, outcome)
                else:
                    self._handle(batch, leader, upstream, outcome, telemetry)
            except Exception as error:
                if isinstance(error, StoreError) and not isinstance(
                    error, EncodeError | DecodeError
                ):
                    raise  # the store failed, not the policy: the runner tries the batch again
                if self._assumed_wrong(batch, outcome, error):
                    # a stream taken for new had events, which may be why: the batch
                    # is made again, every stream read
                    raise _Assumed(f"{leader!r} at {row.position}: {describe(error)}") from error
                # an event that cannot be encoded, or read back (the follower's own
                # stream, without its keys), fails the same way each time: not retried
                batch.rollback(mark)
                if self.application.store.last_tracked(self.tracking[leader]) != previous:
                    # A rival instance processed these notifications: a command that
                    # refused saw its effects, so this is no policy failure.
                    raise _Moved(f"{leader!r} was processed past {previous} meanwhile") from None
                self._commit(batch, leader, done, previous)
                return consumed + self._failed(leader, done, upstream, error)
            # Let go of what the batch does not keep (the upstream event, the
            # intents) as soon as it is used, not at the commit: a batch's
            # objects are counted and walked by the garbage collector for as long
            # as they live, and these would be half of them.
            upstreams[consumed] = None
            outcomes[consumed] = ()
            done = row.position
            consumed += 1
        if hold is None:
            self._commit(batch, leader, done, previous)
        else:
            held = hold.hold(-1)
            try:
                if hold.generation != seen:  # something was committed since the read
                    done, late = self._late(batch, leader, reader, rows)
                    consumed += late
                self._commit(batch, leader, done, previous)
            finally:
                hold.unhold(held)
        tries = self._attempts[leader]
        if tries:
            for position in [p for p in tries if p <= done]:
                del tries[position]
        return consumed

    def _assumed_wrong(
        self, batch: Batch, outcome: Sequence[Intent] | Exception, error: Exception
    ) -> bool:
        """Whether a stream the failed intents name was taken for new and has events.

        Then the failure may come of folding their events on the wrong state.
        Otherwise it is the policy's own, found as it would be with the
        streams read: one failure, reported once (one span, one count), not
        once for each making of the batch.
        """
        if isinstance(error, _Assumed):
            return True
        assumed = batch._assumed
        if not assumed or isinstance(outcome, Exception):  # the policy itself raised
            return False
        named = [
            stream for stream in (getattr(i, "stream", None) for i in outcome)
            if isinstance(stream, str) and stream in assumed
        ]
        return bool(named) and any(self.application.store.stream_versions(named).values())

    def _plan(
        self, reader: Application, rows: Sequence[StoredEvent]
    ) -> tuple[_Plans, list[str], list[str]]:
        """Each of ``rows``'s upstream event and the policy's intents, up to a failure.

        The policy is pure, so it is called on every notification first; the
        streams the intents act on (returned too, each once, in the order
        first named) are then read in one query, not one each, or taken for
        new (see :meth:`_prepare`): those only ``Emit`` names, returned third.
        A row with no upstream event is fes's own or another partition's, or
        could not be read (its outcome is the error); a failure ends the plans.
        """
        upstreams: list[Recorded[Any] | None] = []
        outcomes: list[Sequence[Intent] | Exception] = []
        up, out = upstreams.append, outcomes.append
        partitions, partition = self.partitions, self.partition
        policy, name, decode = self._policy, self.name, reader.recorded
        streams: dict[str, None] = {}
        decided: set[str] = set()
        for row in rows:
            if row.topic.startswith(INTERNAL_PREFIX) or (
                partitions > 1 and partition_of(row.stream, partitions) != partition
            ):
                up(None)  # fes's own event, or another partition's
                out(())
                continue
            try:
                recorded = decode(row)
            except (DecodeError, UpcastError) as error:
                up(None)
                out(error)
                break
            try:
                result = policy(recorded)
                # what intents_of makes of a list, without its checks of other shapes
                intents = (
                    tuple(result) if result.__class__ is list
                    else intents_of(f"the policy of {name!r}", result)
                )
            except Exception as error:
                up(recorded)
                out(error)
                break
            up(recorded)
            out(intents)
            for intent in intents:
                if intent.__class__ is Emit:
                    streams[intent.stream] = None
                elif isinstance(intent, _ACTING):
                    streams[intent.stream] = None
                    if not isinstance(intent, Emit):
                        decided.add(intent.stream)
        named = list(streams)
        return (upstreams, outcomes), named, (
            named if not decided else [s for s in named if s not in decided]
        )

    def _handle(
        self,
        batch: Batch,
        leader: str,
        upstream: Recorded[Any],
        intents: Sequence[Intent] | Exception,
        telemetry: _telemetry.Telemetry | None,
    ) -> None:
        """:meth:`_perform` the intents; traced, in a span continuing the upstream trace.

        ``intents`` may be the error the policy raised: it is raised, in that
        span, whose status is then ERROR (the upstream trace shows the failure).
        """
        if isinstance(intents, Exception):
            if telemetry is not None:
                telemetry.handle(self, leader, upstream, 1, partial(_reraise, intents))
            raise intents
        if telemetry is None:
            self._perform(batch, leader, upstream, intents)
        else:
            telemetry.handle(self, leader, upstream, len(intents), partial(
                self._perform, batch, leader, upstream, intents))

    def _late(
        self, batch: Batch, leader: str, reader: Application, rows: Sequence[StoredEvent]
    ) -> tuple[int, int]:
        """Add to ``batch`` the notifications after ``rows`` committed since they were read.

        Called holding the writer lock, every one of ``rows`` processed:
        what it adds, up to the batch's bounds, is every commit made while
        this follower queued for the lock.  It stops before a notification
        that fails (it cannot be read, the policy raises, the batch refuses
        its events): the next step reads it first and handles it as any.
        Returns the last position taken and how many were.
        """
        done = rows[-1].position
        budget = self.batch_bytes - sum(map(len, map(_payload, rows)))
        more = reader.store.read_log(done, limit=self.batch_size - len(rows))
        within = 0
        for row in more:
            budget -= len(row.payload)
            if budget < 0:
                break
            within += 1
        more = more[:within]
        plans, streams, emitted = self._plan(reader, more)
        if streams:
            if batch._assumed:  # as the batch's first part was readied
                batch._assume_fresh(emitted)
                streams = [s for s in streams if s not in batch._assumed]
            if streams:
                batch.prefetch(streams)
        taken = 0
        telemetry = _telemetry.active()
        for row, upstream, outcome in zip(more, *plans, strict=False):
            if isinstance(outcome, Exception):
                break  # the next step reads it first, and reports it
            if upstream is not None:
                mark = batch.savepoint()
                try:
                    self._handle(batch, leader, upstream, outcome, telemetry)
                except Exception as error:
                    if isinstance(error, StoreError) and not isinstance(
                        error, EncodeError | DecodeError
                    ):
                        raise
                    batch.rollback(mark)
                    break  # the next step reads it first, and reports it
            done = row.position
            taken += 1
        return done, taken

    def _commit(self, batch: Batch, leader: str, done: int, previous: int) -> None:
        if done <= previous:
            return
        resumed = self._clear_stop(batch, leader, done)
        if (telemetry := _telemetry.active()) is not None:
            telemetry.written(len(batch))
        tracking = Tracking(self.tracking[leader], done, previous)
        application = self.application
        try:
            if (
                type(application).commit is Application.commit
                and "commit" not in vars(application)
            ):
                # what commit does, without the list of Recorded it returns and nobody reads
                check_tracking(tracking)
                application._record_untold(batch.pending, tracking, batch._runs)
            else:
                # through commit, the one way events are recorded (a wrapper of it sees these)
                application.commit(batch, tracking=tracking)
        except OutcomeUnknown as error:
            # the caller's advice is not execute's: the tracking position went with the batch
            raise OutcomeUnknown(
                f"record {self.unit}'s batch of {leader!r} (to position {done}) with its "
                "tracking position", error.url, error.reason, _STEP_AGAIN,
            ) from error
        if resumed:
            self._halted_now()[leader] = None
        self.positions[leader] = done

    def _halted_now(self) -> dict[str, FollowerHalted | None]:
        if self._halted is None:
            stops = recorded_stops(self.application)
            self._halted = {leader: stops.get((self.unit, leader)) for leader in self.leaders}
        return self._halted

    def _clear_stop(self, batch: Batch, leader: str, done: int) -> bool:
        """Add to ``batch`` the end of this unit's recorded stop on ``leader``, if any."""
        if self._halted_now()[leader] is None:
            return False
        batch.emit(skips, STOPS_STREAM, [FollowerResumed(self.unit, leader, done)])
        return True

    def _perform(
        self,
        batch: Batch,
        leader: str,
        recorded: Recorded[Any],
        intents: Sequence[Intent],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Add the intents' events to ``batch``, with the upstream's (or these) headers."""
        cause = f"{leader}:{recorded.stream}@{recorded.version}"  # leader:recorded.id
        upstream = recorded.metadata
        correlation = upstream.correlation_id or cause
        # one Metadata per upstream event, shared by all the events it causes
        metadata = (
            new_metadata(correlation, cause, upstream.headers) if headers is None
            else Metadata(correlation, cause, headers)  # a mapping of the tracer's
        )
        # and, unless the codec seals it with each row, stored once for them all, when
        # first needed (no headers: the ids are str, nothing in it can be refused)
        plain = metadata.headers is _NO_HEADERS or not metadata.headers
        meta: bytes | None = None
        aggregates, own = self._aggregates, self._own
        for intent in intents:
            try:
                if intent.__class__ is Emit or isinstance(intent, Emit):
                    aggregate = intent.aggregate
                    events = intent.events
                    if own.get(aggregate.name) is aggregate and events.__class__ is tuple:
                        # the application's own aggregate (checked), a tuple of events
                        if plain and meta is None:
                            meta = self._plain_causes(correlation, cause)
                        batch._emit_own(aggregate, intent.stream, list(events), metadata, meta)
                        continue
                    if aggregate.name not in aggregates:
                        self._check_aggregate(aggregate.name)
                    batch.emit(aggregate, intent.stream, intent.events, metadata)
                elif isinstance(intent, Do):
                    if intent.stream in batch._assumed:  # named by an Emit in this batch
                        raise _Assumed(f"a Do on {intent.stream!r}, taken for new unread")
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
            except Exception as error:
                if isinstance(intent, _ACTING) and (
                    not isinstance(error, _Assumed | StoreError)
                    or isinstance(error, EncodeError | DecodeError)
                ):
                    # which intent failed: the error may come from a projector or a
                    # command, far from the policy that asked for it
                    error.add_note(f"while performing {_shown(intent)}")
                raise

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
        if (telemetry := _telemetry.active()) is not None:
            telemetry.policy_error(self, leader, error, position)
        fields = self.log_fields(leader, position)
        directive: Directive
        try:
            directive = self.app.on_error(error, recorded, attempt)
        except Exception as handler_error:
            logger.error("%s: on_error raised %s; stopping", self.name, describe(handler_error),
                         extra=fields)
            directive = Stop()
        if isinstance(directive, Retry):
            logger.warning("%s (attempt %d); retrying in %ss", failure, attempt, directive.delay,
                           extra=fields)
            self._retry_at[leader] = self._monotonic() + max(directive.delay, 0.0)
            return 0
        if isinstance(directive, Skip):
            logger.warning("%s (attempt %d); skipping it", failure, attempt, extra=fields)
            self._skip(leader, previous, recorded, error, attempt)
            return 1
        if not isinstance(directive, Stop):
            logger.error("%s: on_error returned %r, not a directive", self.name, directive,
                         extra=fields)
        self._stop(failure)
        return 0

    def _stop(self, failure: PolicyError) -> None:
        # a follower stopped by how it is set up (its leader's log) has no line of
        # user code to point at
        # nor does one that cannot read an event: that is the upcaster's doing
        # (its line) or the codec's (where it refused), never the policy's
        error = failure.error
        where = (
            "" if isinstance(error, ConfigurationError)
            else origin(error) if isinstance(error, DecodeError | UpcastError)
            else origin(error, self._policy)
        )
        logger.error("%s%s; follower %r stopped", failure, where and f" (at {where})", self.unit,
                     exc_info=logger.isEnabledFor(logging.DEBUG) and failure.error,
                     extra=self.log_fields(failure.leader, failure.position))
        # the traceback as the source is now: `fes run --traceback` prints it at exit,
        # perhaps after the file was fixed (the record keeps the same text)
        fields = stop_fields(failure.error, self.application.clock)
        failure.traceback = fields["traceback"]
        # recorded first: whoever sees the error (wait_for, a status page) may read
        # the record at once, in this store, as any host does
        try:
            self._record_stop(failure, where, fields)
        finally:
            self.error = failure

    def _record_stop(self, failure: PolicyError, where: str, fields: dict[str, Any]) -> None:
        """Record the stop in this follower's own store, so that any host can see it."""
        note = FollowerHalted(
            unit=self.unit,
            leader=failure.leader,
            position=failure.position,
            where=where,
            **fields,
        )
        for _ in range(20):
            try:
                batch = self.application.batch()
                self._halted = None  # read again: a rival instance may have recorded it
                if self._halted_now()[failure.leader] == note:
                    return  # stopped there before (a restart, a rival): keep its time
                batch.emit(skips, STOPS_STREAM, [note])
                self.application.commit(batch)
            except ConcurrencyError:
                continue  # another partition recorded its own stop first
            except Exception as unrecorded:
                logger.warning("%s: the stop could not be recorded: %s", self.unit,
                               describe(unrecorded),
                               extra=self.log_fields(failure.leader, failure.position))
                return
            self._halted_now()[failure.leader] = note
            return

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
            leader, recorded.position, recorded.id, recorded.topic, describe(error), attempts
        )
        metadata = Metadata(
            correlation_id=recorded.metadata.correlation_id or cause, causation_id=cause
        )
        tracking = Tracking(self.tracking[leader], recorded.position, previous)
        while True:
            batch = self.application.batch()
            batch.emit(skips, SKIPS_STREAM, [note], metadata)
            resumed = self._clear_stop(batch, leader, recorded.position)
            try:
                self.application.commit(batch, tracking=tracking)
                if resumed:
                    self._halted_now()[leader] = None
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
        self._known.clear()
        self._ended.clear()
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
