"""Fixtures of the edge's tests: one database of each kind that a test's applications share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fes
from fes.edge import Application
from fes.edge.stores import Database, open_database
from fes.examples.dogs import dogs

SCHOOL = fes.App("school", aggregates=[dogs])


class Place:
    """One database that the applications of a test share."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.database: Database = open_database(url)
        self._opened: list[Application] = []

    def app(self, app: fes.App = SCHOOL, **options: Any) -> Application:
        """An application on this database, isolated from the process environment.

        A memory database lives in one object, so applications share it;
        SQLite and PostgreSQL are opened again from the URL, with connections
        of their own, as another process would.
        """
        options.setdefault("env", {})
        target: str | Database = self.database if self.kind == "memory" else self.url
        application = Application(app, target, **options)
        self._opened.append(application)
        return application

    def close(self) -> None:
        for application in self._opened:
            application.close()
        self.database.close()


def _place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    kind = request.param
    if kind == "memory":
        url = "memory://"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"
    else:
        url = request.getfixturevalue("pg_url")
    return Place(kind, url)


@pytest.fixture(params=["memory", "sqlite"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """A database in memory, then in an SQLite file."""
    opened = _place(request, tmp_path)
    yield opened
    opened.close()


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def any_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """A database in memory, in an SQLite file, then in PostgreSQL."""
    opened = _place(request, tmp_path)
    yield opened
    opened.close()
