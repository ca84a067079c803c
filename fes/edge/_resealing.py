"""Resealing: moving an application's stored ciphertext to its current key; see :func:`reseal`."""

from __future__ import annotations

from attrs import evolve, frozen

from fes.edge._application import Application, check_count
from fes.edge.stores._base import Resealed
from fes.errors import DefinitionError
from fes.snapshots import fingerprint

__all__ = ["Resealing", "reseal"]


@frozen
class Resealing:
    """What one :func:`reseal` run changed, and the last position it walked."""

    events: int
    metadata: int
    snapshots: int
    position: int


def reseal(
    application: Application, *, plain: bool = False, batch_size: int = 500
) -> Resealing:
    """Encrypt ``application``'s stored events, metadata and latest snapshots under its current key.

    fes writes each payload once, encrypted under the key that was current at
    the time, and reads it under whichever key of the ring it names.  Rotation
    therefore leaves old events under old keys: this walks the
    notification log and encrypts every event, its metadata and each stream's
    latest snapshot under the cipher's current key, so that the old keys can
    leave the ring.  With ``plain=True`` it also encrypts rows written before
    the application had a cipher at all.

    It runs beside the live applications.  Each batch of the log is resealed in
    one transaction (:meth:`fes.edge.stores.Store.reseal`); positions,
    topics and timestamps stay, so followers' tracking positions stay valid.  A
    run that stops half-way leaves every row readable under the ring, and the
    next run carries on: rows already under the current key are skipped.

    Put the new key in the ring as the current one first, in every process
    that writes: the walk ends at the log's last position when it starts,
    since rows appended after that are sealed under the new key already.
    Raises :class:`fes.errors.CipherError` at a row that is not encrypted (unless
    ``plain``) or that no key of the ring decrypts; the batches before it
    stay resealed.
    """
    check_count("batch_size", batch_size, 1)
    codec, store = application.codec, application.store
    if codec.cipher is None:
        raise DefinitionError(
            f"application {application.name!r} has no cipher: resealing encrypts "
            "under the cipher's current key"
        )
    aggregates = {fingerprint(a): a.name for a in application.app.aggregates}
    events = metadata = snapshots = 0
    position = 0
    # Rows appended from now on are sealed under the current key already; walking
    # up to the end as it is now also ends the walk while writers keep appending.
    end = store.last_position()
    while True:
        rows = store.read_log(position, limit=batch_size, to=end)
        if not rows:
            return Resealing(events, metadata, snapshots, position)
        resealed: list[Resealed] = []
        for row in rows:
            stream, version, topic = row.stream, row.version, row.topic
            payload = codec.reseal(
                row.payload, kind="event", name=topic, stream=stream, version=version, plain=plain
            )
            meta = None
            if row.meta:
                meta = codec.reseal(
                    row.meta, kind="meta", name=topic, stream=stream, version=version, plain=plain
                )
            if payload is None and meta is None:
                continue
            events += payload is not None
            metadata += meta is not None
            resealed.append(
                Resealed(stream, version, topic, payload or row.payload, meta or row.meta)
            )
        if resealed:
            store.reseal(resealed)
        for stream in dict.fromkeys(row.stream for row in rows):
            snapshot = store.load_snapshot(stream)
            name = None if snapshot is None else aggregates.get(snapshot.fingerprint)
            if snapshot is None or name is None:
                continue  # a snapshot of another definition is never read: leave it
            payload = codec.reseal(
                snapshot.payload, kind="state", name=name, stream=stream,
                version=snapshot.version, plain=plain,
            )
            if payload is not None:
                store.save_snapshot(evolve(snapshot, payload=payload))
                snapshots += 1
        position = rows[-1].position
