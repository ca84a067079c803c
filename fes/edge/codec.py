"""The codec: domain values to bytes and back, for one application.

A :class:`Codec` knows exactly the event types of the aggregates it is given
(plus ``extra_types``) and nothing else: a stored topic is looked up in that
allow-list and never imported, so a row naming ``os:system`` is refused with
:class:`fes.UnknownTopic`.  Values are unstructured by one cattrs
``Converter`` per codec (with hooks for pyrsistent collections, datetimes,
UUIDs, decimals, enums, unions and nested attrs classes) and serialised by
orjson.  Structure and unstructure functions are generated once per type, so
encoding and decoding cost little more than orjson itself.

Payload format
--------------

A payload is one of:

``{…}``
    Format 0: a bare JSON object.  Used whenever nothing else is needed
    (schema version 1, not compressed, not encrypted), so most payloads are
    plain JSON that a database's JSON functions can read.

``flags [schema] [key] body``
    Format 1.  ``flags`` is one byte ``0b1000_0CES``: the high nibble ``8``
    names the format (another nibble is refused, so the format can evolve);
    bit ``S`` (0x01) says the value was zlib-compressed; ``E`` (0x02) that it
    is encrypted; ``C`` (0x04) that the event's schema version follows as an
    unsigned LEB128 varint (absent means version 1).  When encrypted, the key
    id follows as one length byte and ASCII, then a 12-byte nonce, then the
    AES-GCM ciphertext and tag.  ``body`` is the JSON, zlib-compressed when
    ``S`` is set; the order is encode → compress → encrypt.

Encryption binds the header and the row (application, kind, topic or
aggregate, stream and version) as associated data, so a ciphertext moved to
another row, also another application's, or a flipped flag, fails to
decrypt; a codec with a cipher reads only encrypted payloads, since anyone
could have written a plain one.  Compression is used only when it makes the
payload smaller, and inflating is bounded by ``max_payload``.

Values
------

Attrs classes are JSON objects keyed by attribute name; pyrsistent vectors,
sets, tuples and lists are arrays; maps are objects when their keys are
strings (or UUIDs, string enums, …) and ``[key, value]`` pairs otherwise.
Datetimes, dates and times are ISO 8601 (with their offset), UUIDs and
decimals strings, bytes base64, enums their values, non-finite floats
``"NaN"``/``"Infinity"``/``"-Infinity"``.  A union whose members JSON cannot
tell apart (two attrs classes, say) is written with a ``"$type"`` tag naming
the member class.  Integers must fit in 64 bits.  Reading is strict: a value
of the wrong JSON type is a :class:`fes.DecodeError`, not a conversion.

Metadata is encoded separately, as a JSON object, or as nothing at all when
it is empty (the common case).

Keys from the environment
-------------------------

:meth:`Cipher.from_env` reads ``FES_CIPHER_KEYS``, a comma-separated list of
``id:base64key`` (keys of 16, 24 or 32 bytes; ids of letters, digits, ``.``,
``_`` and ``-``), and ``FES_CIPHER_KEY_ID``, the id to encrypt with (optional
when there is one key).  To rotate, add a new key, point
``FES_CIPHER_KEY_ID`` at it and keep the old keys listed: rows written under
them still decrypt.  Make a key with::

    python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"
"""

from __future__ import annotations

import base64
import binascii
import collections.abc as cabc
import dataclasses
import enum
import os
import re
import types
import typing
import zlib
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Union, cast
from uuid import UUID

import attrs
import cattrs
import orjson
import pyrsistent
import pyrsistent.typing
from cattrs.enums import enum_unstructure_factory
from cattrs.fns import identity

from fes.aggregates import Aggregate, _AdaptedApply, _Combined, _Dispatch, _MappedState
from fes.errors import (
    CipherError,
    ConfigurationError,
    DecodeError,
    DefinitionError,
    EncodeError,
    FesError,
    UnknownTopic,
    UpcastError,
)
from fes.events import NO_METADATA, Metadata, spec_of, upcast

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["Cipher", "Codec"]

StructureHook = Callable[[Any, Any], Any]
UnstructureHook = Callable[[Any], Any]
One = Callable[[Any], Any]

_dumps = orjson.dumps
_loads = orjson.loads

# --- the payload header ------------------------------------------------------

_FORMAT_MASK = 0xF8  # the high nibble and the reserved bit 0x08
_FORMAT_1 = 0x80
_COMPRESSED = 0x01
_ENCRYPTED = 0x02
_SCHEMA = 0x04
_BARE = 0x7B  # "{": a format-0 payload is a bare JSON object
_NONCE = 12
_MIN_COMPRESS = 96  # below this zlib's own overhead makes a win unlikely


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise ValueError("schema version varint is too long")


