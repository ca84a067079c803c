"""Runners tell the truth: stopped followers are reported, recorded and seen from other processes.

Also: a hot standby does not stop itself on a command refusing what its
rival already did, and a killed supervisor leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import fes
from fes.edge import Application, ProcessRunner, SyncRunner, ThreadedRunner
from fes.edge._runners import Runner
from fes.edge._skips import STOPS_STREAM, FollowerHalted, FollowerResumed, current_stops
from system import domain, standby
from system.helpers import own_log, run_until_stopped, send, serve

TESTS = Path(__file__).resolve().parents[1]
DOMAIN = str(TESTS / "system" / "domain.py")


def _env() -> dict[str, str]:
    """The environment of a process a test starts: it imports this fes, and the tests' systems.

    This fes first: the interpreter's site-packages may hold another copy
    (an editable install of another checkout).
    """
    here = str(Path(fes.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([here, str(TESTS)])}


def _fes(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the `fes` command in another process, as another host would."""
    env = _env()
    return subprocess.run(
        [sys.executable, "-m", "fes.edge._cli", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )


def _stopped_runner(kind: str, url: str) -> Runner:
    if kind == "sync":
        return SyncRunner(domain.pipeline, url)
    if kind == "threaded":
        return ThreadedRunner(domain.pipeline, url, poll_interval=0.05)
    return ProcessRunner("system.domain:pipeline", url, poll_interval=0.05)


def _wait_or_run(runner: Runner) -> None:
    if isinstance(runner, SyncRunner):
        runner.run_until_quiet()
    else:
        runner.wait_until_quiet(timeout=30)


@pytest.mark.parametrize("kind", ["sync", "threaded", "process"])
def test_no_runner_reports_quiet_while_a_follower_is_stopped(kind: str, sqlite_url: str) -> None:
    """Each runner raises FollowerStopped naming the follower; fes apps elsewhere shows the stop."""
    with _stopped_runner(kind, sqlite_url) as runner:  # threads and workers start here
        send(runner.app("source"), range(10), poison=[3])
        with pytest.raises(fes.errors.FollowerStopped) as caught:
            _wait_or_run(runner)
        stopped = caught.value
        assert set(stopped.errors) == {"sink"}
        error = stopped.errors["sink"]
        assert (error.leader, error.position) == ("source", 4)
        assert "message 3 is poisoned" in str(stopped)
        assert not runner.is_quiet()
    shown = _fes("apps", "--store", sqlite_url)
    assert shown.returncode == 3, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.split()[:2] == ["sink", "source"])
    assert "stopped at 4: ValueError: message 3 is poisoned" in line
    assert f"/{os.getpid()})" in line or kind == "process"
    # the fix is deployed: a restart clears the stop and the follower catches up
    with SyncRunner(domain.fixed_pipeline, sqlite_url) as fixed:
        assert fixed.run_until_quiet() == 10 - 3
        assert [r.event.number for r in own_log(fixed.app("sink"))] == list(range(10))
        records = [r.event for r in fixed.app("sink").stream(STOPS_STREAM)]
        assert current_stops(records) == {}
        assert isinstance(records[-1], FollowerResumed)
    shown = _fes("apps", "--store", sqlite_url)
    assert shown.returncode == 0, shown.stderr
    rows = [x.split() for x in shown.stdout.splitlines()]
    assert ["sink", "source", "10", "10", "caught", "up"] in rows


def test_a_stop_record_says_where_why_when_and_who(tmp_path: Path) -> None:
    """The record holds position, error, the policy's file and line, clock time, host and pid."""
    from datetime import UTC, datetime

    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    with SyncRunner(domain.pipeline, "memory://", clock=lambda: moment) as runner:
        send(runner.app("source"), range(5), poison=[2])
        runner.run_until_quiet(check=False)
        (record,) = [r.event for r in runner.app("sink").stream(STOPS_STREAM)]
    assert isinstance(record, FollowerHalted)
    assert (record.unit, record.leader, record.position) == ("sink", "source", 3)
    assert record.error == "ValueError: message 2 is poisoned"
    assert record.where.startswith(DOMAIN + ":")
    assert 'raise ValueError(f"message {n} is poisoned")' in record.traceback
    assert record.at == moment.isoformat()
    assert record.pid == os.getpid() and record.host


