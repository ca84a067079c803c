"""`fes apps --system` looks inside empty stores without creating anything in them.

Found by a new user's trial: on two empty PostgreSQL databases, ``fes apps
--system`` created the four tables of an application that leads another
and has a view, because the leader's position (0, asked for a follower)
was taken for an application found with tables, whose store was then
opened.  On SQLite files, opened not to create, the command failed instead.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import psycopg
import pytest
from pgserver import PgServer

import fes
from fes.edge._cli import main

#: The module of the systems below, as ``--system`` names it.
MODULE = "system.test_cli_creates_nothing"


def _counted(count: int, recorded: fes.Recorded[object]) -> int:
    return count + 1


levels = fes.View("levels", 0, _counted)

# stock leads orders and has a view: its position is asked for as orders' leader
stock_leads = fes.System(
    [fes.App("orders", policy=fes.nothing), fes.App("stock", views=[levels])],
    pipes=[["stock", "orders"]],
)

# a cycle: stock is asked for as orders' leader before it is looked at as a follower
cycle = fes.System(
    [fes.App("orders", policy=fes.nothing), fes.App("stock", policy=fes.nothing, views=[levels])],
    pipes=[["orders", "stock", "orders"]],
)

SYSTEMS = ["stock_leads", "cycle"]


@pytest.fixture(autouse=True)
def _no_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No FES_* variable places anything, and no fes.db is in the current directory."""
    for key in list(os.environ):
        if key.endswith("FES_STORE_URL"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def _apps(system: str, places: dict[str, str]) -> int:
    options = [part for name, url in places.items() for part in ("--store", f"{name}={url}")]
    return main(["apps", "--system", f"{MODULE}:{system}", *options])


def _postgres_tables(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    return [(schema, name) for schema, name in rows]


def _sqlite_tables(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [name for (name,) in conn.execute("SELECT name FROM sqlite_master")]
    finally:
        conn.close()


def _views(out: str) -> str:
    """The views section of `fes apps`' output."""
    return out.split("\nviews\n")[1].split("\n\n")[0]


def _reported_empty(out: str) -> None:
    """`fes apps` said the stores are empty: followers not started, views with no tables."""
    assert "not started: nothing to follow yet" in out
    assert "no tables yet" in _views(out)


@pytest.mark.parametrize("system", SYSTEMS)
def test_apps_with_the_system_creates_no_table_in_empty_postgres_databases(
    system: str, pg_url: str, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each application in an empty database of its own: both stay empty."""
    places = {
        "orders": pg_url,
        "stock": pg_server.create_database(pg_url.rsplit("/", 1)[1] + "_stock"),
    }
    assert _apps(system, places) == 0
    out = capsys.readouterr().out
    for url in places.values():
        assert _postgres_tables(url) == []
    _reported_empty(out)


@pytest.mark.parametrize("system", SYSTEMS)
def test_apps_with_the_system_creates_no_table_in_empty_sqlite_files(
    system: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Empty files are read as empty stores, not refused, and get no table, nor a byte.

    (Opening one used to switch it to WAL mode, which writes its header.)
    """
    paths = {name: tmp_path / f"{name}.db" for name in ("orders", "stock")}
    for path in paths.values():
        path.touch()
    assert _apps(system, {name: f"sqlite:///{path}" for name, path in paths.items()}) == 0
    out = capsys.readouterr().out
    for path in paths.values():
        assert path.stat().st_size == 0
        assert _sqlite_tables(path) == []
    _reported_empty(out)


@pytest.mark.parametrize("system", SYSTEMS)
def test_apps_with_the_system_creates_no_missing_sqlite_file(
    system: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file is said to be missing (exit 1), and stays missing."""
    orders, stock = tmp_path / "orders.db", tmp_path / "stock.db"
    orders.touch()
    assert _apps(system, {"orders": f"sqlite:///{orders}", "stock": f"sqlite:///{stock}"}) == 1
    out = capsys.readouterr().out
    assert not stock.exists()
    assert _sqlite_tables(orders) == []
    assert f"there is no file {stock}" in out


def test_apps_and_log_name_an_empty_store_and_say_it_is_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty file is shown as the store read, with no application yet.

    (`fes apps` used to print "store: (none)" over an empty table, and
    `fes log` nothing at all, as if no store had been read.)
    """
    path = tmp_path / "empty.db"
    path.touch()
    url = f"sqlite:///{path}"
    assert main(["apps", "--store", url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"store: {url}\n")
    assert "(none yet: no application has written to this store)" in out
    assert "last position" not in out  # no empty table
    assert main(["log", "--store", url]) == 0
    assert capsys.readouterr().out == f"no application has written to {url} yet\n"
    assert main(["log", "--json", "--store", url]) == 0
    assert capsys.readouterr().out == ""  # JSON lines: none
    assert path.stat().st_size == 0
