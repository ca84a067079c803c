"""Events, snapshots and reads the conformance suite builds its cases from."""

from __future__ import annotations

from fes.edge.stores._base import NewEvent, Store, StoredEvent, StoredSnapshot


def new_event(
    stream: str,
    version: int,
    topic: str = "Happened",
    payload: bytes | None = None,
    timestamp: int | None = None,
    meta: bytes | None = None,
) -> NewEvent:
    """A :class:`~fes.edge.stores.NewEvent` whose payload and timestamp tell where it came from."""
    return NewEvent(
        stream=stream,
        version=version,
        topic=topic,
        payload=f"{stream}/{version}".encode() if payload is None else payload,
        timestamp=1_700_000_000_000_000 + version if timestamp is None else timestamp,
        meta=meta,
    )


def stored(event: NewEvent, position: int) -> StoredEvent:
    """What ``event`` should read back as, at ``position``."""
    return StoredEvent(
        position=position,
        stream=event.stream,
        version=event.version,
        topic=event.topic,
        payload=event.payload,
        timestamp=event.timestamp,
        meta=event.meta,
    )


def new_snapshot(stream: str, version: int, payload: bytes | None = None) -> StoredSnapshot:
    """A :class:`~fes.edge.stores.StoredSnapshot` whose payload tells where it came from."""
    return StoredSnapshot(
        stream=stream,
        version=version,
        fingerprint="fp-1",
        payload=f"state of {stream} at {version}".encode() if payload is None else payload,
        timestamp=1_700_000_000_000_000 + version,
    )


def contents(store: Store) -> tuple[list[StoredEvent], dict[str, int]]:
    """Everything an append can change: the log and the tracking positions."""
    return store.read_log(), store.tracked()