def test_fes_apps_lists_views_with_their_positions(tmp_path: Path) -> None:
    """With --system, fes apps lists each view with its position and whether it is behind."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    from fes.examples import shop

    with SyncRunner(shop.system, url) as runner:
        runner.app("reservations").execute(
            shop.stock, shop.stock_stream("mug"), shop.restock, "mug", 5
        )
        runner.run_until_quiet()
    shown = _fes("apps", "--store", url, "--system", "fes.examples.shop:system")
    assert shown.returncode == 0, shown.stderr
    views = shown.stdout.split("\nviews\n")[1]
    assert "orders/statuses" in views and "payments/revenue" in views
    assert "up to date" in views


def test_fes_apps_shows_no_view_past_its_log_when_the_log_moves_while_it_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The applications' last positions are read first; a view that a running system moved
    on before its own row was read is shown beside the log's position read again, never
    past it (a trial saw `orders/statuses 2,159 2,155 up to date`)."""
    from fes.edge import _cli_apps
    from fes.edge._cli import main
    from fes.examples import shop

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    runner = SyncRunner(shop.system, url)
    reservations = runner.app("reservations")
    reservations.execute(shop.stock, shop.stock_stream("mug"), shop.restock, "mug", 5)
    runner.run_until_quiet()
    stops = _cli_apps._apps_view_stops

    def while_reading(*args: Any) -> Any:
        # the system goes on between the read of the log and the read of the views
        orders = runner.app("orders")
        orders.execute(shop.order, orders.new_id(), shop.place, "ann", "mug", 1, 500)
        runner.run_until_quiet()
        return stops(*args)

    monkeypatch.setattr(_cli_apps, "_apps_view_stops", while_reading)
    try:
        code = main(["apps", "--store", url, "--system", "fes.examples.shop:system"])
        last = runner.app("orders").store.last_position()
    finally:
        runner.close()
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line.split() for line in out.split("\nviews\n")[1].splitlines()]
    views = {row[0]: row[1:] for row in rows if "/" in row[0]}
    assert views, out
    for name, (position, log, *status) in views.items():
        assert int(position.replace(",", "")) <= int(log.replace(",", "")), (name, out)
        assert status == ["up", "to", "date"], (name, out)
    assert last > 0


@pytest.mark.parametrize(
    ("result", "shown"),
    [
        (fes.Emit(domain.receipts, "r", [domain.Received(1)]), "returned a bare fes.Emit on "),
        (None, "returned None"),
        (7, "returned 7"),
    ],
)
def test_a_policy_returning_no_list_gets_a_clear_error(result: Any, shown: str) -> None:
    """A bare intent, None or a number from a policy: an error saying a policy returns a list."""
    system = domain.with_handler(fes.stop_on_error, lambda recorded: result)
    with SyncRunner(system, "memory://") as runner:
        send(runner.app("source"), range(1))
        with pytest.raises(fes.errors.FollowerStopped) as caught:
            runner.run_until_quiet()
    error = caught.value.errors["sink"].error
    assert isinstance(error, fes.errors.DefinitionError)
    assert shown in str(error) and "a policy returns a list of intents" in str(error)


# --- a hot standby ------------------------------------------------------------------------


def _race(url: str, trials: int, per_trial: int) -> None:
    """Two instances of ``guard`` race over ``url``, ``trials`` times: none stops, none doubles."""
    instances = [SyncRunner(standby.guarded, url, batch_size=4, apps=["guard"])
                 for _ in range(2)]
    with Application(standby.guarded.app("source"), store=url) as source:
        try:
            for trial in range(trials):
                send(source, range(trial * per_trial, (trial + 1) * per_trial))
                failures: list[BaseException] = []
                start = threading.Barrier(2, timeout=30)

                def race(
                    runner: SyncRunner,
                    start: threading.Barrier = start,
                    failures: list[BaseException] = failures,
                ) -> None:
                    try:
                        start.wait()
                        runner.run_until_quiet(max_rounds=10_000)
                    except BaseException as error:
                        failures.append(error)

                threads = [threading.Thread(target=race, args=(r,)) for r in instances]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(60)
                assert not any(t.is_alive() for t in threads), "a racer did not finish in 60s"
                assert failures == []
                assert all(not r.errors for r in instances)
            guard = instances[0].app("guard")
            total = trials * per_trial
            counted = [r.event.position for r in guard.stream("seen")]
            assert counted == list(range(1, total + 1))  # each upstream event once, in order
            assert guard.store.last_tracked("source") == total
            assert guard.store.stream_version(STOPS_STREAM) == 0  # nobody ever stopped
        finally:
            for runner in instances:
                runner.close()


