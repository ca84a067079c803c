"""The in-memory store: the conformance suite, and what only it promises."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import pytest

from fes.edge.stores import Database, MemoryDatabase, Resealed, Tracking, open_database
from fes.errors import StoreError
from fes.testing.stores import StoreConformance
from fes.testing.stores import new_event as new
from fes.testing.stores import new_snapshot as snapshot


class TestMemory(StoreConformance):
    """The memory store keeps every promise of the store protocol."""

    @pytest.fixture
    def database(self) -> Iterator[Database]:
        """A fresh memory:// database."""
        database = open_database("memory://")
        yield database
        database.close()


def test_each_memory_database_is_fresh() -> None:
    """Two memory:// databases share nothing: there is no global registry."""
    first, second = open_database("memory://"), open_database("memory://")
    first.store("shop").append([new("a", 1)])
    assert second.apps() == []
    assert second.store("shop").read_log() == []
    assert isinstance(first, MemoryDatabase)


def test_reads_are_snapshots_unaffected_by_later_appends() -> None:
    """A list returned by a read does not change when the store changes later."""
    store = MemoryDatabase().store("shop")
    store.append([new("a", 1)])
    log = store.read_log()
    stream = store.read_stream("a")
    store.append([new("a", 2)])
    assert len(log) == 1 and len(stream) == 1


def test_memory_database_works_as_a_context_manager() -> None:
    """Leaving a with block closes the database."""
    with MemoryDatabase() as database:
        store = database.store("shop")
        store.append([new("a", 1)])
    with pytest.raises(StoreError, match="closed"):
        store.read_log()


class InterruptedCondition(threading.Condition):
    """A condition whose ``with`` Ctrl-C interrupts just after it takes the lock, as it can."""

    def __enter__(self) -> bool:
        super().__enter__()
        raise KeyboardInterrupt


def test_an_interrupt_never_leaves_the_lock_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C at the worst moment of a write, a wait or a close never leaves the lock held,
    which would hang every later write.

    It replaces the database's lock and condition: a KeyboardInterrupt just
    after a lock is taken cannot be timed from outside, only planted.
    """
    database = MemoryDatabase()
    store = database.store("shop")
    lock = threading.Lock()
    monkeypatch.setattr(database, "lock", lock, raising=False)
    monkeypatch.setattr(database, "condition", InterruptedCondition(lock))
    operations: list[Callable[[], object]] = [
        lambda: store.append([new("a", 1)]),
        lambda: store.reseal([Resealed("a", 1, "Happened", b"x")]),
        lambda: store.save_snapshot(snapshot("a", 1)),
        lambda: store.save_view("v", b"state", Tracking("v", 1, 0)),
        lambda: store.wait(5, 0.01),
        lambda: database.store("other"),
    ]
    for operation in operations:
        with contextlib.suppress(KeyboardInterrupt):
            operation()
        assert not lock.locked()
    assert store.read_stream("a")[0].payload == b"x"
    assert store.load_snapshot("a") == snapshot("a", 1)
    assert store.load_view("v") == (b"state", 1)
    assert database.apps() == ["other", "shop"]
    with contextlib.suppress(KeyboardInterrupt):
        database.close()
    assert not lock.locked() and database.closed



def test_stored_payloads_hold_their_size_not_the_encoders_buffer() -> None:
    """2,000 commands keep about their events' size, not orjson's 4 KiB buffer each.

    orjson's output keeps the whole buffer it wrote into; a store that keeps
    payloads for good must copy them (without the copy, 2,000 small events
    held about 8 MiB here).
    """
    import tracemalloc

    import fes
    from fes.edge import Application
    from fes.examples import bank

    app = Application(fes.App("bank", aggregates=[bank.accounts]), "memory://", env={})
    ids = [app.new_id() for _ in range(2_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for account in ids:
            app.execute(bank.accounts, account, bank.open_account, "Ada")
        held = tracemalloc.get_traced_memory()[0] - before
        assert len(app.store.read_log()) == 2_000
    finally:
        tracemalloc.stop()
        app.close()
    assert held < 2_000 * 1_500, f"{held / 2_000:.0f} bytes held per event"
