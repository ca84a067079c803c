"""`fes apps` and `fes log` on a library system spread over several stores.

``loans`` -> ``fines`` -> ``notices``: each application in a store of its
own (SQLite files, PostgreSQL, a leader served over HTTP by ``fes serve``),
placed by ``--store APP=URL`` or by ``<APP>_FES_STORE_URL``, as a user of
a spread system would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from attrs import frozen
from test_http_leader import TOKEN, served

import fes
from fes.edge import Application, SyncRunner
from fes.edge._cli import main
from fes.edge.stores import open_database

SYSTEM = "system.test_cli_library:library"


@frozen
class Lent:
    """A book lent; ``late`` loans are fined, ``broken`` ones make the fines policy raise."""

    days_late: int = 0
    broken: bool = False


@frozen
class Fined:
    amount: int


@frozen
class Noticed:
    amount: int


def _count(state: int, event: object) -> int:
    return state + 1


loan = fes.Aggregate("loan", 0, fes.projector(_count), events=[Lent])
fine = fes.Aggregate("fine", 0, fes.projector(_count), events=[Fined])
notice = fes.Aggregate("notice", 0, fes.projector(_count), events=[Noticed])


def fine_late(recorded: fes.Recorded[object]) -> list[fes.Intent]:
    match recorded.event:
        case Lent(broken=True):
            raise ValueError("this loan cannot be fined")
        case Lent(days_late=days):
            return [fes.Emit(fine, f"f-{recorded.stream}", [Fined(days)])]
        case _:
            return []


def send_notice(recorded: fes.Recorded[object]) -> list[fes.Intent]:
    match recorded.event:
        case Fined(amount=amount):
            return [fes.Emit(notice, f"n-{recorded.stream}", [Noticed(amount)])]
        case _:
            return []


library = fes.System(
    [
        fes.App("loans", aggregates=[loan]),
        fes.App("fines", aggregates=[fine], policy=fine_late),
        fes.App("notices", aggregates=[notice], policy=send_notice),
    ],
    pipes=[["loans", "fines", "notices"]],
)


def lend(app: Application, loans: list[Lent], first: int = 0) -> None:
    batch = app.batch()
    for number, lent in enumerate(loans, first):
        batch.emit(loan, f"l-{number}", [lent])
    app.commit(batch)


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """One SQLite file per application; no FES_* variable, no fes.db here."""
    for key in list(os.environ):
        if key.endswith("FES_STORE_URL") or key.endswith("FES_HTTP_TOKEN"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return {name: f"sqlite:///{tmp_path / name}.db" for name in ("loans", "fines", "notices")}


def _options(places: dict[str, str]) -> list[str]:
    return [part for name, url in places.items() for part in ("--store", f"{name}={url}")]


def _rows(out: str, section: str) -> list[list[str]]:
    """The rows of one section of `fes apps`' output, each split on spaces."""
    lines = out.split(f"\n{section}\n")[1].split("\n\n")[0].splitlines()
    return [line.split() for line in lines[2:]]


def _follower(out: str, follower: str, leader: str) -> str:
    """The row of ``follower`` of ``leader``, as printed."""
    for line in out.split("\nfollowers\n")[1].split("\n\n")[0].splitlines():
        if line.split()[:2] == [follower, leader]:
            return line
    raise AssertionError(f"no row for {follower} of {leader} in:\n{out}")


# --- 1. a follower that stopped before it tracked anything --------------------------------


