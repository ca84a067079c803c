"""Aggregates: an initial state, a pure projector and pure commands, as a value.

A projector ``apply(state, event) -> state`` folds a history into a state; a
command ``(state, *args) -> events`` decides what happens next.  An
:class:`Aggregate` bundles them with the event types it owns, and the
combinators here compose any number of aggregates, adapt their events and
map their states.
"""

from __future__ import annotations

import enum
import inspect
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from attrs import field, frozen

from fes._shapes import (
    StateCheck,
    _AdaptedApply,
    _AdaptedCommand,
    _Combined,
    _Contramapped,
    _Dispatch,
    _Lifted,
    _MappedCommand,
    _MappedState,
    _name_of,
    handled_event_types,
    innermost,
    parameter_classes,
    state_check,
    unwrap,
)
from fes.errors import CommandError, CommandMistake, DefinitionError, UnhandledEvent
from fes.events import spec_of

__all__ = [
    "Aggregate",
    "Command",
    "Projector",
    "adapt",
    "combine",
    "contramap_command",
    "decide",
    "map_state",
    "neutral",
    "projector",
]

S = TypeVar("S")
T = TypeVar("T")
E = TypeVar("E")

#: A pure function from a state and an event to the next state.
Projector = Callable[[Any, Any], Any]
#: A pure function from a state and arguments to a sequence of new events.
Command = Callable[..., Sequence[Any]]

class _Initial(enum.Enum):
    """Marks "start from the initial state": None can be a state a projector returns."""

    INITIAL = "initial"


