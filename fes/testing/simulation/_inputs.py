"""The inputs of a simulated run: commands on streams, and executing one on an application."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from attrs import field, frozen

from fes.aggregates import Command
from fes.errors import CommandError, CommandMistake, ConfigurationError, Rejected
from fes.system import System
from fes.testing.simulation._edge import Application
from fes.testing.simulation._text import _command_label, _shown


def _args(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


def _name_of(value: object) -> str:
    return str(getattr(value, "name", None) or value)


@frozen
class Input:
    """A command to execute on a stream of one of the system's applications.

    ``aggregate`` is an aggregate of ``app`` or its name; ``command`` a
    command function or the name under which the aggregate lists it.
    """

    app: str
    aggregate: str = field(converter=_name_of)
    stream: str
    command: Command | str
    args: tuple[Any, ...] = field(default=(), converter=_args)

    @classmethod
    def of(cls, value: Input | Sequence[Any]) -> Input:
        """An input from an :class:`Input` or ``(app, aggregate, stream, command, args)``."""
        if isinstance(value, Input):
            return value
        return cls(*value)

    def describe(self) -> str:
        """The input as one line: ``app/stream: command(args)``."""
        args = ", ".join(map(repr, self.args))
        return f"{self.app}/{self.stream}: {_command_label(self.command)}({args})"


#: How an input's outcome starts when its command refused it, and what it is when
#: the command decided no events (what check_system's coverage counts by).
REFUSED, NO_EVENTS = "refused (", "(no events)"


def _execute(application: Application, system: System, item: Input) -> str:
    aggregate = system.app(item.app).aggregate(item.aggregate)
    command = item.command
    if isinstance(command, str):
        try:
            command = aggregate.commands[command]
        except KeyError:
            raise ConfigurationError(
                f"aggregate {aggregate.name!r} has no command {command!r}; it has "
                f"{', '.join(map(repr, aggregate.commands)) or 'none'}"
            ) from None
    try:
        recorded = application.execute(aggregate, item.stream, command, *item.args)
    except CommandMistake as mistake:
        # arguments the command does not take (or a command that misbehaved):
        # wrong in every run, whatever the state, so no run may pass with it
        mistake.add_note(
            f"in the input {item.describe()}: a mistake in the inputs or the command, "
            "not a refusal by the domain"
        )
        raise
    except (Rejected, CommandError) as refusal:
        return f"{REFUSED}{type(refusal).__name__}: {refusal})"
    return _shown([r.event for r in recorded]) if recorded else NO_EVENTS
