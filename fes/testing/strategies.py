"""Hypothesis strategies derived from a domain's types and commands.

Events, command arguments and states are attrs classes whose fields are
annotated; the strategies here are read off those annotations, so a domain
gets property tests without writing generators by hand::

    from fes.testing.strategies import histories, register_aggregate, strategy_for

    register_aggregate(accounts)                 # st.from_type(Deposited) now works
    amounts = {"Deposited.amount": st.integers(1, 10_000)}
    deposits = strategy_for(Deposited, overrides=amounts)
    valid = histories(accounts)                  # event sequences commands produced

Overrides replace the strategy of one field, named by its path
``"ClassName.field"``, or of every value of one type, keyed by the type.
Requires Hypothesis (``pip install fes-events[testing]``).
"""

from __future__ import annotations

import collections.abc as abc
import copy
import enum
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeVar, Union
from uuid import UUID

import attrs
import hypothesis
import pyrsistent
import pyrsistent.typing as ptyping
from attrs import frozen
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from fes import _shapes
from fes.aggregates import Aggregate, Command
from fes.errors import CommandError, CommandMistake, DefinitionError, Rejected

__all__ = [
    "NotEvents",
    "Context",
    "Overrides",
    "StepResult",
    "accepts_state",
    "argument_contexts",
    "argument_strategies",
    "events_of",
    "histories",
    "register_aggregate",
    "register_types",
    "run_step",
    "state_filter",
    "states",
    "strategy_for",
]

S = TypeVar("S")

#: Strategies that replace derived ones: by field path ``"Class.field"`` or by type.
Overrides = Mapping[Any, st.SearchStrategy[Any]]

_NONE_TYPE = type(None)

# Strategies for leaf types.  Floats are finite and Decimals are finite
# numbers because laws compare values by equality (NaN != NaN) and codecs
# that speak JSON cannot carry infinities.
_LEAVES: dict[type, Callable[[], st.SearchStrategy[Any]]] = {
    bool: st.booleans,
    int: st.integers,
    float: lambda: st.floats(allow_nan=False, allow_infinity=False),
    str: st.text,
    bytes: st.binary,
    Decimal: lambda: st.decimals(allow_nan=False, allow_infinity=False),
    Fraction: st.fractions,
    UUID: st.uuids,
    datetime: lambda: st.datetimes(timezones=st.just(UTC)),
    date: st.dates,
    time: st.times,
    timedelta: st.timedeltas,
    _NONE_TYPE: st.none,
}

_ANYTHING_HASHABLE: st.SearchStrategy[Any] = st.none() | st.booleans() | st.integers() | st.text()

#: How many levels of one recursive class a drawn value may nest.
_MAX_NESTING = 4
#: The largest collection drawn below the first level of a recursive class.
_NESTED_SIZE = 3

_VECTORS = (pyrsistent.PVector, ptyping.PVector)
_MAPS = (pyrsistent.PMap, ptyping.PMap)
_SETS = (pyrsistent.PSet, ptyping.PSet)


@frozen
class _Construct:
    """Calls an attrs class with keyword arguments; shown as the class in reports."""

    cls: type

    def __call__(self, values: dict[str, Any]) -> Any:
        return self.cls(**values)

    def __repr__(self) -> str:
        return f"construct({self.cls.__qualname__})"


def _name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


