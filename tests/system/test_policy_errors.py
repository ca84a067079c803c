"""Policy errors: nothing recorded for the event, only its follower stops; directives."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import fes
from fes.edge import SKIPS_STREAM, SyncRunner, skipped
from fes.edge.stores import NewEvent
from system import domain
from system.helpers import own_log, send

POISONED_AT = 13  # message 12 is the 13th event of source's log


def test_a_failing_event_records_nothing_and_stops_only_its_follower() -> None:
    """Events before the failed one are committed; it and the rest are not; others go on."""
    system = fes.System(
        [*domain.pipeline.apps,
         fes.App("audit", aggregates=[domain.receipts], policy=domain.receive_anything)],
        pipes=[["source", "sink"], ["source", "audit"]],
    )
    with SyncRunner(system, "memory://", batch_size=50) as runner:
        send(runner.app("source"), range(30), poison=[12])
        with pytest.raises(fes.errors.PolicyError) as caught:
            runner.run_until_quiet()
        error = caught.value
        assert (error.app, error.leader, error.position) == ("sink", "source", POISONED_AT)
        assert isinstance(error.error, ValueError)
        assert "message 12 is poisoned" in str(error)
        sink = runner.app("sink")
        assert [r.event.number for r in own_log(sink)] == list(range(12))
        assert sink.store.last_tracked("source") == POISONED_AT - 1
        assert isinstance(error, fes.errors.FollowerStopped)
        assert runner.errors == error.errors and set(error.errors) == {"sink"}
        # the other follower of the same leader processed everything
        assert len(runner.app("audit").log()) == 30
        # a stopped follower does nothing more, even with new upstream events
        send(runner.app("source"), range(100, 105))
        runner.run_until_quiet(check=False)
        assert sink.store.last_tracked("source") == POISONED_AT - 1


def test_after_a_fix_the_restart_processes_the_failed_event(tmp_path: Path) -> None:
    """A runner with the fixed policy, on the same store, resumes at the event that failed."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with SyncRunner(domain.pipeline, url) as runner:
        send(runner.app("source"), range(30), poison=[12])
        runner.run_until_quiet(check=False)
        assert runner.app("sink").store.last_tracked("source") == POISONED_AT - 1
    with SyncRunner(domain.pipeline, url) as runner:  # the bug is still there
        with pytest.raises(fes.errors.PolicyError):
            runner.run_until_quiet()
        assert len(own_log(runner.app("sink"))) == 12
    with SyncRunner(domain.fixed_pipeline, url) as runner:
        assert runner.run_until_quiet() == 30 - 12
        assert [r.event.number for r in own_log(runner.app("sink"))] == list(range(30))


