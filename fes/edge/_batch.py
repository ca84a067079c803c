"""A batch: events to record together, across streams, in one atomic append.

A :class:`Batch` keeps, per stream, the state as loaded and the events added
to it (a :class:`Pending` slot), encoded as they are added, and a journal of
each change so that a savepoint can be rolled back.  It works through the
small :class:`Writer` protocol, which :class:`fes.edge.Application`
implements, so that this module does not import the application's.
"""

from __future__ import annotations

import itertools
import types
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, cast

from attrs import define, field

from fes._shapes import _Dispatch
from fes.aggregates import Aggregate, Command, decide, returned, wrong_arguments
from fes.errors import (
    CommandMistake,
    ConfigurationError,
    EncodeError,
    FesError,
    StoreError,
    UnhandledEvent,
)
from fes.events import NO_METADATA, Metadata

from .stores._base import Store
from .stores._checks import check_stream, stream_keepable

if TYPE_CHECKING:
    from .codec import Codec

__all__ = [
    "Batch", "Pending", "Plan", "Rows", "Writer", "kinds_of", "new_pending", "plan_of", "taken",
]

S = TypeVar("S")

_FUNCTION = types.FunctionType
#: The first byte of a payload stored as its bare JSON object.
_BARE = 0x7B
#: What a plan knows of an event class: the projector's handler of it, its
#: topic and the function writing its payload (see Codec._bare_writer).
Kind = tuple[Callable[[Any, Any], Any], str, Callable[[Any], bytes]]
#: Encoded events as a batch holds them: each event's topic, payload and
#: stored metadata (None for none), one after another, flat.
Rows = list[str | bytes | None]


class Plan(NamedTuple):
    """How a command of an aggregate runs, worked out once: see :func:`plan_of`.

    ``kinds`` is None when the command takes the general way, :func:`fes.decide`
    then the aggregate's fold and the codec's encode.  Otherwise the command
    is a plain function and ``classes`` the state classes it declares (None:
    it declares none), so that a result of one event of a class in ``kinds``
    is checked, folded and encoded with a dictionary lookup: the events the
    aggregate owns are exactly those classes' instances, and what ``kinds``
    holds of a class is what decide's checks, the fold and the codec would do
    with an instance of it.  Anything else is handed to the general way.
    """

    aggregate: Aggregate[Any]
    classes: tuple[type, ...] | None
    kinds: Mapping[type, Kind] | None


def kinds_of(aggregate: Aggregate[Any], codec: Codec) -> dict[type, Kind]:
    """What a :class:`Plan` of ``aggregate`` knows of each event class it may take as is.

    A class the aggregate owns, whose handler the projector finds, and whose
    payload the codec stores bare; the others are left to the general way.
    """
    apply = aggregate.apply
    table: dict[type, Kind] = {}
    for kind in aggregate.events:
        if type(apply) is _Dispatch:  # as Aggregate.fold looks a handler up
            handler = apply.handlers.get(kind)
            if handler is None:
                try:
                    handler = apply.inherited(kind)
                except UnhandledEvent:  # e.g. a virtual subclass of an ABC with a handler
                    continue  # the fold refuses it, naming the aggregate
        else:
            handler = apply
        found = codec._bare_writer(kind)
        if found is not None:
            table[kind] = (handler, *found)
    return table


def plan_of(aggregate: Aggregate[Any], command: Command, kinds: Mapping[type, Kind]) -> Plan:
    """The :class:`Plan` of ``command`` on ``aggregate``, whose :func:`kinds_of` is ``kinds``."""
    if command.__class__ is not _FUNCTION:  # a combinator's: decide looks inside
        return Plan(aggregate, None, None)
    check = aggregate._state_check(command)
    if check is None:
        return Plan(aggregate, None, kinds)
    if check.classes is None:  # a hint isinstance cannot test: decide's admits()
        return Plan(aggregate, None, None)
    return Plan(aggregate, check.classes, kinds)


