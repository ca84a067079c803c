"""The three runners: one behaviour in one thread, in threads, and in processes."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fes
from fes.edge import (
    Application,
    ProcessRunner,
    Projection,
    Runner,
    SyncRunner,
    ThreadedRunner,
    load_system,
    run,
)
from fes.edge.stores import open_database
from system import domain
from system.helpers import assert_exactly_once, dump, send, serve

ROOT = Path(__file__).resolve().parents[2]

balls = st.lists(st.integers(0, 7), min_size=1, max_size=5)


def _sync_dump(counts: list[int]) -> dict[str, object]:
    with open_database("memory://") as database:
        with SyncRunner(domain.rally, database, batch_size=4) as runner:
            serve(runner.app("left"), counts)
            runner.run_until_quiet()
        return dump(database, domain.rally)


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=balls, batch_size=st.integers(1, 5))
def test_threaded_runner_gives_the_same_stores_as_the_sync_runner(
    counts: list[int], batch_size: int
) -> None:
    """Threads interleave differently, but every stream ends with the same events."""
    with open_database("memory://") as database:
        with ThreadedRunner(domain.rally, database, batch_size=batch_size,
                            poll_interval=0.05) as runner:
            serve(runner.app("left"), counts)
            assert runner.wait_until_quiet(timeout=20)
        assert dump(database, domain.rally) == _sync_dump(counts)


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(counts=balls)
def test_process_runner_gives_the_same_stores_as_the_sync_runner(
    counts: list[int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Worker processes on an SQLite file end with the same streams as the sync runner."""
    url = f"sqlite:///{tmp_path_factory.mktemp('p') / 'fes.db'}?synchronous=NORMAL"
    with ProcessRunner("system.domain:rally", url, processes=2, poll_interval=0.05) as runner:
        serve(runner.app("left"), counts)
        assert runner.wait_until_quiet(timeout=60)
        assert dump(runner.database, domain.rally) == _sync_dump(counts)


def test_threaded_runner_processes_events_as_they_come() -> None:
    """Events appended while the runner runs are processed without being asked."""
    with ThreadedRunner(domain.fixed_pipeline, "memory://", poll_interval=0.05) as runner:
        for round_ in range(5):
            send(runner.app("source"), range(round_ * 10, round_ * 10 + 10))
            time.sleep(0.01)
        assert runner.wait_until_quiet(timeout=10)
        assert_exactly_once(runner.app("sink"), runner.app("source"),
                            expected={f"source:m-{n}@1" for n in range(50)})
    assert not runner.running


def test_a_stopped_runner_says_how_to_go_on(tmp_path: Path) -> None:
    """A runner starts once; the error says to build a new one, which takes up from there."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    runner = ThreadedRunner(domain.fixed_pipeline, url, poll_interval=0.05)
    with runner:
        send(runner.app("source"), range(3))
        assert runner.wait_until_quiet(timeout=10)
    with pytest.raises(fes.errors.ConfigurationError, match="build a new one on the same store"):
        runner.start()
    with ThreadedRunner(domain.fixed_pipeline, url, poll_interval=0.05) as again:
        send(again.app("source"), range(3, 5))
        assert again.wait_until_quiet(timeout=10)
        assert_exactly_once(again.app("sink"), again.app("source"),
                            expected={f"source:m-{n}@1" for n in range(5)})


def test_threaded_runner_reports_a_stopped_follower_and_keeps_the_others() -> None:
    """A policy error stops the failing follower's threads only."""
    system = fes.System(
        [*domain.pipeline.apps,
         fes.App("audit", aggregates=[domain.receipts], policy=domain.receive_anything)],
        pipes=[["source", "sink"], ["source", "audit"]],
    )
    with ThreadedRunner(system, "memory://", poll_interval=0.05) as runner:
        send(runner.app("source"), range(10), poison=[3])
        with pytest.raises(fes.errors.FollowerStopped) as caught:
            runner.wait_until_quiet(timeout=10)
        assert set(caught.value.errors) == {"sink"}
        assert not runner.is_quiet()
        assert set(runner.errors) == {"sink"}
        assert runner.errors["sink"].position == 4
        assert len(runner.app("audit").log()) == 10


