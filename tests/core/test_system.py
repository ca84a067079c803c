"""Systems: applications and pipes, validated as one value."""

from __future__ import annotations

from typing import Any

import pytest

import fes
from fes.examples.bank import accounts
from fes.examples.dogs import dogs

from .domains import counter


def react(rec: fes.Recorded[Any]) -> list[fes.Intent]:
    return []


def app(name: str, *, follows: bool = False, **kwargs: Any) -> fes.App:
    return fes.App(name, policy=react if follows else None, **kwargs)


# --- App -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a b", "orders!", "x.y", "-", "_", "é/1"])
def test_app_refuses_bad_names(name: str) -> None:
    """An application name must be letters, digits, '_' or '-' (and not only punctuation)."""
    with pytest.raises(fes.errors.SystemDefinitionError, match="must be non-empty letters"):
        fes.App(name)


@pytest.mark.parametrize("name", ["orders", "dog_school", "tally-2", "A1"])
def test_app_accepts_good_names(name: str) -> None:
    """Plain names with '_' and '-' are accepted."""
    assert fes.App(name).name == name


def test_app_refuses_two_aggregates_with_one_name() -> None:
    """Two aggregates called alike in one application are refused, naming them."""
    twin = fes.Aggregate("dog", None, dogs.apply, dogs.events)
    with pytest.raises(
        fes.errors.SystemDefinitionError, match="'school' has two aggregates named 'dog'"
    ):
        fes.App("school", aggregates=[dogs, twin])


def test_app_defaults() -> None:
    """An application has no aggregate, policy or view by default and stops on errors."""
    plain = fes.App("plain")
    assert (plain.aggregates, plain.policy, plain.views) == ((), None, ())
    assert plain.on_error is fes.stop_on_error


def test_app_aggregate_finds_by_name() -> None:
    """App.aggregate(name) returns the aggregate of that name."""
    office = fes.App("office", aggregates=[dogs, accounts])
    assert office.aggregate("account") is accounts


def test_app_aggregate_unknown_name_lists_known_ones() -> None:
    """An unknown aggregate name is refused, naming the application and what it has."""
    office = fes.App("office", aggregates=[dogs, accounts])
    with pytest.raises(fes.errors.SystemDefinitionError) as info:
        office.aggregate("cat")
    assert str(info.value) == (
        "application 'office' has no aggregate 'cat'; it has 'dog', 'account'"
    )
    with pytest.raises(fes.errors.SystemDefinitionError, match="it has none"):
        fes.App("empty").aggregate("cat")


# --- System ----------------------------------------------------------------


def test_duplicate_app_names_are_refused() -> None:
    """Two applications with one name are refused."""
    with pytest.raises(fes.errors.SystemDefinitionError, match="two applications are named 'a'"):
        fes.System([app("a"), app("a")])


def test_a_pipe_naming_an_unknown_app_is_refused() -> None:
    """A pipe naming an unknown application is refused, naming it and the known ones."""
    with pytest.raises(fes.errors.SystemDefinitionError) as info:
        fes.System([app("a"), app("b", follows=True)], pipes=[["a", "c"]])
    assert "pipe ['a', 'c'] names unknown application 'c'; known: a, b" in str(info.value)


@pytest.mark.parametrize("pipe", [["a"], []])
def test_a_pipe_needs_a_leader_and_a_follower(pipe: list[str]) -> None:
    """One-element and empty pipes are refused."""
    with pytest.raises(
        fes.errors.SystemDefinitionError, match="needs at least a leader and a follower"
    ):
        fes.System([app("a")], pipes=[pipe])


def test_an_app_cannot_follow_itself() -> None:
    """A pipe with one application twice in a row is refused."""
    with pytest.raises(fes.errors.SystemDefinitionError, match="'a' cannot follow itself"):
        fes.System([app("a", follows=True)], pipes=[["a", "a"]])


def test_a_follower_needs_a_policy() -> None:
    """An application that follows another but has no policy is refused, naming its leaders."""
    with pytest.raises(
        fes.errors.SystemDefinitionError, match="'b' follows a, c but has no policy"
    ):
        fes.System([app("a"), app("b"), app("c")], pipes=[["a", "b"], ["c", "b"]])


def test_a_policy_needs_a_leader() -> None:
    """An application with a policy that follows nothing is refused."""
    with pytest.raises(fes.errors.SystemDefinitionError, match="'b' has a policy but no leader"):
        fes.System([app("a"), app("b", follows=True)])


def test_cycles_are_allowed() -> None:
    """orders → reservations → orders is a valid system: each follows the other."""
    system = fes.System(
        [app("orders", follows=True), app("reservations", follows=True)],
        pipes=[["orders", "reservations", "orders"]],
    )
    assert system.edges == (("orders", "reservations"), ("reservations", "orders"))
    assert system.leaders("orders") == ("reservations",)
    assert system.followers("orders") == ("reservations",)


def test_edges_leaders_and_followers_keep_pipe_order_without_repeats() -> None:
    """Edges come in pipe order, each once; leaders and followers follow that order."""
    system = fes.System(
        [app("a"), app("b", follows=True), app("c", follows=True), app("d", follows=True)],
        pipes=[["a", "c", "d"], ["a", "b", "d"], ["a", "c"]],
    )
    assert system.edges == (("a", "c"), ("c", "d"), ("a", "b"), ("b", "d"))
    assert system.followers("a") == ("c", "b")
    assert system.leaders("d") == ("c", "b")
    assert system.leaders("a") == ()
    assert [a.name for a in system.followers_all] == ["b", "c", "d"]


def test_system_app_finds_by_name_and_refuses_unknown_names() -> None:
    """System.app(name) returns the application; an unknown name lists the known ones."""
    a = app("a")
    system = fes.System([a, app("b", follows=True)], pipes=[("a", "b")])
    assert system.app("a") is a
    with pytest.raises(
        fes.errors.SystemDefinitionError, match=r"no application 'z'.*; known: a, b"
    ):
        system.app("z")


def test_a_system_of_lone_apps_has_no_edges() -> None:
    """Applications without pipes form a valid system with no edges and no followers."""
    system = fes.System([app("a", aggregates=[dogs]), app("b", aggregates=[counter])])
    assert system.edges == ()
    assert system.followers_all == ()
    assert system.pipes == ()


def test_apps_and_systems_store_their_parts_as_tuples() -> None:
    """Lists given for aggregates, views and apps are stored as immutable tuples."""
    view = fes.View("count", 0, lambda n, rec: n + 1)
    school = fes.App("school", aggregates=[dogs], views=[view])
    assert (school.aggregates, school.views) == ((dogs,), (view,))
    assert fes.System([school]).apps == (school,)
