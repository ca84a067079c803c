"""Attrs code generation: one structure and one unstructure function per class.

Each function reads or writes every field in one call, with the checks of
the commonest leaves inlined, so that decoding an event costs little more
than orjson itself.  Its source is registered with :mod:`linecache` (as
cattrs does), so a traceback through generated code shows its lines.
"""

from __future__ import annotations

import linecache
import typing
from typing import Any, Protocol

import attrs
import cattrs
from cattrs.fns import identity

from fes.errors import DefinitionError

from ._leaves import (
    One,
    StructureHook,
    UnstructureHook,
    _bad,
    _is_union,
    _leaf,
    _s_float,
)

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


class _Resolver(Protocol):
    """What generated code needs of the hooks: the hook of each field's type."""

    converter: cattrs.Converter

    def structure(self, kind: Any) -> StructureHook: ...

    def unstructure(self, kind: Any) -> UnstructureHook: ...

    def one(self, kind: Any) -> One: ...


def _compile(source: str, what: str, kind: type, space: dict[str, Any]) -> Any:
    """Run ``source`` in ``space`` under a file name that linecache can show.

    Each codec generates its functions anew: a name whose lines are the same
    source is reused, so the cache grows with the classes, not the codecs.
    """
    base = f"<fes generated {what} {kind.__module__}.{kind.__qualname__}>"
    lines = source.splitlines(True)
    filename, n = base, 1
    while True:
        known = linecache.cache.get(filename)
        if known is None or (len(known) == 4 and known[2] == lines):
            break
        n += 1
        filename = f"{base[:-1]}-{n}>"
    linecache.cache[filename] = (len(source), None, lines, filename)
    exec(compile(source, filename, "exec"), space)
    return space[what]


def generate_structure(kind: type, hooks: _Resolver) -> StructureHook:
    """The structure function of attrs class ``kind``."""
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
        expr = _inline(hooks, hint, get, n, space)
        if a.kw_only:
            keywords.append(f"{a.alias}={expr}")
        else:
            args.append(expr)
        slow.append((a.name, a.alias or a.name, hooks.one(hint), a.default is attrs.NOTHING))
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
    return _compile(source, "structure", kind, space)  # type: ignore[no-any-return]


def _inline(hooks: _Resolver, hint: Any, get: str, n: int, space: dict[str, Any]) -> str:
    if hint is Any or hint is object:
        return get
    template = _INLINE.get(hint)
    if template is not None:
        return template.format(n=n, get=get)
    if _is_union(hint):
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        if len(members) == 1 and members[0] in _INLINE_OPTIONAL:
            return _INLINE_OPTIONAL[members[0]].format(n=n, get=get)
    hook = hooks.structure(hint)
    if hook == hooks.converter._structure_call:
        return f"__t{n}({get})"
    space[f"__h{n}"] = hook
    return f"__h{n}({get}, __t{n})"


def unstructure_parts(
    kind: type, hooks: _Resolver
) -> tuple[str, str, dict[str, Any], list[tuple[attrs.Attribute[Any], str | None]]]:
    """What ``kind``'s unstructure function is made of.

    The source of the class check (a function of ``i``), that of the dict
    it returns, and the namespace they need; each field comes with the
    local variable holding its value, when the dict's entry is one (a leaf
    checked inline), else None.
    """
    # A value of another class (a subclass too) would read back as
    # ``kind``, without what its class adds: refused.
    space: dict[str, Any] = {
        "__cl": kind, "__bad": _bad, "__str": str, "__bool": bool, "__int": int
    }
    items: list[str] = []
    fields: list[tuple[attrs.Attribute[Any], str | None]] = []
    for n, a in enumerate(f for f in _fields(kind) if f.init):
        hint = a.type if a.type is not None else Any
        hook = hooks.unstructure(hint)
        if hook is identity:
            items.append(f"{a.name!r}: i.{a.name}")
            fields.append((a, None))
            continue
        space[f"__u{n}"] = hook
        template = _INLINE_WRITE.get(hint) if _leaf(hint) else None
        if template is not None:
            items.append(f"{a.name!r}: " + template.format(n=n, name=a.name))
            fields.append((a, f"_v{n}"))
        else:
            items.append(f"{a.name!r}: __u{n}(i.{a.name})")
            fields.append((a, None))
    check = "    if i.__class__ is not __cl:\n        __bad(i, __cl)\n"
    return check, f"{{{', '.join(items)}}}", space, fields


def generate_unstructure(kind: type, hooks: _Resolver) -> UnstructureHook:
    """The unstructure function of attrs class ``kind``."""
    check, value, space, _ = unstructure_parts(kind, hooks)
    source = f"def unstructure(i):\n{check}    return {value}\n"
    return _compile(source, "unstructure", kind, space)  # type: ignore[no-any-return]


def _fields(kind: type) -> tuple[attrs.Attribute[Any], ...]:
    try:
        attrs.resolve_types(kind)
    except Exception as exc:
        raise DefinitionError(
            f"cannot resolve the field types of {kind.__qualname__}: {type(exc).__name__}: {exc}"
        ) from exc
    fields: tuple[attrs.Attribute[Any], ...] = attrs.fields(kind)
    return fields


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
