"""Resealing: moving an application's stored ciphertext to its current key; see :func:`reseal`."""

from __future__ import annotations

import logging

from attrs import evolve, frozen

from fes.edge._application import Application, check_count
from fes.edge.codec._frame import _encrypted
from fes.edge.stores._base import Resealed, StoredSnapshot
from fes.errors import DecodeError, DefinitionError
from fes.snapshots import fingerprint

__all__ = ["Resealing", "reseal"]

logger = logging.getLogger("fes")


@frozen
class Resealing:
    """What one :func:`reseal` run changed, and the last position it walked.

    ``snapshots_left`` counts the snapshots it could not reseal: ones that an
    earlier definition of a renamed or removed aggregate wrote.  They
    still hold that state under the key that sealed them (or in the clear).
    """

    events: int
    metadata: int
    snapshots: int
    position: int
    snapshots_left: int = 0


def reseal(
    application: Application, *, plain: bool = False, batch_size: int = 500
) -> Resealing:
    """Encrypt ``application``'s stored events, metadata and snapshots under its current key.

    fes writes each payload once, encrypted under the key that was current at
    the time, and reads it under whichever key of the ring it names.  Rotation
    therefore leaves old events under old keys: this walks the
    notification log and encrypts every event, its metadata and every
    snapshot of its stream (the older ones too, which a load with
    ``version=`` reads) under the cipher's current key, so that the old keys
    can leave the ring.  With ``plain=True`` it also encrypts rows written before
    the application had a cipher at all.

    A snapshot that an earlier definition of an aggregate wrote (its
    fingerprint is none of the application's aggregates') is never read by
    this release, but it holds a state all the same: it is resealed under
    the aggregate name its ciphertext is bound to, if one of the
    application's aggregates still has that name; one stored in the clear,
    which binds it to no name, is encrypted (with ``plain``) under the name
    of the aggregate whose events its stream holds now.  One that no name
    opens (its aggregate was renamed or removed) is left as it is, counted
    in :attr:`Resealing.snapshots_left` and logged in one warning for each
    earlier definition, with some of their streams: delete them from the
    store's snapshots (a snapshot is only a shortcut) before their key
    leaves the ring.  So is one in the clear without ``plain``, or whose
    stream's events no aggregate of the application owns.

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
    codec = application.codec
    if codec.cipher is None:
        raise DefinitionError(
            f"application {application.name!r} has no cipher: resealing encrypts "
            "under the cipher's current key"
        )
    aggregates = {fingerprint(a): a.name for a in application.app.aggregates}
    names = list(dict.fromkeys(aggregates.values()))
    # whose events a stream holds, by their topic: the name a plain snapshot is sealed under
    owners = {topic: a.name for a in application.app.aggregates for topic in a.topics()}
    # the snapshots left, (stream, version), by definition (fingerprint) and whether
    # stored in the clear
    lefts: dict[tuple[str, bool], list[tuple[str, int]]] = {}
    try:
        return _walk(application, aggregates, names, owners, lefts, plain, batch_size)
    finally:  # what was left is told, also when a row stops the run
        _warn_left(application, lefts, plain)


def _walk(
    application: Application,
    aggregates: dict[str, str],
    names: list[str],
    owners: dict[str, str],
    lefts: dict[tuple[str, bool], list[tuple[str, int]]],
    plain: bool,
    batch_size: int,
) -> Resealing:
    """:func:`reseal`'s walk of the log, noting in ``lefts`` the snapshots it left."""
    codec, store = application.codec, application.store
    events = metadata = snapshots = 0
    walked: set[str] = set()  # the streams whose snapshots were resealed
    position = 0
    # Rows appended from now on are sealed under the current key already; walking
    # up to the end as it is now also ends the walk while writers keep appending.
    end = store.last_position()
    while True:
        rows = store.read_log(position, limit=batch_size, to=end)
        if not rows:
            left = sum(map(len, lefts.values()))
            return Resealing(events, metadata, snapshots, position, left)
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
        topics: dict[str, str] = {}  # each stream of the batch with its first row's topic
        for row in rows:
            topics.setdefault(row.stream, row.topic)
        for stream, topic in topics.items():
            if stream in walked:
                continue  # its snapshots were resealed when an earlier batch met it
            walked.add(stream)
            owner = owners.get(topic)
            # every snapshot of the stream, the latest first: an older one still
            # holds a state (a load with version= reads it), under its old key
            snapshot = store.load_snapshot(stream)
            while snapshot is not None:
                done = _reseal_snapshot(application, snapshot, aggregates, names, plain, owner)
                snapshots += done == "resealed"
                if done == "left":
                    lefts.setdefault(
                        (snapshot.fingerprint, not _encrypted(snapshot.payload)), []
                    ).append((stream, snapshot.version))
                if snapshot.version <= 1:
                    break
                snapshot = store.load_snapshot(stream, to_version=snapshot.version - 1)
        position = rows[-1].position


