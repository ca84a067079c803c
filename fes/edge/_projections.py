"""Projections: keep a view (a pure fold of an application's log) stored with its position.

A :class:`Projection` reads its application's notification log after the
position its view has reached, folds the recorded events into the view's
state with the view's pure ``apply``, and stores the new state together with
the new position in one atomic compare-and-set (``store.save_view``).  Two
instances keeping the same view never fold an event twice: the slower one's
save is refused and it reloads.

Because the fold is pure, :meth:`Projection.rebuild` (from position 0)
gives the same state as the incremental updates did; and
:meth:`Projection.wait_for` lets a writer read its own writes.  The stored
state is keyed by the view's name only: a view whose ``apply`` or
``initial`` changed keeps the state its old code folded, and is folded
from position 0 only under a new name.

The state is encoded by the application's codec, like a snapshot: its type
is read from the annotations of the view's ``apply`` (or of ``initial``), and
it is compressed and encrypted as the application's events are.  A stored
state that no longer decodes (its key left the ring, for one) is folded again
from the log, with a warning, and stored anew at the view's next save.

A view whose ``apply`` raises (or that cannot read an event it folds) stops,
as a follower stops on a policy error: the events before the failed one are
stored, :attr:`Projection.error` says where and why, one ERROR line is
logged, and a :class:`fes.edge._skips.ViewHalted` is recorded in the
application's reserved stream ``fes.stops`` so that ``fes apps`` on any
host shows it.  Retrying would only fail again: the fold is pure.  Once the
view gets past that position (after a fix, on a restart), a
:class:`fes.edge._skips.ViewResumed` clears the record.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Generic, TypeVar

from fes.aggregates import Aggregate
from fes.errors import (
    ConcurrencyError,
    ConfigurationError,
    DecodeError,
    DuplicateTracking,
    EncodeError,
    FollowerStopped,
    OutcomeUnknown,
    StoreError,
    UpcastError,
    ViewError,
)
from fes.views import View

from . import _telemetry
from ._application import Application, check_count
from ._follower import describe, origin, stop_fields
from ._skips import (
    STOPS_STREAM,
    ViewHalted,
    ViewResumed,
    is_internal,
    recorded_error,
    recorded_view_stops,
    skips,
)
from .stores._base import StoredEvent, Tracking

__all__ = ["Projection"]

logger = logging.getLogger("fes")
#: How often, in seconds, a wait for a view reads the stops recorded in its store.
_LOOK_EVERY = 0.25

V = TypeVar("V")

#: Recorded events folded, at most, between two saves of a view.
DEFAULT_VIEW_BATCH = 1000


class Projection(Generic[V]):
    """One view of one application, kept in that application's store.

    ``batch_size`` bounds how many notifications are folded between two
    saves of the state.
    """

    def __init__(
        self, application: Application, view: View[V], *, batch_size: int = DEFAULT_VIEW_BATCH
    ) -> None:
        if not isinstance(view, View):
            raise ConfigurationError(f"a Projection keeps a fes.View, not {view!r}")
        check_count("batch_size", batch_size, 1)
        self.application = application
        self.view = view
        self.batch_size = batch_size
        # The codec encodes states of aggregates; a view's state is typed by its apply.
        self._shape: Aggregate[V] = Aggregate(
            name=f"view.{view.name}", initial=view.initial, apply=view.apply
        )
        self._cached: tuple[V, int] = (view.initial, 0)
        #: The highest position this projection knows the stored view has reached.
        self.seen = 0
        #: Why the view stopped (its ``apply`` raised), or None while it runs.
        self.error: ViewError | None = None
        # this view's stop recorded in the store, if any (read on the first save)
        self._halted: ViewHalted | None = None
        self._looked = False

    def __repr__(self) -> str:
        return f"Projection({self.application.name!r}, {self.view.name!r})"

    @property
    def _stream(self) -> str:
        return f"view:{self.view.name}"

    def _encode(self, state: V, position: int) -> bytes:
        return self.application.codec.encode_state(
            self._shape, state, stream=self._stream, version=position
        )

    def _decode(self, payload: bytes, position: int) -> V:
        state: V = self.application.codec.decode_state(
            self._shape, payload, stream=self._stream, version=position
        )
        return state

    def load(self) -> tuple[V, int]:
        """The stored state and the position it has reached ((initial, 0) if none)."""
        found = self.application.store.load_view(self.view.name)
        if found is None:
            return self.view.initial, 0
        payload, position = found
        cached_state, cached_position = self._cached
        if position == cached_position and position:
            return cached_state, position
        try:
            state = self._decode(payload, position)
        except DecodeError as error:
            # A stored view is a fold of the log, kept to save work: one that no
            # longer decodes (its key left the ring, it was written in the clear,
            # its type changed) is folded again from the log up to its position,
            # which are the same events.  The next save stores it under the codec
            # of today.
            logger.warning(
                "rebuilding view %r of %r up to position %d from the log: %s",
                self.view.name, self.application.name, position, error,
            )
            state = self.rebuild(to=position)
        self._cached = (state, position)
        self.seen = max(self.seen, position)
        return state, position

    def state(self) -> V:
        """The stored state of the view."""
        return self.load()[0]

    def position(self) -> int:
        """The position of the application's log the stored view has reached."""
        found = self.application.store.load_view(self.view.name)
        position = 0 if found is None else found[1]
        self.seen = max(self.seen, position)
        return position

    def step(self) -> int:
        """Fold the next batch of notifications into the view and store it.

        Returns how many notifications were consumed: 0 when caught up.
        """
        telemetry = _telemetry.active()
        if telemetry is not None:  # in a span
            return telemetry.view_step(
                self.application.name, self.view.name, self, self._step
            )
        return self._step()

    def _step(self) -> int:
        if self.error is not None:
            return 0  # stopped: see error
        state, position = self.load()
        application = self.application
        rows = application.store.read_log(position, limit=self.batch_size)
        if not rows:
            self.seen = position
            return 0
        new, last, failed = self._fold(rows, state, position)
        if last > position:
            try:
                encoded = self._encode(new, last)
            except EncodeError as error:
                # the state cannot be stored: the view's definition, not the store
                self._stop(ViewError(application.name, self.view.name, last, error))
                return 0
            try:
                application.store.save_view(
                    self.view.name, encoded, Tracking(application.name, last, position)
                )
            except DuplicateTracking:
                return len(rows)  # another instance saved first: reload on the next step
            except OutcomeUnknown as error:
                # the caller's advice is not execute's: the position went with the state
                raise OutcomeUnknown(
                    f"save view {self.label} (to position {last})", error.url, error.reason,
                    "stepping the view again is safe (run_until_quiet, say): it reads its "
                    "stored position first, and so sees which",
                ) from error
            self._cached = (new, last)
            self.seen = last
            self._clear_stop(last)
        if failed is not None:
            self._stop(failed)
        return sum(1 for r in rows if r.position <= last)

    def _fold(
        self, rows: list[StoredEvent], state: V, position: int
    ) -> tuple[V, int, ViewError | None]:
        """Fold ``rows`` into ``state``: the state, the position reached, and the failure
        that ended the fold early (None when every row was folded)."""
        recorded = self.application.recorded
        apply = self.view.apply
        done = position
        for row in rows:
            if not is_internal(row.topic):
                try:
                    state = apply(state, recorded(row))
                except Exception as error:
                    if isinstance(error, StoreError) and not isinstance(
                        error, EncodeError | DecodeError
                    ):
                        raise  # the store's trouble: the runner tries again
                    failure = ViewError(
                        self.application.name, self.view.name, row.position, error
                    )
                    failure.__cause__ = error
                    return state, done, failure
            done = row.position
        return state, done, None

    # --- stops --------------------------------------------------------------------

    @property
    def label(self) -> str:
        """``app/view``: how runners and ``fes apps`` name this view."""
        return f"{self.application.name}/{self.view.name}"

    def log_fields(self, position: int | None = None) -> dict[str, Any]:
        """The extra fields of this view's log records."""
        return {"app": self.application.name, "view": self.view.name,
                "position": self.seen if position is None else position}

    def _stop(self, failure: ViewError) -> None:
        error = failure.error
        where = origin(error) if isinstance(error, DecodeError | UpcastError) else origin(
            error, self.view.apply
        )
        logger.error("%s%s; view %r stopped", failure, where and f" (at {where})", self.label,
                     exc_info=logger.isEnabledFor(logging.DEBUG) and failure.error,
                     extra=self.log_fields(failure.position))
        fields = stop_fields(failure.error, self.application.clock)
        failure.traceback = fields["traceback"]  # as the follower's (see Follower._stop)
        try:
            self._record_stop(failure, where, fields)
        finally:
            self.error = failure

    def _stop_now(self) -> ViewHalted | None:
        if not self._looked:
            self._halted = recorded_view_stops(self.application).get(self.view.name)
            self._looked = True
        return self._halted

    def _record_stop(self, failure: ViewError, where: str, fields: dict[str, Any]) -> None:
        """Record the stop in the application's store, so that any host can see it."""
        note = ViewHalted(view=self.view.name, position=failure.position, where=where, **fields)
        self._note(note)

    def _clear_stop(self, position: int) -> None:
        """Once past a recorded stop, record that the view runs again."""
        halted = self._stop_now()
        if halted is not None and position >= halted.position:
            self._note(ViewResumed(self.view.name, position))

    def _note(self, note: ViewHalted | ViewResumed) -> None:
        for _ in range(20):
            try:
                self._looked = False  # read again: another instance may have recorded it
                halted = self._stop_now()
                if note == halted or (isinstance(note, ViewResumed) and halted is None):
                    return  # recorded before (a restart, a rival): keep its time
                batch = self.application.batch()
                batch.emit(skips, STOPS_STREAM, [note])
                self.application.commit(batch)
            except ConcurrencyError:
                continue  # another stop or resumption took the next version
            except Exception as unrecorded:
                logger.warning("%s: the view's %s could not be recorded: %s", self.label,
                               "stop" if isinstance(note, ViewHalted) else "resumption",
                               describe(unrecorded), extra=self.log_fields())
                return
            self._halted = note if isinstance(note, ViewHalted) else None
            return

    def resume(self) -> None:
        """Forget a stop, so the next step tries the failed event again."""
        self.error = None

    def catch_up(self) -> V:
        """Fold and store everything visible now; return the state."""
        while self.step():
            pass
        return self.load()[0]

    def rebuild(self, *, to: int | None = None) -> V:
        """The state folded from position 0 (up to ``to``) by the view's code of today.

        Nothing is stored: the stored state stays what it was.  Equal to the
        stored state at the same position while the view's code is the one
        that folded it, since the fold is pure.  To replace a stored view
        after its code changed, give the changed view a new name: a runner
        folds it from position 0.
        """
        state = self.view.initial
        after = 0
        store = self.application.store
        recorded = self.application.recorded
        while True:
            rows = store.read_log(after, limit=self.batch_size, to=to)
            if not rows:
                return state
            state = self.view.fold(
                (recorded(r) for r in rows if not is_internal(r.topic)), state
            )
            after = rows[-1].position

    def wait_for(self, position: int, timeout: float = 10.0) -> bool:
        """Wait until the stored view has reached ``position``; False after ``timeout``.

        To read your own writes: execute a command, then wait for the
        position of its last recorded event before reading :meth:`state`.
        Something else (a runner) must be keeping the view up to date.  A
        view that stopped before ``position`` (its ``apply`` raised) raises
        :class:`fes.errors.FollowerStopped` naming it, rather than waiting:
        whether it stopped here, or in the process that keeps it (as that
        process recorded it in the application's store, read at once and
        four times a second while waiting; its ``ViewError`` then holds a
        ``RuntimeError`` with the recorded error's text).
        """
        deadline = time.monotonic() + timeout
        pause = 0.002
        looked = None  # when the recorded stops were last read
        while self.position() < position:
            failure = self.error
            if failure is None or failure.position > position:
                now = time.monotonic()
                if looked is None or now - looked >= _LOOK_EVERY or now >= deadline:
                    failure, looked = self._recorded_failure(), now
            if failure is not None and failure.position <= position:
                raise FollowerStopped({self.label: failure}) from failure
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.05)
        return True

    def _recorded_failure(self) -> ViewError | None:
        """The stop of this view recorded in the store (by any process), as a ViewError."""
        halted = recorded_view_stops(self.application).get(self.view.name)
        if halted is None:
            return None
        failure = ViewError(
            self.application.name, self.view.name, halted.position, recorded_error(halted)
        )
        failure.traceback = halted.traceback
        return failure
