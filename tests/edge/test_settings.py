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


def test_placement_gives_each_application_its_store() -> None:
    """One URL serves all; a mapping names some, "*" the rest; the environment the others."""
    apps = ["orders", "payments", "reservations"]
    env = {"FES_STORE_URL": "sqlite:///shop.db", "PAYMENTS_FES_STORE_URL": "sqlite:///pay.db"}
    assert settings.placement(env, None, apps) == {
        "orders": "sqlite:///shop.db",
        "payments": "sqlite:///pay.db",
        "reservations": "sqlite:///shop.db",
    }
    # an explicit URL is every application's, whatever their variables say
    assert settings.placement(env, "memory://", apps) == dict.fromkeys(apps, "memory://")
    given = {"orders": "postgresql://a/orders", "*": "sqlite:///rest.db"}
    assert settings.placement(env, given, apps) == {
        "orders": "postgresql://a/orders",
        "payments": "sqlite:///rest.db",
        "reservations": "sqlite:///rest.db",
    }
    # without "*", an application the mapping does not name reads the environment
    assert settings.placement(env, {"orders": "memory://"}, apps) == {
        "orders": "memory://",
        "payments": "sqlite:///pay.db",
        "reservations": "sqlite:///shop.db",
    }
    # nothing at all placed: the default store serves, as in a first try
    assert settings.placement({}, None, ["orders"]) == {"orders": settings.DEFAULT_STORE_URL}


def test_an_application_nothing_places_is_left_out_not_put_in_the_default() -> None:
    """Once some application is placed, one that nothing places has no store, and says so."""
    apps = ["orders", "payments", "reservations"]
    env = {"PAYMENTS_FES_STORE_URL": "sqlite:///pay.db"}  # RESERVATIONS_… forgotten
    assert settings.placement(env, None, apps) == {"payments": "sqlite:///pay.db"}
    reasons = settings.unplaced(env, None, apps)
    assert set(reasons) == {"orders", "reservations"}
    assert "set RESERVATIONS_FES_STORE_URL or FES_STORE_URL" in reasons["reservations"]
    assert settings.placement({}, {"orders": "memory://"}, ["orders", "x"]) == {
        "orders": "memory://"
    }
    # FES_STORE_URL, "*" or one URL place everything
    for placed_all in (
        settings.placement({**env, "FES_STORE_URL": "memory://"}, None, apps),
        settings.placement(env, {"orders": "memory://", "*": "sqlite:///r.db"}, apps),
        settings.placement(env, "memory://", apps),
    ):
        assert set(placed_all) == set(apps)


def test_a_runner_refuses_an_application_it_needs_that_nothing_places(tmp_path: Path) -> None:
    """payments' runner needs reservations' store (its leader): an unset variable is refused."""
    from fes.edge import Application, SyncRunner
    from fes.examples import shop

    env = {"PAYMENTS_FES_STORE_URL": f"sqlite:///{tmp_path / 'pay.db'}",
           "ORDERS_FES_STORE_URL": f"sqlite:///{tmp_path / 'orders.db'}"}
    with pytest.raises(fes.errors.ConfigurationError,
                       match="nothing places application 'reservations'"):
        SyncRunner(shop.system, None, env=env, apps=["payments"])
    # a runner of orders alone needs orders and payments (its leaders: reservations too)
    with pytest.raises(fes.errors.ConfigurationError, match="RESERVATIONS_FES_STORE_URL"):
        SyncRunner(shop.system, None, env=env, apps=["orders"])
    # an Application takes its entry from a whole system's mapping
    mapping = {"orders": f"sqlite:///{tmp_path / 'orders.db'}", "payments": "memory://"}
    with Application(shop.orders, mapping, env={}) as orders:
        assert orders.database.url.endswith("orders.db")
    with pytest.raises(fes.errors.ConfigurationError, match="nothing places application"):
        Application(shop.reservations, mapping, env={})


def test_the_same_store_named_twice_for_one_application_is_one_store() -> None:
    assert settings.parse_store_option(["a=memory://", "a=memory://"]) == {"a": "memory://"}


