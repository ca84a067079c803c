"""Events, their recorded envelope, and how an event type declares its schema.

Any frozen attrs class is an event; no base class is needed.  When an event is
stored it is wrapped in :class:`Recorded`, which says where and when it was
recorded.  An event type may declare, with :func:`event`, its stable topic,
its schema version and the pure upcasters that bring older stored shapes up
to date.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from attrs import Attribute, field, fields, frozen
from pyrsistent import PMap, pmap

from fes.errors import ConfigurationError, DefinitionError, UpcastError

__all__ = [
    "EventSpec",
    "Metadata",
    "Recorded",
    "Upcaster",
    "event",
    "spec_of",
    "upcast",
]

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)
T = TypeVar("T", bound=type)

#: A pure function from a stored mapping of one schema version to the next.
Upcaster = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def _pmap_str(value: Mapping[str, str] | None) -> PMap[str, str]:
    if isinstance(value, PMap):
        return value  # already immutable: metadata derived from other metadata shares it
    if value is not None and not isinstance(value, Mapping):
        raise ConfigurationError(f"metadata headers must be a mapping of str to str, not {value!r}")
    return pmap(value or {})


def _text_or_none(_: object, attribute: Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(
            f"metadata's {attribute.name} must be a str or None, not {value!r}"
        )


def _text_headers(_: object, attribute: Attribute[Any], value: PMap[Any, Any]) -> None:
    for key, text in value.items():
        if not isinstance(key, str) or not isinstance(text, str):
            raise ConfigurationError(
                f"metadata headers must map str to str, not {key!r} to {text!r}"
            )


@frozen
class Metadata:
    """What a recorded event carries besides the event itself.

    ``correlation_id`` names the chain of events a command started;
    ``causation_id`` names the recorded event that directly caused this one;
    ``headers`` is a user mapping of strings.
    """

    correlation_id: str | None = field(default=None, validator=_text_or_none)
    causation_id: str | None = field(default=None, validator=_text_or_none)
    headers: PMap[str, str] = field(factory=pmap, converter=_pmap_str, validator=_text_headers)


NO_METADATA = Metadata()


def _metadata_factory() -> Callable[[str | None, str | None, PMap[str, str]], Metadata]:
    """A :class:`Metadata` constructor for headers that are a ``PMap`` already.

    For the edge's hot paths (one per upstream event a follower handles, one
    per stored metadata it reads): each field is written through its slot,
    without the frozen ``__init__``'s way of setting attributes and its
    converter, at a little over half the cost.  The result is an ordinary
    :class:`Metadata`, equal to the one ``Metadata(...)`` builds.
    """
    names = ("correlation_id", "causation_id", "headers")
    if tuple(a.name for a in fields(Metadata)) != names:  # pragma: no cover
        raise DefinitionError("Metadata's fields changed: update _metadata_factory")
    s_correlation, s_causation, s_headers = (Metadata.__dict__[name].__set__ for name in names)
    new = object.__new__

    def new_metadata(
        correlation_id: str | None, causation_id: str | None, headers: PMap[str, str]
    ) -> Metadata:
        made: Metadata = new(Metadata)
        s_correlation(made, correlation_id)
        s_causation(made, causation_id)
        s_headers(made, headers)
        return made

    return new_metadata


#: ``Metadata(correlation_id, causation_id, headers)`` for headers that are a
#: ``PMap`` (see :func:`_metadata_factory`).
new_metadata = _metadata_factory()


@frozen(weakref_slot=False)
class Recorded(Generic[E_co]):
    """An event as recorded in a stream and in its application's log.

    ``version`` counts from 1 within the stream; ``position`` is the event's
    place in the application's notification log; ``timestamp`` comes from the
    clock the edge was given.  An envelope the edge builds may hold the
    microseconds it stored until its timestamp is first read, which makes
    their UTC datetime and keeps it: reading, comparing, hashing or copying
    an envelope always gives the datetime.
    """

    event: E_co
    stream: str
    version: int
    position: int
    timestamp: datetime
    topic: str = ""
    metadata: Metadata = NO_METADATA

    @property
    def id(self) -> str:
        """An identifier of this event, unique within its application."""
        return f"{self.stream}@{self.version}"


#: The Unix epoch in UTC: stores keep timestamps as microseconds since it.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Below this many microseconds (2**32 seconds: the year 2106) a float of seconds
#: is within a quarter of a microsecond of the exact value, so fromtimestamp's
#: rounding to the microsecond gives it back exactly.
FLOAT_EXACT = 2**32 * 1_000_000
_fromtimestamp = datetime.fromtimestamp


def micros_datetime(micros: int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the Unix epoch, exactly.

    ``fromtimestamp`` of a float for the years 1970 to 2106, where that is
    exact and cheaper; the epoch plus a ``timedelta`` elsewhere.
    """
    if 0 <= micros < FLOAT_EXACT:
        return _fromtimestamp(micros / 1e6, UTC)
    return EPOCH + timedelta(microseconds=micros)


