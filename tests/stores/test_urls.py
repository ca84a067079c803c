"""Store URLs: choosing a store, reading options, masking passwords."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fes.edge.stores import (
    MemoryDatabase,
    SQLiteDatabase,
    database_from_env,
    open_database,
    redact,
)
from fes.edge.stores.checks import check_app_name
from fes.edge.stores.urls import parse_url
from fes.errors import StoreError, StoreURLError


def test_memory_url_opens_a_memory_database() -> None:
    """memory:// gives a MemoryDatabase whose url is memory://."""
    database = open_database("memory://")
    assert isinstance(database, MemoryDatabase)
    assert database.url == "memory://"


@pytest.mark.parametrize("url", ["memory://x", "memory://?a=1", "memory:///tmp/x"])
def test_memory_url_takes_nothing_more(url: str) -> None:
    """memory:// with a path or options is refused."""
    with pytest.raises(StoreURLError, match="memory:// takes no path"):
        open_database(url)


def test_memory_url_takes_no_keyword_options() -> None:
    """Keyword options for memory:// are refused rather than ignored."""
    with pytest.raises(StoreURLError):
        open_database("memory://", synchronous="OFF")


def test_sqlite_url_opens_sqlite(tmp_path: Path) -> None:
    """sqlite:///path gives an SQLiteDatabase on that file."""
    with open_database(f"sqlite:///{tmp_path}/x.db") as database:
        assert isinstance(database, SQLiteDatabase)
        assert database.path == str(tmp_path / "x.db")


def test_sqlite_url_path_is_percent_decoded(tmp_path: Path) -> None:
    """A percent-encoded path (spaces, non-ASCII) names the decoded file."""
    with open_database(f"sqlite:///{tmp_path}/my%20f%C3%AFle.db") as database:
        database.store("shop")
    assert (tmp_path / "my fïle.db").is_file()


def test_scheme_is_case_insensitive(tmp_path: Path) -> None:
    """SQLITE:/// and Memory:// work like their lower-case forms."""
    assert isinstance(open_database("Memory://"), MemoryDatabase)
    with open_database(f"SQLITE:///{tmp_path}/x.db") as database:
        assert isinstance(database, SQLiteDatabase)


