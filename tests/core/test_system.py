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


@pytest.mark.parametrize("every", [0, -1, 2.5, "10", True])
def test_app_refuses_a_snapshot_interval_that_is_no_count(every: Any) -> None:
    """snapshot_every is None or an integer of at least 1, checked where it is written."""
    with pytest.raises(
        fes.errors.SystemDefinitionError,
        match=r"application 'school': snapshot_every must be an integer of at least 1 "
        r"\(or None, for no snapshots\), got ",
    ):
        fes.App("school", aggregates=[dogs], snapshot_every=every)
    assert fes.App("school").snapshot_every is None
    assert fes.App("school", snapshot_every=100).snapshot_every == 100


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


@pytest.mark.parametrize("apps", [[], ()])
def test_a_system_of_no_applications_is_refused(apps: list[fes.App]) -> None:
    """A system with nothing in it is refused: a runner of it would report caught up at once."""
    with pytest.raises(fes.errors.SystemDefinitionError, match="at least one application"):
        fes.System(apps)


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


# --- what a definition is given: a definition where one belongs ---------------


def test_a_system_refuses_a_name_where_an_application_belongs() -> None:
    """fes.System(["orders"]) says what it got and wants, not AttributeError (a user's trial)."""
    with pytest.raises(fes.errors.SystemDefinitionError) as info:
        fes.System(["orders"], pipes=[])  # type: ignore[list-item]
    assert str(info.value) == (
        "a system's applications must be fes.App values, but entry 0 is 'orders' "
        "(type str); give the fes.App itself, not its name"
    )


def test_a_system_refuses_an_aggregate_where_an_application_belongs() -> None:
    """Another definition is named by its kind and name, not by its long repr."""
    with pytest.raises(fes.errors.SystemDefinitionError) as info:
        fes.System([app("a"), dogs])  # type: ignore[list-item]
    assert str(info.value) == (
        "a system's applications must be fes.App values, but entry 1 is fes.Aggregate 'dog'"
    )


@pytest.mark.parametrize(
    ("apps", "shown"),
    [("orders", "'orders' (type str)"), (fes.App("orders"), "fes.App 'orders'")],
)
def test_a_system_refuses_one_application_where_a_list_belongs(apps: Any, shown: str) -> None:
    """A string is not split into letters, and a lone App is not a TypeError of Python's."""
    with pytest.raises(fes.errors.SystemDefinitionError) as info:
        fes.System(apps)
    assert str(info.value) == (
        f"a system's applications must be a list, such as [fes.App('orders')]; got {shown}"
    )


def test_a_system_refuses_a_pipe_written_as_a_string() -> None:
    """pipes=["a", "b"] (one pipe, unwrapped) is refused, not read as pipes of letters."""
    with pytest.raises(fes.errors.SystemDefinitionError) as info:
        fes.System([app("a"), app("b", follows=True)], pipes=["a", "b"])
    assert str(info.value) == (
        "pipe 0 of the system must be a list, such as ['orders', 'stock'] "
        "(pipes is a list of such lists); got 'a' (type str)"
    )


@pytest.mark.parametrize("pipes", [None, "a b", 3])
def test_a_system_refuses_pipes_that_are_not_a_list(pipes: Any) -> None:
    """None, a string or a number where the list of pipes belongs is said to be one."""
    with pytest.raises(
        fes.errors.SystemDefinitionError,
        match=r"^a system's pipes must be a list, such as \[\['orders', 'stock'\]\]; got ",
    ):
        fes.System([app("a")], pipes=pipes)


def test_a_pipe_names_applications_by_name_not_by_app() -> None:
    """An App in a pipe is refused with the name to write instead."""
    b = app("b", follows=True)
    with pytest.raises(fes.errors.SystemDefinitionError) as info:
        fes.System([app("a"), b], pipes=[["a", b]])  # type: ignore[list-item]
    assert str(info.value) == (
        "pipe 0 of the system names applications by their names, but has fes.App 'b'; "
        "write 'b'"
    )
    with pytest.raises(fes.errors.SystemDefinitionError, match=r"but has 1 \(type int\)$"):
        fes.System([app("a"), b], pipes=[["a", 1]])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"aggregates": ["dog"]},
         "application 'school': its aggregates must be fes.Aggregate values, but entry 0 "
         "is 'dog' (type str); give the fes.Aggregate itself, not its name"),
        ({"aggregates": dogs},
         "an application's aggregates must be a list, such as [order]; got fes.Aggregate 'dog'"),
        ({"views": ["count"]},
         "application 'school': its views must be fes.View values, but entry 0 is 'count' "
         "(type str); give the fes.View itself, not its name"),
        ({"policy": "react"},
         "application 'school': policy must be a function of a recorded event, "
         "got 'react' (type str)"),
        ({"on_error": None},
         "application 'school': on_error must be a function of an error, a recorded event "
         "and an attempt, got None (type NoneType)"),
    ],
    ids=["aggregate-name", "lone-aggregate", "view-name", "policy-name", "no-on-error"],
)
def test_an_app_refuses_what_is_not_a_definition(given: dict[str, Any], message: str) -> None:
    """Each part of an App is checked when it is made, not when the system runs."""
    with pytest.raises(fes.errors.SystemDefinitionError) as info:
        fes.App("school", **given)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("name", "shown"), [(None, "None (type NoneType)"), (dogs, "fes.Aggregate 'dog'")]
)
def test_an_app_refuses_a_name_that_is_not_a_string(name: Any, shown: str) -> None:
    """A name that is not a string is refused as such, not with an AttributeError."""
    with pytest.raises(fes.errors.SystemDefinitionError) as info:
        fes.App(name)
    assert str(info.value) == f"an application's name must be a str, such as 'orders'; got {shown}"
