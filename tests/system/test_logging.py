"""Logging: the documented fes.* loggers, their structured fields, quiet by default."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import fes
from fes.edge import SyncRunner, ThreadedRunner
from system import domain
from system.helpers import send

TESTS = Path(__file__).resolve().parents[1]


class _Collect(logging.Handler):
    """Keeps every record it handles."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[list[logging.LogRecord]]:
    """The records of the fes logger while the test runs."""
    handler = _Collect()
    root = logging.getLogger("fes")
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


def _fields(record: logging.LogRecord) -> tuple[object, ...]:
    return tuple(getattr(record, name, None) for name in ("app", "follower", "leader", "position"))


def test_a_stop_is_logged_by_fes_runners_follower_with_its_fields(
    collected: list[logging.LogRecord],
) -> None:
    """The stop's record names app, follower, leader and the failed position as attributes."""
    with SyncRunner(domain.pipeline, "memory://") as runner:
        send(runner.app("source"), range(5), poison=[2])
        with pytest.raises(fes.errors.PolicyError):
            runner.run_until_quiet()
    [record] = [r for r in collected if r.levelno >= logging.ERROR]
    assert record.name == "fes.runners.follower"
    assert _fields(record) == ("sink", "sink", "source", 3)
    assert "follower 'sink' stopped" in record.getMessage()


def test_retries_and_skips_carry_the_fields_of_a_partition(
    collected: list[logging.LogRecord],
) -> None:
    """A retried then skipped event's records name the partition unit and the position."""
    def handler(error: Exception, recorded: fes.Recorded[object], attempt: int) -> fes.Directive:
        return fes.Retry(0) if attempt == 1 else fes.Skip()

    system = fes.System(
        [domain.source, fes.App("sink", aggregates=[domain.receipts], policy=domain.receive,
                                on_error=handler, partitions=2)],
        pipes=[["source", "sink"]],
    )
    with SyncRunner(system, "memory://") as runner:
        send(runner.app("source"), range(5), poison=[2])
        runner.run_until_quiet()
    warnings = [r for r in collected if r.levelno == logging.WARNING]
    assert [r.getMessage().rsplit(";", 1)[1].split()[0] for r in warnings] == [
        "retrying", "skipping"
    ]
    unit = f"sink#{fes.system.partition_of('m-2', 2)}"
    for record in warnings:
        assert record.name == "fes.runners.follower"
        assert _fields(record) == ("sink", unit, "source", 3)


def _fail_first_step(runner: ThreadedRunner, error: Exception) -> None:
    """Make the sink follower's first step raise ``error``; the later ones step as before."""
    follower = runner.followers["sink"]
    calls = {"n": 0}
    step = follower.step

    def failing_once(leader: str) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise error
        return step(leader)

    follower.step = failing_once  # type: ignore[method-assign]


def test_a_runner_retrying_a_failed_step_logs_the_unit_fields(
    collected: list[logging.LogRecord],
) -> None:
    """A store error in a thread's step is logged by fes.runners with the follower's fields,
    and so is the next step that goes through: an operator who saw the first (say, a commit
    of unknown outcome) sees that it was resolved."""
    with ThreadedRunner(domain.pipeline, "memory://", poll_interval=0.05) as runner:
        _fail_first_step(runner, fes.errors.StoreError("the store went away"))
        send(runner.app("source"), range(3))
        runner.wait_until_quiet(timeout=30)
    [record, resolved] = [r for r in collected if r.name == "fes.runners"]
    assert "the store went away" in record.getMessage()
    assert _fields(record)[:3] == ("sink", "sink", "source")
    assert resolved.levelno == record.levelno == logging.WARNING
    assert resolved.getMessage() == (
        "sink<-source: the step after the failure above went through; carrying on"
    )
    assert _fields(resolved)[:3] == ("sink", "sink", "source")


def test_a_step_of_unknown_outcome_is_logged_as_the_runner_handles_it(
    collected: list[logging.LogRecord],
) -> None:
    """A step whose commit's outcome is unknown is tried again, so its warning says why that
    is safe, not the error's advice to read before trying again (meant for callers of
    execute), which the runner then seemed to ignore; the next step says it went through."""
    with ThreadedRunner(domain.pipeline, "memory://", poll_interval=0.05) as runner:
        _fail_first_step(runner, fes.errors.OutcomeUnknown(
            "append to 'sink'", "postgresql://shop@db/shop",
            "server closed the connection unexpectedly",
        ))
        send(runner.app("source"), range(3))
        runner.wait_until_quiet(timeout=30)
        assert len(runner.app("sink").store.read_log()) == 3
    [record, resolved] = [r for r in collected if r.name == "fes.runners"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage() == (
        "sink<-source: unknown whether the step's commit took effect (the connection to "
        "postgresql://shop@db/shop was lost while committing: server closed the connection "
        "unexpectedly); its position was committed with it, so the next step sees which; "
        "trying again in 0.05s"
    )
    assert _fields(record)[:3] == ("sink", "sink", "source")
    assert resolved.getMessage() == (
        "sink<-source: the step after the failure above went through; carrying on"
    )


def test_fes_is_quiet_by_default_in_a_program_that_configures_no_logging() -> None:
    """Without logging configured, a follower's stop prints nothing (a NullHandler on fes)."""
    script = textwrap.dedent("""
        import fes
        from fes.edge import SyncRunner
        from system import domain
        from system.helpers import send
        import logging
        assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("fes").handlers)
        with SyncRunner(domain.pipeline, "memory://") as runner:
            send(runner.app("source"), range(3), poison=[1])
            try:
                runner.run_until_quiet()
            except fes.errors.PolicyError:
                print("stopped")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"}, check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "stopped\n", "")