def test_a_hot_standby_does_not_stop_itself_sqlite(tmp_path: Path) -> None:
    """Two instances, a Do refusing what the rival counted: on SQLite none stops, none doubles."""
    _race(f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL", trials=40, per_trial=8)


@pytest.mark.postgres
def test_a_hot_standby_does_not_stop_itself_postgres(pg_url: str) -> None:
    """Two instances, a Do refusing what the rival counted: on PostgreSQL none stops or doubles."""
    _race(pg_url, trials=15, per_trial=12)


# --- orphans --------------------------------------------------------------------------------

SUPERVISOR = textwrap.dedent(
    """
    import json, sys, time
    from fes.edge import ProcessRunner
    from system import domain
    from system.helpers import serve

    if __name__ == "__main__":
        runner = ProcessRunner("system.domain:rally", sys.argv[1], processes=2,
                               poll_interval=0.05)
        runner.start()
        serve(runner.app("left"), [3, 4])
        assert runner.wait_until_quiet(timeout=60)
        print(json.dumps(sorted(runner.pids().values())), flush=True)
        time.sleep(120)
    """
)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _connections(url: str) -> int:
    import psycopg

    with psycopg.connect(url.replace("postgresql+", "postgresql")) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _kill_supervisor(tmp_path: Path, url: str) -> list[int]:
    """Start a ProcessRunner in another process, SIGKILL it; its workers' pids."""
    script = tmp_path / "supervisor.py"
    script.write_text(SUPERVISOR)
    env = _env()
    process = subprocess.Popen(
        [sys.executable, str(script), url], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        workers: list[int] = json.loads(line)
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return workers


def _gone_within(seconds: float, check: Any) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def test_workers_exit_when_their_supervisor_is_killed_sqlite(tmp_path: Path) -> None:
    """SIGKILL of a ProcessRunner's process: within a few seconds none of its workers is left."""
    url = f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"
    workers = _kill_supervisor(tmp_path, url)
    try:
        assert _gone_within(5, lambda: not any(_alive(pid) for pid in workers))
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.postgres
def test_workers_exit_when_their_supervisor_is_killed_postgres(
    tmp_path: Path, pg_url: str
) -> None:
    """SIGKILL of the supervisor on PostgreSQL: no worker, and no connection of theirs, is left."""
    workers = _kill_supervisor(tmp_path, pg_url)
    try:
        assert _gone_within(5, lambda: not any(_alive(pid) for pid in workers))
        assert _gone_within(5, lambda: _connections(pg_url) == 0)
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _group(leader: int) -> dict[int, str]:
    """The live (not zombie) processes of process group ``leader``: their command lines."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                state, _, group = stat.read().rsplit(")", 1)[1].split()[:3]
            if state == "Z" or int(group) != leader:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                found[int(entry)] = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited while we looked
    return found


def test_fes_run_killed_leaves_no_process_and_nothing_leaked(tmp_path: Path) -> None:
    """`fes run --processes 2` killed by SIGKILL: every process it started is gone in seconds.

    Its workers, and multiprocessing's resource tracker too, with no warning
    of "leaked semaphore objects" (the supervisor's, unlinked by the tracker).
    """
    url = f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"
    with Application(domain.left, url) as left:
        serve(left, [40, 40, 40])  # work waiting for the workers
    errors = tmp_path / "run.err"
    env = _env()
    with open(errors, "wb") as stderr:
        # a session of its own: the run's processes are its process group
        process = subprocess.Popen(
            [sys.executable, "-m", "fes.edge._cli", "run", "system.domain:rally",
             "--store", url, "--processes", "2", "--poll-interval", "0.05"],
            stdout=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=True,
        )
    started: dict[int, str] = {}
    try:
        def working() -> bool:
            started.update(_group(process.pid))
            return sum("spawn_main" in line for line in started.values()) == 2

        assert _gone_within(60, working), errors.read_text()
        time.sleep(0.5)  # the workers at work
        started.update(_group(process.pid))
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        assert _gone_within(10, lambda: not _group(process.pid)), (
            f"left running: {_group(process.pid)}; stderr: {errors.read_text()}"
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for pid in set(started) & set(_group(process.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert "leaked" not in errors.read_text(), errors.read_text()


def test_fes_apps_reads_compressed_stop_records_with_or_without_the_system(
    sqlite_url: str,
) -> None:
    """A compressed stop record is inflated by the CLI itself, and read with --system too."""
    with SyncRunner(domain.pipeline, sqlite_url, compress=True) as runner:
        send(runner.app("source"), range(4), poison=[1])
        runner.run_until_quiet(check=False)
    raw = _fes("apps", "--store", sqlite_url)
    assert raw.returncode == 3, raw.stderr
    assert "stopped at 2: ValueError: message 1 is poisoned" in raw.stdout
    shown = _fes("apps", "--store", sqlite_url, "--system", "system.domain:pipeline")
    assert shown.returncode == 3, shown.stderr
    assert "stopped at 2: ValueError: message 1 is poisoned" in shown.stdout


def test_fes_apps_does_not_call_a_follower_with_unreadable_stop_records_caught_up(
    sqlite_url: str,
) -> None:
    """Encrypted stop records without --system: status unknown and exit 1, never 'caught up'."""
    from fes.edge import Cipher

    cipher = Cipher({"k1": Cipher.generate_key()}, "k1")
    with SyncRunner(domain.pipeline, sqlite_url, cipher=cipher) as runner:
        send(runner.app("source"), range(4), poison=[1])
        runner.run_until_quiet(check=False)
    raw = _fes("apps", "--store", sqlite_url)
    assert raw.returncode == 1, raw.stdout + raw.stderr
    assert "unknown: its stop records are encrypted" in raw.stdout
    assert "caught up" not in raw.stdout
    rows = [line.split() for line in raw.stdout.splitlines()]
    assert ["sink", "source", "1", "4"] in [row[:4] for row in rows], raw.stdout


def test_a_restart_meeting_the_same_error_keeps_the_first_stop(sqlite_url: str) -> None:
    """Stopping again on the same event records nothing new: the stop keeps its first time."""
    for _ in range(3):
        with SyncRunner(domain.pipeline, sqlite_url) as runner:
            if not runner.app("source").store.last_position():
                send(runner.app("source"), range(4), poison=[1])
            with pytest.raises(fes.errors.FollowerStopped):
                runner.run_until_quiet()
            records = runner.app("sink").stream(STOPS_STREAM)
            assert [r.event.position for r in records] == [2]


def test_fes_run_logs_a_stop_and_exits_3_while_serving_the_others(sqlite_url: str) -> None:
    """`fes run` goes on after a stop, logs where the policy failed, and exits 3 on SIGTERM."""
    with Application(domain.pipeline.app("source"), store=sqlite_url) as source:
        send(source, range(5), poison=[2])
    # fails unless the stop is recorded while the process goes on serving
    code, err = run_until_stopped(sqlite_url, "system.domain:pipeline", "sink")
    assert code == 3, err
    assert "ValueError: message 2 is poisoned" in err
    assert f"(at {DOMAIN}:" in err and "follower 'sink' stopped" in err


def test_fes_apps_shows_stop_records_it_cannot_read_as_unknown(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A keyring that does not fit one application's store: that follower is unknown, not all.

    (`fes apps --system` used to fail as a whole with the codec's error,
    naming no application, and hid the stopped follower.)
    """
    import base64

    from fes.edge import Cipher
    from fes.edge._cli import main

    with Application(domain.pipeline.app("source"), store=sqlite_url, env={}) as source:
        send(source, range(5), poison=[2])
    with SyncRunner(domain.pipeline, sqlite_url, env={}) as runner:
        runner.run_until_quiet(check=False)  # sink stops on 2: its stop record is plain
    key = base64.b64encode(Cipher.generate_key()).decode()
    monkeypatch.setenv("FES_CIPHER_KEYS", f"k1:{key}")
    code = main(["apps", "--system", "system.domain:pipeline", "--store", sqlite_url])
    out = capsys.readouterr().out
    assert code == 1, out
    followers = out.split("\nfollowers\n")[1].split("\nviews\n")[0]
    (row,) = [line for line in followers.splitlines() if line.strip().startswith("sink ")]
    assert "unknown: its stop records cannot be read (cannot decrypt" in row
    # what it is behind is still shown: the leader's last position is read apart
    assert row.split()[:4] == ["sink", "source", "2", "5"], row
    assert "check SINK_FES_CIPHER_KEYS or FES_CIPHER_KEYS" in row
