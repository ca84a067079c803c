"""What :func:`check_system`'s runs exercised, and the failure of a check that exercised too little.

A check whose inputs never reach what it is for passes without testing it:
every command refused (on streams whose state it cannot start from, often), one
command never accepted, or no policy ever acting.  Each is counted over all
the runs and fails the check with the reasons the commands were refused,
but for a command ``rare`` names, with the reason it is refused on purpose
(as :func:`fes.testing.laws.check_aggregate`'s ``rare`` does).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from fes.errors import DefinitionError
from fes.system import System
from fes.testing.simulation._edge import is_internal
from fes.testing.simulation._inputs import NO_EVENTS, REFUSED
from fes.testing.simulation._report import Simulation
from fes.testing.simulation._text import _command_label

__all__ = ["Coverage"]


class Coverage:
    """Each command's acceptances and refusals over the runs, and the policies' events."""

    def __init__(self, system: System, rare: Mapping[Any, str] | None) -> None:
        self.system = system
        self.rare = _rare_commands(system, rare)
        self.runs = 0
        self.stored = 0  # runs in which an input stored an event
        self.acted = 0  # runs in which a policy led to an event
        self.accepted: Counter[tuple[str, str]] = Counter()  # (command, where)
        self.refused: dict[tuple[str, str], Counter[str]] = {}

    def add(self, result: Simulation) -> None:
        """Count what one passing run exercised."""
        self.runs += 1
        stored = False
        for item, outcome in zip(result.inputs, result.outcomes, strict=True):
            command = (_command_label(item.command), f"{item.app}/{item.aggregate}")
            if outcome.startswith(REFUSED):
                self.refused.setdefault(command, Counter())[outcome[len(REFUSED):-1]] += 1
            else:
                self.accepted[command] += 1
                stored = stored or outcome != NO_EVENTS
        self.stored += stored
        # an event a policy's intent caused names its cause; an input's names none
        self.acted += any(
            r.metadata.causation_id is not None and not is_internal(r.topic)
            for app in self.system.apps for r in result.expected.log(app.name)
        )

    def failure(self) -> str | None:
        """What the runs did not exercise, as the check's failure; None if enough."""
        lines: list[str] = []
        if not self.stored:
            lines.append(
                "no input stored an event: every command was refused, or decided no events"
            )
        for command, reasons in sorted(self.refused.items()):
            name, where = command
            # rare= excuses the domain's refusals, never a mistake in the inputs
            if self.accepted[command] or (name in self.rare and not _mistaken(reasons)):
                continue
            reason, _ = reasons.most_common(1)[0]
            lines.append(
                f"command {name!r} ({where}) was never accepted: refused "
                f"{sum(reasons.values())} time(s), mostly {reason}"
            )
        policies = [app.name for app in self.system.apps if app.policy is not None]
        if self.stored and policies and not self.acted:
            lines.append(
                f"no policy (of {', '.join(map(repr, policies))}) led to an event: give "
                "inputs whose events the policies act on (or test a policy that acts on "
                "none with given_policy)"
            )
        if not lines:
            return None
        if any(map(_mistaken, self.refused.values())):
            lines.append(
                "a CommandError is a mistake in the inputs, not a refusal by the domain: "
                "a command given a stream whose state it cannot start from (rare= does "
                "not excuse it)"
            )
        body = "\n".join(f"  {line}" for line in lines)
        advice = "Give inputs that reach all of it"
        if any(line.startswith("command ") for line in lines):
            advice += (
                "; a command the domain refuses on purpose is named with why in "
                "rare={'name': 'why it is refused'}"
            )
        return (
            f"check_system exercised too little to pass, in {self.runs} run(s):\n{body}\n"
            f"{advice}."
        )


def _mistaken(reasons: Counter[str]) -> bool:
    """Whether a command's refusals include a CommandError: the inputs' mistake."""
    return any(reason.startswith("CommandError") for reason in reasons)


def _rare_commands(system: System, rare: Mapping[Any, str] | None) -> set[str]:
    """The commands ``rare`` names (by name, or the function), each with a reason.

    A name no aggregate of the system offers is refused: a typo would
    otherwise excuse nothing, silently.
    """
    if rare is None:
        return set()
    if not isinstance(rare, Mapping):
        raise DefinitionError(
            f"rare= maps each command refused on purpose to why, such as "
            f"{{'cancel': 'no booking to cancel'}}, not {rare!r}"
        )
    offered = {
        name for app in system.apps for aggregate in app.aggregates
        for name in aggregate.commands
    }
    names: set[str] = set()
    for key, reason in rare.items():
        name = _command_label(key)
        if isinstance(key, str):
            if name not in offered:
                raise DefinitionError(
                    f"rare= names {name!r}, which no aggregate of the system offers as a "
                    f"command (it offers {', '.join(map(repr, sorted(offered))) or 'none'}); "
                    "a command no aggregate lists is named by its function"
                )
        elif isinstance(key, type) or not callable(key):  # an event type, a number…
            raise DefinitionError(
                f"rare= names commands, by name or as the function an input gives, "
                f"not {key!r}"
            )
        if not isinstance(reason, str) or not reason.strip():
            raise DefinitionError(
                f"rare= must give why {name!r} is refused on purpose, as a non-empty string"
            )
        names.add(name)
    return names