def taken(
    kinds: Mapping[type, Kind], state: Any, events: Any
) -> tuple[Any, Any, str, bytes] | None:
    """A plan's way with ``events``, what a command returned on ``state``, or None.

    One event of a class in ``kinds`` (so decide's checks pass), folded and
    encoded as the aggregate and the codec would: the event, the state after
    it, its topic and its bare payload.  None for anything else, and when
    the handler or the writer fails: the general way then says what failed.
    """
    if events.__class__ is not list or len(events) != 1:
        return None
    (item,) = events
    kind = kinds.get(item.__class__)
    if kind is None:
        return None
    handler, topic, write = kind
    try:
        after = handler(state, item)
        body = write(item)
    except Exception:
        return None
    if not body or body[0] != _BARE:
        return None
    return item, after, topic, body


class Writer(Protocol):
    """What a :class:`Batch` needs of the application it belongs to."""

    @property
    def name(self) -> str:
        """The application's name."""
        ...

    store: Store
    #: ids its new_id() gave that nothing has used yet
    _minted: dict[str, bool]
    #: the plans of the commands it ran, by command (see _plan)
    _plans: dict[Command, Plan]
    #: what a plan knows of each event class, by aggregate name (see kinds_of)
    _kinds: dict[str, dict[type, Kind]]

    def _check(self, aggregate: Aggregate[Any]) -> None: ...

    def _plan(self, aggregate: Aggregate[Any], command: Command) -> Plan: ...

    def _current(self, aggregate: Aggregate[Any], stream: str) -> tuple[Any, int]: ...

    def _encode(
        self, stream: str, version: int, events: list[Any], metadata: Metadata
    ) -> Rows: ...

    def _encode_with_meta(
        self, stream: str, version: int, events: list[Any], meta: bytes
    ) -> Rows: ...


class Pending:
    """A stream's state as loaded, and the events a batch adds to it.

    A plain class with slots, not an attrs class: one is made per command
    that :meth:`Application.execute` runs, on the hot path.  ``rows`` holds
    each event's topic, payload and encoded metadata, made when the event was
    added: only the timestamp is left for the commit.  They are flat, three
    entries per event, not a tuple per event: a batch of commands then keeps
    fewer objects for the garbage collector to count and walk.  It unpacks and
    compares as the tuple of its six fields.

    In a :class:`Batch`, a stream has one slot, changed in place as events are
    added: ``state`` is replaced, and ``events``, ``metadata`` and ``rows`` are
    lists that grow (the batch's journal keeps what a rollback needs to put
    back), so that adding to a stream costs the same however many events it
    already holds, and no new slot is made per command.
    """

    __slots__ = ("aggregate", "events", "metadata", "rows", "state", "version")

    aggregate: Aggregate[Any]
    version: int
    state: Any
    events: Sequence[Any]
    metadata: Sequence[Metadata]
    rows: Sequence[str | bytes | None]

    def __init__(
        self,
        aggregate: Aggregate[Any],
        version: int,
        state: Any,
        events: Sequence[Any] = (),
        metadata: Sequence[Metadata] = (),
        rows: Sequence[str | bytes | None] = (),
    ) -> None:
        self.aggregate = aggregate
        self.version = version
        self.state = state
        self.events = events
        self.metadata = metadata
        self.rows = rows

    def _fields(self) -> tuple[Any, ...]:
        return (self.aggregate, self.version, self.state, self.events, self.metadata, self.rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._fields())

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Pending:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # changed in place: not a key

    def __repr__(self) -> str:
        return (
            f"Pending(aggregate={self.aggregate!r}, version={self.version!r}, "
            f"state={self.state!r}, events={self.events!r}, metadata={self.metadata!r}, "
            f"rows={self.rows!r})"
        )


class _Committed(dict[str, Pending]):
    """A committed batch's ``pending``, its slots kept: the ways a batch adds to a stream refuse.

    In place of the dict, so that the batch's hot paths (one ``pending.get``
    each) need no check of their own: a command or emit after the commit is
    told so, rather than deciding on what was stored.  :meth:`Batch.state`
    still shows each of its streams' states as committed.
    """

    def get(self, stream: str, default: Any = None) -> Any:
        raise ConfigurationError(
            "this batch was committed: its events are stored, and it takes no more; "
            "make a new one with the application's batch()"
        )

    __getitem__ = get


