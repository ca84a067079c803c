"""The application service: load, fold, decide, append — the edge of one App.

An :class:`Application` binds a pure :class:`fes.App` to a store (chosen by a
URL) and a codec.  ``execute`` loads a stream, folds it, runs a pure command
and appends the new events expecting the version it loaded, retrying on a
conflict.  Time and identifiers come from injected functions, so a run can
be replayed deterministically.
"""

from __future__ import annotations

import logging
import os
import random
import reprlib
import sys
import threading
import time
import types
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import partial
from itertools import count
from typing import Any, NoReturn, TypeVar, cast

from fes.aggregates import Aggregate, Command, decide, returned, run_command
from fes.errors import (
    ConcurrencyError,
    ConfigurationError,
    DecodeError,
    DefinitionError,
    StoreError,
    UnhandledEvent,
    UnknownTopic,
)
from fes.events import NO_METADATA, Metadata, Recorded, new_recorded
from fes.snapshots import Snapshot, fingerprint, restore, take
from fes.system import App

from . import _settings as settings
from . import _telemetry
from ._batch import Batch, Kind, Pending, Plan, Rows, kinds_of, new_pending, plan_of, taken
from ._clock import stamp, to_micros, utc_now
from ._skips import is_internal, skips
from .codec import Cipher, Codec
from .stores import open_database
from .stores._base import (
    Database,
    Store,
    StoredEvent,
    StoredSnapshot,
    Tracking,
    new_event,
)
from .stores._checks import check_integer, check_stream, check_topic, check_tracking

__all__ = ["Application", "check_count", "check_store"]

logger = logging.getLogger("fes")
# a library is quiet until the program configures logging (`fes run` does):
# without this, Python's last-resort handler would print fes's warnings
logger.addHandler(logging.NullHandler())

S = TypeVar("S")

#: Namespace of name-based stream ids (uuid5): fixed forever, so ids are stable.
ID_NAMESPACE = uuid.UUID("6f0a3c52-8f8e-4a51-9a8c-3f3cb0e51f06")
_FUNCTION = types.FunctionType
#: The first byte of a payload stored as its bare JSON object (see taken).
_BARE = 0x7B
#: What execute's inline copy of _telemetry.active() looks in (see it).
_MODULES = sys.modules
_OTEL = _telemetry._API
_time_ns = time.time_ns
#: The default id factory (as imported: not one a test put in its place since).
_UUID4 = uuid.uuid4
#: A marker: _record's default telemetry (it then asks whether any is active),
#: and what execute finds for an aggregate name the application does not know.
_ASK = object()
#: execute's wait before its n-th retry after a conflict is random, up to
#: 2**(n + 1) times what the try that lost took (4, 8, 16... times), at most this.
RETRY_WAIT_CAP = 0.05
#: Its randomness: the operating system's, so no random state of the program's is used.
_jitter = random.SystemRandom().uniform
_sleep = time.sleep
_clock = time.perf_counter
#: At most this many ids from new_id() are remembered as not yet used (see new_id).
MINTED = 1024
#: At most this many commands' plans are remembered (see _plan).
PLANS = 1024
#: How many locks the threads of one application take turns on, a stream's
#: lock chosen by its id's hash (see _execute).
TURNS = 256
#: How many of the newest events a writer with a cipher tries its key on, once,
#: before its first append (see Application._check_key).
KEY_CHECK_ROWS = 8
#: The metadata of one event with none.
_ONE_NO_METADATA = (NO_METADATA,)

#: A row the application hands its store: stream, version, topic, payload, timestamp, meta.
Row = tuple[str, int, str, bytes, int, bytes | None]


def _triples(rows: Iterable[Any], first: int) -> Iterator[tuple[int, Any, Any, Any]]:
    """Each event's version, from ``first``, with its topic, payload and meta from flat ``rows``."""
    it = iter(rows)
    return zip(count(first), it, it, it)


def _stream_rows(stream: str, first: int, encoded: Iterable[Any], timestamp: int) -> list[Row]:
    """The rows of one stream's events, from version ``first``, flat ``encoded`` (see Pending).

    A function of its own, as :func:`_envelopes` is: a comprehension in a
    method makes each name it uses a cell of the method, built on every call.
    """
    return [
        (stream, version, topic, payload, timestamp, meta)
        for version, topic, payload, meta in _triples(encoded, first)
    ]


def _rows_in_order(
    pending: Mapping[str, Pending], runs: Sequence[tuple[str, int]], timestamp: int
) -> list[Row]:
    """The rows of ``pending``'s events in the order they were added.

    ``runs`` holds each run of events added to one stream in a row, as
    (stream, how many events it held before the run), in order (see
    :class:`Batch`): a run ends where the stream's next one begins, or at
    its last event.
    """
    spans: list[tuple[str, int, int]] = []
    ends: dict[str, int] = {}
    for stream, start in reversed(runs):
        end = ends.get(stream)
        if end is None:
            end = len(pending[stream].events)
        if start < end:
            spans.append((stream, start, end))
        ends[stream] = start
    rows: list[Row] = []
    for stream, start, end in reversed(spans):
        slot = pending[stream]
        rows += _stream_rows(
            stream, slot.version + 1 + start, slot.rows[start * 3:end * 3], timestamp
        )
    return rows


def _of_rows(
    pending: Mapping[str, Pending], rows: Iterable[Row]
) -> tuple[list[Any], list[Metadata]]:
    """The event and the metadata of each of ``rows``, found by its stream and version."""
    items: list[Any] = []
    metas: list[Metadata] = []
    for stream, version, *_ in rows:
        slot = pending[stream]
        index = version - slot.version - 1
        items.append(slot.events[index])
        metas.append(slot.metadata[index])
    return items, metas


