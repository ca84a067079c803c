"""Snapshots: a state remembered at a version, fingerprinted by its schema.

Loading from a snapshot plus the events after it equals folding the whole
history, as long as the snapshot was taken by the same projector, from the
same initial state, over the same event schemas and upcasters.  The
fingerprint captures them, so a snapshot taken under an older definition is
ignored rather than trusted.
"""

from __future__ import annotations

import enum
import hashlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Generic, TypeVar

import attrs
from attrs import frozen

from fes.aggregates import Aggregate
from fes.events import spec_of

__all__ = ["Snapshot", "fingerprint", "restore", "take"]

S = TypeVar("S")


@frozen
class Snapshot(Generic[S]):
    """The state of one stream at ``version``, under definition ``fingerprint``."""

    stream: str
    version: int
    state: S
    fingerprint: str


def _code_digest(obj: Any, seen: set[int], out: list[bytes]) -> None:
    """Feed the bytecode of a function (and what it closes over) into ``out``."""
    if obj is None or isinstance(obj, (str, bytes, int, float, complex)):
        # plain values (closed-over settings, names) change behaviour: count each one,
        # before the identity check, since equal small values share one object
        out.append(repr(obj).encode())
        return
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, types.FunctionType):
        _code_digest(obj.__code__, seen, out)
        # the classes a handler is annotated with: a state class's fields and
        # defaults say what a stored state means as much as the code does
        try:
            hints: dict[str, Any] = typing.get_type_hints(obj)
        except Exception:  # a forward reference that does not resolve: its text
            hints = dict(getattr(obj, "__annotations__", {}))
        for name in sorted(hints):
            out.append(name.encode())
            _type_digest(hints[name], seen, out)
        for cell in obj.__closure__ or ():
            try:
                _code_digest(cell.cell_contents, seen, out)
            except ValueError:  # an empty cell
                continue
    elif isinstance(obj, types.CodeType):
        out.append(obj.co_code)
        out.append(repr(obj.co_names).encode())
        for const in obj.co_consts:
            if isinstance(const, types.CodeType):
                _code_digest(const, seen, out)
            else:
                out.append(repr(const).encode())
    elif isinstance(obj, types.MethodType):
        _code_digest(obj.__func__, seen, out)
    elif isinstance(obj, Aggregate):
        # only what folds matters: commands do not change a stored state's meaning
        out.append(f"{obj.name}:{obj.snapshot_version}".encode())
        _code_digest(obj.apply, seen, out)
    elif attrs.has(type(obj)):
        # projector values built by fes (dispatch tables, combinations)
        out.append(type(obj).__qualname__.encode())
        for a in attrs.fields(type(obj)):
            _code_digest(getattr(obj, a.name), seen, out)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out.append(repr(getattr(key, "__qualname__", key)).encode())
            _code_digest(value, seen, out)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _code_digest(item, seen, out)
    elif isinstance(obj, type):
        out.append(obj.__qualname__.encode())
    elif callable(obj):
        out.append(repr(type(obj)).encode())


def _type_digest(kind: Any, seen: set[int], out: list[bytes]) -> None:
    """Feed a type, and the fields and defaults of the attrs classes in it, into ``out``."""
    if isinstance(kind, str):
        out.append(kind.encode())
        return
    out.append(repr(kind).encode())
    if isinstance(kind, type):
        # a class is read once: its fields may name it again.  An alias such as
        # Mapping[str, Any] is read whole every time: get_type_hints builds one
        # afresh per function (the next maybe where a freed one lay, taking its
        # id) and typing caches others for a while, so whether two equal ones are
        # one object is an accident, and an alias cannot contain itself
        if id(kind) in seen:
            return
        seen.add(id(kind))
    for arg in typing.get_args(kind):
        _type_digest(arg, seen, out)
    if isinstance(kind, type) and attrs.has(kind):
        # A field's type as written may be a string (``from __future__ import
        # annotations``) that attrs and cattrs later resolve in place: digest
        # the resolved hints, so the fingerprint does not depend on whether an
        # Application, a codec or a strategy has touched the class yet.
        try:
            hints: dict[str, Any] = typing.get_type_hints(kind)
        except Exception:  # a forward reference that does not resolve: as written
            hints = {}
        for a in attrs.fields(kind):
            out.append(a.name.encode())
            _type_digest(hints.get(a.name, a.type), seen, out)
            default = a.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                _value_digest(default.factory, out)
            elif default is not attrs.NOTHING:
                _value_digest(default, out)


