"""The one walker of combinators: state types, innermost commands and aggregates, checks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from attrs import frozen

import fes
from fes import _shapes
from fes.examples import bank, dogs

Phase = Literal["draft", "sent"]


@frozen
class Drafted:
    pass


def drafted(state: Phase | None, event: Drafted) -> Phase:
    return "draft"


def send(state: Phase) -> list[Drafted]:
    return []


def note(state: Annotated[bank.Account, "the account"]) -> list[Drafted]:
    return []


letters = fes.Aggregate(
    "letter", None, fes.projector(drafted), events=[Drafted], commands=[send, note]
)


def test_a_literal_state_annotation_is_checked_at_runtime() -> None:
    """decide refuses a state outside a command's Literal, and names the Literal."""
    assert fes.decide(letters, send, "sent") == []
    with pytest.raises(fes.CommandError, match="expects Literal\\['draft', 'sent'\\]"):
        fes.decide(letters, send, "lost")


def test_an_annotated_state_annotation_is_checked_as_its_type() -> None:
    """decide looks through Annotated[Account, ...] to Account."""
    assert fes.decide(letters, note, bank.Account("a")) == []
    with pytest.raises(fes.CommandError, match="expects Account, but got no state yet"):
        fes.decide(letters, note, None)
    assert letters.state_types(note) == (bank.Account,)


def _same(dog: dogs.Dog | None) -> dogs.Dog | None:
    return dog


def test_state_types_are_read_through_every_combinator() -> None:
    """The state type of a composite is built from its parts' projector annotations."""
    both = fes.combine(bank.accounts, fes.map_state(dogs.dogs, _same, _same))
    assert _shapes.state_type(both) == tuple[bank.Account | None, dogs.Dog | None]
    assert _shapes.state_type(letters) == Phase | None


def test_innermost_aggregates_are_found_through_every_combinator() -> None:
    """combine, adapt and map_state are looked through to the aggregates they wrap."""
    adapted = fes.adapt(
        dogs.dogs, inward=lambda e: e, outward=lambda e: e, events=dogs.dogs.events, name="pets"
    )
    mapped = fes.map_state(bank.accounts, lambda a: a, lambda a: a)
    nested = fes.combine(fes.combine(adapted, mapped), letters)
    assert _shapes.innermost_aggregates(nested) == [dogs.dogs, bank.accounts, letters]


def test_wrapped_commands_unwrap_to_the_users_function_and_its_state() -> None:
    """A lifted, mapped, adapted, contramapped command is the user's function on its slot."""
    both = fes.combine(dogs.dogs, bank.accounts)
    lifted = both.commands["account.deposit"]
    converted = fes.contramap_command(lifted, lambda text: (int(text),))
    account = bank.Account("a")
    assert _shapes.innermost(converted) is bank.deposit
    assert _shapes.unwrap(converted, (None, account)) == (bank.deposit, account)
    assert _shapes.argument_function(lifted) is bank.deposit
    assert _shapes.argument_function(converted) is None


def test_admits_reads_unions_literals_and_annotated() -> None:
    """admits judges a value by class, and Literal by value, through Annotated and unions."""
    hint: Any = Annotated[Literal[1, 2] | bank.Account | None, "x"]
    assert all(_shapes.admits(hint, v) for v in (1, 2, None, bank.Account("a")))
    assert not any(_shapes.admits(hint, v) for v in (3, "1", dogs.Dog("Rex")))
    assert _shapes.admits(Any, object())
