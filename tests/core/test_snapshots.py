"""Snapshots: restoring equals folding, and a fingerprint guards against stale definitions."""

from __future__ import annotations

import enum
import functools
import os
import subprocess
import sys
from decimal import Decimal
from typing import Any, Literal

import attrs
import pytest
from attrs import evolve, frozen
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import pmap, pset

import fes
from fes.examples import bank, dogs

from .domains import Incremented, counter, domain_histories, trick_count


@given(domain_histories())
def test_restore_from_any_split_point_equals_the_full_fold(drawn: Any) -> None:
    """For every k, restore(take(state after k), events after k) == fold(all events)."""
    aggregate, history = drawn
    for subject in (aggregate, fes.combine(aggregate, fes.neutral)):
        expected = subject.fold(history)
        for k in range(len(history) + 1):
            snapshot = fes.take(subject, "s-1", k, subject.fold(history[:k]))
            assert fes.restore(subject, snapshot, history[k:]) == expected


@given(st.lists(st.sampled_from(["sit", "beg", "roll"]), max_size=6), st.integers(0, 7))
def test_restore_of_a_combination_sharing_events(tricks: list[str], k: int) -> None:
    """A snapshot of dogs+trick_count restores to the full fold at any split point."""
    school = fes.combine(dogs.dogs, trick_count)
    history = [dogs.Registered("Fido"), *map(dogs.TrickAdded, tricks)]
    k = min(k, len(history))
    snapshot = fes.take(school, "s-1", k, school.fold(history[:k]))
    assert fes.restore(school, snapshot, history[k:]) == school.fold(history)


def test_take_records_stream_version_state_and_fingerprint() -> None:
    """A snapshot carries what it was taken of, under the aggregate's fingerprint."""
    snap = fes.take(counter, "c-1", 4, 10)
    assert snap == fes.Snapshot("c-1", 4, 10, fes.fingerprint(counter))


def test_restore_without_a_snapshot_folds_the_events_given() -> None:
    """No snapshot: the events given are the whole history."""
    assert fes.restore(counter, None, [Incremented(2), Incremented(3)]) == 5


def test_a_snapshot_with_a_wrong_fingerprint_is_not_used() -> None:
    """A stale snapshot is ignored: the state is folded from full_history() instead."""
    history = [Incremented(1), Incremented(2), Incremented(3)]
    stale = fes.Snapshot("c-1", 2, 1000, "not-this-definition")
    calls: list[int] = []

    def full_history() -> list[Any]:
        calls.append(1)
        return history

    assert fes.restore(counter, stale, history[2:], full_history=full_history) == 6
    assert calls == [1]


def test_a_usable_snapshot_never_reads_the_full_history() -> None:
    """A matching snapshot is used, and full_history is not called."""

    def full_history() -> list[Any]:
        raise AssertionError("full history read although the snapshot fits")

    snap = fes.take(counter, "c-1", 2, 1000)
    assert fes.restore(counter, snap, [Incremented(1)], full_history=full_history) == 1001


def test_a_stale_snapshot_without_full_history_folds_the_later_events_alone() -> None:
    """Without full_history, a stale snapshot's later events are folded from the initial state."""
    stale = fes.Snapshot("c-1", 2, 1000, "stale")
    assert fes.restore(counter, stale, [Incremented(1)]) == 1


def test_a_snapshot_of_a_none_state_is_restored_as_none() -> None:
    """A snapshot whose state is None (the counter was cleared) restores from None, not 0."""
    snap = fes.take(counter, "c-1", 3, None)
    assert fes.restore(counter, snap, []) is None


# --- fingerprints ----------------------------------------------------------


@frozen
class Added:
    """A number was added."""

    n: int


def _counter_v1() -> fes.Aggregate[int]:
    def added(total: int, event: Added) -> int:
        return total + event.n

    return fes.Aggregate("adder", 0, fes.projector(added), events=[Added])


def _counter_v1_again() -> fes.Aggregate[int]:
    def added(total: int, event: Added) -> int:
        return total + event.n

    return fes.Aggregate("adder", 0, fes.projector(added), events=[Added])


def _counter_v2() -> fes.Aggregate[int]:
    def added(total: int, event: Added) -> int:
        return total + 2 * event.n

    return fes.Aggregate("adder", 0, fes.projector(added), events=[Added])