class _Timestamp:
    """``Recorded.timestamp``: its slot, read through, made a datetime on first read.

    The edge stamps each append's envelopes with the integer microseconds
    it stores, and most envelopes are never asked their time: a datetime
    for each was a twentieth of a new stream's command.  The first read of
    an integer makes the datetime (:func:`micros_datetime`) and keeps it in
    the slot; every read, and so equality, hashing, ``repr``, pickling and
    :func:`attrs.evolve`, sees a datetime.  Two threads reading at once
    make equal datetimes, and either may be kept.
    """

    __slots__ = ("_get", "_set")

    def __init__(self, slot: Any) -> None:
        self._get = slot.__get__
        self._set = slot.__set__

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        value = self._get(instance, owner)
        if value.__class__ is int:
            value = micros_datetime(value)
            self._set(instance, value)
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        self._set(instance, value)


type.__setattr__(Recorded, "timestamp", _Timestamp(Recorded.__dict__["timestamp"]))

_NAMES = ("event", "stream", "version", "position", "timestamp", "topic", "metadata")


class _Blank(Generic[E_co]):
    """A plain class with :class:`Recorded`'s slots: an envelope before it is sealed.

    Its attributes are set as any object's are, then the object becomes a
    :class:`Recorded` by assignment to ``__class__``, which CPython allows
    between classes of the same layout.  No weakref slot on either: with
    one, CPython finds the layouts different.
    """

    __slots__ = _NAMES


def _recorded_factory() -> Callable[
    [Any, str, int, int, datetime | int, str, Metadata], Recorded[Any]
]:
    """A :class:`Recorded` constructor without the frozen ``__init__``'s checks.

    For the edge's hot paths, which build one envelope per event from values
    they made themselves: the fields are set on a :class:`_Blank`, which is
    then made a :class:`Recorded`, at about half the cost of ``Recorded(...)``.
    Where the layouts differ (another Python, another attrs), each field is
    written through its slot instead.  Either way the result is an ordinary
    :class:`Recorded`, equal to the one ``Recorded(...)`` builds.
    """
    if tuple(a.name for a in fields(Recorded)) != _NAMES:  # pragma: no cover
        raise DefinitionError("Recorded's fields changed: update _recorded_factory")
    # called as a class (it has no __init__): 400 instructions fewer than
    # object.__new__(_Blank), which goes through a wrapper taking arguments
    blank = _Blank

    def new_recorded(
        event: Any, stream: str, version: int, position: int, timestamp: datetime | int,
        topic: str, metadata: Metadata,
    ) -> Recorded[Any]:
        made: Any = blank()
        made.event = event
        made.stream = stream
        made.version = version
        made.position = position
        made.timestamp = timestamp
        made.topic = topic
        made.metadata = metadata
        made.__class__ = Recorded
        return made  # type: ignore[no-any-return]

    try:
        new_recorded(None, "", 0, 0, datetime.min, "", NO_METADATA)
    except TypeError:  # pragma: no cover - the layouts differ here
        return _slot_factory()
    return new_recorded