def test_threaded_runner_retries_after_a_store_error(tmp_path: Path) -> None:
    """A failing store read is logged and retried; the follower does not stop."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with ThreadedRunner(domain.fixed_pipeline, url, poll_interval=0.05) as runner:
        store = runner.app("source").store
        real = store.read_log
        failures = iter([True, True])

        def flaky(*args: object, **kwargs: object) -> object:
            if next(failures, False):
                raise fes.errors.StoreError("the disk hiccupped")
            return real(*args, **kwargs)  # type: ignore[arg-type]

        store.read_log = flaky  # type: ignore[method-assign]
        send(runner.app("source"), range(3))
        assert runner.wait_until_quiet(timeout=10)
        assert len(runner.app("sink").log()) == 3
        assert runner.errors == {}


def test_two_process_runners_of_one_follower_never_duplicate(tmp_path: Path) -> None:
    """Two worker processes running the same follower over one SQLite file: each effect once."""
    url = f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"
    with SyncRunner(domain.fixed_pipeline, url) as writer:
        for chunk in range(10):
            send(writer.app("source"), range(chunk * 100, chunk * 100 + 100))
    first = ProcessRunner("system.domain:fixed_pipeline", url, batch_size=5, poll_interval=0.05)
    second = ProcessRunner("system.domain:fixed_pipeline", url, batch_size=5, poll_interval=0.05)
    with first, second:
        assert first.wait_until_quiet(timeout=60)
        assert_exactly_once(first.app("sink"), first.app("source"),
                            expected={f"source:m-{n}@1" for n in range(1000)})


def test_process_runner_refuses_a_memory_store() -> None:
    """memory:// cannot be shared by processes: refused with a message saying so."""
    with pytest.raises(fes.errors.ConfigurationError, match="cannot be shared"):
        ProcessRunner(domain.rally, "memory://")


def test_process_runner_restarts_a_killed_worker(tmp_path: Path) -> None:
    """A worker killed by a signal is started again and resumes where it was."""
    url = f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"
    with ProcessRunner(domain.fixed_pipeline, url, poll_interval=0.05) as runner:
        send(runner.app("source"), range(50))
        assert runner.wait_until_quiet(timeout=30)
        (pid,) = runner.pids().values()
        os.kill(pid, signal.SIGKILL)
        send(runner.app("source"), range(50, 60))
        assert runner.wait_until_quiet(timeout=30)
        assert runner.restarts == 1
        assert runner.pids()[("sink",)] != pid
        assert len(runner.app("sink").log()) == 60


def test_process_runner_reports_policy_errors_of_its_workers(tmp_path: Path) -> None:
    """A worker's stopped follower is reported to the runner with app, leader and position."""
    url = f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"
    with ProcessRunner("system.domain:pipeline", url, poll_interval=0.05) as runner:
        send(runner.app("source"), range(5), poison=[2])
        deadline = time.monotonic() + 30
        while not runner.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        error = runner.errors["sink"]
        assert (error.app, error.leader, error.position) == ("sink", "source", 3)
        assert isinstance(error.error, ValueError)


def test_load_system_names_what_is_wrong() -> None:
    """Bad MODULE:SYSTEM specs are refused with a clear message."""
    assert load_system("system.domain:rally") is domain.rally
    for spec, message in [
        ("nocolon", "MODULE:ATTRIBUTE"),
        ("no.such.module:x", "cannot import module"),
        ("system.domain:nothing", "has no attribute"),
        ("system.domain:ball", "not a fes.System"),
        ("fes.examples.dogs:dogs", "'fes.examples.dogs:dogs' is an Aggregate object, not a"),
    ]:
        with pytest.raises(fes.errors.ConfigurationError, match=message):
            load_system(spec)