def _counter_with_step(step: int) -> fes.Aggregate[int]:
    def added(total: int, event: Added) -> int:
        return total + step * event.n

    return fes.Aggregate("adder", 0, fes.projector(added), events=[Added])


def test_fingerprint_is_stable_for_equal_definitions() -> None:
    """Two separately built but identical definitions have one fingerprint, a hex digest."""
    first = fes.fingerprint(_counter_v1())
    assert first == fes.fingerprint(_counter_v1())
    assert first == fes.fingerprint(_counter_v1_again())
    assert len(first) == 32
    int(first, 16)
    assert fes.fingerprint(dogs.dogs) == fes.fingerprint(dogs.dogs)


def test_fingerprint_changes_when_the_projector_code_changes() -> None:
    """Changing what a handler computes changes the fingerprint."""
    assert fes.fingerprint(_counter_v1()) != fes.fingerprint(_counter_v2())


def test_fingerprint_changes_with_a_closed_over_value() -> None:
    """A handler closing over a setting fingerprints the setting's value too."""
    assert fes.fingerprint(_counter_with_step(1)) != fes.fingerprint(_counter_with_step(2))
    assert fes.fingerprint(_counter_with_step(3)) == fes.fingerprint(_counter_with_step(3))


def _shaped(*fields: str, version: int = 1) -> type:
    cls = attrs.make_class("Shaped", {f: attrs.field() for f in fields}, frozen=True)
    if version > 1:
        cls = fes.event(upcasters=[lambda d: d] * (version - 1))(cls)
    return cls


def _over(kind: type) -> fes.Aggregate[int]:
    return fes.Aggregate("shaped", 0, fes.projector((kind, _count)), events=[kind])


def _count(total: int, event: Any) -> int:
    return total + 1


def test_fingerprint_changes_when_an_events_fields_change() -> None:
    """Adding or renaming a field of an owned event type changes the fingerprint."""
    base = fes.fingerprint(_over(_shaped("a")))
    assert base == fes.fingerprint(_over(_shaped("a")))
    assert base != fes.fingerprint(_over(_shaped("a", "b")))
    assert base != fes.fingerprint(_over(_shaped("b")))


def test_fingerprint_changes_with_an_events_schema_version() -> None:
    """Bumping an owned event's schema version changes the fingerprint."""
    assert fes.fingerprint(_over(_shaped("a"))) != fes.fingerprint(_over(_shaped("a", version=2)))


def test_fingerprint_changes_with_snapshot_version() -> None:
    """Bumping snapshot_version changes the fingerprint, also of a part inside a combination."""
    bumped = evolve(counter, snapshot_version=2)
    assert fes.fingerprint(counter) != fes.fingerprint(bumped)
    renumbered = evolve(trick_count, snapshot_version=0)
    before = fes.combine(counter, trick_count)
    after = fes.combine(bumped, renumbered)
    assert before.snapshot_version == after.snapshot_version
    assert fes.fingerprint(before) != fes.fingerprint(after)


def test_fingerprint_changes_with_name_and_state_type() -> None:
    """The aggregate's name and the type of its initial state are part of the fingerprint."""
    assert fes.fingerprint(counter) != fes.fingerprint(evolve(counter, name="other"))
    assert fes.fingerprint(counter) != fes.fingerprint(evolve(counter, initial=None))


def test_fingerprint_ignores_commands() -> None:
    """Commands do not change a stored state's meaning, so they do not change the fingerprint."""
    assert fes.fingerprint(bank.accounts) == fes.fingerprint(evolve(bank.accounts, commands={}))


class _Projector:
    """A hand-written projector object."""

    def __init__(self, step: int) -> None:
        self.step = step

    def __call__(self, total: int, event: Any) -> int:
        return total + self.step

    def method(self, total: int, event: Any) -> int:
        return total + self.step


def test_fingerprint_of_other_projector_shapes() -> None:
    """Bound methods, callable objects, partials and builtins all fingerprint without error."""
    shapes: list[Any] = [
        _Projector(1).method,
        _Projector(1),
        functools.partial(_count),
        max,
        fes.map_state(counter, str, int).apply,
    ]
    prints = {
        fes.fingerprint(fes.Aggregate("x", 0, shape, events=[Added])) for shape in shapes
    }
    assert len(prints) == len(shapes)


