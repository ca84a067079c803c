"""Partitions: one follower's work split by upstream stream, each upstream event once."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import fes
from fes.edge import Follower, ProcessRunner, SyncRunner, ThreadedRunner, lags
from fes.edge.stores import open_database
from fes.system import partition_of, tracking_key
from system import domain
from system.helpers import assert_exactly_once, send


def ids(app: fes.edge.Application) -> set[str]:
    """``app:stream@version`` of every event in an application's log."""
    return {f"{app.name}:{r.id}" for r in app.log()}


def test_partition_of_is_stable_and_spreads_streams() -> None:
    """The same stream always maps to the same partition; many streams use every one."""
    assert partition_of("m-1", 3) == partition_of("m-1", 3)
    assert tracking_key("orders", 0, 1) == "orders"
    assert tracking_key("orders", 2, 4) == "orders#2/4"
    counts = Counter(partition_of(f"order-{n}", 4) for n in range(400))
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 60


def test_each_partition_takes_only_its_streams_and_tracks_the_whole_log() -> None:
    """Partition 1 of 3 processes the streams that hash to 1, and tracks every position."""
    with SyncRunner(domain.partitioned_pipeline, "memory://", apps=["sink#1"]) as runner:
        send(runner.app("source"), range(60))
        assert list(runner.followers) == ["sink#1"]
        runner.run_until_quiet()
        sink, source = runner.app("sink"), runner.app("source")
        mine = {f"r-m-{n}" for n in range(60) if partition_of(f"m-{n}", 3) == 1}
        assert 5 < len(mine) < 40
        assert {r.stream for r in sink.log()} == mine
        assert sink.store.tracked() == {"source#1/3": source.store.last_position()}
        assert lags(runner.database, domain.partitioned_pipeline) == {
            ("source", "sink#0"): (0, 60),
            ("source", "sink#1"): (60, 60),
            ("source", "sink#2"): (0, 60),
        }


def test_all_partitions_together_give_what_one_follower_gives() -> None:
    """Three partitions record one effect per upstream event, as the unpartitioned sink does."""
    contents = []
    for system in (domain.fixed_pipeline, domain.partitioned_pipeline):
        with SyncRunner(system, "memory://", batch_size=7) as runner:
            send(runner.app("source"), range(100))
            send(runner.app("source"), range(100, 150))
            runner.run_until_quiet()
            sink, source = runner.app("sink"), runner.app("source")
            assert_exactly_once(sink, source, expected=ids(source))
            assert runner.is_quiet()
            contents.append(sorted((r.stream, r.event) for r in sink.log()))
    assert contents[0] == contents[1]


def test_partitions_contending_for_one_stream_count_every_event_once(tmp_path: Path) -> None:
    """Partitions in threads writing one hot stream conflict, retry, and count each event once."""
    url = f"sqlite:///{tmp_path / 'tally.db'}"
    with ThreadedRunner(domain.partitioned_tally, url, batch_size=5, poll_interval=0.05) as runner:
        for chunk in range(6):
            send(runner.app("source"), range(chunk * 20, chunk * 20 + 20))
        assert runner.wait_until_quiet(timeout=60)
        tally, source = runner.app("tally"), runner.app("source")
        assert [r.event.total for r in tally.stream("all")] == list(range(1, 121))
        assert_exactly_once(tally, source, expected=ids(source))
        assert len(runner.followers) == 3 and not runner.errors


def test_partitions_run_in_processes_of_their_own(tmp_path: Path) -> None:
    """A process runner gives each partition a worker; together they process everything once."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with ProcessRunner("system.domain:partitioned_pipeline", url, poll_interval=0.05) as runner:
        assert runner.groups == (("sink#0",), ("sink#1",), ("sink#2",))
        send(runner.app("source"), range(300))
        assert runner.wait_until_quiet(timeout=120)
        assert len(runner.pids()) == 3
        sink, source = runner.app("sink"), runner.app("source")
        assert_exactly_once(sink, source, expected=ids(source))
        assert not runner.errors


@pytest.mark.postgres
def test_partitions_in_processes_over_postgres(pg_url: str) -> None:
    """Over PostgreSQL, each partition's worker wakes on NOTIFY; every event is handled once."""
    with ProcessRunner("system.domain:partitioned_tally", pg_url, processes=2,
                       poll_interval=0.5) as runner:
        assert runner.groups == (("tally#0", "tally#2"), ("tally#1",))
        for chunk in range(5):
            send(runner.app("source"), range(chunk * 40, chunk * 40 + 40))
        assert runner.wait_until_quiet(timeout=120)
        tally, source = runner.app("tally"), runner.app("source")
        assert [r.event.total for r in tally.stream("all")] == list(range(1, 201))
        assert_exactly_once(tally, source, expected=ids(source))
        assert sorted(tally.store.tracked()) == ["source#0/3", "source#1/3", "source#2/3"]


