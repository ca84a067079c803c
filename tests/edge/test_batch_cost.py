"""What adding to a batch costs does not grow with the events already pending.

Nothing here is timed: the tests look at the work a command does (the copies
of the stream's pending events it makes, the memory it takes at its peak) with
few and with many events pending on the same stream.
"""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import pytest

import fes
from fes.edge import Application, Batch
from fes.edge._batch import Pending, new_pending
from fes.edge.stores._memory import MemoryDatabase
from fes.events import NO_METADATA
from fes.examples.bank import Account, accounts, deposit, open_account

BANK = fes.App("bank", aggregates=[accounts])


def _batch(deposits: int) -> tuple[Application, Batch]:
    app = Application(BANK, MemoryDatabase())
    batch = app.batch()
    batch.execute(accounts, "acc", open_account, "Ada")
    for _ in range(deposits):
        batch.execute(accounts, "acc", deposit, 1)
    return app, batch


def _least_peak(batch: Batch, commands: int) -> int:
    """The least memory, in bytes, one of ``commands`` deposits takes at its peak."""
    least = None
    tracemalloc.start()
    try:
        for _ in range(commands):
            tracemalloc.reset_peak()
            before, _peak = tracemalloc.get_traced_memory()
            batch.execute(accounts, "acc", deposit, 1)
            _now, peak = tracemalloc.get_traced_memory()
            least = peak - before if least is None else min(least, peak - before)
    finally:
        tracemalloc.stop()
    assert least is not None
    return least


def test_a_command_extends_the_streams_pending_events_in_place() -> None:
    """Commands on one stream add to the same lists: the pending events are never copied."""
    _app, batch = _batch(10)
    slot = batch.pending["acc"]
    events, metadata, rows = slot.events, slot.metadata, slot.rows
    batch.execute(accounts, "acc", deposit, 1)
    batch.emit(accounts, "acc", [deposit(batch.state(accounts, "acc"), 2)[0]])
    after = batch.pending["acc"]
    assert after.events is events and after.metadata is metadata and after.rows is rows
    assert len(after.events) == len(after.metadata) == len(after.rows) // 3 == 13


def test_a_commands_peak_memory_does_not_grow_with_the_pending_events() -> None:
    """One command takes as much memory with 5,000 events pending as with 10."""
    _app, few = _batch(10)
    _app, many = _batch(5_000)
    # copying three sequences of 5,000 pointers would take 120,000 bytes or more
    assert _least_peak(many, 20) < _least_peak(few, 20) + 4_000


def test_a_rollback_cuts_a_long_stream_back_to_its_savepoint() -> None:
    """After many commands, a rollback leaves the events, rows and state of its mark."""
    app, batch = _batch(1_000)
    mark = batch.savepoint()
    for _ in range(500):
        batch.execute(accounts, "acc", deposit, 2)
    inner = batch.savepoint()
    batch.execute(accounts, "acc", deposit, 3)
    batch.rollback(inner)
    assert len(batch) == 1_501
    batch.rollback(mark)
    slot = batch.pending["acc"]
    assert len(slot.events) == len(slot.metadata) == len(slot.rows) // 3 == 1_001
    assert batch.state(accounts, "acc") == Account("Ada", balance=1_000)
    recorded = app.commit(batch)
    assert [r.version for r in recorded] == list(range(1, 1_002))
    assert app.get(accounts, "acc") == Account("Ada", balance=1_000)


def test_a_batch_keeps_no_state_between_a_mark_and_the_current_one() -> None:
    """States a stream passed through after a mark are freed; the state at the mark is kept."""
    _app, batch = _batch(1)
    mark = batch.savepoint()
    at_mark = weakref.ref(batch.state(accounts, "acc"))
    batch.execute(accounts, "acc", deposit, 1)
    passed = weakref.ref(batch.state(accounts, "acc"))
    batch.execute(accounts, "acc", deposit, 1)
    gc.collect()
    assert passed() is None
    assert at_mark() is not None
    batch.rollback(mark)
    assert batch.state(accounts, "acc") is at_mark()


def test_a_stream_keeps_one_slot_changed_in_place() -> None:
    """Commands and emits change the stream's one slot; a rollback puts its state back."""
    _app, batch = _batch(1)
    slot = batch.pending["acc"]
    mark = batch.savepoint()
    at_mark = slot.state
    batch.execute(accounts, "acc", deposit, 2)  # the plan's way
    batch.emit(accounts, "acc", deposit(batch.state(accounts, "acc"), 3))  # type: ignore[arg-type]  # the general way
    assert batch.pending["acc"] is slot
    assert slot.state == Account("Ada", balance=6) and len(slot.events) == 4
    batch.rollback(mark)
    assert batch.pending["acc"] is slot
    assert slot.state is at_mark and len(slot.events) == len(slot.rows) // 3 == 2


def test_a_slot_unpacks_and_compares_as_its_six_fields() -> None:
    """A Pending is what the named tuple it was: its fields in order, equal by value."""
    _app, batch = _batch(0)
    slot = batch.pending["acc"]
    aggregate, version, state, events, metadata, rows = slot
    assert (aggregate, version, state) == (accounts, 0, Account("Ada"))
    assert events is slot.events and metadata is slot.metadata and rows is slot.rows
    again = Pending(aggregate, version, state, list(events), list(metadata), list(rows))
    assert again == slot and again != tuple(slot) and Pending(accounts, 0, None) != slot
    assert Pending(accounts, 0, None).events == ()
    assert repr(again).startswith("Pending(aggregate=") and "version=0" in repr(again)
    assert new_pending(tuple(slot)) == slot
    with pytest.raises(TypeError):
        hash(slot)


def test_a_command_keeps_one_object_per_event_for_the_collector() -> None:
    """A batch holds each event and flat rows: no tuple per event for the collector to count.

    The garbage collector's young count goes up for each container made and
    kept; a batch of 10,000 commands that kept two per event would set off
    twice as many collections, each of which walks the young state whole.
    """
    app, batch = _batch(0)
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(1_000):
            batch.execute(accounts, "acc", deposit, 1)
        kept = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert 1_000 <= kept < 1_100  # the 1,000 events, and nothing per event beside them
    slot = batch.pending["acc"]
    assert len(slot.rows) == 3 * len(slot.events) == 3_003
    for version, (event, meta) in enumerate(zip(slot.events, slot.metadata, strict=True), 1):
        topic, payload = app.codec.encode(event, stream="acc", version=version)
        assert slot.rows[3 * version - 3 : 3 * version] == [topic, payload, None]
        assert meta is NO_METADATA
