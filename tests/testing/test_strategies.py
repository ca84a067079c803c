"""Strategies derived from annotations: every supported type, overrides, histories."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, NewType, Optional
from uuid import UUID

import attr
import pytest
from attrs import field, frozen
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from pyrsistent import PMap, PSet, PVector, pvector

import fes
from fes.examples import bank, dogs
from fes.testing.strategies import (
    accepts_state,
    argument_strategies,
    events_of,
    histories,
    register_aggregate,
    register_types,
    run_step,
    state_filter,
    states,
    strategy_for,
)

OwnerId = NewType("OwnerId", str)


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


@frozen
class Point:
    x: int
    y: int = 0


@frozen
class Everything:
    flag: bool
    count: int
    ratio: float
    name: str
    blob: bytes
    price: Decimal
    ident: UUID
    at: datetime
    colour: Colour
    kind: Literal["a", "b"]
    maybe: Optional[int]  # noqa: UP045 - the typing spelling must be understood too
    either: int | str
    pair: tuple[int, str]
    many: tuple[int, ...]
    items: list[Point]
    vector: PVector[Point]
    table: PMap[str, int]
    bag: PSet[int]
    point: Point
    owner: OwnerId
    label: str = "none"


@frozen
class Tree:
    value: int
    children: tuple[Tree, ...] = ()


def first(strategy: st.SearchStrategy[Any], condition: Any = lambda v: True) -> Any:
    """Some drawn value that satisfies ``condition`` (found without shrinking, for speed).

    ``find`` stops at the first such value, so the budget costs nothing when
    one is found early; at Hypothesis's default of 100 tries, one search in a
    few hundred found none, and the test failed by chance.
    """
    return find(strategy, condition, settings=settings(
        phases=[Phase.generate], database=None, max_examples=2_000,
    ))


def _depth(tree: Tree) -> int:
    return 1 + max((_depth(c) for c in tree.children), default=0)


@given(strategy_for(Everything))
def test_every_supported_annotation_is_drawn_with_its_type(value: Everything) -> None:
    """Each field of a rich attrs class is drawn as a value of its annotated type."""
    assert isinstance(value.flag, bool)
    assert isinstance(value.count, int) and not isinstance(value.count, bool)
    assert isinstance(value.ratio, float) and value.ratio == value.ratio  # finite, not NaN
    assert isinstance(value.name, str) and isinstance(value.blob, bytes)
    assert isinstance(value.price, Decimal) and value.price.is_finite()
    assert isinstance(value.ident, UUID)
    assert value.at.tzinfo is not None and value.at.utcoffset() == timedelta(0)
    assert isinstance(value.colour, Colour) and value.kind in ("a", "b")
    assert value.maybe is None or isinstance(value.maybe, int)
    assert isinstance(value.either, (int, str))
    assert isinstance(value.pair[0], int) and isinstance(value.pair[1], str)
    assert isinstance(value.many, tuple) and all(isinstance(i, int) for i in value.many)
    assert isinstance(value.items, list) and all(isinstance(p, Point) for p in value.items)
    assert isinstance(value.vector, PVector) and all(isinstance(p, Point) for p in value.vector)
    assert isinstance(value.table, PMap) and all(isinstance(v, int) for v in value.table.values())
    assert isinstance(value.bag, PSet) and isinstance(value.point, Point)
    assert isinstance(value.owner, str)
    assert isinstance(value.label, str)


def test_defaulted_fields_are_sometimes_left_to_their_default() -> None:
    """A field with a default is drawn both as the default and as other values."""
    strategy = strategy_for(Point)
    assert first(strategy, lambda p: p.y == 0).y == 0
    assert first(strategy, lambda p: p.y != 0).y != 0


def test_recursive_classes_are_drawn_as_nested_trees() -> None:
    """A class that refers to itself is drawn as a tree with several levels."""
    tree = first(strategy_for(Tree), lambda t: _depth(t) >= 3)
    assert _depth(tree) >= 3


@given(strategy_for(Tree))
def test_recursive_classes_are_drawn_finite(tree: Tree) -> None:
    """A recursive class is unrolled a few levels, so every drawn tree is small."""
    assert _depth(tree) <= 4


@given(
    strategy_for(
        Everything, overrides={"Point.x": st.just(7), "Everything.count": st.integers(1, 3)}
    )
)
def test_a_field_path_override_replaces_only_that_field(value: Everything) -> None:
    """Overriding "Class.field" changes that field wherever the class appears, and no other."""
    assert 1 <= value.count <= 3
    assert value.point.x == 7 and all(p.x == 7 for p in value.items)


@given(strategy_for(Everything, overrides={str: st.just("s"), Point: st.just(Point(1, 2))}))
def test_a_type_override_replaces_every_value_of_that_type(value: Everything) -> None:
    """Overriding a type changes every field of that type, however deep."""
    assert value.name == value.label == value.pair[1] == value.owner == "s"
    assert value.point == Point(1, 2) and all(p == Point(1, 2) for p in value.vector)


def test_a_misspelt_field_path_is_refused_naming_the_fields() -> None:
    """An override naming a field the class does not have is a DefinitionError, not ignored."""
    with pytest.raises(fes.errors.DefinitionError, match=r"Point has no field 'z'.*x, y"):
        strategy_for(Point, overrides={"Point.z": st.just(1)})


def test_an_override_key_that_is_not_a_path_is_refused() -> None:
    """A string override key must be "Class.field"."""
    with pytest.raises(fes.errors.DefinitionError, match="not a field path"):
        strategy_for(Point, overrides={"x": st.just(1)})


def test_a_field_without_annotation_or_default_is_refused() -> None:
    """A field whose type cannot be known is named in the error."""

    @attr.s(frozen=True)
    class Bare:
        x = attr.ib()

    with pytest.raises(fes.errors.DefinitionError, match=r"Bare\.x has no annotation"):
        strategy_for(Bare)


def test_any_is_refused_with_a_hint() -> None:
    """typing.Any cannot be drawn: the error asks for a concrete type or an override."""
    with pytest.raises(fes.errors.DefinitionError, match="override"):
        strategy_for(Any)


@frozen
class Tagged:
    """An event type registered only by the registration test below."""

    tags: PVector[str] = field(factory=pvector)
    weight: int = 0


def test_register_types_makes_from_type_use_the_derived_strategy() -> None:
    """After register_types, st.from_type(T) draws T with the given overrides."""
    register_types(Tagged, overrides={"Tagged.weight": st.just(42)})
    value = first(st.from_type(Tagged), lambda t: len(t.tags) > 0)
    assert isinstance(value.tags, PVector) and value.weight == 42


@frozen
class Rang:
    """An event of the bell aggregate used by the registration test."""

    times: int


bell = fes.Aggregate(
    "bell",
    initial=0,
    apply=fes.projector((Rang, lambda n, e: n + e.times), name="bell"),
    events=[Rang],
)


def test_register_aggregate_registers_every_event_type() -> None:
    """After register_aggregate, @given(st.from_type(Event)) works for its events."""
    register_aggregate(bell, overrides={"Rang.times": st.integers(5, 6)})

    @settings(max_examples=20)
    @given(st.from_type(Rang))
    def check(event: Rang) -> None:
        assert event.times in (5, 6)

    check()


def test_events_of_draws_every_event_type_of_an_aggregate() -> None:
    """events_of gives events of each type the aggregate owns."""
    strategy = events_of(bank.accounts)
    for kind in bank.accounts.events:
        assert isinstance(first(strategy, lambda e, k=kind: isinstance(e, k)), kind)


def test_events_of_an_aggregate_without_events_is_refused() -> None:
    """An aggregate that declares no event types has nothing to draw."""
    with pytest.raises(fes.errors.DefinitionError, match="no event types"):
        events_of(fes.neutral)


@given(histories(bank.accounts))
def test_histories_always_fold(history: tuple[Any, ...]) -> None:
    """A drawn history is what the commands produced: it folds and keeps the invariant."""
    state = bank.accounts.fold(history)
    assert bank.balance_within_overdraft(state)
    assert not history or isinstance(history[0], bank.AccountOpened)


def test_histories_reach_long_sequences_of_several_kinds() -> None:
    """Histories are not trivially short: they mix several commands' events."""
    found = first(
        histories(dogs.dogs, max_commands=10), lambda h: len({type(e) for e in h}) == 2
        and len(h) >= 4
    )
    assert isinstance(found[0], dogs.Registered) and len(found) >= 4