class _Deriver:
    """Derives strategies for types, remembering which classes it visited.

    A recursive attrs class is unrolled :data:`_MAX_NESTING` levels deep, so
    drawn trees are finite and small instead of overrunning Hypothesis's
    budget (a list of nodes each holding a list of nodes grows without bound).
    """

    def __init__(self, overrides: Overrides | None) -> None:
        self.by_path: dict[str, st.SearchStrategy[Any]] = {}
        self.by_type: dict[Any, st.SearchStrategy[Any]] = {}
        for key, strategy in (overrides or {}).items():
            if isinstance(key, str):
                if "." not in key:
                    raise DefinitionError(
                        f"override key {key!r} is not a field path: write 'ClassName.field'"
                    )
                self.by_path[key] = strategy
            else:
                self.by_type[key] = strategy
        self.visited: dict[str, tuple[str, ...]] = {}
        self.done: dict[Any, st.SearchStrategy[Any]] = {}
        self.pending: dict[Any, int] = {}  # how many times each class is being built

    def check_paths(self) -> None:
        """Refuse a field path naming a visited class but none of its fields."""
        for path in self.by_path:
            owner, _, name = path.rpartition(".")
            fields = self.visited.get(owner)
            if fields is not None and name not in fields:
                raise DefinitionError(
                    f"override {path!r}: {owner} has no field {name!r}; "
                    f"its fields are {', '.join(fields) or '(none)'}"
                )

    def derive(self, tp: Any) -> st.SearchStrategy[Any]:
        if tp in self.by_type:
            return self.by_type[tp]
        if tp in self.done:
            return self.done[tp]
        if attrs.has(tp) and isinstance(tp, type):
            depth = self.pending.get(tp, 0)
            if depth >= _MAX_NESTING:
                # the innermost level of a recursive type draws nothing, so an
                # Optional becomes None and a collection empty: trees stay finite
                return st.nothing()
            self.pending[tp] = depth + 1
            try:
                strategy = self._attrs(tp)
            finally:
                self.pending[tp] = depth
            if not any(self.pending.values()):
                self.done[tp] = strategy  # only top-level results hold no cut-off
            return strategy
        return self._structural(tp)

    def _attrs(self, cls: type) -> st.SearchStrategy[Any]:
        try:
            hints = typing.get_type_hints(cls)
        except Exception as exc:
            raise DefinitionError(
                f"cannot read the field annotations of {_name(cls)}: {exc}"
            ) from exc
        fields = attrs.fields(cls)
        keys = {cls.__qualname__, cls.__name__}
        self.visited.update(dict.fromkeys(keys, tuple(f.name for f in fields)))
        required: dict[str, st.SearchStrategy[Any]] = {}
        # a defaulted field is sometimes left out, so the class's own default is tried too
        optional: dict[str, st.SearchStrategy[Any]] = {}
        for f in fields:
            if not f.init:
                continue
            key = f.alias or f.name
            path = next((f"{k}.{f.name}" for k in keys if f"{k}.{f.name}" in self.by_path), None)
            hint = hints.get(f.name, attrs.NOTHING)
            if path is not None:
                required[key] = self.by_path[path]
            elif hint is not attrs.NOTHING and hint in self.by_type:
                required[key] = self.by_type[hint]
            elif hint is not attrs.NOTHING:
                strategy = self.derive(hint)
                table = required if f.default is attrs.NOTHING else optional
                table[key] = strategy
            elif f.default is attrs.NOTHING:
                raise DefinitionError(
                    f"field {_name(cls)}.{f.name} has no annotation and no default: "
                    f"annotate it or override {_name(cls)}.{f.name}"
                )
        return st.fixed_dictionaries(required, optional=optional).map(_Construct(cls))

    def _structural(self, tp: Any) -> st.SearchStrategy[Any]:
        if tp is None:
            return st.none()
        if tp is Any:
            raise DefinitionError(
                "cannot derive a strategy for typing.Any: annotate a concrete type or "
                "give an override"
            )
        supertype = getattr(tp, "__supertype__", None)  # typing.NewType
        if supertype is not None:
            return self.derive(supertype)
        if isinstance(tp, type):
            if tp in _LEAVES:
                return _LEAVES[tp]()
            if issubclass(tp, enum.Enum):
                return st.sampled_from(list(tp))
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            return self.derive(args[0])
        if origin is typing.Literal:
            return st.sampled_from(args)
        if origin in (Union, types.UnionType):
            return st.one_of([self.derive(a) for a in args])
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return self._generic(tp, list, args[:1]).map(tuple)
            if args == ((),):
                return st.just(())
            return st.tuples(*(self.derive(a) for a in args))
        if origin is not None:
            return self._generic(tp, origin, args)
        if tp in (*_VECTORS, *_MAPS, *_SETS, list, set, frozenset, dict):
            return self._generic(tp, tp, ())  # unparametrised: items of simple types
        # anything else: whatever Hypothesis itself knows, including registrations
        return st.from_type(tp)

    def _generic(self, tp: Any, origin: Any, args: tuple[Any, ...]) -> st.SearchStrategy[Any]:
        mapping = origin in (*_MAPS, dict, abc.Mapping, abc.MutableMapping)
        elements = [
            self.derive(args[i]) if len(args) > i else _ANYTHING_HASHABLE
            for i in range(2 if mapping else 1)
        ]
        bound: dict[str, Any] = {}
        if any(depth > 1 for depth in self.pending.values()):
            # below the first level of a recursive class collections stay small:
            # each level multiplies the size of a drawn tree
            bound["max_size"] = _NESTED_SIZE
        if any(e.is_empty for e in elements):
            bound["max_size"] = 0  # the innermost level of a recursion: only empty ones
        if mapping:
            table = st.dictionaries(elements[0], elements[1], **bound)
            return table.map(pyrsistent.pmap) if origin in _MAPS else table
        if origin in _VECTORS:
            return st.lists(elements[0], **bound).map(pyrsistent.pvector)
        if origin in _SETS:
            return st.sets(elements[0], **bound).map(pyrsistent.pset)
        if origin in (list, abc.Sequence, abc.MutableSequence, abc.Iterable, abc.Collection):
            return st.lists(elements[0], **bound)
        if origin in (set, abc.Set, abc.MutableSet):
            return st.sets(elements[0], **bound)
        if origin is frozenset:
            return st.frozensets(elements[0], **bound)
        return st.from_type(tp)


