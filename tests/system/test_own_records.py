"""fes's own records (a follower's stops and skips) are not the application's events.

They live in the follower's store, under topics ``fes.*``: ``Application.log()``
leaves them out unless asked, and no policy or view downstream is fed them.
"""

from __future__ import annotations

import pytest

import fes
from fes.edge import SyncRunner
from fes.edge._skips import FollowerHalted, FollowerResumed, PolicySkipped
from system import domain
from system.helpers import send


def _skip_poison(error: BaseException, event: fes.Recorded[object], attempt: int) -> fes.Directive:
    return fes.Skip()


def _sink_with_records() -> SyncRunner:
    """A sink whose policy failed on message 1, skipped and recorded."""
    runner = SyncRunner(domain.with_handler(_skip_poison), "memory://")
    send(runner.app("source"), range(3), poison=[1])
    runner.run_until_quiet()
    return runner


def test_the_log_leaves_out_fes_records_unless_asked() -> None:
    """log() holds the sink's own events only; internal=True shows the skip too."""
    runner = _sink_with_records()
    sink = runner.app("sink")
    everything = sink.log(internal=True)
    assert any(isinstance(r.event, PolicySkipped) for r in everything)
    mine = sink.log()
    assert mine == [r for r in everything if not r.topic.startswith("fes.")]
    assert len(mine) == 2 and all(isinstance(r.event, domain.Received) for r in mine)
    assert [r.event for r in sink.log(topics=["fes.PolicySkipped"])] == [
        r.event for r in everything if isinstance(r.event, PolicySkipped)
    ]


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_pages_of_the_log_skip_fes_records_and_end_only_at_the_end(limit: int) -> None:
    """Paging by the last position returned reaches every event, whatever fes recorded between."""
    runner = SyncRunner(domain.pipeline, "memory://")
    sink = runner.app("sink")
    send(runner.app("source"), range(2))
    runner.run_until_quiet()
    stops = [FollowerHalted("sink", "source", n, "E: x", "f.py:1", "", "t", "h", 1)
             for n in range(2 * limit)]
    batch = sink.batch()
    batch.emit(fes.edge._skips.skips, "fes.stops", [*stops, FollowerResumed("sink", "source", 9)])
    sink.commit(batch)  # a run of fes's records longer than a page
    send(runner.app("source"), range(2, 4))
    runner.run_until_quiet()
    pages, after = [], 0
    while page := sink.log(after, limit=limit):
        assert len(page) <= limit
        pages.append(page)
        after = page[-1].position
    assert [r.event.number for p in pages for r in p] == [0, 1, 2, 3]
