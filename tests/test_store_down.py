"""A PostgreSQL server that goes down while fes runs: fast answers, clear words, quiet logs.

One throwaway server for the module (not the session's: it is crashed here),
crashed and restarted by each test.  With the server down, ``fes serve``
answers 503 at once, saying the store is unavailable, instead of waiting out
the pool's ``pool_timeout``; a follower says once that its leader's store is
away and once that it is back; psycopg_pool's own warnings do not reach the
stderr of a script that configured no logging.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pgserver import PgServer
from system import domain
from system.helpers import send
from test_http_leader import TOKEN, served

from fes.edge import Application, ThreadedRunner
from fes.edge.stores import open_database
from fes.errors import StoreUnavailable

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def server() -> Iterator[PgServer]:
    with PgServer() as started:
        yield started


@pytest.fixture
def leader_url(server: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    url = server.create_database(f"down_{request.node.name[:40].lower()}")
    yield url
    if not server.running:
        server.restart()


def _within(seconds: float, condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _reads(store: object) -> bool:
    try:
        store.read_log(0)  # type: ignore[attr-defined]
    except StoreUnavailable:
        return False
    return True


def _messages(caplog: pytest.LogCaptureFixture, logger: str, level: int, text: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name == logger and r.levelno == level and text in r.getMessage()
    ]


def test_fes_serve_answers_503_at_once_while_its_database_is_down(
    server: PgServer, leader_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The follower hears 'store unavailable' in well under pool_timeout, then reads again."""
    caplog.set_level(logging.DEBUG, logger="fes")
    with Application(domain.source, store=leader_url, env={}) as leader:
        send(leader, range(3))
        with served(leader.store) as url, open_database(url, token=TOKEN, retries=1) as http:
            remote = http.store("source")
            assert len(remote.read_log(0)) == 3
            server.crash()
            for _ in range(3):
                began = time.monotonic()
                with pytest.raises(StoreUnavailable) as down:
                    remote.read_log(0)
                assert time.monotonic() - began < 5, "waited for the pool, not told at once"
                said = str(down.value)
                assert "its store is unavailable" in said and "503" in said, said
                assert "is fes serve running there?" not in said
                assert down.value.transient
            server.restart()
            # a fresh pool at once, not the old one's reconnection backoff
            _within(10, lambda: _reads(remote), "the served store never came back")
            assert len(remote.read_log(0)) == 3
    postgres = "fes.edge.stores.postgres"
    assert len(_messages(caplog, postgres, logging.WARNING, "is unavailable")) == 1
    back = [m for m in _messages(caplog, postgres, logging.WARNING, "answers again")
            if "unavailable" not in m]  # the first warning says "until it answers again"
    assert len(back) == 1
    assert len(_messages(caplog, "fes.serve", logging.WARNING, "store is unavailable")) == 1
    assert len(_messages(caplog, "fes.serve", logging.WARNING, "available again")) == 1


def test_a_follower_says_once_that_its_leader_is_down_and_once_that_it_is_back(
    server: PgServer, leader_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Many failed reads while the leader's server is down: one warning away, one back."""
    caplog.set_level(logging.DEBUG, logger="fes")
    places = {"source": leader_url, "sink": f"sqlite:///{tmp_path / 'sink.db'}"}
    with ThreadedRunner(domain.pipeline, places, poll_interval=0.02) as runner:
        send(runner.app("source"), range(3))
        assert runner.wait_until_quiet(20)
        server.crash()
        unit = "sink<-source"

        def said(level: int, text: str) -> list[str]:
            return [m for m in _messages(caplog, "fes.runners", level, text)
                    if m.startswith(unit)]

        _within(10, lambda: len(said(logging.DEBUG, "is unavailable")) >= 2,
                "the follower did not keep trying")
        server.restart()
        _within(20, lambda: bool(said(logging.WARNING, "available again")),
                "the follower never said its leader was back")
        send(runner.app("source"), range(3, 5))
        assert runner.wait_until_quiet(20)
    assert len(said(logging.WARNING, "is unavailable")) == 1
    assert len(said(logging.WARNING, "available again")) == 1
    record = next(r for r in caplog.records if r.levelno == logging.WARNING
                  and r.name == "fes.runners" and r.getMessage().startswith(unit))
    assert (record.app, record.leader) == ("sink", "source")  # type: ignore[attr-defined]


def test_a_script_without_logging_gets_fes_errors_not_psycopg_pool_warnings(
    server: PgServer, leader_url: str
) -> None:
    """With the server down, stderr holds no psycopg_pool record; the error says it all."""
    script = textwrap.dedent(f"""
        import sys, time
        from fes.edge.stores import open_database
        from fes.errors import StoreUnavailable
        with open_database({leader_url!r}) as database:
            store = database.store("source")
            store.last_position()
            print("ready", flush=True)
            sys.stdin.readline()  # the server is crashed meanwhile
            deadline = time.monotonic() + 1.5  # the pool's reconnections, each once a warning
            while time.monotonic() < deadline:
                try:
                    store.last_position()
                except StoreUnavailable as error:
                    told = error
                time.sleep(0.1)
            print("told:", told, flush=True)
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "ready"
    server.crash()
    child.stdin.write("\n")
    child.stdin.flush()
    out, err = child.communicate(timeout=30)
    assert "is unavailable (connection refused)" in out, out + err
    assert err == "", err