def _reseal_snapshot(
    application: Application,
    snapshot: StoredSnapshot,
    aggregates: dict[str, str],
    names: list[str],
    plain: bool,
    owner: str | None,
) -> str | None:
    """Reseal one stored snapshot: "resealed", "left" (no name opens it) or None (already).

    ``owner`` is the aggregate whose events the snapshot's stream holds, if
    the application has it.
    """
    codec, store, stream = application.codec, application.store, snapshot.stream
    name = aggregates.get(snapshot.fingerprint)
    payload: bytes | None = None
    if name is not None:
        payload = codec.reseal(
            snapshot.payload, kind="state", name=name, stream=stream,
            version=snapshot.version, plain=plain,
        )
    elif not _encrypted(snapshot.payload):
        # An earlier definition's, in the clear: bound to no name, it is sealed
        # under its stream's aggregate's, when plain rows are vouched for.
        if not plain or owner is None:
            return "left"
        payload = codec.reseal(
            snapshot.payload, kind="state", name=owner, stream=stream,
            version=snapshot.version, plain=True,
        )
    else:
        # Of an earlier definition: its ciphertext is bound to its aggregate's
        # name and fails to authenticate under any other, before anything is
        # sealed, so a wrong name changes nothing.  A plain one is bound to no
        # name: it is not vouched for (no plain=), whatever ``plain`` says.
        for name in names:
            try:
                payload = codec.reseal(
                    snapshot.payload, kind="state", name=name, stream=stream,
                    version=snapshot.version,
                )
                break
            except DecodeError:
                continue  # another aggregate's, or one no key of the ring opens
        else:
            return "left"
    if payload is None:
        return None
    store.save_snapshot(evolve(snapshot, payload=payload))
    return "resealed"


#: How many of the snapshots left a warning names.
_NAMED = 5


def _warn_left(
    application: Application,
    lefts: dict[tuple[str, bool], list[tuple[str, int]]],
    plain: bool,
) -> None:
    """One warning for each earlier definition whose snapshots were left, naming a few."""
    for (print_, in_clear), left in lefts.items():
        count, first = len(left), left[:_NAMED]
        named = ", ".join(f"{stream!r} version {version}" for stream, version in first)
        more = f" and {count - len(first)} more" if count > len(first) else ""
        if in_clear and not plain:
            why = (
                "stored in the clear, they are encrypted only when asked (plain=True; "
                "fes reseal --plain), or delete them (prune_snapshots; fes prune)"
            )
        elif in_clear:
            why = (
                "stored in the clear, in streams whose events no aggregate of this "
                "release owns: delete them (prune_snapshots; fes prune), since they keep "
                "a state unencrypted"
            )
        else:
            why = (
                "their aggregate's name is none of this release's (renamed or removed): "
                "delete them (prune_snapshots; fes prune) before their key leaves the ring"
            )
        logger.warning(
            "left %d snapshot(s) of an earlier definition (fingerprint %s) in %r as they "
            "are: %s (%s%s)", count, print_, application.name, why, named, more,
        )