def strategy_for(tp: Any, overrides: Overrides | None = None) -> st.SearchStrategy[Any]:
    """A strategy for values of ``tp``, read off its annotations.

    Understands attrs classes (nested, recursive, with defaults), pyrsistent
    ``PVector``/``PMap``/``PSet``, tuples, lists, sets, dicts, ``Optional``
    and unions, ``Literal``, enums, UUIDs, UTC datetimes, ``Decimal`` and the
    builtin scalars; anything else is asked of ``st.from_type``.
    ``overrides`` replaces one field (``{"Deposited.amount": st.integers(1)}``)
    or every value of a type (``{str: st.text("ab", min_size=1)}``).
    """
    deriver = _Deriver(overrides)
    strategy = deriver.derive(tp)
    deriver.check_paths()
    return strategy


def register_types(*types_: type, overrides: Overrides | None = None) -> None:
    """Make ``st.from_type`` (and so ``st.builds`` and ``@given``) draw these types.

    Registration is global to the Hypothesis process: call it once, in a
    ``conftest.py`` or at the top of a test module.
    """
    for tp in types_:
        st.register_type_strategy(tp, strategy_for(tp, overrides))


def register_aggregate(aggregate: Aggregate[Any], overrides: Overrides | None = None) -> None:
    """Register a strategy for every event type ``aggregate`` owns."""
    register_types(*aggregate.events, overrides=overrides)


def events_of(
    aggregate: Aggregate[Any], overrides: Overrides | None = None
) -> st.SearchStrategy[Any]:
    """Any event of any type ``aggregate`` owns (not necessarily one that applies)."""
    if not aggregate.events:
        raise DefinitionError(f"aggregate {aggregate.name!r} declares no event types")
    deriver = _Deriver(overrides)
    strategy = st.one_of([deriver.derive(kind) for kind in aggregate.events])
    deriver.check_paths()
    return strategy


# --- commands ----------------------------------------------------------------


def state_filter(command: Command) -> Callable[[Any], bool]:
    """A predicate: whether ``command``'s annotated state parameter admits a state.

    An unannotated command admits every state.  Commands of combined,
    mapped and adapted aggregates are looked through to the user's function,
    as :func:`fes.decide` does: the two agree on every state.  The
    annotations are read once, here, not at every call.
    """
    return _shapes.state_filter(command)


def accepts_state(command: Command, state: Any) -> bool:
    """Whether ``command``'s annotated state parameter admits ``state``."""
    return state_filter(command)(state)