@given(histories(bank.accounts, args={"deposit": st.tuples(st.just(5))}))
def test_histories_use_the_given_argument_strategies(history: tuple[Any, ...]) -> None:
    """The args override is what a command is called with."""
    assert all(e.amount == 5 for e in history if isinstance(e, bank.Deposited))


@given(states(bank.accounts))
def test_states_are_folded_histories(state: bank.Account | None) -> None:
    """states() gives reachable states, so the domain's invariant holds on them."""
    assert state is None or isinstance(state, bank.Account)
    assert bank.balance_within_overdraft(state)


def test_arguments_are_derived_from_command_annotations() -> None:
    """Each command gets a tuple strategy of its annotated positional arguments."""
    table = argument_strategies(bank.accounts)
    assert set(table) == set(bank.accounts.commands)
    assert first(table["withdraw"], lambda a: a[0] > 10)[0] > 10
    assert first(table["close"]) == ()
    assert isinstance(first(table["open_account"])[0], str)


def test_arguments_of_unknown_commands_are_refused() -> None:
    """An args key that names no command is a DefinitionError listing the commands."""
    with pytest.raises(fes.errors.DefinitionError, match=r"'withdrw'.*'withdraw'"):
        argument_strategies(bank.accounts, args={"withdrw": st.tuples()})


