"""What an append to the memory store costs does not grow with the streams it holds.

Nothing here is timed: the test counts the references the garbage
collector's young generation walks after one append (the work each of its
frequent collections does), in a store of 100 streams and of 20,000.
"""

from __future__ import annotations

import gc

from fes.edge.stores import NewEvent
from fes.edge.stores._memory import MemoryDatabase, MemoryStore


def _store(streams: int) -> MemoryStore:
    store = MemoryDatabase().store("shop")
    for i in range(streams):
        store.append([NewEvent(f"order-{i}", 1, "shop.Placed", b"{}", 0, None)])
    return store


def _young_references_after_an_append(store: MemoryStore, stream: str) -> int:
    """References from the young generation's objects once ``stream`` gets one event."""
    gc.collect()
    gc.disable()
    try:
        store.append([NewEvent(stream, 1, "shop.Placed", b"{}", 0, None)])
        return sum(len(gc.get_referents(o)) for o in gc.get_objects(generation=0))
    finally:
        gc.enable()


def test_an_append_leaves_the_collector_as_much_to_walk_with_many_streams_as_with_few() -> None:
    """The young objects an append makes reach no more with 20,000 streams than with 100."""
    few = _young_references_after_an_append(_store(100), "new")
    many = _young_references_after_an_append(_store(20_000), "new")
    assert many < few + 100, (few, many)


def test_a_reader_of_an_earlier_state_sees_none_of_the_later_events() -> None:
    """A state read before an append keeps its log, its streams and their versions."""
    store = _store(3)
    before = store._read()
    store.append([NewEvent("order-0", 2, "shop.Paid", b"{}", 0, None),
                  NewEvent("order-9", 1, "shop.Placed", b"{}", 0, None)])
    store._state, after = before, store._state
    assert store.last_position() == 3
    assert store.stream_version("order-0") == 1
    assert store.stream_versions(["order-0", "order-9"]) == {"order-0": 1, "order-9": 0}
    assert [e.version for e in store.read_stream("order-0")] == [1]
    assert [e.position for e in store.read_log()] == [1, 2, 3]
    store._state = after
    assert store.stream_version("order-0") == 2
    assert [e.position for e in store.read_log()] == [1, 2, 3, 4, 5]
