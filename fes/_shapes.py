"""One walker of combinators: what an aggregate or a command is made of.

``combine``, ``adapt``, ``map_state``, ``contramap_command`` and
``projector`` leave behind the values defined here.  This module is the one
place that looks inside them, to answer what the rest of fes asks: which
types a handler's annotation names, which state types an aggregate folds to,
which user function a wrapped command is, which state it will see, and
whether that state is one it declares it accepts.  The runtime check in
:func:`fes.decide`, the test generators in :mod:`fes.testing.strategies`
and the codec's snapshot states all ask here, so they cannot disagree.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, Union

from attrs import frozen

from fes.errors import DefinitionError, UnhandledEvent

# the same types as fes.Projector and fes.Command, which are documented there
Projector = Callable[[Any, Any], Any]
Command = Callable[..., Sequence[Any]]


class _Part(Protocol):
    """What the combinators' values need of an aggregate (fes.Aggregate is one)."""

    @property
    def name(self) -> str: ...

    @property
    def initial(self) -> Any: ...

    @property
    def apply(self) -> Projector: ...

    def owns(self, event: Any) -> bool: ...

    def evolve(self, state: Any, event: Any) -> Any: ...


def _name_of(func: Callable[..., Any]) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if not isinstance(name, str):
        return repr(func)
    code = getattr(func, "__code__", None)
    if name.endswith("<lambda>") and code is not None:
        # lambdas share one name: say where this one is written
        return f"{name} at {code.co_filename.rpartition('/')[2]}:{code.co_firstlineno}"
    return name


# --- the values combinators leave behind ------------------------------------


@frozen
class _Dispatch:
    """A projector that dispatches on the event's type to one handler each."""

    handlers: Mapping[type, Projector]
    name: str = "projector"

    def __call__(self, state: Any, event: Any) -> Any:
        handler = self.handlers.get(type(event))
        if handler is None:
            handler = self.inherited(type(event))
        return handler(state, event)

    def inherited(self, kind: type) -> Projector:
        """The handler of ``kind``'s nearest base class, or UnhandledEvent."""
        for base in kind.__mro__[1:]:
            handler = self.handlers.get(base)
            if handler is not None:
                return handler
        raise UnhandledEvent(kind, self.name)

    @property
    def event_types(self) -> tuple[type, ...]:
        return tuple(self.handlers)


@frozen
class _Combined:
    """The projector of a combination: each event goes to the parts that own it."""

    parts: tuple[_Part, ...]
    name: str

    def __call__(self, state: tuple[Any, ...], event: Any) -> tuple[Any, ...]:
        changed = False
        values = list(state)
        for index, part in enumerate(self.parts):
            if part.owns(event):
                values[index] = part.evolve(values[index], event)
                changed = True
        if not changed:
            raise UnhandledEvent(type(event), self.name)
        return tuple(values)


@frozen
class _Lifted:
    """A command of one part, run on its slot of a combined state."""

    command: Command
    index: int

    def __call__(self, state: tuple[Any, ...], *args: Any, **kwargs: Any) -> Sequence[Any]:
        return self.command(state[self.index], *args, **kwargs)

    @property
    def __name__(self) -> str:
        return getattr(self.command, "__name__", _name_of(self.command))


@frozen
class _MappedState:
    inner: _Part
    to: Callable[[Any], Any]
    back: Callable[[Any], Any]

    def __call__(self, state: Any, event: Any) -> Any:
        return self.to(self.inner.evolve(self.back(state), event))


@frozen
class _MappedCommand:
    command: Command
    back: Callable[[Any], Any]

    def __call__(self, state: Any, *args: Any, **kwargs: Any) -> Sequence[Any]:
        return self.command(self.back(state), *args, **kwargs)

    @property
    def __name__(self) -> str:
        return getattr(self.command, "__name__", _name_of(self.command))


@frozen
class _AdaptedApply:
    inner: _Part
    inward: Callable[[Any], Any]

    def __call__(self, state: Any, event: Any) -> Any:
        mine = self.inward(event)
        if mine is None:
            return state
        return self.inner.evolve(state, mine)


