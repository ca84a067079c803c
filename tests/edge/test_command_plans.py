"""Command plans: a command's checks, fold and encoding worked out once, per aggregate.

``Application.execute`` and ``Batch.execute`` keep, per command, a plan of
how it runs on its aggregate: a result of one event of a class the plan
knows is checked, folded and encoded with a lookup, and anything else goes
the general way (``fes.decide``, the fold, the codec).  Either way a command
gives the same events, states, payloads and errors; these tests run the bad
results through a plan already made, and the same command on two aggregates.
"""

from __future__ import annotations

import abc
import os
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import pytest
from attrs import frozen

import fes
from fes.edge._application import PLANS, _uuid4_str
from fes.edge.codec import Codec
from fes.errors import EncodeError
from fes.events import Metadata

from .conftest import Place


@frozen
class Opened:
    owner: str


@frozen
class Noted:
    text: str


@frozen
class LoudNoted(Noted):
    """A subclass of an owned event: owned, folded by Noted's handler, not written."""


@frozen
class Memo:
    text: str


@frozen
class Pad:
    owner: str
    notes: tuple[str, ...] = ()


def opened(pad: Pad | None, event: Opened) -> Pad:
    return Pad(event.owner)


def noted(pad: Pad, event: Noted) -> Pad:
    if event.text == "boom":
        raise ValueError("the projector refuses boom")
    return Pad(pad.owner, (*pad.notes, event.text))


def memo(state: str | None, event: Memo) -> str:
    return event.text


def open_pad(pad: Pad | None, owner: str) -> list[Opened]:
    return [Opened(owner)]


def note(pad: Pad, text: Any) -> list[Noted]:
    return [Noted(text)]


def say(state: object, result: Any) -> Any:
    """Returns what it is given: any result, through the plan of one command."""
    return result


def tag(pad: Pad, text: str) -> list[Noted]:
    return [Noted(text)]


pads = fes.Aggregate(
    name="pad", initial=None, apply=fes.projector(opened, noted, name="pad"),
    events=[Opened, Noted], commands=[open_pad, note, say],
)
memos = fes.Aggregate(
    name="memo", initial=None, apply=fes.projector(memo, name="memo"), events=[Memo],
    commands=[say],
)
DESK = fes.App("desk", aggregates=[pads, memos])


def _error(call: Any) -> tuple[type[BaseException], str]:
    with pytest.raises(Exception) as caught:
        call()
    return caught.type, str(caught.value)


BAD_RESULTS = [
    None, "Opened", b"x", 5, {Opened("ann")}, [Memo("m")], [Opened("a"), Memo("m")],
    (Memo("m"),), [LoudNoted("loud")], [Noted("boom")], [Noted(5)],
]


@pytest.mark.parametrize("result", BAD_RESULTS, ids=repr)
def test_a_planned_command_refuses_what_the_general_way_refuses(
    place: Place, result: Any
) -> None:
    """A bad result, through a plan made by a good one, fails as decide/fold/encode make it."""
    app = place.app(DESK)
    app.execute(pads, "p", open_pad, "ann")
    app.execute(pads, "p", say, [Noted("first")])  # the plan of say on pads is made

    def general(state: Any, version: int) -> tuple[type[BaseException], str]:
        def run() -> None:
            new = fes.decide(pads, say, state, result)
            pads.fold(new, state)
            app.codec.encode(new[0], stream="p", version=version)

        return _error(run)

    state = app.get(pads, "p")
    assert _error(lambda: app.execute(pads, "p", say, result)) == general(state, 3)
    batch = app.batch()
    batch.execute(pads, "p", say, [Noted("kept")])
    state = batch.state(pads, "p")
    assert _error(lambda: batch.execute(pads, "p", say, result)) == general(state, 4)
    assert len(batch) == 1  # the refused command added nothing
    assert [r.event for r in app.commit(batch)] == [Noted("kept")]
    assert app.get(pads, "p") == Pad("ann", ("first", "kept"))
    # on an id new_id() gave, the read-free first try fails, and so does the read's
    found = _error(lambda: app.execute(pads, app.new_id(), say, result))
    assert found[0] is general(None, 1)[0]


