"""Resealing: an application's stored ciphertext moves to its current key.

After a rotation and a reseal, an application whose ring holds only the new
key reads everything the old key wrote: events, metadata and every
snapshot, older ones too; positions, topics and timestamps stay.  A store written in the
clear is encrypted only when asked to (``plain=True``).  Runs on every store.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import attrs
import pytest

import fes
from fes.edge import Application, Cipher, Projection, Resealing, reseal
from fes.edge.stores import Resealed, StoredEvent, StoredSnapshot
from fes.examples.bank import accounts
from fes.examples.dogs import Dog, Registered, TrickAdded, add_trick, dogs, register
from fes.snapshots import fingerprint

from .conftest import Place

OLD, NEW = Cipher.generate_key(), Cipher.generate_key()
OLD_RING = Cipher({"old": OLD}, current="old")
BOTH_RINGS = Cipher({"old": OLD, "new": NEW}, current="new")
NEW_RING = Cipher({"new": NEW}, current="new")
TRACED = fes.Metadata(correlation_id="c-1", headers={"who": "trainer"})


def fill(app: Application) -> dict[str, Dog]:
    """Three dogs with tricks and metadata; returns their states."""
    dogs_by_id = {}
    for n, name in enumerate(["Fido", "Rex", "Luna"]):
        stream = f"dog-{n}"
        app.execute(dogs, stream, register, name, metadata=TRACED)
        for trick in ["sit", "paw", "beg"][: n + 1]:
            app.execute(dogs, stream, add_trick, trick)
        dogs_by_id[stream] = app.get(dogs, stream)
    return dogs_by_id


def columns(app: Application) -> list[tuple[Any, ...]]:
    """What resealing must keep: each event's position, stream, version, topic, timestamp."""
    return [(e.position, e.stream, e.version, e.topic, e.timestamp) for e in app.store.read_log()]


def test_after_a_reseal_the_new_key_alone_reads_everything(any_place: Place) -> None:
    """Events, metadata and every snapshot move to the new key; nothing else changes.

    dog-2 has snapshots at versions 2 and 4: the older one, which a load with
    version=3 reads, is resealed too (only the latest used to be).
    """
    writer = any_place.app(cipher=OLD_RING, snapshot_every=2)
    states = fill(writer)
    kept = columns(writer)
    before = [(r.event, r.metadata) for r in writer.log()]
    older = writer.store.load_snapshot("dog-2", to_version=3)
    assert older is not None and older.version == 2

    rotated = any_place.app(cipher=BOTH_RINGS, snapshot_every=2)
    done = reseal(rotated, batch_size=4)
    assert done == Resealing(events=9, metadata=3, snapshots=4, position=kept[-1][0])

    only_new = any_place.app(cipher=NEW_RING, snapshot_every=2)
    assert columns(only_new) == kept
    assert [(r.event, r.metadata) for r in only_new.log()] == before
    for stream, state in states.items():
        assert only_new.get(dogs, stream) == state
        snapshot = only_new.store.load_snapshot(stream)
        assert snapshot is not None
        assert only_new.codec.decode_state(
            dogs, snapshot.payload, stream=stream, version=snapshot.version
        ) == only_new.get(dogs, stream, version=snapshot.version)
    older_now = only_new.store.load_snapshot("dog-2", to_version=3)
    assert older_now is not None and older_now.version == 2
    assert older_now.payload != older.payload
    assert only_new.codec.decode_state(
        dogs, older_now.payload, stream="dog-2", version=2
    ) == only_new.get(dogs, "dog-2", version=2)
    # the old ring alone no longer reads them
    with pytest.raises(fes.errors.CipherError, match="key id 'new'"):
        any_place.app(cipher=OLD_RING).log()


COMPRESSED, ENCRYPTED = 0x01, 0x02  # the format-1 flags of a payload's first byte


