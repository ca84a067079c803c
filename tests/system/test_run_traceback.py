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


@pytest.mark.parametrize("options", [(), ("--processes", "1")], ids=["threads", "processes"])
def test_fes_run_traceback_shows_the_source_as_it_was_at_the_stop(
    options: tuple[str, ...], sqlite_url: str, tmp_path: Path
) -> None:
    """The policy fixed on disk before the old `fes run` exits: its traceback still shows
    the line that raised, not what the file holds at that line number now."""
    module = tmp_path / "fixed_later.py"
    module.write_text(DOMAIN.read_text())
    with Application(domain.pipeline.app("source"), store=sqlite_url) as source:
        send(source, range(5), poison=[2])
    raised = 'raise ValueError(f"message {n} is poisoned")'

    def fix() -> None:  # as a deploy does: the fix is saved, then the old process stops
        fixed = "# the fix is here\n" + " " * 12 + "return []"
        module.write_text(module.read_text().replace(raised, fixed))

    code, err = run_until_stopped(
        sqlite_url, "fixed_later:pipeline", "sink", "--traceback", *options,
        path=[str(tmp_path)], before_signal=fix,
    )
    assert code == 3, err
    shown = err.splitlines()
    at = shown.index(f'  File "{module}", line {RAISE_LINE}, in receive')
    assert shown[at + 1].strip() == raised, err
    assert "the fix is here" not in err


def test_fes_run_without_traceback_prints_none(sqlite_url: str) -> None:
    """Without --traceback, a stop is one line with its origin, and no traceback."""
    with Application(domain.pipeline.app("source"), store=sqlite_url) as source:
        send(source, range(5), poison=[2])
    code, err = run_until_stopped(sqlite_url, "system.domain:pipeline", "sink")
    assert code == 3, err
    assert "Traceback" not in err and "traceback of follower" not in err