def _inflate(data: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes: a small payload may not become a huge one."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit)
    if inflater.unconsumed_tail or (not inflater.eof and len(out) >= limit):
        raise ValueError(f"it decompresses to more than max_payload={limit} bytes")
    if not inflater.eof:
        raise ValueError("the compressed data is truncated")
    if inflater.unused_data:
        raise ValueError("there are bytes after the compressed data")
    return out


# --- the cipher --------------------------------------------------------------

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


def _aesgcm() -> type[AESGCM]:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise CipherError(
            "encryption needs the 'cryptography' package: pip install 'fes-events[crypto]'"
        ) from exc
    return AESGCM


class Cipher:
    """AES-GCM with a keyring: encrypt under the current key, decrypt under any.

    ``keys`` maps key ids to 16, 24 or 32-byte keys; ``current`` names the one
    new payloads are encrypted with.  Keep retired keys in the ring to read
    what was written under them.  Nonces are 12 random bytes, so one key
    should encrypt well under 2**32 payloads: rotate long before that.
    """

    __slots__ = ("_current", "_current_id", "_keys")

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        aesgcm = _aesgcm()
        if not keys:
            raise ConfigurationError("a cipher needs at least one key")
        table: dict[str, AESGCM] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
                raise ConfigurationError(
                    f"key id {key_id!r} must be 1 to 64 letters, digits, '.', '_' or '-'"
                )
            if not isinstance(key, bytes | bytearray) or len(key) not in (16, 24, 32):
                size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
                raise ConfigurationError(f"key {key_id!r} must be 16, 24 or 32 bytes, got {size}")
            table[key_id] = aesgcm(bytes(key))
        if current not in table:
            raise ConfigurationError(
                f"the current key id {current!r} is not in the keyring "
                f"(key ids: {', '.join(sorted(table))})"
            )
        self._keys = table
        self._current = current
        self._current_id = current.encode("ascii")

    def __repr__(self) -> str:
        return f"Cipher(current={self._current!r}, key_ids={sorted(self._keys)!r})"

    @property
    def current(self) -> str:
        """The id of the key new payloads are encrypted with."""
        return self._current

    @property
    def key_ids(self) -> frozenset[str]:
        """The ids of every key this cipher can decrypt with."""
        return frozenset(self._keys)

    @staticmethod
    def generate_key() -> bytes:
        """A new random 256-bit key."""
        return os.urandom(32)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Cipher | None:
        """The cipher configured by ``FES_CIPHER_KEYS`` and ``FES_CIPHER_KEY_ID``.

        None when ``FES_CIPHER_KEYS`` is unset or empty.  ``env`` defaults to
        ``os.environ``; see the module documentation for the format.
        """
        env = os.environ if env is None else env
        spec = env.get("FES_CIPHER_KEYS", "").strip()
        current = env.get("FES_CIPHER_KEY_ID", "").strip()
        if not spec:
            if current:
                raise ConfigurationError("FES_CIPHER_KEY_ID is set but FES_CIPHER_KEYS is empty")
            return None
        keys: dict[str, bytes] = {}
        for number, item in enumerate(spec.split(","), 1):
            item = item.strip()
            if not item:
                continue
            key_id, sep, encoded = item.partition(":")
            key_id = key_id.strip()
            if not sep:
                raise ConfigurationError(
                    f"FES_CIPHER_KEYS entry {number} is not of the form id:base64key"
                )
            if key_id in keys:
                raise ConfigurationError(f"FES_CIPHER_KEYS names key id {key_id!r} twice")
            try:
                text = encoded.strip().translate(str.maketrans("-_", "+/"))
                keys[key_id] = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigurationError(
                    f"the key {key_id!r} in FES_CIPHER_KEYS is not valid base64"
                ) from None
        if not current:
            if len(keys) != 1:
                raise ConfigurationError(
                    "FES_CIPHER_KEYS holds several keys: set FES_CIPHER_KEY_ID to the "
                    "one to encrypt with"
                )
            current = next(iter(keys))
        return cls(keys, current)

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """Nonce and ciphertext of ``plaintext`` under the current key."""
        nonce = os.urandom(_NONCE)
        return nonce + self._keys[self._current].encrypt(nonce, plaintext, associated_data)

    def decrypt(self, key_id: str, sealed: bytes, associated_data: bytes) -> bytes:
        """The plaintext of what :meth:`encrypt` returned under key ``key_id``."""
        aead = self._keys.get(key_id)
        if aead is None:
            raise CipherError(
                f"it was encrypted under key id {key_id!r}, which is not in the keyring "
                f"(key ids: {', '.join(sorted(self._keys))}); keep retired keys in "
                "FES_CIPHER_KEYS to read what they encrypted"
            )
        if len(sealed) < _NONCE + 16:
            raise CipherError("the ciphertext is truncated")
        try:
            return aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], associated_data)
        except Exception:  # cryptography's InvalidTag: say what it means
            raise CipherError(
                f"authentication failed under key id {key_id!r}: the data was altered, "
                "copied from another row or application, or encrypted under another key "
                "with this id"
            ) from None


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


_LEAVES: dict[Any, tuple[StructureHook, UnstructureHook]] = {
    str: (_s_str, _u_str),
    bool: (_s_bool, _u_bool),
    int: (_s_int, _u_int),
    float: (_s_float, _u_float),
    datetime: (_from_str(datetime.fromisoformat, datetime), _to_str(datetime, datetime.isoformat)),
    # a datetime is a date, but its ISO form reads back as no date
    date: (_from_str(date.fromisoformat, date), _to_str(date, date.isoformat, but=datetime)),
    time: (_from_str(time.fromisoformat, time), _to_str(time, time.isoformat)),
    UUID: (_from_str(UUID, UUID), _to_str(UUID, str)),
    Decimal: (_from_str(Decimal, Decimal), _to_str(Decimal, str)),
    bytes: (_s_bytes, _u_bytes),
}