@pytest.mark.parametrize("compress", [False, True, 9], ids=["without", "with", "level 9"])
def test_a_reseal_keeps_each_rows_compression_as_stored(
    any_place: Place, compress: bool | int
) -> None:
    """A compressed row stays compressed, a plain-JSON one uncompressed, whatever the
    resealing codec's compress: a key's rotation changes the key alone.

    (A codec without compress used to store every compressed row inflated: a
    trial's 89-byte row came back as 10,044 bytes.)
    """
    writer = any_place.app(cipher=OLD_RING, compress=True, snapshot_every=2)
    stream = "dog-long"
    writer.execute(dogs, stream, register, "Fido " * 400)  # compresses well
    writer.execute(dogs, stream, add_trick, "sit")  # too short to compress
    before = {e.version: e.payload for e in writer.store.read_stream(stream)}
    assert before[1][0] & COMPRESSED and not before[2][0] & COMPRESSED

    rotated = any_place.app(cipher=BOTH_RINGS, compress=compress, snapshot_every=2)
    assert reseal(rotated).events == 2
    after = {e.version: e.payload for e in rotated.store.read_stream(stream)}
    for version, payload in after.items():
        assert payload[0] & ENCRYPTED and b"new" in payload[:8]
        assert payload[0] & COMPRESSED == before[version][0] & COMPRESSED, version
    assert len(after[1]) < len(before[1]) + 32  # the key id's length apart, not inflated
    state = any_place.app(cipher=NEW_RING).get(dogs, stream)
    assert state.name == "Fido " * 400 and list(state.tricks) == ["sit"]


def test_a_second_run_changes_nothing(any_place: Place) -> None:
    """Rows already under the current key are skipped: a stopped run can simply be rerun."""
    fill(any_place.app(cipher=OLD_RING, snapshot_every=2))
    rotated = any_place.app(cipher=BOTH_RINGS, snapshot_every=2)
    first = reseal(rotated)
    stored = [(e.payload, e.meta) for e in rotated.store.read_log()]
    again = reseal(rotated)
    assert (again.events, again.metadata, again.snapshots) == (0, 0, 0)
    assert again.position == first.position
    assert [(e.payload, e.meta) for e in rotated.store.read_log()] == stored


def test_events_appended_under_the_new_key_are_left_alone(any_place: Place) -> None:
    """Only what an older key sealed is resealed."""
    fill(any_place.app(cipher=OLD_RING))
    rotated = any_place.app(cipher=BOTH_RINGS)
    rotated.execute(dogs, "dog-new", register, "Newcomer", metadata=TRACED)
    assert (reseal(rotated).events, reseal(rotated).events) == (9, 0)


def test_a_plain_store_is_encrypted_only_when_asked(any_place: Place) -> None:
    """Plain rows are refused unless plain=True; then they are encrypted and read back."""
    states = fill(any_place.app(snapshot_every=2))
    kept = columns(any_place.app())
    encrypted = any_place.app(cipher=NEW_RING, snapshot_every=2)
    # the refusal says how to encrypt what was stored in the clear
    with pytest.raises(fes.errors.CipherError, match=r"not encrypted.* `fes reseal SYSTEM "
                       r"--app school --plain`, or fes\.edge\.reseal\(application, plain=True\)"):
        encrypted.get(dogs, "dog-0")
    with pytest.raises(fes.errors.CipherError, match="plain=True"):
        reseal(encrypted)
    assert encrypted.store.read_log()[0].payload.startswith(b"{")  # nothing was changed

    done = reseal(encrypted, plain=True)
    assert (done.events, done.metadata, done.snapshots) == (9, 3, 4)
    assert columns(encrypted) == kept
    assert all(not e.payload.startswith(b"{") for e in encrypted.store.read_log())
    for stream, state in states.items():
        assert encrypted.get(dogs, stream) == state
    with pytest.raises(fes.errors.CipherError, match="no cipher"):
        any_place.app().get(dogs, "dog-0")


def test_a_row_no_key_decrypts_stops_the_run_after_the_batches_before_it(
    any_place: Place,
) -> None:
    """A tampered row raises CipherError naming it; the batches before it stay resealed."""
    writer = any_place.app(cipher=OLD_RING)
    fill(writer)
    rotated = any_place.app(cipher=BOTH_RINGS)
    log = writer.store.read_log()
    victim = log[5]
    payload = bytearray(victim.payload)
    payload[-1] ^= 1
    writer.store.reseal([Resealed(victim.stream, victim.version, victim.topic, bytes(payload))])
    with pytest.raises(
        fes.errors.CipherError, match=f"stream {victim.stream!r} version {victim.version}"
    ):
        reseal(rotated, batch_size=2)
    only_new = any_place.app(cipher=NEW_RING).codec

    def resealed(event: StoredEvent) -> bool:
        try:
            only_new.decode(event.topic, event.payload, stream=event.stream, version=event.version)
        except fes.errors.CipherError:
            return False
        return True

    assert [resealed(e) for e in rotated.store.read_log()] == [True] * 4 + [False] * (len(log) - 4)