def test_placement_refuses_a_mapping_it_cannot_honour() -> None:
    """A key naming no application (a typo) and an empty URL are errors, not the default."""
    apps = ["orders", "payments"]
    with pytest.raises(fes.errors.ConfigurationError, match="'paymnets', which is no application"):
        settings.placement({}, {"paymnets": "sqlite:///p.db"}, apps)
    with pytest.raises(fes.errors.ConfigurationError, match="store URL is empty"):
        settings.placement({}, {"orders": ""}, apps)
    with pytest.raises(fes.errors.ConfigurationError, match="store URL is empty"):
        settings.placement({}, "", apps)
    with pytest.raises(fes.errors.ConfigurationError, match="mapping of application names"):
        settings.placement({}, 42, apps)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([], None),
        (["sqlite:///a.db"], "sqlite:///a.db"),
        # a URL's query holds "=", but a URL starts with its scheme
        (["sqlite:///a.db?synchronous=NORMAL"], "sqlite:///a.db?synchronous=NORMAL"),
        (["orders=postgresql://h/o?sslmode=require", "sqlite:///rest.db"],
         {"orders": "postgresql://h/o?sslmode=require", "*": "sqlite:///rest.db"}),
        (["*=memory://", "pay-ments=sqlite:///p.db"],
         {"*": "memory://", "pay-ments": "sqlite:///p.db"}),
    ],
)
def test_store_options_of_a_command_line(
    given: list[str], expected: str | dict[str, str] | None
) -> None:
    """--store URL and repeated --store APP=URL read as one URL or a mapping."""
    assert settings.parse_store_option(given) == expected


def test_store_options_refuse_two_stores_for_one_application() -> None:
    with pytest.raises(fes.errors.ConfigurationError, match="two stores for application 'a'"):
        settings.parse_store_option(["a=memory://", "a=sqlite:///x.db"])
    with pytest.raises(fes.errors.ConfigurationError, match="every other application"):
        settings.parse_store_option(["sqlite:///x.db", "*=sqlite:///y.db"])
    with pytest.raises(fes.errors.ConfigurationError, match="store URL is empty"):
        settings.parse_store_option(["orders="])


def test_an_application_variable_gives_it_its_own_database(tmp_path: Path) -> None:
    """<APP>_FES_STORE_URL puts that application's tables, and only them, in its store."""
    from fes.edge import SyncRunner
    from fes.edge.stores import open_database
    from fes.examples import shop

    main, pay = tmp_path / "shop.db", tmp_path / "pay.db"
    env = {"FES_STORE_URL": f"sqlite:///{main}", "PAYMENTS_FES_STORE_URL": f"sqlite:///{pay}"}
    with SyncRunner(shop.system, None, env=env) as runner:
        runner.app("reservations").execute(
            shop.stock, shop.stock_stream("mug"), shop.restock, "mug", 5
        )
        order = runner.app("orders").new_id()
        runner.app("orders").execute(shop.order, order, shop.place, "ann", "mug", 1, 500)
        runner.run_until_quiet()
        assert runner.app("orders").get(shop.order, order).status == "paid"
        assert runner.databases["payments"] is not runner.databases["orders"]
        with pytest.raises(fes.errors.ConfigurationError, match="several databases"):
            _ = runner.database
    with open_database(f"sqlite:///{main}") as database:
        assert sorted(database.apps()) == ["orders", "reservations"]
    with open_database(f"sqlite:///{pay}") as database:
        assert database.apps() == ["payments"]


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


def test_runners_refuse_an_empty_store_url() -> None:
    """A runner given "" (an unset variable, interpolated) says so, like run."""
    from fes.edge import SyncRunner, ThreadedRunner
    from fes.examples.shop import system

    for runner in (SyncRunner, ThreadedRunner):
        with pytest.raises(fes.errors.ConfigurationError, match="store URL is empty"):
            runner(system, "")
        with pytest.raises(fes.errors.ConfigurationError, match="store URL is empty"):
            runner(system, {"orders": " "})
