"""What a check exercised: counts of outcomes, the vacuity check, the time budget.

Every command a check runs goes through :func:`run_counted`, which times it
against a budget (measuring a slow one again before failing, so a hiccup of
the machine is no failure), tallies what it did and tells Hypothesis (its
``hypothesis.event`` statistics, shown by ``--hypothesis-show-statistics``).
At the end of a passing run :meth:`Tally.vacuity` says what never happened:
a command never accepted, an event type never produced.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase, Verbosity
from hypothesis import strategies as st
from hypothesis.reporting import base_report
from hypothesis.statistics import collector

from fes._shapes import argument_function, parameter_hints
from fes.aggregates import Aggregate, Command
from fes.errors import DefinitionError
from fes.testing.strategies import (
    Context,
    StepResult,
    _histories,
    _note,
    _reason,
    _tell,
    run_step,
    state_filter,
)

#: Seconds one command may take on one example, unless a check is told otherwise.
DEFAULT_BUDGET = 10.0

#: How many histories the derandomized second search for a missing outcome draws.
CONFIRMATIONS = 200

#: Names of rare or unreachable commands and event types, with the reason why.
Rare = Mapping[Any, str]


class OverBudget(BaseException):
    """Raised inside a command that outran its time budget (not an Exception:
    a command's own ``except Exception`` must not swallow it)."""


class BudgetExceeded(AssertionError):
    """A command took longer than the budget, twice in a row."""


class Abort(BaseException):
    """Ends a Hypothesis run at once with ``failure``.

    A slow example shrunk by Hypothesis would cost the budget at every try;
    a ``BaseException`` is not caught as a test failure, so the run stops.
    """

    def __init__(self, failure: AssertionError) -> None:
        super().__init__(str(failure))
        self.failure = failure


def _call(name: str, args: tuple[Any, ...]) -> str:
    return f"{name}({', '.join(map(repr, args))})"


def _can_interrupt() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextmanager
def _interrupt_after(seconds: float) -> Iterator[None]:
    """Raise :class:`OverBudget` in the running code after ``seconds`` (main thread)."""
    if not _can_interrupt():
        yield
        return

    def alarm(signum: int, frame: object) -> None:
        raise OverBudget

    previous = signal.signal(signal.SIGALRM, alarm)
    start = time.monotonic()
    # a timer already set (pytest-timeout's, say) is put back afterwards, less the time spent
    pending, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if pending > 0:
            left = max(pending - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, interval)


def _timed(
    command: Command, state: Any, args: tuple[Any, ...], budget: float
) -> tuple[StepResult | None, float]:
    """Run ``command``; its result (None if interrupted) and the seconds it took."""
    start = time.perf_counter()
    try:
        with _interrupt_after(budget):
            result = run_step(command, state, args)
    except OverBudget:
        return None, time.perf_counter() - start
    return result, time.perf_counter() - start


class Tally:
    """Counts, over a whole run, what each command did and which events were produced."""

    def __init__(self, aggregate: Aggregate[Any], rare: Rare | None = None) -> None:
        self.aggregate = aggregate
        self.accepted: Counter[str] = Counter()
        self.rejected: dict[str, Counter[str]] = {}
        self.raised: Counter[str] = Counter()
        self.produced: Counter[str] = Counter()
        self.rare = _rare_names(aggregate, rare)
        #: whether a budget failure ends the whole run at once (with :class:`Abort`)
        self.abort = False

    def run(
        self,
        name: str,
        command: Command,
        state: Any,
        args: tuple[Any, ...],
        budget: float | None,
    ) -> StepResult:
        """Run a command within ``budget`` seconds, counting and telling what it did."""
        __tracebackhide__ = True
        try:
            result = run_counted(name, command, state, args, budget)
        except BudgetExceeded:
            raise
        except Exception:
            self.raised[name] += 1
            _note(f"{name}: raised")
            raise
        self.count(name, result)
        return result

    def count(self, name: str, result: StepResult) -> None:
        """Tally one outcome of ``name`` and tell Hypothesis."""
        _tell(name, result)
        if result.refused is not None:
            self.rejected.setdefault(name, Counter())[_reason(result.refused)] += 1
            return
        self.accepted[name] += 1
        for item in result.events:
            self.produced[type(item).__qualname__] += 1

    def counts(self) -> Counter[str]:
        """The counts as one Counter: ``"name: accepted"``, ``"event Type"`` and so on."""
        counts: Counter[str] = Counter()
        for name in self.aggregate.commands:
            counts[f"{name}: accepted"] = self.accepted[name]
            counts[f"{name}: rejected"] = sum(self.rejected.get(name, Counter()).values())
            if self.raised[name]:
                counts[f"{name}: raised"] = self.raised[name]
        for kind in self.aggregate.events:
            counts[f"event {kind.__qualname__}"] = self.produced[kind.__qualname__]
        return counts

    def passed(self, chosen: hypothesis.settings) -> Counter[str]:
        """At the end of a passing run: show the summary if verbose, return the counts."""
        if chosen.verbosity >= Verbosity.verbose:
            base_report(self.summary())
        return self.counts()

    def summary(self) -> str:
        """What the run exercised, one line per command and one for the events."""
        lines = ["what the run exercised:"]
        for name in self.aggregate.commands:
            parts = [f"accepted {self.accepted[name]}"]
            reasons = self.rejected.get(name, Counter())
            rejected = sum(reasons.values())
            if rejected:
                grouped = ", ".join(f"{r} x{n}" for r, n in reasons.most_common(3))
                more = ", ..." if len(reasons) > 3 else ""
                parts.append(f"rejected {rejected} ({grouped}{more})")
            else:
                parts.append("rejected 0")
            if self.raised[name]:
                parts.append(f"raised {self.raised[name]}")
            lines.append(f"  {name}: {', '.join(parts)}")
        if self.aggregate.events:
            shown = ", ".join(
                f"{kind.__qualname__} x{self.produced[kind.__qualname__]}"
                for kind in self.aggregate.events
            )
            lines.append(f"  events produced: {shown}")
        return "\n".join(lines)

    def missing(self) -> tuple[list[str], list[str]]:
        """The commands never accepted and the event types never produced, not rare."""
        never = [
            name
            for name in self.aggregate.commands
            if not self.accepted[name] and name not in self.rare
        ]
        unseen = [
            kind.__qualname__
            for kind in self.aggregate.events
            if not self.produced[kind.__qualname__] and kind.__qualname__ not in self.rare
        ]
        return never, unseen

    def vacuity(self) -> str | None:
        """The message a vacuous run fails with, or None if it exercised everything."""
        never, unseen = self.missing()
        if not never and not unseen:
            return None
        lines = [f"aggregate {self.aggregate.name!r}: the check exercised too little to pass"]
        for name in never:
            reasons = self.rejected.get(name, Counter())
            why = (
                f"rejected {sum(reasons.values())} times, mostly {reasons.most_common(1)[0][0]}"
                if reasons
                else "never admitted by the state it met, or never drawn"
            )
            lines.append(f"  command {name!r} was never accepted ({why})")
        lines.extend(f"  event {kind} was never produced" for kind in unseen)
        if not any(self.accepted.values()):
            lines.append(
                "  no command was accepted at all, so every command met only the initial "
                "state: commands that need an earlier one cannot be accepted until one "
                "that starts from the initial state is"
            )
        # A command refused nearly always may be the real cause: the states
        # the others need then rarely arise, whatever their own arguments.
        for name in self.aggregate.commands:
            reasons = self.rejected.get(name, Counter())
            refused = sum(reasons.values())
            tried = refused + self.accepted[name]
            if name not in never and tried >= 20 and refused >= 0.9 * tried:
                lines.append(
                    f"  command {name!r} was rejected {refused} of {tried} times (mostly "
                    f"{reasons.most_common(1)[0][0]}): what the others need may rarely arise"
                )
        example = never[0] if never else next(iter(self.aggregate.commands), "some_command")
        lines.append(
            "Draw arguments the commands accept with args= (one tuple strategy per command, "
            "one strategy per argument after the state) or overrides= (per field or type), "
            "e.g.\n"
            f"  args={{{example!r}: {_example_arguments(self.aggregate.commands.get(example))}}}\n"
            "or, if it is rare or unreachable on purpose, say so with\n"
            f"  rare={{{(never or unseen)[0]!r}: 'why it is rare'}}"
        )
        lines.append(
            f"(after the run, {CONFIRMATIONS} more histories, the same in every run, "
            "looked for them too)"
        )
        lines.append(self.summary())
        return "\n".join(lines)

    def confirm(
        self,
        contexts: Mapping[str, Context],
        max_commands: int,
        budget: float | None,
    ) -> str | None:
        """The vacuity message, after a second, derandomized search for what is missing.

        A command accepted rarely may go unaccepted in one random run and not
        the next; the second search draws the same examples in every run and
        ends each history with a missing command, so whether a check fails
        for vacuity does not depend on the luck of one run.
        """
        if self.vacuity() is None:
            return None
        aggregate = self.aggregate
        admits = {name: state_filter(command) for name, command in aggregate.commands.items()}

        def run(name: str, command: Command, state: Any, args: tuple[Any, ...]) -> StepResult:
            try:
                return self.run(name, command, state, args, budget)
            except BudgetExceeded as exc:
                raise Abort(exc) from None

        runs = _histories(aggregate, contexts, max_commands, run)

        never, _ = self.missing()
        wanted = never or list(aggregate.commands)

        def search(data: st.DataObject) -> None:
            # draws depend on the data alone, never on what was found so far
            state = aggregate.fold(data.draw(runs))
            usable = [name for name in wanted if admits[name](state)]
            if usable:
                name = data.draw(st.sampled_from(usable))
                context = contexts[name]
                arguments = context.resolve(data.draw(context.choices), state)
                run(name, aggregate.commands[name], state, arguments)

        quiet = hypothesis.settings(
            max_examples=CONFIRMATIONS,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        # its statistics would replace the check's own in --hypothesis-show-statistics
        with collector.with_value(None):
            hypothesis.given(st.data())(quiet(search))()
        return self.vacuity()


def _rare_names(aggregate: Aggregate[Any], rare: Rare | None) -> dict[str, str]:
    """``rare`` keyed by command name or event type name; unknown keys are refused."""
    known = {*aggregate.commands, *(kind.__qualname__ for kind in aggregate.events)}
    names: dict[str, str] = {}
    for key, reason in (rare or {}).items():
        name = key.__qualname__ if isinstance(key, type) else str(key)
        if name not in known:
            raise DefinitionError(
                f"rare= names {name!r}, which is neither a command nor an event type of "
                f"aggregate {aggregate.name!r}"
            )
        if not isinstance(reason, str) or not reason.strip():
            raise DefinitionError(f"rare= must give a reason for {name!r}, as a string")
        names[name] = reason
    return names


def run_counted(
    name: str, command: Command, state: Any, args: tuple[Any, ...], budget: float | None
) -> StepResult:
    """Run a command within ``budget`` seconds (None: no budget).

    A run that outruns the budget is interrupted (in the main thread; elsewhere
    it is only measured) and measured again; only a second slow run fails, with
    :class:`BudgetExceeded` naming the command, its arguments and the time.
    """
    __tracebackhide__ = True
    if budget is None:
        return run_step(command, state, args)
    result, first = _timed(command, state, args, budget)
    if result is not None and first <= budget:
        return result
    again, second = _timed(command, state, args, budget)
    if again is not None and second <= budget:
        return again
    stopped = "stopped after" if again is None else "took"
    raise BudgetExceeded(
        f"command {_call(name, args)} {stopped} {second:.2f} s, over the budget of "
        f"{budget:g} s per command (measured twice: {first:.2f} s, then {second:.2f} s)\n"
        f"  on the state {state!r}\n"
        "  a command this slow on one example would make the check hang: bound its "
        "arguments with args=, or raise the budget with budget=<seconds> (None: no budget)"
    )


def check_commands(aggregate: Aggregate[Any], what: str) -> None:
    """Refuse an aggregate with no commands, saying how its events can be tested instead.

    Its events come from elsewhere (a policy's ``fes.Emit``, as a read
    model's do): random command sequences would exercise nothing.
    """
    if not aggregate.commands:
        raise DefinitionError(
            f"aggregate {aggregate.name!r} has no commands to {what}: its events come "
            "from elsewhere (a policy's fes.Emit?). Test the policy that emits them with "
            "given_policy, and a view over them on events drawn by "
            f"events_of({aggregate.name}) with view_rebuild_equals_incremental (see "
            "docs/testing.md, \"An aggregate without commands\")"
        )


def check_budget(budget: float | None) -> float | None:
    """Refuse a budget that is not a positive number of seconds."""
    if budget is not None and (isinstance(budget, bool) or not budget > 0):
        raise DefinitionError(
            f"budget must be a positive number of seconds or None, got {budget!r}"
        )
    return budget


#: What the vacuity message suggests for an argument of each simple type.
_SUGGESTED: dict[Any, str] = {
    int: "st.integers(1, 10)",
    float: "st.floats(0, 100)",
    str: "st.sampled_from(['a', 'b', 'c'])",
    bool: "st.booleans()",
}


def _example_arguments(command: Command | None) -> str:
    """An ``args=`` strategy shaped like ``command``'s own arguments, as text."""
    function = None if command is None else argument_function(command)
    found = None if function is None else parameter_hints(function)
    if found is None:
        return "st.tuples(...)"
    params, hints = found
    shown = []
    for param in params[1:]:  # the first is the state
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            break
        hint = hints.get(param.name)
        name = getattr(hint, "__name__", None)
        # a type's own derived strategy is what failed: leave its choice to the user
        shown.append(_SUGGESTED.get(hint, f"<{name} strategy>" if name else "..."))
    return f"st.tuples({', '.join(shown)})"
