"""The follower's own routes into a batch and a commit give what emit and commit give.

A follower adds an ``Emit`` on one of its application's own aggregates to
its batch without checking again what it checked (``Batch._emit_own``), and
commits without making the ``Recorded`` that ``commit`` returns
(``Application._record_untold``), unless ``commit`` is overridden.  These
tests take every branch of those routes: a stream prefetched as empty, one
already pending, one with stored events, one no store can keep, an equal
copy of the aggregate, a fold that refuses, snapshots and the cache after
the commit, an overridden commit, and a rival instance committing the same
notifications between this one's read and its commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from attrs import frozen

import fes
from fes.edge import Application, Follower
from fes.edge._batch import Batch
from fes.edge.codec import Cipher
from fes.edge.stores import Database, open_database
from fes.edge.stores._base import Tracking
from fes.errors import FesError


@frozen
class Noted:
    """An upstream event: ``text`` tells the policy what to do."""

    text: str


@frozen
class Added:
    """A downstream event: ``n`` added to the total; a negative ``n`` is refused."""

    n: int


def _noted(state: int, event: Noted) -> int:
    return state + 1


def _added(state: int, event: Added) -> int:
    if event.n < 0:
        raise ValueError(f"cannot add {event.n}")
    return state + event.n


notes: fes.Aggregate[int] = fes.Aggregate("note", 0, fes.projector(_noted), events=[Noted])
totals: fes.Aggregate[int] = fes.Aggregate("total", 0, fes.projector(_added), events=[Added])
#: Equal to ``totals``, not the same object: the follower takes the general route.
equal_totals: fes.Aggregate[int] = attrs.evolve(totals)


def policy(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
    """``verb:stream``: what to emit, and where."""
    verb, _, stream = recorded.event.text.partition(":")
    if verb == "one":
        return [fes.Emit(totals, stream, [Added(1)])]
    if verb == "twice":  # the second Emit finds the stream's slot pending
        return [fes.Emit(totals, stream, [Added(1)]), fes.Emit(totals, stream, [Added(2)])]
    if verb == "then-bad":  # the first Emit is taken back with the second's failure
        return [fes.Emit(totals, stream, [Added(1)]), fes.Emit(totals, stream, [Added(-1)])]
    if verb == "bad":
        return [fes.Emit(totals, stream, [Added(-1)])]
    if verb == "copy":
        return [fes.Emit(equal_totals, stream, [Added(5)])]
    if verb == "none":
        return [fes.Emit(totals, stream, [])]
    if verb == "do":  # a command after an Emit sees the pending event
        return [
            fes.Emit(totals, stream, [Added(1)]),
            fes.Do(totals, stream, lambda state: [Added(state * 10)]),
        ]
    if verb == "other":  # a stream of the upstream's aggregate in this batch
        return [fes.Emit(notes, stream, [Noted("x")])]
    return []


source = fes.App("source", aggregates=[notes])


def _skip(error: BaseException, recorded: fes.Recorded[Any], attempt: int) -> fes.Directive:
    return fes.Skip()


sink = fes.App("sink", aggregates=[totals, notes], policy=policy, on_error=_skip)


@pytest.fixture(params=["memory://", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Database]:
    url = request.param if request.param != "sqlite" else f"sqlite:///{tmp_path}/f.db"
    db = open_database(url)
    yield db
    db.close()


def _send(leader: Application, *texts: str) -> None:
    batch = leader.batch()
    for number, text in enumerate(texts):
        batch.emit(notes, f"n-{len(leader.log()) + number}", [Noted(text)])
    leader.commit(batch)


def _follower(database: Database, **options: Any) -> tuple[Application, Follower]:
    leader = Application(source, store=database)
    return leader, Follower(Application(sink, store=database, **options), {"source": leader})


def _versions(app: Application, stream: str) -> list[tuple[int, Any]]:
    return [(r.version, r.event) for r in app.stream(stream)]


def test_each_route_into_the_batch_records_what_emit_would(database: Database) -> None:
    leader, follower = _follower(database)
    sink_app = follower.application
    sink_app.execute(totals, "stored", lambda state: [Added(100)])
    _send(leader, "one:a", "twice:b", "one:stored", "copy:c", "none:d", "do:e", "one:b")
    assert follower.step("source") == 7
    assert _versions(sink_app, "a") == [(1, Added(1))]
    assert _versions(sink_app, "b") == [(1, Added(1)), (2, Added(2)), (3, Added(1))]
    assert _versions(sink_app, "stored") == [(1, Added(100)), (2, Added(1))]
    assert _versions(sink_app, "c") == [(1, Added(5))]
    assert _versions(sink_app, "d") == []
    assert _versions(sink_app, "e") == [(1, Added(1)), (2, Added(10))]
    assert sink_app.get(totals, "b") == 4
    # each event caused by its upstream event, correlated with it
    assert [r.metadata.causation_id for r in sink_app.stream("b")] == [
        "source:n-1@1", "source:n-1@1", "source:n-6@1"
    ]
    assert {r.metadata.correlation_id for r in sink_app.stream("b")} == {
        "source:n-1@1", "source:n-6@1"
    }
    assert sink_app.store.last_tracked("source") == 7
    assert follower.step("source") == 0


def test_a_refused_event_takes_back_its_notification_only(database: Database) -> None:
    leader, follower = _follower(database)
    sink_app = follower.application
    _send(leader, "one:a", "then-bad:b", "bad:c", "one:b", "one:c")
    with _quiet():
        while follower.step("source"):
            pass
    assert _versions(sink_app, "a") == [(1, Added(1))]
    assert _versions(sink_app, "b") == [(1, Added(1))]  # the "then-bad" one taken back whole
    assert _versions(sink_app, "c") == [(1, Added(1))]
    assert [r.event.position for r in fes.edge.skipped(sink_app)] == [2, 3]
    assert sink_app.store.last_tracked("source") == 5


def test_a_stream_no_store_can_keep_is_the_policys_failure(database: Database) -> None:
    leader, follower = _follower(database)
    _send(leader, "one:a", "one:", "one:b")
    with _quiet():
        while follower.step("source"):
            pass
    skipped = fes.edge.skipped(follower.application)
    assert [r.event.position for r in skipped] == [2]
    assert "EncodeError" in skipped[0].event.error
    assert _versions(follower.application, "b") == [(1, Added(1))]


def test_a_stream_pending_as_another_aggregate_is_refused(database: Database) -> None:
    leader, follower = _follower(database)
    _send(leader, "other:x", "one:x")
    with _quiet():
        while follower.step("source"):
            pass
    skipped = fes.edge.skipped(follower.application)
    assert [r.event.position for r in skipped] == [2]
    assert "is used as 'note' and 'total' in one batch" in skipped[0].event.error


def test_the_fresh_route_refuses_what_emit_refuses() -> None:
    """Batch._emit_own on a prefetched stream fails as emit does, leaving the batch as it was."""
    with Application(sink, store="memory://") as app:
        refused = app.batch()
        refused.prefetch(["s"])
        with pytest.raises(ValueError, match="cannot add -1"):
            refused.emit(totals, "s", [Added(-1)])
        assert refused.pending["s"].events == []  # emit's slot stays, with no event in it
        batch = app.batch()
        batch.prefetch(["s", "t"])
        batch.emit(totals, "t", [Added(1)])
        with pytest.raises(ValueError, match="cannot add -1"):
            batch._emit_own(totals, "s", [Added(-1)], fes.Metadata())
        assert list(batch.pending) == ["t"]  # this route makes the slot with its events
        with pytest.raises(FesError, match="is used as 'total' and 'note'"):
            batch._emit_own(notes, "t", [Noted("x")], fes.Metadata())
        batch._emit_own(totals, "s", [Added(2)], fes.Metadata())
        batch._emit_own(totals, "s", [Added(3)], fes.Metadata())
        assert batch.state(totals, "s") == 5
        mark = batch.savepoint()
        batch._emit_own(totals, "u", [Added(4)], fes.Metadata())  # not prefetched
        batch._emit_own(totals, "s", [Added(4)], fes.Metadata())
        batch.rollback(mark)
        assert sorted(batch.pending) == ["s", "t"]
        assert batch.state(totals, "s") == 5
        app.commit(batch)
        assert _versions(app, "s") == [(1, Added(2)), (2, Added(3))]


def test_the_fresh_route_with_metadata_stored_once_gives_what_emit_gives() -> None:
    """One event on a prefetched stream, its metadata encoded once: folded and encoded as emit."""
    with Application(sink, store="memory://") as app:
        metadata = fes.Metadata("corr", "cause")
        meta = app.codec._plain_causes("corr", "cause")
        assert meta is not None
        batch = app.batch()
        batch.prefetch(["s", "t", "u"])
        with pytest.raises(ValueError, match="cannot add -1"):  # the projector's own error
            batch._emit_own(totals, "s", [Added(-1)], metadata, meta)
        with pytest.raises(
            fes.CommandError, match="type Noted, which aggregate 'total' does not own"
        ):
            batch._emit_own(totals, "s", [Noted("not a total's")], metadata, meta)
        assert list(batch.pending) == []
        batch._emit_own(totals, "s", [Added(2)], metadata, meta)
        batch._emit_own(totals, "t", [Added(3), Added(4)], metadata, meta)  # two: emit's way
        assert batch.state(totals, "s") == 2 and batch.state(totals, "t") == 7
        topic, payload = app.codec.encode(Added(2), stream="s", version=1)
        assert batch.pending["s"].rows == [topic, payload, meta]
        mark = batch.savepoint()
        batch._emit_own(totals, "u", [Added(5)], metadata, meta)
        batch.rollback(mark)
        assert sorted(batch.pending) == ["s", "t"]
        app.commit(batch)
        (stored,) = app.stream("s")
        assert (stored.event, stored.metadata) == (Added(2), metadata)
        assert [(r.event, r.metadata) for r in app.stream("t")] == [
            (Added(3), metadata), (Added(4), metadata)
        ]


def test_snapshots_and_the_cache_follow_the_follower_s_commits(database: Database) -> None:
    leader, follower = _follower(database, snapshot_every=2, cache_size=10)
    sink_app = follower.application
    _send(leader, "twice:a", "one:b")
    assert follower.step("source") == 2
    stored = sink_app.store.load_snapshot("a")
    assert stored is not None and stored.version == 2
    assert sink_app.store.load_snapshot("b") is None
    assert sink_app._cache[("total", "a")] == (2, 3)
    assert sink_app._cache[("total", "b")] == (1, 1)


class Counting(Application):
    """An application whose commit is its own: the follower goes through it."""

    commits: int = 0

    def commit(self, batch: Batch, *, tracking: Tracking | None = None) -> list[fes.Recorded[Any]]:
        recorded = super().commit(batch, tracking=tracking)
        self.commits += 1
        return recorded


def test_an_overridden_commit_is_called(database: Database) -> None:
    leader = Application(source, store=database)
    app = Counting(sink, store=database)
    follower = Follower(app, {"source": leader})
    _send(leader, "one:a", "one:b")
    assert follower.step("source") == 2
    assert app.commits == 1
    seen: list[int] = []
    original = app.commit

    def wrapped(batch: Batch, *, tracking: Tracking | None = None) -> list[fes.Recorded[Any]]:
        recorded = original(batch, tracking=tracking)
        seen.extend(r.version for r in recorded)
        return recorded

    app.commit = wrapped  # type: ignore[method-assign]
    _send(leader, "one:a")
    assert follower.step("source") == 1
    assert seen == [2]


def test_a_rival_committing_between_read_and_commit_leaves_one_effect(
    database: Database,
) -> None:
    """The store refuses the second commit of a position: read again, nothing doubled."""
    leader, follower = _follower(database)
    rival = Follower(Application(sink, store=database), {"source": leader})
    _send(leader, "one:a", "one:b", "one:c")
    original = follower._policy
    raced: list[bool] = []

    def racing(recorded: fes.Recorded[Any]) -> Any:
        if not raced:  # the rival processes everything while this one is at its policy
            raced.append(True)
            assert rival.step("source") == 3
        return original(recorded)

    follower._policy = racing
    assert follower.step("source") == 0
    assert follower.conflicts == 1
    _send(leader, "one:a")
    assert follower.step("source") == 1  # from where the rival left it
    sink_app = follower.application
    assert _versions(sink_app, "a") == [(1, Added(1)), (2, Added(1))]
    assert _versions(sink_app, "b") == [(1, Added(1))]
    assert sink_app.store.last_tracked("source") == 4
    # and the rival, behind now, conflicts once and reads on
    _send(leader, "one:d")
    assert rival.step("source") == 1
    assert _versions(sink_app, "d") == [(1, Added(1))]


class _quiet:
    """Silence the follower's warnings about skipped events (they are expected here)."""

    def __enter__(self) -> None:
        import logging

        self.logger = logging.getLogger("fes.runners.follower")
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)


