"""SIGKILL a follower's process at random moments over PostgreSQL: each event has one effect."""

from __future__ import annotations

import pytest

from system.helpers import kill_while_flowing


@pytest.mark.slow
@pytest.mark.postgres
def test_sigkill_at_random_moments_postgres(pg_url: str) -> None:
    """50+ SIGKILLs of the follower's process, 12+ with work in hand: each event has one effect."""
    # as in the SQLite twin: keep killing until enough kills land mid-flight, within bounds
    made, landed = kill_while_flowing(
        pg_url, share=100, kills=50, mid_flight=12, chunk=25, seed=2, max_kills=200,
        time_limit=240,
    )
    assert made >= 50 and landed >= 12
