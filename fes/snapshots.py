"""Snapshots: a state remembered at a version, fingerprinted by its schema.

Loading from a snapshot plus the events after it equals folding the whole
history, as long as the snapshot was taken by the same projector over the
same event schemas.  The fingerprint captures both, so a snapshot taken under
an older definition is ignored rather than trusted.
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Callable, Iterable
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


def _schema_of(kind: type) -> str:
    spec = spec_of(kind)
    names = [a.name for a in attrs.fields(kind)] if attrs.has(kind) else []
    return f"{kind.__qualname__}:{spec.version}:{','.join(names)}"


def fingerprint(aggregate: Aggregate[Any]) -> str:
    """A digest of the aggregate's projector code, event schemas and state type."""
    parts: list[bytes] = [
        aggregate.name.encode(),
        str(aggregate.snapshot_version).encode(),
        type(aggregate.initial).__qualname__.encode(),
    ]
    parts.extend(_schema_of(k).encode() for k in aggregate.events)
    _code_digest(aggregate.apply, set(), parts)
    return hashlib.blake2b(b"\x00".join(parts), digest_size=16).hexdigest()


def take(aggregate: Aggregate[S], stream: str, version: int, state: S) -> Snapshot[S]:
    """A snapshot of ``state``, which folds ``stream``'s events up to ``version``."""
    return Snapshot(stream, version, state, fingerprint(aggregate))


def restore(
    aggregate: Aggregate[S],
    snapshot: Snapshot[S] | None,
    later: Iterable[Any],
    *,
    full_history: Callable[[], Iterable[Any]] | None = None,
) -> S:
    """Fold ``later`` events onto a usable snapshot's state.

    A missing snapshot, or one whose fingerprint does not match the
    aggregate, is not used: the state is folded from ``full_history()`` when
    given, else from ``later`` alone (which must then be the whole history).
    """
    if snapshot is not None and snapshot.fingerprint == fingerprint(aggregate):
        return aggregate.fold(later, snapshot.state)
    if full_history is not None:
        return aggregate.fold(full_history())
    return aggregate.fold(later)
