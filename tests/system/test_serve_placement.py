"""``fes serve --store APP=URL`` reads the served application's entry; says when it is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from fes.edge import Application
from fes.edge._cli import main
from system import domain
from system.helpers import send


def test_serving_an_application_the_store_options_do_not_name_says_how_to_name_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--store names others only: the message names them, the app, and --store APP=URL."""
    for name in ("FES_STORE_URL", "SINK_FES_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FES_SERVE_TOKEN", "t0ken-of-the-test")
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'source.db'}"
    code = main(["serve", "--app", "sink", "--store", f"source={url}",
                 "--store", f"other={url}", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 1
    assert "--store names 'other', 'source' but not 'sink', the application to serve" in err
    assert "--store sink=URL" in err and "SINK_FES_STORE_URL" in err
    assert not (tmp_path / "fes.db").exists()  # no default store made up for it


def test_the_served_applications_own_entry_is_used_and_the_others_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--store source=… among others: the source's store is opened (here: a missing file)."""
    monkeypatch.setenv("FES_SERVE_TOKEN", "t0ken-of-the-test")
    with Application(domain.source, store=f"sqlite:///{tmp_path / 'real.db'}", env={}) as app:
        send(app, range(1))
    code = main(["serve", "--app", "source", "--store", f"source=sqlite:///{tmp_path / 'no.db'}",
                 "--store", f"sink=sqlite:///{tmp_path / 'real.db'}", "--port", "0"])
    assert code == 1
    assert f"there is no file {tmp_path / 'no.db'}" in capsys.readouterr().err
