"""Views: pure folds of recorded events into a read model."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import PMap, pmap

import fes
from fes.examples.dogs import Registered, TrickAdded
from fes.testing.specs import recorded


def _tricks_by_dog(
    table: PMap[str, int] | None, rec: fes.Recorded[Any]
) -> PMap[str, int] | None:
    if isinstance(rec.event, TrickAdded):
        table = table or pmap()
        return table.set(rec.stream, table.get(rec.stream, 0) + 1)
    if isinstance(rec.event, Registered) and rec.event.name == "reset":
        return None
    return table


tricks = fes.View("tricks", pmap(), _tricks_by_dog)

events = st.lists(
    st.builds(
        recorded,
        st.one_of(
            st.sampled_from(["sit", "beg"]).map(TrickAdded),
            st.sampled_from(["Rex", "reset"]).map(Registered),
        ),
        st.sampled_from(["d-1", "d-2"]),
    ),
    max_size=12,
)


def test_a_view_of_no_events_is_its_initial_state() -> None:
    """Folding nothing gives the initial state."""
    assert tricks.fold([]) == pmap()


def test_a_view_folds_records_in_order() -> None:
    """A view counts what it cares about and ignores the rest."""
    records = [
        recorded(Registered("Rex"), "d-1"),
        recorded(TrickAdded("sit"), "d-1"),
        recorded(TrickAdded("beg"), "d-2"),
        recorded(TrickAdded("beg"), "d-1"),
    ]
    assert tricks.fold(records) == pmap({"d-1": 2, "d-2": 1})


@given(events, events)
def test_incremental_view_equals_rebuilt_view(first: list[Any], second: list[Any]) -> None:
    """Folding on from a saved state equals rebuilding from position 0, even from None."""
    assert tricks.fold(second, tricks.fold(first)) == tricks.fold(first + second)


@pytest.mark.parametrize(
    "name", ["", "a\x00b", "two\nlines", "a\ud800", "v" * 201, 5, None],
    ids=["empty", "nul", "newline", "surrogate", "too-long", "int", "none"],
)
def test_a_view_name_every_store_can_key_by_is_required(name: object) -> None:
    """The edge keys a view's stored state by its name: it must be 1 to 200 printable characters."""
    with pytest.raises(fes.errors.DefinitionError, match="must be 1 to 200 printable characters"):
        fes.View(name, 0, lambda n, r: n)  # type: ignore[arg-type]
    assert fes.View("orders by customer: 2024", 0, lambda n, r: n).name.startswith("orders")
