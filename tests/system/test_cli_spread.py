"""The `fes` command on a system whose applications own their stores (--store APP=URL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fes.edge import SyncRunner
from fes.edge._cli import main
from fes.edge.stores import open_database
from system import domain
from system.helpers import send

SHOP = "fes.examples.shop:system"


@pytest.fixture
def spread(tmp_path: Path) -> dict[str, str]:
    """The pipeline with source and sink in two SQLite files; the sink 2 events behind."""
    places = {name: f"sqlite:///{tmp_path / name}.db" for name in ("source", "sink")}
    with SyncRunner(domain.fixed_pipeline, places) as runner:
        send(runner.app("source"), range(3))
        runner.run_until_quiet()
        send(runner.app("source"), range(3, 5))
    return places


def _options(places: dict[str, str]) -> list[str]:
    return [part for name, url in places.items() for part in ("--store", f"{name}={url}")]


def test_apps_reads_the_lag_against_the_leader_where_it_lives(
    spread: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The sink's position comes from its file, the source's last position from the other."""
    assert main(["apps", *_options(spread)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["sink", "source", "3", "5", "behind", "2"] in rows
    # with more than one store, each application's row says which
    assert ["source", "5", "0", spread["source"]] in rows


def test_apps_says_when_a_leader_cannot_be_reached(
    spread: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A leader whose store is gone makes its follower's state unknown: exit 1, not 0.

    A deleted file is "missing" (an unanswering server is "unreachable").
    """
    os.remove(spread["source"].removeprefix("sqlite:///"))
    code = main(["apps", "--store", f"sink={spread['sink']}",
                 "--store", f"source={spread['source']}"])
    out = capsys.readouterr().out
    assert code == 1
    rows = [line.split() for line in out.splitlines()]
    # the status stays short; the whole reason is said once, below the tables
    status = ["unknown:", "leader's", "store", "does", "not", "exist", "(see", "below)"]
    assert ["sink", "source", "3", "?", *status] in rows
    assert out.count("there is no file") == 1
    below = out.split("\ncannot be read\n")[1]
    assert f"source at {spread['source']}: there is no store" in below
    # the header lists both stores, in the order of the applications, the lost one marked
    assert out.splitlines()[0] == (
        f"store: {spread['sink']}, {spread['source']} (missing)"
    )


def test_log_and_stream_find_each_application_in_its_store(
    spread: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["log", *_options(spread)]) == 0
    out = capsys.readouterr().out
    assert "source: 5 event(s) after position 0" in out
    assert "sink: 3 event(s) after position 0" in out
    assert main(["stream", "m-4", "--app", "source", *_options(spread)]) == 0
    assert '"stream":"m-4"' in capsys.readouterr().out


def test_an_application_no_store_names_is_refused(
    spread: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["log", "--app", "other", "--store", f"sink={spread['sink']}"]) == 1
    assert "no --store names where 'other' lives" in capsys.readouterr().err


def test_fes_run_keeps_each_application_in_its_store(tmp_path: Path) -> None:
    """`fes run` with --store APP=URL: each file holds its application's tables only."""
    places = {
        "orders": f"sqlite:///{tmp_path / 'orders.db'}",
        "payments": f"sqlite:///{tmp_path / 'payments.db'}",
        "*": f"sqlite:///{tmp_path / 'rest.db'}",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("FES_")}
    command = [sys.executable, "-m", "fes.edge._cli", "run", SHOP, "--poll-interval", "0.05"]
    for name, url in places.items():
        command += ["--store", f"{name}={url}"]
    fes = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert fes.stderr is not None
    try:
        first = fes.stderr.readline()
        assert "orders=sqlite:///" in first and "payments=sqlite:///" in first, first
        deadline = time.monotonic() + 60
        while not all(os.path.exists(p.removeprefix("sqlite:///")) for p in places.values()):
            assert time.monotonic() < deadline, "fes run made no stores"
            time.sleep(0.05)
    finally:
        fes.send_signal(signal.SIGTERM)
        assert fes.wait(timeout=60) == 0
    owners = {"orders": ["orders"], "payments": ["payments"], "*": ["reservations"]}
    for name, url in places.items():
        with open_database(url) as database:
            assert database.apps() == owners[name]


def test_demo_runs_over_stores_of_their_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fes demo --store orders=… --store …` settles every order across three files."""
    options = ["--store", f"orders=sqlite:///{tmp_path / 'o.db'}",
               "--store", f"reservations=sqlite:///{tmp_path / 'r.db'}",
               "--store", f"sqlite:///{tmp_path / 'rest.db'}"]
    assert main(["demo", "--orders", "20", *options]) == 0
    out = capsys.readouterr().out
    assert "stores: orders=sqlite:///" in out
    rows = [line.split() for line in out.splitlines()]
    paid = next(int(r[1]) for r in rows if r and r[0] == "paid")
    cancelled = next(int(r[1]) for r in rows if r and r[0] == "cancelled")
    assert paid + cancelled == 20