def _envelopes(
    items: Iterable[Any], rows: Iterable[Row], positions: Iterable[int],
    metas: Iterable[Metadata], moment: datetime | int,
) -> list[Recorded[Any]]:
    """The envelopes of appended ``rows``: each with its event, position and metadata."""
    return [
        new_recorded(item, row[0], row[1], position, moment, row[2], meta)
        for item, row, position, meta in zip(items, rows, positions, metas, strict=True)
    ]


def _uuid4_str() -> str:
    """``str(uuid.uuid4())``, made in a third of the time.

    The same 16 random bytes from ``os.urandom``, with the same version and
    variant bits set (RFC 4122), written in the same form: without the
    :class:`uuid.UUID` that ``str`` is taken of and dropped.
    """
    data = bytearray(os.urandom(16))
    data[6] = data[6] & 0x0F | 0x40  # version 4
    data[8] = data[8] & 0x3F | 0x80  # the RFC 4122 variant
    h = data.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _ClosedStore:
    """What a closed application reads and writes through: each use is refused.

    Its database may be open still, when the application was given one it
    shares with others; a closed application uses it no more either way.
    """

    def __init__(self, app: str) -> None:
        self.app = app

    def refuse(self, what: str) -> NoReturn:
        """Raise the error of a closed application asked to do ``what``."""
        raise StoreError(
            f"application {self.app!r} is closed: its close() was called, and it reads "
            f"and stores nothing more (refused: {what})"
        )

    def __getattr__(self, name: str) -> Callable[..., NoReturn]:
        def refused(*args: object, **kwargs: object) -> NoReturn:
            self.refuse(name)

        return refused


