"""Tests for the throwaway PostgreSQL server helper used by the postgres test suite."""

from __future__ import annotations

import os

import psycopg
import pytest
from pgserver import PgServer

pytestmark = pytest.mark.postgres


def test_server_serves_queries_in_created_database() -> None:
    """A started server accepts connections and create_database yields a usable, distinct DB."""
    with PgServer() as server:
        assert server.dsn == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        with psycopg.connect(server.dsn) as conn:
            row = conn.execute("SELECT current_user, current_setting('fsync')").fetchone()
        assert row == ("postgres", "off")

        url = server.create_database("fes_test_db")
        assert url == f"postgresql://postgres@127.0.0.1:{server.port}/fes_test_db"
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (41), (1)")
            total = conn.execute("SELECT current_database(), sum(x) FROM t").fetchone()
        assert total == ("fes_test_db", 42)


def test_stop_shuts_server_down_and_removes_directory() -> None:
    """stop() really stops the postmaster (connections refused) and deletes the temp dir."""
    server = PgServer().start()
    dsn = server.dsn
    tmpdir = server.data_dir.parent
    assert tmpdir.is_dir()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    server.stop()

    assert not server.running
    assert not os.path.exists(tmpdir)
    with pytest.raises(psycopg.OperationalError, match="refused"):
        psycopg.connect(dsn, connect_timeout=5)
    server.stop()  # idempotent
