"""A view whose ``apply`` raises stops and says so, as a follower stopped by its policy does.

(Such a view was retried for ever: a traceback at WARNING per retry, runners
waiting for it to catch up, `fes apps` showing it "behind N" and exiting 0,
and `fes run` exiting 0.)
"""

from __future__ import annotations

import logging
import time

import pytest

from fes.edge import Application, Projection, SyncRunner, ThreadedRunner
from fes.edge._cli import main
from fes.edge._skips import STOPS_STREAM, ViewHalted, ViewResumed
from fes.errors import FollowerStopped, ViewError
from system import domain
from system.helpers import run_until_stopped, send

STOPPED = "view 'sent' of 'source' failed on position 3: ValueError: view cannot count message 2"


def test_sync_runner_stops_the_view_and_raises_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """run_until_quiet raises FollowerStopped naming the view, its position and error; the
    events before it are stored, the stop is recorded, and it is logged once, at ERROR."""
    with SyncRunner(domain.viewed, "memory://") as runner:
        send(runner.app("source"), range(5), poison=[2])
        with caplog.at_level(logging.WARNING, logger="fes"), pytest.raises(
            FollowerStopped, match="1 view\\(s\\) stopped: source/sent: " + STOPPED
        ) as raised:
            runner.run_until_quiet()
        error = raised.value.errors["source/sent"]
        assert isinstance(error, ViewError)
        assert (error.app, error.view, error.position) == ("source", "sent", 3)
        assert runner.view("source", "sent").load() == (2, 2)
        assert not runner.is_quiet()
        assert runner.step() == 0  # not tried again: the fold is pure
        with pytest.raises(FollowerStopped):
            runner.run_until_quiet()
        (halted,) = [r.event for r in runner.app("source").stream(STOPS_STREAM)]
        assert isinstance(halted, ViewHalted)
        assert (halted.view, halted.position, halted.error) == (
            "sent", 3, "ValueError: view cannot count message 2"
        )
        assert halted.where.endswith(str(domain._count_sent.__code__.co_firstlineno + 4))
        with pytest.raises(FollowerStopped, match="source/sent"):
            runner.view("source", "sent").wait_for(4, timeout=5)
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, bool(r.exc_info)) for r in records] == [("ERROR", False)], records
    assert "view 'source/sent' stopped" in records[0].getMessage()


def test_threaded_runner_does_not_report_quiet_while_a_view_is_stopped(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """wait_until_quiet raises at once rather than waiting for the view to catch up; one
    ERROR line, no traceback, however long the runner runs."""
    with Application(domain.viewed.app("source"), store=sqlite_url) as source:
        send(source, range(5), poison=[2])
    with caplog.at_level(logging.WARNING, logger="fes"), ThreadedRunner(
        domain.viewed, sqlite_url, poll_interval=0.02
    ) as runner:
        started = time.monotonic()
        with pytest.raises(FollowerStopped, match="source/sent: " + STOPPED):
            runner.wait_until_quiet(timeout=20)
        assert time.monotonic() - started < 10
        time.sleep(0.3)  # long enough for several retries, were it retried
        assert set(runner.errors) == {"source/sent"}
        assert not runner.is_quiet()
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, bool(r.exc_info)) for r in records] == [("ERROR", False)], records


def test_fes_apps_shows_the_stopped_view_and_exits_3_until_it_is_fixed(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fes apps` reads the stop record: "stopped at P: …" and exit 3, not "behind N" and 0;
    once a fixed view gets past it, the stop is cleared and the view is up to date."""
    with SyncRunner(domain.viewed, sqlite_url) as runner:
        send(runner.app("source"), range(5), poison=[2])
        runner.run_until_quiet(check=False)
    capsys.readouterr()
    assert main(["apps", "--system", "system.domain:viewed", "--store", sqlite_url]) == 3
    (row,) = capsys.readouterr().out.split("\nviews\n")[1].splitlines()[2:]
    assert row.split()[:3] == ["source/sent", "2", "6"], row
    assert "stopped at 3: ValueError: view cannot count message 2 (since " in row, row
    assert "behind" not in row
    # without --system too, from the stop record: a health check must not pass it
    assert main(["apps", "--store", sqlite_url]) == 3
    views = capsys.readouterr().out.split("\nviews\n")[1].splitlines()
    assert views[2].split()[:3] == ["source/sent", "2", "6"], views
    assert "stopped at 3: ValueError: view cannot count message 2" in views[2]
    assert views[3] == "  (name the system with --system MODULE:SYSTEM to list its views)"

    with SyncRunner(domain.fixed_viewed, sqlite_url) as runner:
        runner.run_until_quiet()
        assert runner.view("source", "sent").state() == 5
        stops = [r.event for r in runner.app("source").stream(STOPS_STREAM)]
        assert [type(e) for e in stops] == [ViewHalted, ViewResumed]
    assert main(["apps", "--system", "system.domain:fixed_viewed", "--store", sqlite_url]) == 0
    (row,) = capsys.readouterr().out.split("\nviews\n")[1].splitlines()[2:]
    assert row.endswith("up to date"), row
    assert main(["apps", "--store", sqlite_url]) == 0  # the stop is cleared
    assert "stopped" not in capsys.readouterr().out


@pytest.mark.parametrize("options", [(), ("--processes", "1")], ids=["threads", "processes"])
def test_fes_run_exits_3_with_one_line_for_a_stopped_view(
    options: tuple[str, ...], sqlite_url: str
) -> None:
    """`fes run` logs the view's stop once, without a traceback, and exits 3 on SIGTERM."""
    with Application(domain.viewed.app("source"), store=sqlite_url) as source:
        send(source, range(5), poison=[2])
    # linger: several retries' worth, were the stop retried
    code, err = run_until_stopped(
        sqlite_url, "system.domain:viewed", "source", *options, linger=0.5
    )
    assert code == 3, err
    assert "Traceback" not in err, err
    assert f"fes: {STOPPED}" in err, err
    assert err.count("view cannot count message 2") <= 3, err  # the log line(s), the summary


def test_a_reader_waiting_for_a_view_kept_elsewhere_learns_of_its_stop(sqlite_url: str) -> None:
    """Projection.wait_for in a process that only reads raises the stop another recorded.

    (A web process waiting for a view that fes run kept, and had stopped,
    waited out its timeout and was told only False.)
    """
    with SyncRunner(domain.viewed, sqlite_url) as runner:  # the process keeping the view
        send(runner.app("source"), range(5), poison=[2])
        runner.run_until_quiet(check=False)
    app = domain.viewed.app("source")
    (view,) = app.views
    with Application(app, store=sqlite_url) as reader:
        projection = Projection(reader, view)
        assert projection.wait_for(2, timeout=5)  # before the failed event: reached
        started = time.monotonic()
        with pytest.raises(FollowerStopped, match="1 view\\(s\\) stopped: source/sent: ") as raised:
            projection.wait_for(4, timeout=30)
        assert time.monotonic() - started < 5  # at once, not after the timeout
        error = raised.value.errors["source/sent"]
        assert isinstance(error, ViewError)
        assert (error.app, error.view, error.position) == ("source", "sent", 3)
        assert str(error.error).startswith("ValueError: view cannot count message 2 (at ")
        assert "ValueError" in (error.traceback or "")
