"""What :func:`check_system`'s runs exercised, and the failure of a check that exercised too little.

A check whose inputs never reach what it is for passes without testing it:
every command refused (a mistake in the inputs' arguments, often), one
command never accepted, or no policy ever acting.  Each is counted over all
the runs and, unless named ``rare``, fails the check with the reasons the
commands were refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

from fes.system import System
from fes.testing.simulation._edge import is_internal
from fes.testing.simulation._report import Simulation
from fes.testing.simulation._text import _command_label

__all__ = ["Coverage"]

_REFUSED = "refused ("


class Coverage:
    """Each command's acceptances and refusals over the runs, and the policies' events."""

    def __init__(self, system: System, rare: Collection[str]) -> None:
        self.system = system
        self.rare = set(rare)
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
            if outcome.startswith(_REFUSED):
                self.refused.setdefault(command, Counter())[outcome[len(_REFUSED):-1]] += 1
            else:
                self.accepted[command] += 1
                stored = stored or outcome != "(no events)"
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
            if self.accepted[command] or name in self.rare:
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
        if any(r.startswith("CommandError") for c in self.refused.values() for r in c):
            lines.append(
                "a CommandError is a mistake in the inputs, not a refusal by the domain: "
                "arguments the command does not take, or a command given a stream whose "
                "state it cannot start from"
            )
        body = "\n".join(f"  {line}" for line in lines)
        return (
            f"check_system exercised too little to pass, in {self.runs} run(s):\n{body}\n"
            "Give inputs that reach all of it; name a command refused on purpose in rare=."
        )