@pytest.mark.parametrize(
    "url, problem",
    [
        ("mysql://user@host/db", "unknown scheme 'mysql'"),
        ("shop.db", "no scheme"),
        ("", "no scheme"),
        ("sqlite:/x.db", "no scheme"),
        ("sqlite:///x.db?a=1&&b", "cannot read its options"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, problem: str) -> None:
    """A URL fes cannot understand raises StoreURLError naming it and the problem."""
    with pytest.raises(StoreURLError) as caught:
        open_database(url)
    assert problem in str(caught.value)
    assert repr(url) in str(caught.value)


def test_url_that_is_not_a_string_is_refused() -> None:
    """Passing a non-string raises StoreURLError, not a TypeError from deep inside."""
    with pytest.raises(StoreURLError, match="must be a string"):
        open_database(Path("x.db"))  # type: ignore[arg-type]


def test_errors_never_show_the_password() -> None:
    """Error messages mask a password given in the user part or in the query."""
    for url in ("mysql://admin:hunter2@db/x", "mysql://db/x?user=a&password=hunter2"):
        with pytest.raises(StoreURLError) as caught:
            open_database(url)
        assert "hunter2" not in str(caught.value)
        assert "***" in str(caught.value)


@pytest.mark.parametrize(
    "url, safe",
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:s%40cr%3At@h/db?x=1", "postgresql://u:***@h/db?x=1"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://:pw@h/db", "postgresql://:***@h/db"),
        (
            "postgresql://h/db?password=pw&sslmode=require",
            "postgresql://h/db?password=***&sslmode=require",
        ),
        (
            "postgresql://h/db?sslmode=require&PASSWORD=pw",
            "postgresql://h/db?sslmode=require&PASSWORD=***",
        ),
        ("sqlite:///a:b@c.db", "sqlite:///a:b@c.db"),
        ("memory://", "memory://"),
    ],
)
def test_redact_masks_passwords_only(url: str, safe: str) -> None:
    """redact replaces a password with *** and leaves everything else alone."""
    assert redact(url) == safe


@given(password=st.text(alphabet=st.characters(exclude_characters="/?#@"), min_size=1))
def test_redact_hides_any_password(password: str) -> None:
    """No password, whatever its characters, survives redact in the user part."""
    url = f"postgresql://user:{password}@host/db"
    assert redact(url) == "postgresql://user:***@host/db"


def test_parse_url_splits_scheme_rest_and_options() -> None:
    """parse_url lower-cases the scheme and decodes query options."""
    parsed = parse_url("SQLite:///a/b.db?synchronous=normal&x=%20y#frag")
    assert (parsed.scheme, parsed.rest, dict(parsed.options)) == (
        "sqlite",
        "/a/b.db",
        {"synchronous": "normal", "x": " y"},
    )


class _FakePostgres:
    """Stands in for the PostgreSQL store to see how open_database calls it."""

    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def __init__(self, url: str, **options: Any) -> None:
        self.calls.append((url, options))


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_urls_go_to_the_postgres_store(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """postgresql:// and postgres:// are handed, with options, to PostgresDatabase."""
    fake = types.ModuleType("fes.edge.stores.postgres")
    fake.PostgresDatabase = _FakePostgres  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fes.edge.stores.postgres", fake)
    _FakePostgres.calls.clear()
    url = f"{scheme}://u:pw@localhost/db?pool_size=2"
    database = open_database(url, pool_timeout=3)
    assert isinstance(database, _FakePostgres)
    assert _FakePostgres.calls == [(url, {"pool_timeout": 3})]


def test_postgres_without_psycopg_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """When psycopg is missing, opening a PostgreSQL URL says which extra to install."""
    monkeypatch.delitem(sys.modules, "fes.edge.stores.postgres", raising=False)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreURLError, match=r"fes-events\[postgres\]") as caught:
        open_database("postgresql://u:secret@localhost/db")
    assert "secret" not in str(caught.value)


def test_database_from_env_reads_fes_store_url(tmp_path: Path) -> None:
    """FES_STORE_URL chooses the database; unset or empty falls back to the default."""
    assert isinstance(database_from_env({"FES_STORE_URL": "memory://"}), MemoryDatabase)
    assert isinstance(database_from_env({}, default="memory://"), MemoryDatabase)
    assert isinstance(database_from_env({"FES_STORE_URL": ""}, default="memory://"), MemoryDatabase)
    with database_from_env({}, default=f"sqlite:///{tmp_path}/env.db") as database:
        assert isinstance(database, SQLiteDatabase)


def test_database_from_env_defaults_to_fes_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without FES_STORE_URL or a default, the database is fes.db in the working directory."""
    monkeypatch.chdir(tmp_path)
    with database_from_env({}) as database:
        assert database.url == "sqlite:///fes.db"
    assert (tmp_path / "fes.db").is_file()


def test_database_from_env_reports_a_bad_url() -> None:
    """A bad FES_STORE_URL raises StoreURLError naming it."""
    with pytest.raises(StoreURLError, match="nope"):
        database_from_env({"FES_STORE_URL": "nope://x"})


@given(st.text(alphabet=st.sampled_from("abcXYZ019_-"), min_size=1, max_size=48))
def test_app_names_of_letters_digits_and_dashes_are_accepted(name: str) -> None:
    """Every name of 1 to 48 letters, digits, '_' or '-' with a letter or digit is valid."""
    if name.replace("_", "").replace("-", ""):
        assert check_app_name(name) == name
    else:
        with pytest.raises(StoreError):
            check_app_name(name)