def test_load_system_says_where_it_looked_for_a_package_it_cannot_find(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package nowhere on the path: the message names the directory it ran in and what to do.

    A module missing from a package that was found, or an import inside
    the user's module that failed, gets no such advice: it would mislead.
    """
    (tmp_path / "kennel").mkdir()
    (tmp_path / "kennel" / "__init__.py").write_text("")
    (tmp_path / "kennel" / "broken.py").write_text("import no_such_dependency_of_kennel\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(fes.errors.ConfigurationError) as raised:
        load_system("no_such_package.wiring:system")
    assert str(raised.value) == (
        "cannot import module 'no_such_package.wiring': No module named 'no_such_package' "
        f"(the current directory is {tmp_path}: run from the directory that holds "
        "'no_such_package', or add that directory to PYTHONPATH)"
    )
    for spec, said in [
        ("kennel.missing:system", "No module named 'kennel.missing'"),
        ("kennel.broken:system", "No module named 'no_such_dependency_of_kennel'"),
    ]:
        with pytest.raises(fes.errors.ConfigurationError) as raised:
            load_system(spec)
        assert str(raised.value).endswith(said), raised.value
        assert "PYTHONPATH" not in str(raised.value)


def test_run_runs_until_told_to_stop(tmp_path: Path) -> None:
    """run() processes events until its stop event is set, then returns the stopped followers."""
    url = f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"
    stop = threading.Event()
    result: dict[str, object] = {}
    with SyncRunner(domain.pipeline, url) as writer:
        send(writer.app("source"), range(5), poison=[4])
    thread = threading.Thread(
        target=lambda: result.update(run(domain.pipeline, url, until=stop, poll_interval=0.05))
    )
    thread.start()
    try:
        with SyncRunner(domain.pipeline, url) as reader:
            deadline = time.monotonic() + 10
            while reader.app("sink").store.last_tracked("source") < 4:
                assert time.monotonic() < deadline
                time.sleep(0.02)
    finally:
        time.sleep(0.2)
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert set(result) == {"sink"}


@pytest.mark.parametrize("processes", [0, 2])
def test_sigterm_stops_fes_run_gracefully(tmp_path: Path, processes: int) -> None:
    """SIGTERM: the batch in hand is finished, the command exits 0, nothing is half done."""
    url = f"sqlite:///{tmp_path / 'fes.db'}?synchronous=NORMAL"
    with SyncRunner(domain.slow_pipeline, url) as writer:
        send(writer.app("source"), range(400))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    command = [sys.executable, "-m", "fes.edge._cli", "run", "system.domain:slow_pipeline",
               "--store", url, "--batch-size", "10", "--poll-interval", "0.1",
               "--processes", str(processes)]
    child = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        with SyncRunner(domain.slow_pipeline, url) as reader:
            deadline = time.monotonic() + 30
            while reader.app("sink").store.last_tracked("source") < 20:
                assert time.monotonic() < deadline, "the runner never got going"
                time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert "stopped" in err
    with SyncRunner(domain.slow_pipeline, url) as reader:
        sink = reader.app("sink")
        tracked = sink.store.last_tracked("source")
        assert 20 <= tracked < 400
        assert len(sink.log()) == tracked  # every tracked event has its effect, no more


@pytest.mark.parametrize(
    ("arguments", "options", "message"),
    [
        (("pipeline", "memory://"), {}, "a runner runs a fes.System, not 'pipeline'"),
        ((domain.pipeline, 5), {}, "store must be a store URL, an open Database or a .*, not 5"),
        ((domain.pipeline, "memory://"), {"batch_size": 0}, "batch_size must be an integer of 1"),
        ((domain.pipeline, "memory://"), {"batch_size": "9"}, "batch_size must be an integer"),
        ((domain.pipeline, "memory://"), {"poll_interval": 0}, "poll_interval must be positive"),
        ((domain.pipeline, "memory://"), {"poll_interval": "1"}, "poll_interval must be positive"),
        # an empty apps is not "all": a deploy script's unset variable would run everything
        ((domain.pipeline, "memory://"), {"apps": []}, "apps names no application"),
        ((domain.pipeline, "memory://"), {"apps": ()}, "apps names no application"),
        ((domain.pipeline, "memory://"), {"apps": "sink"}, r"collection .* such as \['billing'\]"),
    ],
)
def test_bad_runner_arguments_are_configuration_errors(
    arguments: tuple[Any, ...], options: dict[str, Any], message: str
) -> None:
    """A runner refuses bad arguments with fes's own error, whichever runner it is."""
    for runner in (SyncRunner, ThreadedRunner):
        with pytest.raises(fes.errors.ConfigurationError, match=message):
            runner(*arguments, **options)


def test_threaded_runner_names_its_parameters_and_passes_them_on() -> None:
    """help(ThreadedRunner) shows the parameters of Runner, not **kwargs, and each is used."""
    parameters = inspect.signature(ThreadedRunner).parameters
    for name in ("apps", "batch_size", "batch_bytes", "poll_interval"):
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters[name].default == inspect.signature(Runner).parameters[name].default
    assert parameters["options"].kind is inspect.Parameter.VAR_KEYWORD
    with ThreadedRunner(domain.rally, apps=["tally"], batch_size=3, batch_bytes=100,
                        poll_interval=0.5, env={}) as runner:
        assert list(runner.followers) == ["tally"]
        assert runner.followers["tally"].batch_size == 3
        assert runner.followers["tally"].batch_bytes == 100
        assert runner.poll_interval == 0.5


def test_bad_projection_arguments_are_configuration_errors() -> None:
    """A Projection keeps a fes.View, folding batches of at least one notification."""
    with Application(domain.source, "memory://", env={}) as app:
        with pytest.raises(fes.errors.ConfigurationError, match=r"a Projection keeps a fes\.View"):
            Projection(app, "totals")  # type: ignore[arg-type]
        view = fes.View("count", 0, lambda n, r: n + 1)
        for size in [0, "10", 2.5]:
            with pytest.raises(
                fes.errors.ConfigurationError, match="batch_size must be an integer"
            ):
                Projection(app, view, batch_size=size)  # type: ignore[arg-type]


_LOST = ("postgresql://shop@db/shop", "server closed the connection")


def _lost_once(real: Callable[..., Any], lost: Exception, stored: bool) -> Callable[..., Any]:
    """``real``, whose first call loses its connection while committing: it raises ``lost``
    after taking effect (``stored``) or without."""
    first = iter([True])

    def commit(*args: Any) -> Any:
        if next(first, False):
            if stored:
                real(*args)
            raise lost
        return real(*args)

    return commit


@pytest.mark.parametrize("stored", [True, False], ids=["took-effect", "did-not"])
def test_a_follower_commit_of_unknown_outcome_says_that_stepping_again_is_safe(
    stored: bool,
) -> None:
    """A follower's commit whose connection was lost raises OutcomeUnknown with the advice
    for a runner's caller (step again: the tracking position went with the batch), not a
    caller of execute's (read first); and running again gives each upstream event its
    effect once, whether the lost commit took effect or not."""
    with SyncRunner(domain.pipeline, "memory://") as runner:
        sink = runner.app("sink")
        lost = fes.errors.OutcomeUnknown("append to 'sink'", *_LOST)
        sink._append = _lost_once(sink._append, lost, stored)  # type: ignore[method-assign]
        send(runner.app("source"), range(3))
        with pytest.raises(fes.errors.OutcomeUnknown) as raised:
            runner.run_until_quiet()
        assert str(raised.value) == (
            "unknown whether the attempt to record sink's batch of 'source' (to position 3) "
            "with its tracking position took effect: the connection to "
            "postgresql://shop@db/shop was lost while committing. It took effect whole or "
            "not at all: stepping the follower again is safe (run_until_quiet, say): it "
            "reads its tracking position first, and so sees which (the connection's error: "
            "server closed the connection)"
        )
        assert raised.value.__cause__ is lost
        assert len(sink.log()) == (3 if stored else 0)
        assert runner.run_until_quiet() == (0 if stored else 3)
        assert_exactly_once(
            sink, runner.app("source"), expected={f"source:m-{n}@1" for n in range(3)}
        )


@pytest.mark.parametrize("stored", [True, False], ids=["took-effect", "did-not"])
def test_a_view_save_of_unknown_outcome_says_that_stepping_again_is_safe(stored: bool) -> None:
    """The same for a view: its position is saved with its state, so stepping again is
    safe, and the view counts each event once either way."""
    with SyncRunner(domain.fixed_viewed, "memory://") as runner:
        source = runner.app("source")
        lost = fes.errors.OutcomeUnknown("save view 'sent'", *_LOST)
        source.store.save_view = _lost_once(  # type: ignore[method-assign]
            source.store.save_view, lost, stored
        )
        send(source, range(3))
        with pytest.raises(fes.errors.OutcomeUnknown) as raised:
            runner.run_until_quiet()
        assert str(raised.value) == (
            "unknown whether the attempt to save view source/sent (to position 3) took "
            "effect: the connection to postgresql://shop@db/shop was lost while committing. "
            "It took effect whole or not at all: stepping the view again is safe "
            "(run_until_quiet, say): it reads its stored position first, and so sees which "
            "(the connection's error: server closed the connection)"
        )
        runner.run_until_quiet()
        assert runner.view("source", "sent").load() == (3, 3)
