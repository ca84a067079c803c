"""Aggregates: the projector builder, Aggregate validation, fold and decide."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Protocol, TypeVar, Union

import pytest
from attrs import evolve, frozen
from hypothesis import given
from pyrsistent import pvector

import fes
from fes.examples.bank import Account, AccountOpened, Deposited, accounts, deposit, withdraw
from fes.examples.dogs import Dog, Registered, TrickAdded, add_trick, dogs, register

from .domains import Cleared, Incremented, counter, domain_histories

# --- events and handlers of a small local domain -----------------------------


@frozen
class Opened:
    """A till was opened."""


@frozen
class Paid:
    """Money was paid in."""

    amount: int


@frozen
class Refunded:
    """Money was paid out."""

    amount: int


@frozen
class CardPaid(Paid):
    """Money was paid in by card: a kind of Paid."""


def opened(total: int, event: Opened) -> int:
    return 0


def paid(total: int, event: Paid) -> int:
    return total + event.amount


def moved(total: int, event: Paid | Refunded) -> int:
    return total + (event.amount if isinstance(event, Paid) else -event.amount)


def moved_old_style(total: int, event: Union[Paid, Optional[Refunded]]) -> int:  # noqa: UP007, UP045
    return total


def refunded_untyped(total, event):  # type: ignore[no-untyped-def]
    return total - event.amount


def test_projector_dispatches_on_the_annotated_event_type() -> None:
    """Each event goes to the handler whose event parameter is annotated with its type."""
    apply = fes.projector(opened, paid, (Refunded, refunded_untyped))
    assert apply(5, Opened()) == 0
    assert apply(5, Paid(3)) == 8
    assert apply(5, Refunded(2)) == 3


def test_a_union_annotation_registers_every_member() -> None:
    """A handler annotated with `A | B` handles both A and B."""
    apply = fes.projector(moved)
    assert apply.event_types == (Paid, Refunded)  # type: ignore[attr-defined]
    assert apply(10, Paid(1)) == 11
    assert apply(10, Refunded(1)) == 9


def test_typing_union_and_optional_register_their_members() -> None:
    """`Union[A, Optional[B]]` registers A, B and NoneType."""
    apply = fes.projector(moved_old_style)
    assert set(apply.event_types) == {Paid, Refunded, type(None)}  # type: ignore[attr-defined]


def test_explicit_pairs_need_no_annotation() -> None:
    """A (Type, handler) pair registers an unannotated handler, lambdas included."""
    apply = fes.projector((Paid, lambda total, event: total + 2 * event.amount))
    assert apply(1, Paid(3)) == 7


def test_a_type_handled_twice_is_refused_naming_both_handlers() -> None:
    """Two handlers for one event type are refused at definition, naming both and the type."""
    with pytest.raises(fes.errors.DefinitionError) as info:
        fes.projector(paid, moved, name="till")
    message = str(info.value)
    assert "'Paid' is handled twice in 'till'" in message
    assert "'paid'" in message
    assert "'moved'" in message


def test_an_explicit_pair_cannot_shadow_an_annotated_handler() -> None:
    """An explicit pair for an already handled type is refused too."""
    with pytest.raises(fes.errors.DefinitionError, match="handled twice"):
        fes.projector(paid, (Paid, refunded_untyped))


def test_a_handler_without_annotation_is_refused() -> None:
    """A handler that does not annotate its event parameter is refused, with its name."""
    with pytest.raises(fes.errors.DefinitionError) as info:
        fes.projector(refunded_untyped)
    assert "'refunded_untyped' does not annotate the type of its event parameter" in str(
        info.value
    )


def test_a_handler_of_one_parameter_is_refused() -> None:
    """A handler that does not take (state, event) is refused, saying so."""

    def lonely(state: int) -> int:
        return state

    with pytest.raises(fes.errors.DefinitionError, match="does not take \\(state, event\\)"):
        fes.projector(lonely)


def test_a_builtin_without_signature_is_refused_as_handler() -> None:
    """A callable whose signature cannot be read is refused, not crashed on."""
    with pytest.raises(fes.errors.DefinitionError, match="does not take"):
        fes.projector(max)


def test_an_unresolvable_annotation_is_refused_naming_it() -> None:
    """A string annotation that names no reachable class is refused, showing the annotation."""

    def local(state: int, event: NotDefinedAnywhere) -> int:  # type: ignore[name-defined]  # noqa: F821
        return state

    with pytest.raises(fes.errors.DefinitionError) as info:
        fes.projector(local)
    assert "annotates its event parameter as 'NotDefinedAnywhere'" in str(info.value)


T = TypeVar("T")


def test_an_annotation_that_is_not_a_class_is_refused() -> None:
    """Handlers annotated with a type variable, Any, or a union holding one are refused."""

    def generic(state: int, event: T) -> int:
        return state

    def anything(state: int, event: Any) -> int:
        return state

    def mixed(state: int, event: Paid | T) -> int:
        return state

    with pytest.raises(fes.errors.DefinitionError, match="does not resolve to classes"):
        fes.projector(generic)
    with pytest.raises(fes.errors.DefinitionError, match="events are dispatched by their class"):
        fes.projector(anything)
    with pytest.raises(fes.errors.DefinitionError, match="does not resolve to classes"):
        fes.projector(mixed)
    with pytest.raises(fes.errors.DefinitionError, match="events are dispatched by their class"):
        fes.projector(("Paid", paid))  # type: ignore[arg-type]


def test_a_generic_alias_annotation_registers_its_origin() -> None:
    """A handler annotated `list[int]` handles lists (the alias's origin class)."""

    def batch(state: int, event: list[int]) -> int:
        return state + sum(event)

    assert fes.projector(batch)(1, [2, 3]) == 6


def test_an_unhandled_event_names_its_type_and_the_aggregate() -> None:
    """Folding an event no handler takes raises UnhandledEvent naming type and aggregate."""
    till = fes.Aggregate("till", 0, fes.projector(paid))
    with pytest.raises(fes.errors.UnhandledEvent) as info:
        till.fold([Paid(1), Refunded(1)])
    assert info.value.event_type is Refunded
    assert info.value.where == "till"
    assert "'Refunded' in till" in str(info.value)
    assert not isinstance(info.value, KeyError)


def test_an_unhandled_event_is_renamed_only_when_raised_elsewhere() -> None:
    """The aggregate re-raises its own UnhandledEvent as is, and renames a foreign one."""
    own = fes.errors.UnhandledEvent(Refunded, "till")
    foreign = fes.errors.UnhandledEvent(Refunded, "projector")

    def raises(error: fes.errors.UnhandledEvent) -> fes.Projector:
        def apply(total: int, event: Any) -> int:
            raise error

        return apply

    with pytest.raises(fes.errors.UnhandledEvent) as info:
        fes.Aggregate("till", 0, raises(own)).evolve(0, Refunded(1))
    assert info.value is own
    with pytest.raises(fes.errors.UnhandledEvent) as info:
        fes.Aggregate("till", 0, raises(foreign)).evolve(0, Refunded(1))
    assert info.value is not foreign
    assert (info.value.event_type, info.value.where) == (Refunded, "till")


def test_a_subclass_event_uses_its_base_class_handler() -> None:
    """Dispatch follows the MRO: a CardPaid is handled by the Paid handler."""
    apply = fes.projector(paid)
    assert apply(1, CardPaid(4)) == 5


def test_the_most_specific_handler_wins() -> None:
    """A handler for the subclass itself is preferred over the base class handler."""

    def card(total: int, event: CardPaid) -> int:
        return total + 100 * event.amount

    apply = fes.projector(paid, card)
    assert apply(0, CardPaid(1)) == 100
    assert apply(0, Paid(1)) == 1


# --- Aggregate -------------------------------------------------------------


def test_an_aggregate_needs_a_name() -> None:
    """An empty aggregate name is refused."""
    with pytest.raises(fes.errors.DefinitionError, match="non-empty name"):
        fes.Aggregate("", 0, fes.projector(paid))


def test_an_aggregate_name_cannot_contain_a_slash() -> None:
    """'/' separates the parts of name-based ids: 'a/b' + 'c' would be 'a' + 'b/c'."""
    with pytest.raises(fes.errors.DefinitionError, match="contains '/'"):
        fes.Aggregate("till/2", 0, fes.projector(paid))
    with pytest.raises(fes.errors.DefinitionError, match="contains '/'"):
        fes.combine(fes.Aggregate("a", 0, fes.projector(paid)), name="x/y")


def test_an_aggregate_refuses_an_event_listed_twice() -> None:
    """Listing one event type twice is refused, naming the aggregate."""
    with pytest.raises(fes.errors.DefinitionError, match="'till' lists an event type twice"):
        fes.Aggregate("till", 0, fes.projector(paid), events=[Paid, Paid])


def test_an_aggregate_refuses_events_that_are_not_classes() -> None:
    """Events must be classes; an instance is refused with its repr."""
    with pytest.raises(fes.errors.DefinitionError, match="events must be classes, got Paid"):
        fes.Aggregate("till", 0, fes.projector(paid), events=[Paid(1)])  # type: ignore[list-item]


def test_an_aggregate_refuses_owned_events_its_projector_cannot_handle() -> None:
    """Owning an event the projector has no handler for is refused, naming the event."""
    with pytest.raises(fes.errors.DefinitionError) as info:
        fes.Aggregate("till", 0, fes.projector(paid), events=[Paid, Refunded, Opened])
    assert "'till' owns Refunded, Opened but its projector has no handler" in str(info.value)


def test_an_owned_subclass_is_covered_by_its_base_class_handler() -> None:
    """Owning CardPaid is fine when the projector handles Paid, as dispatch would."""
    till = fes.Aggregate("till", 0, fes.projector(paid), events=[Paid, CardPaid])
    assert till.fold([Paid(1), CardPaid(2)]) == 3


def test_a_plain_function_projector_is_not_checked_against_events() -> None:
    """A hand-written projector (no handler table) is trusted with the events listed."""
    till = fes.Aggregate("till", 0, lambda total, event: total + 1, events=[Paid, Refunded])
    assert till.fold([Paid(1), Refunded(1)]) == 2


def test_commands_are_named_by_function_name() -> None:
    """Commands given as a list are keyed by name; a mapping is kept as given."""
    assert dict(dogs.commands) == {"register": register, "add_trick": add_trick}
    named = fes.Aggregate("dog", None, dogs.apply, commands={"teach": add_trick})
    assert dict(named.commands) == {"teach": add_trick}


def test_two_commands_with_one_name_are_refused() -> None:
    """Two commands with the same name (e.g. two lambdas) are refused."""
    with pytest.raises(fes.errors.DefinitionError, match="two commands are named '<lambda>'"):
        fes.Aggregate("x", 0, lambda s, e: s, commands=[lambda s: [], lambda s: []])


def test_a_command_that_is_not_a_function_is_refused_when_defined() -> None:
    """Extending an aggregate's commands with its mapping's keys (names, not functions) was
    taken, and failed later, reading the arguments of "'register'" (a trial's); a name says
    where the functions are."""
    with pytest.raises(fes.errors.DefinitionError) as refused:
        evolve(dogs, commands=[*dogs.commands])
    assert str(refused.value) == (
        "aggregate 'dog': commands must be functions, got 'register' (a name: an aggregate's "
        "commands map names to functions, so [*aggregate.commands] lists names; "
        "[*aggregate.commands.values()] the functions)"
    )
    with pytest.raises(fes.errors.DefinitionError, match=r"must be functions, got 3$"):
        fes.Aggregate("x", 0, lambda s, e: s, commands={"three": 3})
    extended = evolve(dogs, commands=[*dogs.commands.values(), len])
    assert list(extended.commands) == ["register", "add_trick", "len"]


def test_owns_is_by_instance_of_an_owned_type() -> None:
    """An aggregate owns instances of its event types and their subclasses only."""
    till = fes.Aggregate("till", 0, fes.projector(paid), events=[Paid])
    assert till.owns(Paid(1))
    assert till.owns(CardPaid(1))
    assert not till.owns(Refunded(1))


# --- fold ------------------------------------------------------------------


def test_fold_of_nothing_is_the_initial_state() -> None:
    """Folding no events gives the initial state."""
    assert dogs.fold([]) is None
    assert counter.fold([]) == 0


def test_fold_applies_events_in_order() -> None:
    """Folding a dog's history gives its name and tricks in the order learned."""
    events = [Registered("Fido"), TrickAdded("roll"), TrickAdded("sit")]
    assert dogs.fold(events) == Dog("Fido", pvector(["roll", "sit"]))


def test_the_0_1_fes_fold_still_folds_with_a_warning() -> None:
    """fes.fold(aggregate, events) of 0.1.0 folds as before and points at aggregate.fold."""
    events = [Registered("Fido"), TrickAdded("roll")]
    with pytest.warns(DeprecationWarning, match=r"^fes\.fold is deprecated; use aggregate\.fold"):
        fold = fes.fold
    assert fold(dogs, events) == dogs.fold(events)
    assert fold(counter, [], 5) == 5
    assert "fold" not in fes.__all__
    assert "fold" not in dir(fes)


def test_fold_from_a_none_state_does_not_restart_from_initial() -> None:
    """None passed as a state is a state: the counter folds on from None, not from 0."""
    assert counter.fold([], None) is None
    assert counter.fold([Incremented(5)], None) == 5
    assert counter.fold([Cleared()]) is None
    assert counter.fold([Incremented(2)], 40) == 42


@given(domain_histories())
def test_fold_is_a_left_fold(drawn: Any) -> None:
    """fold(a + b) == fold(b, fold(a)) for every split of a history."""
    aggregate, history = drawn
    whole = aggregate.fold(history)
    for cut in range(len(history) + 1):
        before, after = history[:cut], history[cut:]
        assert aggregate.fold(after, aggregate.fold(before)) == whole


@given(domain_histories())
def test_fold_is_evolve_step_by_step(drawn: Any) -> None:
    """Folding equals applying evolve to each event in turn."""
    aggregate, history = drawn
    state = aggregate.initial
    for item in history:
        state = aggregate.evolve(state, item)
    assert aggregate.fold(history) == state


# --- decide ----------------------------------------------------------------

FIDO = Dog("Fido")


def test_decide_returns_the_commands_events_as_a_list() -> None:
    """decide runs the command on the state with its arguments, returning a list."""
    assert fes.decide(dogs, register, None, "Fido") == [Registered("Fido")]
    assert fes.decide(dogs, add_trick, FIDO, trick="sit") == [TrickAdded("sit")]


def test_decide_on_a_state_the_command_does_not_accept() -> None:
    """add_trick on no dog yet is a CommandError naming command, aggregate and types."""
    with pytest.raises(fes.CommandError) as info:
        fes.decide(dogs, add_trick, None, "sit")
    message = str(info.value)
    assert "command 'add_trick' of aggregate 'dog' expects Dog" in message
    assert "no state yet (the stream has no events)" in message


def test_decide_names_the_type_of_a_wrong_state() -> None:
    """A state of another class is named in the CommandError."""
    with pytest.raises(fes.CommandError, match="expects Dog \\| NoneType, but got a int"):
        fes.decide(dogs, register, 3, "Fido")


def test_decide_does_not_check_states_it_cannot_check() -> None:
    """Commands annotated Any, a protocol or nothing run on any state."""

    class Named(Protocol):
        name: str

    def any_state(state: Any) -> list[Any]:
        return []

    def by_protocol(state: Named) -> list[Any]:
        return []

    def bare(state):  # type: ignore[no-untyped-def]
        return []

    for command in (any_state, by_protocol, bare, lambda state: []):
        assert fes.decide(dogs, command, 3) == []


def test_decide_refuses_a_result_that_is_not_a_sequence() -> None:
    """A command returning None, a string, a generator or a set is a CommandError."""

    def returns(value: Any) -> Any:
        def command(state: Dog | None) -> Any:
            return value

        return command

    for value, shown in [
        (None, "NoneType"),
        ("oops", "str"),
        (b"oops", "bytes"),
        ((e for e in ()), "generator"),
        ({Registered("x")}, "set"),
    ]:
        with pytest.raises(fes.CommandError) as info:
            fes.decide(dogs, returns(value), None)
        assert "returns.<locals>.command' must return a sequence of events" in str(info.value)
        assert f"got {shown}" in str(info.value)


def test_a_lambda_command_is_named_by_where_it_is_written() -> None:
    """Lambdas share one name: a refusal says which one, by file and line."""
    fee = lambda amount: lambda state: amount  # noqa: E731
    line = fee.__code__.co_firstlineno
    with pytest.raises(fes.CommandError) as info:
        fes.decide(dogs, fee(3), None)
    said = str(info.value)
    assert f".<lambda>.<locals>.<lambda> at test_aggregates.py:{line}' must return" in said


def test_decide_accepts_any_sequence() -> None:
    """Tuples and persistent vectors are sequences of events too."""

    def as_tuple(dog: Dog) -> Sequence[Any]:
        return (TrickAdded("a"),)

    def as_vector(dog: Dog) -> Sequence[Any]:
        return pvector([TrickAdded("b")])

    assert fes.decide(dogs, as_tuple, FIDO) == [TrickAdded("a")]
    assert fes.decide(dogs, as_vector, FIDO) == [TrickAdded("b")]


def test_decide_refuses_an_event_the_aggregate_does_not_own() -> None:
    """A command emitting another aggregate's event is refused, naming both."""

    def confused(dog: Dog) -> list[Any]:
        return [TrickAdded("sit"), Deposited(5)]

    with pytest.raises(fes.CommandError) as info:
        fes.decide(dogs, confused, FIDO)
    message = "returned a value of type Deposited, which aggregate 'dog' does not own"
    assert message in str(info.value)


def test_decide_without_declared_events_accepts_any_event() -> None:
    """An aggregate that lists no events does not check what its commands emit."""
    loose = fes.Aggregate("loose", 0, lambda s, e: s)
    assert fes.decide(loose, lambda s: [Deposited(1)], 0) == [Deposited(1)]


def test_rejected_propagates_from_decide() -> None:
    """A domain rejection reaches the caller as the same Rejected error."""
    with pytest.raises(fes.Rejected, match="already registered"):
        fes.decide(dogs, register, FIDO, "Rex")
    account = evolve(Account("ann"), balance=10)
    with pytest.raises(fes.Rejected, match="insufficient funds: balance 10"):
        fes.decide(accounts, withdraw, account, 25)


ARGUMENTS_REFUSED: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [
    (("sit", "roll over"), {}, "was given 2 positional arguments (too many positional"),
    ((), {}, "was given 0 positional arguments (missing a required argument: 'trick')"),
    ((), {"skill": "sit"}, "and keyword skill ("),
    (("sit",), {"trick": "sit"}, "multiple values for argument 'trick'"),
]


@pytest.mark.parametrize(("args", "kwargs", "shown"), ARGUMENTS_REFUSED)
def test_decide_refuses_arguments_the_command_does_not_take(
    args: tuple[Any, ...], kwargs: dict[str, Any], shown: str
) -> None:
    """The caller's mistake, named: the command, its aggregate, what it takes after the state."""
    with pytest.raises(fes.CommandError) as refused:
        fes.decide(dogs, add_trick, Dog("Rex"), *args, **kwargs)
    message = str(refused.value)
    assert message.startswith(
        "command 'add_trick' of aggregate 'dog' takes (trick) after the state, but "
    )
    assert shown in message
    assert isinstance(refused.value.__cause__, TypeError)


def test_a_commands_own_type_error_is_not_taken_for_wrong_arguments() -> None:
    def count(dog: Dog, n: int) -> list[TrickAdded]:
        return [TrickAdded("x" + n)]  # type: ignore[operator]  # the command's own bug

    counting = fes.Aggregate(
        "dog", initial=None, apply=dogs.apply, events=dogs.events, commands=[count]
    )
    with pytest.raises(TypeError, match="can only concatenate str") as raised:
        fes.decide(counting, count, Dog("Rex"), 1)
    assert not isinstance(raised.value, fes.CommandError)


def test_a_command_that_takes_nothing_after_the_state_says_so() -> None:
    def bark(dog: Dog) -> list[TrickAdded]:
        return [TrickAdded("bark")]

    barking = fes.Aggregate(
        "dog", initial=None, apply=dogs.apply, events=dogs.events, commands=[bark]
    )
    with pytest.raises(fes.CommandError, match=r"takes no arguments after the state, but was "
                       r"given 1 positional argument \(too many"):
        fes.decide(barking, bark, Dog("Rex"), "loud")


def test_decide_does_not_fold() -> None:
    """decide returns events without applying them: the state is unchanged."""
    account = accounts.fold([AccountOpened("ann")])
    assert fes.decide(accounts, deposit, account, 5) == [Deposited(5)]
    assert account == Account("ann")


def test_an_unhashable_command_is_still_checked_on_each_call() -> None:
    """A command object that cannot be a dict key still has its state type checked."""
    from fes.examples.dogs import Dog, TrickAdded, dogs

    class Teach:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, dog: Dog, trick: str) -> list[TrickAdded]:
            return [TrickAdded(trick)]

    teach = Teach()
    aggregate = fes.Aggregate(
        "dog", initial=None, apply=dogs.apply, events=dogs.events, commands={"teach": teach}
    )
    assert aggregate.state_types(teach) == (Dog,)
    with pytest.raises(fes.CommandError, match="expects Dog"):
        fes.decide(aggregate, teach, None, "sit")


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("register", "pass the function register (the aggregate's commands['register'])"),
        ("registr", "did you mean the function register?"),
        ("add_trik", "did you mean the function add_trick?"),
    ],
)
def test_a_command_given_by_name_points_to_its_function(given: str, said: str) -> None:
    """A command's name where its function belongs is refused, saying which function it names."""
    with pytest.raises(fes.CommandError) as caught:
        fes.decide(dogs, given, None, "Fido")  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"a command of aggregate 'dog' is a function, not {given!r}: {said}"
    )
    with pytest.raises(fes.CommandError, match=r"is a function, not 'zzz'$"):
        fes.decide(dogs, "zzz", None, "Fido")  # type: ignore[arg-type]
