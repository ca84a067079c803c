"""Strict leaf hooks, and what kind of JSON each type is written as.

Every other module of the codec builds on these: the hooks of str, int,
float, bool, datetimes, UUIDs, decimals and bytes, and the predicates that
sort a type into sequence, mapping, union, literal, enum or attrs record.
"""

from __future__ import annotations

import base64
import collections.abc as cabc
import dataclasses
import enum
import re
import types
import typing
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal, NoReturn, Union, cast
from uuid import UUID

import attrs
import pyrsistent
import pyrsistent.typing

from fes.errors import DefinitionError

StructureHook = Callable[[Any, Any], Any]
UnstructureHook = Callable[[Any], Any]
One = Callable[[Any], Any]

# --- strict leaf hooks -------------------------------------------------------
#
# Stored JSON is checked against the declared types: a str field refuses 5,
# an int field refuses "5" and 5.5.  Values written by this codec always fit;
# anything else is corruption or a schema change that needs an upcaster.


def _bad(value: Any, expected: Any) -> NoReturn:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise TypeError(f"expected {_type_name(expected)}, got {type(value).__name__} {shown}")


def _type_name(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else repr(kind)


_FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})


def _s_str(value: Any, _: Any = None) -> str:
    if value.__class__ is not str:
        _bad(value, str)
    return value


def _s_bool(value: Any, _: Any = None) -> bool:
    if value.__class__ is not bool:
        _bad(value, bool)
    return value


def _s_int(value: Any, _: Any = None) -> int:
    if value.__class__ is not int:  # not even a bool
        _bad(value, int)
    return value


def _s_float(value: Any, _: Any = None) -> float:
    kind = value.__class__
    if kind is float:
        return cast(float, value)
    if kind is int or (kind is str and value in _FLOAT_WORDS):
        return float(value)
    _bad(value, float)


def _u_float(value: float) -> float | str:
    kind = value.__class__
    if (  # True would read back as no float
        kind is not float
        and kind is not int
        and (kind is bool or not isinstance(value, (float, int)))
    ):
        _bad(value, float)
    # JSON has no NaN or infinities (orjson would write null): spell them out
    if value - value == 0.0:
        return value
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


# --- checked leaf writers -----------------------------------------------------
#
# A value is written only if it reads back: attrs does not check field types,
# so an event built with 10.5 for an int field, or True for a float, would be
# stored and then refused by every read of its stream.  A subclass of str or
# int (an enum member, say) is written as its value, which reads back equal.


def _u_str(value: Any) -> Any:
    if value.__class__ is not str and not isinstance(value, str):
        _bad(value, str)
    return value


def _u_bool(value: Any) -> Any:
    if value.__class__ is not bool:
        _bad(value, bool)
    return value


def _u_int(value: Any) -> Any:
    if value.__class__ is not int and (value.__class__ is bool or not isinstance(value, int)):
        _bad(value, int)
    return value


def _from_str(parse: Callable[[str], Any], kind: type) -> StructureHook:
    def structure(value: Any, _: Any = None) -> Any:
        if value.__class__ is not str:
            _bad(value, kind)
        return parse(value)

    return structure


def _to_str(
    kind: type, write: Callable[[Any], str], but: type | None = None
) -> UnstructureHook:
    """The writer of a leaf stored as a string: only a ``kind`` (that is no ``but``)."""

    def unstructure(value: Any) -> str:
        if not isinstance(value, kind) or (but is not None and isinstance(value, but)):
            _bad(value, kind)
        return write(value)

    return unstructure


def _s_bytes(value: Any, _: Any = None) -> bytes:
    if value.__class__ is not str:
        _bad(value, bytes)
    return base64.b64decode(value, validate=True)


def _u_bytes(value: Any) -> str:
    if not isinstance(value, (bytes, bytearray)):
        _bad(value, bytes)
    return base64.b64encode(value).decode("ascii")


# Python 3.11's fromisoformat drops the microseconds of a UTC offset that has
# them ("+00:00:00.000001" reads as UTC) although isoformat writes them; such
# an offset is read by hand, so that every value written reads back as it was.
_FRACTIONAL_OFFSET = re.compile(r"([+-])(\d\d):(\d\d):(\d\d)\.(\d{6})$")