@pytest.mark.parametrize(
    "options",
    [{}, {"compress": True}, {"cipher": Cipher({"k": bytes(range(32))}, "k")}],
    ids=["plain", "compressed", "encrypted"],
)
def test_the_metadata_stored_once_per_upstream_event_reads_back(
    database: Database, options: dict[str, Any]
) -> None:
    """Stored once for all of an upstream event's effects when the codec allows, else per row."""
    leader, follower = _follower(database, **options)
    sink_app = follower.application
    headed = fes.Metadata("chain", "start", {"tenant": "t1"})
    leader.execute(notes, "n-h", lambda state: [Noted("twice:h")], metadata=headed)
    _send(leader, "twice:b")
    assert follower.step("source") == 2
    codec = sink_app.codec
    for stream, correlation, cause, headers in (
        ("h", "chain", "source:n-h@1", {"tenant": "t1"}),
        ("b", "source:n-1@1", "source:n-1@1", {}),
    ):
        stored = sink_app.store.read_stream(stream)
        assert [r.version for r in stored] == [1, 2]
        for row in stored:
            expected = fes.Metadata(correlation, cause, headers)
            assert row.meta == codec.encode_meta(
                expected, topic=row.topic, stream=stream, version=row.version
            ) or "cipher" in options  # a ciphertext differs each time it is made
            assert sink_app.recorded(row).metadata == expected


@pytest.mark.parametrize("shape", [tuple, iter, list])
def test_a_policy_s_intents_in_any_iterable_are_performed(
    database: Database, shape: Any
) -> None:
    leader = Application(source, store=database)
    app = fes.App("sink", aggregates=[totals, notes], policy=lambda r: shape(policy(r)))
    follower = Follower(Application(app, store=database), {"source": leader})
    _send(leader, "twice:a", "one:b")
    assert follower.step("source") == 2
    assert _versions(follower.application, "a") == [(1, Added(1)), (2, Added(2))]


@pytest.mark.parametrize("result", [None, "one:a", fes.Emit(totals, "a", [Added(1)])])
def test_a_policy_s_result_of_another_shape_stops_the_follower(
    database: Database, result: Any
) -> None:
    leader = Application(source, store=database)
    app = fes.App("sink", aggregates=[totals], policy=lambda r: result)
    follower = Follower(Application(app, store=database), {"source": leader})
    _send(leader, "one:a")
    with _quiet():
        assert follower.step("source") == 0
    assert follower.error is not None
    assert "a policy returns a list of intents" in str(follower.error)
