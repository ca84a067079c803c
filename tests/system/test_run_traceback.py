"""`fes run --traceback` shows where a stopped follower's policy failed: file and line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fes.edge import Application, open_database
from fes.edge._skips import STOPS_STREAM
from system import domain
from system.helpers import send

TESTS = Path(__file__).resolve().parents[1]
DOMAIN = TESTS / "system" / "domain.py"
RAISE_LINE = next(
    number for number, line in enumerate(DOMAIN.read_text().splitlines(), 1)
    if 'raise ValueError(f"message {n} is poisoned")' in line
)


def _run_until_stopped(url: str, *options: str) -> tuple[int, str]:
    """Start `fes run`, wait for the sink's stop record, SIGTERM it: (exit code, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    process = subprocess.Popen(
        [sys.executable, "-m", "fes.edge._cli", "run", "system.domain:pipeline",
         "--store", url, "--poll-interval", "0.05", *options],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        with open_database(url) as database:
            store = database.store("sink")
            deadline = time.monotonic() + 30
            while store.stream_version(STOPS_STREAM) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return process.returncode, err


@pytest.mark.parametrize("options", [(), ("--processes", "1")], ids=["threads", "processes"])
def test_fes_run_traceback_prints_the_policy_file_and_line(
    options: tuple[str, ...], sqlite_url: str
) -> None:
    """With --traceback, the stopped follower's traceback names the policy's file and line."""
    with Application(domain.pipeline.app("source"), store=sqlite_url) as source:
        send(source, range(5), poison=[2])
    code, err = _run_until_stopped(sqlite_url, "--traceback", *options)
    assert code == 3, err
    assert "traceback of follower 'sink'" in err
    assert f'File "{DOMAIN}", line {RAISE_LINE}, in receive' in err
    assert "ValueError: message 2 is poisoned" in err


def test_fes_run_without_traceback_prints_none(sqlite_url: str) -> None:
    """Without --traceback, a stop is one line with its origin, and no traceback."""
    with Application(domain.pipeline.app("source"), store=sqlite_url) as source:
        send(source, range(5), poison=[2])
    code, err = _run_until_stopped(sqlite_url)
    assert code == 3, err
    assert "Traceback" not in err and "traceback of follower" not in err
