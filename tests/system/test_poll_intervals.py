"""Which ``poll_interval`` bounds how long a waiting runner thread takes to see an append.

A :class:`ThreadedRunner`'s thread with nothing to do sleeps in its leader
store's ``wait`` for at most the runner's ``poll_interval``, then reads the
log again; the store's ``wait`` looks for appends it cannot be woken by
every ``poll_interval`` of the store URL.  An append made through another
open database (for the store, as if by another process) is read within
about the smaller of the two: 0.05 s here, where the other is 30 s.
"""

from __future__ import annotations

import time

import pytest

from fes.edge import Application, ThreadedRunner
from fes.edge.stores import open_database
from system import domain
from system.helpers import send


def _delivered(url: str, runner_poll: float, timeout: float) -> bool:
    """Whether the sink of a runner on ``url`` processes, within ``timeout``, a message
    the runner cannot observe being appended."""
    with ThreadedRunner(domain.pipeline, url, poll_interval=runner_poll) as runner:
        time.sleep(0.3)  # every thread has looked, found nothing and sleeps in a wait
        with open_database(url) as elsewhere:
            send(Application(domain.source, store=elsewhere), [1])
        return runner.wait_for("source", 1, timeout=timeout)


@pytest.mark.parametrize(
    ("url_poll", "runner_poll"), [(0.05, 30), (30, 0.05)], ids=["store-url", "runner"]
)
def test_over_sqlite_the_smaller_interval_bounds_the_wait(
    sqlite_url: str, url_poll: float, runner_poll: float
) -> None:
    assert _delivered(f"{sqlite_url}&poll_interval={url_poll}", runner_poll, timeout=5)


def test_over_sqlite_with_both_long_the_append_is_not_seen_sooner(sqlite_url: str) -> None:
    """What makes the test above mean something: this append wakes nobody."""
    assert not _delivered(f"{sqlite_url}&poll_interval=30", 30, timeout=1)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("url_poll", "runner_poll"), [(0.05, 30), (30, 0.05)], ids=["store-url", "runner"]
)
def test_over_postgres_without_listen_the_smaller_interval_bounds_the_wait(
    pg_url: str, url_poll: float, runner_poll: float
) -> None:
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}listen=false&poll_interval={url_poll}"
    assert _delivered(url, runner_poll, timeout=5)


@pytest.mark.postgres
def test_over_postgres_without_listen_and_both_long_the_append_is_not_seen_sooner(
    pg_url: str,
) -> None:
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}listen=false&poll_interval=30"
    assert not _delivered(url, 30, timeout=1)


@pytest.mark.postgres
def test_over_postgres_with_listen_a_notification_wakes_it_whatever_the_intervals(
    pg_url: str,
) -> None:
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}poll_interval=30"
    assert _delivered(url, 30, timeout=5)
