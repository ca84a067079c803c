"""Runners and `fes apps` with a leader served by another service over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_http_leader import KEY, TOKEN, served

import fes
from fes.edge import Application, Cipher, SyncRunner, ThreadedRunner
from fes.edge._cli import main
from fes.edge.stores import open_database
from system import domain
from system.helpers import assert_exactly_once, send


@pytest.fixture
def leader_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'leader.db'}?synchronous=NORMAL"


def test_a_runner_follows_a_leader_served_over_http(leader_url: str, tmp_path: Path) -> None:
    """The sink's runner reads source over HTTP and drives only the sink: exactly once."""
    sink_url = f"sqlite:///{tmp_path / 'sink.db'}"
    with open_database(leader_url) as leader_db:
        source = Application(domain.source, store=leader_db, env={})
        send(source, range(40))
        with served(leader_db.store("source")) as url:
            env = {"SOURCE_FES_HTTP_TOKEN": TOKEN}
            places = {"source": url, "sink": sink_url}
            with ThreadedRunner(domain.fixed_pipeline, places, env=env,
                                poll_interval=0.05) as runner:
                assert set(runner.followers) == {"sink"}  # source runs where it is served
                send(source, range(40, 60))  # live, while the runner waits on the long poll
                assert runner.wait_until_quiet(timeout=30)
                assert_exactly_once(runner.app("sink"), source,
                                    expected={f"source:m-{n}@1" for n in range(60)})
                assert not any(runner.lags().values())
            with pytest.raises(fes.errors.ConfigurationError, match="served by another service"):
                SyncRunner(domain.fixed_pipeline, places, env=env, apps=["source", "sink"])


def test_one_http_leader_for_every_application_is_refused(
    leader_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A served leader's URL as the store of the whole system: refused, not a runner of nothing.

    (Every application was taken for a leader run elsewhere: the runner ran
    nothing, reported itself quiet, and `fes run` exited 0.)
    """
    with open_database(leader_url) as leader_db:
        send(Application(domain.source, store=leader_db, env={}), range(3))
        with served(leader_db.store("source")) as url:
            env = {"FES_HTTP_TOKEN": TOKEN}
            for store in (url, {"source": url, "sink": url}):
                with pytest.raises(
                    fes.errors.ConfigurationError,
                    match=f"{url} is an HTTP leader, which serves one application, yet "
                    "'source', 'sink' are all placed there",
                ):
                    SyncRunner(domain.fixed_pipeline, store, env=env)
            only = fes.System([domain.source])
            with pytest.raises(fes.errors.ConfigurationError, match="nothing to run here"):
                SyncRunner(only, url, env=env)
            monkeypatch.setenv("FES_HTTP_TOKEN", TOKEN)
            assert main(["run", "system.domain:fixed_pipeline", "--store", url]) == 1
            err = capsys.readouterr().err
            assert "is an HTTP leader, which serves one application" in err
            assert "running" not in err, err


def test_a_runner_refuses_at_once_a_leader_it_could_not_decode(
    leader_url: str, tmp_path: Path
) -> None:
    """An encrypted leader read without its keys: refused before anything runs."""
    with open_database(leader_url) as leader_db:
        cipher = Cipher({"k1": KEY}, current="k1")
        source = Application(domain.source, store=leader_db, cipher=cipher, env={})
        send(source, range(3))
        with served(leader_db.store("source")) as url:
            places = {"source": url, "sink": f"sqlite:///{tmp_path / 'sink.db'}"}
            with pytest.raises(fes.errors.ConfigurationError, match="encrypted"):
                SyncRunner(domain.fixed_pipeline, places, env={"FES_HTTP_TOKEN": TOKEN})


def test_fes_apps_reads_the_lag_against_a_leader_over_http(
    leader_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink_url = f"sqlite:///{tmp_path / 'sink.db'}"
    with open_database(leader_url) as leader_db:
        source = Application(domain.source, store=leader_db, env={})
        send(source, range(5))
        with served(leader_db.store("source")) as url:
            monkeypatch.setenv("FES_HTTP_TOKEN", TOKEN)
            places = {"source": url, "sink": sink_url}
            with SyncRunner(domain.fixed_pipeline, places) as runner:
                runner.run_until_quiet()
            send(source, range(5, 8))
            assert main(["apps", "--store", f"source={url}", "--store", f"sink={sink_url}"]) == 0
            rows = [line.split() for line in capsys.readouterr().out.splitlines()]
            assert ["sink", "source", "5", "8", "behind", "3"] in rows
            assert ["source", "8", "-", url] in rows
        # the server is gone: its follower's state is unknown, and the exit code says so
        assert main(["apps", "--store", f"source={url}", "--store", f"sink={sink_url}"]) == 1
        out = capsys.readouterr().out
        assert "unknown: leader unreachable (see below)" in out
        assert f"source at {url}: the HTTP leader {url} cannot be reached" in out