@frozen
class _AdaptedCommand:
    command: Command
    outward: Callable[[Any], Any]

    def __call__(self, state: Any, *args: Any, **kwargs: Any) -> Sequence[Any]:
        return [self.outward(e) for e in self.command(state, *args, **kwargs)]

    @property
    def __name__(self) -> str:
        return getattr(self.command, "__name__", _name_of(self.command))


@frozen
class _Contramapped:
    command: Command
    convert: Callable[..., tuple[Any, ...]]

    def __call__(self, state: Any, *args: Any) -> Sequence[Any]:
        return self.command(state, *self.convert(*args))

    @property
    def __name__(self) -> str:
        return getattr(self.command, "__name__", _name_of(self.command))


_WRAPPERS = (_Lifted, _MappedCommand, _AdaptedCommand, _Contramapped)
# wrappers that pass their arguments through unchanged (contramap converts them)
_SAME_ARGUMENTS = (_Lifted, _MappedCommand, _AdaptedCommand)


# --- annotations --------------------------------------------------------------


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def hint_classes(hint: Any) -> tuple[type, ...] | None:
    """The classes a type hint admits, or None when it is not that simple."""
    if hint is None or hint is type(None):
        return (type(None),)
    if isinstance(hint, type):
        return (hint,)
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return hint_classes(typing.get_args(hint)[0])
    if origin in (Union, types.UnionType):
        found: list[type] = []
        for arg in typing.get_args(hint):
            inner = hint_classes(arg)
            if inner is None:
                return None
            found.extend(inner)
        return tuple(found)
    if isinstance(origin, type):
        return (origin,)
    return None


def parameter_hints(
    func: Callable[..., Any],
) -> tuple[list[inspect.Parameter], dict[str, Any]] | None:
    """A callable's parameters and the annotations of them that resolve.

    A callable object declares its annotations on its class's ``__call__``.
    Annotations are resolved one by one when resolving them all at once
    fails, so that one naming a class local to a test (written as a string
    under ``from __future__ import annotations``) spoils only itself.
    """
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    annotated = func if inspect.isroutine(func) else type(func).__call__
    try:
        return params, typing.get_type_hints(annotated)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    namespace = getattr(annotated, "__globals__", {})
    for name, annotation in getattr(annotated, "__annotations__", {}).items():
        if not isinstance(annotation, str):
            hints[name] = type(None) if annotation is None else annotation
            continue
        try:
            hints[name] = eval(annotation, namespace, {})  # what get_type_hints does
        except Exception:
            continue
    return params, hints


def parameter_hint(func: Callable[..., Any], index: int) -> Any:
    """The annotation of a callable's ``index``-th parameter, or None if it has none."""
    found = parameter_hints(func)
    if found is None:
        return None
    params, hints = found
    if len(params) <= index:
        return None
    return hints.get(params[index].name)


def parameter_classes(func: Callable[..., Any], index: int) -> tuple[type, ...] | None:
    """The classes admitted by a function's ``index``-th parameter, if declared."""
    hint = parameter_hint(func, index)
    return None if hint is None else hint_classes(hint)


def admits(hint: Any, value: Any) -> bool:
    """Whether ``value`` is of the type ``hint`` (approximately: by class only)."""
    if hint is None or hint is type(None):
        return value is None
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(admits(a, value) for a in typing.get_args(hint))
    if origin is typing.Annotated:
        return admits(typing.get_args(hint)[0], value)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if isinstance(origin, type):
        return isinstance(value, origin)
    if isinstance(hint, type):
        try:
            return isinstance(value, hint)
        except TypeError:  # a class isinstance cannot check
            return True
    return True


@frozen
class StateCheck:
    """A command's declared state type, and a test of a state against it.

    ``classes``, when not None, are what the hint admits, and ``isinstance``
    with them is that test, inlined by decide on its hot path.
    """

    shown: str
    classes: tuple[type, ...] | None
    admits: Callable[[Any], bool]


def _shown(hint: Any) -> str:
    classes = hint_classes(hint)
    if classes is not None:
        return " | ".join(k.__qualname__ for k in classes)
    if _is_union(hint):
        return " | ".join(_shown(a) for a in typing.get_args(hint))
    return repr(hint).removeprefix("typing.")


def _isinstance_of(classes: tuple[type, ...]) -> Callable[[Any], bool]:
    return lambda state: isinstance(state, classes)


