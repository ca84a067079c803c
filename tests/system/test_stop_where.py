"""A stop record's ``where`` names what failed: the upcaster, or the codec, not the policy.

An event of the leader that cannot be read is not the policy's fault: its
stop record points at the upcaster's line when an upcaster raised, and at
the codec when a stored payload does not decode.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen

import fes
import fes.edge.codec
from fes.edge import SyncRunner
from fes.edge._skips import STOPS_STREAM, FollowerHalted
from fes.edge.stores import NewEvent


@fes.event(topic="notes.Noted")
@frozen
class NotedV1:
    text: str


def _add_size(data: Any) -> Any:
    return {**data, "size": len(data["txt"])}  # a bug: the field is "text"


@fes.event(topic="notes.Noted", upcasters=[_add_size])
@frozen
class Noted:
    text: str
    size: int


@frozen
class Seen:
    size: int


def _count(state: int | None, event: object) -> int:
    return (state or 0) + 1


def _on_noted(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    return [fes.Emit(seen, recorded.stream, [Seen(recorded.event.size)])]


notes_v1 = fes.Aggregate("notes", initial=None, apply=_count, events=[NotedV1])
notes = fes.Aggregate("notes", initial=None, apply=_count, events=[Noted])
seen = fes.Aggregate("seen", initial=None, apply=_count, events=[Seen])
writer = fes.App("writer", aggregates=[notes_v1])
system = fes.System(
    [fes.App("writer", aggregates=[notes]),
     fes.App("reader", aggregates=[seen], policy=_on_noted)],
    pipes=[["writer", "reader"]],
)


def _write(states: Any, text: str) -> list[NotedV1]:
    return [NotedV1(text)]


def _one_seen(recorded: fes.Recorded[Any]) -> Any:
    return fes.Emit(seen, recorded.stream, [Seen(1)])  # a bug: not in a list


def _noted(recorded: fes.Recorded[Any]) -> bool:
    return True


#: The same pipeline, its policy's bug inside each of fes's combinators.
combined = {
    "on": fes.on(Noted, _one_seen),
    "when": fes.when(_noted, _one_seen),
    "merge": fes.merge(fes.nothing, _one_seen),
}


def _stop_record(url: str, system: fes.System = system) -> FollowerHalted:
    with SyncRunner(system, url) as runner:
        runner.run_until_quiet(check=False)
        (record,) = [r.event for r in runner.app("reader").stream(STOPS_STREAM)]
    assert isinstance(record, FollowerHalted)
    return record


def test_an_upcaster_that_raises_is_named_by_its_line(tmp_path: Path) -> None:
    """The upcaster's file and line of the raise, not the policy's definition."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with fes.edge.Application(writer, store=url, env={}) as app:
        app.execute(notes_v1, "n-1", _write, "hello")
    record = _stop_record(url)
    _, first = inspect.getsourcelines(_add_size)
    assert record.where == f"{__file__}:{first + 1}", record.where
    assert record.error.startswith("UpcastError: upcasting Noted from version 1 to 2")
    assert "KeyError" in record.error


def test_a_payload_that_does_not_decode_names_the_codec(tmp_path: Path) -> None:
    """A corrupt stored payload: where is the codec's line that refused it."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    _, payload = fes.edge.Codec([notes]).encode(Noted("x", 1), stream="n-1", version=1)
    corrupt = payload.replace(b'"x"', b"5")  # schema 2, with a number for the text
    assert corrupt != payload
    with fes.edge.Application(system.apps[0], store=url, env={}) as app:
        app.store.append([NewEvent("n-1", 1, "notes.Noted", corrupt, 0, None)])
    record = _stop_record(url)
    codec = os.path.dirname(fes.edge.codec.__file__)
    assert record.where.startswith(os.path.join(codec, "_codec.py") + ":"), record.where
    assert record.error.startswith("DecodeError: cannot decode 'notes.Noted'")


@pytest.mark.parametrize("combinator", list(combined))
def test_a_bad_result_inside_a_combinator_is_named_by_its_function(
    combinator: str, tmp_path: Path
) -> None:
    """The function inside fes.on (when, merge), not fes's own code, is where it stopped.

    (A policy built with fes.on returning a bare fes.Emit used to stop with
    ``where`` in fes/policies.py and a message naming only the follower.)
    """
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with fes.edge.Application(system.apps[0], store=url, env={}) as app:
        app.execute(notes, "n-1", lambda state: [Noted("hi", 2)])
    bad = fes.System(
        [system.apps[0], fes.App("reader", aggregates=[seen], policy=combined[combinator])],
        pipes=[["writer", "reader"]],
    )
    record = _stop_record(url, bad)
    _, first = inspect.getsourcelines(_one_seen)
    assert record.where == f"{__file__}:{first}", record.where
    assert "the policy '_one_seen' returned a bare fes.Emit on 'seen'" in record.error
