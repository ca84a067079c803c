"""A Hypothesis state machine for any aggregate: random commands, checked invariants.

:func:`check_aggregate` runs random sequences of an aggregate's commands,
with arguments drawn from their annotations, on a current state; after every
step it checks that the emitted events apply, that the user's invariants
hold and, optionally, that a snapshot folds like the history and that a
codec gives every event back.  A failure is shrunk to a short sequence and
raised as an ``AssertionError`` that reads as given/when/then::

    check_aggregate(accounts, invariants=[balance_within_overdraft])

    AssertionError: aggregate 'account' failed: invariant balance_within_overdraft (after 2 …)
    given account: AccountOpened(owner='')
    when withdraw(1)
    then invariant balance_within_overdraft failed on Account(owner='', balance=-1, ...)
    commands run (2):
      1. open_account('') -> AccountOpened(owner='')
      2. withdraw(1) -> Withdrawn(amount=1)

Requires Hypothesis (``pip install fes-events[testing]``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NoReturn

import hypothesis
from attrs import frozen
from hypothesis import Phase
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    get_state_machine_test,
    invariant,
    rule,
    run_state_machine_as_test,
)

from fes.aggregates import Aggregate, Command
from fes.snapshots import digest_parts, fingerprint_parts, restore, take
from fes.testing._exercise import (
    DEFAULT_BUDGET,
    Abort,
    BudgetExceeded,
    Rare,
    Tally,
    check_budget,
    check_commands,
)
from fes.testing.laws import fingerprint_is_stable, projector_keeps_state
from fes.testing.strategies import (
    Context,
    Overrides,
    argument_contexts,
    argument_strategies,
    state_filter,
)
from fes.testing.strategies import _callable_name as _label
from fes.testing.strategies import _pristine as _copy

__all__ = ["AggregateMachine", "Invariant", "Step", "check_aggregate", "machine_for"]

#: An invariant: ``state -> bool`` (False fails), or a function that raises AssertionError.
Invariant = Callable[[Any], object]

_STREAM = "machine"


def _call(name: str, args: tuple[Any, ...]) -> str:
    return f"{name}({', '.join(map(repr, args))})"



class _Broken(AssertionError):
    """A failed check, carrying what is needed to replay and shorten the run."""

    def __init__(
        self, message: str, law: str, calls: Sequence[tuple[str, Command, tuple[Any, ...]]]
    ) -> None:
        super().__init__(message)
        self.law = law
        self.calls = tuple(calls)


@frozen
class Step:
    """One command the machine ran: its name, arguments, and what it did, as text."""

    name: str
    args: tuple[Any, ...]
    outcome: str


class AggregateMachine(RuleBasedStateMachine):
    """Runs one aggregate's commands on a current state; see :func:`machine_for`.

    Subclasses made by :func:`machine_for` fill in the class attributes; one
    rule, ``step``, runs a command the state admits.  ``state`` is the
    current state, ``history`` the events folded into it, ``steps`` what
    each command did.
    """

    aggregate: ClassVar[Aggregate[Any]]
    user_invariants: ClassVar[tuple[Invariant, ...]] = ()
    # held in a tuple so that it is not bound as a method; empty: no codec check
    roundtrips: ClassVar[tuple[Callable[[object], object], ...]] = ()
    # the same for states: empty, no check that a snapshot's codec carries them
    state_roundtrips: ClassVar[tuple[Callable[[object], object], ...]] = ()
    snapshots: ClassVar[bool] = True
    #: For each command name, whether its state annotation admits a state.
    admits: ClassVar[Mapping[str, Callable[[Any], bool]]] = {}
    #: Event types that may fold a state back to the initial value (they end it).
    terminal: ClassVar[tuple[type, ...]] = ()
    #: Seconds one command may take on one example (None: no budget).
    budget: ClassVar[float | None] = DEFAULT_BUDGET
    #: What the commands did, counted over the last check of this class.
    tally: ClassVar[Tally]
    #: Commands and event types that may go unexercised, with the reason why.
    rare: ClassVar[Mapping[str, str]] = {}
    #: Each command's argument strategy (a tuple strategy), by command name.
    arguments: ClassVar[Mapping[str, st.SearchStrategy[tuple[Any, ...]]]] = {}
    #: Each command's arguments for the state it meets (see ``argument_contexts``).
    contexts: ClassVar[Mapping[str, Context]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.state: Any = self.aggregate.initial
        self.history: list[Any] = []
        self.steps: list[Step] = []
        self.given: tuple[Any, ...] = ()  # the history before the last command
        self.calls: list[tuple[str, Command, tuple[Any, ...]]] = []  # to replay a failure
        self.digest: str | None = None  # the fingerprint, computed at the first snapshot

    @classmethod
    def _to_test_case(cls) -> Any:  # type: ignore[override, unused-ignore]
        """Hypothesis's ``TestCase``, run as :func:`check_aggregate` runs the machine.

        It counts what each command did and fails for vacuity as
        :func:`check_aggregate` does, shortens a failure's story the same way,
        and skips Hypothesis's explain phase (minutes of CPU on a failing state
        machine, adding nothing to the given/when/then message), whatever
        settings the user assigns to ``TestCase.settings``.
        """
        case = super()._to_test_case()

        def runTest(self: Any) -> None:
            __tracebackhide__ = True
            _run_machine(cls, self.settings)

        runTest.is_hypothesis_test = True  # type: ignore[attr-defined]
        runTest._hypothesis_state_machine_class = cls  # type: ignore[attr-defined]
        case.runTest = runTest  # type: ignore[method-assign]
        return case

    # --- reporting -------------------------------------------------------

    def _given(self, events: Sequence[Any]) -> str:
        shown = "; ".join(map(repr, events)) if events else "(no events)"
        return f"given {self.aggregate.name}: {shown}"

    def fail(
        self, law: str, then: str, given: Sequence[Any], cause: BaseException | None = None
    ) -> NoReturn:
        """Raise an AssertionError telling the steps so far as given/when/then."""
        __tracebackhide__ = True
        count = len(self.steps)
        lines = [
            f"aggregate {self.aggregate.name!r} failed: {law} "
            f"(after {count} command{'' if count == 1 else 's'})"
        ]
        lines.append(self._given(given))
        if self.steps:
            last = self.steps[-1]
            lines.append(f"when {_call(last.name, last.args)}")
        else:
            lines.append("when (no command has run)")
        lines.append(f"then {then}")
        lines.append(f"commands run ({len(self.steps)}):")
        lines.extend(
            f"  {i}. {_call(s.name, s.args)} -> {s.outcome}" for i, s in enumerate(self.steps, 1)
        )
        raise _Broken("\n".join(lines), law, self.calls) from cause

    # --- one command ------------------------------------------------------

    def run_command(self, name: str, command: Command, args: tuple[Any, ...]) -> None:
        """Run a command on the current state and check everything it did."""
        __tracebackhide__ = True
        before = self.state
        given = self.given = tuple(self.history)
        copied, pristine = _copy((before, args))
        self.calls.append((name, command, args))
        self.steps.append(Step(name, args, "(running)"))
        try:
            step = self.tally.run(name, command, before, args, self.budget)
        except BudgetExceeded as exc:
            self.steps[-1] = Step(name, args, "(over the time budget)")
            try:
                self.fail("time budget", str(exc), given)
            except _Broken as failure:
                if self.tally.abort:
                    raise Abort(failure) from None
                raise
        except Exception as exc:
            self.steps[-1] = Step(name, args, f"raised {type(exc).__name__}")
            self.fail(
                f"{name} raised {type(exc).__name__}",
                f"{name} raised {type(exc).__name__}: {exc}",
                given,
                exc,
            )
        if copied and (before, args) != pristine:
            self.fail(
                f"{name} mutated its input",
                f"{name} mutated the state or arguments it was given: the state is now "
                f"{before!r}",
                given,
            )
        if step.refused is not None:
            reason = f"{type(step.refused).__name__}: {step.refused}"
            self.steps[-1] = Step(name, args, f"refused ({reason})")
            return
        events = step.events
        self.steps[-1] = Step(name, args, "; ".join(map(repr, events)) or "(no events)")
        owned = self.aggregate.events
        for item in events:
            if owned and not self.aggregate.owns(item):
                self.fail(
                    f"{name} emitted a foreign event",
                    f"event {item!r}: {name} emitted an event the aggregate does not own",
                    given,
                )
        try:
            after = self.aggregate.fold(events, before)
        except Exception as exc:
            self.fail(
                f"the events of {name} did not apply",
                f"its events did not apply: {type(exc).__name__}: {exc}",
                given,
                exc,
            )
        self._check_kept(name, before, events, given)
        if copied and before != pristine[0]:
            self.fail(
                f"the projector mutated its input applying the events of {name}",
                f"applying {'; '.join(map(repr, events))} changed the state it was given "
                f"from {pristine[0]!r} to {before!r}",
                given,
            )
        self._check_roundtrip(events, given)
        if self.state_roundtrips:
            self._check_state_roundtrip(after, given)
        self.history.extend(events)
        if self.snapshots:
            # the snapshot holds a copy, as if it had been stored and loaded again
            stored = pristine[0] if copied else before
            self._check_snapshot(stored, len(given), events, after, given)
        self.state = after

    def _check_kept(
        self, name: str, before: Any, events: Sequence[Any], given: Sequence[Any]
    ) -> None:
        __tracebackhide__ = True
        state = before
        for item in events:
            try:
                projector_keeps_state(self.aggregate, state, item, self.terminal)
            except AssertionError as exc:
                law = f"the projector lost the state applying the events of {name}"
                self.fail(law, str(exc), given)
            state = self.aggregate.evolve(state, item)

    def _check_roundtrip(self, events: Sequence[Any], given: Sequence[Any]) -> None:
        __tracebackhide__ = True
        for item in events if self.roundtrips else ():
            self._round_trip("codec round trip", self.roundtrips[0], item, given)

    def _check_state_roundtrip(self, state: Any, given: Sequence[Any]) -> None:
        __tracebackhide__ = True
        self._round_trip("state round trip", self.state_roundtrips[0], state, given)

    def _round_trip(
        self, law: str, roundtrip: Callable[[object], object], value: Any, given: Sequence[Any]
    ) -> None:
        """Fail ``law`` unless ``roundtrip(value)`` gives back an equal value of its type."""
        __tracebackhide__ = True
        try:
            back = roundtrip(value)
        except Exception as exc:
            self.fail(
                law,
                f"{law}: {value!r} could not be encoded and decoded: "
                f"{type(exc).__name__}: {exc}",
                given,
                exc,
            )
        if back != value or type(back) is not type(value):
            self.fail(law, f"{value!r} came back as {back!r}", given)

    def _check_snapshot(
        self, before: Any, version: int, events: Sequence[Any], after: Any, given: Sequence[Any]
    ) -> None:
        __tracebackhide__ = True
        # the fingerprint is computed twice per run, as a writer and a reader would,
        # with the projector run in between; not twice per step: it costs more than
        # the rest of a step, and an application too computes it once
        written = self.digest
        first = fingerprint_parts(self.aggregate) if written is None else []
        snapshot = take(self.aggregate, _STREAM, version, before,
                        digest=digest_parts(first) if written is None else written)
        folded = self.aggregate.fold(self.history)
        if written is None:
            try:
                written = self.digest = fingerprint_is_stable(
                    self.aggregate, first, fingerprint_parts(self.aggregate)
                )
            except AssertionError as exc:
                self.fail("fingerprint law", str(exc), given)
        resumed = restore(self.aggregate, snapshot, events, digest=written)
        if not resumed == folded == after:
            self.fail(
                "snapshot law",
                "folding from a snapshot differs from folding the history: "
                f"from the snapshot {resumed!r}, from the history {folded!r}, "
                f"step by step {after!r}",
                given,
            )

    # --- invariants -------------------------------------------------------

    @invariant()
    def check_user_invariants(self) -> None:
        """Check every user invariant on the current state."""
        __tracebackhide__ = True
        given = self.given
        for check in self.user_invariants:
            name = _label(check)
            try:
                result = check(self.state)
            except AssertionError as exc:
                detail = f": {exc}" if str(exc) else ""
                self.fail(
                    f"invariant {name}",
                    f"invariant {name} failed on {self.state!r}{detail}",
                    given,
                    exc,
                )
            except Exception as exc:
                self.fail(
                    f"invariant {name}",
                    f"invariant {name} raised {type(exc).__name__} on {self.state!r}: {exc}",
                    given,
                    exc,
                )
            if result is not None and not result:
                self.fail(f"invariant {name}", f"invariant {name} failed on {self.state!r}", given)


def step(self: AggregateMachine, data: st.DataObject) -> None:
    """Run one command the state admits, with drawn arguments."""
    __tracebackhide__ = True
    usable = [name for name, admits in self.admits.items() if admits(self.state)]
    if not usable:
        return
    name = data.draw(st.sampled_from(usable), label="command")
    context = self.contexts[name]
    # the choices alone are drawn (the story shows the arguments), not a strategy per state
    args = context.resolve(data.draw(context.choices, label=f"arguments of {name}"), self.state)
    self.run_command(name, self.aggregate.commands[name], args)


# One rule that draws among the commands the state admits, not a rule per
# command with a precondition: Hypothesis retries its draw of a rule, and gives
# up on whole runs, when the rules it chose admit no state, and fills
# --hypothesis-show-statistics with those retries.
_STEP = rule(data=st.data())(step)


def machine_for(
    aggregate: Aggregate[Any],
    invariants: Sequence[Invariant] = (),
    *,
    args: Mapping[str, st.SearchStrategy[tuple[Any, ...]]] | None = None,
    overrides: Overrides | None = None,
    roundtrip: Callable[[object], object] | None = None,
    state_roundtrip: Callable[[object], object] | None = None,
    snapshots: bool = True,
    budget: float | None = DEFAULT_BUDGET,
    terminal: Sequence[type] = (),
    rare: Rare | None = None,
) -> type[AggregateMachine]:
    """A ``RuleBasedStateMachine`` class running ``aggregate``'s commands.

    Each step runs one of the commands whose annotated state parameter
    admits the current state; its arguments come from ``args`` (a tuple
    strategy per command name) or from its annotations (with
    ``overrides``).  Use ``machine_for(...).TestCase`` to collect it with
    pytest or unittest, or :func:`check_aggregate` to run it at once.
    Each command outcome and event type is told to Hypothesis's statistics
    (``pytest --hypothesis-show-statistics``) and counted in ``tally``; a
    command slower than ``budget`` seconds, twice, fails.  The ``TestCase``
    fails for vacuity as :func:`check_aggregate` does: a command never
    accepted, or an event type never produced, unless named in ``rare``.
    ``roundtrip`` and ``state_roundtrip`` are :func:`check_aggregate`'s.
    """
    check_commands(aggregate, "run")
    table = argument_strategies(aggregate, args, overrides)
    tally = Tally(aggregate, rare)  # refuses unknown names in rare= now
    namespace: dict[str, Any] = {
        "aggregate": aggregate,
        "user_invariants": tuple(invariants),
        "roundtrips": () if roundtrip is None else (roundtrip,),
        "state_roundtrips": () if state_roundtrip is None else (state_roundtrip,),
        "snapshots": snapshots,
        "budget": check_budget(budget),
        "terminal": tuple(terminal),
        "tally": tally,
        "rare": dict(tally.rare),
        "arguments": dict(table),
        "contexts": argument_contexts(aggregate, args, overrides),
        "admits": {name: state_filter(command) for name, command in aggregate.commands.items()},
        "step": _STEP,
        "__doc__": f"Random commands of aggregate {aggregate.name!r}.",
    }
    title = re.sub(r"\W", "_", aggregate.name.title()) or "Aggregate"
    return type(f"{title}Machine", (AggregateMachine,), namespace)


def _replay(
    machine: type[AggregateMachine], calls: Sequence[tuple[str, Command, tuple[Any, ...]]]
) -> _Broken | None:
    """Run ``calls`` on a fresh machine; the failure they cause, if any.

    A call whose command does not admit the state it meets makes the
    sequence invalid, as Hypothesis would never have run it: no failure.
    """
    runner = machine()
    try:
        runner.check_user_invariants()
        for name, command, args in calls:
            check = machine.admits.get(name)
            if check is not None and not check(runner.state):
                return None
            runner.run_command(name, command, args)
            runner.check_user_invariants()
    except _Broken as failure:
        return failure
    return None


def _shorten(machine: type[AggregateMachine], failure: _Broken) -> _Broken:
    """Delete commands from a failing run while it fails the same way.

    Hypothesis shrinks well, but it picks each rule among those enabled at
    that point, so deleting one command can change which later commands
    run; replaying the recorded calls directly finds the deletions it
    misses.  Chunks are tried from large to single commands.
    """
    best = failure
    size = max(1, len(best.calls) // 2)
    while size >= 1:
        start, changed = 0, False
        while start < len(best.calls):
            candidate = (*best.calls[:start], *best.calls[start + size :])
            again = _replay(machine, candidate)
            if again is not None and again.law == best.law:
                best, changed = again, True
            else:
                start += size
        if not changed:
            size //= 2
    return best


def check_aggregate(
    aggregate: Aggregate[Any],
    invariants: Sequence[Invariant] = (),
    *,
    settings: hypothesis.settings | None = None,
    args: Mapping[str, st.SearchStrategy[tuple[Any, ...]]] | None = None,
    overrides: Overrides | None = None,
    roundtrip: Callable[[object], object] | None = None,
    state_roundtrip: Callable[[object], object] | None = None,
    snapshots: bool = True,
    rare: Rare | None = None,
    budget: float | None = DEFAULT_BUDGET,
    terminal: Sequence[type] = (),
    seed: int | None = None,
) -> Counter[str]:
    """Run random command sequences on ``aggregate`` and check every step.

    A command that raises :class:`fes.Rejected` or :class:`fes.CommandError`
    leaves the state as it was; any other exception fails (a
    :class:`fes.errors.CommandMistake` too), as does a
    command or projector that mutates its input.  After every step the
    emitted events must be the aggregate's own and apply, each of
    ``invariants`` must hold (return a truthy value or None, not raise),
    a snapshot of the previous state plus the new events must fold like the
    whole history (unless ``snapshots=False``), ``roundtrip(event)``, if
    given, must equal the event, and ``state_roundtrip(state)``, if given
    (e.g. a snapshot's encoding and decoding by the edge codec), the state
    after every step.  A failure is shrunk, by Hypothesis and
    then by replaying it without some commands, and raised as an
    ``AssertionError`` whose message tells the story as given/when/then.

    A run that exercised too little fails too: every command must be
    accepted at least once and every event type of the aggregate produced,
    except those named in ``rare`` (a command name or event type, with the
    reason, e.g. ``rare={"close": "needs a zero balance"}``).  What each
    command did is told to Hypothesis's statistics and added to a failure;
    a passing run returns the counts (``"withdraw: accepted"``,
    ``"withdraw: rejected"``, ``"event Withdrawn"``, ...) as a
    :class:`collections.Counter`, and prints them at verbose verbosity.
    A command that takes longer than ``budget`` seconds on one example, twice
    in a row, fails naming it (``budget=None``: no limit).  An event that folds
    a non-initial state back to the initial value or None fails, unless its
    type is in ``terminal``: a projector that forgot a case does that.

    ``settings`` defaults to the current Hypothesis profile without a
    deadline.  One failure is reported (``report_multiple_bugs=False``) and
    Hypothesis's explain phase is skipped: it is slow on state machines and
    the message already tells what happened.  ``seed`` fixes Hypothesis's
    search, so two calls try the same runs (``derandomize=True`` in the
    settings does the same with a seed derived from the test).
    """
    __tracebackhide__ = True
    machine = machine_for(
        aggregate,
        invariants,
        args=args,
        overrides=overrides,
        roundtrip=roundtrip,
        state_roundtrip=state_roundtrip,
        snapshots=snapshots,
        budget=budget,
        terminal=terminal,
        rare=rare,
    )
    chosen = settings if settings is not None else hypothesis.settings(deadline=None)
    return _run_machine(machine, chosen, seed)


def _run_machine(
    machine: type[AggregateMachine], chosen: hypothesis.settings, seed: int | None = None
) -> Counter[str]:
    """Run ``machine`` under ``chosen``: the story of a failure, or the counts of a pass.

    One run, counted afresh: a failure is shortened and told as
    given/when/then, with what the run exercised; a run that exercised too
    little fails for vacuity.
    """
    __tracebackhide__ = True
    tally = machine.tally = Tally(machine.aggregate, machine.rare)
    tally.abort = True
    phases = [phase for phase in chosen.phases if phase is not Phase.explain]
    try:
        final = hypothesis.settings(chosen, report_multiple_bugs=False, phases=phases)
        if seed is None:
            run_state_machine_as_test(machine, settings=final)
        else:
            hypothesis.seed(seed)(get_state_machine_test(machine, settings=final))()
    except Abort as stopped:
        assert isinstance(stopped.failure, _Broken)
        raise _story(stopped.failure, tally) from None
    except _Broken as failure:
        shortest = _shorten(machine, failure)
        # the cause (a command's own exception, say) stays; Hypothesis's longer run goes
        raise _story(shortest, tally) from shortest.__cause__
    try:
        vacuous = tally.confirm(machine.contexts, 10, machine.budget)
    except Abort as stopped:
        raise AssertionError(str(stopped.failure)) from None
    if vacuous is not None:
        raise AssertionError(vacuous)
    return tally.passed(chosen)


def _story(failure: _Broken, tally: Tally) -> AssertionError:
    """The failure alone, with what the run exercised (not Hypothesis's notes).

    A plain AssertionError: the report says it all, the private class would not.
    """
    story = AssertionError(str(failure))
    story.add_note(tally.summary())
    return story
