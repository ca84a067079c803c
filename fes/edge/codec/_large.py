"""Writing JSON with large strings in memory a small multiple of their size.

orjson reserves its output buffer for a string before writing it, several
bytes per character (about 10 for ASCII, over 40 for other text): one
50 MiB string made it allocate about 500 MiB.  Pages it never touches do
not become resident (the process grows by about the output), but the
allocation is real to tracemalloc, to an address-space limit (``ulimit
-v``) and to a kernel that does not overcommit.  Here a string longer than
:data:`LARGE` characters is written by orjson a slice at a time, and the
JSON of the slices is spliced into orjson's output of the rest as an
``orjson.Fragment``: the bytes are exactly orjson's own (JSON escapes each
character by itself, so slices join up), and the peak stays near twice the
output.

Finding out whether a value holds such a string must cost nothing for the
ordinary small event: :func:`writer` looks at an event class once and
generates its unstructure function extended with a ``len()`` check of the
fields that can hold a long string (and a walk of only those that could
nest one), so that the check runs in the call that was made anyway.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Collection
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal, Union
from uuid import UUID

import orjson

from ._generate import _compile, _Resolver, unstructure_parts
from ._leaves import UnstructureHook, _is_attrs

Write = Callable[[Any], bytes]

LARGE = 1 << 16
"""Strings longer than this many characters are written a slice at a time."""

SLICE = 1 << 16
"""The characters orjson writes at a time of a large string."""

_dumps = orjson.dumps
_Fragment = orjson.Fragment

# types whose JSON is never a long string
_SMALL: frozenset[Any] = frozenset({int, bool, float, datetime, date, time, UUID, type(None)})
_SCALARS = frozenset({int, float, bool, type(None)})
_STR = frozenset({str})
# types whose JSON is a str as long as the value
_STRINGS: frozenset[Any] = frozenset({str, bytes, Decimal})


def has_large(value: Any, large: int = LARGE) -> bool:
    """Whether unstructured ``value`` holds a string longer than ``large`` characters."""
    if isinstance(value, str):
        return len(value) > large
    if isinstance(value, dict):
        return _any_large(value.keys(), large) or _any_large(value.values(), large)
    if isinstance(value, (list, tuple)):
        return _any_large(value, large)
    return False


def _any_large(values: Collection[Any], large: int) -> bool:
    # arrays of numbers or of strings are told in C, without a call per item
    kinds = set(map(type, values))
    if kinds <= _SCALARS:
        return False
    if kinds == _STR:
        return max(map(len, values)) > large
    return any(has_large(v, large) for v in values)


def encode_str(text: str, size: int = SLICE) -> bytes:
    """orjson's JSON of ``text``, written ``size`` characters at a time."""
    if len(text) <= size:
        return _dumps(text)
    parts = [b'"']
    for start in range(0, len(text), size):
        # the slice's JSON without its quotes, copied: orjson's own bytes keep
        # the whole buffer it reserved.  It refuses a lone surrogate in any
        # slice as it would in the whole text.
        parts.append(_dumps(text[start:start + size])[1:-1])
    parts.append(b'"')
    return b"".join(parts)


def _spliced(value: Any, large: int, size: int) -> Any:
    """``value`` with each string longer than ``large`` replaced by its JSON fragment."""
    if isinstance(value, str):
        return _Fragment(encode_str(value, size)) if len(value) > large else value
    if isinstance(value, dict):
        # a key stays a str: orjson writes object keys only from str
        return {k: _spliced(v, large, size) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_spliced(v, large, size) for v in value]
    return value


def dumps_large(value: Any, large: int = LARGE, size: int = SLICE) -> bytes:
    """``orjson.dumps(value)``, writing strings longer than ``large`` a slice at a time."""
    return _dumps(_spliced(value, large, size))


def dumps(value: Any) -> bytes:
    """``orjson.dumps(value)`` in memory a small multiple of the output, whatever it holds."""
    return dumps_large(value) if has_large(value) else _dumps(value)


def writer(kind: Any, hooks: _Resolver, unstructure: UnstructureHook) -> Write | None:
    """The function that writes an instance of ``kind`` as JSON, or None for the usual way.

    None (``orjson.dumps(unstructure(value))``) when ``kind``'s JSON can
    hold no long string.  For an attrs class, a function generated once:
    ``kind``'s unstructure function with, before ``orjson.dumps``, a check of
    the length of each field that can hold a string (those checked inline
    already sit in local variables), and a walk of only the fields that
    could nest one; it costs an event with short strings a few ``len()``
    calls, and no call more than before.
    """
    if not _is_attrs(kind):  # hooks that are not fes's: whatever they make
        if _small(kind):
            return None
        return lambda value: dumps(unstructure(value))
    check, value, space, fields = unstructure_parts(kind, hooks)
    checks: list[str] = []
    for a, local in fields:
        hint = a.type if a.type is not None else Any
        get = local or f"v[{a.name!r}]"
        if _small(hint):
            continue
        if hint in _STRINGS:
            checks.append(f"len({get}) > {LARGE}")
        elif _optional_string(hint):
            checks.append(f"((s := {get}) is not None and len(s) > {LARGE})")
        else:
            checks.append(f"__has_large({get})")
    if not checks:
        return None
    source = (
        f"def write(i):\n{check}    v = {value}\n"
        f"    if {' or '.join(checks)}:\n"
        "        return __dumps_large(v)\n"
        "    return __dumps(v)\n"
    )
    space.update({
        "len": len, "__has_large": has_large, "__dumps": _dumps, "__dumps_large": dumps_large,
    })
    return _compile(source, "write", kind, space)  # type: ignore[no-any-return]


def _small(kind: Any) -> bool:
    """Whether the JSON of ``kind`` is never a long string."""
    try:
        if kind in _SMALL:
            return True
    except TypeError:  # an unhashable type expression
        return False
    if typing.get_origin(kind) is Literal:
        return True
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return True  # its values are written in the code, not given at run time
    if typing.get_origin(kind) in (Union, types.UnionType):
        return all(_small(m) for m in typing.get_args(kind))
    return False


def _optional_string(kind: Any) -> bool:
    if typing.get_origin(kind) not in (Union, types.UnionType):
        return False
    members = typing.get_args(kind)
    return type(None) in members and all(m in _STRINGS or m is type(None) for m in members)