def test_fingerprint_sees_through_the_combinators() -> None:
    """A change of a part's projector changes the fingerprint of map_state, adapt and combine."""
    old, new = _counter_v1(), _counter_v2()
    for wrap in (
        lambda a: fes.combine(a, counter),
        lambda a: fes.map_state(a, str, int),
        lambda a: fes.adapt(a, inward=lambda e: e, outward=lambda e: e, events=[Added]),
    ):
        assert fes.fingerprint(wrap(old)) != fes.fingerprint(wrap(new))
        assert fes.fingerprint(wrap(old)) == fes.fingerprint(wrap(_counter_v1()))


def test_fingerprint_handles_empty_closure_cells_and_recursion() -> None:
    """A handler referring to itself or to a not-yet-bound name fingerprints without error."""

    def make() -> Any:
        def handler(total: int, event: Any) -> int:
            return handler(total, event) if later else total

        first = fes.fingerprint(fes.Aggregate("r", 0, handler))
        later = True
        return first, fes.fingerprint(fes.Aggregate("r", 0, handler))

    before, after = make()
    assert before != after


def test_fingerprint_reads_nested_functions_in_constants() -> None:
    """Code nested inside a handler (a lambda, a comprehension) is part of the fingerprint."""

    def one(total: int, event: Any) -> int:
        return sum(x for x in (total, 1))

    def two(total: int, event: Any) -> int:
        return sum(x for x in (total, 2))

    assert fes.fingerprint(fes.Aggregate("n", 0, one)) != fes.fingerprint(
        fes.Aggregate("n", 0, two)
    )


@pytest.mark.parametrize("value", [None, "a", b"b", 1, 1.5, 2j])
def test_fingerprint_counts_each_closed_over_plain_value(value: Any) -> None:
    """Repeated equal plain values are each counted: (1, 1, 2) differs from (1, 2, 2)."""

    def with_values(*values: Any) -> fes.Aggregate[int]:
        def handler(total: int, event: Any) -> int:
            return total + len(values)

        return fes.Aggregate("v", 0, handler)

    assert fes.fingerprint(with_values(value, value, 0)) != fes.fingerprint(
        with_values(value, 0, 0)
    )


def test_fingerprint_skips_closed_over_objects_it_cannot_read() -> None:
    """A closed-over object that is neither code nor a plain value is skipped, stably."""

    def with_object(thing: object) -> fes.Aggregate[int]:
        def handler(total: int, event: Any) -> int:
            return total if thing else total + 1

        return fes.Aggregate("o", 0, handler)

    assert fes.fingerprint(with_object(frozenset({1}))) == fes.fingerprint(
        with_object(frozenset({2}))
    )


# --- what else a state's meaning depends on --------------------------------------


def test_fingerprint_changes_with_the_initial_state() -> None:
    """Folding the same events onto another initial state gives other states."""
    assert fes.fingerprint(_counter_v1()) != fes.fingerprint(evolve(_counter_v1(), initial=100))
    assert fes.fingerprint(evolve(_counter_v1(), initial=100)) == fes.fingerprint(
        evolve(_counter_v1_again(), initial=100)
    )


def _balance_class(unit: str) -> type:
    return attrs.make_class(
        "Balance", {"amount": attrs.field(type=int), "unit": attrs.field(type=str, default=unit)},
        frozen=True,
    )


def _over_balance(kind: type) -> fes.Aggregate[Any]:
    def added(balance: Any, event: Added) -> Any:
        return kind(balance.amount + event.n)

    added.__annotations__ = {"balance": kind, "event": Added, "return": kind}
    return fes.Aggregate("balance", kind(0), fes.projector(added), events=[Added])


def test_fingerprint_changes_with_a_state_class_default() -> None:
    """A default of the state class the handlers return is part of what a state means."""
    euro = fes.fingerprint(_over_balance(_balance_class("EUR")))
    assert euro == fes.fingerprint(_over_balance(_balance_class("EUR")))
    assert euro != fes.fingerprint(_over_balance(_balance_class("USD")))


def _upcast_by(step: int) -> Any:
    def upgrade(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "n": data["n"] * step}

    return upgrade