def check_count(name: str, value: object, lowest: int) -> None:
    """Refuse a setting that is not an int of at least ``lowest`` (edge modules share it)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
        raise ConfigurationError(f"{name} must be an integer of {lowest} or more, got {value!r}")


def check_store(store: object) -> None:
    """Refuse a ``store`` argument that is neither a URL nor an open database."""
    if not (isinstance(store, str) or callable(getattr(store, "store", None))):
        raise ConfigurationError(f"store must be a store URL or an open Database, not {store!r}")



class Application:
    """One application of a system, on a store.

    ``store`` is a URL (``memory://``, ``sqlite:///path.db``,
    ``postgresql://user@host/db?schema=…``), an open :class:`Database`
    (shared by the applications of a system), a system's mapping from
    application names to those (this application's entry is used, else
    ``"*"``'s), or None to read ``<APP>_FES_STORE_URL`` (or
    ``FES_STORE_URL``) from ``env``, falling back to ``sqlite:///fes.db``.

    ``compress`` is True or a zlib level 1 to 9 (None: ``FES_COMPRESS``);
    ``snapshot_every`` takes a snapshot when a stream's version crosses a
    multiple of it (None: ``FES_SNAPSHOT_EVERY``, else the ``App``'s own);
    ``cache_size`` keeps that many recently used states in memory
    (refreshed with any later events on every read); ``retries`` is
    how many times ``execute`` retries a command after a version conflict,
    each time after a random wait of up to 4, 8, 16… times what the lost try
    took (at most 50 ms), so that writers racing for one stream take turns
    rather than collide again.  (The application's own threads never race:
    they take turns on each stream, see :meth:`execute`.)

    ``clock`` gives the moment of each commit, a timezone-aware datetime
    (read once per commit; events carry it in UTC); ``ids`` makes the stream
    ids of :meth:`new_id` (``uuid.uuid4`` by default; its results are
    turned into ``str``).
    """

    def __init__(
        self,
        app: App,
        store: str | Database | Mapping[str, str | Database] | None = None,
        *,
        compress: bool | int | None = None,
        cipher: Cipher | None = None,
        snapshot_every: int | None = None,
        cache_size: int = 0,
        retries: int = 3,
        clock: Callable[[], datetime] = utc_now,
        ids: Callable[[], uuid.UUID] = uuid.uuid4,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        if not isinstance(env, Mapping):
            raise ConfigurationError(f"env must be a mapping of names to values, not {env!r}")
        if not isinstance(app, App):
            raise ConfigurationError(f"an Application runs a fes.App, not {app!r}")
        if isinstance(store, Mapping):
            # a system's mapping of application names to stores: this one's entry
            placed = settings.placement(env, store, [app.name], strict=False)
            if app.name not in placed:
                raise ConfigurationError(settings.unplaced(env, store, [app.name])[app.name])
            store = placed[app.name]
        if store is not None:  # None: the URL comes from the environment
            check_store(store)
        for name, value in (("clock", clock), ("ids", ids)):
            if not callable(value):
                raise ConfigurationError(f"{name} must be a function, not {value!r}")
        check_count("cache_size", cache_size, 0)
        check_count("retries", retries, 0)
        self.app = app
        if compress is None:
            compress = settings.compress(env, app.name)
        if cipher is None:
            cipher = Cipher.from_env(settings.AppEnv(env, app.name))
        if snapshot_every is None:
            snapshot_every = settings.snapshot_interval(env, app)
        if snapshot_every is not None:
            check_count("snapshot_every", snapshot_every, 1)
        # fes's own events (skips recorded by runners) are readable in every application
        self.codec = Codec(
            (*app.aggregates, skips), compress=compress, cipher=cipher, app=app.name
        )
        for topic in sorted(self.codec.topics):
            # checked once here, so that commits need not check each event's topic
            try:
                check_topic(topic)
            except StoreError as error:
                raise DefinitionError(
                    f"application {app.name!r} cannot store its events: {error}"
                ) from None
        self.snapshot_every = snapshot_every
        self.retries = retries
        self.clock = clock
        self.ids = ids
        self._aggregates = {a.name: a for a in (*app.aggregates, skips)}
        self._fingerprints = {a.name: fingerprint(a) for a in self._aggregates.values()}
        # the aggregates whose snapshots of another definition were met (logged once each)
        self._stale_snapshots: set[str] = set()
        # per aggregate, what the plans of its commands take as is (see _plan)
        self._kinds: dict[str, dict[type, Kind]] = {
            a.name: kinds_of(a, self.codec) for a in self._aggregates.values()
        }
        self._plans: dict[Command, Plan] = {}
        if snapshot_every:
            # Refuse now an aggregate whose state cannot be snapshotted, rather
            # than after its events are stored.
            for aggregate in app.aggregates:
                self.codec.encode_state(aggregate, aggregate.initial, stream="", version=0)
        # Every argument is checked: only now is a database opened (or its tables made).
        if store is None or isinstance(store, str):
            url = settings.store_url(env, store, app.name)
            self.database: Database = open_database(url)
            self._owns_database = True
        else:
            self.database = store
            self._owns_database = False
        try:
            self.store: Store = self.database.store(app.name)
        except BaseException:
            if self._owns_database:
                self.database.close()
            raise
        # ids new_id() gave and no command has used yet (see new_id)
        self._minted: dict[str, bool] = {}
        # the store _append last found to take rows, and its _append_rows
        self._rows_store: object = None
        self._rows_append: Callable[[list[Row], dict[str, int], Tracking | None], list[int]]
        self._first_append: Callable[[Row, dict[str, int]], int]
        # with a cipher, the key is tried on stored events before the first append
        self._key_checked = self.codec.cipher is None
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], tuple[int, Any]] = OrderedDict()
        self._cache_lock = threading.Lock()
        # Threads running commands on one stream take turns on its lock (see
        # _execute).  Reentrant: a command that runs another on this
        # application (impure, but possible) must not wait on itself.
        self._turns = tuple(threading.RLock() for _ in range(TURNS))

    # --- ids ----------------------------------------------------------------

    @property
    def name(self) -> str:
        """The application's name."""
        return self.app.name

    def new_id(self) -> str:
        """A fresh stream id (a UUID from the injected id factory).

        The application remembers the last ids it gave that no command has
        used yet: the first :meth:`execute` on one runs its command on the
        aggregate's initial state without reading the stream (which has no
        events, unless the id was used elsewhere first), and its append of
        version 1 is refused if the stream has events after all; then, and
        whenever that first decision does not end in an append, the command
        runs as on any other stream.  A :class:`Batch` reads each stream it
        acts on, minted or not, since its commit cannot decide again: give it
        the new ids with :meth:`Batch.prefetch`, one query for all of them.
        """
        ids = self.ids
        if ids is _UUID4:  # the default: a stream id every store keeps
            stream = _uuid4_str()
        else:
            stream = str(ids())
            try:
                check_stream(stream)
            except StoreError:
                return stream  # not remembered: its first command reads, and is refused
        minted = self._minted
        if len(minted) >= MINTED:
            minted.clear()  # forgetting an id only costs its first command a read
        minted[stream] = True
        return stream

    def name_id(self, aggregate: Aggregate[Any], name: str) -> str:
        """A stream id derived from a name: the same name gives the same id.

        The id is a uuid5 of the application's name, the aggregate's name and
        ``name``; neither of the first two may contain the ``/`` that joins
        them, so different triples never give the same id.  ``name`` must be a
        ``str``: ``5`` and ``"5"`` would otherwise name one stream.
        """
        self._check(aggregate)
        if not isinstance(name, str):
            raise ConfigurationError(f"name_id needs a str name, not {name!r}")
        return str(uuid.uuid5(ID_NAMESPACE, f"{self.app.name}/{aggregate.name}/{name}"))

    # --- reading ------------------------------------------------------------

    def load(
        self, aggregate: Aggregate[S], stream: str, *, version: int | None = None
    ) -> tuple[S, int]:
        """The stream's state and version (folded up to ``version``, if given).

        A ``version`` past the stream's end gives its current state, with
        the version it is at.
        """
        self._check(aggregate)
        if version is not None:
            check_integer("version", version, 0)
        return self._current(aggregate, stream, version)

    def _current(
        self, aggregate: Aggregate[S], stream: str, version: int | None = None
    ) -> tuple[S, int]:
        """:meth:`load` for an aggregate already checked."""
        key = (aggregate.name, stream)
        if version is None and self._cache_size:
            with self._cache_lock:
                cached = self._cache.get(key)
            if cached is not None:
                # a cached state is a snapshot kept in memory, of the current definition
                at, state = cached
                snapshot = Snapshot(stream, at, state, self._fingerprints[aggregate.name])
                state, at = self._fold_later(aggregate, stream, snapshot)
                self._remember(key, at, state)
                return state, at
        state, at = self._load(aggregate, stream, version)
        if version is None and self._cache_size:
            self._remember(key, at, state)
        return state, at

    def _check(self, aggregate: Aggregate[Any]) -> None:
        """Refuse an aggregate this application was not built with.

        Snapshots, the cache and topics are keyed by aggregate name: another
        aggregate of the same name would fold onto states it did not make.
        """
        try:
            known = self._aggregates.get(aggregate.name)
        except AttributeError:
            raise DefinitionError(
                f"expected one of the aggregates of application {self.app.name!r}, "
                f"got {aggregate!r}"
            ) from None
        if known is not aggregate and known != aggregate:
            raise DefinitionError(
                f"aggregate {aggregate.name!r} is not one of the aggregates of "
                f"application {self.app.name!r}; pass the one in its App"
            )

    def _plan(self, aggregate: Aggregate[Any], command: Command) -> Plan:
        """The plan of ``command`` on ``aggregate``, which :meth:`_check` passed.

        Kept by command, for the next call to find with one lookup (a plan
        names its aggregate: one found for another is made again).  A
        function's plan holds what its state annotation says, read here once.
        """
        plan = plan_of(aggregate, command, self._kinds[aggregate.name])
        if type(command) is _FUNCTION:  # (a combinator's wrapper may not even hash)
            plans = self._plans
            if len(plans) >= PLANS:
                plans.clear()  # forgetting a plan only costs its next call a new one
            plans[command] = plan
        return plan

    def _load(
        self, aggregate: Aggregate[S], stream: str, version: int | None
    ) -> tuple[S, int]:
        snapshot = self._snapshot(aggregate, stream, version) if self.snapshot_every else None
        return self._fold_later(aggregate, stream, snapshot, version)

    def _snapshot(
        self, aggregate: Aggregate[S], stream: str, version: int | None
    ) -> Snapshot[S] | None:
        """The stream's latest stored snapshot (up to ``version``) that this definition made."""
        stored = self.store.load_snapshot(stream, to_version=version)
        # restore() would not use a snapshot of another fingerprint: do not decode it
        if stored is None:
            return None
        if stored.fingerprint != self._fingerprints.get(aggregate.name):
            if aggregate.name not in self._stale_snapshots:
                self._stale_snapshots.add(aggregate.name)
                logger.info(
                    "ignoring snapshots of aggregate %r that another definition of it made "
                    "(first on stream %r, version %d): such a stream is folded from its "
                    "events until a snapshot of this definition is taken (the old ones "
                    "stay stored until prune_snapshots, or fes prune, deletes them)",
                    aggregate.name, stream, stored.version,
                )
            return None
        try:
            state = self.codec.decode_state(
                aggregate, stored.payload, stream=stream, version=stored.version
            )
        except DecodeError as error:
            # A snapshot is only a shortcut: one that no longer decodes (its
            # key left the ring, its state type changed under the same
            # fingerprint) is passed over, and the stream folded from its events.
            logger.warning("ignoring a snapshot: %s", error)
            return None
        return Snapshot(stream, stored.version, state, stored.fingerprint)

    def _fold_later(
        self, aggregate: Aggregate[S], stream: str, start: Snapshot[S] | None, to: int | None = None
    ) -> tuple[S, int]:
        """The state of ``start`` (None: the initial state) with the later events folded on.

        The fold is :func:`fes.snapshots.restore`, the one the snapshot law
        checks; without a snapshot the events read are the whole history.
        """
        at = 0 if start is None else start.version
        rows = self.store.read_payloads(
            stream, from_version=at + 1 if at else None, to_version=to
        )
        if not rows:
            return (aggregate.initial if start is None else start.state), at
        try:
            state = restore(
                aggregate, start, self.codec.decode_stream(stream, rows),
                digest=self._fingerprints[aggregate.name],
            )
        except UnhandledEvent as error:
            owned = aggregate.events
            if owned and not issubclass(error.event_type, owned):
                # not a missing handler: an event this aggregate never has
                raise UnhandledEvent(
                    error.event_type, aggregate.name,
                    message=f"stream {stream!r} holds an event of type "
                    f"{error.event_type.__qualname__!r}, which aggregate "
                    f"{aggregate.name!r} does not own: does the stream belong to "
                    "another aggregate?",
                ) from None
            error.add_note(
                f"while loading stream {stream!r} as aggregate {aggregate.name!r}: "
                "does the stream belong to another aggregate?"
            )
            raise
        return state, rows[-1][0]

    def _remember(self, key: tuple[str, str], version: int, state: Any) -> None:
        with self._cache_lock:
            self._cache[key] = (version, state)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def get(self, aggregate: Aggregate[S], stream: str, *, version: int | None = None) -> S:
        """The stream's state, folded from its latest usable snapshot and later events."""
        return self.load(aggregate, stream, version=version)[0]

    def recorded(self, row: StoredEvent) -> Recorded[Any]:
        """Decode a stored row into a recorded event with its metadata."""
        meta = row.meta
        return new_recorded(
            self.codec.decode(row.topic, row.payload, stream=row.stream, version=row.version),
            row.stream,
            row.version,
            row.position,
            row.timestamp,  # a datetime when first read (see Recorded)
            row.topic,
            # decode_meta's answer for no metadata, without the call
            NO_METADATA if not meta else self.codec.decode_meta(
                meta, topic=row.topic, stream=row.stream, version=row.version
            ),
        )

    def stream(
        self,
        stream: str,
        *,
        from_version: int | None = None,
        to_version: int | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[Recorded[Any]]:
        """A stream's recorded events, for inspection.

        ``from_version`` and ``to_version``, when given, are versions of 0 or
        more; ``limit`` is a count of 0 or more.
        """
        if from_version is not None:
            check_integer("from_version", from_version, 0)
        if to_version is not None:
            check_integer("to_version", to_version, 0)
        rows = self.store.read_stream(
            stream, from_version=from_version, to_version=to_version, limit=limit,
            descending=descending,
        )
        return [self.recorded(r) for r in rows]

    def log(
        self,
        after: int = 0,
        *,
        limit: int | None = None,
        topics: Iterable[str] | None = None,
        internal: bool = False,
    ) -> list[Recorded[Any]]:
        """The notification log after ``after``, decoded: this application's events.

        ``topics`` keeps only events of those topics, and of the topics read
        as the same types (the old topics of renamed classes); a topic the
        codec does not know is refused (:class:`fes.errors.UnknownTopic`), as
        no event of this application can be stored under it.  fes's own
        records (a follower's stops and skips, topics ``fes.*``) are left
        out unless ``internal`` is true or ``topics`` names them; ``limit``
        counts the events returned, so a page is empty only at the end.
        ``after`` is a position of 0 or more (0: from the first event).
        """
        check_integer("after", after, 0)
        if isinstance(topics, str):  # one topic, not an iterable of its letters
            topics = [topics]
        elif topics is not None and not isinstance(topics, Iterable):
            raise StoreError(f"topics must be a topic or an iterable of topics, not {topics!r}")
        if topics is not None:
            topics = list(topics)
            known = self.codec.topics
            for topic in topics:
                # a misspelt topic would read as a quiet log: refused, naming those there are
                if isinstance(topic, str) and topic not in known and not is_internal(topic):
                    raise UnknownTopic(topic, known)
        rows = self.store.read_log(
            after, limit=limit, topics=None if topics is None else self.codec.with_aliases(topics)
        )
        if topics is not None or internal:
            return [self.recorded(r) for r in rows]
        found = [self.recorded(r) for r in rows if not is_internal(r.topic)]
        # fes's records left out: read on, so that a short page means the end
        wanted = limit
        while limit is not None and rows and len(rows) == wanted and len(found) < limit:
            wanted = limit - len(found)
            rows = self.store.read_log(rows[-1].position, limit=wanted)
            found.extend(self.recorded(r) for r in rows if not is_internal(r.topic))
        return found

    # --- writing ------------------------------------------------------------

    def batch(self) -> Batch:
        """A new batch of events to record atomically with :meth:`commit`."""
        if isinstance(store := self.store, _ClosedStore):
            store.refuse("batch")
        return Batch(self)

    def commit(self, batch: Batch, *, tracking: Tracking | None = None) -> list[Recorded[Any]]:
        """Append a batch's events, atomically, with an optional tracking position.

        Raises :class:`fes.ConcurrencyError` if any stream moved since the batch
        loaded it, and :class:`fes.errors.DuplicateTracking` if the tracking position
        was recorded before; either way nothing is stored.
        """
        if not isinstance(batch, Batch) or batch.application is not self:
            if not isinstance(batch, Batch):
                shown = reprlib.repr(batch)
            elif batch.application.name == self.name:
                # another instance of the same App: its own store, cache and locks
                shown = f"a batch of another Application object of {self.name!r}"
            else:
                shown = f"a batch of application {batch.application.name!r}"
            raise ConfigurationError(
                f"commit takes a batch made by this very Application's batch() "
                f"({self.name!r}), not {shown}: its commands read this object's store"
            )
        if batch.committed:
            raise ConfigurationError(
                "this batch was committed already: its events are stored; make a new one "
                "with batch()"
            )
        if tracking is not None:
            if not isinstance(tracking, Tracking):
                raise ConfigurationError(f"tracking must be a Tracking, not {tracking!r}")
            check_tracking(tracking)
        recorded = self._record(batch.pending, tracking, runs=batch._runs)
        batch._committed()
        return recorded

    def _encode(
        self, stream: str, version: int, events: list[Any], metadata: Metadata
    ) -> Rows:
        """Each event's topic, payload and metadata, stored after ``version`` of ``stream``.

        Flat, three entries per event (see :class:`Pending`).  What the cipher
        binds (topic, stream, version) is known here; the timestamp, which it
        does not bind, is left for the commit.
        """
        encode = self.codec.encode
        if len(events) == 1 and metadata is NO_METADATA:  # one command's one event
            return [*encode(events[0], stream=stream, version=version + 1), None]
        rows: Rows = []
        for item in events:
            version += 1
            topic, payload = encode(item, stream=stream, version=version)
            rows.extend((
                topic, payload,
                None if metadata is NO_METADATA else self.codec.encode_meta(
                    metadata, topic=topic, stream=stream, version=version
                ),
            ))
        return rows

    def _record(
        self,
        pending: Mapping[str, Pending],
        tracking: Tracking | None,
        telemetry: _telemetry.Telemetry | object | None = _ASK,
        runs: Sequence[tuple[str, int]] | None = None,
    ) -> list[Recorded[Any]]:
        """Append pending events; ``telemetry``: what the caller found active, if it looked.

        ``runs`` is the order they were added in when it is not pending's
        (see :class:`Batch`): the log keeps it.
        """
        written = self._write(pending, tracking, telemetry, runs)
        if written is None:
            return []
        firsts, rows, positions, moment = written
        if runs is None and len(firsts) == 1:
            (only,) = firsts
            items, metas = pending[only].events, pending[only].metadata
        elif runs is None:
            items, metas = [], []
            for stream in firsts:
                items += pending[stream].events
                metas += pending[stream].metadata
        else:
            items, metas = _of_rows(pending, rows)
        return _envelopes(items, rows, positions, metas, moment)

    def _write(
        self,
        pending: Mapping[str, Pending],
        tracking: Tracking | None,
        telemetry: _telemetry.Telemetry | object | None = _ASK,
        runs: Sequence[tuple[str, int]] | None = None,
    ) -> tuple[dict[str, int], list[Row], list[int], datetime | int] | None:
        """The append of :meth:`_record`, and what its envelopes need; None if no events.

        With no events, a ``tracking`` position is still recorded.  The rows
        are in the order of ``runs`` when given, else stream by stream.
        """
        firsts = {stream: slot.version + 1 for stream, slot in pending.items() if slot.events}
        if not firsts:
            if tracking is not None:
                self._append([], firsts, tracking)
            return None
        moment, timestamp = stamp(self.clock)
        rows: list[Row]
        if runs is not None:
            rows = _rows_in_order(pending, runs, timestamp)
        elif len(firsts) == 1:
            ((stream, first),) = firsts.items()
            rows = _stream_rows(stream, first, pending[stream].rows, timestamp)
        else:
            rows = []
            for stream, first in firsts.items():
                encoded: Sequence[Any] = pending[stream].rows
                if len(encoded) == 3:  # one event (a batch of new streams: one each)
                    topic, payload, meta = encoded
                    rows.append((stream, first, topic, payload, timestamp, meta))
                else:
                    rows += _stream_rows(stream, first, encoded, timestamp)
        try:
            positions = self._append(rows, firsts, tracking)
        except ConcurrencyError:
            self._forget(pending)
            raise
        if telemetry is _ASK:
            telemetry = _telemetry.active()
        if isinstance(telemetry, _telemetry.Telemetry):
            telemetry.appended_events(self.name, len(rows))
        if self._cache_size or self.snapshot_every:
            for stream in firsts:
                self._after_append(pending[stream], stream)
        return firsts, rows, positions, moment

    def _record_one(
        self, stream: str, slot: Pending, telemetry: _telemetry.Telemetry | None
    ) -> list[Recorded[Any]]:
        """:meth:`_record` of one command's events on one stream: execute's hot path."""
        moment, timestamp = stamp(self.clock)
        first = slot.version + 1
        encoded: Sequence[Any] = slot.rows  # flat: topic, payload, meta for each event
        if len(encoded) == 3:  # one command, one event: no loop to set up
            topic, payload, meta = encoded
            rows: list[Row] = [(stream, first, topic, payload, timestamp, meta)]
        else:
            rows = _stream_rows(stream, first, encoded, timestamp)
        try:
            if self.store is self._rows_store:  # _append's way, as it last found it
                positions = self._rows_append(rows, {stream: first}, None)
            else:
                positions = self._append(rows, {stream: first}, None)
        except ConcurrencyError:
            self._forget({stream: slot})
            raise
        if telemetry is not None:
            telemetry.appended_events(self.name, len(rows))
        if self._cache_size or self.snapshot_every:
            self._after_append(slot, stream)
        if len(rows) == 1:
            return [new_recorded(
                slot.events[0], stream, first, positions[0], moment, topic, slot.metadata[0]
            )]
        return _envelopes(slot.events, rows, positions, slot.metadata, moment)

    def _record_first(
        self, aggregate: Aggregate[Any], stream: str, event: Any, state: Any, topic: str,
        payload: bytes,
    ) -> list[Recorded[Any]]:
        """:meth:`_record_one` of a new stream's first event, with no metadata or telemetry.

        The path of a command on an id new_id() gave (see execute), taken
        when its plan took the event as it is: the slot :meth:`_record_one`
        reads is made only for the cache, snapshots or a conflict.
        """
        moment: datetime | int
        if self.clock is utc_now:  # stamp(), inline
            moment = timestamp = _time_ns() // 1000
        else:
            moment, timestamp = stamp(self.clock)
        row: Row = (stream, 1, topic, payload, timestamp, None)
        try:
            if self.store is self._rows_store:  # _append's way, as it last found it
                position = self._first_append(row, {stream: 1})
            else:
                position = self._append([row], {stream: 1}, None)[0]
        except ConcurrencyError:
            if self._cache_size:
                with self._cache_lock:
                    self._cache.pop((aggregate.name, stream), None)
            raise
        if self._cache_size or self.snapshot_every:
            self._after_append(new_pending((
                aggregate, 0, state, [event], _ONE_NO_METADATA, [topic, payload, None]
            )), stream)
        return [new_recorded(event, stream, 1, position, moment, topic, NO_METADATA)]

    def _append(
        self, rows: list[Row], firsts: dict[str, int], tracking: Tracking | None
    ) -> list[int]:
        """Append rows this application built and checked.

        A store of one of fes's own classes (marked ``_takes_rows`` on the class
        itself, so neither a subclass nor a wrapper put in as ``self.store``)
        takes them as they are; any other gets them through the protocol's
        ``append``, which checks them.
        """
        store = self.store
        if store is self._rows_store:
            return self._rows_append(rows, firsts, tracking)
        if not self._key_checked:
            self._check_key()
        if type(store).__dict__.get("_takes_rows"):
            # remembered for the hot paths (_record_first, _record_one), which
            # check only that self.store is still this very store
            self._rows_append = store._append_rows  # type: ignore[attr-defined]
            self._first_append = store._append_first  # type: ignore[attr-defined]
            self._rows_store = store
            return self._rows_append(rows, firsts, tracking)
        return store.append(list(map(new_event, rows)), tracking=tracking)

    def _check_key(self) -> None:
        """Refuse to append under a current key that opens none of the newest events sealed
        under its id.

        AES-GCM authenticates what it opens: the key that sealed a row opens
        it, another key under the same id (a keyring copied with one key
        mistyped, say) fails on every row, and an altered row fails under
        any key.  So the newest events sealed under the current key id, up
        to ``KEY_CHECK_ROWS``, are tried: one that opens clears the key;
        none opening refuses the append, nothing stored, rather than store
        events that a reader with the right key could not read.  Asked once,
        on the first append (the first through :meth:`_append`: the fast
        paths are set up there); with no event under the current key id
        there is nothing to try, and the key is taken as it is.
        """
        store = self.store
        last = store.last_position()
        rows = store.read_log(max(last - KEY_CHECK_ROWS, 0), limit=KEY_CHECK_ROWS) if last else []
        opens = self.codec.opens
        tried = [
            (row, opens(row.topic, row.payload, stream=row.stream, version=row.version))
            for row in rows
        ]
        failed = [row for row, opened in tried if opened is False]
        if failed and not any(opened for _, opened in tried):
            cipher = self.codec.cipher
            assert cipher is not None, "only an application with a cipher checks its key"
            newest = failed[-1]
            keys = settings.prefixed(self.name, "FES_CIPHER_KEYS")
            raise ConfigurationError(
                f"{self.name!r} will not append under key id {cipher.current!r}: its key "
                f"for that id opens none of the newest events sealed under it ({len(failed)} "
                f"tried; the newest is {newest.topic!r} at stream {newest.stream!r} version "
                f"{newest.version}, position {newest.position}). It is not the key they "
                "were sealed with (or they were altered), and what it sealed no reader with "
                f"their key could open: check the keyring ({keys} or FES_CIPHER_KEYS, or the "
                "cipher passed in); nothing was stored"
            )
        self._key_checked = True

    def _forget(self, pending: Mapping[str, Pending]) -> None:
        if self._cache_size:
            with self._cache_lock:
                for stream, slot in pending.items():
                    self._cache.pop((slot.aggregate.name, stream), None)

    def _after_append(self, slot: Pending, stream: str) -> None:
        new_version = slot.version + len(slot.events)
        if self._cache_size:
            self._remember((slot.aggregate.name, stream), new_version, slot.state)
        every = self.snapshot_every
        if every and new_version // every > slot.version // every:
            # The events are committed: a snapshot is only a shortcut, so
            # failing to save one must not make the caller think they were not.
            try:
                self._save(slot.aggregate, stream, new_version, slot.state)
            except Exception:
                logger.warning(
                    "could not save a snapshot of %r at version %d in %r",
                    stream, new_version, self.app.name, exc_info=True,
                )

    def execute(
        self,
        aggregate: Aggregate[Any],
        stream: str,
        command: Command,
        /,
        *args: Any,
        metadata: Metadata = NO_METADATA,
        **kwargs: Any,
    ) -> list[Recorded[Any]]:
        """Load the stream, run the pure command, append its events.

        ``args`` and ``kwargs`` go to the command after the state, except
        the keyword ``metadata``, which is the events' (a command may name
        its own parameters ``aggregate``, ``stream`` or ``command``).  On a
        version conflict the whole load → decide → append is retried up to
        ``retries`` times, each after a random wait of up to 4, 8, 16… times
        what the lost try took (50 ms at most); a :class:`fes.Rejected` from
        the command is raised as it is and stores nothing.  This
        application's threads take turns on a stream, so the conflicts are
        with other applications and processes: while one thread runs a
        command on it, the others wait to run theirs.
        """
        try:
            plan = self._plans.get(command)
        except Exception:  # a command object that cannot be a key
            plan = None
        if plan is None or plan.aggregate is not aggregate:
            # (a plan's aggregate passed the check when the plan was made)
            if self._aggregates.get(getattr(aggregate, "name", ""), _ASK) is not aggregate:
                self._check(aggregate)  # not this application's own object: look closer
            plan = self._plan(aggregate, command)
        # new_id() gave this id and nothing used it since: see _execute
        fresh = self._minted.pop(stream, False)
        # _telemetry.active(), inline: None until OpenTelemetry's API is loaded
        telemetry = _telemetry._telemetry
        if telemetry is None and (_OTEL[0] in _MODULES or _OTEL[1] in _MODULES):
            telemetry = _telemetry.active()
        if telemetry is not None:  # a span, and its trace context in the events' metadata
            # a partial, not a lambda: a closure would make nine of execute's names
            # cells, built and freed on every call, traced or not
            return telemetry.execute(
                self.name, aggregate.name, stream, command, metadata, partial(
                    self._execute, plan, aggregate, stream, command,
                    args=args, kwargs=kwargs, telemetry=telemetry, fresh=fresh,
                ),
            )
        if fresh and metadata is NO_METADATA and (kinds := plan.kinds) is not None:
            # _execute's read-free first try, inlined for the plan's way: the
            # path of a command on an id new_id() gave, as every new stream's is
            fresh = False  # this is the first try: a second one reads
            state = aggregate.initial
            slot = None
            body = b""  # the payload of the one event the plan took as it is, if it did
            try:
                # (a state the command refuses: decide refuses it below, as read)
                classes = plan.classes
                if classes is None or isinstance(state, classes):
                    events = (  # as Batch.execute calls it
                        command(state, *args, **kwargs) if kwargs
                        else command(state, args[0]) if len(args) == 1 else command(state, *args)
                    )
                    # taken(), inline (see Batch.execute)
                    if (
                        events.__class__ is list and len(events) == 1
                        and (kind := kinds.get((item := events[0]).__class__)) is not None
                    ):
                        handler, topic, write = kind
                        try:
                            after = handler(state, item)
                            body = write(item)
                        except Exception:
                            body = b""  # the general way says what failed
                    if not body or body[0] != _BARE:
                        body = b""
                        slot = self._general(aggregate, command, state, 0, stream, metadata, events)
            except Exception:
                pass  # decided again below, on the stream as read
            try:
                if body:
                    return self._record_first(aggregate, stream, item, after, topic, body)
                if slot is not None:
                    return self._record_one(stream, slot, None)
            except ConcurrencyError:
                pass
        return self._execute(plan, aggregate, stream, command, metadata, args, kwargs, None, fresh)

    def _decided(
        self,
        plan: Plan,
        aggregate: Aggregate[Any],
        command: Command,
        state: Any,
        version: int,
        stream: str,
        metadata: Metadata,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Pending | None:
        """The slot of the events ``command`` decides on ``state``, at ``version``; None if none.

        :func:`fes.decide`, the fold and the encoding, or, on the command's
        plan, one event of a class the plan knows taken as it is.
        """
        kinds = plan.kinds
        if kinds is None or (plan.classes is not None and not isinstance(state, plan.classes)):
            new = decide(aggregate, command, state, *args, **kwargs)  # refuses the state
            return self._pending(aggregate, state, version, stream, metadata, new)
        events = run_command(aggregate, command, state, args, kwargs)
        if metadata is NO_METADATA and (took := taken(kinds, state, events)) is not None:
            item, after, topic, body = took
            return new_pending((
                aggregate, version, after, [item], _ONE_NO_METADATA, [topic, body, None],
            ))
        return self._general(aggregate, command, state, version, stream, metadata, events)

    def _general(
        self,
        aggregate: Aggregate[Any],
        command: Command,
        state: Any,
        version: int,
        stream: str,
        metadata: Metadata,
        events: Any,
    ) -> Pending | None:
        """:meth:`_decided` of ``events``, what ``command`` returned, the general way."""
        new = returned(aggregate, command, events)
        return self._pending(aggregate, state, version, stream, metadata, new)

    def _pending(
        self,
        aggregate: Aggregate[Any],
        state: Any,
        version: int,
        stream: str,
        metadata: Metadata,
        new: list[Any],
    ) -> Pending | None:
        """The slot of ``new``, the checked events of a command on ``state``; None if none."""
        if not new:
            return None
        return new_pending((
            aggregate, version, aggregate.fold(new, state), new,
            (metadata,) * len(new), self._encode(stream, version, new, metadata),
        ))

    def _execute(
        self,
        plan: Plan,
        aggregate: Aggregate[Any],
        stream: str,
        command: Command,
        metadata: Metadata,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        telemetry: _telemetry.Telemetry | None,
        fresh: bool,
    ) -> list[Recorded[Any]]:
        # What a one-command Batch does, without its bookkeeping: this is the
        # path of every command an application serves.
        if fresh:
            # new_id() gave this id and nothing used it since: decide on the
            # initial state without reading.  Only an append stands on that
            # guess, and only if the unique (stream, version) takes its version
            # 1; anything else (a conflict, an error, no events) is decided
            # again below on the stream as read, and not counted as a retry.
            try:
                slot = self._decided(
                    plan, aggregate, command, aggregate.initial, 0, stream, metadata, args, kwargs
                )
            except Exception:
                slot = None
            if slot is not None:
                try:
                    return self._record_one(stream, slot, telemetry)
                except ConcurrencyError:
                    pass
        # The threads of this application that run commands on one stream
        # take turns, each loading, deciding and appending while the others
        # wait: between them there is no conflict to lose, so a hot stream
        # does not run any of them out of retries (four threads on one stream
        # ran 13-16 % of their commands out of three retries without turns).
        # The rivals left are other applications and processes.  Streams
        # share 256 locks by their ids' hashes.
        with self._turns[hash(stream) % TURNS]:
            attempt = 0
            while True:
                began = _clock()
                state, version = self._current(aggregate, stream)
                slot = self._decided(
                    plan, aggregate, command, state, version, stream, metadata, args, kwargs
                )
                if slot is None:
                    return []
                try:
                    return self._record_one(stream, slot, telemetry)
                except ConcurrencyError as conflict:
                    attempt += 1
                    if attempt > self.retries:
                        # in the message, not a note: logs often keep str(error) alone
                        conflict.args = (
                            f"{conflict}; execute's tries: {attempt} (retries={self.retries}), "
                            "another writer appended to the stream first each time",
                        )
                        raise
                    # A rival committed first, and may be racing again: a random
                    # wait, longer each time, lets the rivals' commits go by in
                    # turn.  Measured in what the lost try took, it suits the
                    # store: tens of microseconds on SQLite, milliseconds over
                    # PostgreSQL (where four writers of one stream, retrying at
                    # once, ran out of three retries in 1 command of 9; with
                    # the wait, in 1 of 160).
                    took = _clock() - began
                    _sleep(_jitter(0.0, min(RETRY_WAIT_CAP, took * 2 ** (attempt + 1))))

    def take_snapshot(self, aggregate: Aggregate[Any], stream: str) -> int:
        """Snapshot a stream's current state now; returns its version.

        Loads use snapshots only in applications with ``snapshot_every`` set.
        """
        self._check(aggregate)
        state, version = self._load(aggregate, stream, None)
        if version:
            self._save(aggregate, stream, version, state)
        return version

    def _save(self, aggregate: Aggregate[S], stream: str, version: int, state: S) -> None:
        """Store :func:`fes.snapshots.take`'s snapshot of ``state``, the one the law checks."""
        snapshot = take(
            aggregate, stream, version, state, digest=self._fingerprints[aggregate.name]
        )
        self.store.save_snapshot(
            StoredSnapshot(
                stream=snapshot.stream,
                version=snapshot.version,
                fingerprint=snapshot.fingerprint,
                payload=self.codec.encode_state(
                    aggregate, snapshot.state, stream=stream, version=version
                ),
                timestamp=to_micros(self.clock()),
            )
        )

    # --- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Stop reading and writing, and close the database if this application opened it.

        A database given to it stays open for its owner to close.  Every
        later command, load or read of the closed application raises
        :class:`fes.errors.StoreError`, whether its database is open or not.
        """
        self.store = cast(Store, _ClosedStore(self.app.name))
        self._rows_store = None  # the hot paths then go through the store above
        if self._owns_database:
            self.database.close()

    def __enter__(self) -> Application:
        if isinstance(store := self.store, _ClosedStore):  # as a closed file refuses ``with``
            store.refuse("with")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Application({self.app.name!r}, store={self.database.url!r})"

    def _encode_with_meta(
        self, stream: str, version: int, events: list[Any], meta: bytes
    ) -> Rows:
        """:meth:`_encode` of events whose stored metadata, ``meta``, is the same at every row.

        The follower's: see :meth:`fes.edge.codec.Codec._plain_causes`.
        """
        encode = self.codec.encode
        rows: Rows = []
        for item in events:
            version += 1
            rows.extend((*encode(item, stream=stream, version=version), meta))
        return rows

    def _record_untold(
        self,
        pending: Mapping[str, Pending],
        tracking: Tracking,
        runs: Sequence[tuple[str, int]] | None = None,
    ) -> None:
        """:meth:`_record` for a caller that does not read the recorded events back.

        A follower's commit: the same append, conflict handling, telemetry,
        cache and snapshots, without a :class:`fes.Recorded` made for each
        event and dropped.  ``tracking`` has been checked.
        """
        self._write(pending, tracking, _ASK, runs)
