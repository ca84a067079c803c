"""The in-memory store: the conformance suite, and what only it promises."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fes.edge.stores import MemoryDatabase, open_database
from fes.edge.stores.base import Database
from fes.errors import StoreError

from .conformance import StoreConformance, new


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