def test_unannotated_command_arguments_are_refused() -> None:
    """A command argument without annotation must be given by args."""

    def poke(state: int, how):  # type: ignore[no-untyped-def]
        return []

    agg = fes.Aggregate("poker", initial=0, apply=lambda s, e: s, commands=[poke])
    with pytest.raises(fes.errors.DefinitionError, match=r"'how'.*args="):
        argument_strategies(agg)
    assert set(argument_strategies(agg, args={"poke": st.tuples(st.none())})) == {"poke"}


def test_state_filter_reads_the_state_annotation() -> None:
    """A command annotated with Account refuses no state yet; Account | None takes both."""
    account = bank.Account("a")
    assert accepts_state(bank.open_account, None) and accepts_state(bank.open_account, account)
    assert not accepts_state(bank.deposit, None) and accepts_state(bank.deposit, account)
    assert state_filter(lambda s, x: [])(object())


def test_state_filter_looks_through_combined_commands() -> None:
    """A combined aggregate's command is judged on its own slot of the state tuple."""
    both = fes.combine(bank.accounts, dogs.dogs)
    deposit = both.commands["account.deposit"]
    assert accepts_state(deposit, (bank.Account("a"), None))
    assert not accepts_state(deposit, (None, dogs.Dog("Rex")))
    assert not accepts_state(deposit, ())
    assert set(argument_strategies(both)) == set(both.commands)


def _shout(state: Literal["draft", "sent"] | None) -> list[Any]:
    return []


def _file(state: Annotated[bank.Account, "filed"]) -> list[Any]:
    return []


def _stamp(state: Annotated[Literal[1, 2], "stamped"]) -> list[Any]:
    return []


def _decide_admits(aggregate: fes.Aggregate[Any], command: Any, state: Any) -> bool:
    try:
        fes.decide(aggregate, command, state)
    except fes.CommandError:
        return False
    return True


def test_state_filter_and_decide_agree_on_literal_and_annotated_states() -> None:
    """The generator draws a command on a state exactly when decide would run it there."""
    plain = fes.Aggregate("post", None, lambda s, e: s, commands=[_shout, _file, _stamp])
    both = fes.combine(dogs.dogs, plain)
    candidates: list[Any] = [None, "draft", "sent", "lost", 1, 2, 3, True, bank.Account("a")]
    for aggregate, prefix, wrap in ((plain, "", lambda s: s), (both, "post.", lambda s: (None, s))):
        for name in plain.commands:
            command = aggregate.commands[prefix + name]
            for state in map(wrap, candidates):
                assert accepts_state(command, state) == _decide_admits(aggregate, command, state)
    assert not accepts_state(_shout, "lost") and accepts_state(_stamp, 2)
    assert not accepts_state(_file, None) and accepts_state(_file, bank.Account("a"))


def test_run_step_turns_refusals_into_values_and_lets_bugs_through() -> None:
    """Rejected and CommandError are refusals; any other exception, a CommandMistake too, is not."""
    assert run_step(bank.withdraw, bank.Account("a"), (1,)).refused is not None
    assert run_step(bank.deposit, bank.Account("a"), (2,)).events == (bank.Deposited(2),)
    with pytest.raises(AttributeError):
        run_step(bank.deposit, None, (2,))
    with pytest.raises(fes.errors.DefinitionError, match="tuple"):
        run_step(bank.deposit, bank.Account("a"), 2)  # type: ignore[arg-type]
    with pytest.raises(fes.errors.CommandMistake, match="sequence of events"):
        run_step(lambda s: None, None, ())  # type: ignore[arg-type,return-value]
    # a command whose own call of decide gives arguments the inner one does not
    # take raises a CommandMistake: a bug, not a refusal
    assert run_step(lambda s: fes.decide(dogs.dogs, dogs.register, s, "Rex"), None, ()).events
    with pytest.raises(fes.errors.CommandMistake, match="takes"):
        run_step(lambda s: fes.decide(dogs.dogs, dogs.register, s, "Rex", 2), None, ())


def test_drawn_datetimes_are_utc_and_overridable() -> None:
    """Datetimes are aware and in UTC; a type override can pin them."""
    moment = datetime(2020, 1, 1, tzinfo=UTC)
    value = first(strategy_for(Everything, overrides={datetime: st.just(moment)}))
    assert value.at == moment
    table = first(strategy_for(PMap[str, int]), lambda m: len(m) == 1)
    assert isinstance(table, PMap) and isinstance(next(iter(table.values())), int)
