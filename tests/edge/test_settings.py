"""One settings module: every FES_* variable, per-application overrides, one table of words."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import fes
from fes.edge import _settings as settings


def test_prefixed_variable_wins_over_the_global_one() -> None:
    """ORDERS_FES_STORE_URL serves the orders application; others read FES_STORE_URL."""
    env = {"FES_STORE_URL": "sqlite:///all.db", "ORDERS_FES_STORE_URL": "memory://"}
    assert settings.store_url(env, app="orders") == "memory://"
    assert settings.store_url(env, app="payments") == "sqlite:///all.db"
    assert settings.store_url(env) == "sqlite:///all.db"


def test_application_names_with_dashes_map_to_underscores() -> None:
    """An app called order-lines reads ORDER_LINES_FES_COMPRESS."""
    assert settings.compress({"ORDER_LINES_FES_COMPRESS": "yes"}, app="order-lines") is True
    assert settings.compress({"ORDER_LINES_FES_COMPRESS": "yes"}, app="orders") is False


def test_empty_variables_count_as_unset() -> None:
    """An empty prefixed or global variable falls through to the next one, then the default."""
    env = {"ORDERS_FES_STORE_URL": "", "FES_STORE_URL": ""}
    assert settings.store_url(env, app="orders") == settings.DEFAULT_STORE_URL
    env = {"ORDERS_FES_STORE_URL": "", "FES_STORE_URL": "memory://"}
    assert settings.store_url(env, app="orders") == "memory://"


def test_a_given_url_beats_the_environment() -> None:
    """An explicit store argument is used as it is, whatever the environment says."""
    assert settings.store_url({"FES_STORE_URL": "memory://"}, "sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_given_url_is_refused(empty: str) -> None:
    """store="" (an unset variable interpolated) is an error, not a stray ./fes.db."""
    with pytest.raises(fes.errors.ConfigurationError, match="store URL is empty"):
        settings.store_url({}, empty, app="orders")


@given(st.sampled_from(["1", "true", "YES", " on ", "True"]))
def test_true_words(word: str) -> None:
    """Every true word, in any case and with spaces around it, reads as True."""
    assert settings.flag(word) is True


@given(st.sampled_from(["0", "false", "No", "OFF "]))
def test_false_words(word: str) -> None:
    """Every false word reads as False."""
    assert settings.flag(word) is False


@given(st.text().filter(lambda w: w.strip().lower() not in settings._WORDS))
def test_other_words_are_refused(word: str) -> None:
    """A word outside the table is an error, never silently false."""
    with pytest.raises(ValueError, match="true or false word"):
        settings.flag(word)


def test_bad_compress_names_the_variable_it_came_from() -> None:
    """A bad FES_COMPRESS is a ConfigurationError naming the variable that held it."""
    with pytest.raises(fes.errors.ConfigurationError, match=r"FES_COMPRESS must be .*'maybe'$"):
        settings.compress({"FES_COMPRESS": "maybe"}, app="orders")
    with pytest.raises(
        fes.errors.ConfigurationError, match=r"'maybe' \(from ORDERS_FES_COMPRESS\)"
    ):
        settings.compress({"ORDERS_FES_COMPRESS": "maybe"}, app="orders")


@pytest.mark.parametrize("raw", ["0", "-3", "ten", "1.5"])
def test_bad_snapshot_every_is_refused(raw: str) -> None:
    """FES_SNAPSHOT_EVERY must be a positive integer."""
    with pytest.raises(fes.errors.ConfigurationError, match="FES_SNAPSHOT_EVERY"):
        settings.snapshot_every({"FES_SNAPSHOT_EVERY": raw})


def test_snapshot_every_per_application() -> None:
    """The application's own FES_SNAPSHOT_EVERY overrides the global one."""
    env = {"FES_SNAPSHOT_EVERY": "100", "BANK_FES_SNAPSHOT_EVERY": "7"}
    assert settings.snapshot_every(env, app="bank") == 7
    assert settings.snapshot_every(env, app="shop") == 100
    assert settings.snapshot_every({}, app="shop") is None


