"""``Connections.hold``: a thread takes the writer lock for several operations."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fes.edge.stores import SQLiteDatabase, Tracking
from fes.errors import DuplicateTracking, StoreError
from fes.testing.stores import new_event as new
from fes.testing.stores import new_snapshot as snapshot


def test_writes_of_the_holding_thread_take_no_lock_and_others_wait(tmp_path: Path) -> None:
    with SQLiteDatabase(tmp_path / "h.db", synchronous="NORMAL") as database:
        store = database.store("shop")
        held = database.hold(5)
        assert held is not None and database.writing()
        # the holder's own writes do not wait for the lock it holds
        store.append([new("a", 1)])
        store.save_snapshot(snapshot("a", 1))
        store.append([new("a", 2)], tracking=Tracking("up", 1, 0))
        with pytest.raises(DuplicateTracking):
            store.append([new("a", 3)], tracking=Tracking("up", 1, 0))
        done = threading.Event()
        other = threading.Thread(target=lambda: (store.append([new("b", 1)]), done.set()))
        other.start()
        assert not done.wait(0.2)  # another thread's write waits for it
        again = database.hold(0.01)  # the holding thread holds it once more at once
        assert again is not None
        database.unhold(again)
        assert database.writing() and not done.wait(0.05)  # one hold is left
        database.unhold(held)
        assert done.wait(10)
        other.join(10)
        assert not database.writing()
        assert [e.stream for e in store.read_log()] == ["a", "a", "b"]
        assert store.load_snapshot("a") is not None


def test_hold_gives_up_after_its_timeout(tmp_path: Path) -> None:
    with SQLiteDatabase(tmp_path / "h.db") as database:
        with database.writer:
            got: list[object] = []
            thread = threading.Thread(target=lambda: got.append(database.hold(0.05)))
            thread.start()
            thread.join(10)
            assert got == [None]
        assert not database.writing()


def test_hold_on_a_closed_database_raises_and_leaves_the_lock_free(tmp_path: Path) -> None:
    database = SQLiteDatabase(tmp_path / "h.db")
    database.close()
    with pytest.raises(StoreError, match="closed"):
        database.hold(1)
    assert not database.writing()
