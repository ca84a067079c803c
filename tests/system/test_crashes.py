"""Crashes and lost wake-ups: SIGKILL a follower at random moments; lose every NOTIFY."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fes.edge import ThreadedRunner
from system import domain
from system.helpers import kill_while_flowing, send


@pytest.mark.slow
def test_sigkill_at_random_moments_sqlite(tmp_path: Path) -> None:
    """20+ SIGKILLs of the follower's process, 5+ with work in hand: each event has one effect."""
    url = f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"
    # 50 events may flow per kill, as before; a loaded machine needs more kills to land
    # 5 of them mid-flight, so up to 80 are allowed (each takes well under a second)
    made, landed = kill_while_flowing(
        url, share=50, kills=20, mid_flight=5, chunk=10, seed=1, max_kills=80, time_limit=120
    )
    assert made >= 20 and landed >= 5


def _with(url: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _latencies(url: str, runner_poll: float, count: int) -> list[float]:
    """How long each of ``count`` events, sent one by one, takes to be processed."""
    found = []
    with ThreadedRunner(domain.fixed_pipeline, url, poll_interval=runner_poll) as runner:
        source = runner.app("source")
        sink = runner.app("sink").store
        time.sleep(0.3)  # let the threads reach their wait
        for number in range(count):
            started = time.monotonic()
            send(source, [number])
            while sink.last_tracked("source") < number + 1:
                assert time.monotonic() - started < 10, "an event was never processed"
                time.sleep(0.002)
            found.append(time.monotonic() - started)
            time.sleep(0.05)
    return found


@pytest.mark.postgres
def test_every_notify_lost_still_processes_within_the_poll_interval(pg_url: str) -> None:
    """With no NOTIFY ever delivered (listen off), the poll finds each event within its interval."""
    # the runner itself looks again only every 2 s: only the store's poll can be faster
    url = _with(pg_url, listen="false", poll_interval="0.25")
    latencies = _latencies(url, runner_poll=2.0, count=8)
    assert max(latencies) < 0.25 + 0.25, latencies


@pytest.mark.postgres
def test_notify_wakes_a_follower_long_before_the_poll_interval(pg_url: str) -> None:
    """With LISTEN/NOTIFY on and polls 2 s or more apart, events are processed at once."""
    url = _with(pg_url, poll_interval="30")
    latencies = _latencies(url, runner_poll=2.0, count=8)
    assert max(latencies) < 0.5, latencies
