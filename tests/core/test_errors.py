"""One exception hierarchy: every fes error is a FesError and names its data."""

from __future__ import annotations

import inspect

import pytest

import fes
import fes.errors


def _error_classes() -> list[type[BaseException]]:
    return [
        obj
        for name, obj in vars(fes.errors).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and not name.startswith("_")
    ]


def test_the_errors_module_exports_its_classes() -> None:
    """fes.errors.__all__ lists exactly the exception classes the module defines, sorted."""
    names = sorted(cls.__name__ for cls in _error_classes())
    assert sorted(fes.errors.__all__) == names
    assert len(names) >= 15


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_derives_from_fes_error(cls: type[BaseException]) -> None:
    """Each error class is a FesError, so `except fes.FesError` catches every one."""
    assert issubclass(cls, fes.FesError)


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_is_exported_by_fes(cls: type[BaseException]) -> None:
    """Every error class is reachable as ``fes.<Name>`` and listed in ``fes.__all__``."""
    assert getattr(fes, cls.__name__) is cls
    assert cls.__name__ in fes.__all__


def test_fes_error_catches_nothing_foreign() -> None:
    """FesError is not a base of the built-in errors a user's bug raises."""
    for foreign in (KeyError, TypeError, ValueError, AttributeError):
        assert not issubclass(foreign, fes.FesError)


def test_errors_keep_their_builtin_family() -> None:
    """Errors that are also TypeError/LookupError/ValueError stay catchable as those."""
    assert issubclass(fes.DefinitionError, TypeError)
    assert issubclass(fes.CommandError, TypeError)
    assert issubclass(fes.UnhandledEvent, LookupError)
    assert issubclass(fes.SystemDefinitionError, ValueError)
    assert issubclass(fes.StoreURLError, ValueError)
    assert issubclass(fes.UnknownTopic, fes.DecodeError)
    assert issubclass(fes.CipherError, fes.DecodeError)
    assert issubclass(fes.ConcurrencyError, fes.StoreError)
    assert issubclass(fes.DuplicateTracking, fes.StoreError)


def test_concurrency_error_names_stream_and_both_versions() -> None:
    """A conflict names the stream, the expected and the actual version, and that nothing stored."""
    error = fes.ConcurrencyError("dog-1", expected=3, actual=5)
    assert (error.stream, error.expected, error.actual) == ("dog-1", 3, 5)
    message = str(error)
    assert "'dog-1'" in message
    assert "version 5" in message
    assert "version 3" in message
    assert "nothing was stored" in message


def test_duplicate_tracking_names_leader_and_position() -> None:
    """A repeated tracking record names the leader and the position."""
    error = fes.DuplicateTracking("orders", 42)
    assert (error.leader, error.position) == ("orders", 42)
    assert "'orders'" in str(error)
    assert "position 42" in str(error)


def test_unknown_topic_names_the_topic_and_some_known_ones() -> None:
    """An unknown topic names itself and lists up to ten registered topics, sorted."""
    error = fes.UnknownTopic("dog.Renamed", frozenset({"b.B", "a.A"}))
    assert error.topic == "dog.Renamed"
    assert "'dog.Renamed'" in str(error)
    assert "registered topics: a.A, b.B" in str(error)
    assert "…" not in str(error)


def test_unknown_topic_abbreviates_a_long_list() -> None:
    """With more than ten registered topics, ten are shown and an ellipsis marks the rest."""
    known = frozenset(f"t{i:02}" for i in range(12))
    message = str(fes.UnknownTopic("x", known))
    assert "t09" in message
    assert "t10" not in message
    assert message.endswith(", …")


def test_unknown_topic_without_known_topics() -> None:
    """An unknown topic with no registry to show still names the topic, without a list."""
    message = str(fes.UnknownTopic("x"))
    assert message == "unknown topic 'x': it is not registered"


def test_policy_error_names_app_leader_position_and_cause() -> None:
    """A policy failure names the follower, the leader, the position and the original error."""
    cause = ZeroDivisionError("division by zero")
    error = fes.PolicyError("tally", "school", 7, cause)
    assert (error.app, error.leader, error.position, error.error) == ("tally", "school", 7, cause)
    assert str(error) == (
        "policy of 'tally' failed on 'school' position 7: ZeroDivisionError: division by zero"
    )


class Strange:
    """An event type nobody handles."""


def test_unhandled_event_names_type_and_place() -> None:
    """An unhandled event names the event type and, when known, where it was refused."""
    error = fes.UnhandledEvent(Strange, "dog")
    assert (error.event_type, error.where) == (Strange, "dog")
    assert str(error).startswith("no handler for event type 'Strange' in dog; ")
    assert str(fes.UnhandledEvent(Strange)).startswith("no handler for event type 'Strange'; ")