def _keeping_offset(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def read(text: str) -> Any:
        value = parse(text)
        # cheap test first: only a fraction of a second ends ".dddddd"
        if text[-7:-6] != "." or (match := _FRACTIONAL_OFFSET.search(text)) is None:
            return value
        sign, hours, minutes, seconds, micros = match.groups()
        offset = timedelta(
            hours=int(hours), minutes=int(minutes), seconds=int(seconds), microseconds=int(micros)
        )
        return value.replace(tzinfo=timezone(-offset if sign == "-" else offset))

    return read


_LEAVES: dict[Any, tuple[StructureHook, UnstructureHook]] = {
    str: (_s_str, _u_str),
    bool: (_s_bool, _u_bool),
    int: (_s_int, _u_int),
    float: (_s_float, _u_float),
    datetime: (
        _from_str(_keeping_offset(datetime.fromisoformat), datetime),
        _to_str(datetime, datetime.isoformat),
    ),
    # a datetime is a date, but its ISO form reads back as no date
    date: (_from_str(date.fromisoformat, date), _to_str(date, date.isoformat, but=datetime)),
    time: (_from_str(_keeping_offset(time.fromisoformat), time), _to_str(time, time.isoformat)),
    UUID: (_from_str(UUID, UUID), _to_str(UUID, str)),
    Decimal: (_from_str(Decimal, Decimal), _to_str(Decimal, str)),
    bytes: (_s_bytes, _u_bytes),
}

# --- kinds of JSON a type is written as (to tell union members apart) ----------

_STR_LEAVES = (str, datetime, date, time, UUID, Decimal, bytes)

_SEQUENCES: dict[Any, Callable[[Iterable[Any]], Any]] = {
    list: list,
    tuple: tuple,
    set: set,
    frozenset: frozenset,
    cabc.Sequence: tuple,
    cabc.MutableSequence: list,
    cabc.Set: frozenset,
    cabc.MutableSet: set,
    pyrsistent.PVector: pyrsistent.pvector,
    pyrsistent.typing.PVector: pyrsistent.pvector,
    pyrsistent.PSet: pyrsistent.pset,
    pyrsistent.typing.PSet: pyrsistent.pset,
    type(pyrsistent.pvector()): pyrsistent.pvector,  # the C implementation's class
}
_MAPPINGS: dict[Any, Callable[[Any], Any]] = {
    dict: dict,
    cabc.Mapping: dict,
    cabc.MutableMapping: dict,
    pyrsistent.PMap: pyrsistent.pmap,
    pyrsistent.typing.PMap: pyrsistent.pmap,
    type(pyrsistent.pmap()): pyrsistent.pmap,
}


def _origin(kind: Any) -> Any:
    return typing.get_origin(kind) or kind


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (Union, types.UnionType)


def _is_attrs(kind: Any) -> bool:
    """Whether fes generates the hooks of ``kind``: a non-generic attrs class."""
    return isinstance(kind, type) and attrs.has(kind) and not getattr(kind, "__parameters__", ())


def _is_record(kind: Any) -> bool:
    """Whether values of ``kind`` are written as JSON objects of their fields."""
    origin = _origin(kind)
    return isinstance(origin, type) and (attrs.has(origin) or dataclasses.is_dataclass(origin))


def _json_kinds(kind: Any) -> frozenset[type] | None:
    """The Python types of the JSON a value of ``kind`` is written as, if known."""
    if kind is None or kind is type(None):
        return frozenset({type(None)})
    if kind in (bool, int, float):
        return frozenset({kind})
    if kind in _STR_LEAVES:
        return frozenset({str})
    origin = _origin(kind)
    if origin is Literal:
        return frozenset(type(value) for value in typing.get_args(kind))
    supertype = getattr(kind, "__supertype__", None)
    if supertype is not None:
        return _json_kinds(supertype)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return frozenset(type(member.value) for member in kind)
    if origin in _SEQUENCES:
        return frozenset({list})
    if origin in _MAPPINGS:
        return frozenset({dict if _object_keys(kind) else list})
    if _is_record(kind):
        return frozenset({dict})
    return None


def _object_keys(kind: Any) -> bool:
    """Whether a mapping type is written as a JSON object (else as [key, value] pairs)."""
    args = typing.get_args(kind)
    key = args[0] if args else Any
    return key is Any or _json_kinds(key) == frozenset({str})


def _tag_of(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else repr(kind)


# --- what the hooks dispatch on ------------------------------------------------


def _leaf(kind: Any) -> tuple[StructureHook, UnstructureHook] | None:
    try:
        return _LEAVES.get(kind)
    except TypeError:  # an unhashable type expression
        return None


def _exactly(kind: type) -> Callable[[Any], bool]:
    return lambda other: other is kind


def _is_enum(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, enum.Enum)


def _is_literal(kind: Any) -> bool:
    return typing.get_origin(kind) is Literal


def _literal_unstructure(kind: Any) -> UnstructureHook:
    """Write only the literal's own values (``True`` is not the literal ``1``)."""
    allowed = {(value.__class__, value) for value in typing.get_args(kind)}

    def unstructure(value: Any) -> Any:
        try:
            known = (value.__class__, value) in allowed
        except TypeError:  # an unhashable value is no literal
            known = False
        if not known:
            _bad(value, kind)
        return value.value if isinstance(value, enum.Enum) else value

    return unstructure


def _is_sequence(kind: Any) -> bool:
    return _origin(kind) in _SEQUENCES


def _is_mapping(kind: Any) -> bool:
    return _origin(kind) in _MAPPINGS


def _union_tags(kind: Any, members: list[Any]) -> dict[Any, str]:
    tags = {member: _tag_of(member) for member in members}
    if len(set(tags.values())) < len(tags):
        tags = {m: f"{getattr(m, '__module__', '')}.{_tag_of(m)}" for m in members}
    if len(set(tags.values())) < len(tags):
        raise DefinitionError(f"union {kind!r} has members fes cannot tell apart")
    return tags


def _shorten(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."
