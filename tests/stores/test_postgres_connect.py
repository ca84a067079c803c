"""Connection failures against a real PostgreSQL: fast, public, once-logged, clear.

Every case opens a database whose address is wrong in one way and asks for
a store: the error is :class:`fes.errors.StoreUnavailable`, names what to fix
without the password, comes within a bound, and is logged once however many
tries it took.  The bounds are upper limits on how long a failure takes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from pgserver import PgServer

from fes.edge.stores import open_database
from fes.errors import StoreError, StoreUnavailable

_PW_ROLE = "fes_pw_role"
_PW_LINE = f"host all {_PW_ROLE} 127.0.0.1/32 scram-sha-256\n"


def _replace(url: str, *, netloc: str | None = None, path: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit(
        parts._replace(
            netloc=parts.netloc if netloc is None else netloc,
            path=parts.path if path is None else path,
        )
    )


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records of fes and of psycopg (whose pool used to log each try)."""
    return [r for r in caplog.records if r.name.startswith(("fes", "psycopg"))]


def _fails(url: str, caplog: pytest.LogCaptureFixture) -> tuple[StoreUnavailable, float]:
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with open_database(url) as database, pytest.raises(StoreUnavailable) as caught:
        database.store("shop")
    return caught.value, time.monotonic() - started


@pytest.fixture
def password_role(pg_server: PgServer) -> Iterator[str]:
    """A role that must give its password: pg_hba asks it alone, every other role is trusted.

    The test server trusts every local connection, so a role with a password
    would connect with any password.  A pg_hba.conf line naming just this
    role, put first (the first matching line wins), makes the server check
    its password without changing how any other test connects.
    """
    hba = pg_server.data_dir / "pg_hba.conf"
    original = hba.read_text()
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {_PW_ROLE}")
        conn.execute(f"CREATE ROLE {_PW_ROLE} LOGIN PASSWORD 'right-secret'")
        hba.write_text(_PW_LINE + original)
        conn.execute("SELECT pg_reload_conf()")
    url = f"postgresql://{_PW_ROLE}:wrong-s3cret@127.0.0.1:{pg_server.port}/postgres"
    deadline = time.monotonic() + 10
    while True:  # the postmaster reloads asynchronously
        try:
            psycopg.connect(url).close()
        except psycopg.OperationalError:
            break
        assert time.monotonic() < deadline, "pg_hba.conf was not reloaded"
        time.sleep(0.05)
    try:
        yield url
    finally:
        hba.write_text(original)
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


def test_a_wrong_password_fails_at_once(
    password_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password raises StoreUnavailable within 5 s, names the fix, hides the password."""
    error, took = _fails(password_role, caplog)
    message = str(error)
    assert took < 5
    assert "authentication failed" in message and "password" in message
    assert "wrong-s3cret" not in message and f"{_PW_ROLE}:***@" in message
    assert len(_records(caplog)) == 1
    assert "wrong-s3cret" not in caplog.text


def test_an_unknown_database_fails_at_once(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A database that does not exist raises StoreUnavailable within 5 s, logged once."""
    error, took = _fails(_replace(pg_url, path="/no_such_db"), caplog)
    assert took < 5
    assert "unknown database" in str(error) and "no_such_db" in str(error)
    assert "createdb" in str(error)
    assert len(_records(caplog)) == 1


def test_an_unknown_role_fails_at_once(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A role that does not exist raises StoreUnavailable within 5 s, logged once."""
    host = urlsplit(pg_url).netloc.rpartition("@")[2]
    error, took = _fails(_replace(pg_url, netloc=f"nobody_here@{host}"), caplog)
    assert took < 5
    assert "unknown role" in str(error) and "nobody_here" in str(error)
    assert len(_records(caplog)) == 1
    assert type(error) is StoreUnavailable and not error.transient


def test_a_closed_port_is_retried_until_the_first_connect_timeout(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A closed port is retried for first_connect_timeout, then StoreUnavailable, logged once."""
    user = urlsplit(pg_url).netloc.rpartition("@")[0]
    url = _replace(pg_url, netloc=f"{user}@127.0.0.1:1") + "?first_connect_timeout=1.5"
    error, took = _fails(url, caplog)
    assert took < 1.5 + 2  # one pause and one try may overrun the deadline
    assert "connection refused" in str(error) and "first_connect_timeout" in str(error)
    assert len(_records(caplog)) == 1
    # the class a traceback names is the public one, marked as worth retrying
    assert type(error) is StoreUnavailable and error.transient


def test_the_default_first_connect_timeout_bounds_a_closed_port(pg_url: str) -> None:
    """Without options, a closed port fails within the documented 5 s (plus one try)."""
    user = urlsplit(pg_url).netloc.rpartition("@")[0]
    started = time.monotonic()
    url = _replace(pg_url, netloc=f"{user}@127.0.0.1:1")
    with open_database(url) as database, pytest.raises(StoreUnavailable, match="refused"):
        database.apps()
    assert time.monotonic() - started < 5 + 2


def test_an_unknown_host_fails_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """A host name that does not resolve raises StoreUnavailable at once."""
    error, took = _fails("postgresql://u:pw@no-such-host.invalid/db", caplog)
    assert took < 5
    assert "unknown host" in str(error)
    assert len(_records(caplog)) == 1


def test_store_unavailable_is_a_store_error() -> None:
    """Code catching StoreError keeps catching connection failures."""
    assert issubclass(StoreUnavailable, StoreError)


def test_a_reachable_database_opens_its_pool_on_first_use(pg_url: str) -> None:
    """With a right address the first connection succeeds and the store works."""
    with open_database(pg_url) as database:
        assert database.store("shop").last_position() == 0
