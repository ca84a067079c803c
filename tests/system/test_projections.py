"""Projections: a view's state stored with its position; rebuilt equals incremental."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrsistent import PMap, pmap

import fes
from fes.edge import Application, Projection, SyncRunner, ThreadedRunner
from fes.edge.codec import Cipher
from fes.edge.stores import open_database
from fes.examples import shop
from system import domain
from system.helpers import send


@frozen
class Totals:
    """A view state of an attrs class with a nested persistent map."""

    count: int
    by_stream: PMap[str, int]


def _totals(state: Totals, recorded: fes.Recorded[Any]) -> Totals:
    return Totals(
        state.count + 1,
        state.by_stream.set(recorded.stream, state.by_stream.get(recorded.stream, 0) + 1),
    )


totals: fes.View[Totals] = fes.View("totals", Totals(0, pmap()), _totals)
source_with_view = fes.App("source", aggregates=[domain.messages], views=[totals])


@settings(max_examples=30)
@given(
    chunks=st.lists(st.lists(st.integers(0, 5), max_size=8), min_size=1, max_size=6),
    batch_size=st.integers(1, 9),
)
def test_incremental_view_equals_rebuild_from_zero(
    chunks: list[list[int]], batch_size: int
) -> None:
    """However appends and catch-ups interleave, the stored view equals a fold from 0."""
    with open_database("memory://") as database:
        app = Application(source_with_view, store=database)
        projection = Projection(app, totals, batch_size=batch_size)
        number = 0
        for chunk in chunks:
            for stream in chunk:
                app.execute(domain.messages, f"m-{stream}",
                            lambda s, n=number: [domain.Sent(n)])
                number += 1
            projection.step()  # one batch only: the view may lag behind
        projection.catch_up()
        state, position = projection.load()
        assert position == app.store.last_position()
        assert state == projection.rebuild()
        assert state.count == number


def test_view_state_survives_reopening_an_encrypted_store(tmp_path: Path) -> None:
    """The state is encoded by the app's codec (here encrypted) and read back after a restart."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    cipher = Cipher({"k1": Cipher.generate_key()}, "k1")
    with Application(source_with_view, store=url, cipher=cipher) as app:
        send(app, range(7))
        Projection(app, totals).catch_up()
    with Application(source_with_view, store=url, cipher=cipher) as app:
        state, position = Projection(app, totals).load()
        assert (state.count, position) == (7, 7)
        assert b"by_stream" not in app.store.load_view("totals")[0]  # type: ignore[index]


def test_views_skip_fes_internal_events() -> None:
    """A view never folds fes's own skip records."""
    counting = fes.View("count", 0, lambda n, r: n + 1)
    sink = fes.App("sink", aggregates=[domain.receipts], policy=domain.receive,
                   on_error=lambda e, r, a: fes.Skip(), views=[counting])
    system = fes.System([domain.source, sink], pipes=[["source", "sink"]])
    with SyncRunner(system, "memory://") as runner:
        send(runner.app("source"), range(5), poison=[1])
        runner.run_until_quiet()
        assert runner.view("sink", "count").state() == 4
        assert runner.view("sink", "count").position() == 5


def test_two_instances_of_a_view_never_fold_an_event_twice(tmp_path: Path) -> None:
    """Two projections of one view racing: the stored count equals the number of events."""
    url = f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"
    with Application(source_with_view, store=url) as app:
        send(app, range(300))
    apps = [Application(source_with_view, store=url) for _ in range(2)]
    projections = [Projection(a, totals, batch_size=7) for a in apps]
    barrier = threading.Barrier(2)

    def run(projection: Projection[Totals]) -> None:
        barrier.wait()
        projection.catch_up()

    threads = [threading.Thread(target=run, args=(p,)) for p in projections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert projections[0].state().count == 300
        assert projections[1].state() == projections[0].rebuild()
    finally:
        for app in apps:
            app.close()


def test_wait_for_reads_your_own_writes_while_a_runner_keeps_the_view() -> None:
    """After a command, waiting for its position makes the view show its effects."""
    with ThreadedRunner(shop.system, "memory://", poll_interval=0.05) as runner:
        orders = runner.app("orders")
        runner.app("reservations").execute(shop.stock, shop.stock_stream("mug"), shop.restock,
                                           "mug", 5)
        recorded = orders.execute(shop.order, "o-1", shop.place, "ann", "mug", 1, 100)
        statuses = runner.view("orders", "statuses")
        assert statuses.wait_for(recorded[-1].position, timeout=5)
        assert statuses.state().get("placed", 0) + statuses.state().get("paid", 0) >= 1


def test_wait_for_times_out_when_nothing_keeps_the_view() -> None:
    """Without a runner the view never moves: wait_for returns False after the timeout."""
    with Application(source_with_view, store="memory://") as app:
        send(app, range(2))
        started = time.monotonic()
        assert not Projection(app, totals).wait_for(2, timeout=0.1)
        assert time.monotonic() - started >= 0.1


def test_runner_view_names_the_views_it_keeps() -> None:
    """Asking a runner for an unknown view names the ones it has."""
    with (
        SyncRunner(shop.system, "memory://") as runner,
        pytest.raises(fes.errors.ConfigurationError, match="orders/statuses"),
    ):
        runner.view("orders", "nope")


def test_a_changed_view_is_folded_again_under_a_new_name_not_by_rebuild() -> None:
    """What Part 3 says: rebuild() returns the state of the code of today and stores
    nothing; a changed view under a new name is folded from position 0 by the runner.

    (Part 3 said rebuild() "is how a view is rebuilt after its code changed", while the
    stored view kept its old state and the changed apply was folded on top.)
    """
    def counted(count: int, recorded: fes.Recorded[Any]) -> int:
        return count + 1

    def doubled(count: int, recorded: fes.Recorded[Any]) -> int:
        return count + 2

    def system(view: fes.View[int]) -> fes.System:
        return fes.System([fes.App("source", aggregates=[domain.messages], views=[view])])

    with open_database("memory://") as database:
        with SyncRunner(system(fes.View("count", 0, counted)), database) as runner:
            send(runner.app("source"), range(3))
            runner.run_until_quiet()
        changed = fes.View("count", 0, doubled)
        with SyncRunner(system(changed), database) as runner:
            projection = runner.view("source", "count")
            assert projection.rebuild() == 6
            assert projection.state() == 3  # rebuild stored nothing
            send(runner.app("source"), range(3, 4))
            runner.run_until_quiet()
            assert projection.state() == 5  # the old state, the new apply folded on top
        with SyncRunner(system(fes.View("count-2", 0, doubled)), database) as runner:
            assert runner.view("source", "count-2").position() == 0
            runner.run_until_quiet()
            assert runner.view("source", "count-2").load() == (8, 4)