def test_a_snapshot_no_key_reads_is_ignored_and_the_stream_folded(
    any_place: Place, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot under a key that left the ring is a shortcut lost, not an error."""
    states = fill(any_place.app(cipher=OLD_RING, snapshot_every=2))
    rotated = any_place.app(cipher=BOTH_RINGS)
    store = rotated.store
    # reseal the events only, as if the snapshots had been forgotten
    codec = rotated.codec
    rows = []
    for e in store.read_log():
        where: dict[str, Any] = {"name": e.topic, "stream": e.stream, "version": e.version}
        payload = codec.reseal(e.payload, kind="event", **where)
        meta = None if e.meta is None else codec.reseal(e.meta, kind="meta", **where)
        rows.append(Resealed(e.stream, e.version, e.topic, payload or e.payload, meta or e.meta))
    store.reseal(rows)
    only_new = any_place.app(cipher=NEW_RING, snapshot_every=2)
    with caplog.at_level(logging.WARNING, logger="fes"):
        assert only_new.get(dogs, "dog-2") == states["dog-2"]
    assert "ignoring a snapshot" in caplog.text and "'old'" in caplog.text


# The next release of the school: the dog's definition changed (an upcaster's
# deploy, say), so its snapshots' fingerprint did; the bank's aggregate comes
# first, so that resealing a snapshot tries a wrong aggregate name first.
CHANGED_DOG = attrs.evolve(dogs, snapshot_version=2)
NEXT_RELEASE = fes.App("school", aggregates=[accounts, CHANGED_DOG])
# ... and the releases whose dog is renamed (writing under its old topics) or gone
HOUND = attrs.evolve(
    dogs, name="hound", event_topics={Registered: "dog.Registered", TrickAdded: "dog.TrickAdded"}
)
RENAMED = fes.App("school", aggregates=[accounts, HOUND])
REMOVED = fes.App("school", aggregates=[accounts])


def latest_snapshots(app: Application) -> dict[str, StoredSnapshot]:
    """Each stream's latest snapshot."""
    found = {e.stream: app.store.load_snapshot(e.stream) for e in app.store.read_log()}
    return {stream: snapshot for stream, snapshot in found.items() if snapshot is not None}


def test_a_snapshot_of_an_earlier_definition_is_resealed_under_its_aggregates_name(
    any_place: Place,
) -> None:
    """This release never reads it, but it holds the old key's data: it moves to the new key.

    It is bound to the aggregate's name, which the aggregate kept; a wrong
    name tried first changes nothing.  (Such snapshots used to be skipped:
    after the reseal they were still under the old key, and snapshots=0.)
    """
    states = fill(any_place.app(cipher=OLD_RING, snapshot_every=2))
    before = latest_snapshots(any_place.app())
    next_release = any_place.app(NEXT_RELEASE, cipher=BOTH_RINGS, snapshot_every=2)
    assert {s.fingerprint for s in before.values()} == {fingerprint(dogs)}
    assert fingerprint(dogs) != fingerprint(CHANGED_DOG)  # the next release never reads them

    done = reseal(next_release)
    assert (done.events, done.metadata, done.snapshots) == (9, 3, 4)
    assert done.snapshots_left == 0
    after = latest_snapshots(next_release)
    assert {s: attrs.evolve(snapshot, payload=b"") for s, snapshot in after.items()} == {
        s: attrs.evolve(snapshot, payload=b"") for s, snapshot in before.items()
    }  # stream, version, fingerprint and timestamp stay
    # the new key alone opens each one, as the release that wrote it reads it
    old_release = any_place.app(cipher=NEW_RING, snapshot_every=2)
    for stream, snapshot in after.items():
        assert snapshot.payload[:5] == b"\x82\x03new"
        assert old_release.codec.decode_state(
            dogs, snapshot.payload, stream=stream, version=snapshot.version
        ) == old_release.get(dogs, stream, version=snapshot.version)
        assert old_release.get(dogs, stream) == states[stream]
    assert reseal(next_release).snapshots == 0


@pytest.mark.parametrize("release", [RENAMED, REMOVED], ids=["renamed", "removed"])
def test_a_snapshot_no_aggregate_name_opens_is_left_as_it_is_and_counted(
    any_place: Place, caplog: pytest.LogCaptureFixture, release: fes.App
) -> None:
    """It cannot be resealed, nor silently passed over: it is counted, in one warning.

    Its aggregate's name is gone, so it stays as it was stored until someone
    deletes it; the old key must stay in the ring until then.  The warning
    names the definition and the first streams, once (not a line each).
    """
    fill(any_place.app(cipher=OLD_RING, snapshot_every=2))
    before = latest_snapshots(any_place.app())
    next_release = any_place.app(release, cipher=BOTH_RINGS, snapshot_every=2)
    with caplog.at_level(logging.WARNING, logger="fes"):
        done = reseal(next_release)
    assert (done.events, done.metadata, done.snapshots) == (9, 3, 0)
    assert latest_snapshots(next_release) == before
    assert done.snapshots_left == 4  # dog-2 v2 too
    (warning,) = [r.getMessage() for r in caplog.records if "snapshot" in r.getMessage()]
    assert warning == (
        f"left 4 snapshot(s) of an earlier definition (fingerprint {fingerprint(dogs)}) in "
        "'school' as they are: their aggregate's name is none of this release's (renamed or "
        "removed): delete them (prune_snapshots; fes prune) before their key leaves the ring "
        "('dog-0' version 2, 'dog-1' "
        "version 2, 'dog-2' version 4, 'dog-2' version 2)"
    ), warning
    assert reseal(next_release).snapshots_left == 4  # said again until they are deleted


def test_a_plain_snapshot_of_an_earlier_definition_is_sealed_under_its_streams_aggregate(
    any_place: Place, caplog: pytest.LogCaptureFixture
) -> None:
    """Stored in the clear before a deploy changed the aggregate: nothing binds it to a name,
    so plain=True seals it under the name of the aggregate whose events its stream holds.

    (It used to be left, with a warning each telling to wait on a key it never had, and
    every later reseal said so again and exited 1.)
    """
    states = fill(any_place.app(snapshot_every=2))  # no cipher yet
    before = latest_snapshots(any_place.app())
    next_release = any_place.app(NEXT_RELEASE, cipher=NEW_RING, snapshot_every=2)
    with caplog.at_level(logging.WARNING, logger="fes"):
        done = reseal(next_release, plain=True)
    assert (done.events, done.metadata, done.snapshots, done.snapshots_left) == (9, 3, 4, 0)
    assert "left" not in caplog.text
    # the release that wrote them reads them under the new key, as its own
    old_release = any_place.app(cipher=NEW_RING, snapshot_every=2)
    for stream, snapshot in latest_snapshots(old_release).items():
        assert snapshot.payload[:5] == b"\x82\x03new"
        assert attrs.evolve(snapshot, payload=b"") == attrs.evolve(before[stream], payload=b"")
        assert old_release.codec.decode_state(
            dogs, snapshot.payload, stream=stream, version=snapshot.version
        ) == old_release.get(dogs, stream, version=snapshot.version)
        assert old_release.get(dogs, stream) == states[stream]
    assert reseal(next_release) == Resealing(0, 0, 0, done.position)  # all done


def test_a_tampered_snapshot_stops_the_run_only_under_the_current_definition(
    any_place: Place,
) -> None:
    """One of an earlier definition that no name opens is left; one this release reads is an
    error, as before: trying names for earlier ones swallows no error of the current ones."""
    fill(any_place.app(cipher=OLD_RING, snapshot_every=2))
    store = any_place.app().store
    for snapshot in latest_snapshots(any_place.app()).values():
        payload = bytearray(snapshot.payload)
        payload[-1] ^= 1
        store.save_snapshot(attrs.evolve(snapshot, payload=bytes(payload)))

    done = reseal(any_place.app(NEXT_RELEASE, cipher=BOTH_RINGS))
    # the tampered latest ones are left; dog-2's older one, at version 2, is resealed
    assert (done.events, done.snapshots, done.snapshots_left) == (9, 1, 3)
    with pytest.raises(
        fes.errors.CipherError, match="the snapshot of 'dog' at stream 'dog-0' version 2"
    ):
        reseal(any_place.app(cipher=BOTH_RINGS))


def test_bad_arguments_are_refused(any_place: Place) -> None:
    """A batch size below 1, or an application without a cipher, is a clear error."""
    with pytest.raises(fes.errors.ConfigurationError, match="batch_size"):
        reseal(any_place.app(cipher=NEW_RING), batch_size=0)
    with pytest.raises(fes.errors.DefinitionError, match="cipher"):
        reseal(any_place.app())


def test_reseal_runs_beside_a_live_writer(any_place: Place) -> None:
    """While a writer under the new key appends, a reseal moves the old rows; nothing is lost."""
    old = any_place.app(cipher=OLD_RING)
    for n in range(20):
        old.execute(dogs, f"old-{n}", register, f"Old {n}")
        for trick in ["sit", "paw", "beg", "roll", "spin"]:
            old.execute(dogs, f"old-{n}", add_trick, trick)
    writer = any_place.app(cipher=BOTH_RINGS)
    errors: list[BaseException] = []
    written = [0]
    started, stop = threading.Event(), threading.Event()

    def write() -> None:
        try:
            while not stop.is_set():
                n = written[0]
                writer.execute(dogs, f"live-{n}", register, f"Live {n}")
                written[0] += 1
                started.set()
        except BaseException as error:  # reported below
            errors.append(error)
            started.set()

    resealer = any_place.app(cipher=BOTH_RINGS)
    store_reseal = resealer.store.reseal

    def reseal_then_let_the_writer_in(rows: list[Resealed]) -> None:
        store_reseal(rows)
        seen = written[0]
        deadline = time.monotonic() + 10
        while written[0] == seen and time.monotonic() < deadline:
            time.sleep(0.001)  # the writer appends between two batches

    thread = threading.Thread(target=write)
    thread.start()
    assert started.wait(10)
    before = written[0]
    resealer.store.reseal = reseal_then_let_the_writer_in  # type: ignore[method-assign]
    try:
        done = reseal(resealer, batch_size=5)
    finally:
        del resealer.store.reseal
    during = written[0] - before
    stop.set()
    thread.join(60)
    assert errors == [] and not thread.is_alive()
    assert during >= 24  # the writer appended between every two of the 24 batches
    assert done.events == 120  # what the old key wrote, and nothing else
    only_new = any_place.app(cipher=NEW_RING)
    assert len(only_new.log()) == 120 + written[0]
    assert all(len(only_new.get(dogs, f"old-{n}").tricks) == 5 for n in range(20))
    assert all(only_new.get(dogs, f"live-{n}") is not None for n in range(written[0]))


def count_tricks(count: int, recorded: fes.Recorded[Any]) -> int:
    return count + 1 if recorded.topic == "dog.TrickAdded" else count


tricks_taught = fes.View("tricks_taught", 0, count_tricks)
SCHOOL_WITH_VIEW = fes.App("school", aggregates=[dogs], views=[tricks_taught])


def test_a_view_no_key_reads_is_folded_again_and_saved_under_the_new_key(
    any_place: Place, caplog: pytest.LogCaptureFixture
) -> None:
    """A reseal leaves a view's stored state alone: with its key gone it is rebuilt from the log.

    The rebuilt state is the one the old key sealed, at the same position,
    and the view's next save stores it under the new key.
    """
    writer = any_place.app(SCHOOL_WITH_VIEW, cipher=OLD_RING)
    fill(writer)
    Projection(writer, tricks_taught).catch_up()
    stored = writer.store.load_view("tricks_taught")
    assert stored is not None and stored[1] == writer.store.last_position()

    reseal(any_place.app(SCHOOL_WITH_VIEW, cipher=BOTH_RINGS))
    assert writer.store.load_view("tricks_taught") == stored  # the view's row is untouched

    only_new = any_place.app(SCHOOL_WITH_VIEW, cipher=NEW_RING)
    projection = Projection(only_new, tricks_taught)
    with caplog.at_level(logging.WARNING, logger="fes"):
        assert projection.load() == (6, stored[1])
    assert "rebuilding view 'tricks_taught'" in caplog.text and "'old'" in caplog.text

    only_new.execute(dogs, "dog-0", add_trick, "roll")
    assert projection.catch_up() == 7
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fes"):
        assert Projection(only_new, tricks_taught).load() == (7, only_new.store.last_position())
    assert caplog.text == ""
    with pytest.raises(fes.errors.CipherError, match="key id 'new'"):
        Projection(any_place.app(SCHOOL_WITH_VIEW, cipher=OLD_RING), tricks_taught).load()


def test_a_view_whose_events_no_key_reads_is_an_error_not_a_guess(any_place: Place) -> None:
    """Rebuilding reads the events: if they are unreadable too, their error is raised."""
    writer = any_place.app(SCHOOL_WITH_VIEW, cipher=OLD_RING)
    fill(writer)
    Projection(writer, tricks_taught).catch_up()
    with pytest.raises(
        fes.errors.CipherError, match=r"'dog\.Registered' at stream 'dog-0' version 1"
    ):
        Projection(any_place.app(SCHOOL_WITH_VIEW, cipher=NEW_RING), tricks_taught).load()