def _unusable_hint(func: Callable[..., Any]) -> str:
    """Why a handler's event annotation gives no classes, for the error message."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        params = []
    if len(params) < 2:
        return "does not take (state, event)"
    shown = params[1].annotation
    if shown is inspect.Parameter.empty:
        return "does not annotate the type of its event parameter"
    # e.g. a class local to a function, named in a postponed (string) annotation
    return f"annotates its event parameter as {shown!r}, which does not resolve to classes"


def projector(
    *handlers: Projector | tuple[type, Projector], name: str = "projector"
) -> Projector:
    """Build a projector from one handler per event type.

    Each handler is ``(state, event) -> state``; its event type is read from
    the annotation of its second parameter (a union registers every member),
    or given explicitly as a ``(EventType, handler)`` pair.  A type handled
    twice is refused here, at definition; an event with no handler is refused
    when it is folded, naming its type.
    """
    table: dict[type, Projector] = {}
    for item in handlers:
        if isinstance(item, tuple):
            event_type, handler = item
            kinds: tuple[type, ...] = (event_type,)
        else:
            handler = item
            hinted = parameter_classes(handler, 1)
            if hinted is None:
                raise DefinitionError(
                    f"handler {_name_of(handler)!r} {_unusable_hint(handler)}; "
                    "annotate it with event classes or pass (EventType, handler)"
                )
            kinds = hinted
        for kind in kinds:
            if not isinstance(kind, type) or kind is Any:
                raise DefinitionError(
                    f"handler {_name_of(handler)!r} is registered for {kind!r}, but events "
                    "are dispatched by their class: name an event class"
                )
            if kind in table:
                raise DefinitionError(
                    f"event type {kind.__qualname__!r} is handled twice in {name!r}: "
                    f"by {_name_of(table[kind])!r} and {_name_of(handler)!r}"
                )
            table[kind] = handler
    return _Dispatch(handlers=table, name=name)


def _types(value: Iterable[type]) -> tuple[type, ...]:
    return tuple(value)


def _commands(value: Iterable[Command] | Mapping[str, Command]) -> Mapping[str, Command]:
    if isinstance(value, Mapping):
        return dict(value)
    table: dict[str, Command] = {}
    for command in value:
        key = getattr(command, "__name__", None) or _name_of(command)
        if key in table:
            raise DefinitionError(f"two commands are named {key!r}")
        table[key] = command
    return table


@frozen
class Aggregate(Generic[S]):
    """An aggregate's definition: name, initial state, projector, events, commands.

    ``events`` are the event types the aggregate owns; the edge registers
    their topics.  ``commands`` are the pure commands it offers (used by the
    testing tools and the command line; any command may be executed).
    ``snapshot_version`` is part of the snapshot fingerprint: bump it when the
    meaning of a stored state changes in a way the code cannot show.
    ``event_topics`` fixes the topic of some event types (``combine`` uses it
    so that composed parts keep writing under their own topics).
    """

    name: str
    initial: S
    apply: Projector
    events: tuple[type, ...] = field(default=(), converter=_types)
    commands: Mapping[str, Command] = field(factory=dict, converter=_commands)
    snapshot_version: int = 1
    event_topics: Mapping[type, str] = field(factory=dict)
    # The state types each declared command accepts, read from its annotation
    # once here: reading type hints costs far more than running a command.
    _state_hints: Mapping[Callable[..., Any], StateCheck | None] = field(
        init=False, factory=dict, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if not self.name:
            raise DefinitionError("an aggregate needs a non-empty name")
        if "/" in self.name:
            # name-based stream ids join application, aggregate and name with '/'
            raise DefinitionError(
                f"aggregate name {self.name!r} contains '/', which separates the parts "
                "of name-based stream ids; use another character"
            )
        for kind in self.events:
            if not isinstance(kind, type):
                raise DefinitionError(
                    f"aggregate {self.name!r}: events must be classes, got {kind!r}"
                )
        if len(set(self.events)) != len(self.events):
            raise DefinitionError(f"aggregate {self.name!r} lists an event type twice")
        handled = handled_event_types(self.apply)
        if handled is not None:
            # the projector dispatches by MRO, so a base class's handler covers a subclass
            missing = [k.__qualname__ for k in self.events if not issubclass(k, handled)]
            if missing:
                raise DefinitionError(
                    f"aggregate {self.name!r} owns {', '.join(missing)} "
                    "but its projector has no handler for them"
                )
        self.topics()  # refuses two event types written or read under one topic
        for command in self.commands.values():
            if not callable(command):
                raise DefinitionError(
                    f"aggregate {self.name!r}: commands must be functions, got {command!r}"
                    + (
                        " (a name: an aggregate's commands map names to functions, so "
                        "[*aggregate.commands] lists names; [*aggregate.commands.values()] "
                        "the functions)" if isinstance(command, str) else ""
                    )
                )
        hints: dict[Callable[..., Any], StateCheck | None] = {}
        for command in self.commands.values():
            inner = innermost(command)
            try:
                hints[inner] = state_check(inner)
            except TypeError:  # an unhashable callable: checked on each call instead
                continue
        object.__setattr__(self, "_state_hints", hints)

    def state_types(self, command: Command) -> tuple[type, ...] | None:
        """The state types ``command`` accepts (None when it does not say)."""
        check = self._state_check(command)
        return None if check is None else check.classes

    def _state_check(self, command: Command) -> StateCheck | None:
        try:
            return self._state_hints[command]
        except (KeyError, TypeError):
            return state_check(command)

    def evolve(self, state: S, event: Any) -> S:
        """Apply one event, naming this aggregate if the projector refuses it."""
        try:
            result: S = self.apply(state, event)
        except UnhandledEvent as exc:
            if exc.where == self.name:
                raise
            raise UnhandledEvent(exc.event_type, self.name) from None
        return result

    def fold(self, events: Iterable[Any], state: S | _Initial = _Initial.INITIAL) -> S:
        """Fold events into a state, starting from ``state`` or the initial one."""
        current: S = self.initial if state is _Initial.INITIAL else state
        apply = self.apply
        # One try around the loop rather than one per event: folding is the hot
        # path of every load, and the error is rare.  A dispatch table built by
        # projector() is looked up here directly, saving a call per event.
        try:
            if type(apply) is _Dispatch:
                handlers = apply.handlers
                for item in events:
                    handler = handlers.get(type(item))
                    if handler is None:
                        handler = apply.inherited(type(item))
                    current = handler(current, item)
            else:
                for item in events:
                    current = apply(current, item)
        except UnhandledEvent as exc:
            if exc.where == self.name:
                raise
            raise UnhandledEvent(exc.event_type, self.name) from None
        return current

    def owns(self, event: Any) -> bool:
        """Whether an event is of a type this aggregate owns."""
        return isinstance(event, self.events)

    def topics(self) -> dict[str, type]:
        """Every topic this aggregate's events are written or read under."""
        table: dict[str, type] = {}
        for kind in self.events:
            for topic in (self.topic_of(kind), *spec_of(kind).aliases):
                other = table.setdefault(topic, kind)
                if other is not kind:
                    raise DefinitionError(
                        f"aggregate {self.name!r}: topic {topic!r} names both "
                        f"{other.__qualname__} and {kind.__qualname__}"
                    )
        return table

    def topic_of(self, kind: type) -> str:
        """The topic under which events of ``kind`` are written."""
        explicit = self.event_topics.get(kind)
        if explicit is not None:
            return explicit
        return spec_of(kind).topic or f"{self.name}.{kind.__qualname__}"