def _argument_parts(
    name: str, command: Command, overrides: Overrides | None
) -> tuple[tuple[Any, ...], tuple[st.SearchStrategy[Any], ...]]:
    """The annotated type and the derived strategy of each drawn argument of ``command``."""
    func = _shapes.argument_function(command)
    found = None if func is None else _shapes.parameter_hints(func)
    if found is None:
        raise DefinitionError(
            f"cannot read the arguments of command {name!r}: give them with "
            f"args={{{name!r}: st.tuples(...)}}"
        )
    params, hints = found
    deriver = _Deriver(overrides)
    kinds: list[Any] = []
    parts: list[st.SearchStrategy[Any]] = []
    for param in params[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.KEYWORD_ONLY):
            continue  # only required positional arguments are drawn
        if param.default is not param.empty:
            continue
        if param.name not in hints:
            raise DefinitionError(
                f"command {name!r} does not annotate its argument {param.name!r}: "
                f"annotate it or give args={{{name!r}: st.tuples(...)}}"
            )
        hint = hints[param.name]
        kind = _plain(hint)
        # a type overridden by the user is drawn as the user says, never reused
        kinds.append(None if hint in deriver.by_type or kind in deriver.by_type else kind)
        parts.append(deriver.derive(hint))
    deriver.check_paths()
    return tuple(kinds), tuple(parts)


def _plain(hint: Any) -> Any:
    """The type whose values ``hint`` holds: through ``NewType`` and ``Annotated``.

    An id is often ``NewType("OrderId", UUID)``: its values are UUIDs, and
    may be taken from the UUIDs the state holds.
    """
    while True:
        supertype = getattr(hint, "__supertype__", None)
        if supertype is not None:
            hint = supertype
        elif typing.get_origin(hint) is typing.Annotated:
            hint = typing.get_args(hint)[0]
        else:
            return hint


def _arguments(
    name: str, command: Command, overrides: Overrides | None
) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(*_argument_parts(name, command, overrides)[1])


#: Types whose values a derived argument may take again from the state it meets.
_REUSED = (int, str, date, datetime, UUID)

#: How far from a value already seen a "near" one lies, at most, and in what unit: a
#: few units, a month of days, three days of hours; small steps, so that sums stay
#: the size they were (a quantity drawn as twice a total would double it each time).
_STEPS: dict[type, tuple[int, Callable[[int], Any]]] = {
    int: (3, lambda n: n),
    date: (31, lambda n: timedelta(days=n)),
    datetime: (72, lambda n: timedelta(hours=n)),
}

#: Values taken from one state, at most, per type; nodes of it looked at, at most.
_POOL_SIZE = 12
_WALK = 500

# How an argument of a reused type is taken: as derived, as a value the state holds,
# near one, as a value an earlier argument of the call drew, near one.  Derived is
# listed twice: a third of ints and dates, half of strs and UUIDs, are new values
# (a new name, a new trick), the others name what exists.
_DERIVED, _HELD, _NEAR_HELD, _CALL, _NEAR_CALL = range(5)
_NEAR_WAYS = (_DERIVED, _DERIVED, _HELD, _NEAR_HELD, _CALL, _NEAR_CALL)
_PLAIN_WAYS = (_DERIVED, _DERIVED, _HELD, _CALL)


def _how(kind: type) -> st.SearchStrategy[int]:
    """One choice saying how an argument of ``kind`` is taken: way, index, step.

    One integer rather than three, since each choice costs Hypothesis as
    much as a small command; read by :func:`_taken`.  It shrinks towards 0:
    the derived value, the first value held, no step.
    """
    ways = _NEAR_WAYS if kind in _STEPS else _PLAIN_WAYS
    steps = 2 * _STEPS[kind][0] + 1 if kind in _STEPS else 1
    return st.integers(0, len(ways) * _POOL_SIZE * steps - 1)


def _taken(kind: type, how: int, value: Any, held: list[Any], call: list[Any]) -> Any:
    """The argument ``how`` (from :func:`_how`) names: ``value`` as derived, or one of
    ``held`` (values of the state) or ``call`` (earlier arguments), maybe moved a step.

    A pool chosen empty gives way to the other; both empty, the derived value stays.
    """
    ways = _NEAR_WAYS if kind in _STEPS else _PLAIN_WAYS
    how, way = divmod(how, len(ways))
    zigzag, index = divmod(how, _POOL_SIZE)
    way = ways[way]
    if way == _DERIVED:
        return value
    first, second = (call, held) if way >= _CALL else (held, call)
    pool = first or second
    if not pool:
        return value
    taken = pool[index % len(pool)]
    if way in (_NEAR_HELD, _NEAR_CALL):
        step = (zigzag + 1) // 2 * (1 if zigzag % 2 else -1)  # 0, 1, -1, 2, -2, ...
        with suppress(OverflowError):  # a date at the end of the calendar stays where it is
            taken = taken + _STEPS[kind][1](step)
    return taken


