"""The `fes` command as a Unix tool: pipes, event data, the import path, CLI-speaking errors."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from fes.edge import Application, Cipher
from fes.edge._cli import main
from fes.edge.stores import NewEvent, open_database
from system import domain
from system.helpers import send

FES = str(Path(sys.executable).parent / "fes")


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fes.db'}"


def _caused(demo_output: str) -> int:
    """How many events the demo says its input events caused."""
    return int(demo_output.split("written by hand caused ")[1].split()[0].replace(",", ""))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FES_STORE_URL")}
    return {**env, **extra}


def test_log_into_a_closed_pipe_exits_0_quietly(tmp_path: Path) -> None:
    """`fes log | head -1` ends with exit 0 and nothing on stderr."""
    url = _sqlite(tmp_path)
    with open_database(url) as database:
        events = [NewEvent(f"s-{i}", 1, "t", b'{"n": %d}' % i, 0) for i in range(3000)]
        database.store("shop").append(events)
    for command in (["log"], ["log", "--json"], ["stream", "s-1", "--app", "shop"]):
        fes = subprocess.Popen(
            [FES, *command, "--store", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        assert fes.stdout is not None and fes.stderr is not None
        fes.stdout.readline()
        fes.stdout.close()  # what `head -1` does after one line
        err = fes.stderr.read()
        assert fes.wait(timeout=60) == 0, err
        assert err == b""


def test_log_into_a_closed_pipe_through_a_shell(tmp_path: Path) -> None:
    """The shell's own `fes log | head -1` prints one line, and fes exits 0 silently."""
    url = _sqlite(tmp_path)
    with open_database(url) as database:
        events = [NewEvent(f"s-{i}", 1, "t", b'{"n": %d}' % i, 0) for i in range(3000)]
        database.store("shop").append(events)
    done = subprocess.run(
        ["bash", "-c", f'"{FES}" log --store "{url}" | head -1; exit "${{PIPESTATUS[0]}}"'],
        capture_output=True,
        env=_env(),
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == b""
    assert done.stdout.count(b"\n") == 1


def test_log_shows_each_events_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The log's table has a data column with the event's fields."""
    url = _sqlite(tmp_path)
    with Application(domain.source, url) as app:
        send(app, [7])
    assert main(["log", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "data" in out.splitlines()[1]
    assert '"number":7' in out


def test_log_shows_compressed_data_inflated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A payload that is compressed, not encrypted, is shown decompressed, in the table and JSON."""
    url = _sqlite(tmp_path)
    # a format-1 frame: the compressed flag, no schema version, no key; zlib'd JSON
    body = json.dumps({"number": 123456, "note": "n" * 200}).encode()
    with open_database(url) as database:
        database.store("source").append([NewEvent("s", 1, "t", b"\x81" + zlib.compress(body), 0)])
    assert main(["log", "--store", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["number"] == 123456
    assert main(["log", "--store", url]) == 0
    assert '"number":123456' in capsys.readouterr().out


def test_log_shows_the_events_around_one_it_cannot_decode_and_says_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --system, an event that does not decode (its row altered, here) is shown in its
    place with its error, the events around it decoded, and the command exits 1 naming it:
    a trial's `fes log` had printed nothing of the log past such a row."""
    url = _sqlite(tmp_path)
    monkeypatch.setenv("FES_CIPHER_KEYS", f"k1:{base64.b64encode(Cipher.generate_key()).decode()}")
    with Application(domain.source, url) as app:
        send(app, [1])
        send(app, [2])
        send(app, [3])
    with sqlite3.connect(tmp_path / "fes.db") as connection:
        (payload,) = connection.execute(
            "SELECT payload FROM source_events WHERE position = 2"
        ).fetchone()
        connection.execute(
            "UPDATE source_events SET payload = ? WHERE position = 2",
            (payload[:-1] + bytes([payload[-1] ^ 1]),),
        )
    connection.close()
    shown = ["--app", "source", "--system", "system.domain:pipeline", "--store", url]
    assert main(["log", *shown, "--json"]) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["data"] for r in records] == [
        {"number": 1, "poison": False}, None, {"number": 3, "poison": False}
    ]
    assert records[1]["error"].startswith(
        "CipherError: cannot decrypt 'message.Sent' at stream 'm-2' version 1: authentication "
        "failed"
    )
    assert err.startswith(
        "fes: error: 1 event(s) of 'source' could not be decoded; the first, at position 2: "
        "CipherError: cannot decrypt 'message.Sent' at stream 'm-2'"
    )
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["log", *shown]) == 1
    out, err = capsys.readouterr()
    assert '"number":3' in out and "(cannot decode: CipherError: cannot decrypt" in out
    assert "1 event(s) of 'source' could not be decoded" in err
    assert main(["stream", "m-2", *shown]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["error"].startswith("CipherError: cannot decrypt")
    assert "1 event(s) of 'source' could not be decoded" in err
    assert main(["stream", "m-3", *shown]) == 0
    capsys.readouterr()
    # without the system, each is shown by its size, and said to be encrypted
    assert main(["log", "--app", "source", "--store", url, "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["data"], r["encrypted"]) for r in records] == [(None, True)] * 3


def test_log_without_the_system_names_a_payloads_schema_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two shapes of one topic, stored under schema versions 1 and 2, are told apart as stored
    (with --system, both are upcast to the current one)."""
    url = _sqlite(tmp_path)
    with open_database(url) as database:
        database.store("desk").append([
            NewEvent("b", 1, "desk.BookLent", b'{"member":"m00"}', 0),
            NewEvent("b", 2, "desk.BookLent", b"\x84\x02" + b'{"borrower":"m12"}', 0),
        ])
    assert main(["log", "--store", url, "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["schema"], r["data"]) for r in records] == [
        (1, {"member": "m00"}), (2, {"borrower": "m12"})
    ]
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["log", "--store", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].endswith('{"member":"m00"}')
    assert lines[-1].endswith('(schema 2) {"borrower":"m12"}')


def test_log_cuts_data_to_the_terminal_and_json_keeps_it_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the table a long data cell is cut to the terminal's width; --json shows all of it."""
    url = _sqlite(tmp_path)
    long = "x" * 500
    with open_database(url) as database:
        payload = json.dumps({"text": long}).encode()
        database.store("shop").append([NewEvent("s", 1, "t", payload, 0)])
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["log", "--store", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].endswith("…") and len(lines[-1]) <= 100
    assert main(["log", "--store", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"] == {"text": long}


@pytest.mark.parametrize("columns", [80, 100])
def test_log_fits_long_stream_ids_in_a_narrow_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    columns: int,
) -> None:
    """UUID stream ids and long topics are cut in their middle, so every line fits."""
    url = _sqlite(tmp_path)
    stream = "1f8fbac5-abb3-4797-8c43-8d66447e7872"
    with open_database(url) as database:
        payload = json.dumps({"customer": "customer-2", "sku": "lamp"}).encode()
        database.store("shop").append(
            [NewEvent(stream, 1, "order.OrderPlacedWithALongName", payload, 0)]
        )
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["log", "--store", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= columns
    row = lines[-1]
    assert "1f8f" in row and "7872" in row and "…" in row  # its start and its end
    assert "00:00:00.000Z" in row  # the time keeps its clock, whatever it lost of its date


def test_log_help_says_what_system_does(capsys: pytest.CaptureFixture[str]) -> None:
    """`fes log --help` explains that --system decodes, upcasts and decrypts."""
    with pytest.raises(SystemExit):
        main(["log", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "decrypted with $FES_CIPHER_KEYS" in help_text
    assert "upcast" in help_text and "current directory" in help_text


def test_system_is_imported_from_the_current_directory(tmp_path: Path) -> None:
    """--system MODULE:SYSTEM finds a module in the working directory without PYTHONPATH."""
    (tmp_path / "mysystem.py").write_text("from fes.examples.shop import system\n")
    url = _sqlite(tmp_path)
    with open_database(url) as database:
        database.store("orders")
    for command in (["log"], ["apps"]):
        args = [*command, "--store", url]
        if command == ["log"]:
            args += ["--system", "mysystem:system"]
        done = subprocess.run(
            [FES, *args], capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=60
        )
        assert done.returncode == 0, done.stderr
    assert (
        "orders: 0 event(s)"
        in subprocess.run(
            [FES, "log", "--store", url, "--system", "mysystem:system"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=_env(),
            timeout=60,
        ).stdout
    )


def test_run_imports_the_system_from_the_current_directory(tmp_path: Path) -> None:
    """`fes run mod:system` in a project directory gets as far as running it."""
    (tmp_path / "mysystem.py").write_text("from fes.examples.shop import system\n")
    first = _first_line_of_run("mysystem:system", tmp_path)
    # with the views each keeps (a trial's fes run kept one and did not say so)
    assert first.startswith(
        "fes: running orders (view statuses), reservations, payments (view revenue) on "
    ), first


def _first_line_of_run(system: str, directory: Path, **env: str) -> str:
    """What `fes run SYSTEM` in ``directory`` says first, on stderr; then it is stopped."""
    fes = subprocess.Popen(
        [FES, "run", system, "--store", _sqlite(directory)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=directory,
        env=_env(**env),
    )
    assert fes.stderr is not None
    try:
        return fes.stderr.readline()
    finally:
        fes.terminate()
        fes.wait(timeout=60)


def test_demo_on_a_kept_store_says_it_counts_the_whole_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second demo on one store says its tables count earlier runs too."""
    url = _sqlite(tmp_path)
    assert main(["demo", "--orders", "10", "--store", url]) == 0
    first = capsys.readouterr().out
    assert "earlier runs" not in first and "(whole store)" not in first
    assert main(["demo", "--orders", "10", "--store", url]) == 0
    second = capsys.readouterr().out
    assert "events of earlier runs: the tables below count the whole store" in second
    assert "orders by status (whole store)" in second
    # this run's events caused, not the store's: about as many as the first run's
    assert _caused(second) <= 2 * _caused(first)


@pytest.mark.parametrize("option", ["--after", "--limit"])
def test_a_negative_position_or_limit_is_refused(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--after -5 and --limit -1 are usage errors (exit 2), not an empty log."""
    with pytest.raises(SystemExit) as caught:
        main(["log", option, "-5", "--store", "memory://"])
    assert caught.value.code == 2
    assert "expected 0 or more" in capsys.readouterr().err


_BAD_OPTIONS = [
    (["run", "fes.examples.shop:system", "--batch-size", "0"], "expected 1 or more, not 0"),
    (["run", "fes.examples.shop:system", "--batch-bytes", "-4"], "expected 1 or more, not -4"),
    (["run", "fes.examples.shop:system", "--processes", "-3"], "expected 0 or more"),
    (["run", "fes.examples.shop:system", "--processes", "two"], "expected a whole number"),
    (["reseal", "fes.examples.shop:system", "--app", "orders", "--batch-size", "0"],
     "expected 1 or more"),
    *(
        (["run", "fes.examples.shop:system", "--poll-interval", bad],
         f"expected a finite number of seconds, above 0, not '{bad}'")
        for bad in ("0", "-1", "nan", "inf", "soon")
    ),
    # not "all applications": a deploy script's unset variable must not run everything
    *(
        (["run", "fes.examples.shop:system", "--apps", bad],
         "expected one or more application names")
        for bad in ("", ",,", " , ")
    ),
    (["run", "fes.examples.shop:system", "--apps", "orders,payments,orders"],
     "names 'orders' more than once"),
    (["demo", "--orders", "0"], "expected 1 or more, not 0"),
    (["serve", "--app", "orders", "--port", "-5"], "expected a port from 0 to 65535"),
    (["serve", "--app", "orders", "--port", "70000"], "expected a port from 0 to 65535"),
    (["serve", "--app", "orders", "--max-limit", "0"], "expected 1 or more, not 0"),
    (["serve", "--app", "orders", "--max-wait", "-1"],
     "expected a finite number of seconds, 0 or more, not '-1'"),
]


@pytest.mark.parametrize(
    ("arguments", "said"),
    _BAD_OPTIONS,
    ids=[" ".join(word for word in a if ":" not in word) for a, _ in _BAD_OPTIONS],
)
def test_a_bad_option_is_refused_before_anything_runs(
    arguments: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A usage error (exit 2) as the command line is read.

    (--batch-size 0 used to print "fes: running ..." and only then fail.)
    """
    with pytest.raises(SystemExit) as caught:
        main([*arguments, "--store", "memory://"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "running" not in err


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["run", "fes.examples.shop:system", "--apps", "payments,orderz"],
         "argument --apps: no application 'orderz' in this system; known: orders, "),
        (["run", "fes.examples.shop:system", "--apps", "payments#3"],
         "argument --apps: 'payments#3' names no partition of 'payments'"),
        (["reseal", "fes.examples.shop:system", "--app", "paymentz"],
         "argument --app: no application 'paymentz' in this system"),
        (["run", "fes.examples.shop:system", "--store", "orderz=sqlite:///orders.db"],
         "argument --store: the store mapping names 'orderz', which is no application"),
    ],
)
def test_a_name_the_system_lacks_is_a_usage_error(
    arguments: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt application is refused as a bad option is (exit 2), before any store opens."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    with pytest.raises(SystemExit) as caught:
        main([*arguments, "--store", url])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert said in err and err.startswith("usage: fes ") and "running" not in err, err
    assert not (tmp_path / "shop.db").exists()


@pytest.mark.parametrize(
    ("store", "said"),
    [
        ("sqlite:/shop.db", "argument --store: bad store URL 'sqlite:/shop.db': sqlite: must"),
        ("bogus://x", "argument --store: bad store URL 'bogus://x': unknown scheme 'bogus'; "
         "use sqlite:///path.db, postgresql://user@host/database, https://host/path (fes "
         "serve) or, inside one process (tests, the demo), memory://"),
    ],
)
def test_run_refuses_a_bad_store_url_before_it_says_it_runs(
    store: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --store URL fes cannot read is a usage error, said before "fes: running …"."""
    with pytest.raises(SystemExit) as caught:
        main(["run", "fes.examples.shop:system", "--store", store])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "running" not in err, err


def test_run_refuses_an_unplaced_application_before_it_says_it_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--store orders=URL alone places no other application: refused, not "running … on URL".

    (It used to print "fes: running orders, reservations, payments on
    sqlite:///…", naming one store for all, and only then fail.)
    """
    monkeypatch.delenv("FES_STORE_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    assert main(["run", "fes.examples.shop:system", "--store", f"orders={url}"]) == 1
    err = capsys.readouterr().err
    assert "nothing places application 'reservations'" in err and "running" not in err, err
    assert not (tmp_path / "orders.db").exists()


@pytest.mark.parametrize(
    "command",
    [["apps"], ["log"], ["stream", "x", "--app", "orders"],
     ["reseal", "fes.examples.shop:system", "--app", "orders"],
     ["serve", "--app", "orders", "--insecure-no-token"]],
    ids=lambda c: c[0],
)
def test_a_command_on_its_own_refuses_a_memory_store(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """memory:// lives in one process: a command run on its own would read a new, empty one.

    (`fes apps --store memory://` said all was well, with exit code 0.)
    """
    assert main([*command, "--store", "memory://"]) == 1
    err = capsys.readouterr().err
    assert "a memory:// store lives inside the process that opened it" in err, err


def test_run_refuses_a_memory_store(capsys: pytest.CaptureFixture[str]) -> None:
    """`fes run --store memory://` would run on a store nothing else writes: a usage error."""
    with pytest.raises(SystemExit) as caught:
        main(["run", "fes.examples.shop:system", "--store", "memory://"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "a memory:// store lives inside" in err and "running" not in err, err


def test_a_system_with_nothing_to_follow_is_not_said_to_be_served_over_http(
    tmp_path: Path,
) -> None:
    """Only a system whose runnable applications are all served elsewhere is "served over
    HTTP"; one with no policy and no view, on SQLite, passes the store checks."""
    import fes
    from fes.edge._cli import _check_places
    from fes.examples.dogs import dogs

    lone = fes.System([fes.App("school", aggregates=[dogs])])
    url = f"sqlite:///{tmp_path / 'school.db'}"
    _check_places(lone, None, url, {"school": url})  # nothing raised
    places = {"source": "https://a.internal/fes", "sink": "https://b.internal/fes"}
    with pytest.raises(fes.errors.ConfigurationError, match="nothing to run here"):
        _check_places(domain.fixed_pipeline, None, places, places)


def test_run_names_only_what_it_runs(tmp_path: Path) -> None:
    """An application with neither policy nor views is not said to be running."""
    (tmp_path / "twoapps.py").write_text(
        "import fes\n"
        "from fes.examples.dogs import dogs\n"
        "def noted(recorded):\n"
        "    return []\n"
        "system = fes.System(\n"
        "    [fes.App('school', aggregates=(dogs,)),\n"
        "     fes.App('notes', aggregates=(dogs,), policy=noted)],\n"
        "    pipes=[['school', 'notes']],\n"
        ")\n"
    )
    first = _first_line_of_run("twoapps:system", tmp_path)
    assert first.startswith("fes: running notes on "), first


def test_run_says_how_often_each_application_snapshots(tmp_path: Path) -> None:
    """The first line names each application's snapshot interval, as its process will use it.

    (A ferry trial's operator had no way to tell whether fes run snapshots.)
    """
    (tmp_path / "ferries.py").write_text(
        "import fes\n"
        "from fes.examples.dogs import dogs\n"
        "def noted(recorded):\n"
        "    return []\n"
        "counted = fes.View('count', 0, lambda n, recorded: n + 1)\n"
        "system = fes.System(\n"
        "    [fes.App('school', aggregates=(dogs,), views=[counted], snapshot_every=50),\n"
        "     fes.App('notes', aggregates=(dogs,), policy=noted, snapshot_every=9)],\n"
        "    pipes=[['school', 'notes']],\n"
        ")\n"
    )
    first = _first_line_of_run("ferries:system", tmp_path)
    assert first.startswith(
        "fes: running school (view count; snapshots every 50), notes (snapshots every 9) on "
    ), first
    # the environment overrides the code, in this process only
    first = _first_line_of_run("ferries:system", tmp_path, NOTES_FES_SNAPSHOT_EVERY="7")
    assert first.startswith(
        "fes: running school (view count; snapshots every 50), notes (snapshots every 7) on "
    ), first
    # and whether it compresses and encrypts (a trial's operator could not tell either)
    key = base64.b64encode(Cipher.generate_key()).decode()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "ferries.py").write_text((tmp_path / "ferries.py").read_text())
    first = _first_line_of_run(
        "ferries:system", tmp_path / "secret", FES_COMPRESS="1", NOTES_FES_CIPHER_KEYS=f"k7:{key}"
    )
    assert first.startswith(
        "fes: running school (view count; snapshots every 50; compressed), notes (snapshots "
        "every 9; compressed; encrypted under key 'k7') on "
    ), first


def test_an_empty_store_speaks_of_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """--store '' names --store and $FES_STORE_URL, not Python arguments."""
    assert main(["log", "--store", ""]) == 1
    err = capsys.readouterr().err
    assert "--store" in err and "$FES_STORE_URL" in err and "None" not in err


def test_a_missing_store_is_said_missing_not_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --system, a store not created yet is "missing", and nothing is created.

    (It was shown "unreachable", as a server that does not answer is.)
    """
    path = tmp_path / "none.db"
    assert main(["apps", "--system", "fes.examples.shop:system",
                 "--store", f"sqlite:///{path}"]) == 1
    out = capsys.readouterr().out
    assert f"store: sqlite:///{path} (missing)" in out
    assert "application 'orders': its store does not exist (see below)" in out
    assert "unknown: its store does not exist (see below)" in out
    assert "unreachable" not in out
    assert f"there is no file {path}" in out.split("\ncannot be read\n")[1]
    assert not path.exists()


def test_a_missing_sqlite_file_is_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Inspecting a missing SQLite file says there is no store there and creates nothing."""
    url = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["apps", "--store", url]) == 1
    err = capsys.readouterr().err
    assert "there is no store at" in err and "--store" in err and "create" not in err
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("command", [["apps"], ["log"]])
def test_a_missing_postgres_schema_is_no_store(
    pg_url: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Inspecting a PostgreSQL schema that does not exist says so, rather than printing nothing."""
    assert main([*command, "--store", pg_url + "?schema=nowhere"]) == 1
    err = capsys.readouterr().err
    assert "there is no store at" in err and "no schema 'nowhere'" in err