def test_a_follower_stopped_on_its_leaders_first_event_is_shown_stopped(
    places: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Its stop record alone gives it a row: stopped at 1, exit 3; not an empty table, exit 0."""
    with SyncRunner(library, places) as runner:
        lend(runner.app("loans"), [Lent(broken=True), Lent(3)])
        runner.run_until_quiet(check=False)
    with open_database(places["fines"]) as database:
        assert database.store("fines").tracked() == {}  # nothing tracked: the stop alone
    assert main(["apps", *_options(places)]) == 3
    out = capsys.readouterr().out
    row = _follower(out, "fines", "loans")
    assert row.split()[2:5] == ["-", "2", "stopped"]
    assert "stopped at 1: ValueError: this loan cannot be fined" in row


def test_with_the_system_every_follower_is_shown_started_or_not(
    places: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A follower that tracked nothing of a leader holding events is behind, not caught up."""
    with SyncRunner(library, places) as runner:  # makes every application's tables
        lend(runner.app("loans"), [Lent(1), Lent(2), Lent(3)])
    assert main(["apps", "--system", SYSTEM, *_options(places)]) == 0
    out = capsys.readouterr().out
    assert _follower(out, "fines", "loans").split()[2:] == [
        "-", "3", "not", "started:", "behind", "3"
    ]
    assert _follower(out, "notices", "fines").split()[2:] == [
        "-", "0", "not", "started:", "nothing", "to", "follow", "yet"
    ]
    # without the system, only what the stores record is known
    assert main(["apps", *_options(places)]) == 0
    assert "(none has tracked anything yet)" in capsys.readouterr().out


def test_with_the_system_a_follower_whose_store_holds_nothing_yet_is_not_started(
    places: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the leader was ever written: its followers' stores are empty files."""
    with Application(library.app("loans"), store=places["loans"]) as loans:
        lend(loans, [Lent(1), Lent(2)])
    for name in ("fines", "notices"):
        open_database(places[name]).close()  # the file, without the application's tables
    assert main(["apps", "--system", SYSTEM, *_options(places)]) == 0
    out = capsys.readouterr().out
    assert "not started: behind 2" in _follower(out, "fines", "loans")
    assert "not started: nothing to follow yet" in _follower(out, "notices", "fines")


# --- 2. ahead of its leader, and an unknown leader ---------------------------------------


def test_a_follower_tracked_beyond_its_leaders_last_position_is_not_caught_up(
    places: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The leader's store was restored from an older backup: said, and exit 1."""
    with SyncRunner(library, places) as runner:
        lend(runner.app("loans"), [Lent(d) for d in range(5)])
        runner.run_until_quiet()
    os.remove(places["loans"].removeprefix("sqlite:///"))
    with Application(library.app("loans"), store=places["loans"]) as loans:
        lend(loans, [Lent(1), Lent(2)])  # the "backup": 2 events where 5 were
    assert main(["apps", *_options(places)]) == 1
    out = capsys.readouterr().out
    row = _follower(out, "fines", "loans")
    assert "ahead of its leader: tracked 5, leader's last 2" in row
    assert "is this the leader's store?" in row
    assert "caught up" not in row
    assert "caught up" in _follower(out, "notices", "fines")


def test_a_leader_no_store_given_holds_is_explained_not_a_bare_question_mark(
    places: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with SyncRunner(library, places) as runner:
        lend(runner.app("loans"), [Lent(1)])
        runner.run_until_quiet()
    assert main(["apps", "--store", f"fines={places['fines']}"]) == 1
    row = _follower(capsys.readouterr().out, "fines", "loans")
    assert row.split()[2:4] == ["1", "?"]
    assert "unknown: no store given here holds leader 'loans': add --store loans=URL" in row


# --- 3. an HTTP leader's own token --------------------------------------------------------


def test_apps_and_log_send_an_http_leaders_own_token(
    places: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--store loans=http://…` is read with LOANS_FES_HTTP_TOKEN, as its runner reads it."""
    with SyncRunner(library, places) as runner:
        lend(runner.app("loans"), [Lent(d) for d in range(4)])
        runner.run_until_quiet()
    monkeypatch.setenv("LOANS_FES_HTTP_TOKEN", TOKEN)
    monkeypatch.setenv("FES_HTTP_TOKEN", "the-token-of-another-leader")
    with open_database(places["loans"]) as database, served(database.store("loans")) as url:
        options = _options({**places, "loans": url})
        assert main(["apps", *options]) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        assert ["loans", "4", "-", url] in _rows(out, "applications")
        assert _follower(out, "fines", "loans").split()[2:] == ["4", "4", "caught", "up"]
        assert main(["log", "--app", "loans", *options]) == 0
        assert "loans: 4 event(s) after position 0" in capsys.readouterr().out
        assert main(["log", *options]) == 0
        out = capsys.readouterr().out
        assert "loans: 4 event(s)" in out and "fines: 4 event(s)" in out
        # the application's own token is the one refused when wrong, and named so
        monkeypatch.setenv("LOANS_FES_HTTP_TOKEN", "wrong")
        assert main(["apps", *options]) == 1
        out = capsys.readouterr().out
        assert "unknown: leader unreachable" in _follower(out, "fines", "loans")
        assert "LOANS_FES_HTTP_TOKEN or FES_HTTP_TOKEN (401)" in out.split("\ncannot be read\n")[1]


# --- 4. applications placed by the environment ---------------------------------------------


def _three_services(
    places: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented deployment: each application placed by its own variable."""
    with SyncRunner(library, places) as runner:
        lend(runner.app("loans"), [Lent(d) for d in range(3)])
        runner.run_until_quiet()
    for name, url in places.items():
        monkeypatch.setenv(f"{name.upper()}_FES_STORE_URL", url)


def test_without_system_each_app_fes_store_url_places_its_application(
    places: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _three_services(places, monkeypatch)
    assert main(["apps"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert [r[:2] for r in _rows(out, "applications")] == [
        ["fines", "3"], ["loans", "3"], ["notices", "3"]
    ]
    assert out.splitlines()[0] == (
        f"store: {places['fines']}, {places['loans']}, {places['notices']}"
    )
    assert "caught up" in _follower(out, "fines", "loans")
    assert "caught up" in _follower(out, "notices", "fines")
    assert main(["log"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: 3 event(s)" in out for name in places)
    assert main(["log", "--app", "notices"]) == 0
    assert "notices: 3 event(s)" in capsys.readouterr().out
    assert main(["stream", "l-1", "--app", "loans"]) == 0
    assert '"stream":"l-1"' in capsys.readouterr().out


def test_store_on_the_command_line_wins_over_the_variables(
    places: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _three_services(places, monkeypatch)
    # one URL places every application, as for runners: the leader is not there
    assert main(["apps", "--store", places["notices"]]) == 1
    out = capsys.readouterr().out
    assert [r[0] for r in _rows(out, "applications")] == ["notices"]
    assert f"unknown: leader 'fines' is not in {places['notices']}: give its" in _follower(
        out, "notices", "fines"
    )
    # APP=URL places that one; the variables still place the others
    other = places["loans"].replace("loans.db", "other.db")
    with Application(library.app("loans"), store=other) as loans:
        lend(loans, [Lent(1)] * 7)
    assert main(["apps", "--store", f"loans={other}"]) == 0
    out = capsys.readouterr().out
    assert ["loans", "7", "0", other] in _rows(out, "applications")
    assert _follower(out, "fines", "loans").split()[2:] == ["3", "7", "behind", "4"]


def test_a_variable_placing_no_application_there_is_an_error(
    places: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _three_services(places, monkeypatch)
    monkeypatch.setenv("LOANZ_FES_STORE_URL", places["loans"])
    assert main(["apps"]) == 1
    out, err = capsys.readouterr()
    assert "caught up" in _follower(out, "fines", "loans")
    assert (
        f"LOANZ_FES_STORE_URL names {places['loans']}, which holds no application 'loanz'; "
        "it holds loans" in err
    )


@pytest.mark.postgres
def test_three_services_over_sqlite_postgresql_and_http(
    places: dict[str, str],
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """loans served over HTTP, fines in PostgreSQL, notices in SQLite: all by variables."""
    places = {**places, "fines": pg_url}
    with SyncRunner(library, places) as runner:
        lend(runner.app("loans"), [Lent(d) for d in range(6)])
        runner.run_until_quiet()
    with open_database(places["loans"]) as database, served(database.store("loans")) as url:
        monkeypatch.setenv("LOANS_FES_STORE_URL", url)
        monkeypatch.setenv("LOANS_FES_HTTP_TOKEN", TOKEN)
        monkeypatch.setenv("FINES_FES_STORE_URL", pg_url)
        monkeypatch.setenv("NOTICES_FES_STORE_URL", places["notices"])
        assert main(["apps"]) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        assert _follower(out, "fines", "loans").split()[2:] == ["6", "6", "caught", "up"]
        assert _follower(out, "notices", "fines").split()[2:] == ["6", "6", "caught", "up"]
        assert main(["apps", "--system", SYSTEM]) == 0
        assert "caught up" in _follower(capsys.readouterr().out, "notices", "fines")
        assert main(["log"]) == 0
        out = capsys.readouterr().out
        assert all(f"{name}: 6 event(s)" in out for name in places)


# --- 5. fes log with a store that cannot be read ------------------------------------------


def test_log_prints_what_it_can_and_reports_each_unreachable_store(
    places: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with SyncRunner(library, places) as runner:
        lend(runner.app("loans"), [Lent(1), Lent(2)])
        runner.run_until_quiet()
    os.remove(places["fines"].removeprefix("sqlite:///"))
    assert main(["log", *_options(places)]) == 1
    out, err = capsys.readouterr()
    assert "loans: 2 event(s) after position 0" in out
    assert "notices: 2 event(s) after position 0" in out
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"fes: error: application 'fines' at {places['fines']} cannot")
    assert "there is no file" in lines[0]


# --- 6. an application --store names that is not there --------------------------------------


def test_a_misspelt_application_is_reported_not_dropped(
    places: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with SyncRunner(library, places) as runner:
        lend(runner.app("loans"), [Lent(1)])
        runner.run_until_quiet()
    options = _options({"loanz": places["loans"], "fines": places["fines"]})
    assert main(["apps", *options]) == 1
    out, err = capsys.readouterr()
    assert f"the store {places['loans']} has no application 'loanz'; it has loans" in err
    assert "unknown:" in _follower(out, "fines", "loans")
    assert main(["log", *options]) == 1
    out, err = capsys.readouterr()
    assert "fines: 1 event(s)" in out
    assert "has no application 'loanz'; it has loans" in err


# --- 7. the small things -----------------------------------------------------------------


def test_run_says_when_an_application_has_nothing_to_run(places: dict[str, str]) -> None:
    """`fes run --apps loans`: a leader with no policy and no views; it exits, and says why."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FES_")}
    done = subprocess.run(
        [sys.executable, "-m", "fes.edge._cli", "run", SYSTEM, "--apps", "loans",
         *_options(places)],
        env={**env, "PYTHONPATH": str(Path(__file__).parents[1])},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "fes: loans has no policy or views: nothing to run here" in done.stderr
    assert "running" not in done.stderr



def test_partitions_are_one_row_each_with_the_system_or_without(
    places: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The system's partitions and the tracked leader#i/n keys name the same rows, once."""
    from system import domain
    from system.helpers import send

    url = places["loans"]
    with SyncRunner(domain.partitioned_pipeline, url) as runner:
        send(runner.app("source"), range(12))
        runner.run_until_quiet()
        send(runner.app("source"), range(12, 14))
    for extra in ([], ["--system", "system.domain:partitioned_pipeline"]):
        assert main(["apps", "--store", url, *extra]) == 0
        out = capsys.readouterr().out
        rows = _rows(out, "followers")
        assert [r[:2] for r in rows] == [["sink#0", "source"], ["sink#1", "source"],
                                         ["sink#2", "source"]]
        assert all(r[2:4] == ["12", "14"] and r[4:] == ["behind", "2"] for r in rows)