def _slot_factory() -> Callable[
    [Any, str, int, int, datetime | int, str, Metadata], Recorded[Any]
]:
    """:func:`_recorded_factory`'s way where ``__class__`` cannot be assigned."""
    slots = Recorded.__dict__
    s_event, s_stream, s_version, s_position, s_timestamp, s_topic, s_meta = (
        slots[name].__set__ for name in _NAMES
    )
    new = object.__new__

    def new_recorded(
        event: Any, stream: str, version: int, position: int, timestamp: datetime | int,
        topic: str, metadata: Metadata,
    ) -> Recorded[Any]:
        made: Recorded[Any] = new(Recorded)
        s_event(made, event)
        s_stream(made, stream)
        s_version(made, version)
        s_position(made, position)
        s_timestamp(made, timestamp)
        s_topic(made, topic)
        s_meta(made, metadata)
        return made

    return new_recorded


#: ``Recorded(event, stream, version, position, timestamp, topic, metadata)``,
#: every argument given, for the edge's hot paths (see :func:`_recorded_factory`).
new_recorded = _recorded_factory()


@frozen
class EventSpec:
    """The schema of an event type: stable topic, version and upcasters.

    ``upcasters[i]`` turns a stored mapping of schema version ``i + 1`` into
    version ``i + 2``; so an event at ``version`` n has n - 1 upcasters.
    ``aliases`` are older topics (of renamed classes) still read as this type.
    """

    topic: str | None = None
    version: int = 1
    upcasters: tuple[Upcaster, ...] = ()
    aliases: tuple[str, ...] = ()


_SPEC_ATTRIBUTE = "__fes_event__"


def event(
    topic: str | None = None,
    *,
    version: int | None = None,
    upcasters: Iterable[Upcaster] = (),
    aliases: Iterable[str] = (),
) -> Callable[[T], T]:
    """Declare an event type's stable topic, schema version and upcasters.

    ``version`` defaults to one more than the number of upcasters.  Used as a
    class decorator, it returns the class unchanged apart from the schema
    it records on it.
    """
    ups = tuple(upcasters)
    if version is None:
        version = len(ups) + 1
    if version < 1:
        raise DefinitionError(f"event schema version must be >= 1, got {version}")
    if len(ups) != version - 1:
        raise DefinitionError(
            f"an event at schema version {version} needs {version - 1} upcaster(s) "
            f"(one per older version), got {len(ups)}"
        )
    spec = EventSpec(topic=topic, version=version, upcasters=ups, aliases=tuple(aliases))

    def declare(cls: T) -> T:
        setattr(cls, _SPEC_ATTRIBUTE, spec)
        return cls

    return declare


def spec_of(cls: type) -> EventSpec:
    """The schema declared for an event type, or the default one."""
    spec = cls.__dict__.get(_SPEC_ATTRIBUTE)
    return spec if isinstance(spec, EventSpec) else EventSpec()


def upcast(
    cls: type, data: Mapping[str, Any], stored_version: int
) -> Mapping[str, Any]:
    """Bring a stored mapping of ``cls`` from ``stored_version`` to the current one."""
    spec = spec_of(cls)
    if stored_version == spec.version:
        return data
    if not 1 <= stored_version < spec.version:
        newer = (
            ", which a newer release wrote: read it with that release's code (every reader, "
            "followers included, needs a schema before any writer uses it)"
            if stored_version > spec.version else ""
        )
        raise UpcastError(
            f"{cls.__qualname__} is at schema version {spec.version}; "
            f"cannot read a stored version {stored_version}{newer}"
        )
    for index in range(stored_version - 1, spec.version - 1):
        step = spec.upcasters[index]
        try:
            data = step(data)
        except Exception as exc:
            raise UpcastError(
                f"upcasting {cls.__qualname__} from version {index + 1} to {index + 2} "
                f"failed: {type(exc).__name__}: {exc}"
            ) from exc
    return data
