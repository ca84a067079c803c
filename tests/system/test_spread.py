"""A system whose applications own their databases: still every effect exactly once.

A follower reads each leader's log where the leader lives and records its
events with its tracking position in its own database, in one transaction.
These tests spread the shop over several stores (two PostgreSQL servers and
an SQLite file; memory databases for the property) and check that each
upstream event has exactly one effect, that each database holds only its
own application's tables, and that the outcome is the one a single database
gives.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pgserver import PgServer

import fes
from fes.edge import Application, ProcessRunner, SyncRunner, ThreadedRunner, lags
from fes.edge.stores import MemoryDatabase, open_database
from fes.examples import shop

SKUS = ("kettle", "lamp", "mug")
Order = tuple[int, int, int]  # (sku index, quantity, amount in cents)


def restock(app: Application, quantities: tuple[int, ...]) -> None:
    for sku, quantity in zip(SKUS, quantities, strict=False):
        app.execute(shop.stock, shop.stock_stream(sku), shop.restock, sku, quantity)


def place(app: Application, orders: list[Order], first: int = 0) -> list[str]:
    """Place ``orders`` as order-<first>, order-<first+1>, … in one transaction."""
    batch = app.batch()
    ids = []
    for index, (sku, quantity, amount) in enumerate(orders, start=first):
        ids.append(f"order-{index}")
        batch.execute(shop.order, ids[-1], shop.place, "ann", SKUS[sku], quantity, amount)
    app.commit(batch)
    return ids


def expected_causes(apps: dict[str, Application]) -> dict[str, set[str]]:
    """Per follower, the upstream events (``leader:stream@version``) that must have one effect.

    In the shop each of these causes exactly one event downstream: a placed
    order one reservation outcome, a cancelled order that held stock one
    release, a reservation one payment outcome, and each outcome one change
    of the order.
    """
    expected: dict[str, set[str]] = {"orders": set(), "reservations": set(), "payments": set()}
    for name, app in apps.items():
        for recorded in app.log():
            event, cause = recorded.event, f"{name}:{recorded.id}"
            if isinstance(event, shop.OrderPlaced) or (
                isinstance(event, shop.OrderCancelled) and event.reserved
            ):
                expected["reservations"].add(cause)
            elif isinstance(event, shop.StockReserved):
                expected["payments"].add(cause)
            elif isinstance(event, shop.ReservationFailed | shop.PaymentTaken
                            | shop.PaymentDeclined):
                expected["orders"].add(cause)
    return expected


def assert_exactly_once(apps: dict[str, Application]) -> int:
    """Every upstream event had exactly one effect, and nothing else was caused; the count."""
    checked = 0
    for name, causes in expected_causes(apps).items():
        found = Counter(
            r.metadata.causation_id for r in apps[name].log()
            if r.metadata.causation_id is not None and not r.topic.startswith("fes.")
        )
        doubled = {c: n for c, n in found.items() if n > 1}
        assert not doubled, f"{name}: upstream events with more than one effect: {doubled}"
        assert set(found) == causes, (
            f"{name}: without effect {sorted(causes - set(found))[:5]}, "
            f"unexpected {sorted(set(found) - causes)[:5]}"
        )
        checked += len(causes)
    assert checked, "no upstream event was checked"
    return checked


def assert_settled(orders: Application, ids: list[str]) -> None:
    statuses = Counter(orders.get(shop.order, i).status for i in ids)
    assert set(statuses) <= {"paid", "cancelled"}, statuses
    assert statuses["paid"] and statuses["cancelled"], f"a run that exercised one path: {statuses}"


def chosen_orders(count: int, seed: int) -> list[Order]:
    chance = random.Random(seed)
    # some above the card limit (declined), some asking more than the stock holds
    return [
        (chance.randrange(len(SKUS)), chance.randint(1, 3), chance.randint(10, 700) * 100)
        for _ in range(count)
    ]


# --- two PostgreSQL servers and an SQLite file ----------------------------------------


@pytest.fixture
def second_server() -> Any:
    with PgServer() as server:
        yield server


@pytest.mark.postgres
def test_the_shop_over_two_postgresql_servers_and_an_sqlite_file(
    pg_server: PgServer, second_server: PgServer, tmp_path: Path
) -> None:
    """orders on server A, reservations on server B, payments in a file: exactly once."""
    places = {
        "orders": pg_server.create_database("spread_orders"),
        "reservations": second_server.create_database("spread_reservations"),
        "payments": f"sqlite:///{tmp_path / 'payments.db'}",
    }
    assert pg_server.port != second_server.port
    with ThreadedRunner(shop.system, places, poll_interval=0.05) as runner:
        restock(runner.app("reservations"), (30, 30, 30))
        ids: list[str] = []
        for chunk in range(6):
            ids += place(runner.app("orders"), chosen_orders(15, chunk), first=len(ids))
        assert runner.wait_until_quiet(timeout=60)
        assert_settled(runner.app("orders"), ids)
        assert assert_exactly_once(runner.applications) >= 2 * len(ids)
        # each follower's position is tracked where it lives, against its leader's log
        behind = lags(runner.databases, shop.system)
        assert behind and all(tracked == last for tracked, last in behind.values())
    for name, url in places.items():
        with open_database(url) as database:
            assert database.apps() == [name], f"{url} holds {database.apps()}"


# --- one database or three: the same stores ---------------------------------------------


def contents(apps: dict[str, Application]) -> dict[str, list[Any]]:
    """Each application's log as stored, without the times it was written."""
    return {
        name: [
            (r.position, r.stream, r.version, r.topic, r.event,
             r.metadata.correlation_id, r.metadata.causation_id)
            for r in app.log()
        ]
        for name, app in apps.items()
    }