@pytest.mark.slow
def test_killing_partition_workers_at_random_moments_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    """SIGKILL one partition's worker 15 times while 600 events flow: each has one effect."""
    chance = random.Random(7)
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with ProcessRunner("system.domain:partitioned_pipeline", url, batch_size=5,
                       poll_interval=0.05) as runner:
        source, sink = runner.app("source"), runner.app("sink")

        def write() -> None:
            for first in range(0, 600, 10):
                send(source, range(first, first + 10))
                time.sleep(chance.uniform(0.0, 0.02))

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        for _ in range(15):
            group, pid = chance.choice(sorted(runner.pids().items()))
            key = f"source#{group[0].split('#')[1]}/3"
            before = sink.store.last_tracked(key)
            deadline = time.monotonic() + 30
            # kill a worker that is running, not one still starting: once it moved on
            while sink.store.last_tracked(key) == before and (
                writer.is_alive() or before < source.store.last_position()
            ):
                assert time.monotonic() < deadline, f"{group} made no progress"
                time.sleep(0.002)
            time.sleep(chance.uniform(0.0, 0.01))
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while runner.pids().get(group) in (pid, None):  # wait for its restart
                assert time.monotonic() < deadline, f"{group} was not restarted"
                time.sleep(0.005)
        writer.join(60)
        assert not writer.is_alive()
        assert runner.wait_until_quiet(timeout=120)
        assert runner.restarts == 15
        assert_exactly_once(sink, source, expected={f"source:m-{n}@1" for n in range(600)})
        assert len(sink.log()) == 600


def test_changing_the_number_of_partitions_is_refused(tmp_path: Path) -> None:
    """Positions tracked under another layout would make new partitions start over: refused."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with SyncRunner(domain.fixed_pipeline, url) as runner:
        send(runner.app("source"), range(10))
        runner.run_until_quiet()
    with pytest.raises(fes.errors.ConfigurationError, match=r"tracks 'source' under source\b"):
        SyncRunner(domain.partitioned_pipeline, url)
    with open_database(url) as database:
        # from three partitions back to one is refused the same way
        database.store("sink").append([], tracking=fes.edge.stores.Tracking(
            "source#0/3", 5, 0))
    with pytest.raises(fes.errors.ConfigurationError, match="source#0/3"):
        SyncRunner(domain.fixed_pipeline, url)


def test_partition_names_are_checked() -> None:
    """A runner refuses a partition that does not exist, and partitions without a policy."""
    with pytest.raises(fes.errors.ConfigurationError, match="names no partition of 'sink'"):
        SyncRunner(domain.partitioned_pipeline, "memory://", apps=["sink#3"])
    with pytest.raises(fes.errors.ConfigurationError, match="names no partition of 'source'"):
        SyncRunner(domain.partitioned_pipeline, "memory://", apps=["source#0"])
    with pytest.raises(fes.errors.SystemDefinitionError, match="partitions must be an integer"):
        fes.App("sink", aggregates=[domain.receipts], policy=domain.receive, partitions=0)
    with pytest.raises(fes.errors.SystemDefinitionError, match="no policy"):
        fes.App("sink", aggregates=[domain.receipts], partitions=2)
    with SyncRunner(domain.partitioned_pipeline, "memory://") as runner:
        application = runner.app("sink")
        leaders = {"source": runner.app("source")}
        with pytest.raises(fes.errors.ConfigurationError, match="there is no partition 3"):
            Follower(application, leaders, partition=3)
