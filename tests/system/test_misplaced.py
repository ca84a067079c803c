"""A follower pointed at the wrong leader, or started without its keys, says so and stops.

Neither is a policy failure, and neither goes away by trying again: a
runner must not retry it forever nor report the follower caught up.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

import fes
from fes.edge import Application, Cipher, SyncRunner, ThreadedRunner
from fes.edge._skips import STOPS_STREAM
from fes.edge.stores import open_database
from system import domain
from system.helpers import own_log, send

KEY_1, KEY_2 = bytes(range(32)), bytes(range(1, 33))


def test_a_follower_tracked_past_its_leaders_log_stops_and_says_why(tmp_path: Path) -> None:
    """A leader's store restored from an older backup (or the wrong URL): stopped, not caught up."""
    old, new = f"sqlite:///{tmp_path / 'old.db'}", f"sqlite:///{tmp_path / 'new.db'}"
    sink = f"sqlite:///{tmp_path / 'sink.db'}"
    with SyncRunner(domain.fixed_pipeline, {"source": old, "sink": sink}) as runner:
        send(runner.app("source"), range(30))
        runner.run_until_quiet()
    with SyncRunner(domain.fixed_pipeline, {"source": new, "sink": sink}) as runner:
        send(runner.app("source"), range(9))  # a log that ends before position 30
        with pytest.raises(fes.errors.FollowerStopped) as stopped:
            runner.run_until_quiet()
        assert "this is not the log it followed" in str(stopped.value)
        assert "'sink' stopped before 'source' position 30" in str(stopped.value)
        assert not runner.is_quiet()
        assert len(own_log(runner.app("sink"))) == 30  # nothing past what it had done
        # the stop is recorded where any host can read it
        assert runner.app("sink").store.stream_version(STOPS_STREAM) == 1


def test_a_leader_that_reached_the_tracked_position_is_followed_as_before(
    tmp_path: Path,
) -> None:
    """The check passes a leader whose log goes on past what was tracked."""
    url = f"sqlite:///{tmp_path / 'one.db'}"
    with SyncRunner(domain.fixed_pipeline, url) as runner:
        send(runner.app("source"), range(5))
        runner.run_until_quiet()
        assert runner.run_until_quiet() == 0  # idle: the log reaches the tracked position
        send(runner.app("source"), range(5, 8))
        assert runner.run_until_quiet() == 3


def test_a_runner_refuses_to_start_a_follower_that_cannot_read_its_own_events(
    tmp_path: Path,
) -> None:
    """Its events sealed with keys it was not given: refused at once, naming the variable."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    keys = {"FES_CIPHER_KEYS": f"k1:{base64.b64encode(KEY_1).decode()}"}
    with SyncRunner(domain.fixed_pipeline, url, env=keys) as runner:
        send(runner.app("source"), range(3))
        runner.run_until_quiet()
    for kind in (SyncRunner, ThreadedRunner):
        with pytest.raises(fes.errors.ConfigurationError,
                           match=r"'sink' cannot read its own events .*SINK_FES_CIPHER_KEYS"):
            kind(domain.fixed_pipeline, url, env={"SOURCE_FES_CIPHER_KEYS": keys[
                "FES_CIPHER_KEYS"]})


def test_a_command_on_events_it_cannot_decrypt_stops_the_follower_instead_of_retrying(
    tmp_path: Path,
) -> None:
    """A Do on a stream sealed with a key since dropped: stopped with its record, once."""
    with open_database(f"sqlite:///{tmp_path / 'fes.db'}") as database:
        old = Cipher({"k1": KEY_1}, current="k1")
        new = Cipher({"k2": KEY_2}, current="k2")
        # the tally's hot stream was written under k1; its newest event under k2
        Application(domain.tally, database, cipher=old, env={}).execute(
            domain.counter, "all", domain.count_one
        )
        Application(domain.tally, database, cipher=new, env={}).execute(
            domain.counter, "other", domain.count_one
        )
        with SyncRunner(domain.rally, database, cipher=new, env={}) as runner:
            runner.app("left").execute(domain.ball, "b", lambda _: [domain.Served(0)])
            with pytest.raises(fes.errors.FollowerStopped) as stopped:
                runner.run_until_quiet()
            error = stopped.value.errors["tally"]
            assert isinstance(error.error, fes.errors.CipherError)
            assert "'tally' could not decode an event for 'left' position 1" in str(error)
