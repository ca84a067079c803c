"""Shared fixtures: a throwaway PostgreSQL server, started once per test session.

The server is started lazily, by the first test that asks for ``pg_url``; a
fresh database per test keeps tests independent.  PostgreSQL tests are never
skipped: if the server cannot start, they fail with its log.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from pgserver import PgServer

settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole test session."""
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A URL of a fresh, empty PostgreSQL database."""
    return pg_server.create_database(f"fes_test_{os.getpid()}_{next(_counter)}")
