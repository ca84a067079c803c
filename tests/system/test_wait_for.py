"""Runner.wait_for: wait until the followers of a leader have processed one of its events."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from fes.edge import ProcessRunner, SyncRunner, ThreadedRunner
from fes.edge._skips import STOPS_STREAM, FollowerHalted
from fes.errors import ConfigurationError, FollowerStopped
from fes.examples import shop
from system import domain
from system.helpers import send, serve


def _received(runner: Any) -> list[int]:
    return sorted(r.event.number for r in runner.app("sink").log())


def test_a_threaded_runner_waits_until_the_follower_has_the_effect(sqlite_url: str) -> None:
    """True once the sink tracked the position, and the effects are there right after.

    Each message takes the sink 20 ms, so a wait that returned before the
    sink got there would find receipts missing."""
    with ThreadedRunner(domain.slow_pipeline, sqlite_url, poll_interval=0.05) as runner:
        source = runner.app("source")
        send(source, range(10))
        last = source.store.last_position()
        assert runner.wait_for("source", last, timeout=30) is True
        assert _received(runner) == list(range(10))


def test_a_command_on_a_leader_then_its_followers_effect(sqlite_url: str) -> None:
    """The shop: an order placed, then reservations has held its stock."""
    with ThreadedRunner(shop.system, sqlite_url, poll_interval=0.05) as runner:
        runner.app("reservations").execute(
            shop.stock, shop.stock_stream("mug"), shop.restock, "mug", 3
        )
        recorded = runner.app("orders").execute(
            shop.order, "order-1", shop.place, "kim", "mug", 2, 800
        )
        assert runner.wait_for("orders", recorded[-1].position, timeout=30) is True
        stock = runner.app("reservations").get(shop.stock, shop.stock_stream("mug"))
        assert stock.available == 1


def test_not_started_it_says_false_when_the_timeout_passes(sqlite_url: str) -> None:
    runner = ThreadedRunner(domain.pipeline, sqlite_url, poll_interval=0.05)
    try:
        send(runner.app("source"), [1])
        started = time.monotonic()
        assert runner.wait_for("source", 1, timeout=0.3) is False
        assert time.monotonic() - started >= 0.3
        runner.start()
        assert runner.wait_for("source", 1, timeout=30) is True
    finally:
        runner.close()


def test_a_sync_runner_only_reports() -> None:
    """Nothing steps in the background: False until run_until_quiet, then True at once."""
    with SyncRunner(domain.pipeline) as runner:
        send(runner.app("source"), [1, 2])
        assert runner.wait_for("source", 2, timeout=0.1) is False
        runner.run_until_quiet()
        started = time.monotonic()
        assert runner.wait_for("source", 2, timeout=30) is True
        assert time.monotonic() - started < 1.0
        # a position the log has not reached yet: not processed, whatever was before
        assert runner.wait_for("source", 3, timeout=0) is False


def test_a_position_is_reached_by_every_follower_or_by_the_one_named() -> None:
    """``left`` is followed by ``right`` and ``tally``: without ``follower`` both count."""
    with SyncRunner(domain.rally) as runner:
        serve(runner.app("left"), [0])
        runner.followers["right"].step("left")
        assert runner.wait_for("left", 1, timeout=0, follower="right") is True
        assert runner.wait_for("left", 1, timeout=0, follower="tally") is False
        assert runner.wait_for("left", 1, timeout=0) is False
        runner.followers["tally"].step("left")
        assert runner.wait_for("left", 1, timeout=0) is True


def test_every_partition_of_a_follower_is_waited_for(sqlite_url: str) -> None:
    with SyncRunner(domain.partitioned_pipeline, sqlite_url) as runner:
        send(runner.app("source"), range(6))
        last = runner.app("source").store.last_position()
        runner.followers["sink#0"].step("source")
        runner.followers["sink#1"].step("source")
        assert runner.wait_for("source", last, timeout=0, follower="sink#1") is True
        assert runner.wait_for("source", last, timeout=0, follower="sink") is False
        assert runner.wait_for("source", last, timeout=0) is False
        runner.followers["sink#2"].step("source")
        assert runner.wait_for("source", last, timeout=0, follower="sink") is True
        assert _received(runner) == list(range(6))


def test_a_follower_stopped_before_the_position_raises(sqlite_url: str) -> None:
    with ThreadedRunner(domain.pipeline, sqlite_url, poll_interval=0.05) as runner:
        source = runner.app("source")
        send(source, [1])
        send(source, [2], poison=[2])
        # the event before the poisoned one had its effect: no error to report
        assert runner.wait_for("source", 1, timeout=30) is True
        with pytest.raises(FollowerStopped) as stopped:
            runner.wait_for("source", 2, timeout=30)
        assert set(stopped.value.errors) == {"sink"}
        assert stopped.value.position == 2
        assert "message 2 is poisoned" in str(stopped.value)


def test_a_stop_is_raised_once_its_record_is_stored(sqlite_url: str) -> None:
    """The stop in the follower's store, as another host reads it, is there when wait_for raises.

    The record's commit is made slow: a follower that reported its error
    before recording it would let the wait raise with the record not yet
    stored."""
    with ThreadedRunner(domain.pipeline, sqlite_url, poll_interval=0.05) as runner:
        sink = runner.app("sink")
        commit = sink.commit

        def slow_commit(batch: Any, **options: Any) -> Any:
            if STOPS_STREAM in batch.pending:
                time.sleep(0.3)
            return commit(batch, **options)

        sink.commit = slow_commit  # type: ignore[method-assign]
        source = runner.app("source")
        send(source, [1], poison=[1])
        with pytest.raises(FollowerStopped):
            runner.wait_for("source", 1, timeout=30)
        (halted,) = [r.event for r in sink.stream(STOPS_STREAM)]
        assert isinstance(halted, FollowerHalted)
        assert (halted.unit, halted.leader, halted.position) == ("sink", "source", 1)


def test_what_cannot_be_waited_for_is_refused() -> None:
    with SyncRunner(domain.rally, apps=["tally"]) as runner:
        with pytest.raises(ConfigurationError, match=r"'nowhere' is no application of this "
                           r"system; it has 'left', 'right', 'tally'"):
            runner.wait_for("nowhere", 1)
        # tally follows left and right, but nothing follows tally
        with pytest.raises(ConfigurationError, match=r"no application of this system follows "
                           r"'tally', so there is nothing to wait for"):
            runner.wait_for("tally", 1)
        # right follows left, but this runner does not drive right
        with pytest.raises(ConfigurationError, match=r"'right' is no follower of 'left' that "
                           r"this runner drives; those are 'tally'"):
            runner.wait_for("left", 1, follower="right")
    with SyncRunner(domain.rally, apps=["left"]) as runner:
        # it drives no follower of left: it waits on left's followers where they live
        with pytest.raises(ConfigurationError, match=r"'nowhere' is no follower of 'left' in "
                           r"this system; those are 'right', 'tally'"):
            runner.wait_for("left", 1, follower="nowhere")
        assert runner.wait_for("left", 1, timeout=0) is False
        assert runner.wait_for("right", 1, timeout=0, follower="left") is False


@pytest.mark.parametrize("position", [0, -1, 1.0, True, "1", None])
def test_a_position_must_be_a_positive_integer(position: Any) -> None:
    with SyncRunner(domain.pipeline) as runner, pytest.raises(
        ConfigurationError, match="position must be an integer of 1 or more"
    ):
        runner.wait_for("source", position)


@pytest.mark.parametrize("timeout", [-1, math.nan, "1", None, True])
def test_a_timeout_must_be_seconds(timeout: Any) -> None:
    with SyncRunner(domain.pipeline) as runner, pytest.raises(
        ConfigurationError, match="timeout must be a number of seconds, 0 or more"
    ):
        runner.wait_for("source", 1, timeout)


@pytest.mark.parametrize("interval", [0, -0.5, math.nan, "0.1"])
def test_an_interval_must_be_positive_seconds(interval: Any) -> None:
    with SyncRunner(domain.pipeline) as runner, pytest.raises(
        ConfigurationError, match="interval must be a number of seconds, more than 0"
    ):
        runner.wait_for("source", 1, interval=interval)


def test_a_process_runner_waits_for_its_workers(sqlite_url: str) -> None:
    with ProcessRunner("system.domain:fixed_pipeline", sqlite_url,
                       poll_interval=0.05) as runner:
        source = runner.app("source")
        send(source, range(5))
        assert runner.wait_for("source", source.store.last_position(), timeout=60) is True
        assert _received(runner) == list(range(5))


def test_a_process_runner_raises_for_a_worker_whose_follower_stopped(sqlite_url: str) -> None:
    """The stop is reported by the worker that runs the follower, not seen in this process."""
    with ProcessRunner("system.domain:pipeline", sqlite_url, poll_interval=0.05) as runner:
        send(runner.app("source"), [1, 2], poison=[2])
        assert runner.wait_for("source", 1, timeout=60) is True
        with pytest.raises(FollowerStopped) as stopped:
            runner.wait_for("source", 2, timeout=60)
        assert set(stopped.value.errors) == {"sink"}
        assert stopped.value.position == 2


def test_a_runner_driving_no_follower_waits_on_them_where_they_live(sqlite_url: str) -> None:
    """A web process takes commands and reads its writes back; the followers run elsewhere
    (here a threaded runner on the same file): it reads their tracked positions there."""
    with SyncRunner(domain.fixed_pipeline, sqlite_url, apps=["source"]) as web:
        assert web.followers == {}
        send(web.app("source"), range(5))
        last = web.app("source").store.last_position()
        assert web.wait_for("source", last, timeout=0) is False  # nothing processes yet
        # each message takes the workers' sink 20 ms: a wait that returned early
        # would find receipts missing
        with ThreadedRunner(domain.slow_pipeline, sqlite_url, poll_interval=0.05):
            assert web.wait_for("source", last, timeout=30) is True
            assert sorted(r.event.number for r in web.app("sink").log()) == list(range(5))
            assert web.wait_for("source", last, timeout=0, follower="sink") is True


def test_a_follower_stopped_elsewhere_is_read_from_its_store(sqlite_url: str) -> None:
    """Its stop is recorded where it lives: the wait raises, naming it, not waits it out."""
    with SyncRunner(domain.pipeline, sqlite_url, apps=["source"]) as web:
        send(web.app("source"), range(4), poison=[2])
        started = time.monotonic()
        with (
            ThreadedRunner(domain.pipeline, sqlite_url, poll_interval=0.05),
            pytest.raises(FollowerStopped) as stopped,
        ):
            web.wait_for("source", 4, timeout=30)
        assert time.monotonic() - started < 20
        assert stopped.value.errors.keys() == {"sink"}
        assert stopped.value.position == 3
        assert "ValueError: message 2 is poisoned" in str(stopped.value)