def test_fingerprint_changes_with_an_upcasters_code() -> None:
    """Fixing an upcaster changes what old events fold to, so old snapshots are not trusted."""

    def over(step: int) -> fes.Aggregate[int]:
        kind = fes.event("added", upcasters=[_upcast_by(step)])(
            attrs.make_class("Added", {"n": attrs.field(type=int)}, frozen=True)
        )
        return fes.Aggregate("upcast", 0, fes.projector((kind, _count)), events=[kind])

    assert fes.fingerprint(over(2)) == fes.fingerprint(over(2))
    assert fes.fingerprint(over(2)) != fes.fingerprint(over(3))


def test_fingerprint_is_the_same_in_every_process() -> None:
    """An initial state holding sets and maps of strings (hash-ordered) fingerprints alike."""
    script = (
        "import fes; from pyrsistent import pmap, pset\n"
        "def added(state: object, event: object) -> object: return state\n"
        "initial = (pmap({'alpha': 1, 'beta': 2, 'gamma': 3}), pset(['x', 'y', 'z', 'w']))\n"
        "print(fes.fingerprint(fes.Aggregate('maps', initial, added)))\n"
    )
    prints = {
        subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True, text=True, check=True,
        ).stdout
        for seed in range(4)
    }
    assert len(prints) == 1 and len(prints.pop().strip()) == 32


class _Mode(enum.Enum):
    ON = 1
    OFF = 2


@frozen
class _Settings:
    mode: _Mode = _Mode.ON
    names: Any = attrs.field(factory=list)


def test_fingerprint_reads_initial_states_of_every_shape() -> None:
    """Enums, maps, sets, sequences, attrs values and opaque objects all fingerprint by value."""

    def over(initial: object) -> str:
        return fes.fingerprint(fes.Aggregate("shapes", initial, _count))

    initials: list[object] = [
        _Mode.ON,
        _Mode.OFF,
        pmap({"a": 1, "b": 2}),
        pmap({"a": 1, "b": 3}),
        pset(["x", "y"]),
        frozenset({"x", "z"}),
        (1, [2, "3"]),
        _Settings(),
        _Settings(_Mode.OFF),
        Decimal("1.5"),
        max,
    ]
    prints = [over(initial) for initial in initials]
    assert prints == [over(initial) for initial in initials]
    assert len(set(prints)) == len(initials)
    assert over(pmap({"b": 2, "a": 1})) == prints[2]
    # an object shown with its address is fingerprinted by its type alone
    assert over(object()) == over(object())


def test_fingerprint_of_a_handler_annotated_with_a_name_that_does_not_resolve() -> None:
    """An annotation naming what is not defined (yet) is fingerprinted by its text."""

    def handler(total: Missing, event: Any) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 0

    def other(total: Absent, event: Any) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 0

    first = fes.fingerprint(fes.Aggregate("u", 0, handler))
    assert first == fes.fingerprint(fes.Aggregate("u", 0, handler))
    assert first != fes.fingerprint(fes.Aggregate("u", 0, other))


def _noted(first: Any, second: Any) -> fes.Aggregate[int]:
    """A counter whose two helpers are annotated with ``first`` and ``second``."""

    def left(total: int) -> int:
        return total

    def right(total: int) -> int:
        return total

    left.__annotations__ = {"total": first, "return": int}
    right.__annotations__ = {"total": second, "return": int}

    def apply(total: int, event: Any) -> int:
        return right(left(total)) + 1

    return fes.Aggregate("noted", 0, apply)


def test_fingerprint_does_not_depend_on_whether_equal_annotations_are_one_object() -> None:
    """Two helpers annotated alike digest alike, sharing one annotation object or not.

    Whether two equal annotations are one object is an accident of memory and
    caches: typing keeps its last 128 ``Literal[...]`` in a cache, and
    ``get_type_hints`` builds ``Mapping[str, Any]`` afresh for each function,
    maybe where a freed one lay.  The meter of tests/testing/test_upcasting.py
    once fingerprinted differently twice in one process, so its snapshot was
    ignored.
    """
    units = Literal["kWh", "Wh"]
    for n in range(200):  # push it out of typing's cache
        Literal[n]
    again = Literal["kWh", "Wh"]
    assert again == units and again is not units  # two equal annotation objects
    shared = fes.fingerprint(_noted(units, units))
    assert shared == fes.fingerprint(_noted(units, again))
    assert shared != fes.fingerprint(_noted(units, Literal["kWh", "MWh"]))