def test_a_planned_command_still_refuses_a_state_it_does_not_accept(place: Place) -> None:
    """The state check is in the plan: the same CommandError before the command runs."""
    app = place.app(DESK)
    app.execute(pads, "p", open_pad, "ann")
    app.execute(pads, "p", note, "one")  # the plan of note is made
    message = r"command 'note' of aggregate 'pad' expects Pad, but got no state yet"
    with pytest.raises(fes.CommandError, match=message):
        app.execute(pads, "q", note, "two")
    with pytest.raises(fes.CommandError, match=message):
        app.execute(pads, app.new_id(), note, "two")
    batch = app.batch()
    with pytest.raises(fes.CommandError, match=message):
        batch.execute(pads, "q", note, "two")
    assert app.stream("q") == []


def test_a_plan_does_not_leak_between_aggregates(place: Place) -> None:
    """One command on two aggregates: each call is checked against its own aggregate."""
    app = place.app(DESK)
    for _ in range(2):  # a plan made for one aggregate, then for the other, and back
        app.execute(pads, "p", say, [Opened("ann")] if not app.stream("p") else [Noted("n")])
        with pytest.raises(fes.CommandError, match="Opened, which aggregate 'memo' does not own"):
            app.execute(memos, "m", say, [Opened("ann")])
        app.execute(memos, "m", say, [Memo("hello")])
        with pytest.raises(fes.CommandError, match="Memo, which aggregate 'pad' does not own"):
            app.execute(pads, "p", say, [Memo("hello")])
        batch = app.batch()
        batch.execute(memos, "m2", say, [Memo("in a batch")])
        with pytest.raises(fes.CommandError, match="does not own"):
            batch.execute(pads, "p2", say, [Memo("m")])
        app.commit(batch)
    assert app.get(memos, "m") == "hello"
    assert app.get(pads, "p") == Pad("ann", ("n",))
    # an undeclared command's state check, read once, is its own aggregate's question
    app.execute(pads, "p", tag, "sit")
    message = "'tag' of aggregate 'memo' expects Pad, but got a str"
    with pytest.raises(fes.CommandError, match=message):
        app.execute(memos, "m", tag, "sit")


def test_a_plan_and_the_general_way_store_the_same(place: Place) -> None:
    """Events, versions, topics and payloads are the same whichever way a command took."""
    app = place.app(DESK)
    app.execute(pads, "p", open_pad, "ann")
    app.execute(pads, "p", say, [Noted("one")])  # one event of a known class: the plan's way
    app.execute(pads, "p", say, (Noted("two"),))  # a tuple: the general way
    app.execute(pads, "p", say, [Noted("three"), Noted("four")])
    app.execute(pads, "p", say, [Noted("five")], metadata=Metadata(correlation_id="c"))
    batch = app.batch()
    batch.execute(pads, "p", say, [Noted("six")])
    batch.execute(pads, "p", say, [])
    app.commit(batch)
    stored = app.store.read_stream("p")
    assert [s.version for s in stored] == list(range(1, 8))
    codec = Codec([pads])
    for row, event in zip(stored[1:], app.stream("p")[1:], strict=True):
        encoded = codec.encode(event.event, stream="p", version=row.version)
        assert (row.topic, row.payload) == encoded
    assert app.get(pads, "p") == Pad("ann", ("one", "two", "three", "four", "five", "six"))
    assert app.stream("p")[5].metadata == Metadata(correlation_id="c")


def test_a_rollback_takes_back_what_a_plan_added(place: Place) -> None:
    """Events a plan added are journaled as _add journals them."""
    app = place.app(DESK)
    batch = app.batch()
    batch.execute(pads, "p", open_pad, "ann")
    mark = batch.savepoint()
    batch.execute(pads, "p", note, "one")
    batch.execute(pads, "p", note, "two")
    assert batch.state(pads, "p") == Pad("ann", ("one", "two"))
    batch.rollback(mark)
    assert batch.state(pads, "p") == Pad("ann")
    batch.execute(pads, "p", note, "three")
    assert [r.version for r in app.commit(batch)] == [1, 2]
    assert app.get(pads, "p") == Pad("ann", ("three",))


