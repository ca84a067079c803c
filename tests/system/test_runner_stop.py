"""ThreadedRunner.stop() does not wait out the poll interval of threads asleep in a wait."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fes.edge import ThreadedRunner
from system import domain
from system.helpers import own_log, send


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_stop_returns_at_once_with_a_long_poll_interval(kind: str, tmp_path: Path) -> None:
    """Threads asleep for 10 s: stop() returns well within it, and they process nothing more."""
    url = "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'fes.db'}"
    runner = ThreadedRunner(domain.pipeline, url, poll_interval=10.0).start()
    try:
        send(runner.app("source"), range(3))
        assert runner.wait_until_quiet(10)
        time.sleep(0.05)  # every thread is asleep in its leader's wait now
        began = time.monotonic()
        runner.stop()
        assert time.monotonic() - began < 1.0
        processed = len(own_log(runner.app("sink")))
        send(runner.app("source"), [3])  # wakes the sleepers: they must not take it
        time.sleep(0.2)
        assert len(own_log(runner.app("sink"))) == processed == 3
    finally:
        began = time.monotonic()
        runner.close()
    assert time.monotonic() - began < 2.0
    assert not runner.running