#: Types whose values compare with ``<`` in a total order, so a set of them sorts as is.
_SORTABLE = (int, str, bytes, date, time, timedelta, UUID, Fraction, bool)


def _ordered(items: abc.Iterable[Any]) -> list[Any]:
    """The items of a set (or a mapping's keys) in an order that depends on them only.

    A set's order follows hashes and insertion history, so two equal states
    could list their values differently: a draw taking "the third value held"
    would then differ between two runs of one example.
    """
    listed = list(items)
    kinds = {type(item) for item in listed}
    if len(kinds) == 1 and kinds.pop() in _SORTABLE:
        with suppress(TypeError):  # naive and aware times do not compare
            return sorted(listed)
    return sorted(listed, key=lambda item: (type(item).__qualname__, repr(item)))


def _values_in(state: Any) -> dict[type, list[Any]]:
    """The values of the :data:`_REUSED` types a state holds, by exact type.

    In the order a walk of the state meets them, sets and mappings in sorted
    order, so equal states give equal lists; at most :data:`_POOL_SIZE` of
    each type, and at most :data:`_WALK` parts of the state are looked at.
    """
    found: dict[type, dict[Any, None]] = {}
    stack = [state]
    looked = 0
    while stack and looked < _WALK:
        value = stack.pop()
        looked += 1
        kind = type(value)
        if kind in _REUSED:
            pool = found.setdefault(kind, {})
            if len(pool) < _POOL_SIZE:
                pool[value] = None
        elif attrs.has(kind):
            stack.extend(reversed([getattr(value, f.name) for f in attrs.fields(kind)]))
        elif isinstance(value, abc.Mapping):
            for key in reversed(_ordered(value)):
                stack.extend((value[key], key))
        elif isinstance(value, abc.Set):
            stack.extend(reversed(_ordered(value)))
        elif isinstance(value, (list, tuple, pyrsistent.PVector)):
            stack.extend(reversed(list(value)))
    return {kind: list(pool) for kind, pool in found.items()}


@frozen
class Context:
    """How one command's arguments are drawn for the state it meets.

    ``choices`` draws without ever seeing the state; :meth:`resolve` then
    reads what it drew against the state.  So the choices Hypothesis makes,
    their number and kind, cannot depend on the state, only on earlier
    choices: an example replays the same choices even when a projector or
    command misbehaves, and the check reports that law rather than a flaky
    strategy.  Calling a context with a state gives the two as one strategy.
    """

    #: What is drawn: per argument, its derived value and, for a reused type, how
    #: it is taken (see :func:`_how`); for ``args=``, the arguments as given.
    choices: st.SearchStrategy[tuple[Any, ...]]
    #: Each argument's type when it may be reused, else None; empty: drawn as given.
    kinds: tuple[Any, ...] = ()

    def resolve(self, drawn: tuple[Any, ...], state: Any) -> tuple[Any, ...]:
        """The arguments that ``drawn``, drawn from :attr:`choices`, names in ``state``."""
        if not self.kinds:
            return drawn
        held = _values_in(state)
        values: list[Any] = []
        for kind, (value, how) in zip(self.kinds, drawn, strict=True):
            if kind is not None:
                call = [v for v, k in zip(values, self.kinds, strict=False) if k is kind]
                value = _taken(kind, how, value, held.get(kind, []), call)
            values.append(value)
        return tuple(values)

    def __call__(self, state: Any) -> st.SearchStrategy[tuple[Any, ...]]:
        """The arguments for ``state``, as one strategy."""
        if not self.kinds:
            return self.choices
        return self.choices.map(functools.partial(_resolved, self, state))


def _resolved(context: Context, state: Any, drawn: tuple[Any, ...]) -> tuple[Any, ...]:
    return context.resolve(drawn, state)


_NOTHING_MORE: st.SearchStrategy[int] = st.just(0)


