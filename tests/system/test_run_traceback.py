"""`fes run --traceback` shows where a stopped follower's policy failed: file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from fes.edge import Application
from system import domain
from system.helpers import run_until_stopped, send

TESTS = Path(__file__).resolve().parents[1]
DOMAIN = TESTS / "system" / "domain.py"
RAISE_LINE = next(
    number for number, line in enumerate(DOMAIN.read_text().splitlines(), 1)
    if 'raise ValueError(f"message {n} is poisoned")' in line
)


@pytest.mark.parametrize("options", [(), ("--processes", "1")], ids=["threads", "processes"])
def test_fes_run_traceback_prints_the_policy_file_and_line(
    options: tuple[str, ...], sqlite_url: str
) -> None:
    """With --traceback, the stopped follower's traceback names the policy's file and line."""
    with Application(domain.pipeline.app("source"), store=sqlite_url) as source:
        send(source, range(5), poison=[2])
    code, err = run_until_stopped(
        sqlite_url, "system.domain:pipeline", "sink", "--traceback", *options
    )
    assert code == 3, err
    assert "traceback of follower 'sink'" in err
    assert f'File "{DOMAIN}", line {RAISE_LINE}, in receive' in err
    assert "ValueError: message 2 is poisoned" in err


def test_fes_run_without_traceback_prints_none(sqlite_url: str) -> None:
    """Without --traceback, a stop is one line with its origin, and no traceback."""
    with Application(domain.pipeline.app("source"), store=sqlite_url) as source:
        send(source, range(5), poison=[2])
    code, err = run_until_stopped(sqlite_url, "system.domain:pipeline", "sink")
    assert code == 3, err
    assert "Traceback" not in err and "traceback of follower" not in err