def run_shop(store: Any, stock: tuple[int, ...], rounds: list[list[Order]]) -> dict[str, Any]:
    with SyncRunner(shop.system, store) as runner:
        restock(runner.app("reservations"), stock)
        placed = 0
        for orders in rounds:
            placed += len(place(runner.app("orders"), orders, first=placed))
            runner.run_until_quiet()
        return contents(runner.applications)


orders_strategy = st.lists(
    st.tuples(
        st.integers(0, len(SKUS) - 1),
        st.integers(1, 4),
        st.integers(1, 90).map(lambda cents: cents * 1000),
    ),
    min_size=1, max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(stock=st.tuples(*[st.integers(1, 8)] * len(SKUS)),
       rounds=st.lists(orders_strategy, min_size=1, max_size=4))
def test_a_spread_system_stores_what_one_database_stores(
    stock: tuple[int, ...], rounds: list[list[Order]]
) -> None:
    """Event for event, per application: three databases hold what one would."""
    one = run_shop(MemoryDatabase(), stock, rounds)
    spread = run_shop(
        {"orders": MemoryDatabase(), "reservations": MemoryDatabase(), "*": MemoryDatabase()},
        stock, rounds,
    )
    assert spread == one
    kinds = Counter(type(r[4]).__name__ for r in one["orders"])
    assert kinds["OrderPlaced"] == kinds["OrderPaid"] + kinds["OrderCancelled"] > 0


def test_spread_over_sqlite_files_as_in_one_file(tmp_path: Path) -> None:
    """The same on SQLite: three files hold, per application, what one file holds."""
    rounds = [chosen_orders(12, seed) for seed in range(3)]
    one = run_shop(f"sqlite:///{tmp_path / 'one.db'}", (6, 6, 6), rounds)
    spread = run_shop(
        {name: f"sqlite:///{tmp_path / name}.db" for name in ("orders", "reservations",
                                                               "payments")},
        (6, 6, 6), rounds,
    )
    assert spread == one
    assert Counter(type(r[4]).__name__ for r in one["orders"])["OrderPaid"]


# --- crashes: workers killed, a leader's server stopped -----------------------------------


class _Writer(threading.Thread):
    """Places orders in small transactions while workers die, riding out a server outage."""

    def __init__(self, orders: Application) -> None:
        super().__init__(daemon=True)
        self.orders = orders
        self.ids: list[str] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        chance = random.Random(11)
        while not self.stop.is_set():
            first = len(self.ids)
            chunk = chosen_orders(5, first)
            try:
                self.ids += place(self.orders, chunk, first=first)
            except fes.errors.StoreError:
                # the server went away mid-commit: whether it committed is unknown,
                # so look, rather than place the orders a second time
                self.failures += 1
                time.sleep(0.1)
                try:
                    if self.orders.store.stream_version(f"order-{first}"):
                        self.ids += [f"order-{i}" for i in range(first, first + len(chunk))]
                except fes.errors.StoreError:
                    pass
                continue
            time.sleep(chance.uniform(0.0, 0.02))


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_killed_and_a_leaders_server_crashed_over_three_stores(
    tmp_path: Path,
) -> None:
    """30 SIGKILLs of workers on different databases, and orders' server crashed mid-run."""
    with PgServer() as server_a, PgServer() as server_b:
        places = {
            "orders": server_a.create_database("crash_orders"),
            "reservations": server_b.create_database("crash_reservations"),
            "payments": f"sqlite:///{tmp_path / 'payments.db'}",
        }
        chance = random.Random(5)
        with ProcessRunner("fes.examples.shop:system", places, processes=3,
                           poll_interval=0.05, batch_size=7) as runner:
            restock(runner.app("reservations"), (600, 600, 600))
            writer = _Writer(runner.app("orders"))
            writer.start()
            kills = 0
            crashed = False
            while kills < 30:
                time.sleep(chance.uniform(0.02, 0.15))
                pids = list(runner.pids().values())
                if not pids:
                    continue
                victim = chance.choice(pids)
                os.kill(victim, signal.SIGKILL)
                kills += 1
                while victim in runner.pids().values():  # until its supervisor saw it die
                    time.sleep(0.002)
                if kills == 15:
                    server_a.crash()
                    crashed = True
                    time.sleep(1.0)  # the leader is gone: its followers stall, its writer fails
                    server_a.restart()
            assert crashed
            writer.stop.set()  # orders flowed through every kill and the outage
            writer.join(60)
            assert not writer.is_alive(), "the writer did not finish placing its orders"
            assert runner.wait_until_quiet(timeout=180)
            assert runner.restarts == kills
            orders = runner.app("orders")
            assert len(writer.ids) == len(set(writer.ids)) >= 100
            assert_settled(orders, writer.ids)
            placed = [r for r in orders.log() if isinstance(r.event, shop.OrderPlaced)]
            assert len(placed) == len(writer.ids), "an order was lost or placed twice"
            assert_exactly_once(runner.applications)


def test_a_service_opens_only_its_own_and_its_leaders_stores(tmp_path: Path) -> None:
    """A runner of payments alone needs payments' and reservations' stores, not orders'."""
    places = {
        "orders": "postgresql://nobody@127.0.0.1:1/orders",  # nothing listens there
        "*": f"sqlite:///{tmp_path / 'rest.db'}",
    }
    with SyncRunner(shop.system, places, apps=["payments"]) as runner:
        assert set(runner.applications) == {"payments", "reservations"}
        restock(runner.app("reservations"), (5,))
        assert runner.run_until_quiet() == 1  # the restock, read by payments' follower
        with pytest.raises(fes.errors.StoreUnavailable):
            runner.app("orders")  # opened when asked for, and only then


@pytest.mark.postgres
def test_a_follower_service_starts_while_its_leaders_server_is_down(tmp_path: Path) -> None:
    """Reservations' runner starts with orders' server down, waits, then catches up."""
    with PgServer() as server:
        places = {
            "orders": server.create_database("down_orders"),
            "*": f"sqlite:///{tmp_path / 'rest.db'}",
        }
        with SyncRunner(shop.system, places) as writer:
            restock(writer.app("reservations"), (10, 10, 10))
            ids = place(writer.app("orders"), chosen_orders(6, 1))
            placed = writer.app("orders").store.last_position()
        server.crash()
        try:
            runner = ThreadedRunner(shop.system, places, apps=["reservations"],
                                    poll_interval=0.05).start()
            time.sleep(0.3)
            assert runner.app("reservations").store.last_tracked("orders") == 0
            assert not runner.errors  # waiting for its leader is not a stop
        finally:
            server.restart()
        try:
            deadline = time.monotonic() + 60
            while runner.app("reservations").store.last_tracked("orders") < placed:
                assert time.monotonic() < deadline, "the follower never caught up"
                time.sleep(0.05)
            held = sum(
                1 for r in runner.app("reservations").log()
                if isinstance(r.event, shop.StockReserved | shop.ReservationFailed)
            )
            assert held == len(ids)
        finally:
            runner.close()


def test_a_dead_workers_log_line_names_its_applications_plainly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """'worker orders exited with code -9', not a Python tuple."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with ProcessRunner("fes.examples.shop:system", url, processes=1,
                       poll_interval=0.05) as runner:
        (pid,) = runner.pids().values()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while runner.restarts == 0:
            assert time.monotonic() < deadline, "the worker was not started again"
            time.sleep(0.02)
    lines = [r.getMessage() for r in caplog.records if "exited with code" in r.getMessage()]
    assert lines and lines[0].startswith("worker orders,reservations,payments exited"), lines