def _in_context(kinds: tuple[Any, ...], parts: tuple[st.SearchStrategy[Any], ...]) -> Context:
    """Arguments drawn as derived, or taken from (or drawn near) values the state holds.

    An argument of a simple type (int, str, date, datetime, UUID) may also
    be a value the state holds, or one drawn by an earlier argument of the
    same call, or (int, date, datetime) one a few steps from such a value:
    ids of what exists, quantities around those held, a departure near an
    arrival.  Each such argument draws its derived value and how it is
    taken, whatever the state holds.
    """
    reused = tuple(kind if kind in _REUSED else None for kind in kinds)
    if not any(kind is not None for kind in reused):
        return Context(st.tuples(*parts))
    pairs = [
        st.tuples(part, _NOTHING_MORE if kind is None else _how(kind))
        for kind, part in zip(reused, parts, strict=True)
    ]
    return Context(st.tuples(*pairs), reused)


def argument_contexts(
    aggregate: Aggregate[Any],
    args: Mapping[str, st.SearchStrategy[tuple[Any, ...]]] | None = None,
    overrides: Overrides | None = None,
) -> dict[str, Context]:
    """For each command, its arguments as a function of the state it meets.

    A command named in ``args`` draws from the strategy given there,
    whatever the state; the others draw their derived arguments, or values
    the state holds, or values near those (see :func:`argument_strategies`).
    """
    table = argument_strategies(aggregate, args, overrides)
    contexts: dict[str, Context] = {}
    for name, command in aggregate.commands.items():
        if args is not None and name in args:
            contexts[name] = Context(table[name])
        else:
            contexts[name] = _in_context(*_argument_parts(name, command, overrides))
    return contexts


def argument_strategies(
    aggregate: Aggregate[Any],
    args: Mapping[str, st.SearchStrategy[tuple[Any, ...]]] | None = None,
    overrides: Overrides | None = None,
) -> dict[str, st.SearchStrategy[tuple[Any, ...]]]:
    """A strategy of positional-argument tuples for each of ``aggregate``'s commands.

    Arguments are derived from the commands' annotations (after the state);
    ``args`` replaces the strategy of named commands, e.g.
    ``{"withdraw": st.tuples(st.integers(1, 500))}``.  The checks draw the
    derived ones through :func:`argument_contexts`, which also reuses
    values the state holds.
    """
    given = dict(args or {})
    unknown = sorted(set(given) - set(aggregate.commands))
    if unknown:
        raise DefinitionError(
            f"args names {', '.join(map(repr, unknown))}, but aggregate {aggregate.name!r} "
            f"has the commands {', '.join(map(repr, aggregate.commands)) or '(none)'}"
        )
    table: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {}
    for name, command in aggregate.commands.items():
        table[name] = given[name] if name in given else _arguments(name, command, overrides)
    return table


class NotEvents(CommandMistake):
    """A command returned something other than a sequence of events: a bug, not a refusal."""


@frozen
class StepResult:
    """What one command did: the events it emitted, or why it was refused."""

    events: tuple[Any, ...] = ()
    refused: BaseException | None = None


def run_step(command: Command, state: Any, args: tuple[Any, ...]) -> StepResult:
    """Run a command, turning a domain refusal into a value.

    :class:`fes.Rejected` and :class:`fes.CommandError` are refusals: the
    state stays as it was.  Any other exception propagates: it is a bug, as
    a :class:`fes.errors.CommandMistake` is (a command inside this one
    called with arguments it does not take, say).
    """
    if not isinstance(args, tuple):
        raise DefinitionError(
            f"the argument strategy of {_name(command)} drew {args!r}: "
            "it must draw a tuple of positional arguments (use st.tuples)"
        )
    try:
        result = command(state, *args)
    except CommandMistake:
        raise
    except (Rejected, CommandError) as exc:
        return StepResult(refused=exc)
    if result is None or isinstance(result, (str, bytes)) or not isinstance(result, Sequence):
        raise NotEvents(
            f"command {_name(command)} must return a sequence of events, "
            f"got {type(result).__name__}"
        )
    return StepResult(events=tuple(result))


