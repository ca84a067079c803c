"""One exception hierarchy: every fes error is a FesError and names its data."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
import warnings

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


EVERYDAY = {"CommandError", "ConcurrencyError", "FesError", "Rejected"}
# errors added after 0.1.0: never exported at the top level, so nothing to move
NEW_SINCE_0_1 = {
    "CommandMistake", "FollowerStopped", "OutcomeUnknown", "StoreUnavailable", "ViewError"
}


def test_only_the_everyday_errors_are_top_level() -> None:
    """fes.__all__ lists the four everyday errors; the rest live only in fes.errors."""
    names = {cls.__name__ for cls in _error_classes()}
    assert names & set(fes.__all__) == EVERYDAY
    for name in EVERYDAY:
        assert getattr(fes, name) is getattr(fes.errors, name)


@pytest.mark.parametrize(
    "name", sorted({c.__name__ for c in _error_classes()} - EVERYDAY - NEW_SINCE_0_1), ids=str
)
def test_a_moved_error_still_resolves_with_a_warning(name: str) -> None:
    """fes.<Name> of 0.1.0 returns fes.errors.<Name>, warning where it lives now."""
    message = f"fes.{name} is deprecated; use fes.errors.{name}"
    with pytest.warns(DeprecationWarning, match=f"^{message}$"):
        assert getattr(fes, name) is getattr(fes.errors, name)
    assert name not in dir(fes)


def test_import_fes_is_enough_to_reach_fes_errors() -> None:
    """``import fes`` alone makes ``fes.errors`` an attribute, in a fresh interpreter."""
    code = "import fes; print(fes.errors.CipherError.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "fes.errors"


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A name fes never exported raises the usual AttributeError, without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="module 'fes' has no attribute 'Nonesuch'"):
            fes.Nonesuch  # noqa: B018
        assert not hasattr(fes, "errors_")


def test_fes_error_catches_nothing_foreign() -> None:
    """FesError is not a base of the built-in errors a user's bug raises."""
    for foreign in (KeyError, TypeError, ValueError, AttributeError):
        assert not issubclass(foreign, fes.FesError)


def test_errors_keep_their_builtin_family() -> None:
    """Errors that are also TypeError/LookupError/ValueError stay catchable as those."""
    assert issubclass(fes.errors.DefinitionError, TypeError)
    assert issubclass(fes.CommandError, TypeError)
    assert issubclass(fes.errors.UnhandledEvent, LookupError)
    assert issubclass(fes.errors.SystemDefinitionError, ValueError)
    assert issubclass(fes.errors.StoreURLError, ValueError)
    assert issubclass(fes.errors.UnknownTopic, fes.errors.DecodeError)
    assert issubclass(fes.errors.CipherError, fes.errors.DecodeError)
    assert issubclass(fes.ConcurrencyError, fes.errors.StoreError)
    assert issubclass(fes.errors.DuplicateTracking, fes.errors.StoreError)


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
    error = fes.errors.DuplicateTracking("orders", 42)
    assert (error.leader, error.position) == ("orders", 42)
    assert "'orders'" in str(error)
    assert "position 42" in str(error)


def test_outcome_unknown_gives_its_advice_before_the_connections_error() -> None:
    """The attempt, the advice, then the lost connection's text: a log line cut short keeps
    what to do. Its fields survive a pickle, as a worker process's error would travel."""
    error = fes.errors.OutcomeUnknown(
        "append to 'orders'", "postgresql://shop@db/shop", "server closed the connection"
    )
    assert isinstance(error, fes.errors.StoreError)
    assert str(error) == (
        "unknown whether the attempt to append to 'orders' took effect: the connection to "
        "postgresql://shop@db/shop was lost while committing. It took effect whole or not "
        "at all: once the server answers, read what it writes (a stream's version) before "
        "trying again (the connection's error: server closed the connection)"
    )
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is fes.errors.OutcomeUnknown and str(again) == str(error)
    assert (again.what, again.url, again.reason) == (error.what, error.url, error.reason)


def test_outcome_unknown_takes_the_advice_of_a_raiser_that_knows_better() -> None:
    """A runner's follower knows that stepping again is safe: its advice replaces the
    default, and survives a pickle."""
    error = fes.errors.OutcomeUnknown(
        "record a batch", "postgresql://shop@db/shop", "server closed the connection",
        "stepping again is safe",
    )
    assert str(error) == (
        "unknown whether the attempt to record a batch took effect: the connection to "
        "postgresql://shop@db/shop was lost while committing. It took effect whole or not "
        "at all: stepping again is safe (the connection's error: server closed the "
        "connection)"
    )
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and again.advice == "stepping again is safe"


def test_unknown_topic_names_the_topic_and_some_known_ones() -> None:
    """An unknown topic names itself and lists up to ten registered topics, sorted."""
    error = fes.errors.UnknownTopic("dog.Renamed", frozenset({"b.B", "a.A"}))
    assert error.topic == "dog.Renamed"
    assert "'dog.Renamed'" in str(error)
    assert "registered topics: a.A, b.B" in str(error)
    assert "…" not in str(error)


def test_unknown_topic_abbreviates_a_long_list() -> None:
    """With more than ten registered topics, ten are shown and an ellipsis marks the rest."""
    known = frozenset(f"t{i:02}" for i in range(12))
    message = str(fes.errors.UnknownTopic("x", known))
    assert "t09" in message
    assert "t10" not in message
    assert message.endswith(", …")


def test_unknown_topic_without_known_topics() -> None:
    """An unknown topic with no registry to show still names the topic, without a list."""
    message = str(fes.errors.UnknownTopic("x"))
    assert message == "unknown topic 'x': it is not registered"


def test_policy_error_names_app_leader_position_and_cause() -> None:
    """A policy failure names the follower, the leader, the position and the original error."""
    cause = ZeroDivisionError("division by zero")
    error = fes.errors.PolicyError("tally", "school", 7, cause)
    assert (error.app, error.leader, error.position, error.error) == ("tally", "school", 7, cause)
    assert str(error) == (
        "policy of 'tally' failed on 'school' position 7: ZeroDivisionError: division by zero"
    )


class Strange:
    """An event type nobody handles."""


def test_unhandled_event_names_type_and_place() -> None:
    """An unhandled event names the event type and, when known, where it was refused."""
    error = fes.errors.UnhandledEvent(Strange, "dog")
    assert (error.event_type, error.where) == (Strange, "dog")
    assert str(error).startswith("no handler for event type 'Strange' in dog; ")
    message = str(fes.errors.UnhandledEvent(Strange))
    assert message.startswith("no handler for event type 'Strange'; ")
