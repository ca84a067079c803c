"""The `fes` command: the demo, inspection of a store, and one-line errors."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from fes.edge import Application, SyncRunner
from fes.edge._cli import main
from fes.errors import ConfigurationError
from system import domain
from system.helpers import send

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> str:
    """An SQLite store holding the pipeline after 3 messages went through it."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with SyncRunner(domain.fixed_pipeline, url) as runner:
        send(runner.app("source"), range(3))
        runner.run_until_quiet()
        send(runner.app("source"), range(3, 5))  # two the sink has not processed
    return url


def test_demo_runs_the_shop_and_prints_what_happened(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`fes demo` settles every order and prints tables of statuses, events and followers."""
    assert main(["demo", "--orders", "40"]) == 0
    out, err = capsys.readouterr()
    assert "orders by status" in out
    assert "events per application" in out
    assert "reservations  orders" in out  # the followers table: follower, leader
    assert "a temporary file, deleted at the end" in out
    assert "40/40 settled" in err
    lines = {line.split()[0]: line.split()[-1] for line in out.splitlines()
             if line.strip().startswith(("paid", "cancelled", "still"))}
    assert int(lines["paid"]) + int(lines["cancelled"]) == 40
    assert lines["still"] == "0"


def test_demo_keeps_a_store_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --store the demo's store stays, and `fes apps` shows every follower caught up."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert main(["demo", "--orders", "10", "--store", url]) == 0
    capsys.readouterr()
    assert main(["apps", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "payments      reservations" in out
    followers = out.split("followers")[1].split("views")[0].splitlines()[3:]
    assert followers and all(line.endswith("caught up") for line in followers if line.strip())


def test_reseal_without_keys_says_where_they_go(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fes reseal` with no keyring names the variables that give it one."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert main(["demo", "--orders", "2", "--store", url]) == 0
    monkeypatch.delenv("FES_CIPHER_KEYS", raising=False)
    monkeypatch.delenv("ORDERS_FES_CIPHER_KEYS", raising=False)
    capsys.readouterr()
    assert main(["reseal", "fes.examples.shop:system", "--app", "orders", "--store", url]) == 1
    err = capsys.readouterr().err
    assert "'orders' has no cipher to reseal under" in err
    assert "ORDERS_FES_CIPHER_KEYS or FES_CIPHER_KEYS" in err
    assert "ORDERS_FES_CIPHER_KEY_ID or FES_CIPHER_KEY_ID" in err


def test_reseal_encrypts_a_plain_store_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fes reseal --plain` encrypts what the demo wrote in the clear; then only the key reads."""
    from fes.edge import Cipher

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert main(["demo", "--orders", "5", "--store", url]) == 0
    shop = "fes.examples.shop:system"
    key = base64.b64encode(Cipher.generate_key()).decode()
    monkeypatch.setenv("FES_CIPHER_KEYS", f"k1:{key}")
    capsys.readouterr()

    assert main(["reseal", shop, "--app", "orders", "--store", url]) == 1
    assert "not encrypted" in capsys.readouterr().err
    assert main(["reseal", shop, "--app", "orders", "--store", url, "--plain"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("orders: resealed ") and "under key 'k1'" in out
    assert main(["reseal", shop, "--app", "orders", "--store", url]) == 0
    assert "resealed 0 event(s), 0 metadata and 0 snapshot(s)" in capsys.readouterr().out

    assert main(["log", "--app", "orders", "--json", "--system", shop, "--store", url]) == 0
    decoded = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(decoded) >= 5 and all(record["data"] is not None for record in decoded)
    monkeypatch.delenv("FES_CIPHER_KEYS")
    assert main(["log", "--app", "orders", "--json", "--system", shop, "--store", url]) == 1
    assert "encrypted, but this codec has no cipher" in capsys.readouterr().err


def test_reseal_says_how_many_snapshots_it_left_under_an_old_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Snapshots of an aggregate the application no longer has cannot be resealed: `fes
    reseal` says how many are left, lest the operator retire their key."""
    import fes
    from fes.edge import Cipher
    from fes.examples.dogs import add_trick, dogs, register

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    k1, k2 = Cipher.generate_key(), Cipher.generate_key()
    # an earlier release of the orders application, whose dogs the shop no longer has
    earlier = fes.App("orders", aggregates=[dogs])
    with Application(
        earlier, url, cipher=Cipher({"k1": k1}, current="k1"), snapshot_every=2, env={}
    ) as app:
        for stream in ["dog-1", "dog-2"]:
            app.execute(dogs, stream, register, "Rex")
            app.execute(dogs, stream, add_trick, "sit")
    for name in ["FES_CIPHER_KEYS", "FES_CIPHER_KEY_ID"]:
        monkeypatch.delenv(f"ORDERS_{name}", raising=False)
    keys = ",".join(f"{i}:{base64.b64encode(k).decode()}" for i, k in [("k1", k1), ("k2", k2)])
    monkeypatch.setenv("FES_CIPHER_KEYS", keys)
    monkeypatch.setenv("FES_CIPHER_KEY_ID", "k2")
    capsys.readouterr()

    shop = "fes.examples.shop:system"
    # exit 1: not all of it is under the new key, so a script retiring k1 stops here
    assert main(["reseal", shop, "--app", "orders", "--store", url]) == 1
    out = capsys.readouterr().out
    assert out.startswith("orders: resealed 4 event(s), 0 metadata and 0 snapshot(s)")
    assert (
        "left 2 snapshot(s) that no aggregate of this release opens (of a renamed or removed "
        "aggregate, or stored in the clear; see the warnings) as they were: delete them "
        "(fes prune) before an old key leaves the ring" in out
    )
    # so they are deleted; then everything is under the new key
    assert main(["prune", shop, "--app", "orders", "--store", url]) == 0
    assert capsys.readouterr().out == (
        "orders: deleted 2 snapshot(s) that no aggregate of this release reads\n"
    )
    assert main(["reseal", shop, "--app", "orders", "--store", url]) == 0
    assert "left" not in capsys.readouterr().out


def test_apps_shows_tracked_positions_and_lag(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fes apps` lists each application's last position and each follower's state."""
    assert main(["apps", "--store", store]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    # follower, leader, tracked, leader's last, status
    assert ["sink", "source", "3", "5", "behind", "2"] in rows
    assert ["source", "5", "0"] in rows  # application, last position, skipped events


def test_apps_shows_each_partition_with_its_lag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A partitioned follower's parts are listed as name#i, their lag read off the leader."""
    url = f"sqlite:///{tmp_path / 'parts.db'}"
    with SyncRunner(domain.partitioned_pipeline, url, apps=["sink#0", "sink#2"]) as runner:
        send(runner.app("source"), range(4))
        runner.run_until_quiet()
    assert main(["apps", "--store", url]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["sink#0", "source", "4", "4", "caught", "up"] in rows
    assert ["sink#2", "source", "4", "4", "caught", "up"] in rows


def test_apps_with_another_number_of_partitions_is_not_healthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Positions tracked by three partitions, read with a one-partition system: mismatched, 1.

    (fes apps showed the parts caught up and the follower "not started", and
    exited 0, for a deployment that fes run refuses to start.)
    """
    url = f"sqlite:///{tmp_path / 'parts.db'}"
    with SyncRunner(domain.partitioned_pipeline, url) as runner:
        send(runner.app("source"), range(4))
        runner.run_until_quiet()
    with pytest.raises(ConfigurationError, match="cannot yet move tracked"):
        SyncRunner(domain.fixed_pipeline, url)
    capsys.readouterr()
    assert main(["apps", "--system", "system.domain:fixed_pipeline", "--store", url]) == 1
    out = capsys.readouterr().out
    followers = out.split("\nfollowers\n")[1].split("\nviews\n")[0].splitlines()[2:]
    assert followers and all(
        "mismatched: tracked under source#0/3, source#1/3, source#2/3, but the system "
        "gives 'sink' 1 partition(s): fes run refuses to start it" in row
        for row in followers
    ), followers
    # with the system it was written by, all is well
    assert main(["apps", "--system", "system.domain:partitioned_pipeline", "--store", url]) == 0
    # and fes run refuses it before it says it runs (it used to say "running sink on …")
    capsys.readouterr()
    assert main(["run", "system.domain:fixed_pipeline", "--store", url]) == 1
    err = capsys.readouterr().err
    assert "cannot yet move tracked" in err and "running" not in err, err


def test_log_lists_an_applications_events(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fes log --app A --after N --limit N` shows that slice of the notification log."""
    assert main(["log", "--store", store, "--app", "source", "--after", "1", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "source: 2 event(s) after position 1" in out
    assert "m-1" in out and "m-2" in out and "m-3" not in out


def test_log_shows_each_application_named(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fes log --app A --app B` shows both logs, in that order (it used to show only B)."""
    assert main(["log", "--store", store, "--app", "sink", "--app", "source",
                 "--app", "sink"]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if "event(s) after" in line]
    assert heads == ["sink: 3 event(s) after position 0", "source: 5 event(s) after position 0"]


def test_log_as_json_decodes_with_the_system(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fes log --json --system M:S` prints decoded events with their causation."""
    assert main(["log", "--store", store, "--app", "sink", "--json",
                 "--system", "system.domain:fixed_pipeline"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["data"] for r in records] == [{"number": n} for n in range(3)]
    assert records[0]["causation_id"] == "source:m-0@1"


def test_decoded_records_show_values_as_the_codec_stores_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --system, bytes, a decimal and a date show as the codec stores them (base64
    and text), as they do without it; they used to show as Python's repr of bytes."""
    from system.vault import Deposited, box, vault

    url = f"sqlite:///{tmp_path / 'vault.db'}"
    blob = b"\xff\xd8\x00null\x89PNG"
    with Application(vault, store=url) as app:
        batch = app.batch()
        batch.emit(box, "b-1", [Deposited(blob, Decimal("1.10"), date(2026, 1, 2))])
        app.commit(batch)
    expected = {"blob": base64.b64encode(blob).decode(), "worth": "1.10", "on": "2026-01-02"}
    for command in (["log", "--app", "vault", "--json"], ["stream", "b-1", "--app", "vault"]):
        for system in ([], ["--system", "system.vault:system"]):
            assert main([*command, *system, "--store", url]) == 0
            (line,) = capsys.readouterr().out.splitlines()
            assert json.loads(line)["data"] == expected, (command, system)


def test_a_log_table_shows_invisible_characters_of_stream_ids_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream id or topic with a newline, a tab or a space at an end shows quoted with
    them escaped, one row per event; a plain one shows as it is."""
    monkeypatch.setenv("COLUMNS", "200")
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    streams = ["new\nline", "tab\there", "space ", "plain é 😀", 'quote"and\\back\n']
    with Application(domain.source, store=url) as app:
        batch = app.batch()
        for stream in streams:
            batch.emit(domain.messages, stream, [domain.Sent(1)])
        app.commit(batch)
    assert main(["log", "--store", url, "--app", "source"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = lines[3:]
    assert len(rows) == len(streams), lines
    shown = ['"new\\nline"', '"tab\\there"', '"space "', "plain é 😀",
             '"quote\\"and\\\\back\\n"']
    for row, text in zip(rows, shown, strict=True):
        assert f"  {text}  " in row, (row, text)


def test_stream_prints_one_streams_events_as_json_lines(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fes stream ID --app A` prints each event of the stream as one JSON object."""
    assert main(["stream", "m-2", "--app", "source", "--store", store]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["stream"] == "m-2" and record["version"] == 1
    assert record["topic"] == "message.Sent"
    assert record["data"] == {"number": 2, "poison": False}


def test_json_records_give_every_microsecond_stored_and_tables_the_millisecond(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSON record's timestamp reads back as the envelope's; a table's is cut to the ms."""
    url = f"sqlite:///{tmp_path / 'clocked.db'}"
    moment = datetime(2024, 5, 1, 9, 30, 0, 123_456, tzinfo=UTC)
    with Application(domain.source, store=url, clock=lambda: moment) as app:
        send(app, [7])
        [recorded] = app.log()
    assert main(["log", "--store", url, "--app", "source", "--json"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["timestamp"] == "2024-05-01T09:30:00.123456Z"
    assert datetime.fromisoformat(record["timestamp"]) == recorded.timestamp
    assert main(["stream", "m-7", "--app", "source", "--store", url]) == 0
    assert json.loads(capsys.readouterr().out)["timestamp"] == "2024-05-01T09:30:00.123456Z"
    assert main(["log", "--store", url, "--app", "source"]) == 0
    table = capsys.readouterr().out
    assert "09:30:00.123Z" in table and "123456" not in table  # (its date may be cut)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["apps", "--store", "nosuch://x"], "unknown scheme"),
        (["apps", "--store", "sqlite:///{tmp}/missing.db"], "missing.db"),
        (["log", "--store", "{store}", "--app", "nope"], "has no application 'nope'"),
        (["stream", "zzz", "--app", "source", "--store", "{store}"], "no stream 'zzz'"),
        (["run", "no_such_module:system", "--store", "{store}"], "cannot import module"),
        (["run", "system.domain:ball", "--store", "{store}"], "not a fes.System"),
        (["log", "--store", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1&pool_timeout=1"],
         "127.0.0.1"),
    ],
    ids=["bad-url", "missing-file", "unknown-app", "unknown-stream", "unknown-module",
         "not-a-system", "unreachable"],
)
def test_errors_are_one_line_and_a_non_zero_exit(
    argv: list[str], message: str, store: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A user's mistake prints one clear line on stderr, no traceback, and exits 1."""
    argv = [a.format(store=store, tmp=tmp_path) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("fes: error: ")
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_traceback_flag_shows_the_exception(store: str) -> None:
    """--traceback lets the exception through, for debugging."""
    with pytest.raises(Exception, match="cannot import module"):
        main(["run", "--traceback", "no_such_module:system", "--store", store])


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing command or argument is argparse's usage error: exit code 2."""
    with pytest.raises(SystemExit) as caught:
        main(["stream", "x"])
    assert caught.value.code == 2
    assert "--app" in capsys.readouterr().err


def test_the_installed_command_runs(store: str) -> None:
    """`python -m fes.edge._cli` (what the `fes` script calls) runs as a program."""
    env = {**os.environ, "FES_STORE_URL": store}
    result = subprocess.run([sys.executable, "-m", "fes.edge._cli", "apps"],
                            capture_output=True, text=True, env=env, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "sink" in result.stdout


def test_a_followers_status_writes_numbers_as_its_table_does() -> None:
    """`behind 4,737` beside a leader's last `5,505`, not `behind 4737`."""
    from fes.edge._skips import follower_status

    assert follower_status(None, 768, 5505) == "behind 4,737"
    assert follower_status(None, None, 5505) == "not started: behind 5,505"
    assert follower_status(None, 12000, 5505).startswith(
        "ahead of its leader: tracked 12,000, leader's last 5,505 "
    )


def _apps(url: str, system: str, *more: str) -> list[str]:
    return ["apps", "--store", url, "--system", f"system.domain:{system}", *more]


def test_apps_watch_shows_a_follower_behind_that_does_not_move_as_stalled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store cannot say whether a process runs a follower: a trial's health check passed
    while `fes run` was dead and the follower fell behind. With --watch, fes apps reads the
    positions again, and one that was behind and did not move is stalled, exit code 4."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with SyncRunner(domain.fixed_pipeline, url) as runner:
        send(runner.app("source"), range(3))
        runner.run_until_quiet()
        send(runner.app("source"), range(3, 5))  # and nothing runs the sink now
    assert main(_apps(url, "fixed_pipeline")) == 0  # behind is healthy, as far as it knows
    assert "behind 2" in capsys.readouterr().out
    assert main(_apps(url, "fixed_pipeline", "--watch", "0.2")) == 4
    out = capsys.readouterr().out
    assert "stalled: behind 2, and its position did not move in 0.2 s: is it running?" in out
    with SyncRunner(domain.fixed_pipeline, url) as runner:
        runner.run_until_quiet()
    assert main(_apps(url, "fixed_pipeline", "--watch", "0.2")) == 0  # caught up: not watched
    assert "caught up" in capsys.readouterr().out


def test_apps_watch_shows_a_view_and_a_follower_never_started_as_stalled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A view behind that does not move is stalled too, and so is a follower that nothing has
    started while its leader holds events (its store is not opened: inspecting creates
    nothing)."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with SyncRunner(domain.fixed_viewed, url) as runner:
        send(runner.app("source"), range(3))
        runner.run_until_quiet()
        send(runner.app("source"), range(3, 5))
    assert main(_apps(url, "fixed_viewed", "--watch", "0.1")) == 4
    out = capsys.readouterr().out
    assert "source/sent" in out and "stalled: behind 2" in out
    assert main(_apps(url, "fixed_pipeline", "--watch", "0.1")) == 4
    out = capsys.readouterr().out
    assert "stalled: not started: behind 5, and its position did not move" in out
    assert main(["log", "--store", url, "--app", "sink"]) == 1  # it has still no tables
    capsys.readouterr()


def test_apps_watch_passes_a_follower_that_moves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A follower behind at the first look that has moved by the second is not stalled."""
    from fes.edge import ThreadedRunner

    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with Application(domain.source, url) as source:
        send(source, range(200))  # 20 ms each for the slow sink: 4 s of work
    with ThreadedRunner(domain.slow_pipeline, url, batch_size=5):
        assert main(_apps(url, "slow_pipeline", "--watch", "1")) == 0
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if line.split()[:2] == ["sink", "source"]]
    # the first look's numbers, and that it moved: a trial read a stale backlog as current
    assert "behind" in row and "stalled" not in row and ", moving: +" in row
    assert row.rstrip().endswith(" in 1 s")


def test_apps_never_shows_a_follower_tracked_past_its_leaders_last_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The applications table and the followers' rows are read at different moments: a
    leader's position read again for a follower found past it is the one both show (a
    trial saw 8,621 above a follower tracked at 8,622)."""
    from fes.edge.stores._sqlite._store import SQLiteStore

    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with SyncRunner(domain.fixed_pipeline, url) as runner:
        send(runner.app("source"), range(3))
        runner.run_until_quiet()
    real = SQLiteStore.last_position
    looks = iter([2])  # the first look at the source's log is stale: one event short

    def last_position(store: SQLiteStore) -> int:
        found = real(store)
        return next(looks, found) if store.app == "source" else found

    monkeypatch.setattr(SQLiteStore, "last_position", last_position)
    assert main(_apps(url, "fixed_pipeline")) == 0
    out = capsys.readouterr().out
    source = [line.split() for line in out.splitlines() if line.split()[:1] == ["source"]]
    assert source[0][:2] == ["source", "3"]
    [row] = [line for line in out.splitlines() if line.split()[:2] == ["sink", "source"]]
    assert row.split()[2:] == ["3", "3", "caught", "up"]