def histories(
    aggregate: Aggregate[Any],
    *,
    args: Mapping[str, st.SearchStrategy[tuple[Any, ...]]] | None = None,
    overrides: Overrides | None = None,
    max_commands: int = 10,
) -> st.SearchStrategy[tuple[Any, ...]]:
    """Event histories that ``aggregate``'s own commands produced, so they fold.

    Each history runs up to ``max_commands`` random commands from the
    initial state (only those whose state annotation admits the current
    state), skipping refused ones and folding the events of the others.
    What each command did is told to Hypothesis's statistics
    (``pytest --hypothesis-show-statistics``): ``"withdraw: accepted"``,
    ``"withdraw: rejected (Rejected: ...)"``, ``"event Withdrawn"``.
    """
    if not aggregate.commands:
        raise DefinitionError(
            f"aggregate {aggregate.name!r} has no commands to build histories with"
        )
    return _histories(aggregate, argument_contexts(aggregate, args, overrides), max_commands,
                      _told)


def _told(name: str, command: Command, state: Any, args: tuple[Any, ...]) -> StepResult:
    """Run a command, telling Hypothesis's statistics what it did."""
    result = run_step(command, state, args)
    _tell(name, result)
    return result


def _reason(exc: BaseException) -> str:
    """A rejection reason with its numbers and quoted values blanked, so like reasons group."""
    text = re.sub(r"-?\d+(\.\d+)?", "N", str(exc))
    # quoted values (wrong code 'x7') are blanked, from the first opening quote to
    # the last closing one (a repr may hold quotes of either kind); an apostrophe is not
    text = re.sub(r"(?<!\w)['\"].*['\"](?!\w)", "'…'", text)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _note(text: str) -> None:
    with suppress(InvalidArgument):  # outside a Hypothesis test: nothing to tell
        hypothesis.event(text)


def _tell(name: str, result: StepResult) -> None:
    """Tell Hypothesis's statistics what one command did (``--hypothesis-show-statistics``)."""
    if result.refused is not None:
        _note(f"{name}: rejected ({_reason(result.refused)})")
        return
    _note(f"{name}: accepted")
    for item in result.events:
        _note(f"event {type(item).__qualname__}")


#: How a history strategy runs one command: (name, command, state, args) -> result.
_Runner = Callable[[str, Command, Any, tuple[Any, ...]], "StepResult"]


def _histories(
    aggregate: Aggregate[Any],
    contexts: Mapping[str, Context],
    max_commands: int,
    run: _Runner,
) -> st.SearchStrategy[tuple[Any, ...]]:
    """:func:`histories`, running each command with ``run`` (which may count and time it)."""
    names = sorted(contexts)
    admits = {n: state_filter(aggregate.commands[n]) for n in names}

    @st.composite
    def draw_history(draw: st.DrawFn) -> tuple[Any, ...]:
        state = aggregate.initial
        events: list[Any] = []
        for _ in range(draw(st.integers(0, max_commands), label="commands")):
            usable = [n for n in names if admits[n](state)]
            if not usable:
                break
            name = draw(st.sampled_from(usable))
            context = contexts[name]
            arguments = context.resolve(draw(context.choices), state)
            step = run(name, aggregate.commands[name], state, arguments)
            state = aggregate.fold(step.events, state)
            events.extend(step.events)
        return tuple(events)

    return draw_history()


def states(
    aggregate: Aggregate[S],
    *,
    args: Mapping[str, st.SearchStrategy[tuple[Any, ...]]] | None = None,
    overrides: Overrides | None = None,
    max_commands: int = 10,
) -> st.SearchStrategy[S]:
    """States that ``aggregate`` reaches by folding one of :func:`histories`."""
    return histories(
        aggregate, args=args, overrides=overrides, max_commands=max_commands
    ).map(aggregate.fold)


def _callable_name(func: object) -> str:
    """How failure reports name a command, projector or invariant."""
    return str(getattr(func, "__name__", None) or getattr(func, "__qualname__", None) or func)


def _pristine(value: Any) -> tuple[bool, Any]:  # shared by the laws and the machines
    """A deep copy to compare with later; (False, None) if equality cannot tell.

    A value that cannot be copied, or whose copy is not equal to it (identity
    equality, NaN), cannot show a mutation by comparison, so it is not checked.
    """
    try:
        duplicate = copy.deepcopy(value)
        return bool(duplicate == value), duplicate
    except Exception:
        return False, None
