"""A follower's batch is bounded by stored bytes as well as by count."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

import fes
from fes.edge import Application, SyncRunner, ThreadedRunner
from fes.edge._follower import DEFAULT_BATCH_BYTES, Follower
from system import domain
from system.helpers import own_log, send


def _record_commits(runner: SyncRunner | ThreadedRunner) -> list[tuple[int, int]]:
    """Wrap the sink's commit: the (previous, new) tracked position of each batch."""
    sink = runner.app("sink")
    commit = sink.commit
    seen: list[tuple[int, int]] = []

    def recording(batch: Any, *args: Any, tracking: Any = None, **kwargs: Any) -> Any:
        if tracking is not None:
            seen.append((tracking.previous, tracking.position))
        return commit(batch, *args, tracking=tracking, **kwargs)

    sink.commit = recording  # type: ignore[method-assign]
    return seen


def test_small_batch_bytes_commit_in_several_transactions_each_event_once(
    sqlite_url: str,
) -> None:
    """Batches stop at batch_bytes of payload: many commits, each under the bound, all once."""
    with Application(domain.pipeline.app("source"), store=sqlite_url) as source:
        send(source, range(40))
        sizes = {r.position: len(r.payload) for r in source.store.read_log(0)}
    budget = 3 * max(sizes.values())
    with SyncRunner(domain.pipeline, sqlite_url, batch_size=500, batch_bytes=budget) as runner:
        commits = _record_commits(runner)
        runner.run_until_quiet()
        numbers = [r.event.number for r in own_log(runner.app("sink"))]
    assert sorted(numbers) == list(range(40)) and len(numbers) == 40
    assert commits[0][0] == 0 and commits[-1][1] == 40
    assert all(a[1] == b[0] for a, b in pairwise(commits))
    assert len(commits) >= 40 // 3
    for previous, done in commits:
        assert 0 < sum(sizes[p] for p in range(previous + 1, done + 1)) <= budget


def test_a_notification_larger_than_batch_bytes_is_taken_alone() -> None:
    """With batch_bytes=1 every batch still takes one notification, and none is lost."""
    with ThreadedRunner(domain.pipeline, "memory://", batch_bytes=1, poll_interval=0.05) as runner:
        commits = _record_commits(runner)
        send(runner.app("source"), range(10))
        runner.wait_until_quiet(timeout=30)
        numbers = sorted(r.event.number for r in own_log(runner.app("sink")))
    assert numbers == list(range(10))
    assert all(done == previous + 1 for previous, done in commits)


def test_the_default_bound_is_16_mib() -> None:
    """The documented default: 16 MiB of payload per batch."""
    with SyncRunner(domain.pipeline, "memory://") as runner:
        assert runner.followers["sink"].batch_bytes == DEFAULT_BATCH_BYTES == 16 * 2**20


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "1"])
def test_batch_bytes_is_validated_like_batch_size(value: object) -> None:
    """A batch_bytes that is not a positive integer is refused by runners and followers."""
    with pytest.raises(fes.errors.ConfigurationError, match="batch_bytes"):
        SyncRunner(domain.pipeline, "memory://", batch_bytes=value)
    with SyncRunner(domain.pipeline, "memory://") as runner:
        leaders = {"source": runner.app("source")}
        with pytest.raises(fes.errors.ConfigurationError, match="batch_bytes"):
            Follower(runner.app("sink"), leaders, batch_bytes=value)  # type: ignore[arg-type]