_FUNCTION = types.FunctionType


def decide(
    aggregate: Aggregate[S], command: Command, state: S, *args: Any, **kwargs: Any
) -> list[Any]:
    """Run a pure command on a state and return its new events as a list.

    When the command annotates its state parameter, a state of another type is
    refused with a :class:`CommandError` naming the command and aggregate
    (for example, a command on a stream that has no events yet).  Events the
    aggregate does not own are refused too: they could not be folded.
    """
    inner: Command
    inner_state: Any
    if command.__class__ is _FUNCTION:  # a plain function: no combinator to look inside
        inner, inner_state = command, state
    elif not callable(command):
        raise CommandMistake(_not_a_command(aggregate, command))
    else:
        inner, inner_state = unwrap(command, state)
    check = aggregate._state_check(inner)
    if check is not None and not (
        isinstance(inner_state, check.classes)
        if check.classes is not None
        else check.admits(inner_state)
    ):
        shown = "no state yet (the stream has no events)" if inner_state is None else (
            f"a {type(inner_state).__qualname__}"
        )
        raise CommandError(
            f"command {_name_of(inner)!r} of aggregate {aggregate.name!r} expects "
            f"{check.shown}, but got {shown}"
        )
    return returned(aggregate, command, run_command(aggregate, command, state, args, kwargs))


def _not_a_command(aggregate: Aggregate[Any], command: object) -> str:
    """Why ``command`` is no command: a name points to the function it names, or to one close."""
    said = f"a command of aggregate {aggregate.name!r} is a function, not {command!r}"
    if isinstance(command, str):
        import difflib  # only on this error's path

        named = aggregate.commands
        if command in named:
            return (
                f"{said}: pass the function {_name_of(named[command])} "
                f"(the aggregate's commands[{command!r}])"
            )
        close = difflib.get_close_matches(command, list(named), n=1)
        if close:
            return f"{said}: did you mean the function {_name_of(named[close[0]])}?"
    return said


