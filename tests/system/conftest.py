"""Fixtures of the runner tests: store URLs of each kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fes.edge.stores import Database, open_database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The URL of a fresh SQLite file (NORMAL durability: these tests are not about fsync)."""
    return f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"


@pytest.fixture(params=["memory", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An open database: in memory, then an SQLite file."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'fes.db'}"
    db = open_database(url)
    try:
        yield db
    finally:
        db.close()
