"""SIGKILL a follower's process at random moments over PostgreSQL: each event has one effect."""

from __future__ import annotations

import pytest

from system.helpers import kill_while_flowing


@pytest.mark.slow
@pytest.mark.postgres
def test_sigkill_at_random_moments_postgres(pg_url: str) -> None:
    """50 SIGKILLs of the follower's process while 5,000 events flow: each has one effect."""
    mid_flight = kill_while_flowing(pg_url, events=5000, kills=50, chunk=25, seed=2)
    assert mid_flight >= 12, "kills should often land while there is work in hand"