def run_command(
    aggregate: Aggregate[Any],
    command: Command,
    state: Any,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Any:
    """``command(state, *args, **kwargs)``, what it returns as it is.

    Arguments it does not take raise a :class:`CommandMistake` (see
    :func:`wrong_arguments`); anything the command raises passes through.
    """
    try:
        return command(state, *args, **kwargs)
    except TypeError as error:
        refused = wrong_arguments(aggregate, command, state, args, kwargs)
        if refused is None:
            raise  # the command's own TypeError
        raise refused from error


def wrong_arguments(
    aggregate: Aggregate[Any],
    command: Command,
    state: Any,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> CommandMistake | None:
    """The error for a call of ``command`` that its parameters refuse; None if they take it.

    For a ``TypeError`` raised by running a command: Python raises one both
    for arguments the command does not take and from inside its body, and
    only the first is the caller's mistake, reported as a
    :class:`CommandMistake` naming the command, its aggregate and what it
    takes after the state.  Only a plain function is looked at.
    """
    if command.__class__ is not _FUNCTION:
        return None
    try:
        signature = inspect.signature(command)
        signature.bind(state, *args, **kwargs)
    except TypeError as refused:
        rest = [p.replace(annotation=inspect.Parameter.empty)
                for p in list(signature.parameters.values())[1:]]
        takes = f"({', '.join(map(str, rest))})" if rest else "no arguments"
        count = len(args)
        given = f"{count} positional argument{'' if count == 1 else 's'}"
        if kwargs:
            given += f" and keyword{'' if len(kwargs) == 1 else 's'} {', '.join(kwargs)}"
        return CommandMistake(
            f"command {_name_of(command)!r} of aggregate {aggregate.name!r} takes {takes} "
            f"after the state, but was given {given} ({refused})"
        )
    except ValueError:  # no signature to read
        return None
    return None


def returned(aggregate: Aggregate[Any], command: Command, events: Any) -> list[Any]:
    """What :func:`decide` makes of ``events``, the value ``command`` returned.

    A new list of them, once they are checked: a sequence (not a string),
    of events ``aggregate`` owns.  The edge calls a command itself on its
    fast path, and hands here any result it does not take as it is.
    """
    if events.__class__ is not list and (
        events is None or isinstance(events, (str, bytes)) or not isinstance(events, Sequence)
    ):
        raise CommandMistake(
            f"command {_name_of(command)!r} must return a sequence of events, "
            f"got {type(events).__name__}"
        )
    result = list(events)
    owned = aggregate.events
    if owned:
        for item in result:
            if not isinstance(item, owned):
                raise CommandMistake(
                    f"command {_name_of(command)!r} returned a value of type "
                    f"{type(item).__qualname__}, which aggregate {aggregate.name!r} does not own"
                )
    return result


# --- combinators -----------------------------------------------------------


def _identity_apply(state: Any, event: Any) -> Any:
    return state


#: The neutral aggregate: no events, a unit state, no commands.
neutral: Aggregate[tuple[()]] = Aggregate(name="neutral", initial=(), apply=_identity_apply)


def combine(*parts: Aggregate[Any], name: str | None = None) -> Aggregate[tuple[Any, ...]]:
    """Compose any number of aggregates into one whose state is a tuple.

    Each event is applied to every part that owns it; each part's commands
    run on its own slot.  ``combine()`` is :data:`neutral`-like (state ``()``),
    and composition is associative up to regrouping the state tuple.
    """
    combined_name = name or "+".join(p.name for p in parts) or "neutral"
    events: list[type] = []
    topics: dict[type, str] = {}
    for part in parts:
        for kind in part.events:
            if kind not in events:
                events.append(kind)
                topics[kind] = part.topic_of(kind)
    commands: dict[str, Command] = {}
    for index, part in enumerate(parts):
        for key, command in part.commands.items():
            qualified = f"{part.name}.{key}"
            if qualified in commands:
                raise DefinitionError(f"combine: two parts are both named {part.name!r}")
            commands[qualified] = _Lifted(command, index)
    return Aggregate(
        name=combined_name,
        initial=tuple(p.initial for p in parts),
        apply=_Combined(tuple(parts), combined_name),
        events=events,
        commands=commands,
        event_topics=topics,
        snapshot_version=sum(p.snapshot_version for p in parts),
    )


def map_state(
    aggregate: Aggregate[S], to: Callable[[S], T], back: Callable[[T], S]
) -> Aggregate[T]:
    """View an aggregate's state through an isomorphism ``to``/``back``."""
    return Aggregate(
        name=aggregate.name,
        initial=to(aggregate.initial),
        apply=_MappedState(aggregate, to, back),
        events=aggregate.events,
        commands={k: _MappedCommand(c, back) for k, c in aggregate.commands.items()},
        snapshot_version=aggregate.snapshot_version,
        event_topics=aggregate.event_topics,
    )


def adapt(
    aggregate: Aggregate[S],
    *,
    inward: Callable[[Any], Any],
    outward: Callable[[Any], Any],
    events: Iterable[type],
    name: str | None = None,
) -> Aggregate[S]:
    """Run an aggregate on another event vocabulary.

    ``inward`` turns an outer event into one of the aggregate's events, or
    None for a foreign event, which then leaves the state unchanged;
    ``outward`` turns the events its commands emit into outer events;
    ``events`` are the outer event types the adapted aggregate owns.
    """
    return Aggregate(
        name=name or aggregate.name,
        initial=aggregate.initial,
        apply=_AdaptedApply(aggregate, inward),
        events=tuple(events),
        commands={k: _AdaptedCommand(c, outward) for k, c in aggregate.commands.items()},
        snapshot_version=aggregate.snapshot_version,
    )


def contramap_command(command: Command, convert: Callable[..., tuple[Any, ...]]) -> Command:
    """A command taking other arguments: ``convert(*args)`` gives the original ones."""
    return _Contramapped(command, convert)
