"""Laws every fes domain must obey, written once and checked on any aggregate.

Each law is a plain function that raises ``AssertionError`` with a readable
message when the values it is given break it, so it can be called from any
test.  :func:`check_laws` draws those values with Hypothesis from an
aggregate's own commands and checks every law on them::

    def test_bank_laws() -> None:
        check_laws(accounts, views=[balances], roundtrip=codec_roundtrip)

The laws: the projector and the commands are deterministic and never
mutate their inputs; every event a command emits applies; folding from a
snapshot equals folding the whole history; :data:`fes.neutral` is an
identity and :func:`fes.combine` is associative on the user's aggregates; a
view folded in pieces equals the view rebuilt from scratch; and, given a
``roundtrip`` function (for example through the edge codec), every event
comes back equal.  :func:`upcasters_fold`, checked on its own, runs every
event type's upcasters on payloads in each older stored shape.  Requires
Hypothesis (``pip install fes-events[testing]``).
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import hypothesis
from attrs import frozen
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st

from fes.aggregates import Aggregate, Command, combine, neutral
from fes.events import Recorded
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
from fes.testing._upcasting import upcast_folds, upcasters_fold
from fes.testing.specs import _lost as lost
from fes.testing.strategies import (
    NotEvents,
    Overrides,
    StepResult,
    _histories,
    _pristine,
    argument_contexts,
    histories,
    run_step,
    state_filter,
)
from fes.testing.strategies import (
    _callable_name as _name,
)
from fes.views import View

__all__ = [
    "Outcome",
    "check_laws",
    "codec_roundtrips",
    "combine_is_associative",
    "command_is_pure",
    "emitted_events_apply",
    "fingerprint_is_stable",
    "neutral_is_identity",
    "outcome",
    "projector_is_pure",
    "projector_keeps_state",
    "recorded_history",
    "snapshot_equals_fold",
    "upcast_folds",
    "upcasters_fold",
    "view_rebuild_equals_incremental",
]

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_STREAM = "law"


def _call(command: Command, args: tuple[Any, ...]) -> str:
    return f"{_name(command)}({', '.join(map(repr, args))})"



def _hash(value: Any) -> int | None:
    try:
        return hash(value)
    except TypeError:
        return None


def _unchanged(what: str, value: Any, pristine: tuple[bool, Any], hashed: int | None) -> None:
    __tracebackhide__ = True
    comparable, duplicate = pristine
    if comparable and value != duplicate:
        raise AssertionError(f"{what} mutated its input: {duplicate!r} became {value!r}")
    if hashed is not None and _hash(value) != hashed:
        raise AssertionError(f"{what} mutated its input: the hash of {value!r} changed")


@frozen
class Outcome:
    """What a command did: the events it emitted, or the refusal it raised."""

    events: tuple[Any, ...] = ()
    refused: str | None = None


def _bug(command: Command, state: Any, args: tuple[Any, ...], exc: Exception) -> AssertionError:
    """The failure of a command that raised (not a refusal) or returned no events."""
    if isinstance(exc, NotEvents):
        return AssertionError(
            f"command {_call(command, args)} did not return a sequence of events: {exc}\n"
            f"  on the state {state!r}\n"
            "  (return a list, [event], even for one event)"
        )
    return AssertionError(
        f"command {_call(command, args)} raised {type(exc).__name__}: {exc}\n"
        f"  on the state {state!r}\n"
        "  (only fes.Rejected and fes.errors.CommandError raised by a command are "
        "refusals, a CommandMistake not)"
    )


def outcome(command: Command, state: Any, args: tuple[Any, ...]) -> Outcome:
    """Run a command; a refusal becomes a value, any other exception an AssertionError."""
    __tracebackhide__ = True
    try:
        step = run_step(command, state, args)
    except Exception as exc:
        raise _bug(command, state, args, exc) from exc
    if step.refused is not None:
        return Outcome(refused=f"{type(step.refused).__name__}: {step.refused}")
    return Outcome(events=step.events)


# --- laws of one aggregate -----------------------------------------------------


def projector_is_pure(aggregate: Aggregate[Any], state: Any, event: Any) -> None:
    """Applying ``event`` to ``state`` twice gives equal states and changes neither."""
    __tracebackhide__ = True
    what = f"the projector of {aggregate.name!r} applying {event!r} to {state!r}"
    pristine = _pristine((state, event))
    hashed = _hash((state, event))
    try:
        first = aggregate.evolve(state, event)
        second = aggregate.evolve(state, event)
    except Exception as exc:
        raise AssertionError(f"{what} raised {type(exc).__name__}: {exc}") from exc
    _unchanged(what, (state, event), pristine, hashed)
    comparable, _ = _pristine(first)
    if comparable and first != second:
        raise AssertionError(f"{what} is not deterministic: it gave {first!r}, then {second!r}")


def projector_keeps_state(
    aggregate: Aggregate[Any], state: Any, event: Any, terminal: Sequence[type] = ()
) -> None:
    """Applying ``event`` to a state other than the initial one never loses it.

    Lost means folded to None, or to the very initial state object (when it
    is an attrs instance): a hand-written ``match`` projector that forgets a
    case falls through to None (or a catch-all returns the initial state),
    and the aggregate starts over as if nothing had happened.  A new state
    merely *equal* to the initial one (a room whose one stay was cancelled,
    a counter back at 0) is not lost.  An event that really ends the
    aggregate, resetting it, is declared in ``terminal``.
    """
    __tracebackhide__ = True
    if isinstance(event, tuple(terminal)):
        return
    try:
        after = aggregate.evolve(state, event)
    except Exception as exc:
        raise AssertionError(
            f"the projector of {aggregate.name!r} raised {type(exc).__name__} applying "
            f"{event!r} to {state!r}: {exc}"
        ) from exc
    if lost(state, after, aggregate.initial):
        raise AssertionError(
            f"projector law of {aggregate.name!r}: applying {event!r} to {state!r} gave "
            f"back {after!r}, where the aggregate starts: the state was lost\n"
            "  (a match projector without a case for this event does this; fes.projector "
            "refuses an event it has no case for)\n"
            f"  if {type(event).__qualname__} really ends the aggregate, declare it with "
            f"terminal=[{type(event).__qualname__}]"
        )


#: The two seeds of :mod:`random` the purity law runs a command under, chosen
#: so that the first coin toss (``random.random() < 0.5``, ``getrandbits(1)``,
#: ``choice`` of two) comes out differently under each.
_PURITY_SEEDS = (0x5EED, 0xD1CE)

#: How many more seeds, from ``also`` on, the purity law tries when the first two agree.
_MORE_SEEDS = 4


def _outcome_seeded(seed: int, command: Command, state: Any, args: tuple[Any, ...]) -> Outcome:
    """:func:`outcome` with :mod:`random` seeded by ``seed``, its state restored after."""
    __tracebackhide__ = True
    saved = random.getstate()
    random.seed(seed)
    try:
        return outcome(command, state, args)
    finally:
        random.setstate(saved)


def command_is_pure(
    aggregate: Aggregate[Any],
    command: Command,
    state: Any,
    args: tuple[Any, ...],
    also: int | None = None,
) -> Outcome:
    """Running ``command`` twice does the same and changes neither state nor arguments.

    The two runs see :mod:`random` seeded differently (its state is restored
    afterwards), so a command that draws from ``random`` is caught even
    though Hypothesis seeds ``random`` the same way for every example.  The
    two seeds are fixed, chosen so that a fair coin toss differs; ``also``
    runs it again under that seed and the next three (:func:`check_laws` takes one per
    example, from the state and arguments), so that a biased coin
    (``random.random() < 0.1``) is caught over many examples too.  A
    command calling ``uuid.uuid4()`` (from ``os.urandom``) or reading the
    clock with sub-second precision (``time.time()``, ``datetime.now()``)
    differs between the two runs anyway; the clock read at a coarse grain
    (``date.today()``) is not caught.
    """
    __tracebackhide__ = True
    what = f"command {_call(command, args)} of {aggregate.name!r} on {state!r}"
    pristine = _pristine((state, args))
    hashed = _hash((state, args))
    first = _outcome_seeded(_PURITY_SEEDS[0], command, state, args)
    _unchanged(what, (state, args), pristine, hashed)
    second = _outcome_seeded(_PURITY_SEEDS[1], command, state, args)
    comparable, _ = _pristine(first)
    extra = () if also is None else range(also, also + _MORE_SEEDS)
    for more in extra:
        if not comparable or first != second:
            break
        second = _outcome_seeded(more, command, state, args)
    if comparable and first != second:
        raise AssertionError(
            f"purity law of {aggregate.name!r}: {what} is not deterministic: "
            f"it did {first}, then {second}\n"
            "  (a command must not read random, uuid4 or the clock: take such values "
            "as arguments)"
        )
    return first


def emitted_events_apply(
    aggregate: Aggregate[Any], command: Command, state: Any, args: tuple[Any, ...]
) -> Any:
    """The events ``command`` emits are the aggregate's own and fold onto ``state``.

    Returns the state after them (``state`` itself after a refusal).
    """
    __tracebackhide__ = True
    done = outcome(command, state, args)
    what = f"command {_call(command, args)} of {aggregate.name!r} on {state!r}"
    for item in done.events:
        if aggregate.events and not aggregate.owns(item):
            raise AssertionError(f"{what} emitted {item!r}, which the aggregate does not own")
    try:
        return aggregate.fold(done.events, state)
    except Exception as exc:
        raise AssertionError(
            f"{what} emitted events that do not apply: {list(done.events)!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def fingerprint_is_stable(
    aggregate: Aggregate[Any], first: Sequence[bytes], again: Sequence[bytes]
) -> str:
    """The fingerprint of ``first``, the parts a snapshot's writer computed, if a reader
    computing them ``again`` (later, after the projector ran) finds the same.

    A fingerprint that changes between two computations in one process would
    make every snapshot ignored, so it is a law of its own: the
    ``AssertionError`` names the part that differs.  The parts are those of
    :func:`fes.snapshots.fingerprint_parts`.
    """
    __tracebackhide__ = True
    if again != first:
        index = next(
            (i for i, (a, b) in enumerate(zip(first, again, strict=False)) if a != b),
            min(len(first), len(again)),
        )
        raise AssertionError(
            f"fingerprint law of {aggregate.name!r}: its fingerprint changed between two "
            f"computations in one process, so snapshots would be ignored; part {index} was "
            f"{first[index:index + 1]!r}, then {again[index:index + 1]!r}"
        )
    return digest_parts(list(first))


def snapshot_equals_fold(aggregate: Aggregate[Any], history: Sequence[Any], at: int) -> None:
    """A snapshot taken after ``history[:at]`` plus the rest folds like all of it."""
    __tracebackhide__ = True
    # the digest is computed twice, as a snapshot's writer and its reader do
    first = fingerprint_parts(aggregate)
    snapshot = take(aggregate, _STREAM, at, aggregate.fold(history[:at]),
                    digest=digest_parts(first))
    digest = fingerprint_is_stable(aggregate, first, fingerprint_parts(aggregate))
    resumed = restore(aggregate, snapshot, history[at:], digest=digest)
    folded = aggregate.fold(history)
    if resumed != folded:
        raise AssertionError(
            f"snapshot law of {aggregate.name!r}: a snapshot at version {at} plus the later "
            f"events gave {resumed!r}, but folding the whole history gave {folded!r}\n"
            f"  history: {list(history)!r}"
        )


def codec_roundtrips(event: Any, roundtrip: Callable[[object], object]) -> None:
    """``roundtrip(event)`` (e.g. encode then decode) gives back an equal event."""
    __tracebackhide__ = True
    try:
        back = roundtrip(event)
    except Exception as exc:
        raise AssertionError(
            f"codec round trip of {event!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    if type(back) is not type(event) or back != event:
        raise AssertionError(f"codec round trip: {event!r} came back as {back!r}")


# --- laws of composition ---------------------------------------------------------


def _fold(law: str, aggregate: Aggregate[Any], history: Sequence[Any]) -> Any:
    __tracebackhide__ = True
    try:
        return aggregate.fold(history)
    except Exception as exc:
        raise AssertionError(
            f"{law}: {aggregate.name!r} could not fold the history: "
            f"{type(exc).__name__}: {exc}\n  history: {list(history)!r}\n"
            "  (does every part list all the event types it folds in events=[...]?)"
        ) from exc


def _same_outcome(
    law: str, expected: Outcome, combined: Aggregate[Any], key: str, state: Any,
    args: tuple[Any, ...],
) -> None:
    __tracebackhide__ = True
    got = outcome(combined.commands[key], state, args)
    if expected.refused is not None:
        if got.refused is None:
            raise AssertionError(
                f"{law}: {key}{args!r} emitted {list(got.events)!r} in {combined.name!r} "
                f"but was refused alone ({expected.refused})"
            )
    elif got != expected:
        raise AssertionError(
            f"{law}: {key}{args!r} did {got} in {combined.name!r} but {expected} alone"
        )


def neutral_is_identity(
    aggregate: Aggregate[Any],
    history: Sequence[Any],
    step: tuple[str, tuple[Any, ...]] | None = None,
) -> None:
    """Combining with :data:`fes.neutral` (either side) changes nothing but the shape.

    ``combine(neutral, a)`` folds ``history`` to ``((), s)``, ``combine(a,
    neutral)`` to ``(s, ())`` and ``combine(a)`` to ``(s,)``, where ``s`` is
    what ``a`` folds it to; ``step``, a command name and arguments, emits
    the same events in all of them.
    """
    __tracebackhide__ = True
    law = f"identity law of {aggregate.name!r}"
    state = _fold(law, aggregate, history)
    shapes: list[tuple[Aggregate[Any], Any]] = [
        (combine(neutral, aggregate), ((), state)),
        (combine(aggregate, neutral), (state, ())),
        (combine(aggregate), (state,)),
    ]
    for combined, expected in shapes:
        got = _fold(law, combined, history)
        if got != expected:
            raise AssertionError(
                f"{law}: {combined.name!r} folded the history to {got!r}, expected "
                f"{expected!r}\n  history: {list(history)!r}"
            )
    if step is not None:
        name, args = step
        alone = outcome(aggregate.commands[name], state, args)
        for combined, combined_state in shapes:
            _same_outcome(law, alone, combined, f"{aggregate.name}.{name}", combined_state, args)


def combine_is_associative(
    a: Aggregate[Any], b: Aggregate[Any], c: Aggregate[Any], history: Sequence[Any]
) -> None:
    """``combine(combine(a, b), c)`` and ``combine(a, combine(b, c))`` agree.

    Both fold ``history`` to the same states, regrouped, as ``combine(a, b,
    c)`` and as each part folding the events it owns.
    """
    __tracebackhide__ = True
    law = f"associativity law of {a.name!r}, {b.name!r}, {c.name!r}"
    (la, lb), lc = _fold(law, combine(combine(a, b), c), history)
    ra, (rb, rc) = _fold(law, combine(a, combine(b, c)), history)
    fa, fb, fc = _fold(law, combine(a, b, c), history)
    alone = tuple(_fold(law, p, [e for e in history if p.owns(e)]) for p in (a, b, c))
    if not (la, lb, lc) == (ra, rb, rc) == (fa, fb, fc) == alone:
        raise AssertionError(
            f"{law}: "
            f"((a, b), c) gave {((la, lb), lc)!r}, (a, (b, c)) gave {(ra, (rb, rc))!r}, "
            f"(a, b, c) gave {(fa, fb, fc)!r}, the parts alone {alone!r}\n"
            f"  history: {list(history)!r}"
        )


# --- views -----------------------------------------------------------------------


def recorded_history(
    aggregate: Aggregate[Any], streams: Sequence[Sequence[Any]], order: Sequence[int]
) -> list[Recorded[Any]]:
    """Record several streams' events in one log, interleaved by ``order``.

    ``order`` lists stream indexes, one per event, saying whose next event
    comes next; positions count from 1 and timestamps are a second apart.
    """
    cursors = [0] * len(streams)
    records: list[Recorded[Any]] = []
    for index in order:
        item = streams[index][cursors[index]]
        cursors[index] += 1
        position = len(records) + 1
        records.append(
            Recorded(
                item,
                stream=f"{aggregate.name}-{index + 1}",
                version=cursors[index],
                position=position,
                timestamp=_EPOCH + timedelta(seconds=position),
                topic=aggregate.topic_of(type(item)),
            )
        )
    return records


def view_rebuild_equals_incremental(
    view: View[Any], records: Sequence[Recorded[Any]], cuts: Sequence[int]
) -> None:
    """Folding ``records`` in pieces (split at ``cuts``) equals rebuilding from scratch.

    The view must not mutate its states either: a view that appends to its
    initial list would change every later rebuild.
    """
    __tracebackhide__ = True
    law = f"view law of {view.name!r}"
    pristine = _pristine(view.initial)
    try:
        rebuilt = view.fold(records)
        _unchanged(f"{law}: the view", view.initial, pristine, None)
        remembered = _pristine(rebuilt)
        state = view.initial
        bounds = [0, *sorted(cuts), len(records)]
        for start, stop in itertools.pairwise(bounds):
            state = view.fold(records[start:stop], state)
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(f"{law}: the view raised {type(exc).__name__}: {exc}") from exc
    _unchanged(f"{law}: the view", rebuilt, remembered, None)
    if state != rebuilt:
        raise AssertionError(
            f"{law}: folded in pieces at positions {sorted(cuts)} it gave "
            f"{state!r}, but rebuilt from scratch {rebuilt!r}"
        )


# --- all at once -----------------------------------------------------------------


def _interleave(
    data: st.DataObject, streams: Sequence[Sequence[Any]]
) -> tuple[list[Any], list[int]]:
    slots = [i for i, stream in enumerate(streams) for _ in stream]
    order: list[int] = data.draw(st.permutations(slots), label="interleaving")
    cursors = [0] * len(streams)
    merged: list[Any] = []
    for index in order:
        merged.append(streams[index][cursors[index]])
        cursors[index] += 1
    return merged, order


def check_laws(
    aggregate: Aggregate[Any],
    *,
    views: Sequence[View[Any]] = (),
    others: Sequence[Aggregate[Any]] = (),
    roundtrip: Callable[[object], object] | None = None,
    args: Mapping[str, st.SearchStrategy[tuple[Any, ...]]] | None = None,
    overrides: Overrides | None = None,
    settings: hypothesis.settings | None = None,
    max_commands: int = 10,
    rare: Rare | None = None,
    budget: float | None = DEFAULT_BUDGET,
    terminal: Sequence[type] = (),
    seed: int | None = None,
) -> Counter[str]:
    """Check every law on histories that ``aggregate``'s own commands produce.

    ``views`` are checked on several interleaved streams of the aggregate;
    the first two of ``others`` are composed with ``aggregate`` for the
    associativity law, on their own commands' histories interleaved
    (missing ones are renamed copies of ``aggregate``; an event of a type
    two parts own reaches both); ``roundtrip`` (e.g. encode then decode with
    the edge codec) must give every event back.  ``args`` and ``overrides``
    tune the command arguments as in :func:`fes.testing.strategies.histories`;
    the aggregate needs commands to build histories with.
    Raises the first law broken, shrunk to a small example, as an
    ``AssertionError``.  ``settings`` defaults to the current Hypothesis
    profile with no deadline; one failure is reported, without Hypothesis's
    (slow) explain phase.

    As in :func:`fes.testing.check_aggregate`, a run fails if some command
    was never accepted or some event type never produced (unless named in
    ``rare``, with the reason), what each command did is told to
    Hypothesis's statistics and added to a failure (a passing run returns
    the counts, as :func:`fes.testing.check_aggregate` does), and a command slower
    than ``budget`` seconds, twice, fails naming it.  No event folds a
    non-initial state back to the initial value or None unless its type is
    in ``terminal`` (see :func:`projector_keeps_state`).  ``seed`` fixes
    Hypothesis's search, so two calls try the same examples.
    """
    __tracebackhide__ = True
    check_commands(aggregate, "check laws with")
    contexts = argument_contexts(aggregate, args, overrides)
    admits = {name: state_filter(command) for name, command in aggregate.commands.items()}
    tally = Tally(aggregate, rare)
    limit = check_budget(budget)

    def run(name: str, command: Command, state: Any, arguments: tuple[Any, ...]) -> StepResult:
        __tracebackhide__ = True
        try:
            step = tally.run(name, command, state, arguments, limit)
        except BudgetExceeded as exc:
            raise Abort(exc) from None
        except Exception as exc:
            raise _bug(command, state, arguments, exc) from exc
        try:
            aggregate.fold(step.events, state)
        except Exception as exc:
            raise AssertionError(
                f"emitted events law of {aggregate.name!r}: command {_call(command, arguments)} "
                f"emitted {list(step.events)!r}, which do not apply to {state!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return step

    runs = _histories(aggregate, contexts, max_commands, run)
    composable = bool(aggregate.events)
    parts = [aggregate, *others]
    copy_number = 2
    while len(parts) < 3:
        parts.append(attrs.evolve(aggregate, name=f"{aggregate.name}~{copy_number}"))
        copy_number += 1
    other_runs = [
        histories(o, overrides=overrides, max_commands=max_commands) if o.commands else st.just(())
        for o in others[:2]
    ]

    def check(data: st.DataObject) -> None:
        __tracebackhide__ = True
        history = data.draw(runs, label="history")
        at = data.draw(st.integers(0, len(history)), label="snapshot at")
        if at < len(history):
            projector_is_pure(aggregate, aggregate.fold(history[:at]), history[at])
        state = aggregate.initial
        for item in history:
            projector_keeps_state(aggregate, state, item, terminal)
            state = aggregate.evolve(state, item)
        snapshot_equals_fold(aggregate, history, at)
        if roundtrip is not None:
            for item in history:
                codec_roundtrips(item, roundtrip)
        state = aggregate.fold(history)
        usable = sorted(name for name, ok in admits.items() if ok(state))
        step: tuple[str, tuple[Any, ...]] | None = None
        if usable:
            name = data.draw(st.sampled_from(usable), label="command")
            arguments = data.draw(contexts[name](state), label="arguments")
            command = aggregate.commands[name]
            run(name, command, state, arguments)
            # a third seed of random, differing from example to example (a seed drawn by
            # Hypothesis would favour a few simple values)
            seed_of_random = zlib.crc32(repr((name, state, arguments)).encode())
            command_is_pure(aggregate, command, state, arguments, seed_of_random)
            emitted_events_apply(aggregate, command, state, arguments)
            step = (name, arguments)
        if composable:
            neutral_is_identity(aggregate, history, step)
            merged, _ = _interleave(
                data, [history, *(data.draw(r, label="other history") for r in other_runs)]
            )
            combine_is_associative(parts[0], parts[1], parts[2], merged)
        if views:
            streams = [history, *data.draw(st.lists(runs, max_size=2), label="more streams")]
            _, order = _interleave(data, streams)
            records = recorded_history(aggregate, streams, order)
            cuts = data.draw(st.lists(st.integers(0, len(records)), max_size=4), label="cuts")
            for view in views:
                view_rebuild_equals_incremental(view, records, cuts)

    chosen = settings if settings is not None else hypothesis.settings(
        deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    # the explain phase is skipped: slow here, and each law's message tells what broke
    phases = [phase for phase in chosen.phases if phase is not Phase.explain]
    test = given(st.data())(check)
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    try:
        hypothesis.settings(chosen, report_multiple_bugs=False, phases=phases)(test)()
    except Abort as stopped:
        failure = AssertionError(f"time budget of {aggregate.name!r}: {stopped.failure}")
        failure.add_note(tally.summary())
        raise failure from None
    except AssertionError as exc:
        # Hypothesis names the inner test "check(data=...)": only its draws say anything
        notes = getattr(exc, "__notes__", [])
        notes[:] = [n for n in notes if not n.startswith(("Failing test case", "Falsifying"))]
        exc.add_note(tally.summary())
        raise
    try:
        vacuous = tally.confirm(contexts, max_commands, limit)
    except Abort as stopped:
        raise AssertionError(str(stopped.failure)) from None
    if vacuous is not None:
        raise AssertionError(vacuous)
    return tally.passed(chosen)