def test_a_codec_that_seals_payloads_leaves_every_command_to_the_general_way(
    place: Place,
) -> None:
    """With compression no payload is stored bare: no event class is in a plan."""
    app = place.app(DESK, compress=True)
    assert app._kinds["pad"] == {}
    app.execute(pads, "p", open_pad, "ann")
    app.execute(pads, "p", note, "x" * 500)
    assert app.get(pads, "p") == Pad("ann", ("x" * 500,))
    assert app.store.read_stream("p")[1].payload[0] != ord("{")


def test_the_plans_kept_are_bounded(place: Place) -> None:
    """A new function per call (a lambda) does not grow the plans without end."""
    app = place.app(DESK)
    app.execute(pads, "p", open_pad, "ann")
    for n in range(PLANS + 10):
        app.execute(pads, "p", lambda pad, n=n: [Noted(str(n))])
        assert len(app._plans) <= PLANS
    assert len(app.get(pads, "p").notes) == PLANS + 10


def test_a_fast_uuid4_string_is_str_of_uuid4(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bytes give the same string as ``str(uuid.UUID(bytes=..., version=4))``."""
    for raw in (bytes(16), b"\xff" * 16, *(os.urandom(16) for _ in range(200))):
        monkeypatch.setattr(os, "urandom", lambda n, raw=raw: raw)
        assert _uuid4_str() == str(uuid.UUID(bytes=raw, version=4))
    monkeypatch.undo()
    found = uuid.UUID(_uuid4_str())
    assert (found.version, found.variant) == (4, uuid.RFC_4122)


def test_new_id_calls_an_injected_id_factory(place: Place) -> None:
    """Only the default factory is made without it: an injected one is called."""
    given = uuid.UUID(int=7)
    app = place.app(DESK, ids=lambda: given)
    assert app.new_id() == str(given)


# --- execute's read-free first try, the plan's way -----------------------------------


def test_a_first_command_the_plans_way_keeps_the_cache_and_takes_snapshots(
    place: Place,
) -> None:
    """On a new id, a cached state and a snapshot are kept as on the general way."""
    app = place.app(DESK, cache_size=10, snapshot_every=1)
    stream = app.new_id()
    [recorded] = app.execute(pads, stream, open_pad, "ann")
    assert (recorded.stream, recorded.version, recorded.topic) == (stream, 1, "pad.Opened")
    assert app._cache[("pad", stream)] == (1, Pad("ann"))
    snapshot = app.store.load_snapshot(stream)
    assert snapshot is not None and snapshot.version == 1
    assert app.load(pads, stream) == (Pad("ann"), 1)


def test_a_first_command_the_plans_way_that_conflicts_is_decided_again_on_a_read(
    place: Place,
) -> None:
    """The id was used elsewhere first: its cached state is dropped, the command decided again."""
    app = place.app(DESK, cache_size=10)
    other = place.app(DESK)
    stream = app.new_id()
    other.execute(pads, stream, open_pad, "bob")
    [recorded] = app.execute(pads, stream, open_pad, "ann")
    assert recorded.version == 2
    assert app.get(pads, stream) == Pad("ann")


def test_a_first_command_keeps_a_clocks_moment_in_utc(place: Place) -> None:
    """An injected clock's datetime, in another zone, is recorded as the same moment in UTC."""
    moment = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    app = place.app(DESK, clock=lambda: moment)
    [recorded] = app.execute(pads, app.new_id(), open_pad, "ann")
    assert recorded.timestamp == moment and recorded.timestamp.tzinfo is UTC
    assert app.stream(recorded.stream) == [recorded]


def test_a_first_command_with_metadata_or_several_events_takes_the_general_way(
    place: Place,
) -> None:
    """What the plan does not take as it is still starts a new id's stream without a read."""
    app = place.app(DESK)
    meta = Metadata(correlation_id="c")
    stream = app.new_id()
    [recorded] = app.execute(pads, stream, open_pad, "ann", metadata=meta)
    assert (recorded.version, recorded.metadata) == (1, meta)
    other = app.new_id()
    found = app.execute(pads, other, say, [Opened("bob"), Noted("n")])
    assert [r.version for r in found] == [1, 2]
    assert app.stream(other) == found
    empty = app.new_id()
    assert app.execute(pads, empty, say, []) == []
    assert app.execute(pads, empty, open_pad, "cy")[0].version == 1


# --- what plans leave to the general way ---------------------------------------------


@frozen
class Shouted(Noted):
    """An owned subclass of Noted, folded by Noted's handler."""


class Unhashable:
    """A command object that cannot be a dictionary key."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return other is self

    def __call__(self, pad: Pad, text: str) -> list[Noted]:
        return [Noted(text)]


def quiet(state: Literal[None], owner: str) -> list[Opened]:
    """A state hint isinstance cannot test: decide's own check."""
    return [Opened(owner)]


loud_pads = fes.Aggregate(
    name="pad", initial=None, apply=fes.projector(opened, noted, name="pad"),
    events=[Opened, Noted, Shouted],
)
LOUD_DESK = fes.App("desk", aggregates=[loud_pads])
BOTH = fes.combine(pads, memos, name="both")
COMBINED = fes.App("desk", aggregates=[BOTH])


def test_an_owned_subclass_is_folded_by_its_base_classs_handler(place: Place) -> None:
    """The plan finds the handler the fold finds: a base class's."""
    app = place.app(LOUD_DESK)
    batch = app.batch()
    batch.execute(loud_pads, "p", say, [Opened("ann")])
    batch.execute(loud_pads, "p", say, [Shouted("hey")])
    app.commit(batch)
    app.execute(loud_pads, "p", say, [Shouted("ho")])
    assert app.get(loud_pads, "p") == Pad("ann", ("hey", "ho"))
    assert [r.topic for r in app.stream("p")] == ["pad.Opened", "pad.Shouted", "pad.Shouted"]


def test_commands_a_plan_cannot_hold_run_the_general_way(place: Place) -> None:
    """A command object that cannot be a key, a hint decide tests itself, a combinator's."""
    app = place.app(DESK)
    shout = Unhashable()
    for stream in ("p", app.new_id()):
        assert app.execute(pads, stream, quiet, "ann")[0].version == 1
        with pytest.raises(fes.CommandError, match="expects Literal"):
            app.execute(pads, stream, quiet, "bob")
        assert app.execute(pads, stream, shout, "one")[0].version == 2
        batch = app.batch()
        batch.execute(pads, stream, shout, "two")
        app.commit(batch)
        assert app.get(pads, stream) == Pad("ann", ("one", "two"))
    combined = place.app(COMBINED)
    lifted = BOTH.commands["memo.say"]
    for stream in ("m", combined.new_id()):
        assert combined.execute(BOTH, stream, lifted, []) == []
        [recorded] = combined.execute(BOTH, stream, lifted, [Memo("hi")])
        assert recorded.version == 1
        assert combined.get(BOTH, stream) == (None, "hi")


def test_a_rollback_takes_back_what_the_general_way_added(place: Place) -> None:
    """Several events of one command are journaled once, and taken back together."""
    app = place.app(DESK)
    batch = app.batch()
    batch.execute(pads, "p", open_pad, "ann")
    mark = batch.savepoint()
    batch.execute(pads, "p", say, [Noted("a"), Noted("b")])
    batch.execute(pads, "p", note, "c")
    batch.rollback(mark)
    assert batch.state(pads, "p") == Pad("ann")
    assert len(batch) == 1


class Remark(abc.ABC):  # noqa: B024 - a class to register events under, nothing abstract
    """A handler's class that an event is a virtual subclass of (not by its MRO)."""


@frozen
class Aside:
    text: str


Remark.register(Aside)


def remarked(pad: Pad, event: Remark) -> Pad:
    return pad


virtual_pads = fes.Aggregate(
    name="pad", initial=None, apply=fes.projector(opened, (Remark, remarked), name="pad"),
    events=[Opened, Aside],
)


def test_a_virtual_subclass_is_refused_by_the_fold_as_before(place: Place) -> None:
    """An owned class whose handler the projector's dispatch does not find: UnhandledEvent."""
    app = place.app(fes.App("desk", aggregates=[virtual_pads]))
    assert Aside not in app._kinds["pad"]
    app.execute(virtual_pads, "p", say, [Opened("ann")])
    with pytest.raises(fes.errors.UnhandledEvent, match="Aside") as caught:
        app.execute(virtual_pads, "p", say, [Aside("psst")])
    assert caught.value.where == "pad"


def test_a_planned_command_in_a_batch_takes_keyword_arguments(place: Place) -> None:
    """Keywords reach the command on the plan's way, as positional arguments do."""
    app = place.app(DESK)
    batch = app.batch()
    batch.execute(pads, "p", open_pad, owner="ann")
    assert batch.execute(pads, "p", note, text="by name") == [Noted("by name")]
    assert batch.execute(pads, "p", note, "by place") == [Noted("by place")]
    with pytest.raises(TypeError):
        batch.execute(pads, "p", note, "twice", text="twice")
    assert len(batch) == 3
    app.commit(batch)
    assert app.get(pads, "p") == Pad("ann", ("by name", "by place"))


def label(pad: Pad, stream: str, aggregate: str, command: str) -> list[Noted]:
    """A command whose parameters share their names with execute's own."""
    return [Noted(f"{stream}/{aggregate}/{command}")]


LABELLING = fes.App("desk", aggregates=[fes.Aggregate(
    name="pad", initial=None, apply=fes.projector(opened, noted, name="pad"),
    events=[Opened, Noted], commands=[open_pad, label],
)])


def test_a_command_may_name_its_parameters_as_execute_names_its_own(place: Place) -> None:
    """aggregate, stream and command are execute's by position only: by name they are the
    command's, on a new stream, a read one and in a batch; metadata stays execute's."""
    app = place.app(LABELLING)
    (aggregate,) = LABELLING.aggregates
    minted = app.new_id()
    app.execute(aggregate, minted, open_pad, "ann")
    (first,) = app.execute(aggregate, minted, label, stream="s", aggregate="a", command="c")
    assert first.event == Noted("s/a/c")
    batch = app.batch()
    batch.execute(aggregate, minted, label, "s2", command="c2", aggregate="a2")
    app.commit(batch)
    assert app.get(aggregate, minted) == Pad("ann", ("s/a/c", "s2/a2/c2"))
    with pytest.raises(EncodeError, match=r"not a fes\.Metadata"):
        app.execute(aggregate, minted, label, "s", "a", "c", metadata="not metadata")
    assert app.store.stream_version(minted) == 3


def test_wrong_arguments_to_a_command_are_a_command_error_and_store_nothing(
    place: Place,
) -> None:
    """On a minted id, on a read stream and in a batch: the same error, nothing stored."""
    app = place.app(DESK)
    minted = app.new_id()
    takes = "command 'open_pad' of aggregate 'pad' takes (owner) after the state"
    with pytest.raises(fes.CommandError, match=re.escape(takes)):
        app.execute(pads, minted, open_pad, "ann", "bob")
    app.execute(pads, minted, open_pad, "ann")
    with pytest.raises(fes.CommandError, match="takes \\(text\\) after the state, but was given "
                       "0 positional arguments and keyword words"):
        app.execute(pads, minted, note, words="hello")
    batch = app.batch()
    with pytest.raises(fes.CommandError, match="missing a required argument: 'text'"):
        batch.execute(pads, minted, note)
    assert len(batch) == 0
    app.commit(batch)
    assert app.store.stream_version(minted) == 1