def _value_digest(value: Any, out: list[bytes]) -> None:
    """Feed a value into ``out`` in a form that is the same in every process.

    Sets and mappings are fed in sorted order of their items' digests, since
    their iteration order follows string hashes, which differ per process.
    """
    kind = type(value)
    if value is None or kind in (bool, int, float, complex, str, bytes):
        out.append(f"{kind.__name__}:{value!r}".encode())
    elif isinstance(value, enum.Enum):
        out.append(f"{kind.__qualname__}.{value.name}".encode())
    elif attrs.has(kind):
        out.append(kind.__qualname__.encode())
        for a in attrs.fields(kind):
            out.append(a.name.encode())
            _value_digest(getattr(value, a.name), out)
    elif isinstance(value, (Mapping, AbstractSet)):
        pairs = value.items() if isinstance(value, Mapping) else ((item, None) for item in value)
        out.append(f"{kind.__qualname__}{{".encode())
        out.extend(sorted(_digest_of(k) + b":" + _digest_of(v) for k, v in pairs))
        out.append(b"}")
    elif isinstance(value, Sequence):
        out.append(f"{kind.__qualname__}[".encode())
        for item in value:
            _value_digest(item, out)
        out.append(b"]")
    elif callable(value):  # a factory: its name (a repr would hold an address)
        name = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
        out.append(name.encode())
    else:
        text = repr(value)
        out.append(kind.__qualname__.encode() if " at 0x" in text else text.encode())


def _digest_of(value: Any) -> bytes:
    parts: list[bytes] = []
    _value_digest(value, parts)
    return hashlib.blake2b(b"\x00".join(parts), digest_size=16).digest()


def fingerprint(aggregate: Aggregate[Any]) -> str:
    """A digest of what a folded state means: the aggregate's projector code,
    its initial state, its event schemas and their upcasters' code, and the
    fields and defaults of the classes the projector's handlers are annotated
    with.  It is the same in every process for the same definition.
    """
    return digest_parts(fingerprint_parts(aggregate))


def fingerprint_parts(aggregate: Aggregate[Any]) -> list[bytes]:
    """What :func:`fingerprint` digests, part by part (to say which part differs)."""
    seen: set[int] = set()
    parts: list[bytes] = [aggregate.name.encode(), str(aggregate.snapshot_version).encode()]
    _value_digest(aggregate.initial, parts)
    _type_digest(type(aggregate.initial), seen, parts)
    for kind in aggregate.events:
        spec = spec_of(kind)
        parts.append(str(spec.version).encode())
        _type_digest(kind, seen, parts)
        _code_digest(spec.upcasters, seen, parts)
    _code_digest(aggregate.apply, seen, parts)
    return parts


def digest_parts(parts: list[bytes]) -> str:
    """The fingerprint of :func:`fingerprint_parts`' parts."""
    return hashlib.blake2b(b"\x00".join(parts), digest_size=16).hexdigest()


def take(
    aggregate: Aggregate[S], stream: str, version: int, state: S, *, digest: str | None = None
) -> Snapshot[S]:
    """A snapshot of ``state``, which folds ``stream``'s events up to ``version``.

    ``digest`` is the aggregate's :func:`fingerprint` when the caller has
    computed it once already (an application does, for every stream).
    """
    return Snapshot(stream, version, state, fingerprint(aggregate) if digest is None else digest)


def restore(
    aggregate: Aggregate[S],
    snapshot: Snapshot[S] | None,
    later: Iterable[Any],
    *,
    full_history: Callable[[], Iterable[Any]] | None = None,
    digest: str | None = None,
) -> S:
    """Fold ``later`` events onto a usable snapshot's state.

    A missing snapshot, or one whose fingerprint does not match the
    aggregate, is not used: the state is folded from ``full_history()`` when
    given, else from ``later`` alone (which must then be the whole history).
    ``digest`` is the aggregate's :func:`fingerprint`, when the caller has
    computed it once already.
    """
    if snapshot is not None and snapshot.fingerprint == (
        fingerprint(aggregate) if digest is None else digest
    ):
        return aggregate.fold(later, snapshot.state)
    if full_history is not None:
        return aggregate.fold(full_history())
    return aggregate.fold(later)