def test_app_env_shows_each_variable_as_the_app_sees_it() -> None:
    """AppEnv maps FES_* names to the app's values, prefixed first, and lists only set ones."""
    env = {"FES_CIPHER_KEYS": "a:AAAA", "BANK_FES_CIPHER_KEYS": "b:BBBB", "OTHER": "x"}
    view = settings.AppEnv(env, "bank")
    assert view["FES_CIPHER_KEYS"] == "b:BBBB"
    assert dict(view) == {"FES_CIPHER_KEYS": "b:BBBB"}
    assert "FES_CIPHER_KEY_ID" not in view
    assert settings.AppEnv(env, "shop")["FES_CIPHER_KEYS"] == "a:AAAA"


def test_a_system_takes_one_store_and_refuses_an_app_of_its_own() -> None:
    """run and `fes run` keep a system in one store: an app's own different URL is refused."""
    apps = ["orders", "payments"]
    env = {"FES_STORE_URL": "sqlite:///shop.db", "PAYMENTS_FES_STORE_URL": "sqlite:///pay.db"}
    with pytest.raises(fes.errors.ConfigurationError, match="PAYMENTS_FES_STORE_URL names a store"):
        settings.system_store_url(env, None, apps)
    same = {**env, "PAYMENTS_FES_STORE_URL": "sqlite:///shop.db"}
    assert settings.system_store_url(same, None, apps) == "sqlite:///shop.db"
    # an explicit URL is the system's, whatever the applications' variables say
    assert settings.system_store_url(env, "memory://", apps) == "memory://"


def test_run_refuses_an_application_store_it_would_ignore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fes.edge.run reads the settings: a stray <APP>_FES_STORE_URL stops it before it starts."""
    from fes.edge import run
    from fes.examples.shop import system

    monkeypatch.setenv("FES_STORE_URL", "memory://")
    monkeypatch.setenv("PAYMENTS_FES_STORE_URL", "sqlite:///elsewhere.db")
    with pytest.raises(fes.errors.ConfigurationError, match="PAYMENTS_FES_STORE_URL"):
        run(system)


def test_application_refuses_an_empty_store_url() -> None:
    """Application(app, store="") is an error, not events written to ./fes.db."""
    from fes.edge import Application
    from fes.examples.dogs import dogs

    with pytest.raises(fes.errors.ConfigurationError, match="store URL is empty"):
        Application(fes.App("school", aggregates=[dogs]), "", env={})


def test_runners_read_the_store_from_the_environment_when_told_none(tmp_path: Path) -> None:
    """SyncRunner(system, None) opens FES_STORE_URL, as Application(app, None) does."""
    from fes.edge import SyncRunner
    from fes.examples.shop import system

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    with SyncRunner(system, None, env={"FES_STORE_URL": url}) as runner:
        assert runner.database.url == url
        assert runner.app("orders").database is runner.database


def test_runners_refuse_an_empty_store_url_and_a_stray_app_store() -> None:
    """A runner given "" or reading an app's own different URL says so, like run."""
    from fes.edge import SyncRunner, ThreadedRunner
    from fes.examples.shop import system

    for runner in (SyncRunner, ThreadedRunner):
        with pytest.raises(fes.errors.ConfigurationError, match="store URL is empty"):
            runner(system, "")
        env = {"FES_STORE_URL": "memory://", "ORDERS_FES_STORE_URL": "sqlite:///o.db"}
        with pytest.raises(fes.errors.ConfigurationError, match="ORDERS_FES_STORE_URL"):
            runner(system, None, env=env)


def test_a_process_runner_refuses_a_system_it_cannot_send_to_workers(tmp_path: Path) -> None:
    """A System object that cannot be pickled is refused at once, naming the way out."""
    from fes.edge import ProcessRunner
    from fes.examples.shop import system

    path = tmp_path / "shop.db"
    with pytest.raises(fes.errors.ConfigurationError, match="'module:attribute'"):
        ProcessRunner(system, f"sqlite:///{path}", processes=1)
    assert not path.exists()  # refused before any database was opened