def _not_owned(error: UnhandledEvent, aggregate: Aggregate[Any], stream: str) -> FesError:
    """What to raise for ``error``, met folding events emitted to ``stream``.

    An event of a type the aggregate does not own is a wrong emit, said as
    a command returning one is; a missing handler stays as it was raised.
    """
    owned = aggregate.events
    if owned and not issubclass(error.event_type, owned):
        return CommandMistake(
            f"emitted to stream {stream!r} of aggregate {aggregate.name!r} an event of type "
            f"{error.event_type.__qualname__}, which aggregate {aggregate.name!r} does not "
            "own: emit it to a stream of the aggregate that owns it"
        )
    return error


#: A batch's marks are its journal's length plus this times the rollbacks that
#: took entries back before them (no journal comes near it in length) ...
_EPOCH = 1 << 48
#: ... plus the batch's own number times this, so that no batch takes another's
#: mark (no batch sees this many rollbacks).
_SPAN = 1 << 96
#: The batches' numbers, in the order they were made (in this process).
_NUMBERS = itertools.count(1)


@define
class Batch:
    """Events to record together, across streams, in one atomic append.

    The log keeps the order they were added in, across streams, as if each
    had been appended in turn: a follower's batch of many notifications
    records what batches of one would, in the same order.

    Commands run on a stream's state folded with the events already pending
    for it in this batch, so several commands on one stream compose.

    Each event is encoded as it is added, so an event the codec cannot store
    (or a stream id no store can keep) is refused by the :meth:`emit` or
    :meth:`execute` that adds it, with a :class:`fes.errors.EncodeError`, and the
    batch is left as it was.  A :meth:`savepoint` marks the batch; a
    :meth:`rollback` to that mark takes back everything added since::

        mark = batch.savepoint()
        try:
            batch.execute(aggregate, stream, command)
            batch.emit(aggregate, other, [event])
        except Exception:
            batch.rollback(mark)  # neither is recorded; earlier additions are

    The commit takes the timestamp: events encoded now are stored with it.
    """

    application: Writer
    pending: dict[str, Pending] = field(factory=dict)
    _fresh: set[str] = field(factory=set, init=False, repr=False)
    # the streams of _fresh taken for new without a read (see _assume_fresh)
    _assumed: set[str] = field(factory=set, init=False, repr=False)
    # each change to pending as (stream, its slot, how many events the stream
    # held before, its state before), or the stream alone for a slot made: what
    # rollback undoes (a str, not a tuple: one object fewer for the garbage
    # collector to count and walk per new stream, the follower's common case)
    _undo: list[str | tuple[str, Pending, int, Any]] = field(
        factory=list, init=False, repr=False
    )
    # streams whose slot the journal already holds as it was at the last mark: a
    # later change needs no entry, and the batch keeps no state in between
    _kept: set[str] = field(factory=set, init=False, repr=False)
    # A mark is the journal's length plus _epoch, which is _EPOCH times the
    # rollbacks that took entries back so far: a mark taken before one of them
    # is told apart from a later mark at the same length.
    _epoch: int = field(
        factory=lambda: next(_NUMBERS) * _SPAN, init=False, repr=False, eq=False
    )
    # those rollbacks as (how many came before it, the length it cut back to),
    # each cutting lower than every later one: the first of them at or after a
    # mark's rollback count is the lowest any rollback since the mark went to
    _cuts: list[tuple[int, int]] = field(factory=list, init=False, repr=False, eq=False)
    # the application's plans, looked up by every execute
    _plans: dict[Command, Plan] = field(init=False, repr=False, eq=False)
    # The order the events were added in, which the commit keeps in the log.
    # While each stream's events came in one run, it is the order of the
    # streams in pending (a slot made empty moves last when its first events
    # come) and this is None.  Once events go to a stream after another's,
    # each run is kept as (stream, how many events it held before the run).
    _runs: list[tuple[str, int]] | None = field(default=None, init=False, repr=False, eq=False)
    # the stream events were last added to (see _switch)
    _last: str | None = field(default=None, init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        self._plans = self.application._plans

    def prefetch(self, streams: Iterable[str]) -> None:
        """Find out in one read which of ``streams`` have no events yet.

        Commands and emits on those streams then start from their
        aggregate's initial state without reading the store, one read per
        stream.  A stream that another writer creates meanwhile still
        conflicts when the batch is committed.  A stream id no store can
        keep is passed over here, and refused by the emit or command that
        uses it.
        """
        self._check_open()  # a committed batch takes nothing more: prefetching is for commands
        if isinstance(streams, str):  # one stream id, not an iterable of its letters
            streams = [streams]
        elif not isinstance(streams, Iterable):
            raise ConfigurationError(f"prefetch takes an iterable of stream ids, not {streams!r}")
        wanted = self._unknown(streams)
        if wanted:
            versions = self.application.store.stream_versions(wanted)
            self._fresh.update(s for s, version in versions.items() if not version)

    def _assume_fresh(self, streams: Iterable[str]) -> None:
        """Take ``streams`` for new, as if :meth:`prefetch` had found them empty, without a read.

        For a follower whose policy's events go to new streams: a stream
        that has events after all makes the commit's append of its version 1
        conflict, and nothing is stored.  Only events appended to such a
        stream are checked that way: a command that decides on one (its
        state is then only a guess) must not be run, since it may decide to
        append nothing.  The follower runs no ``Do`` on them, and takes such
        streams from :attr:`_assumed`.
        """
        unknown = self._unknown(streams)
        self._fresh.update(unknown)
        self._assumed.update(unknown)

    def _unknown(self, streams: Iterable[str]) -> list[str]:
        """Those of ``streams`` a store can keep that the batch knows nothing of yet."""
        pending, fresh = self.pending, self._fresh
        return [s for s in streams if stream_keepable(s) and s not in pending and s not in fresh]

    def _committed(self) -> None:
        """Note that the batch's events are stored: it takes no more (see :class:`_Committed`)."""
        self.pending = _Committed(self.pending)
        self._undo.clear()

    @property
    def committed(self) -> bool:
        """Whether :meth:`Application.commit` stored this batch's events."""
        return isinstance(self.pending, _Committed)

    def savepoint(self) -> int:
        """A mark of what the batch holds now, for this batch's :meth:`rollback`.

        An int, to pass back as it is: another batch refuses it.
        """
        self._check_open()
        return self._mark()

    def _mark(self) -> int:
        """:meth:`savepoint` of a batch known to be open: a follower's, once per event."""
        kept = self._kept
        if kept:
            kept.clear()  # the next change of each stream is journaled again
        return self._epoch + len(self._undo)

    def rollback(self, mark: int) -> None:
        """Take back every event added since :meth:`savepoint` returned ``mark``.

        A mark stays valid until a rollback to an earlier one: the rollback
        takes back the later marks with the events, and a rollback to one of
        them raises :class:`fes.errors.ConfigurationError`.
        """
        self._check_open()
        undo = self._undo
        base = self._epoch - self._epoch % _SPAN  # this batch's number, times _SPAN
        if (
            not isinstance(mark, int) or isinstance(mark, bool)
            or not base <= mark < base + _SPAN  # another batch's, or no mark at all
        ):
            raise ConfigurationError(
                f"{mark!r} is not a savepoint of this batch (savepoint() gives its marks)"
            )
        # rollbacks before the mark, and the journal's length at the mark
        before, held = divmod(mark - base, _EPOCH)
        rollbacks = (self._epoch - base) // _EPOCH
        cuts = self._cuts
        if before < rollbacks:
            if cuts[bisect_left(cuts, (before,))][1] < held:
                raise ConfigurationError(
                    f"{mark!r} is not a savepoint of this batch any more: a rollback to an "
                    "earlier savepoint took it back"
                )
        elif before > rollbacks or held > len(undo):
            raise ConfigurationError(
                f"{mark!r} is not a savepoint of this batch (savepoint() gives its marks)"
            )
        mark = held
        if mark < len(undo):  # the marks past it go with the entries
            while cuts and cuts[-1][1] >= mark:
                cuts.pop()
            cuts.append((rollbacks, mark))
            self._epoch += _EPOCH
        pending = self.pending
        self._kept.clear()
        while len(undo) > mark:
            entry = undo.pop()
            if isinstance(entry, str):  # a slot made
                del pending[entry]
            else:
                _, slot, held, state = entry
                # the stream's one slot, changed in place: cut its lists back
                del cast(list[Any], slot.events)[held:]
                del cast(list[Any], slot.metadata)[held:]
                del cast(list[Any], slot.rows)[held * 3:]  # three entries per event
                slot.state = state
        runs = self._runs
        if runs is None:
            # the last slot, whose events (if any) were the last added
            self._last = next(reversed(pending), None)
        else:
            # the runs begun since the mark: each of a slot gone, or past its end now
            while runs and (
                (kept := pending.get(runs[-1][0])) is None or runs[-1][1] >= len(kept.events)
            ):
                runs.pop()
            self._last = runs[-1][0] if runs else None

    def _check_open(self) -> None:
        if isinstance(self.pending, _Committed):
            self.pending.get("")  # raises, saying why

    def _switch(self, stream: str, held: int) -> None:
        """Note that events are about to be added to ``stream``, holding ``held``, after another's.

        (Called when ``stream`` is not the very object last added to.)
        """
        if stream == self._last:  # the same id in another str
            return
        self._last = stream
        runs = self._runs
        if runs is not None:
            runs.append((stream, held))
            return
        pending = self.pending
        if not held:
            # its first events: its slot goes last, as pending keeps the order
            # streams got their first events in
            if next(reversed(pending)) != stream:
                pending[stream] = pending.pop(stream)
            return
        # Back to a stream with events: from now on the order is kept run by
        # run.  Until now each stream's events came in one run, in pending's order.
        self._runs = [(s, 0) for s, slot in pending.items() if slot.events]
        self._runs.append((stream, held))

    def state(self, aggregate: Aggregate[S], stream: str) -> S:
        """The stream's state including this batch's pending events (once committed, its
        events as stored)."""
        pending = self.pending
        if pending.__class__ is _Committed:
            slot = dict.get(pending, stream)
            if slot is None or slot.aggregate.name != aggregate.name:
                raise ConfigurationError(
                    f"this batch was committed, and holds no stream {stream!r} of "
                    f"{aggregate.name!r}: load it from the application"
                )
            return slot.state  # type: ignore[no-any-return]
        return self._slot(aggregate, stream).state  # type: ignore[no-any-return]

    def _slot(self, aggregate: Aggregate[Any], stream: str) -> Pending:
        self.application._check(aggregate)  # also when the stream is already pending
        slot = self.pending.get(stream)
        if slot is None:
            try:
                check_stream(stream)
            except StoreError as error:
                # an EncodeError, not a StoreError a runner would try again
                raise EncodeError(
                    f"a batch of {self.application.name!r} acts on a stream no store "
                    f"can keep: {error}"
                ) from None
            # a batch reads the stream anyway: only execute() decides without reading
            self.application._minted.pop(stream, False)
            if stream in self._fresh:
                state, version = aggregate.initial, 0
            else:
                state, version = self.application._current(aggregate, stream)
            slot = Pending(aggregate, version, state, [], [], [])
            self.pending[stream] = slot
            self._undo.append(stream)
            self._kept.add(stream)
        elif slot.aggregate.name != aggregate.name:
            raise FesError(
                f"stream {stream!r} is used as {slot.aggregate.name!r} and "
                f"{aggregate.name!r} in one batch"
            )
        return slot

    def emit(
        self,
        aggregate: Aggregate[Any],
        stream: str,
        events: Iterable[Any],
        metadata: Metadata = NO_METADATA,
    ) -> list[Any]:
        """Add events to a stream; they must apply to its state."""
        if isinstance(events, str | bytes) or not isinstance(events, Iterable):
            raise CommandMistake(f"emit takes an iterable of events, not {events!r}")
        new = list(events)
        self._add(aggregate, self._slot(aggregate, stream), stream, new, metadata)
        return new

    def _add(
        self,
        aggregate: Aggregate[Any],
        slot: Pending,
        stream: str,
        new: list[Any],
        metadata: Metadata,
    ) -> None:
        # fold and encode first: either may refuse, and the batch stays as it was
        # (a batch's own slots hold lists, see _slot; no typing.cast here: its
        # subscripted types would be built again on every call)
        events: list[Any] = slot.events  # type: ignore[assignment]
        metas: list[Metadata] = slot.metadata  # type: ignore[assignment]
        rows: Rows = slot.rows  # type: ignore[assignment]
        held = len(events)
        try:
            state = aggregate.fold(new, slot.state)
        except UnhandledEvent as error:
            raise _not_owned(error, aggregate, stream) from None
        encoded = self.application._encode(stream, slot.version + held, new, metadata)
        # extend the stream's lists in place, never copy them: linear in the
        # number of events added, however many the stream already holds
        # Only a stream's first change since the last mark is journaled: a
        # rollback restores the slot as it was then, so the states in between
        # (each a whole aggregate state) are not kept alive.
        if stream not in self._kept:
            self._undo.append((stream, slot, held, slot.state))
            self._kept.add(stream)
        if stream is not self._last and new:
            self._switch(stream, held)
        events.extend(new)
        metas.extend((metadata,) * len(new))
        rows.extend(encoded)
        slot.state = state

    def execute(
        self,
        aggregate: Aggregate[Any],
        stream: str,
        command: Command,
        /,
        *args: Any,
        metadata: Metadata = NO_METADATA,
        **kwargs: Any,
    ) -> list[Any]:
        """Run a command on the stream's pending state; add its events.

        As :meth:`Application.execute` does, it passes ``args`` and
        ``kwargs`` to the command, except the keyword ``metadata``.
        """
        pending = self.pending
        slot = pending.get(stream)
        if slot is None:
            # A stream prefetch() found empty (so a keepable id) gets its slot
            # only once the command has its events: on the plan's way, made
            # with them in it.  Any other is read now, its id checked.
            if stream not in self._fresh:
                slot = self._slot(aggregate, stream)
        elif slot.aggregate is not aggregate:
            # (a slot of this very aggregate was checked when it was made)
            slot = self._slot(aggregate, stream)
        try:
            plan = self._plans.get(command)
        except TypeError:  # an unhashable command object
            plan = None
        if plan is None or plan.aggregate is not aggregate:
            if slot is None:
                self.application._check(aggregate)  # as _slot would have
            plan = self.application._plan(aggregate, command)
        # (a plan of this very aggregate was made after a check of it)
        _, classes, kinds = plan
        state = aggregate.initial if slot is None else slot.state
        if kinds is None or (classes is not None and not isinstance(state, classes)):
            new = decide(aggregate, command, state, *args, **kwargs)  # refuses the state
        else:
            # (no ** with no keywords: an empty mapping still costs the call a copy;
            # and one argument passed as itself, not through a tuple built for the call)
            try:
                events = (
                    command(state, *args, **kwargs) if kwargs
                    else command(state, args[0]) if len(args) == 1 else command(state, *args)
                )
            except TypeError as error:  # fes.aggregates.run_command's way, inline
                refused = wrong_arguments(aggregate, command, state, args, kwargs)
                if refused is None:
                    raise  # the command's own TypeError
                raise refused from error
            # the plan's way, taken() inline (this runs once per command of a batch):
            # one event of a class the plan knows, added as _add would add it
            if (
                metadata is NO_METADATA and events.__class__ is list and len(events) == 1
                and (kind := kinds.get((item := events[0]).__class__)) is not None
            ):
                handler, topic, write = kind
                try:
                    after = handler(state, item)
                    body = write(item)
                except Exception:
                    body = b""  # the general way says what failed
                if body and body[0] == _BARE:
                    if slot is None:  # a fresh stream: its slot made with the event in it
                        self.application._minted.pop(stream, False)  # as _slot does
                        pending[stream] = new_pending(
                            (aggregate, 0, after, [item], [metadata], [topic, body, None])
                        )
                        self._undo.append(stream)
                        self._kept.add(stream)
                        if self._runs is not None:
                            self._runs.append((stream, 0))
                        self._last = stream
                        return [item]
                    held = slot.events
                    if stream not in self._kept:
                        self._undo.append((stream, slot, len(held), state))
                        self._kept.add(stream)
                    if stream is not self._last:
                        self._switch(stream, len(held))
                    held.append(item)  # type: ignore[attr-defined]
                    slot.metadata.append(metadata)  # type: ignore[attr-defined]
                    slot.rows.extend((topic, body, None))  # type: ignore[attr-defined]
                    slot.state = after
                    return [item]  # a list of its own: the command may keep the one it returned
            new = returned(aggregate, command, events)
        if slot is None:
            slot = self._slot(aggregate, stream)
        self._add(aggregate, slot, stream, new, metadata)
        return new

    def _emit_own(
        self,
        aggregate: Aggregate[Any],
        stream: str,
        new: list[Any],
        metadata: Metadata,
        meta: bytes | None = None,
    ) -> None:
        """:meth:`emit` of a list of events the caller made, on one of the application's own
        aggregates (this very object: the follower checked it): the follower's path.

        A stream :meth:`prefetch` found empty was checked there: its slot is
        made here at once, with no second check; any other goes through
        :meth:`_slot`, as :meth:`emit` does.  ``new`` is the batch's to keep.
        ``meta``, when given, is ``metadata`` as stored at any row (a codec
        that does not seal it with its row).
        """
        pending = self.pending
        slot = pending.get(stream)
        if slot is None:
            if stream in self._fresh:  # a keepable id, and empty when prefetched
                # _slot and _add in one: the slot is made with the events in it.
                # Fold and encode first: either may refuse, and the batch stays as it was.
                application = self.application
                application._minted.pop(stream, False)
                # One event of a class a plan knows, as most policies emit: taken the
                # plan's way (taken(), inline: this runs once per upstream event a
                # follower handles); anything else, or a failure, the general way.
                rows: Rows | None = None
                if meta is not None and len(new) == 1:
                    kind = application._kinds[aggregate.name].get((item := new[0]).__class__)
                    if kind is not None:
                        handler, topic, write = kind
                        try:
                            state = handler(aggregate.initial, item)
                            body = write(item)
                        except Exception:
                            body = b""  # the general way says what failed
                        if body and body[0] == _BARE:
                            rows = [topic, body, meta]
                if rows is None:
                    try:
                        state = aggregate.fold(new, aggregate.initial)
                    except UnhandledEvent as error:
                        raise _not_owned(error, aggregate, stream) from None
                    rows = (
                        list(application._encode(stream, 0, new, metadata)) if meta is None
                        else application._encode_with_meta(stream, 0, new, meta)  # a new list
                    )
                made = _NEW(Pending)  # new_pending(), inline
                made.aggregate, made.version, made.state = aggregate, 0, state
                made.events, made.metadata, made.rows = new, [metadata] * len(new), rows
                pending[stream] = made
                # Not marked kept: a follower takes a mark per upstream event, and
                # then it would be cleared each time. A later change before the next
                # mark (rare: two intents on one new stream) journals an entry of its
                # own, which a rollback undoes first, then this one.
                self._undo.append(stream)
                if self._runs is not None:
                    self._runs.append((stream, 0))
                self._last = stream
                return
            slot = self._slot(aggregate, stream)
        elif slot.aggregate is not aggregate:
            slot = self._slot(aggregate, stream)  # refuses the other aggregate's stream
        self._add(aggregate, slot, stream, new, metadata)

    def __len__(self) -> int:
        return sum(len(p.events) for p in self.pending.values())


def new_pending(
    values: tuple[
        Aggregate[Any], int, Any, Sequence[Any], Sequence[Metadata], Sequence[str | bytes | None],
    ],
) -> Pending:
    """``Pending(*values)``, for the callers that hold the six fields in a tuple."""
    made = _NEW(Pending)
    made.aggregate, made.version, made.state, made.events, made.metadata, made.rows = values
    return made


_NEW = object.__new__