def test_retry_tries_again_after_the_delay_then_succeeds() -> None:
    """Retry(delay): the same event is tried again; a transient failure then passes."""
    calls: list[int] = []

    def flaky(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
        calls.append(recorded.position)
        if recorded.position == 2 and calls.count(2) < 3:
            raise TimeoutError("the oracle is busy")
        return domain.receive_anything(recorded)

    attempts: list[int] = []

    def handler(error: BaseException, recorded: fes.Recorded[Any], attempt: int) -> fes.Directive:
        attempts.append(attempt)
        return fes.Retry(0.01)

    with SyncRunner(domain.with_handler(handler, flaky), "memory://") as runner:
        send(runner.app("source"), range(4))
        runner.run_until_quiet()
        assert attempts == [1, 2]
        assert [r.event.number for r in own_log(runner.app("sink"))] == [0, 1, 2, 3]
        assert len(runner.followers["sink"].failures) == 2
        assert runner.errors == {}


def test_retry_then_stop_gives_up_after_its_attempts() -> None:
    """retry_then_stop(3): three tries, then the follower stops on that event."""
    system = domain.with_handler(fes.retry_then_stop(attempts=3, delay=0.005))
    with SyncRunner(system, "memory://") as runner:
        send(runner.app("source"), range(3), poison=[1])
        with pytest.raises(fes.errors.PolicyError, match="position 2"):
            runner.run_until_quiet()
        assert len(runner.followers["sink"].failures) == 3
        assert len(own_log(runner.app("sink"))) == 1


def test_skip_records_the_skip_with_the_tracking_and_moves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Skip: the event has no effect, a PolicySkipped says so, and the rest is processed."""
    system = domain.with_handler(lambda error, recorded, attempt: fes.Skip())
    with SyncRunner(system, "memory://", batch_size=10) as runner:
        send(runner.app("source"), range(20), poison=[4, 15])
        with caplog.at_level(logging.WARNING, logger="fes.runners"):
            runner.run_until_quiet()
        sink = runner.app("sink")
        numbers = [r.event.number for r in own_log(sink) if isinstance(r.event, domain.Received)]
        assert numbers == [n for n in range(20) if n not in (4, 15)]
        skips = skipped(sink)
        assert [(s.event.leader, s.event.position, s.event.event_id) for s in skips] == [
            ("source", 5, "m-4@1"), ("source", 16, "m-15@1"),
        ]
        assert skips[0].event.error == "ValueError: message 4 is poisoned"
        assert skips[0].event.attempts == 1
        assert skips[0].metadata.causation_id == "source:m-4@1"
        assert sink.store.last_tracked("source") == 20
        assert "skipping it" in caplog.text


def test_a_skip_is_recorded_once_even_when_run_again(tmp_path: Path) -> None:
    """Restarting after a skip neither re-runs the policy on that event nor skips it again."""
    url = f"sqlite:///{tmp_path / 'fes.db'}"
    system = domain.with_handler(lambda error, recorded, attempt: fes.Skip())
    with SyncRunner(system, url) as runner:
        send(runner.app("source"), range(5), poison=[2])
        runner.run_until_quiet()
    with SyncRunner(system, url) as runner:
        assert runner.run_until_quiet() == 0
        assert len(skipped(runner.app("sink"))) == 1
        assert runner.app("sink").store.stream_version(SKIPS_STREAM) == 1


def test_an_error_handler_that_raises_stops_the_follower() -> None:
    """If on_error itself fails, the follower stops rather than guess."""

    def broken(error: BaseException, recorded: fes.Recorded[Any], attempt: int) -> fes.Directive:
        raise RuntimeError("handler bug")

    with SyncRunner(domain.with_handler(broken), "memory://") as runner:
        send(runner.app("source"), range(3), poison=[0])
        with pytest.raises(fes.errors.PolicyError, match="position 1"):
            runner.run_until_quiet()
        assert own_log(runner.app("sink")) == []


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (lambda r: ["not an intent"], "an intent is fes.Emit or fes.Do"),
        (lambda r: [fes.Emit(domain.messages, "x", [domain.Sent(1)])],
         "does not keep"),
        (lambda r: None, "returned None; a policy returns a list of intents"),
        (lambda r: [fes.Do(domain.receipts, "x", lambda s: ["not an event"])],
         "does not own"),
        (lambda r: [fes.Do(domain.receipts, "x", lambda s: fes.Rejected("no"))],
         "sequence of events"),
        (lambda r: [fes.Emit(domain.receipts, "", [domain.Received(1)])],
         "acts on a stream no store can keep: a stream id must be a str"),
        (lambda r: [fes.Do(domain.receipts, None, lambda s: [domain.Received(1)])],
         "acts on a stream no store can keep"),
    ],
    ids=[
        "not-an-intent", "foreign-aggregate", "returns-none", "bad-event", "bad-command",
        "empty-stream-id", "no-stream-id",
    ],
)
def test_a_misbehaving_policy_is_a_policy_error(policy: fes.Policy, message: str) -> None:
    """Bad intents and bad commands are reported like any policy error, naming the problem."""
    with SyncRunner(domain.with_handler(fes.stop_on_error, policy), "memory://") as runner:
        send(runner.app("source"), range(2))
        with pytest.raises(fes.errors.PolicyError, match=message) as caught:
            runner.run_until_quiet()
        assert own_log(runner.app("sink")) == []
    if message.startswith("an intent is"):
        # what is not an intent is not said to be "performed"
        assert "while performing" not in str(caught.value), caught.value


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
def test_a_stream_id_no_store_keeps_is_skipped_like_any_policy_error(
    url: str, tmp_path: Path
) -> None:
    """Not a store failure tried again for ever: the event is skipped, the others processed."""

    def policy(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
        number = recorded.event.number
        stream = "r\x00nul" if number == 1 else f"r-{number}"
        return [fes.Emit(domain.receipts, stream, [domain.Received(number)])]

    skip: fes.ErrorHandler = lambda error, recorded, attempt: fes.Skip()  # noqa: E731
    target = url if url == "memory://" else f"sqlite:///{tmp_path / 'fes.db'}"
    with SyncRunner(domain.with_handler(skip, policy), target, batch_size=10) as runner:
        send(runner.app("source"), range(3))
        assert runner.run_until_quiet() == 3
        sink = runner.app("sink")
        assert [r.event for r in own_log(sink) if r.stream != SKIPS_STREAM] == [
            domain.Received(0), domain.Received(2)
        ]
        assert len(skipped(sink)) == 1


def test_a_rejected_command_is_a_policy_error() -> None:
    """A command that raises fes.Rejected in a policy is handled by on_error like any error."""
    from fes.edge._skips import STOPS_STREAM

    def refuse(state: int) -> list[domain.Received]:
        raise fes.Rejected("not today")

    def policy(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
        return [fes.Do(domain.receipts, "x", refuse)]

    with SyncRunner(domain.with_handler(fes.stop_on_error, policy), "memory://") as runner:
        send(runner.app("source"), range(2))
        with pytest.raises(fes.errors.PolicyError, match="Rejected: not today") as caught:
            runner.run_until_quiet()
        stops = [r.event for r in runner.app("sink").stream(STOPS_STREAM)]
    # the message names the intent that failed, which the policy did not raise itself
    assert str(caught.value).endswith(
        "Rejected: not today (while performing Do refuse on 'receipt' stream 'x')"
    )
    # and so does the stop record, which fes apps shows: its line is the command's
    (halted,) = stops
    assert halted.error == (
        "Rejected: not today (while performing Do refuse on 'receipt' stream 'x')"
    )
    assert halted.where.endswith(f":{refuse.__code__.co_firstlineno + 1}"), halted.where


def test_an_emit_goes_after_what_the_stream_holds_and_must_still_apply() -> None:
    """Emit names no version: its events follow the stream's own.  They are folded onto
    the stream's state, and a projector that refuses them stops the follower."""

    def capped(state: int, event: domain.Received) -> int:
        if state >= 3:
            raise ValueError("the stream holds 3 receipts at most")
        return state + 1

    box: fes.Aggregate[int] = fes.Aggregate(
        "box", 0, fes.projector((domain.Received, capped)), events=[domain.Received]
    )

    def policy(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
        return [fes.Emit(box, "box", [domain.Received(recorded.event.number)])]

    system = fes.System(
        [domain.source, fes.App("sink", aggregates=[box], policy=policy)],
        pipes=[["source", "sink"]],
    )
    with SyncRunner(system, "memory://") as runner:
        sink = runner.app("sink")
        written = sink.batch()
        written.emit(box, "box", [domain.Received(100)])  # not caused by the leader
        sink.commit(written)
        send(runner.app("source"), range(3))
        with pytest.raises(fes.errors.FollowerStopped) as caught:
            runner.run_until_quiet()
        assert caught.value.position == 3
        assert str(caught.value).endswith(
            "ValueError: the stream holds 3 receipts at most "
            "(while performing Emit to 'box' stream 'box')"
        )
        assert [(r.version, r.event.number) for r in own_log(sink)] == [
            (1, 100), (2, 0), (3, 1)
        ]
        assert sink.store.last_tracked("source") == 2


def test_an_event_the_codec_cannot_store_is_pinned_on_its_notification() -> None:
    """An unencodable effect in a batch of many is blamed on the one event that caused it."""

    def huge(recorded: fes.Recorded[Any]) -> list[fes.Intent]:
        number = recorded.event.number
        value = 2**80 if number == 6 else number  # orjson refuses integers beyond 64 bits
        return [fes.Emit(domain.receipts, f"r-{number}", [domain.Received(value)])]

    with SyncRunner(domain.with_handler(fes.stop_on_error, huge), "memory://",
                    batch_size=50) as runner:
        send(runner.app("source"), range(10))
        with pytest.raises(fes.errors.PolicyError) as caught:
            runner.run_until_quiet()
        assert caught.value.position == 7
        assert [r.event.number for r in own_log(runner.app("sink"))] == list(range(6))


def test_an_upstream_event_that_cannot_be_decoded_stops_the_follower() -> None:
    """An unknown topic in the leader's log stops the follower at that position."""
    with SyncRunner(domain.fixed_pipeline, "memory://") as runner:
        send(runner.app("source"), range(2))
        runner.app("source").store.append([NewEvent("odd", 1, "who.Knows", b"{}", 0)])
        send(runner.app("source"), range(5, 7))
        with pytest.raises(fes.errors.PolicyError, match="unknown topic") as caught:
            runner.run_until_quiet()
        assert caught.value.position == 3
        assert len(own_log(runner.app("sink"))) == 2


def test_resume_forgets_a_stop_and_tries_the_event_again() -> None:
    """Follower.resume() clears the stop: the next step retries the failed event."""
    with SyncRunner(domain.pipeline, "memory://") as runner:
        send(runner.app("source"), range(3), poison=[1])
        runner.run_until_quiet(check=False)
        follower = runner.followers["sink"]
        assert follower.error is not None
        follower.resume()
        assert follower.error is None
        runner.run_until_quiet(check=False)
        assert follower.error is not None and follower.error.position == 2


def test_a_rival_instance_resuming_first_is_not_resumed_again(tmp_path: Path) -> None:
    """Two instances of a fixed follower: only the one that resumes records it."""
    from fes.edge._skips import STOPS_STREAM, FollowerResumed

    url = f"sqlite:///{tmp_path / 'fes.db'}"
    with SyncRunner(domain.pipeline, url) as runner:
        send(runner.app("source"), range(20), poison=[12])
        runner.run_until_quiet(check=False)
    with SyncRunner(domain.fixed_pipeline, url) as first, SyncRunner(
        domain.fixed_pipeline, url
    ) as second:
        # the second has looked at the stop records (as its commit does) before
        # the first resumes and moves the tracking position past the stop
        assert second.followers["sink"]._halted_now()["source"] is not None
        assert first.run_until_quiet() == 20 - 12
        send(first.app("source"), range(20, 23))
        assert second.run_until_quiet() == 3
        sink = first.app("sink")
        resumed = [
            r.event for r in sink.stream(STOPS_STREAM) if isinstance(r.event, FollowerResumed)
        ]
        assert len(resumed) == 1
        assert [r.event.number for r in own_log(sink)] == list(range(23))