# how a field of a leaf type is checked inline in generated code
_INLINE: dict[Any, str] = {
    str: "(_v{n} if (_v{n} := {get}).__class__ is __str else __bad(_v{n}, __str))",
    bool: "(_v{n} if (_v{n} := {get}).__class__ is __bool else __bad(_v{n}, __bool))",
    int: "(_v{n} if (_v{n} := {get}).__class__ is __int else __bad(_v{n}, __int))",
    float: "(_v{n} if (_v{n} := {get}).__class__ is __float else __s_float(_v{n}))",
}
# how a field of a leaf type is checked inline when it is written
_INLINE_WRITE: dict[Any, str] = {
    str: "(_v{n} if (_v{n} := i.{name}).__class__ is __str else __u{n}(_v{n}))",
    bool: "(_v{n} if (_v{n} := i.{name}).__class__ is __bool else __u{n}(_v{n}))",
    int: "(_v{n} if (_v{n} := i.{name}).__class__ is __int else __u{n}(_v{n}))",
}
_INLINE_OPTIONAL: dict[Any, str] = {
    str: "(_v{n} if (_v{n} := {get}) is None or _v{n}.__class__ is __str "
    "else __bad(_v{n}, __t{n}))",
    bool: "(_v{n} if (_v{n} := {get}) is None or _v{n}.__class__ is __bool "
    "else __bad(_v{n}, __t{n}))",
    int: "(_v{n} if (_v{n} := {get}) is None or _v{n}.__class__ is __int "
    "else __bad(_v{n}, __t{n}))",
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


# --- the hooks: one cattrs converter, extended ----------------------------------


class _Hooks:
    """A cattrs converter with fes's hooks, and per-type hooks generated once."""

    def __init__(self) -> None:
        converter = cattrs.Converter(detailed_validation=False)
        for kind, (structure, unstructure) in _LEAVES.items():
            converter.register_structure_hook_func(_exactly(kind), structure)
            converter.register_unstructure_hook_func(_exactly(kind), unstructure)
        # cattrs binds these classes (and their subclasses) ahead of any predicate;
        # str, int and bool keep cattrs' hooks there, so that enums mixing them in
        # still structure as enums; fes's own hooks look up leaves first anyway.
        converter.register_structure_hook(bytes, _s_bytes)
        converter.register_unstructure_hook(bytes, _u_bytes)
        converter.register_unstructure_hook(float, _u_float)
        converter.register_structure_hook_factory(_is_sequence, self._own(self._sequence_structure))
        converter.register_unstructure_hook_factory(_is_sequence, self._sequence_unstructure)
        converter.register_structure_hook_factory(_is_mapping, self._own(self._mapping_structure))
        converter.register_unstructure_hook_factory(_is_mapping, self._mapping_unstructure)
        converter.register_structure_hook_factory(_is_union, self._own(self._union_structure))
        converter.register_unstructure_hook_factory(_is_union, self._union_unstructure)
        converter.register_structure_hook_factory(_is_attrs, self._own(self._attrs_structure))
        converter.register_unstructure_hook_factory(_is_attrs, self._attrs_unstructure)
        converter.register_unstructure_hook_factory(_is_enum, self._enum_unstructure)
        converter.register_unstructure_hook_factory(_is_literal, _literal_unstructure)
        self.converter = converter
        self._structures: dict[type, StructureHook] = {}
        self._unstructures: dict[type, UnstructureHook] = {}
        self._building_s: set[type] = set()
        self._building_u: set[type] = set()
        # hooks made here also take one argument: call them without a wrapper
        self._one_arg: set[Callable[..., Any]] = {s for s, _ in _LEAVES.values()}

    def _own(self, factory: Callable[[Any], StructureHook]) -> Callable[[Any], StructureHook]:
        def make(kind: Any) -> StructureHook:
            hook = factory(kind)
            self._one_arg.add(hook)
            return hook

        return make

    def structure(self, kind: Any) -> StructureHook:
        leaf = _leaf(kind)
        return leaf[0] if leaf else self.converter.get_structure_hook(kind)

    def unstructure(self, kind: Any) -> UnstructureHook:
        leaf = _leaf(kind)
        return leaf[1] if leaf else self.converter.get_unstructure_hook(kind)

    def _enum_unstructure(self, kind: type[enum.Enum]) -> UnstructureHook:
        value_of = enum_unstructure_factory(kind, self.converter)

        def unstructure(value: Any) -> Any:
            if value.__class__ is not kind:  # another enum's member reads back as no member
                _bad(value, kind)
            return value_of(value)

        return unstructure

    def field_error(self, value: Any) -> str | None:
        """Which field of attrs instance ``value`` cannot be written, and why (or None)."""
        if not attrs.has(value.__class__):
            return None
        for a in _fields(value.__class__):
            if not a.init:
                continue
            try:
                _dumps(self.unstructure(a.type if a.type is not None else Any)(
                    getattr(value, a.name)
                ))
            except Exception as exc:
                return f"field {a.name!r}: {_shorten(exc)}"
        return None

    def one(self, kind: Any) -> One:
        """A one-argument structure function for ``kind``."""
        if kind is Any or kind is object:
            return identity
        hook = self.structure(kind)
        if hook in self._one_arg:
            return cast(One, hook)
        if hook == self.converter._structure_call:
            return cast(One, kind)
        return lambda value: hook(value, kind)

    # sequences and sets: JSON arrays

    def _sequence_structure(self, kind: Any) -> StructureHook:
        build = _SEQUENCES[_origin(kind)]
        args = typing.get_args(kind)
        if _origin(kind) is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return self._tuple_structure(kind, args)
        one = self.one(args[0] if args else Any)

        if one is identity:

            def structure(value: Any, _: Any = None) -> Any:
                if value.__class__ is not list:
                    _bad(value, kind)
                return build(value)

        else:

            def structure(value: Any, _: Any = None) -> Any:
                if value.__class__ is not list:
                    _bad(value, kind)
                return build(map(one, value))

        return structure

    def _tuple_structure(self, kind: Any, args: tuple[Any, ...]) -> StructureHook:
        ones = tuple(self.one(arg) for arg in args)
        size = len(ones)

        def structure(value: Any, _: Any = None) -> Any:
            if value.__class__ is not list or len(value) != size:
                _bad(value, kind)
            return tuple([one(item) for one, item in zip(ones, value, strict=True)])

        return structure

    def _sequence_unstructure(self, kind: Any) -> UnstructureHook:
        args = typing.get_args(kind)
        if _origin(kind) is tuple and args and args[-1] is not Ellipsis:
            items = tuple(self.unstructure(arg) for arg in args)
            return lambda value: [u(item) for u, item in zip(items, value, strict=True)]
        item_kind = args[0] if args else Any
        each = self.unstructure(item_kind)
        if each is identity:
            return list
        if item_kind in _INLINE_WRITE:  # str, bool or int: check classes in one loop
            exact = item_kind

            def unstructure_leaves(value: Any) -> list[Any]:
                items = list(value)
                for item in items:
                    if item.__class__ is not exact:
                        each(item)  # raises unless a subclass that reads back equal
                return items

            return unstructure_leaves
        return lambda value: [each(item) for item in value]

    # mappings: JSON objects when keys are strings, else [key, value] pairs

    def _mapping_structure(self, kind: Any) -> StructureHook:
        build = _MAPPINGS[_origin(kind)]
        args = typing.get_args(kind)
        key = self.one(args[0] if args else Any)
        item = self.one(args[1] if args else Any)
        if _object_keys(kind):
            if key is _s_str:  # JSON object keys are strings already
                key = identity
            if key is identity and item is identity:

                def structure(value: Any, _: Any = None) -> Any:
                    if value.__class__ is not dict:
                        _bad(value, kind)
                    return build(value)

            else:

                def structure(value: Any, _: Any = None) -> Any:
                    if value.__class__ is not dict:
                        _bad(value, kind)
                    return build({key(k): item(v) for k, v in value.items()})

            return structure

        def structure_pairs(value: Any, _: Any = None) -> Any:
            if value.__class__ is not list:
                _bad(value, kind)
            return build({key(k): item(v) for k, v in value})

        return structure_pairs

    def _mapping_unstructure(self, kind: Any) -> UnstructureHook:
        args = typing.get_args(kind)
        key = self.unstructure(args[0] if args else Any)
        item = self.unstructure(args[1] if args else Any)
        if not _object_keys(kind):
            return lambda value: [[key(k), item(v)] for k, v in value.items()]
        if key is identity and item is identity:
            return dict
        return lambda value: {key(k): item(v) for k, v in value.items()}

    # unions: by the kind of JSON when that tells members apart, else tagged

    def _union_parts(self, kind: Any) -> tuple[list[Any], bool, dict[type, Any] | None]:
        members = [m for m in typing.get_args(kind) if m is not type(None)]
        optional = len(members) < len(typing.get_args(kind))
        table: dict[type, Any] = {}
        for member in members:
            kinds = _json_kinds(member)
            if kinds is None or kinds & table.keys() or type(None) in kinds:
                return members, optional, None
            table.update(dict.fromkeys(kinds, member))
        for member in members:  # a float also reads integers and NaN words
            if member is float:
                table.setdefault(int, float)
                if str in table:
                    return members, optional, None
                table[str] = float
        return members, optional, table

    def _union_structure(self, kind: Any) -> StructureHook:
        members, optional, table = self._union_parts(kind)
        if len(members) == 1:
            one = self.one(members[0])

            def structure_optional(value: Any, _: Any = None) -> Any:
                return None if value is None else one(value)

            return structure_optional
        if table is not None:
            ones = {json: self.one(member) for json, member in table.items()}
            if optional:
                ones[type(None)] = identity

            def structure(value: Any, _: Any = None) -> Any:
                one = ones.get(value.__class__)
                if one is None:
                    _bad(value, kind)
                return one(value)

            return structure
        tags = _union_tags(kind, members)
        readers: dict[Any, tuple[One, bool]] = {
            tag: (self.one(member), _is_record(member)) for member, tag in tags.items()
        }

        def structure_tagged(value: Any, _: Any = None) -> Any:
            if value is None and optional:
                return None
            if value.__class__ is not dict:
                _bad(value, kind)
            reader = readers.get(value.get("$type"))
            if reader is None:
                _bad(value, kind)
            one, flat = reader
            return one(value) if flat else one(value["value"])

        return structure_tagged

    def _union_unstructure(self, kind: Any) -> UnstructureHook:
        members, _optional, table = self._union_parts(kind)
        writers = {member: self.unstructure(member) for member in members}
        if len(members) == 1:
            (only,) = writers.values()
            if only is identity:
                return identity
            return lambda value: None if value is None else only(value)
        by_class: dict[type, Any] = {}
        for member in members:
            origin = _origin(member)
            if origin is Literal:
                for literal in typing.get_args(member):
                    by_class[type(literal)] = member
            elif isinstance(origin, type):
                if origin in by_class:
                    raise DefinitionError(
                        f"union {kind!r} has two members of class {origin.__qualname__}; "
                        "fes cannot tell them apart when writing"
                    )
                by_class[origin] = member
            else:
                raise DefinitionError(f"union {kind!r}: cannot store member {member!r}")
        tags = _union_tags(kind, members) if table is None else {}
        flat = {member for member in members if _is_record(member)}

        def writer_of(value: Any) -> Any:
            member = by_class.get(value.__class__)
            if member is None:
                for cls, candidate in by_class.items():
                    if isinstance(value, cls):
                        member = candidate
                        break
                else:
                    _bad(value, kind)
            return member

        if table is not None:

            def unstructure(value: Any) -> Any:
                if value is None:
                    return None
                return writers[writer_of(value)](value)

            return unstructure

        def unstructure_tagged(value: Any) -> Any:
            if value is None:
                return None
            member = writer_of(value)
            data = writers[member](value)
            if member in flat and isinstance(data, dict):
                return {"$type": tags[member], **data}
            return {"$type": tags[member], "value": data}

        return unstructure_tagged

    # attrs classes: generated functions that read every field in one call

    def _attrs_structure(self, kind: type) -> StructureHook:
        done = self._structures.get(kind)
        if done is not None:
            return done
        if kind in self._building_s:  # a recursive type: bind late

            def later(value: Any, _: Any = None) -> Any:
                return self._structures[kind](value, _)

            return later
        self._building_s.add(kind)
        try:
            hook = self._generate_structure(kind)
        finally:
            self._building_s.discard(kind)
        self._structures[kind] = hook
        return hook

    def _generate_structure(self, kind: type) -> StructureHook:
        fields = [a for a in _fields(kind) if a.init]
        space: dict[str, Any] = {
            "__cl": kind,
            "__bad": _bad,
            "__str": str,
            "__bool": bool,
            "__float": float,
            "__int": int,
            "__s_float": _s_float,
        }
        args: list[str] = []
        keywords: list[str] = []
        slow: list[tuple[str, str, One, bool]] = []
        for n, a in enumerate(fields):
            hint = a.type if a.type is not None else Any
            get = f"o[{a.name!r}]"
            space[f"__t{n}"] = hint
            expr = self._inline(hint, get, n, space)
            if a.kw_only:
                keywords.append(f"{a.alias}={expr}")
            else:
                args.append(expr)
            slow.append((a.name, a.alias or a.name, self.one(hint), a.default is attrs.NOTHING))
        call = f"__cl({', '.join(args + keywords)})"
        if all(required for *_, required in slow):
            source = f"def structure(o, _=None):\n    return {call}\n"
        else:
            # stored before a defaulted field was added: fill in its default
            space["__slow"] = _slow_structure(kind, slow)
            source = (
                "def structure(o, _=None):\n"
                f"    try:\n        return {call}\n"
                "    except KeyError:\n        return __slow(o)\n"
            )
        exec(compile(source, f"<fes structure {kind.__qualname__}>", "exec"), space)
        return space["structure"]  # type: ignore[no-any-return]

    def _inline(self, hint: Any, get: str, n: int, space: dict[str, Any]) -> str:
        if hint is Any or hint is object:
            return get
        template = _INLINE.get(hint)
        if template is not None:
            return template.format(n=n, get=get)
        if _is_union(hint):
            members = [m for m in typing.get_args(hint) if m is not type(None)]
            if len(members) == 1 and members[0] in _INLINE_OPTIONAL:
                return _INLINE_OPTIONAL[members[0]].format(n=n, get=get)
        hook = self.structure(hint)
        if hook == self.converter._structure_call:
            return f"__t{n}({get})"
        space[f"__h{n}"] = hook
        return f"__h{n}({get}, __t{n})"

    def _attrs_unstructure(self, kind: type) -> UnstructureHook:
        done = self._unstructures.get(kind)
        if done is not None:
            return done
        if kind in self._building_u:

            def later(value: Any) -> Any:
                return self._unstructures[kind](value)

            return later
        self._building_u.add(kind)
        try:
            # A value of another class (a subclass too) would read back as
            # ``kind``, without what its class adds: refused.
            space: dict[str, Any] = {
                "__cl": kind, "__bad": _bad, "__str": str, "__bool": bool, "__int": int
            }
            items: list[str] = []
            for n, a in enumerate(f for f in _fields(kind) if f.init):
                hint = a.type if a.type is not None else Any
                hook = self.unstructure(hint)
                if hook is identity:
                    items.append(f"{a.name!r}: i.{a.name}")
                    continue
                space[f"__u{n}"] = hook
                template = _INLINE_WRITE.get(hint) if _leaf(hint) else None
                if template is not None:
                    items.append(f"{a.name!r}: " + template.format(n=n, name=a.name))
                else:
                    items.append(f"{a.name!r}: __u{n}(i.{a.name})")
            source = (
                "def unstructure(i):\n"
                "    if i.__class__ is not __cl:\n        __bad(i, __cl)\n"
                f"    return {{{', '.join(items)}}}\n"
            )
            exec(compile(source, f"<fes unstructure {kind.__qualname__}>", "exec"), space)
            hook = space["unstructure"]
        finally:
            self._building_u.discard(kind)
        self._unstructures[kind] = hook
        return hook  # type: ignore[no-any-return]


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


def _fields(kind: type) -> tuple[attrs.Attribute[Any], ...]:
    try:
        attrs.resolve_types(kind)
    except Exception as exc:
        raise DefinitionError(
            f"cannot resolve the field types of {kind.__qualname__}: {type(exc).__name__}: {exc}"
        ) from exc
    fields: tuple[attrs.Attribute[Any], ...] = attrs.fields(kind)
    return fields


def _union_tags(kind: Any, members: list[Any]) -> dict[Any, str]:
    tags = {member: _tag_of(member) for member in members}
    if len(set(tags.values())) < len(tags):
        tags = {m: f"{getattr(m, '__module__', '')}.{_tag_of(m)}" for m in members}
    if len(set(tags.values())) < len(tags):
        raise DefinitionError(f"union {kind!r} has members fes cannot tell apart")
    return tags


def _slow_structure(kind: type, fields: list[tuple[str, str, One, bool]]) -> One:
    def structure(value: Any) -> Any:
        kwargs: dict[str, Any] = {}
        for name, alias, one, required in fields:
            if name in value:
                kwargs[alias] = one(value[name])
            elif required:
                raise KeyError(name)
        return kind(**kwargs)

    return structure


# --- state types of aggregates ---------------------------------------------------


def _return_hint(func: Any) -> Any:
    """A callable's declared return type, or None when it declares none usable."""
    try:
        hint = typing.get_type_hints(func).get("return")
    except Exception:
        return None
    return None if hint is Any else hint


def _state_type(aggregate: Aggregate[Any]) -> Any:
    """The type of an aggregate's states, read from its projector's annotations."""
    apply = aggregate.apply
    hints: list[Any] | None
    if isinstance(apply, _Combined):
        parts = tuple(_state_type(part) for part in apply.parts)
        return tuple[parts] if parts else tuple[()]  # type: ignore[valid-type]
    if isinstance(apply, _AdaptedApply):
        hints = [_state_type(apply.inner)]
    elif isinstance(apply, _MappedState):
        hints = [_return_hint(apply.to)]
    elif isinstance(apply, _Dispatch):
        hints = [_return_hint(handler) for handler in apply.handlers.values()]
    else:
        hints = [_return_hint(apply)]
    members: list[Any] = []
    for hint in hints:
        if hint is None:
            if aggregate.initial is None:
                raise DefinitionError(
                    f"cannot tell the state type of aggregate {aggregate.name!r} for its "
                    "snapshots: annotate the return type of its projector's handlers"
                )
            return type(aggregate.initial)
        for member in typing.get_args(hint) if _is_union(hint) else (hint,):
            if member not in members:
                members.append(member)
    covered = any(
        isinstance(aggregate.initial, origin)
        for origin in map(_origin, members)
        if isinstance(origin, type)
    )
    if not covered:
        members.append(type(aggregate.initial))
    return members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007


# --- the codec ---------------------------------------------------------------------


def _shorten(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def _check_metadata(metadata: object, stream: str, version: int) -> None:
    """Refuse metadata that would not read back as it was given."""
    problem = None
    if not isinstance(metadata, Metadata):
        problem = "it is not a fes.Metadata"
    elif not isinstance(metadata.correlation_id, (str, type(None))):
        problem = "its correlation_id is not a str"
    elif not isinstance(metadata.causation_id, (str, type(None))):
        problem = "its causation_id is not a str"
    elif not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.headers.items()):
        problem = "its headers are not all str: str"
    if problem is not None:
        raise EncodeError(
            f"cannot store metadata {metadata!r} for stream {stream!r} version {version}: "
            f"{problem}; nothing was stored"
        )


class Codec:
    """Encodes and decodes one application's events, snapshot states and metadata.

    ``aggregates`` (and ``extra_types``, topic to type) are the only types it
    reads and writes.  ``compress`` turns on zlib (``True`` or a level 1-9);
    ``cipher`` turns on AES-GCM; ``max_payload`` bounds how large a
    compressed payload may inflate; ``app``, the application's name, is
    bound into every ciphertext with its row, so that a ciphertext copied
    into another application's tables fails to decrypt.
    """

    def __init__(
        self,
        aggregates: Iterable[Aggregate[Any]],
        *,
        extra_types: Mapping[str, type] = {},  # never mutated
        compress: bool | int = False,
        cipher: Cipher | None = None,
        max_payload: int = 16 * 1024 * 1024,
        app: str = "",
    ) -> None:
        if not isinstance(app, str):
            raise ConfigurationError(f"app must be an application's name, not {app!r}")
        if compress is True:
            level: int | None = zlib.Z_DEFAULT_COMPRESSION
        elif compress is False or compress == 0:
            level = None
        elif isinstance(compress, int) and 1 <= compress <= 9:
            level = compress
        else:
            raise ConfigurationError(
                f"compress must be a bool or a zlib level 1-9, got {compress!r}"
            )
        if not isinstance(max_payload, int) or max_payload < 1:
            raise ConfigurationError(f"max_payload must be a positive int, got {max_payload!r}")
        if cipher is not None and not isinstance(cipher, Cipher):
            raise ConfigurationError(f"cipher must be a fes Cipher, got {type(cipher).__name__}")
        self._level = level
        self._cipher = cipher
        self._app = app
        self._max = max_payload
        self._plain = level is None and cipher is None
        # with a cipher, only authenticated payloads are read: a row written by
        # someone without the key is refused rather than trusted
        self._plain_reads = cipher is None
        self._hooks = _Hooks()
        self._states: dict[str, tuple[Aggregate[Any], UnstructureHook, StructureHook, Any]] = {}

        read: dict[str, type] = {}
        write: dict[type, str] = {}

        def claim(topic: str, kind: type) -> None:
            other = read.setdefault(topic, kind)
            if other is not kind:
                raise DefinitionError(
                    f"topic {topic!r} is claimed by both {other.__qualname__} and "
                    f"{kind.__qualname__}; give one of them another topic with fes.event()"
                )

        def writes(kind: type, topic: str) -> None:
            other = write.setdefault(kind, topic)
            if other != topic:
                raise DefinitionError(
                    f"{kind.__qualname__} would be written under two topics, {other!r} and "
                    f"{topic!r}; give it one stable topic with fes.event(topic=...)"
                )

        for aggregate in aggregates:
            for topic, kind in aggregate.topics().items():
                claim(topic, kind)
            for kind in aggregate.events:
                writes(kind, aggregate.topic_of(kind))
        for topic, kind in extra_types.items():
            if not isinstance(kind, type):
                raise DefinitionError(f"extra type for topic {topic!r} is not a class: {kind!r}")
            claim(topic, kind)
            for alias in spec_of(kind).aliases:
                claim(alias, kind)
            writes(kind, topic)

        hooks: dict[type, tuple[StructureHook, UnstructureHook]] = {}
        for kind in write:
            try:
                hooks[kind] = (self._hooks.structure(kind), self._hooks.unstructure(kind))
            except FesError:
                raise
            except Exception as exc:
                raise DefinitionError(
                    f"fes cannot store events of type {kind.__qualname__}: {_shorten(exc)}"
                ) from exc
        # per topic: type, hook, schema version, and the first byte of a payload
        # that needs nothing but JSON decoding (-1: none can)
        self._readers: dict[str, tuple[type, StructureHook, int, int]] = {}
        for topic, kind in read.items():
            current = spec_of(kind).version
            bare = _BARE if current == 1 and self._plain_reads else -1
            self._readers[topic] = (kind, hooks[kind][0], current, bare)
        self._writers: dict[type, tuple[str, UnstructureHook, int]] = {
            kind: (topic, hooks[kind][1], spec_of(kind).version) for kind, topic in write.items()
        }
        self.topics: frozenset[str] = frozenset(read)

    def __repr__(self) -> str:
        return (
            f"Codec(topics={len(self.topics)}, compress={self._level is not None}, "
            f"cipher={self._cipher!r})"
        )

    @property
    def cipher(self) -> Cipher | None:
        """The cipher this codec encrypts with, or None."""
        return self._cipher

    def with_aliases(self, topics: Iterable[str]) -> list[str]:
        """``topics`` and every other topic read as the same type as one of them.

        A renamed class's events stay stored under its old topic, an alias of
        the new one: asking for the new topic's events means asking for both.
        """
        wanted = list(topics)
        if not all(isinstance(t, str) for t in wanted):
            return wanted  # for the store to refuse
        wanted = list(dict.fromkeys(wanted))
        kinds = {self._readers[t][0] for t in wanted if t in self._readers}
        wanted.extend(t for t, r in self._readers.items() if r[0] in kinds and t not in wanted)
        return wanted

    def topic_of(self, event: object) -> str:
        """The topic an event is written under."""
        writer = self._writers.get(event.__class__)
        if writer is None:
            raise self._unregistered(event)
        return writer[0]

    def _unregistered(self, event: object) -> DefinitionError:
        return DefinitionError(
            f"{type(event).__qualname__} is not an event type of this application; "
            "list it in an aggregate's events (or the codec's extra_types)"
        )

    # events

    def encode(self, event: object, *, stream: str, version: int) -> tuple[str, bytes]:
        """The topic and payload of an event about to be stored at ``stream@version``."""
        try:
            topic, unstructure, schema = self._writers[event.__class__]
        except KeyError:
            raise self._unregistered(event) from None
        try:
            body = _dumps(unstructure(event))
        except Exception as exc:
            raise EncodeError(
                f"cannot encode {topic!r} for stream {stream!r} version {version}: "
                f"{self._hooks.field_error(event) or _shorten(exc)}; nothing was stored"
            ) from exc
        if self._plain and schema == 1 and body[0] == _BARE:
            return topic, body
        return topic, self._seal(body, schema, "event", topic, stream, version)

    def decode(self, topic: str, payload: bytes, *, stream: str, version: int) -> object:
        """The event stored at ``stream@version`` under ``topic``."""
        try:
            kind, structure, current, bare = self._readers[topic]
        except KeyError:
            raise UnknownTopic(topic, self.topics) from None
        try:
            if payload[0] == bare:  # a bare JSON object of the current schema
                return structure(_loads(payload), kind)
            if payload[0] == _BARE and self._plain_reads:
                data = upcast(kind, _loads(payload), 1)
            else:
                schema, body = self._open(payload, "event", topic, stream, version)
                data = _loads(body)
                if schema != current:
                    data = upcast(kind, data, schema)
            return structure(data, kind)
        except UpcastError as exc:
            raise UpcastError(
                f"{exc} (topic {topic!r}, stream {stream!r} version {version})"
            ) from exc
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(
                f"cannot decode {_row('event', topic, stream, version)}: {_problem(payload, exc)}"
            ) from exc

    def decode_stream(
        self, stream: str, rows: Iterable[tuple[int, str, bytes]]
    ) -> list[object]:
        """The events of a stream's ``(version, topic, payload)`` rows, in order.

        :meth:`decode` for many rows.  Loading a stream decodes every row, so
        the common case (a bare JSON object of the current schema) runs inline
        here; any other row, and any failure, goes through :meth:`decode` for
        its checks and errors.
        """
        readers = self._readers
        loads = _loads
        events: list[object] = []
        append = events.append
        for version, topic, payload in rows:
            reader = readers.get(topic)
            if reader is not None and payload and payload[0] == reader[3]:
                try:
                    append(reader[1](loads(payload), reader[0]))
                    continue
                except Exception:  # decode() below reports it properly
                    pass
            append(self.decode(topic, payload, stream=stream, version=version))
        return events

    # snapshot states

    def _state_hooks(self, aggregate: Aggregate[Any]) -> tuple[UnstructureHook, StructureHook, Any]:
        known = self._states.get(aggregate.name)
        if known is not None and known[0] is aggregate:
            return known[1], known[2], known[3]
        kind = _state_type(aggregate)
        try:
            unstructure = self._hooks.unstructure(kind)
            structure = self._hooks.structure(kind)
        except FesError:
            raise
        except Exception as exc:
            raise DefinitionError(
                f"fes cannot store states of aggregate {aggregate.name!r} ({kind!r}): "
                f"{_shorten(exc)}"
            ) from exc
        self._states[aggregate.name] = (aggregate, unstructure, structure, kind)
        return unstructure, structure, kind

    def encode_state(
        self, aggregate: Aggregate[Any], state: Any, *, stream: str, version: int
    ) -> bytes:
        """The payload of a snapshot of ``stream`` at ``version``."""
        unstructure = self._state_hooks(aggregate)[0]
        try:
            body = _dumps(unstructure(state))
        except Exception as exc:
            raise EncodeError(
                f"cannot encode the state of {aggregate.name!r} for stream {stream!r} "
                f"version {version}: {_shorten(exc)}"
            ) from exc
        return self._seal(body, 1, "state", aggregate.name, stream, version)

    def decode_state(
        self, aggregate: Aggregate[Any], payload: bytes, *, stream: str, version: int
    ) -> Any:
        """The state in a snapshot payload of ``stream`` at ``version``."""
        _, structure, kind = self._state_hooks(aggregate)
        try:
            if payload[0] == _BARE and self._plain_reads:
                body = payload
            else:
                _, body = self._open(payload, "state", aggregate.name, stream, version)
            return structure(_loads(body), kind)
        except DecodeError:
            raise
        except Exception as exc:
            where = _row("state", aggregate.name, stream, version)
            raise DecodeError(f"cannot decode {where}: {_problem(payload, exc)}") from exc

    # metadata

    def encode_meta(
        self, metadata: Metadata, *, topic: str, stream: str, version: int
    ) -> bytes | None:
        """The stored form of the metadata of the event at ``stream@version``.

        None when the metadata is empty.  Otherwise JSON, sealed like the
        event's payload: with a cipher it is encrypted and bound to the
        event's topic, stream and version; with compression a large one is
        compressed.
        """
        if metadata is NO_METADATA:
            return None
        _check_metadata(metadata, stream, version)
        data: dict[str, Any] = {}
        if metadata.correlation_id is not None:
            data["correlation_id"] = metadata.correlation_id
        if metadata.causation_id is not None:
            data["causation_id"] = metadata.causation_id
        if metadata.headers:
            data["headers"] = dict(metadata.headers)
        if not data:
            return None
        try:
            body = _dumps(data)
        except Exception as exc:
            raise EncodeError(f"cannot encode metadata: {_shorten(exc)}") from exc
        if self._plain:
            return body
        return self._seal(body, 1, "meta", topic, stream, version)

    def decode_meta(
        self, data: bytes | None, *, topic: str, stream: str, version: int
    ) -> Metadata:
        """The metadata stored as ``data`` (None or empty for none) with ``stream@version``."""
        if not data:
            return NO_METADATA
        try:
            if data[0] == _BARE and self._plain_reads:
                body = data
            else:
                _, body = self._open(data, "meta", topic, stream, version)
            value = _loads(body)
            if value.__class__ is not dict:
                _bad(value, dict)
            correlation = value.get("correlation_id")
            causation = value.get("causation_id")
            headers = value.get("headers", {})
            for item in (correlation, causation):
                if item is not None and item.__class__ is not str:
                    _bad(item, str)
            if headers.__class__ is not dict or not all(
                k.__class__ is str and v.__class__ is str for k, v in headers.items()
            ):
                _bad(headers, "a mapping of str to str")
            return Metadata(correlation, causation, headers)
        except CipherError:
            raise
        except Exception as exc:
            raise DecodeError(
                f"cannot decode the metadata of {_row('event', topic, stream, version)}: "
                f"{_shorten(exc)}"
            ) from exc

    # resealing

    def reseal(
        self,
        data: bytes,
        *,
        kind: Literal["event", "meta", "state"],
        name: str,
        stream: str,
        version: int,
        plain: bool = False,
    ) -> bytes | None:
        """``data`` encrypted anew under the cipher's current key, or None if it already is.

        ``data`` is a stored payload: an event's (``kind="event"``, ``name``
        its topic), an event's metadata (``"meta"``, ``name`` the event's
        topic) or a snapshot's (``"state"``, ``name`` the aggregate's name).
        It is decrypted under whichever key of the ring it names and sealed
        again, its JSON and schema version unchanged, so nothing is decoded
        into values.  An unencrypted payload is refused with
        :class:`fes.CipherError` unless ``plain`` is true: encrypting a store
        that was written in the clear vouches for every plain row in it.
        """
        cipher = self._cipher
        if cipher is None:
            raise DefinitionError(
                "resealing needs a codec with a cipher: it encrypts under the current key"
            )
        if self._sealed_under(data, cipher._current_id):
            return None
        try:
            if data[0] == _BARE:
                if not plain:
                    raise CipherError(
                        f"cannot reseal {_row(kind, name, stream, version)}: it is not "
                        "encrypted, and plain rows are encrypted only when asked "
                        "(plain=True; fes reseal --plain)"
                    )
                schema, body = 1, data
            else:
                schema, body = self._open(data, kind, name, stream, version, plain_ok=plain)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(
                f"cannot reseal {_row(kind, name, stream, version)}: {_problem(data, exc)}"
            ) from exc
        return self._seal(body, schema, kind, name, stream, version)

    @staticmethod
    def _sealed_under(data: bytes, key_id: bytes) -> bool:
        """Whether ``data`` is a format-1 payload encrypted under ``key_id``."""
        if not data or data[0] & _FORMAT_MASK != _FORMAT_1 or not data[0] & _ENCRYPTED:
            return False
        try:
            return _header(data)[1] == key_id
        except (IndexError, ValueError):
            return False

    # the header

    def _seal(
        self, body: bytes, schema: int, kind: str, name: str, stream: str, version: int
    ) -> bytes:
        flags = _FORMAT_1
        header = b""
        if schema != 1:
            flags |= _SCHEMA
            header = _varint(schema)
        if self._level is not None and _MIN_COMPRESS <= len(body) <= self._max:
            packed = zlib.compress(body, self._level)
            if len(packed) + 1 < len(body):  # the flag may cost a byte: a bare body has none
                body = packed
                flags |= _COMPRESSED
        cipher = self._cipher
        if cipher is None:
            if flags == _FORMAT_1 and body[0] == _BARE:
                return body
            return bytes((flags,)) + header + body
        key_id = cipher._current_id
        header = bytes((flags | _ENCRYPTED,)) + header + bytes((len(key_id),)) + key_id
        associated = header + _dumps([self._app, kind, name, stream, version])
        return header + cipher.encrypt(body, associated)

    def _open(
        self,
        payload: bytes,
        kind: str,
        name: str,
        stream: str,
        version: int,
        *,
        plain_ok: bool = False,
    ) -> tuple[int, bytes]:
        """The schema version and JSON body of a format-1 payload."""
        flags = payload[0]
        if self._cipher is not None and not plain_ok and (
            flags & _FORMAT_MASK != _FORMAT_1 or not flags & _ENCRYPTED
        ):
            raise CipherError(
                f"cannot decrypt {_row(kind, name, stream, version)}: it is not encrypted, "
                "and a codec with a cipher reads only authenticated payloads"
            )
        if flags & _FORMAT_MASK != _FORMAT_1:
            raise ValueError(f"unknown payload format byte 0x{flags:02x}")
        schema, key, pos = _header(payload)
        if key is not None:
            key_id = key.decode("ascii")
            if self._cipher is None:
                raise CipherError(
                    f"cannot decrypt {_row(kind, name, stream, version)}: it is encrypted, "
                    "but this codec has no cipher"
                )
            associated = bytes(payload[:pos]) + _dumps([self._app, kind, name, stream, version])
            try:
                body = self._cipher.decrypt(key_id, payload[pos:], associated)
            except CipherError as exc:
                raise CipherError(
                    f"cannot decrypt {_row(kind, name, stream, version)}: {exc}"
                ) from None
        else:
            body = payload[pos:]
        if flags & _COMPRESSED:
            body = _inflate(body, self._max)
        return schema, body


def _header(payload: bytes) -> tuple[int, bytes | None, int]:
    """A format-1 payload's schema version, key id (None: not encrypted) and body offset."""
    flags = payload[0]
    schema, pos = _read_varint(payload, 1) if flags & _SCHEMA else (1, 1)
    if not flags & _ENCRYPTED:
        return schema, None, pos
    size = payload[pos]
    return schema, bytes(payload[pos + 1 : pos + 1 + size]), pos + 1 + size


def _row(kind: str, name: str, stream: str, version: int) -> str:
    what = {"state": f"the snapshot of {name!r}", "meta": f"the metadata of {name!r}"}.get(
        kind, f"{name!r}"
    )
    return f"{what} at stream {stream!r} version {version}"


def _problem(payload: bytes, exc: BaseException) -> str:
    if not payload:
        return "the payload is empty"
    if isinstance(exc, IndexError):
        return "the payload is truncated"
    return _shorten(exc)