def state_check(command: Command) -> StateCheck | None:
    """What ``command`` declares of its state (its first parameter); None if nothing.

    A part's command lifted into a combination needs a tuple; one too short
    for its slot is left to the command, whose own error then says more.
    """
    if isinstance(command, _Lifted):
        return StateCheck("tuple", (tuple,), _isinstance_of((tuple,)))
    hint = parameter_hint(command, 0)
    if hint is None:
        return None
    classes = hint_classes(hint)
    if classes is not None:
        try:
            isinstance(None, classes)
        except TypeError:  # a class isinstance cannot check (Any): it admits all
            return None
        return StateCheck(_shown(hint), classes, _isinstance_of(classes))
    return StateCheck(_shown(hint), None, lambda state: admits(hint, state))


def handled_event_types(apply: Projector) -> tuple[type, ...] | None:
    """The event types a projector says it handles (one built by projector() does)."""
    handled = getattr(apply, "event_types", None)
    return None if handled is None else tuple(handled)


# --- commands -----------------------------------------------------------------


def _chain(command: Command) -> Iterator[Command]:
    yield command
    while isinstance(command, _WRAPPERS):
        command = command.command
        yield command


def innermost(command: Command) -> Command:
    """The user's command inside the combinators' wrappers."""
    while isinstance(command, _WRAPPERS):
        command = command.command
    return command


def argument_function(command: Command) -> Callable[..., Any] | None:
    """The user's function whose arguments ``command`` takes (None: contramapped)."""
    while isinstance(command, _SAME_ARGUMENTS):
        command = command.command
    return None if isinstance(command, _Contramapped) else command


def unwrap(command: Command, state: Any) -> tuple[Command, Any]:
    """The user's command inside the combinators' wrappers, and the state it will see.

    A lifted command meeting a state without its slot is returned as it is:
    its own :func:`state_check` refuses that state.
    """
    while True:
        if (
            isinstance(command, _Lifted)
            and isinstance(state, tuple)
            and command.index < len(state)
        ):
            state = state[command.index]
            command = command.command
        elif isinstance(command, _MappedCommand):
            state = command.back(state)
            command = command.command
        elif isinstance(command, (_AdaptedCommand, _Contramapped)):
            command = command.command
        else:
            return command, state


def state_filter(command: Command) -> Callable[[Any], bool]:
    """A predicate: whether ``command``'s declared state type admits a state.

    It admits what :func:`fes.decide` admits, and refuses besides a state
    with no slot for a lifted part's command, which decide leaves to the
    command to fail on: a generator should not draw a command that cannot
    run.  The annotations along the wrappers are read once, here, not at
    every call.
    """
    checks = {id(link): state_check(link) for link in _chain(command)}

    def accepts(state: Any) -> bool:
        inner, seen = unwrap(command, state)
        if isinstance(inner, _Lifted):
            return False
        check = checks[id(inner)]
        return check is None or check.admits(seen)

    return accepts


# --- aggregates ---------------------------------------------------------------


def _return_hint(func: Any) -> Any:
    """A callable's declared return type, or None when it declares none usable."""
    try:
        hint = typing.get_type_hints(func).get("return")
    except Exception:
        return None
    return None if hint is Any else hint


def state_type(aggregate: _Part) -> Any:
    """The type of an aggregate's states, read from its projector's annotations."""
    apply = aggregate.apply
    hints: list[Any] | None
    if isinstance(apply, _Combined):
        parts = tuple(state_type(part) for part in apply.parts)
        return tuple[parts] if parts else tuple[()]  # type: ignore[valid-type]
    if isinstance(apply, _AdaptedApply):
        hints = [state_type(apply.inner)]
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
        for origin in (typing.get_origin(m) or m for m in members)
        if isinstance(origin, type)
    )
    if not covered:
        members.append(type(aggregate.initial))
    return members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007


def innermost_aggregates(aggregate: _Part) -> list[_Part]:
    """The aggregates a composite is built of, through every combinator, in order."""
    apply = aggregate.apply
    if isinstance(apply, _Combined):
        return [inner for part in apply.parts for inner in innermost_aggregates(part)]
    if isinstance(apply, (_AdaptedApply, _MappedState)):
        return innermost_aggregates(apply.inner)
    return [aggregate]
