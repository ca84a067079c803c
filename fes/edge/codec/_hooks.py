"""Hook dispatch: one cattrs converter with fes's factories, per codec.

Sequences and sets are JSON arrays, mappings objects or ``[key, value]``
pairs, unions told apart by their JSON or by a ``"$type"`` tag, and attrs
classes get functions generated once per class (see ``_generate``).
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable
from typing import Any, Literal, cast

import attrs
import cattrs
import orjson
from cattrs.enums import enum_unstructure_factory
from cattrs.fns import identity

from fes.errors import DefinitionError

from ._generate import _INLINE_WRITE, _fields, generate_structure, generate_unstructure
from ._large import dumps
from ._leaves import (
    _LEAVES,
    _MAPPINGS,
    _SEQUENCES,
    One,
    StructureHook,
    UnstructureHook,
    _bad,
    _exactly,
    _is_attrs,
    _is_enum,
    _is_literal,
    _is_mapping,
    _is_record,
    _is_sequence,
    _is_union,
    _json_kinds,
    _leaf,
    _literal_unstructure,
    _object_keys,
    _origin,
    _s_bytes,
    _s_str,
    _shorten,
    _u_bytes,
    _u_float,
    _union_tags,
)

_dumps = orjson.dumps


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
                dumps(self.unstructure(a.type if a.type is not None else Any)(
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
        members, optional, table = self._union_parts(kind)
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
                if value is None and optional:  # None of a union without it: refused
                    return None
                return writers[writer_of(value)](value)

            return unstructure

        def unstructure_tagged(value: Any) -> Any:
            if value is None and optional:
                return None
            member = writer_of(value)
            data = writers[member](value)
            if member in flat and isinstance(data, dict):
                return {"$type": tags[member], **data}
            return {"$type": tags[member], "value": data}

        return unstructure_tagged

    # attrs classes: generated functions that read every field in one call

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
            hook = generate_structure(kind, self)
        finally:
            self._building_s.discard(kind)
        self._structures[kind] = hook
        return hook

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
            hook = generate_unstructure(kind, self)
        finally:
            self._building_u.discard(kind)
        self._unstructures[kind] = hook
        return hook
